//! The YAML side of `touchgate inject`: a stream split into documents
//! kept as text, each read into a tree the way kubectl reads it, and the
//! tree written back in kubectl's block layout.
//!
//! This is written on top of `saphyr-parser` (the YAML 1.2 grammar) rather
//! than a serde YAML crate, because kubectl reads manifests the YAML 1.1 way
//! (go-yaml v2 under sigs.k8s.io/yaml): a plain `0644` is the integer 420 and
//! a plain `yes` is `true` to kubectl. serde_norway and serde_yaml_ng read
//! `0644` as the string "0644" and write the string "yes" unquoted, so a
//! parse/serialize round trip through them changes what the API server
//! receives (`defaultMode`, env values). Here plain scalars are resolved as
//! go-yaml v2 resolves them, and the emitter quotes every string that any
//! YAML reader (1.1 or 1.2) could take for something else.
//!
//! The tree converts to and from `serde_json::Value`, the form the patching
//! works on; [`Node::update_from`] writes a patched value back into the tree
//! without disturbing the layout of what the patch left alone.

use std::collections::HashMap;
use std::fmt::Write as _;

use saphyr_parser::{Event, Parser, ScalarStyle, Tag};
use serde_json::Value;

// ---------------------------------------------------------------------------
// Documents as text

/// One `---`-separated piece of the input, kept as text so that untouched
/// documents are written back exactly.
pub(super) struct Chunk<'a> {
    pub text: &'a str,
    /// 1-based line of the input where this piece starts.
    pub first_line: usize,
    pub has_start_marker: bool,
    pub has_end_marker: bool,
}

impl<'a> Chunk<'a> {
    /// Comment and blank lines between the `---` line and the content (e.g.
    /// helm's `# Source:` line), kept when the document is re-emitted.
    pub(super) fn leading_comments(&self) -> impl Iterator<Item = &'a str> {
        let mut lines = self.text.split_inclusive('\n').peekable();
        if self.has_start_marker {
            lines.next();
        }
        lines.take_while(|l| {
            let t = l.trim();
            t.is_empty() || t.starts_with('#')
        })
    }
}

fn is_marker(line: &str, marker: &str) -> bool {
    line.strip_prefix(marker)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t', '\r', '\n']))
}

/// Split on document markers. A line starting with `---` or `...` at column
/// 0 can never be inside a scalar (YAML forbids it), so this split agrees
/// with the parser. Directive lines (`%…`) right before a `---` travel with
/// the document they apply to.
pub(super) fn split_documents<'a>(input: &'a str) -> Vec<Chunk<'a>> {
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut start_line = 1;
    let mut pos = 0;
    // Start offset and line of a run of directive lines, if the lines just
    // read were directives.
    let mut directives: Option<(usize, usize)> = None;
    let push = |chunks: &mut Vec<Chunk<'a>>, from: usize, to: usize, line: usize| {
        if from < to {
            let text = &input[from..to];
            let first = text.split_inclusive('\n').next().unwrap_or("");
            let last = text
                .trim_end_matches(['\r', '\n'])
                .rsplit('\n')
                .next()
                .unwrap_or("");
            chunks.push(Chunk {
                text,
                first_line: line,
                has_start_marker: is_marker(first, "---"),
                has_end_marker: is_marker(last, "..."),
            });
        }
    };
    for (line_no, line) in (1..).zip(input.split_inclusive('\n')) {
        let end = pos + line.len();
        if is_marker(line, "---") {
            let (cut, cut_line) = directives.unwrap_or((pos, line_no));
            push(&mut chunks, start, cut, start_line);
            start = cut;
            start_line = cut_line;
            directives = None;
        } else if line.starts_with('%') {
            directives.get_or_insert((pos, line_no));
        } else {
            directives = None;
        }
        if is_marker(line, "...") {
            push(&mut chunks, start, end, start_line);
            start = end;
            start_line = line_no + 1;
        }
        pos = end;
    }
    push(&mut chunks, start, input.len(), start_line);
    chunks
}

