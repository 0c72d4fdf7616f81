//! `--format html`: one self-contained file. Inline CSS and inline SVG
//! charts, no script, no external resource; a Content-Security-Policy that
//! forbids both, as a second line of defence behind the escaping.
//!
//! Every string that came from an event file (event names, channels, parse
//! errors quoting them) is attacker-influenced and goes through [`esc`].
//!
//! The charts are written by hand: they are rectangles, polylines and
//! labels, and a charting crate (plotters) would load fonts to lay out text
//! and take the escaping out of our hands.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write;

use super::checks::{DayReport, DirectShare, Report, Status};
use super::text::{duration, jump};

const W: f64 = 960.0;
const H: f64 = 300.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 56.0;

const ALERT_COLOR: &str = "#c62828";
const LANDING_COLOR: &str = "#1565c0";
const CONVERSION_COLOR: &str = "#ef6c00";
const OK_COLOR: &str = "#2e7d32";

/// Colours of the GA4 default channel groups; other names take [`EXTRA`].
const CHANNEL_COLORS: &[(&str, &str)] = &[
    ("Direct", "#78909c"),
    ("Organic Search", "#2e7d32"),
    ("Paid Search", "#1565c0"),
    ("Organic Social", "#d81b60"),
    ("Paid Social", "#6a1b9a"),
    ("Email", "#ef6c00"),
    ("Referral", "#00838f"),
    ("Display", "#f9a825"),
    ("Paid Video", "#c62828"),
    ("Organic Video", "#ff7043"),
    ("Affiliates", "#6d4c41"),
    ("Cross-network", "#283593"),
    ("Paid Shopping", "#00695c"),
    ("Organic Shopping", "#9e9d24"),
    ("Paid Other", "#455a64"),
    ("Audio", "#8d6e63"),
    ("SMS", "#7cb342"),
    ("Mobile Push Notifications", "#26a69a"),
    ("Unassigned", "#bdbdbd"),
];
const EXTRA: &[&str] = &[
    "#5c6bc0", "#ab47bc", "#26c6da", "#d4e157", "#ffa726", "#8d6e63", "#ec407a", "#9ccc65",
];

/// HTML-escapes a string for text and quoted-attribute contexts.
pub fn esc(s: &str) -> Cow<'_, str> {
    html_escape::encode_safe(s)
}

pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(64 * 1024);
    let status = if r.alert {
        format!("ALERT: {} alert(s)", r.alerts.len())
    } else if r.status == Status::InsufficientData {
        format!(
            "INSUFFICIENT DATA: no day has {} events for any check",
            r.thresholds.min_events
        )
    } else if r.insufficient_days > 0 {
        format!(
            "OK: no check in alert; {} day(s) with too few events for some check",
            r.insufficient_days
        )
    } else {
        "OK: no check in alert".to_string()
    };
    let period = match (r.days.first(), r.days.last()) {
        (Some(a), Some(b)) => format!("{} to {} (UTC), {} day(s)", a.day, b.day, r.days.len()),
        _ => "no events".to_string(),
    };
    let t = &r.thresholds;
    let _ = write!(
        o,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>touchgate report</title>
<style>{CSS}</style></head>
<body>
<header><h1>touchgate report</h1>
<p class="status {cls}" id="status">{status}</p>
<p>{period}. {files} file(s), {lines} line(s), {events} event(s), {malformed} malformed line(s).</p>
<p>Thresholds: direct share &le; {dmax}, jump &le; {jump:.1} pp over the trailing 7 days, valid share &ge; {vmin}, parity &ge; {pmin:.2}; at {conf} confidence, on days with at least {min} events.</p>
</header>
"#,
        cls = match r.status {
            Status::Alert => "alert",
            Status::InsufficientData => "insufficient",
            Status::Ok => "ok",
        },
        conf = pct(Some(t.confidence)),
        min = t.min_events,
        files = r.input.files.len(),
        lines = r.input.lines,
        events = r.input.events,
        malformed = r.input.malformed,
        dmax = pct(Some(t.direct_share_max)),
        jump = t.direct_jump_pp,
        vmin = pct(Some(t.valid_share_min)),
        pmin = t.parity_min,
    );

    o.push_str("<section id=\"alerts\"><h2>Alerts</h2>");
    if r.alerts.is_empty() {
        o.push_str("<p>None.</p>");
    } else {
        o.push_str("<ul>");
        for a in &r.alerts {
            let _ = write!(
                o,
                "<li><span class=\"badge\">ALERT</span> {} <code>{}</code>: {}</li>",
                esc(&a.day),
                a.check.as_str(),
                esc(&a.message)
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");

    let channels = channel_order(r);
    o.push_str("<section><h2>Channel mix of landings per day</h2>");
    channel_mix_chart(&mut o, r, &channels);
    legend(&mut o, channels.iter().map(|(c, col)| (c.as_str(), *col)));
    o.push_str("</section>\n<section><h2>Direct share per day</h2>");
    direct_share_chart(&mut o, r);
    legend(
        &mut o,
        [
            ("landings", LANDING_COLOR),
            ("conversions' last touch", CONVERSION_COLOR),
            ("threshold (direct_share_max)", ALERT_COLOR),
        ],
    );
    o.push_str("</section>\n<section><h2>Server/client parity per event</h2>");
    parity_chart(&mut o, r);
    o.push_str(
        "<p class=\"note\">A bar is the ratio over the whole period; it is red when the event \
         name was below the minimum on at least one day (see the table below).</p></section>\n",
    );

    tables(&mut o, r, &channels);
    o.push_str("</body></html>\n");
    o
}

const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#212121;max-width:1100px}\
h1{margin:0 0 8px}h2{margin:28px 0 8px;font-size:1.15em}\
.status{display:inline-block;padding:4px 10px;border-radius:4px;font-weight:600;color:#fff}\
.status.ok{background:#2e7d32}.status.alert{background:#c62828}.status.insufficient{background:#6d6d6d}\
.badge{background:#c62828;color:#fff;border-radius:3px;padding:0 5px;font-size:.8em;font-weight:600}\
table{border-collapse:collapse;font-size:.85em;margin:8px 0}\
th,td{padding:3px 8px;border-bottom:1px solid #e0e0e0;text-align:right;white-space:nowrap}\
th:first-child,td:first-child,td.text{text-align:left}th{background:#f5f5f5}\
td.alert{color:#c62828;font-weight:600}tr.alert td:first-child{border-left:3px solid #c62828}\
.legend{display:flex;flex-wrap:wrap;gap:4px 16px;font-size:.85em;margin:4px 0 0 56px}\
.legend span::before{content:'';display:inline-block;width:10px;height:10px;margin-right:5px;background:var(--c)}\
svg{display:block;max-width:100%;height:auto}svg text{font-size:11px;fill:#424242}\
.note{font-size:.85em;color:#616161;margin:4px 0 0 56px}svg .grid{stroke:#eeeeee}svg .axis{stroke:#9e9e9e}";

/// Channels by total landings, largest first, with their colours.
fn channel_order(r: &Report) -> Vec<(String, &'static str)> {
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    for d in &r.days {
        for (c, n) in &d.channels {
            *totals.entry(c).or_default() += n;
        }
    }
    let mut v: Vec<(&str, u64)> = totals.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut extra = 0;
    v.into_iter()
        .map(|(c, _)| {
            let col = CHANNEL_COLORS
                .iter()
                .find(|(name, _)| *name == c)
                .map(|(_, col)| *col)
                .unwrap_or_else(|| {
                    extra += 1;
                    EXTRA[(extra - 1) % EXTRA.len()]
                });
            (c.to_string(), col)
        })
        .collect()
}

fn legend<'a>(o: &mut String, items: impl IntoIterator<Item = (&'a str, &'a str)>) {
    o.push_str("<div class=\"legend\">");
    for (name, col) in items {
        // `col` is one of our constants, never input.
        let _ = write!(o, "<span style=\"--c:{col}\">{}</span>", esc(name));
    }
    o.push_str("</div>");
}

/// The plot area and the x slot of each of `n` categories.
struct PlotArea {
    n: usize,
}

impl PlotArea {
    fn plot_w(&self) -> f64 {
        W - LEFT - RIGHT
    }
    fn plot_h(&self) -> f64 {
        H - TOP - BOTTOM
    }
    fn slot(&self) -> f64 {
        self.plot_w() / self.n.max(1) as f64
    }
    fn x_center(&self, i: usize) -> f64 {
        LEFT + self.slot() * (i as f64 + 0.5)
    }
    /// y of a value on a 0..max axis.
    fn y(&self, v: f64, max: f64) -> f64 {
        TOP + self.plot_h() * (1.0 - (v / max).clamp(0.0, 1.0))
    }
}

fn svg_open(o: &mut String, id: &str, label: &str) {
    let _ = write!(
        o,
        "<svg id=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

/// Horizontal grid lines and y labels for a 0..max axis.
fn y_axis(o: &mut String, f: &PlotArea, max: f64, label: impl Fn(f64) -> String) {
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = f.y(v, max);
        let _ = write!(
            o,
            "<line class=\"grid\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + f.plot_w(),
            LEFT - 6.0,
            y + 4.0,
            esc(&label(v))
        );
    }
    let _ = write!(
        o,
        "<line class=\"axis\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\"/>",
        LEFT + f.plot_w(),
        TOP + f.plot_h(),
        TOP + f.plot_h()
    );
}

/// Day labels under the slots, thinned to about a dozen.
fn day_labels(o: &mut String, f: &PlotArea, r: &Report) {
    let step = r.days.len().div_ceil(12).max(1);
    for (i, d) in r.days.iter().enumerate() {
        if i % step == 0 {
            let _ = write!(
                o,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                f.x_center(i),
                TOP + f.plot_h() + 16.0,
                esc(d.day.get(5..).unwrap_or(&d.day))
            );
        }
    }
}

fn no_data(o: &mut String, what: &str) {
    let _ = write!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
        W / 2.0,
        H / 2.0,
        esc(what)
    );
}

/// An axis maximum at or above the count `v` whose four grid steps are
/// round whole numbers (30 for 113: 0, 30, 60, 90, 120).
fn nice_max(v: f64) -> f64 {
    let raw = (v / 4.0).max(1.0);
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .filter(|s| s.fract() == 0.0)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    step * 4.0
}

fn channel_mix_chart(o: &mut String, r: &Report, channels: &[(String, &str)]) {
    svg_open(
        o,
        "chart-channel-mix",
        "Landings per day, stacked by channel",
    );
    let f = PlotArea { n: r.days.len() };
    let peak = r.days.iter().map(|d| d.landings.total).max().unwrap_or(0);
    if peak == 0 {
        no_data(o, "No landings in these files.");
    } else {
        let max = nice_max(peak as f64);
        y_axis(o, &f, max, |v| format!("{v:.0}"));
        let bar = (f.slot() * 0.8).max(1.0);
        for (i, d) in r.days.iter().enumerate() {
            let x = f.x_center(i) - bar / 2.0;
            let mut base = 0u64;
            for (c, col) in channels {
                let n = d.channels.get(c).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let y_top = f.y((base + n) as f64, max);
                let y_bottom = f.y(base as f64, max);
                let _ = write!(
                    o,
                    "<rect class=\"bar\" x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{col}\"><title>{}: {}: {n} landing(s)</title></rect>",
                    (y_bottom - y_top).max(0.5),
                    esc(&d.day),
                    esc(c)
                );
                base += n;
            }
        }
        day_labels(o, &f, r);
    }
    o.push_str("</svg>");
}

fn direct_share_chart(o: &mut String, r: &Report) {
    svg_open(
        o,
        "chart-direct-share",
        "Direct share per day, with its threshold",
    );
    let f = PlotArea { n: r.days.len() };
    if r.days.is_empty() {
        no_data(o, "No events in these files.");
        o.push_str("</svg>");
        return;
    }
    y_axis(o, &f, 1.0, |v| format!("{:.0}%", v * 100.0));
    let t = r.thresholds.direct_share_max;
    let y = f.y(t, 1.0);
    let _ = write!(
        o,
        "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{ALERT_COLOR}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\">max {}</text>",
        LEFT + f.plot_w(),
        LEFT + f.plot_w() + 6.0,
        y + 4.0,
        pct(Some(t))
    );
    type Series = (&'static str, &'static str, fn(&DayReport) -> &DirectShare);
    let series: [Series; 2] = [
        ("landings", LANDING_COLOR, |d| &d.landings),
        ("conversions", CONVERSION_COLOR, |d| &d.conversions.direct),
    ];
    for (name, col, get) in &series {
        // A day without a share breaks the line.
        let mut runs: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
        for (i, d) in r.days.iter().enumerate() {
            match (get(d).direct_share, runs.last_mut()) {
                (Some(s), Some(run)) => run.push((f.x_center(i), f.y(s, 1.0))),
                _ => runs.push(Vec::new()),
            }
        }
        for run in runs.iter().filter(|run| run.len() > 1) {
            let points: Vec<String> = run.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = write!(
                o,
                "<polyline class=\"line\" fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{}\"/>",
                points.join(" ")
            );
        }
        for (i, d) in r.days.iter().enumerate() {
            let ds = get(d);
            let Some(s) = ds.direct_share else { continue };
            let alert = ds.alert_share || ds.alert_jump;
            let over = ds.jump_pp.map_or(String::new(), |j| {
                format!(", {} pp over the trailing mean", jump(Some(j)))
            });
            let _ = write!(
                o,
                "<circle class=\"point{}\" cx=\"{:.1}\" cy=\"{:.1}\" r=\"{}\" fill=\"{}\" stroke=\"{col}\"><title>{}: {name} direct share {} ({} of {}){over}{}</title></circle>",
                if alert { " alert" } else { "" },
                f.x_center(i),
                f.y(s, 1.0),
                if alert { 5 } else { 3 },
                if alert { ALERT_COLOR } else { col },
                esc(&d.day),
                pct(Some(s)),
                ds.direct,
                ds.total,
                if alert { " — ALERT" } else { "" }
            );
        }
    }
    day_labels(o, &f, r);
    o.push_str("</svg>");
}

/// Ratios above this are drawn at it (labelled with their value): a page
/// that double-fires beacons must not flatten every other bar.
const PARITY_AXIS_CAP: f64 = 2.0;

fn parity_chart(o: &mut String, r: &Report) {
    svg_open(
        o,
        "chart-parity",
        "Client beacons / server events per event name, with its threshold",
    );
    let f = PlotArea { n: r.parity.len() };
    if r.parity.is_empty() {
        no_data(o, "No beacons in these files: parity not checked.");
        o.push_str("</svg>");
        return;
    }
    let peak = r
        .parity
        .iter()
        .filter_map(|p| p.ratio)
        .fold(r.thresholds.parity_min, f64::max);
    // Steps of 0.4, so the quarter grid lines fall on 0.1s.
    let max = ((peak.min(PARITY_AXIS_CAP) * 1.1).max(1.1) / 0.4).ceil() * 0.4;
    y_axis(o, &f, max, |v| format!("{v:.2}"));
    let bar = (f.slot() * 0.6).clamp(1.0, 80.0);
    for (i, p) in r.parity.iter().enumerate() {
        let alert = p.alert_days > 0;
        let col = if alert { ALERT_COLOR } else { OK_COLOR };
        let x = f.x_center(i) - bar / 2.0;
        let ratio = p.ratio.unwrap_or(0.0);
        let y_top = f.y(ratio.min(max), max);
        let bottom = TOP + f.plot_h();
        let shown = p.ratio.map_or("-".to_string(), |r| format!("{r:.2}"));
        let _ = write!(
            o,
            "<rect class=\"bar{}\" x=\"{x:.1}\" y=\"{y_top:.1}\" width=\"{bar:.1}\" height=\"{:.1}\" fill=\"{col}\"><title>{}: {} beacon(s) / {} server event(s) = {shown}; lowest day {}; {} day(s) in alert</title></rect>",
            if alert { " alert" } else { "" },
            (bottom - y_top).max(0.5),
            esc(&p.event_name),
            p.client,
            p.server,
            p.min_ratio.map_or("-".to_string(), |r| format!("{r:.2}")),
            p.alert_days
        );
        let _ = write!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{shown}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            f.x_center(i),
            y_top - 4.0,
            f.x_center(i),
            bottom + 16.0,
            esc(&ellipsis(&p.event_name, (f.slot() / 7.0) as usize))
        );
    }
    let y = f.y(r.thresholds.parity_min, max);
    let _ = write!(
        o,
        "<line class=\"threshold\" x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{ALERT_COLOR}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\">min {:.2}</text>",
        LEFT + f.plot_w(),
        LEFT + f.plot_w() + 6.0,
        y + 4.0,
        r.thresholds.parity_min
    );
    o.push_str("</svg>");
}

fn ellipsis(s: &str, max_chars: usize) -> String {
    let max_chars = max_chars.max(4);
    if s.chars().count() <= max_chars {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(max_chars - 1).collect();
        t.push('…');
        t
    }
}

fn td(o: &mut String, v: &str, alert: bool) {
    let _ = write!(
        o,
        "<td{}>{}</td>",
        if alert { " class=\"alert\"" } else { "" },
        esc(v)
    );
}

/// A text cell (a name, a path), left-aligned.
fn td_text(o: &mut String, v: &str, alert: bool) {
    let _ = write!(
        o,
        "<td class=\"text{}\">{}</td>",
        if alert { " alert" } else { "" },
        esc(v)
    );
}

fn direct_tds(o: &mut String, d: &DirectShare) {
    td(o, &d.total.to_string(), false);
    td(o, &d.direct.to_string(), false);
    td(o, &pct(d.direct_share), d.alert_share);
    td(o, &pct(d.trailing_mean), false);
    td(o, &jump(d.jump_pp), d.alert_jump);
}

fn tables(o: &mut String, r: &Report, channels: &[(String, &str)]) {
    o.push_str(
        "<section><h2>Per day</h2><table id=\"days\"><thead><tr><th>day</th><th>landings</th><th>direct</th><th>share</th><th>7d mean</th><th>jump pp</th>\
<th>conversions</th><th>direct</th><th>share</th><th>7d mean</th><th>jump pp</th><th>valid</th><th>valid share</th><th>status</th></tr></thead><tbody>",
    );
    for d in &r.days {
        let _ = write!(o, "<tr{}>", if d.alert { " class=\"alert\"" } else { "" });
        td(o, &d.day, false);
        direct_tds(o, &d.landings);
        direct_tds(o, &d.conversions.direct);
        td(o, &d.conversions.valid.to_string(), false);
        td(
            o,
            &pct(d.conversions.valid_share),
            d.conversions.alert_valid,
        );
        td(o, d.status.as_str(), d.alert);
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></section>\n");

    o.push_str(
        "<section><h2>Channel mix of landings</h2><table id=\"channels\"><thead><tr><th>day</th>",
    );
    for (c, _) in channels {
        let _ = write!(o, "<th>{}</th>", esc(c));
    }
    o.push_str("</tr></thead><tbody>");
    for d in &r.days {
        o.push_str("<tr>");
        td(o, &d.day, false);
        for (c, _) in channels {
            td(
                o,
                &d.channels.get(c).copied().unwrap_or(0).to_string(),
                false,
            );
        }
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></section>\n");

    o.push_str(
        "<section><h2>Delivery latency (received_at − occurred_at)</h2><table id=\"latency\"><thead><tr><th>day</th><th>events</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>negative</th></tr></thead><tbody>",
    );
    let rows = r.days.iter().map(|d| (d.day.as_str(), &d.latency));
    for (day, l) in rows.chain(std::iter::once(("all", &r.latency))) {
        o.push_str("<tr>");
        td(o, day, false);
        td(o, &l.count.to_string(), false);
        for s in [l.p50_seconds, l.p90_seconds, l.p99_seconds, l.max_seconds] {
            td(o, &duration(s), false);
        }
        td(o, &l.negative.to_string(), false);
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table></section>\n");

    o.push_str(
        "<section><h2>Server/client parity per day</h2><table id=\"parity\"><thead><tr><th>day</th><th>event</th><th>server</th><th>client</th><th>ratio</th></tr></thead><tbody>",
    );
    for d in &r.days {
        for p in &d.parity {
            let _ = write!(o, "<tr{}>", if p.alert { " class=\"alert\"" } else { "" });
            td(o, &d.day, false);
            td_text(o, &p.event_name, false);
            td(o, &p.server.to_string(), false);
            td(o, &p.client.to_string(), false);
            td(
                o,
                &p.ratio.map_or("-".into(), |r| format!("{r:.2}")),
                p.alert,
            );
            o.push_str("</tr>");
        }
    }
    o.push_str("</tbody></table></section>\n");

    o.push_str(
        "<section><h2>Form attempts per confirmed conversion</h2><table id=\"forms\"><thead><tr><th>form</th><th>attempts</th><th>confirmed</th><th>attempts/confirmed</th><th>conversions</th><th>unconfirmed by reason</th></tr></thead><tbody>",
    );
    for f in &r.forms {
        o.push_str("<tr>");
        td_text(o, &f.event_name, false);
        td(o, &f.attempts.to_string(), false);
        td(o, &f.confirmed.to_string(), false);
        td(
            o,
            &f.attempts_per_confirmed
                .map_or("-".into(), |r| format!("{r:.2}")),
            false,
        );
        td(o, &f.conversions.to_string(), false);
        let reasons: Vec<String> = f
            .unconfirmed
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        td_text(o, &reasons.join(", "), false);
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if r.forms.is_empty() {
        o.push_str("<p class=\"note\">No form_attempt events in these files.</p>");
    }
    o.push_str("</section>\n");

    o.push_str(
        "<section><h2>Input</h2><table id=\"input\"><thead><tr><th>file</th><th>gzip</th><th>lines</th><th>events</th><th>malformed</th><th>error</th></tr></thead><tbody>",
    );
    for f in &r.input.files {
        o.push_str("<tr>");
        td_text(o, &f.path, false);
        td(o, if f.gzip { "yes" } else { "no" }, false);
        td(o, &f.lines.to_string(), false);
        td(o, &f.events.to_string(), false);
        td(o, &f.malformed.to_string(), f.malformed > 0);
        td_text(o, f.error.as_deref().unwrap_or(""), f.error.is_some());
        o.push_str("</tr>");
    }
    o.push_str("</tbody></table>");
    if !r.input.malformed_samples.is_empty() {
        o.push_str("<ul id=\"malformed\">");
        for m in &r.input.malformed_samples {
            let _ = write!(
                o,
                "<li><code>{}:{}</code>: {}</li>",
                esc(&m.path),
                m.line,
                esc(&m.error)
            );
        }
        o.push_str("</ul>");
    }
    o.push_str("</section>\n");
}

fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| format!("{:.1}%", x * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_maxima_have_round_quarters() {
        for (v, want) in [
            (113.0, 120.0),
            (3.0, 4.0),
            (7.0, 8.0),
            (50.0, 60.0),
            (0.0, 4.0),
            (4001.0, 6000.0),
        ] {
            assert_eq!(nice_max(v), want, "{v}");
        }
        for v in 1..2000 {
            let m = nice_max(f64::from(v));
            assert!(
                m >= f64::from(v) && (m / 4.0).fract() == 0.0 && m <= f64::from(v).max(4.0) * 2.0,
                "{v}: {m}"
            );
        }
    }

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<a href=\"x\">'&"),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;"
        );
    }
}
