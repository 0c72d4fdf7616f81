//! `--format text`: aligned tables for a terminal. Every value past its
//! threshold is marked `!`, every day in alert `ALERT`.
//!
//! Event names and channels come from event files, and beacon names from
//! browsers: control and bidirectional-override characters are escaped so
//! a crafted name cannot drive the terminal.

use std::collections::BTreeMap;
use std::fmt::Write;

use comfy_table::{Cell, CellAlignment, ContentArrangement, LineStyle, Table, TableStyle};

use super::checks::{DirectShare, Report, Status};

/// Channel columns shown in the channel-mix table; the rest are summed.
const MAX_CHANNEL_COLUMNS: usize = 10;

pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let t = &r.thresholds;
    let _ = writeln!(
        out,
        "touchgate report: {} file(s), {} line(s), {} event(s), {} malformed line(s), {} day(s)",
        r.input.files.len(),
        r.input.lines,
        r.input.events,
        r.input.malformed,
        r.days.len()
    );
    let _ = writeln!(
        out,
        "thresholds: direct share <= {}, jump <= {:.1} pp over the trailing 7 days, valid share >= {}, parity >= {:.2}; at {} confidence, on days with >= {} events",
        pct(Some(t.direct_share_max)),
        t.direct_jump_pp,
        pct(Some(t.valid_share_min)),
        t.parity_min,
        pct(Some(t.confidence)),
        t.min_events
    );
    let _ = writeln!(
        out,
        "'!' marks a value past its threshold at that confidence; '?' one with too few events to judge."
    );

    section(
        &mut out,
        "Direct share (landings; conversions' last touch) and valid share, per UTC day",
    );
    let mut table = new_table(&[
        "day",
        "landings",
        "direct",
        "share",
        "7d mean",
        "jump pp",
        "conversions",
        "direct",
        "share",
        "7d mean",
        "jump pp",
        "valid",
        "share",
        "",
    ]);
    for d in &r.days {
        let mut row = vec![d.day.clone()];
        row.extend(direct_cells(&d.landings));
        row.extend(direct_cells(&d.conversions.direct));
        row.push(d.conversions.valid.to_string());
        row.push(marked(
            pct(d.conversions.valid_share),
            d.conversions.valid_status,
        ));
        row.push(status_word(d.status));
        table.add_row(row);
    }
    push_table(&mut out, table);

    section(&mut out, "Channel mix of landings, per UTC day");
    let mut channel_totals: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &r.days {
        for (c, n) in &d.channels {
            *channel_totals.entry(c).or_default() += n;
        }
    }
    let mut channels: Vec<(&str, u64)> = channel_totals.into_iter().collect();
    channels.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = channels
        .iter()
        .take(MAX_CHANNEL_COLUMNS)
        .map(|c| c.0)
        .collect();
    let more = channels.len() > shown.len();
    let mut header: Vec<String> = vec!["day".into()];
    header.extend(shown.iter().map(|c| terminal_safe(c)));
    if more {
        header.push("others".into());
    }
    let mut table = new_table(&header.iter().map(String::as_str).collect::<Vec<_>>());
    for d in &r.days {
        let mut row = vec![d.day.clone()];
        row.extend(
            shown
                .iter()
                .map(|c| d.channels.get(*c).copied().unwrap_or(0).to_string()),
        );
        if more {
            let rest: u64 = d
                .channels
                .iter()
                .filter(|(c, _)| !shown.contains(&c.as_str()))
                .map(|(_, n)| n)
                .sum();
            row.push(rest.to_string());
        }
        table.add_row(row);
    }
    push_table(&mut out, table);

    channel_rule_differences(&mut out, r);

    section(
        &mut out,
        "Delivery latency (received_at - occurred_at), per UTC day",
    );
    let mut table = new_table(&["day", "events", "p50", "p90", "p99", "max", "negative"]);
    let rows = r.days.iter().map(|d| (d.day.clone(), &d.latency));
    for (day, l) in rows.chain(std::iter::once(("all".to_string(), &r.latency))) {
        table.add_row(vec![
            day,
            l.count.to_string(),
            duration(l.p50_seconds),
            duration(l.p90_seconds),
            duration(l.p99_seconds),
            duration(l.max_seconds),
            l.negative.to_string(),
        ]);
    }
    push_table(&mut out, table);

    section(
        &mut out,
        "Server/client parity (event names with beacons), per UTC day",
    );
    if r.parity.is_empty() {
        let _ = writeln!(out, "no beacons in these files: parity not checked");
    } else {
        let mut table = new_table_left(&["day", "event", "server", "client", "ratio", ""], 2);
        for d in &r.days {
            for p in &d.parity {
                table.add_row(vec![
                    d.day.clone(),
                    terminal_safe(&p.event_name),
                    p.server.to_string(),
                    p.client.to_string(),
                    marked(ratio(p.ratio), p.status),
                    status_word(p.status),
                ]);
            }
        }
        for p in &r.parity {
            table.add_row(vec![
                "all".to_string(),
                terminal_safe(&p.event_name),
                p.server.to_string(),
                p.client.to_string(),
                ratio(p.ratio),
                if p.alert_days > 0 {
                    format!("{} day(s) in alert", p.alert_days)
                } else {
                    String::new()
                },
            ]);
        }
        push_table(&mut out, table);
    }

    section(
        &mut out,
        "Form attempts per confirmed conversion (form_attempt events), whole period",
    );
    if r.forms.is_empty() {
        let _ = writeln!(out, "no form_attempt events in these files");
    } else {
        let mut table = new_table_left(
            &[
                "form",
                "attempts",
                "confirmed",
                "attempts/confirmed",
                "conversions",
                "unconfirmed by reason",
            ],
            1,
        );
        for f in &r.forms {
            let reasons: Vec<String> = f
                .unconfirmed
                .iter()
                .map(|(k, n)| format!("{} {n}", terminal_safe(k)))
                .collect();
            table.add_row(vec![
                terminal_safe(&f.event_name),
                f.attempts.to_string(),
                f.confirmed.to_string(),
                ratio(f.attempts_per_confirmed),
                f.conversions.to_string(),
                reasons.join(", "),
            ]);
        }
        push_table(&mut out, table);
    }

    section(&mut out, "Input");
    let mut table = new_table_left(
        &["file", "gzip", "lines", "events", "malformed", "error"],
        2,
    );
    for f in &r.input.files {
        table.add_row(vec![
            terminal_safe(&f.path),
            if f.gzip { "yes" } else { "no" }.to_string(),
            f.lines.to_string(),
            f.events.to_string(),
            f.malformed.to_string(),
            f.error.as_deref().map(terminal_safe).unwrap_or_default(),
        ]);
    }
    push_table(&mut out, table);
    for m in &r.input.malformed_samples {
        let _ = writeln!(
            out,
            "malformed: {}:{}: {}",
            terminal_safe(&m.path),
            m.line,
            terminal_safe(&m.error)
        );
    }
    if r.input.malformed > r.input.malformed_samples.len() as u64 {
        let _ = writeln!(
            out,
            "malformed: … and {} more",
            r.input.malformed - r.input.malformed_samples.len() as u64
        );
    }

    section(&mut out, "Alerts");
    for a in &r.alerts {
        let _ = writeln!(
            out,
            "ALERT {} {}: {}",
            a.day,
            a.check.as_str(),
            terminal_safe(&a.message)
        );
    }
    if r.alert {
        let _ = writeln!(out, "\nstatus: ALERT ({} alert(s))", r.alerts.len());
    } else if r.status == Status::InsufficientData {
        let _ = writeln!(
            out,
            "none\n\nstatus: INSUFFICIENT DATA (no day has {} events for any check)",
            t.min_events
        );
    } else if r.insufficient_days > 0 {
        let _ = writeln!(
            out,
            "none\n\nstatus: OK ({} day(s) with too few events for some check)",
            r.insufficient_days
        );
    } else {
        let _ = writeln!(out, "none\n\nstatus: OK");
    }
    out
}