// ---------------------------------------------------------------------------
// The tree, and reading it the way kubectl does

/// A YAML value as kubectl sees it after reading (JSON-like; mapping keys are
/// strings, in document order).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    Map(Vec<(String, Node)>),
}

pub(super) fn s(v: &str) -> Node {
    Node::Str(v.to_string())
}

impl Node {
    pub(super) fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries.iter_mut().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Replace the value of `key`, or append it.
    pub(super) fn set(&mut self, key: &str, value: Node) {
        if let Some(slot) = self.get_mut(key) {
            *slot = value;
        } else if let Node::Map(entries) = self {
            entries.push((key.to_string(), value));
        }
    }

    /// Insert `key` right after `after` (or at the end).
    pub(super) fn insert_after(&mut self, after: &str, key: &str, value: Node) {
        if let Node::Map(entries) = self {
            let at = entries
                .iter()
                .position(|(k, _)| k == after)
                .map_or(entries.len(), |i| i + 1);
            entries.insert(at, (key.to_string(), value));
        }
    }

    fn count(&self) -> usize {
        1 + match self {
            Node::Seq(items) => items.iter().map(Node::count).sum(),
            Node::Map(entries) => entries.iter().map(|(_, v)| v.count()).sum(),
            _ => 0,
        }
    }
}

// ---------------------------------------------------------------------------
// The tree as JSON

/// A value of the tree that JSON cannot hold: a float that is not finite.
#[derive(Debug)]
pub(super) struct NotJson {
    /// Where it is below the node converted, as `containers[0].args`.
    pub path: String,
    /// The value as YAML writes it (`.nan`, `-.inf`).
    pub value: String,
}

impl Node {
    /// The node as JSON: the form the API server takes and the patching
    /// works on.
    pub(super) fn to_json(&self) -> Result<Value, NotJson> {
        self.to_json_at(&mut String::new())
    }

    fn to_json_at(&self, path: &mut String) -> Result<Value, NotJson> {
        Ok(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => Value::Number(n),
                None => {
                    return Err(NotJson {
                        path: path.clone(),
                        value: format_float(*f),
                    });
                }
            },
            Node::Str(s) => Value::String(s.clone()),
            Node::Seq(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let len = path.len();
                    let _ = write!(path, "[{i}]");
                    out.push(item.to_json_at(path)?);
                    path.truncate(len);
                }
                Value::Array(out)
            }
            Node::Map(entries) => {
                let mut out = serde_json::Map::new();
                for (k, v) in entries {
                    let len = path.len();
                    if !path.is_empty() {
                        path.push('.');
                    }
                    path.push_str(k);
                    out.insert(k.clone(), v.to_json_at(path)?);
                    path.truncate(len);
                }
                Value::Object(out)
            }
        })
    }

    /// The tree of a JSON value, a mapping's keys in the value's order.
    pub(super) fn from_json(v: &Value) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Node::Int(i),
                // A fraction, or an integer beyond i64.
                None => Node::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            Value::String(s) => Node::Str(s.clone()),
            Value::Array(items) => Node::Seq(items.iter().map(Node::from_json).collect()),
            Value::Object(m) => Node::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), Node::from_json(v)))
                    .collect(),
            ),
        }
    }

    /// Make this node hold `new`, keeping the layout of what did not change,
    /// since JSON has no key order, quoting or block scalars to give back: a
    /// mapping keeps its keys where they are, and a sequence item equal to
    /// one it had keeps that item's node. Keys new to this mapping go where
    /// `placement` says, in its order (before the key it names, else at the
    /// end), then the others at the end in `new`'s order.
    pub(super) fn update_from(&mut self, new: &Value, placement: &[(&str, Option<&str>)]) {
        if self.to_json().is_ok_and(|old| old == *new) {
            return;
        }
        match (self, new) {
            (Node::Map(entries), Value::Object(new)) => {
                entries.retain(|(k, _)| new.contains_key(k));
                for (k, v) in entries.iter_mut() {
                    if let Some(value) = new.get(k) {
                        v.update_from(value, &[]);
                    }
                }
                let keys = placement
                    .iter()
                    .map(|(k, _)| *k)
                    .chain(new.keys().map(String::as_str));
                for key in keys {
                    let Some(value) = new.get(key) else { continue };
                    if entries.iter().any(|(k, _)| k == key) {
                        continue;
                    }
                    let before = placement
                        .iter()
                        .find(|(k, _)| *k == key)
                        .and_then(|(_, before)| *before);
                    let at = before
                        .and_then(|b| entries.iter().position(|(k, _)| k == b))
                        .unwrap_or(entries.len());
                    entries.insert(at, (key.to_string(), Node::from_json(value)));
                }
            }
            (Node::Seq(items), Value::Array(new)) => {
                let mut old: Vec<Option<(Option<Value>, Node)>> = std::mem::take(items)
                    .into_iter()
                    .map(|n| Some((n.to_json().ok(), n)))
                    .collect();
                for value in new {
                    let kept = old
                        .iter_mut()
                        .find(|slot| matches!(slot, Some((Some(json), _)) if json == value))
                        .and_then(Option::take)
                        .map(|(_, node)| node);
                    items.push(kept.unwrap_or_else(|| Node::from_json(value)));
                }
            }
            (node, new) => *node = Node::from_json(new),
        }
    }
}

