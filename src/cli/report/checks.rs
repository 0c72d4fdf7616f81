//! The checks, evaluated per UTC day over the aggregate: pure functions of
//! the counters and the thresholds. The result is the report every format
//! renders, and its JSON form is the `--format json` output.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::{Date, Duration};

use super::aggregate::{Aggregate, DayAggregate, Latency};
use super::read::InputSummary;
use super::stats::{two_proportion_z, wilson, z_one_sided};
use crate::config::ChecksConfig;

/// Identifies the JSON shape of the report; bumped on a breaking change.
pub const REPORT_SCHEMA: &str = "touchgate-report/1";

/// The direct-share jump is measured against the direct share of the
/// events of at most this many calendar days before the day.
pub const TRAILING_DAYS: i64 = 7;

/// Shares are ratios of counts, so a value exactly at a threshold can come
/// out a few ulps past it (0.4 − 0.3 = 0.10000000000000003). A value at the
/// threshold is not in alert; this margin keeps it so.
const EPS: f64 = 1e-9;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub schema: &'static str,
    /// Any check in alert on any day: `touchgate report` exits 1.
    pub alert: bool,
    /// `alert` when any check is; `insufficient_data` when no check on any
    /// day had `min_events` to judge by; `ok` otherwise.
    pub status: Status,
    /// Days on which at least one check had too few events to judge.
    pub insufficient_days: u64,
    pub thresholds: Thresholds,
    pub input: InputSummary,
    /// Every day in alert, one entry per check (and per event name for parity).
    pub alerts: Vec<Alert>,
    /// Days that have at least one event, oldest first.
    pub days: Vec<DayReport>,
    /// Parity per event name over the whole period.
    pub parity: Vec<ParityTotal>,
    /// Delivery latency over the whole period.
    pub latency: LatencyReport,
    /// Attempts per confirmed conversion, per form, over the whole period.
    pub forms: Vec<FormReport>,
}

/// One form over the period, from its `form_attempt` events.
#[derive(Debug, Clone, Serialize)]
pub struct FormReport {
    pub event_name: String,
    /// Posts to the form.
    pub attempts: u64,
    /// Posts the app confirmed by the form's success rule.
    pub confirmed: u64,
    /// Posts it did not, per reason.
    pub unconfirmed: BTreeMap<String, u64>,
    /// `attempts / confirmed`: how many posts one confirmed conversion
    /// takes; null without a confirmed post.
    pub attempts_per_confirmed: Option<f64>,
    /// Conversion events of this name in the files (deduplicated: a
    /// confirmed repeat of the same lead is not a second one).
    pub conversions: u64,
}

/// `[checks]` of the configuration, as the report applied them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Thresholds {
    pub direct_share_max: f64,
    pub direct_jump_pp: f64,
    pub valid_share_min: f64,
    pub parity_min: f64,
    pub min_events: u64,
    pub confidence: f64,
}

impl From<&ChecksConfig> for Thresholds {
    fn from(c: &ChecksConfig) -> Self {
        Thresholds {
            direct_share_max: c.direct_share_max,
            direct_jump_pp: c.direct_jump_pp,
            valid_share_min: c.valid_share_min,
            parity_min: c.parity_min,
            min_events: c.min_events,
            confidence: c.confidence,
        }
    }
}

