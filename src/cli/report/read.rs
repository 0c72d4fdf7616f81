//! Reading event files: paths and directories expanded to files, gzip
//! detected by its magic bytes, lines streamed one at a time with a length
//! cap, and every line that is not an event counted, never fatal.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use serde::Serialize;

use super::ReportError;
use crate::event::Event;

/// A line longer than this is counted as malformed without being parsed:
/// real events are a few KiB, and an unbounded line would be read whole
/// into memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// How many malformed lines are quoted (by position and parse error) in
/// the report; the rest are only counted.
pub const MALFORMED_SAMPLES: usize = 20;

/// What was read, per file and in total.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputSummary {
    pub files: Vec<FileSummary>,
    /// Non-empty lines read.
    pub lines: u64,
    pub events: u64,
    pub malformed: u64,
    /// The first [`MALFORMED_SAMPLES`] malformed lines: where, and why.
    pub malformed_samples: Vec<MalformedLine>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct FileSummary {
    pub path: String,
    pub gzip: bool,
    pub lines: u64,
    pub events: u64,
    pub malformed: u64,
    /// A read error that ended this file early (a truncated gzip stream, an
    /// I/O error); the lines before it are counted.
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MalformedLine {
    pub path: String,
    /// 1-based line number in the (decompressed) file.
    pub line: u64,
    pub error: String,
}

/// The files behind the given paths: a file as given, a directory as its
/// `*.jsonl` and `*.jsonl.gz` entries (not recursive), sorted by name so
/// rotated files are read in order.
pub fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>, ReportError> {
    let mut files = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| ReportError::Input {
            path: path.clone(),
            source,
        })?;
        if !meta.is_dir() {
            files.push(path.clone());
            continue;
        }
        let entries = std::fs::read_dir(path).map_err(|source| ReportError::Input {
            path: path.clone(),
            source,
        })?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| ReportError::Input {
                path: path.clone(),
                source,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let is_events = name.ends_with(".jsonl") || name.ends_with(".jsonl.gz");
            if is_events
                && entry
                    .file_type()
                    .is_ok_and(|t| t.is_file() || t.is_symlink())
            {
                found.push(entry.path());
            }
        }
        found.sort();
        files.extend(found);
    }
    if files.is_empty() {
        return Err(ReportError::NoInput);
    }
    Ok(files)
}

/// Streams every event of `path` into `each`, counting lines and malformed
/// lines into `summary`. Only failing to open the file is an error; what
/// goes wrong after that is recorded in the file's summary.
pub fn read_file(
    path: &Path,
    summary: &mut InputSummary,
    mut each: impl FnMut(Event),
) -> Result<(), ReportError> {
    let file = File::open(path).map_err(|source| ReportError::Input {
        path: path.to_path_buf(),
        source,
    })?;
    let mut raw = BufReader::new(file);
    // Detect gzip by content, not by name: rotated files are not always
    // named after their compression.
    let gzip = raw
        .fill_buf()
        .map(|b| b.starts_with(&[0x1f, 0x8b]))
        .map_err(|source| ReportError::Input {
            path: path.to_path_buf(),
            source,
        })?;
    let mut reader: Box<dyn BufRead> = if gzip {
        Box::new(BufReader::new(MultiGzDecoder::new(raw)))
    } else {
        Box::new(raw)
    };
    let mut file_summary = FileSummary {
        path: path.display().to_string(),
        gzip,
        ..FileSummary::default()
    };
    let mut line_no = 0u64;
    let mut malformed = Vec::new();
    let mut buf = Vec::with_capacity(4096);
    loop {
        let line = match next_line(&mut reader, &mut buf) {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => {
                file_summary.error = Some(e.to_string());
                break;
            }
        };
        line_no += 1;
        let result = match line {
            Line::TooLong => Err(format!("line longer than {MAX_LINE_BYTES} bytes")),
            Line::Complete => {
                let text = trim_json_whitespace(&buf);
                if text.is_empty() {
                    continue;
                }
                parse_event(text)
            }
        };
        file_summary.lines += 1;
        match result {
            Ok(event) => {
                file_summary.events += 1;
                each(event);
            }
            Err(error) => {
                file_summary.malformed += 1;
                if summary.malformed_samples.len() + malformed.len() < MALFORMED_SAMPLES {
                    malformed.push(MalformedLine {
                        path: file_summary.path.clone(),
                        line: line_no,
                        error,
                    });
                }
            }
        }
    }
    summary.lines += file_summary.lines;
    summary.events += file_summary.events;
    summary.malformed += file_summary.malformed;
    summary.malformed_samples.extend(malformed);
    summary.files.push(file_summary);
    Ok(())
}

/// Fields of an event that no check reads: a line without them is still
/// counted, with these stand-ins (an exporter that trims them, say).
type StandIn = fn() -> serde_json::Value;
const UNREAD_FIELDS: [(&str, StandIn); 3] = [
    ("schema", || {
        serde_json::Value::String(crate::event::SCHEMA.into())
    }),
    ("event_id", || serde_json::Value::String(String::new())),
    ("client", || serde_json::json!({})),
];

/// One line as an event. The fast path is the event as written; only a line
/// that fails it is read again with the unread fields filled in, so a
/// missing field the checks need is still an error, named as such.
fn parse_event(text: &[u8]) -> Result<Event, String> {
    let first = match serde_json::from_slice::<Event>(text) {
        Ok(e) => return Ok(e),
        Err(e) => e,
    };
    let Ok(serde_json::Value::Object(mut obj)) = serde_json::from_slice(text) else {
        return Err(first.to_string());
    };
    let mut filled = false;
    for (name, value) in UNREAD_FIELDS {
        if !obj.contains_key(name) {
            obj.insert(name.into(), value());
            filled = true;
        }
    }
    if !filled {
        return Err(first.to_string());
    }
    serde_json::from_value(serde_json::Value::Object(obj)).map_err(|e| e.to_string())
}

enum Line {
    /// `buf` holds the line (with its newline, if it had one).
    Complete,
    /// The line exceeded [`MAX_LINE_BYTES`] and was skipped.
    TooLong,
}

/// One line into `buf`, at most [`MAX_LINE_BYTES`] of it held in memory.
/// `BufRead::read_until` has no limit, so the limit is a `take` around it.
fn next_line(reader: &mut dyn BufRead, buf: &mut Vec<u8>) -> io::Result<Option<Line>> {
    buf.clear();
    let n = Read::take(&mut *reader, MAX_LINE_BYTES as u64 + 1).read_until(b'\n', buf)?;
    if n == 0 {
        return Ok(None);
    }
    if buf.len() > MAX_LINE_BYTES && buf.last() != Some(&b'\n') {
        reader.skip_until(b'\n')?;
        return Ok(Some(Line::TooLong));
    }
    Ok(Some(Line::Complete))
}

/// Strips what JSON counts as whitespace (space, tab, CR, LF): a line of
/// only that is blank and not counted; anything else is an event or not.
fn trim_json_whitespace(b: &[u8]) -> &[u8] {
    let ws = |c: &u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n');
    let start = b.iter().position(|c| !ws(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !ws(c)).map_or(start, |i| i + 1);
    &b[start..end]
}