pub(super) struct Loaded {
    pub root: Node,
    /// Something the tree does not hold faithfully (an unknown tag, a complex
    /// key, a duplicate key), with its line: fatal only if the document must
    /// be re-emitted.
    pub problem: Option<(usize, String)>,
}

pub(super) struct LoadError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Total nodes that aliases may expand to in one document: a guard against
/// "billion laughs" inputs.
const ALIAS_BUDGET: usize = 100_000;

enum Key {
    Str(String),
    /// A plain `<<`: merge the value's mapping(s) in (go-yaml supports it).
    Merge,
}

enum Entry {
    Pair(String, Node),
    Merge(Vec<Vec<(String, Node)>>),
}

/// A collection whose end has not been read yet.
enum OpenCollection {
    Seq(Vec<Node>, usize),
    Map {
        entries: Vec<Entry>,
        key: Option<Key>,
        anchor: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<OpenCollection>,
    anchors: HashMap<usize, Node>,
    alias_budget_used: usize,
    root: Option<Node>,
    problem: Option<(usize, String)>,
}

impl Builder {
    fn note(&mut self, line: usize, what: String) {
        self.problem.get_or_insert((line, what));
    }

    fn awaiting_key(&self) -> bool {
        matches!(
            self.stack.last(),
            Some(OpenCollection::Map { key: None, .. })
        )
    }

    /// A finished node goes to its parent (as key or value) or becomes the
    /// root.
    fn push(&mut self, node: Node, anchor: usize, line: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let mut problem = None;
        match self.stack.last_mut() {
            None => self.root = Some(node),
            Some(OpenCollection::Seq(items, _)) => items.push(node),
            Some(OpenCollection::Map { entries, key, .. }) => match key.take() {
                None => {
                    *key = Some(Key::Str(match node {
                        Node::Str(s) => s,
                        Node::Null => "null".into(),
                        Node::Bool(b) => b.to_string(),
                        Node::Int(i) => i.to_string(),
                        Node::Float(f) => format_float(f),
                        Node::Seq(_) | Node::Map(_) => {
                            problem = Some("a mapping key that is not a scalar".to_string());
                            String::new()
                        }
                    }))
                }
                Some(Key::Merge) => match node {
                    Node::Map(m) => entries.push(Entry::Merge(vec![m])),
                    Node::Seq(items) => {
                        let mut maps = Vec::new();
                        for item in items {
                            match item {
                                Node::Map(m) => maps.push(m),
                                _ => problem = Some("a merge key (<<) over a non-mapping".into()),
                            }
                        }
                        entries.push(Entry::Merge(maps));
                    }
                    _ => problem = Some("a merge key (<<) over a non-mapping".into()),
                },
                Some(Key::Str(k)) => {
                    let duplicate = entries
                        .iter()
                        .any(|e| matches!(e, Entry::Pair(existing, _) if *existing == k));
                    if duplicate {
                        problem = Some(format!("duplicate mapping key {k:?}"));
                    }
                    entries.push(Entry::Pair(k, node));
                }
            },
        }
        if let Some(what) = problem {
            self.note(line, what);
        }
    }