/// The outcome of one check on one day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Alert,
    /// Fewer than `min_events` in the check's denominator (or, for a jump,
    /// no trailing day): neither OK nor in alert.
    InsufficientData,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Alert => "ALERT",
            Status::InsufficientData => "insufficient data",
        }
    }

    fn of(enough: bool, alert: bool) -> Status {
        match (enough, alert) {
            (false, _) => Status::InsufficientData,
            (true, true) => Status::Alert,
            (true, false) => Status::Ok,
        }
    }

    /// A day's (or the report's) status from its checks': any alert wins,
    /// then any OK; only all-insufficient is insufficient.
    fn combine(all: impl IntoIterator<Item = Status>) -> Status {
        let mut out = Status::InsufficientData;
        for s in all {
            match s {
                Status::Alert => return Status::Alert,
                Status::Ok => out = Status::Ok,
                Status::InsufficientData => {}
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    /// Direct share of landings above `direct_share_max`.
    LandingDirectShare,
    /// Direct share of landings more than `direct_jump_pp` over the trailing mean.
    LandingDirectJump,
    /// Direct share of conversions' last touch above `direct_share_max`.
    ConversionDirectShare,
    /// The same, more than `direct_jump_pp` over its trailing mean.
    ConversionDirectJump,
    /// Share of conversions with a valid last touch below `valid_share_min`.
    ValidShare,
    /// Client beacons / server events of one event name below `parity_min`.
    Parity,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::LandingDirectShare => "landing_direct_share",
            Check::LandingDirectJump => "landing_direct_jump",
            Check::ConversionDirectShare => "conversion_direct_share",
            Check::ConversionDirectJump => "conversion_direct_jump",
            Check::ValidShare => "valid_share",
            Check::Parity => "parity",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub check: Check,
    /// The event name, for parity; null otherwise.
    pub event_name: Option<String>,
    /// The measured value: a share (0..1), a jump in percentage points, or a ratio.
    pub value: f64,
    pub threshold: f64,
    pub message: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct DayReport {
    pub day: String,
    /// Any check in alert on this day.
    pub alert: bool,
    /// `alert`, else `ok` when any check had enough events, else `insufficient_data`.
    pub status: Status,
    pub events: OriginCounts,
    pub landings: DirectShare,
    /// Landings per channel (the channel mix).
    pub channels: BTreeMap<String, u64>,
    /// Landings whose GA4 channel differs, per `"extended → GA4"` pair.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub channel_rule_differences: BTreeMap<String, u64>,
    pub conversions: ConversionsDay,
    pub latency: LatencyReport,
    /// Event names that have beacons in the period, with their counts on this day.
    pub parity: Vec<ParityDay>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct OriginCounts {
    pub proxy: u64,
    pub ingest: u64,
    pub beacon: u64,
}

/// The direct share of landings, or of conversions' last touch, on one day.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DirectShare {
    pub total: u64,
    pub direct: u64,
    /// `direct / total`; null when `total` is 0.
    pub direct_share: Option<f64>,
    /// The lower Wilson bound of `direct_share` at the confidence: the share
    /// alerts only when this is past the maximum.
    pub share_bound: Option<f64>,
    /// Events and direct ones over the trailing days together.
    pub trailing_total: u64,
    pub trailing_direct: u64,
    /// `trailing_direct / trailing_total`; null without a trailing day.
    pub trailing_mean: Option<f64>,
    /// How many of the [`TRAILING_DAYS`] before this day had a share.
    pub trailing_days: u32,
    /// `(direct_share − trailing_mean) × 100`.
    pub jump_pp: Option<f64>,
    /// The two-proportion z statistic of the day against the trailing days;
    /// the jump alerts only when it is past the confidence's quantile.
    pub jump_z: Option<f64>,
    pub share_status: Status,
    pub jump_status: Status,
    pub alert_share: bool,
    pub alert_jump: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct ConversionsDay {
    #[serde(flatten)]
    pub direct: DirectShare,
    /// Conversions whose last touch has a valid source/medium.
    pub valid: u64,
    /// `valid / total`; null when there is no conversion.
    pub valid_share: Option<f64>,
    /// The upper Wilson bound of `valid_share`: it alerts only when this
    /// is below the minimum.
    pub valid_bound: Option<f64>,
    pub valid_status: Status,
    pub alert_valid: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParityDay {
    pub event_name: String,
    /// Proxy events with this name.
    pub server: u64,
    /// Beacons with this name.
    pub client: u64,
    /// `client / server`; null when `server` is 0.
    pub ratio: Option<f64>,
    /// The upper Wilson bound of the ratio (beacons capped at the server
    /// count): it alerts only when this is below the minimum.
    pub bound: Option<f64>,
    pub status: Status,
    pub alert: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParityTotal {
    pub event_name: String,
    pub server: u64,
    pub client: u64,
    /// `client / server` over the period.
    pub ratio: Option<f64>,
    /// The lowest daily ratio.
    pub min_ratio: Option<f64>,
    /// Days on which this event name was in alert.
    pub alert_days: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LatencyReport {
    pub count: u64,
    pub p50_seconds: Option<f64>,
    pub p90_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub max_seconds: Option<f64>,
    /// Events whose `received_at` is before `occurred_at` (clock skew), counted as 0 s.
    pub negative: u64,
}

impl From<&Latency> for LatencyReport {
    fn from(l: &Latency) -> Self {
        let s = |ms: Option<u64>| ms.map(|ms| ms as f64 / 1000.0);
        LatencyReport {
            count: l.count(),
            p50_seconds: s(l.quantile_ms(0.50)),
            p90_seconds: s(l.quantile_ms(0.90)),
            p99_seconds: s(l.quantile_ms(0.99)),
            max_seconds: s(l.max_ms()),
            negative: l.negative,
        }
    }
}

pub fn format_day(d: Date) -> String {
    format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
}

fn ratio(num: u64, den: u64) -> Option<f64> {
    (den > 0).then(|| num as f64 / den as f64)
}

fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// For each day, its direct share, the trailing window's, and the two
/// checks, for one of the two direct shares.
fn direct_shares(
    days: &BTreeMap<Date, DayAggregate>,
    counts: impl Fn(&DayAggregate) -> (u64, u64),
    t: &Thresholds,
    z: f64,
) -> BTreeMap<Date, DirectShare> {
    days.iter()
        .map(|(d, a)| {
            let (direct, total) = counts(a);
            let share = ratio(direct, total);
            let window_start = d.saturating_sub(Duration::days(TRAILING_DAYS));
            let (mut trailing_direct, mut trailing_total, mut trailing_days) = (0, 0, 0);
            for (_, a) in days.range(window_start..*d) {
                let (direct, total) = counts(a);
                if total > 0 {
                    trailing_direct += direct;
                    trailing_total += total;
                    trailing_days += 1;
                }
            }
            // Pooled rather than a mean of daily shares: a day of three
            // events must not weigh as much as a day of three thousand.
            let trailing_mean = ratio(trailing_direct, trailing_total);
            let jump_pp = share.zip(trailing_mean).map(|(s, m)| (s - m) * 100.0);
            let jump_z = two_proportion_z(direct, total, trailing_direct, trailing_total);
            let share_bound = wilson(direct, total, z).map(|(lo, _)| lo);
            let enough = total > 0 && total >= t.min_events;
            let alert_share = enough && share_bound.is_some_and(|b| b > t.direct_share_max + EPS);
            // Only rises count, so the test is one-sided.
            let alert_jump = enough
                && jump_pp.is_some_and(|j| j > t.direct_jump_pp + EPS)
                && jump_z.is_some_and(|jz| jz > z);
            let ds = DirectShare {
                total,
                direct,
                direct_share: share,
                share_bound,
                trailing_total,
                trailing_direct,
                trailing_mean,
                trailing_days,
                jump_pp,
                jump_z,
                share_status: Status::of(enough, alert_share),
                jump_status: Status::of(enough && trailing_total > 0, alert_jump),
                alert_share,
                alert_jump,
            };
            (*d, ds)
        })
        .collect()
}

/// Evaluates every check on every day.
pub fn evaluate(agg: &Aggregate, input: InputSummary, checks: &ChecksConfig) -> Report {
    let t = Thresholds::from(checks);
    let z = z_one_sided(t.confidence);
    let landing = direct_shares(&agg.days, |a| (a.landings_direct, a.landings), &t, z);
    let conversion = direct_shares(&agg.days, |a| (a.conversions_direct, a.conversions), &t, z);
    // Parity is checked only for event names that have beacons somewhere in
    // the period: the snippet sends beacons only where the page asks it to,
    // and a server-only form is not a parity failure. A name whose beacons
    // stop after the first day is still checked on every later day.
    let beacon_names: BTreeSet<&str> = agg
        .days
        .values()
        .flat_map(|a| a.client.keys().map(String::as_str))
        .collect();

    let mut alerts = Vec::new();
    let mut days = Vec::new();
    let mut totals: BTreeMap<&str, ParityTotal> = BTreeMap::new();
    let mut insufficient_days = 0;
    let mut statuses_seen = Vec::new();
    for (d, a) in &agg.days {
        let day = format_day(*d);
        let l = landing[d];
        let c = conversion[d];
        let valid_share = ratio(a.conversions_valid, a.conversions);
        let valid_bound = wilson(a.conversions_valid, a.conversions, z).map(|(_, hi)| hi);
        let valid_enough = a.conversions > 0 && a.conversions >= t.min_events;
        let alert_valid = valid_enough && valid_bound.is_some_and(|v| v < t.valid_share_min - EPS);
        let mut push = |check: Check,
                        event_name: Option<&str>,
                        value: f64,
                        threshold: f64,
                        message: String| {
            alerts.push(Alert {
                day: day.clone(),
                check,
                event_name: event_name.map(str::to_string),
                value,
                threshold,
                message,
            })
        };
        for (ds, what, share_check, jump_check) in [
            (
                &l,
                "landings",
                Check::LandingDirectShare,
                Check::LandingDirectJump,
            ),
            (
                &c,
                "conversions' last touch",
                Check::ConversionDirectShare,
                Check::ConversionDirectJump,
            ),
        ] {
            if let (true, Some(s)) = (ds.alert_share, ds.direct_share) {
                push(
                    share_check,
                    None,
                    s,
                    t.direct_share_max,
                    format!(
                        "direct share of {what} {} > max {} ({} of {}; lower bound {} at {} confidence)",
                        pct(s),
                        pct(t.direct_share_max),
                        ds.direct,
                        ds.total,
                        pct(ds.share_bound.unwrap_or(s)),
                        pct(t.confidence)
                    ),
                );
            }
            if let (true, Some(j), Some(s), Some(m)) =
                (ds.alert_jump, ds.jump_pp, ds.direct_share, ds.trailing_mean)
            {
                push(
                    jump_check,
                    None,
                    j,
                    t.direct_jump_pp,
                    format!(
                        "direct share of {what} {} ({} of {}) is {j:.1} pp over the trailing {} of {} day(s) ({} of {}; max {:.1} pp; z = {:.2}, real at {} confidence)",
                        pct(s),
                        ds.direct,
                        ds.total,
                        pct(m),
                        ds.trailing_days,
                        ds.trailing_direct,
                        ds.trailing_total,
                        t.direct_jump_pp,
                        ds.jump_z.unwrap_or(0.0),
                        pct(t.confidence)
                    ),
                );
            }
        }
        if let (true, Some(v)) = (alert_valid, valid_share) {
            push(
                Check::ValidShare,
                None,
                v,
                t.valid_share_min,
                format!(
                    "valid source/medium share of conversions {} < min {} ({} of {}; upper bound {} at {} confidence)",
                    pct(v),
                    pct(t.valid_share_min),
                    a.conversions_valid,
                    a.conversions,
                    pct(valid_bound.unwrap_or(v)),
                    pct(t.confidence)
                ),
            );
        }
        let mut parity = Vec::new();
        for name in &beacon_names {
            let server = a.server.get(*name).copied().unwrap_or(0);
            let client = a.client.get(*name).copied().unwrap_or(0);
            if server == 0 && client == 0 {
                continue;
            }
            let r = ratio(client, server);
            let bound = wilson(client.min(server), server, z).map(|(_, hi)| hi);
            let enough = server > 0 && server >= t.min_events;
            let alert = enough && bound.is_some_and(|b| b < t.parity_min - EPS);
            if let (true, Some(r)) = (alert, r) {
                push(
                    Check::Parity,
                    Some(name),
                    r,
                    t.parity_min,
                    format!(
                        "client/server parity of {name} {r:.2} < min {:.2} ({client} beacons / {server} server events; upper bound {:.2} at {} confidence)",
                        t.parity_min,
                        bound.unwrap_or(r),
                        pct(t.confidence)
                    ),
                );
            }
            let total = totals.entry(name).or_insert_with(|| ParityTotal {
                event_name: name.to_string(),
                server: 0,
                client: 0,
                ratio: None,
                min_ratio: None,
                alert_days: 0,
            });
            total.server += server;
            total.client += client;
            total.alert_days += u64::from(alert);
            if let Some(r) = r {
                total.min_ratio = Some(total.min_ratio.map_or(r, |m: f64| m.min(r)));
            }
            parity.push(ParityDay {
                event_name: name.to_string(),
                server,
                client,
                ratio: r,
                bound,
                status: Status::of(enough, alert),
                alert,
            });
        }
        let valid_status = Status::of(valid_enough, alert_valid);
        let statuses = [
            l.share_status,
            l.jump_status,
            c.share_status,
            c.jump_status,
            valid_status,
        ];
        let all = statuses.into_iter().chain(parity.iter().map(|p| p.status));
        let status = Status::combine(all.clone());
        insufficient_days += u64::from(all.clone().any(|s| s == Status::InsufficientData));
        statuses_seen.push(status);
        let day_alert = status == Status::Alert;
        days.push(DayReport {
            day,
            alert: day_alert,
            status,
            events: OriginCounts {
                proxy: a.events_proxy,
                ingest: a.events_ingest,
                beacon: a.events_beacon,
            },
            landings: l,
            channels: a.channels.clone(),
            channel_rule_differences: a.channel_rule_differences.clone(),
            conversions: ConversionsDay {
                direct: c,
                valid: a.conversions_valid,
                valid_share,
                valid_bound,
                valid_status,
                alert_valid,
            },
            latency: LatencyReport::from(&a.latency),
            parity,
        });
    }
    let parity = totals
        .into_values()
        .map(|mut p| {
            p.ratio = ratio(p.client, p.server);
            p
        })
        .collect();
    // Only forms with attempts: files written before touchgate counted
    // attempts hold conversions without them, and no ratio.
    let forms = agg
        .forms
        .iter()
        .filter(|(_, f)| f.attempts > 0)
        .map(|(name, f)| FormReport {
            event_name: name.clone(),
            attempts: f.attempts,
            confirmed: f.confirmed,
            unconfirmed: f.unconfirmed.clone(),
            attempts_per_confirmed: ratio(f.attempts, f.confirmed),
            conversions: f.conversions,
        })
        .collect();
    Report {
        schema: REPORT_SCHEMA,
        alert: !alerts.is_empty(),
        status: Status::combine(statuses_seen),
        insufficient_days,
        thresholds: t,
        input,
        alerts,
        days,
        parity,
        latency: LatencyReport::from(&agg.latency),
        forms,
    }
}