fn section(out: &mut String, title: &str) {
    let _ = writeln!(out, "\n{title}");
}

fn new_table(header: &[&str]) -> Table {
    new_table_left(header, 1)
}

/// A table whose first `left` columns (days, names) are left-aligned and
/// the rest (numbers) right-aligned.
fn new_table_left(header: &[&str], left: usize) -> Table {
    // Only a rule under the header: the layout of `ps`/`kubectl get`,
    // easy to read and to grep.
    const STYLE: TableStyle =
        TableStyle::new().header_separator(LineStyle::none().fill('-').junction(' '));
    let mut table = Table::new();
    table
        .load_style(STYLE)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.iter().map(Cell::new).collect::<Vec<_>>());
    for (i, col) in table.column_iter_mut().enumerate() {
        if i >= left {
            col.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

fn push_table(out: &mut String, table: Table) {
    for line in table.lines() {
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

fn direct_cells(d: &DirectShare) -> Vec<String> {
    vec![
        d.total.to_string(),
        d.direct.to_string(),
        marked(pct(d.direct_share), d.share_status),
        pct(d.trailing_mean),
        marked(
            d.jump_pp.map_or("-".into(), |j| format!("{j:+.1}")),
            d.jump_status,
        ),
    ]
}

/// A jump in percentage points, signed; no "-0.0" for a flat share.
pub fn jump(pp: Option<f64>) -> String {
    match pp {
        None => "-".into(),
        Some(j) if j.abs() < 0.05 => "+0.0".into(),
        Some(j) => format!("{j:+.1}"),
    }
}

fn status_word(s: Status) -> String {
    match s {
        Status::Ok => String::new(),
        s => s.as_str().into(),
    }
}

fn marked(value: String, s: Status) -> String {
    match s {
        Status::Ok => value,
        Status::Alert => format!("{value} !"),
        Status::InsufficientData => format!("{value} ?"),
    }
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

fn ratio(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{x:.2}"))
}

/// Seconds in the unit that reads best.
pub fn duration(s: Option<f64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s < 1.0 => format!("{:.0}ms", s * 1000.0),
        Some(s) if s < 120.0 => format!("{s:.1}s"),
        Some(s) if s < 7200.0 => format!("{:.1}m", s / 60.0),
        Some(s) if s < 172_800.0 => format!("{:.1}h", s / 3600.0),
        Some(s) => format!("{:.1}d", s / 86_400.0),
    }
}

/// Control characters and bidi overrides as `\u{…}` escapes.
pub fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}') {
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Landings the extended rules and GA4's put in different channels, summed
/// over the period; nothing when they agree everywhere.
fn channel_rule_differences(out: &mut String, r: &Report) {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &r.days {
        for (pair, n) in &d.channel_rule_differences {
            *totals.entry(pair).or_default() += n;
        }
    }
    if totals.is_empty() {
        return;
    }
    section(out, "Landings whose channel differs under GA4's rules");
    let mut table = new_table(&["extended → GA4", "landings"]);
    for (pair, n) in totals {
        table.add_row(vec![terminal_safe(pair), n.to_string()]);
    }
    push_table(out, table);
}