    fn end_map(entries: Vec<Entry>) -> Node {
        let explicit: Vec<String> = entries
            .iter()
            .filter_map(|e| match e {
                Entry::Pair(k, _) => Some(k.clone()),
                Entry::Merge(_) => None,
            })
            .collect();
        let mut out: Vec<(String, Node)> = Vec::new();
        for entry in entries {
            match entry {
                Entry::Pair(k, v) => {
                    // A later duplicate wins, as in go-yaml.
                    if let Some(slot) = out.iter_mut().find(|(existing, _)| *existing == k) {
                        slot.1 = v;
                    } else {
                        out.push((k, v));
                    }
                }
                // Explicit keys win over merged ones; among merged maps the
                // earlier wins.
                Entry::Merge(maps) => {
                    for (k, v) in maps.into_iter().flatten() {
                        if !explicit.contains(&k) && !out.iter().any(|(e, _)| *e == k) {
                            out.push((k, v));
                        }
                    }
                }
            }
        }
        Node::Map(out)
    }
}

/// Parse one chunk. `Ok(None)` when it holds no document (only comments or
/// blank lines).
pub(super) fn load(text: &str, first_line: usize) -> Result<Option<Loaded>, LoadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut parser = Parser::new_from_str(text);
    let mut b = Builder::default();
    let mut documents = 0;
    let abs = |line: usize| line + first_line - 1;
    while let Some(next) = parser.next_event() {
        let (event, span) = next.map_err(|e| LoadError {
            line: abs(e.marker().line()),
            column: e.marker().col() + 1,
            message: e.info().to_string(),
        })?;
        let line = abs(span.start.line());
        match event {
            Event::StreamStart | Event::StreamEnd | Event::Nothing | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    // split_documents cuts at every marker, so a second
                    // document here means a bare document after `...`.
                    return Err(LoadError {
                        line,
                        column: 1,
                        message: "a second document without a `---` line".into(),
                    });
                }
            }
            Event::Scalar(value, style, anchor, tag) => {
                let node = if b.awaiting_key()
                    && style == ScalarStyle::Plain
                    && tag.is_none()
                    && value == "<<"
                {
                    if let Some(OpenCollection::Map { key, .. }) = b.stack.last_mut() {
                        *key = Some(Key::Merge);
                    }
                    continue;
                } else {
                    match resolve_scalar(&value, style, tag.as_deref()) {
                        Ok(node) => node,
                        Err(what) => {
                            b.note(line, what);
                            Node::Str(value.into_owned())
                        }
                    }
                };
                b.push(node, anchor, line);
            }
            Event::SequenceStart(anchor, tag) => {
                if let Some(t) = tag.as_deref().filter(|t| !is_core(t, "seq")) {
                    b.note(line, format!("the tag {}", show_tag(t)));
                }
                b.stack.push(OpenCollection::Seq(Vec::new(), anchor));
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(t) = tag.as_deref().filter(|t| !is_core(t, "map")) {
                    b.note(line, format!("the tag {}", show_tag(t)));
                }
                b.stack.push(OpenCollection::Map {
                    entries: Vec::new(),
                    key: None,
                    anchor,
                });
            }
            Event::SequenceEnd => {
                if let Some(OpenCollection::Seq(items, anchor)) = b.stack.pop() {
                    b.push(Node::Seq(items), anchor, line);
                }
            }
            Event::MappingEnd => {
                if let Some(OpenCollection::Map {
                    entries, anchor, ..
                }) = b.stack.pop()
                {
                    b.push(Builder::end_map(entries), anchor, line);
                }
            }
            Event::Alias(id) => {
                let Some(node) = b.anchors.get(&id).cloned() else {
                    return Err(LoadError {
                        line,
                        column: span.start.col() + 1,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                b.alias_budget_used += node.count();
                if b.alias_budget_used > ALIAS_BUDGET {
                    return Err(LoadError {
                        line,
                        column: span.start.col() + 1,
                        message: format!("aliases expand to more than {ALIAS_BUDGET} nodes"),
                    });
                }
                b.push(node, 0, line);
            }
        }
    }
    if documents == 0 {
        return Ok(None);
    }
    Ok(Some(Loaded {
        root: b.root.unwrap_or(Node::Null),
        problem: b.problem,
    }))
}

/// A tag as it is usually written: `!!binary`, `!Ref`.
fn show_tag(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else {
        format!("{}{}", tag.handle, tag.suffix)
    }
}

fn is_core(tag: &Tag, suffix: &str) -> bool {
    tag.is_yaml_core_schema() && tag.suffix == suffix
}

/// A scalar's value: plain scalars resolved as go-yaml v2 does, quoted and
/// block scalars are strings, core tags honoured.
fn resolve_scalar(value: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Node, String> {
    let Some(tag) = tag else {
        return Ok(if style == ScalarStyle::Plain {
            resolve_plain(value)
        } else {
            Node::Str(value.to_string())
        });
    };
    if tag.handle == "!" && tag.suffix.is_empty() {
        return Ok(Node::Str(value.to_string()));
    }
    if !tag.is_yaml_core_schema() {
        return Err(format!("the tag {}", show_tag(tag)));
    }
    let resolved = resolve_plain(value);
    match (tag.suffix.as_str(), resolved) {
        ("str", _) => Ok(Node::Str(value.to_string())),
        ("int", n @ Node::Int(_))
        | ("float", n @ Node::Float(_))
        | ("bool", n @ Node::Bool(_))
        | ("null", n @ Node::Null) => Ok(n),
        ("float", Node::Int(i)) => Ok(Node::Float(i as f64)),
        _ => Err(format!("the tag {} on {value:?}", show_tag(tag))),
    }
}

/// go-yaml v2's resolution of an untagged plain scalar (what kubectl reads).
/// Timestamps stay strings: go-yaml v2 keeps them as strings when decoding
/// into interface{}, which is what sigs.k8s.io/yaml does.
fn resolve_plain(v: &str) -> Node {
    match v {
        "" | "~" | "null" | "Null" | "NULL" => return Node::Null,
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            return Node::Bool(true);
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            return Node::Bool(false);
        }
        ".nan" | ".NaN" | ".NAN" => return Node::Float(f64::NAN),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Node::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Node::Float(f64::NEG_INFINITY),
        _ => {}
    }
    if !v.starts_with(|c: char| c == '+' || c == '-' || c == '.' || c.is_ascii_digit()) {
        return Node::Str(v.to_string());
    }
    let plain: String = v.chars().filter(|c| *c != '_').collect();
    if let Some(i) = parse_go_int(&plain) {
        return Node::Int(i);
    }
    if is_yaml_float(&plain)
        && let Ok(f) = plain.parse::<f64>()
    {
        return Node::Float(f);
    }
    Node::Str(v.to_string())
}

/// Go's `strconv.ParseInt(s, 0, 64)`: sign, then `0x`, `0o`, `0b`, a leading
/// `0` for octal, or decimal.
fn parse_go_int(s: &str) -> Option<i64> {
    let (negative, digits) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    let (radix, body) = if let Some(rest) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, rest)
    } else if let Some(rest) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, rest)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// go-yaml's float syntax: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", frac)) => digits(frac),
        Some((int, frac)) => digits(int) && (frac.is_empty() || digits(frac)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

// ---------------------------------------------------------------------------
// Emitting

/// Block style in kubectl's layout (sequences under a key are not indented).
pub(super) fn emit_document(out: &mut String, root: &Node) {
    match root {
        Node::Map(entries) if !entries.is_empty() => emit_map(out, entries, 0, false),
        Node::Seq(items) if !items.is_empty() => emit_seq(out, items, 0, false),
        scalar => {
            emit_scalar(out, scalar, 0);
            out.push('\n');
        }
    }
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// `first_inline`: the first entry continues a line already started (`- `).
fn emit_map(out: &mut String, entries: &[(String, Node)], at: usize, first_inline: bool) {
    for (i, (key, value)) in entries.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(out, at);
        }
        emit_string(out, key);
        out.push(':');
        match value {
            Node::Map(m) if !m.is_empty() => {
                out.push('\n');
                emit_map(out, m, at + 2, false);
            }
            Node::Seq(items) if !items.is_empty() => {
                out.push('\n');
                emit_seq(out, items, at, false);
            }
            scalar => {
                out.push(' ');
                emit_scalar(out, scalar, at + 2);
                out.push('\n');
            }
        }
    }
}

