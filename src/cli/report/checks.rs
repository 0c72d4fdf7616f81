//! The checks, evaluated per UTC day over the aggregate: pure functions of
//! the counters and the thresholds. The result is the report every format
//! renders, and its JSON form is the `--format json` output.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use time::{Date, Duration};

use super::aggregate::{Aggregate, DayAggregate, Latency};
use super::read::InputSummary;
use crate::config::ChecksConfig;

/// Identifies the JSON shape of the report; bumped on a breaking change.
pub const REPORT_SCHEMA: &str = "touchgate-report/1";

/// The direct-share jump is measured against the mean of the daily shares
/// of at most this many calendar days before the day.
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
}

impl From<&ChecksConfig> for Thresholds {
    fn from(c: &ChecksConfig) -> Self {
        Thresholds {
            direct_share_max: c.direct_share_max,
            direct_jump_pp: c.direct_jump_pp,
            valid_share_min: c.valid_share_min,
            parity_min: c.parity_min,
        }
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
    /// Mean of the daily direct shares of the trailing days; null without any.
    pub trailing_mean: Option<f64>,
    /// How many of the [`TRAILING_DAYS`] before this day had a share.
    pub trailing_days: u32,
    /// `(direct_share − trailing_mean) × 100`.
    pub jump_pp: Option<f64>,
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

/// The daily share of every day, and for each day the trailing mean and the
/// two alerts, for one of the two direct shares.
fn direct_shares(
    days: &BTreeMap<Date, DayAggregate>,
    counts: impl Fn(&DayAggregate) -> (u64, u64),
    t: &Thresholds,
) -> BTreeMap<Date, DirectShare> {
    let shares: BTreeMap<Date, f64> = days
        .iter()
        .filter_map(|(d, a)| {
            let (direct, total) = counts(a);
            ratio(direct, total).map(|s| (*d, s))
        })
        .collect();
    days.iter()
        .map(|(d, a)| {
            let (direct, total) = counts(a);
            let share = ratio(direct, total);
            let window_start = d.saturating_sub(Duration::days(TRAILING_DAYS));
            let trailing: Vec<f64> = shares.range(window_start..*d).map(|(_, s)| *s).collect();
            let trailing_mean = (!trailing.is_empty())
                .then(|| trailing.iter().sum::<f64>() / trailing.len() as f64);
            let jump_pp = share.zip(trailing_mean).map(|(s, m)| (s - m) * 100.0);
            let ds = DirectShare {
                total,
                direct,
                direct_share: share,
                trailing_mean,
                trailing_days: trailing.len() as u32,
                jump_pp,
                alert_share: share.is_some_and(|s| s > t.direct_share_max + EPS),
                alert_jump: jump_pp.is_some_and(|j| j > t.direct_jump_pp + EPS),
            };
            (*d, ds)
        })
        .collect()
}

/// Evaluates every check on every day.
pub fn evaluate(agg: &Aggregate, input: InputSummary, checks: &ChecksConfig) -> Report {
    let t = Thresholds::from(checks);
    let landing = direct_shares(&agg.days, |a| (a.landings_direct, a.landings), &t);
    let conversion = direct_shares(&agg.days, |a| (a.conversions_direct, a.conversions), &t);
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
    for (d, a) in &agg.days {
        let day = format_day(*d);
        let l = landing[d];
        let c = conversion[d];
        let valid_share = ratio(a.conversions_valid, a.conversions);
        let alert_valid = valid_share.is_some_and(|v| v < t.valid_share_min - EPS);
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
                        "direct share of {what} {} > max {} ({} of {})",
                        pct(s),
                        pct(t.direct_share_max),
                        ds.direct,
                        ds.total
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
                        "direct share of {what} {} is {j:.1} pp over the trailing mean {} of {} day(s) (max {:.1} pp)",
                        pct(s),
                        pct(m),
                        ds.trailing_days,
                        t.direct_jump_pp
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
                    "valid source/medium share of conversions {} < min {} ({} of {})",
                    pct(v),
                    pct(t.valid_share_min),
                    a.conversions_valid,
                    a.conversions
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
            let alert = r.is_some_and(|r| r < t.parity_min - EPS);
            if let (true, Some(r)) = (alert, r) {
                push(
                    Check::Parity,
                    Some(name),
                    r,
                    t.parity_min,
                    format!(
                        "client/server parity of {name} {r:.2} < min {:.2} ({client} beacons / {server} server events)",
                        t.parity_min
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
                alert,
            });
        }
        let day_alert = l.alert_share
            || l.alert_jump
            || c.alert_share
            || c.alert_jump
            || alert_valid
            || parity.iter().any(|p| p.alert);
        days.push(DayReport {
            day,
            alert: day_alert,
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
        thresholds: t,
        input,
        alerts,
        days,
        parity,
        latency: LatencyReport::from(&agg.latency),
        forms,
    }
}
