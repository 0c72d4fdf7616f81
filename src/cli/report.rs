//! `touchgate report`: the operational checks over event files.
//!
//! Event files (JSON lines, gzip too, directories of rotated files) are
//! streamed into per-UTC-day counters ([`aggregate`]), the checks are
//! evaluated on every day ([`checks`]), and the result is rendered as a
//! terminal table ([`text`]), JSON, or one self-contained HTML file
//! ([`html`]). `docs/report.md` documents the checks and the JSON fields.

pub mod aggregate;
pub mod checks;
pub mod html;
pub mod read;
pub mod stats;
pub mod text;

use std::io::Write;
use std::path::PathBuf;

pub use checks::{Check, Report, evaluate};

use crate::config::ChecksConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReportFormat {
    /// Aligned tables for a terminal, with ALERT markers.
    #[default]
    Text,
    /// The report as one JSON object (schema `touchgate-report/1`).
    Json,
    /// One self-contained HTML file with inline SVG charts.
    Html,
}

#[derive(Debug, Clone)]
pub struct ReportArgs {
    /// Event files, or directories of `*.jsonl` / `*.jsonl.gz` files.
    pub events: Vec<PathBuf>,
    pub format: ReportFormat,
    /// Where to write the report; stdout when `None`.
    pub out: Option<PathBuf>,
    /// The thresholds, from `[checks]` of the configuration.
    pub checks: ChecksConfig,
    /// The largest share of malformed lines (0..1) the report is built
    /// over; past it, or with no event at all, it fails.
    pub max_malformed: f64,
}

/// `--max-malformed` when not given: 1 % of the lines.
pub const DEFAULT_MAX_MALFORMED: f64 = 0.01;

/// How many bad lines the error for unusable input quotes.
const QUOTED_BAD_LINES: usize = 5;

#[derive(Debug, Clone)]
pub struct ReportOutcome {
    /// Any check in alert: the command exits 1.
    pub alert: bool,
    pub report: Report,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{path}: {source}")]
    Input {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no event files found: give files, or directories holding *.jsonl or *.jsonl.gz files")]
    NoInput,
    #[error("{}", unusable_message(.malformed, .lines, .max_malformed, .first_bad))]
    Unusable {
        lines: u64,
        malformed: u64,
        max_malformed: f64,
        /// The first malformed lines: `path:line: error`.
        first_bad: Vec<String>,
    },
    #[error("writing the report to {}: {source}", .path.as_ref().map_or("stdout".to_string(), |p| p.display().to_string()))]
    Output {
        path: Option<PathBuf>,
        source: std::io::Error,
    },
}

fn unusable_message(malformed: &u64, lines: &u64, max: &f64, first_bad: &[String]) -> String {
    let what = if *lines == 0 {
        "no line in the event files".to_string()
    } else if malformed == lines {
        format!("none of the {lines} line(s) is an event")
    } else {
        format!(
            "{malformed} of {lines} line(s) ({:.2}%) are malformed, more than --max-malformed {:.2}%",
            *malformed as f64 * 100.0 / *lines as f64,
            max * 100.0
        )
    };
    let mut s = format!("unusable input: {what}");
    if !first_bad.is_empty() {
        s.push_str("; first bad lines:");
        for b in first_bad {
            s.push_str("\n  ");
            s.push_str(b);
        }
    }
    s
}

/// Refuses input the checks cannot stand on: no event at all, or more
/// malformed lines than `max_malformed` allows. A report over garbage
/// would say OK.
pub fn check_input(input: &read::InputSummary, max_malformed: f64) -> Result<(), ReportError> {
    let too_many = input.malformed as f64 > max_malformed * input.lines as f64;
    if input.events > 0 && !too_many {
        return Ok(());
    }
    Err(ReportError::Unusable {
        lines: input.lines,
        malformed: input.malformed,
        max_malformed,
        first_bad: input
            .malformed_samples
            .iter()
            .take(QUOTED_BAD_LINES)
            .map(|m| format!("{}:{}: {}", m.path, m.line, m.error))
            .collect(),
    })
}

/// Parses `--max-malformed`: a fraction (`0.01`) or a percentage (`1%`).
pub fn parse_share(s: &str) -> Result<f64, String> {
    let (num, scale) = match s.trim().strip_suffix('%') {
        Some(p) => (p.trim(), 100.0),
        None => (s.trim(), 1.0),
    };
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a fraction (0.01) or a percentage (1%)"))?;
    let v = v / scale;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?} is not between 0 and 1 (0% and 100%)"))
    }
}

/// Reads the event files and evaluates the checks, without rendering.
pub fn build(events: &[PathBuf], checks: &ChecksConfig) -> Result<Report, ReportError> {
    let files = read::expand(events)?;
    let mut agg = aggregate::Aggregate::default();
    let mut input = read::InputSummary::default();
    for file in &files {
        read::read_file(file, &mut input, |e| agg.add(&e))?;
    }
    Ok(evaluate(&agg, input, checks))
}

/// The report in the given format.
pub fn render(report: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Text => text::render(report),
        ReportFormat::Json => render_json(report),
        ReportFormat::Html => html::render(report),
    }
}

pub fn render_json(report: &Report) -> String {
    // Serializing fails only on non-string map keys, which the report does
    // not have (a non-finite threshold is written as null); the fallback
    // still yields valid JSON rather than a panic.
    let mut s = serde_json::to_string_pretty(report).unwrap_or_else(|e| {
        serde_json::json!({ "schema": checks::REPORT_SCHEMA, "error": e.to_string() }).to_string()
    });
    s.push('\n');
    s
}

/// `touchgate report`: build, render, write to `--out` or stdout.
pub fn run(args: &ReportArgs) -> Result<ReportOutcome, ReportError> {
    let report = build(&args.events, &args.checks)?;
    check_input(&report.input, args.max_malformed)?;
    let rendered = render(&report, args.format);
    match &args.out {
        Some(path) => std::fs::write(path, rendered).map_err(|source| ReportError::Output {
            path: Some(path.clone()),
            source,
        })?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(rendered.as_bytes())
                .and_then(|()| out.flush())
                .map_err(|source| ReportError::Output { path: None, source })?;
        }
    }
    Ok(ReportOutcome {
        alert: report.alert,
        report,
    })
}