fn emit_seq(out: &mut String, items: &[Node], at: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            indent(out, at);
        }
        out.push_str("- ");
        match item {
            Node::Map(m) if !m.is_empty() => emit_map(out, m, at + 2, true),
            Node::Seq(s) if !s.is_empty() => emit_seq(out, s, at + 2, true),
            scalar => {
                emit_scalar(out, scalar, at + 2);
                out.push('\n');
            }
        }
    }
}

/// A scalar (or an empty collection) without its line break. `block_at` is
/// the indentation of a literal block's lines.
fn emit_scalar(out: &mut String, node: &Node, block_at: usize) {
    match node {
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Node::Float(f) => out.push_str(&format_float(*f)),
        Node::Str(v) if literal_block_ok(v) => {
            out.push_str(if v.ends_with('\n') { "|" } else { "|-" });
            for line in v.strip_suffix('\n').unwrap_or(v).split('\n') {
                out.push('\n');
                if !line.is_empty() {
                    indent(out, block_at);
                    out.push_str(line);
                }
            }
        }
        Node::Str(v) => emit_string(out, v),
        Node::Seq(_) => out.push_str("[]"),
        Node::Map(_) => out.push_str("{}"),
    }
}

fn format_float(f: f64) -> String {
    if f.is_nan() {
        ".nan".into()
    } else if f.is_infinite() {
        if f > 0.0 { ".inf" } else { "-.inf" }.into()
    } else {
        // Debug is the shortest repr that reads back exactly, always with a
        // `.` or an exponent, so it stays a float.
        format!("{f:?}")
    }
}

/// Multi-line text reads best as `|`; only when the block reproduces it
/// exactly (one or no final line break, first line not indented, no
/// characters a block cannot carry).
fn literal_block_ok(v: &str) -> bool {
    v.contains('\n')
        && !v.ends_with("\n\n")
        && !v.starts_with([' ', '\t', '\n'])
        && v.chars().all(|c| c == '\n' || c == '\t' || is_printable(c))
        && !v.contains(" \n")
        && !v.ends_with(' ')
}

fn is_printable(c: char) -> bool {
    !(c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}'))
}

/// A string as a plain scalar when every YAML reader takes it for that same
/// string, else double-quoted.
fn emit_string(out: &mut String, v: &str) {
    if plain_ok(v) {
        out.push_str(v);
        return;
    }
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            '\u{85}' => out.push_str("\\N"),
            c if (c as u32) < 0x100 && !is_printable(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if !is_printable(c) => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn plain_ok(v: &str) -> bool {
    let mut chars = v.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    let second = chars.next();
    let start_ok = if first.is_ascii_alphabetic() || matches!(first, '/' | '_' | '$') {
        // Rules out every indicator, number, null, .inf and timestamp form
        // of YAML 1.1 and 1.2; only the word forms remain to check.
        let reserved = ["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
        !reserved.iter().any(|r| v.eq_ignore_ascii_case(r))
    } else if first.is_ascii_digit() {
        // Quantities like `100m` or `2Gi`: a letter and no `-`, `:` or `_`
        // keep them clear of timestamps, sexagesimals and 1.1 floats like
        // `1.2.3`; what go-yaml would still take for a number is refused.
        v.chars().all(|c| c.is_ascii_alphanumeric() || c == '.')
            && v.chars().any(|c| c.is_ascii_alphabetic())
            && matches!(resolve_plain(v), Node::Str(_))
    } else if first == '-' {
        // Flags like `--config`: `-` is an indicator only before a space.
        second.is_some_and(|c| c.is_ascii_alphabetic() || c == '-')
            && !v.starts_with("---")
            && matches!(resolve_plain(v), Node::Str(_))
    } else {
        false
    };
    start_ok
        && v.chars().all(|c| c != '\t' && is_printable(c))
        && !v.contains(": ")
        && !v.contains(" #")
        && !v.ends_with([':', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(yaml: &str) -> Node {
        load(yaml, 1).ok().flatten().map(|l| l.root).unwrap()
    }

    #[test]
    fn plain_scalars_resolve_like_kubectl() {
        let cases = [
            ("0644", Node::Int(420)),
            ("0o644", Node::Int(420)),
            ("0x1F", Node::Int(31)),
            ("-12", Node::Int(-12)),
            ("1_000", Node::Int(1000)),
            ("08", Node::Float(8.0)),
            ("1e3", Node::Float(1000.0)),
            ("0.5", Node::Float(0.5)),
            ("yes", Node::Bool(true)),
            ("Off", Node::Bool(false)),
            ("~", Node::Null),
            ("1:20", Node::Str("1:20".into())),
            ("2024-01-01", Node::Str("2024-01-01".into())),
            ("nginx:1.25", Node::Str("nginx:1.25".into())),
        ];
        for (text, want) in cases {
            assert_eq!(resolve_plain(text), want, "{text}");
        }
    }

    #[test]
    fn quoted_and_tagged_scalars() {
        let r = root("a: '0644'\nb: \"yes\"\nc: !!str 12\nd: !!int '12'\ne: |\n  x\n");
        assert_eq!(r.get("a"), Some(&s("0644")));
        assert_eq!(r.get("b"), Some(&s("yes")));
        assert_eq!(r.get("c"), Some(&s("12")));
        assert_eq!(r.get("d"), Some(&Node::Int(12)));
        assert_eq!(r.get("e"), Some(&s("x\n")));
    }

    #[test]
    fn emitted_strings_read_back_identically() {
        let strings = [
            "yes",
            "No",
            "on",
            "0644",
            "1e3",
            "-x",
            "- x",
            "a: b",
            "a #b",
            "#x",
            "",
            " x",
            "x ",
            "plain",
            "/etc/touchgate",
            "a\nb\n",
            "a\nb",
            "  indented\n",
            "tab\there",
            "quote\"s",
            "back\\slash",
            "é",
            "\u{1}",
            "a\n\n",
            "null",
            "~",
            "@x",
            "`x",
            "%x",
            "!x",
            "&x",
            "*x",
            "{x}",
            "[x]",
            "'x'",
            "x:",
            "2024-01-01",
            "1:20",
            ".inf",
            "+1",
            "$(VAR)",
            "a,b",
            "100m",
            "2Gi",
            "1e3",
            "1E3",
            "0x1F",
            "0b1",
            "0o7",
            "1.2.3",
            "12",
            "1.5",
            "--config",
            "-1",
            "-e3",
            "-.inf",
            "-",
            "--",
            "- -x",
            "--- x",
            "---",
            "3d",
            "1_000",
            "v1.2",
            "x\u{2028}y",
        ];
        for v in strings {
            let mut out = String::from("k: ");
            emit_scalar(&mut out, &s(v), 2);
            out.push('\n');
            let back = root(&out);
            assert_eq!(back.get("k"), Some(&s(v)), "{v:?} emitted as {out:?}");
        }
    }

    proptest::proptest! {
        /// Whatever a string holds, the emitter writes it so that it reads
        /// back as that same string, as a value and as a key.
        #[test]
        fn any_string_round_trips(
            v in "\\PC{0,24}|[-:#'\"\n\t yYnNoO0-9.eExX+_~\\[\\]{}|>!&*%@`,/$]{0,12}"
        ) {
            let doc = Node::Map(vec![
                ("a-key-longer-than-any-generated-one".into(), Node::Str(v.clone())),
                (v.clone(), Node::Seq(vec![Node::Str(v.clone())])),
            ]);
            let mut out = String::new();
            emit_document(&mut out, &doc);
            let back = load(&out, 1).ok().flatten().map(|l| l.root);
            proptest::prop_assert_eq!(back, Some(doc), "{}", out);
        }
    }

    #[test]
    fn merge_keys_and_aliases() {
        let r = root("base: &b\n  a: 1\n  b: 2\nthing:\n  <<: *b\n  b: 3\n  y: 4\n");
        // `y` is a YAML 1.1 boolean: kubectl reads the key as "true".
        assert_eq!(
            r.get("thing"),
            Some(&Node::Map(vec![
                ("a".into(), Node::Int(1)),
                ("b".into(), Node::Int(3)),
                ("true".into(), Node::Int(4)),
            ]))
        );
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut yaml = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..8 {
            let p = i - 1;
            let _ = writeln!(
                yaml,
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]"
            );
        }
        assert!(load(&yaml, 1).is_err());
    }

    #[test]
    fn split_keeps_every_byte() {
        let input = "# lead\n---\na: 1\n...\n%YAML 1.2\n---\nb: 2\n---\n# only a comment\n";
        let chunks = split_documents(input);
        let joined: String = chunks.iter().map(|c| c.text).collect();
        assert_eq!(joined, input);
        assert_eq!(chunks.len(), 4);
        assert!(chunks[1].has_end_marker);
        assert!(chunks[2].text.starts_with("%YAML"));
        assert_eq!(chunks[2].first_line, 5);
    }

    #[test]
    fn an_update_keeps_the_layout_of_what_it_leaves_alone() {
        let mut tree = root("b: '0644'\na: [{z: 1, w: \"yes\"}, {x: 2}]\nc: 1.5\n");
        let mut json = tree.to_json().unwrap();
        json["a"]
            .as_array_mut()
            .unwrap()
            .insert(0, serde_json::json!({"new": true}));
        json["d"] = serde_json::json!({"q": 1, "p": 2});
        json["e"] = serde_json::json!(3);
        json.as_object_mut().unwrap().remove("c");
        tree.update_from(&json, &[("e", Some("a"))]);
        assert_eq!(tree.to_json().unwrap(), json);
        let mut out = String::new();
        emit_document(&mut out, &tree);
        assert_eq!(
            out,
            "b: \"0644\"\ne: 3\na:\n- new: true\n- z: 1\n  w: \"yes\"\n- x: 2\nd:\n  p: 2\n  q: 1\n"
        );
    }

    #[test]
    fn a_float_json_cannot_hold_is_named_by_its_path() {
        let e = root("a:\n  b: [1, .nan]\n").to_json().unwrap_err();
        assert_eq!((e.path.as_str(), e.value.as_str()), ("a.b[1]", ".nan"));
        let n = root("a: 08\nb: 1e3\nc: 7\n");
        assert_eq!(Node::from_json(&n.to_json().unwrap()), n);
    }
}
