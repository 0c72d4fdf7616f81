//! Per-UTC-day counters over a stream of events. Memory grows with the
//! number of days and of distinct names, never with the number of events.

use std::collections::BTreeMap;

use hdrhistogram::Histogram;
use time::{Date, UtcOffset};

use crate::event::{Event, Origin};

/// Distinct event names or channels kept per day and per map; beyond it
/// they are counted under [`OTHER`]. Beacon event names come from
/// browsers, so their number is not ours to bound.
pub const MAX_KEYS_PER_DAY: usize = 1000;
/// Where names beyond [`MAX_KEYS_PER_DAY`] are counted.
pub const OTHER: &str = "(other)";

/// The event name of a landing.
pub const LANDING: &str = "landing";

#[derive(Debug, Default)]
pub struct Aggregate {
    pub days: BTreeMap<Date, DayAggregate>,
    /// Over every day.
    pub latency: Latency,
    /// Attempts and conversions per form event name, over every day.
    pub forms: BTreeMap<String, FormCounts>,
}

/// One form's posts over the period: every `form_attempt` event names its
/// form (`properties.form_event`) and says whether the app confirmed it.
#[derive(Debug, Default, Clone)]
pub struct FormCounts {
    pub attempts: u64,
    pub confirmed: u64,
    /// Unconfirmed attempts per reason (`properties.reason`).
    pub unconfirmed: BTreeMap<String, u64>,
    /// Conversion events of this name (after dedupe: a confirmed repeat of
    /// the same lead is one conversion).
    pub conversions: u64,
}

#[derive(Debug, Default)]
pub struct DayAggregate {
    pub events_proxy: u64,
    pub events_ingest: u64,
    pub events_beacon: u64,
    pub landings: u64,
    pub landings_direct: u64,
    /// Landings per channel.
    pub channels: BTreeMap<String, u64>,
    /// Landings whose `touch.channel_ga4` differs, per `"extended → GA4"`.
    pub channel_rule_differences: BTreeMap<String, u64>,
    pub conversions: u64,
    /// Conversions whose last touch is Direct (or null).
    pub conversions_direct: u64,
    /// Conversions whose last touch has a valid source/medium.
    pub conversions_valid: u64,
    /// Proxy events per event name: the server side of parity.
    pub server: BTreeMap<String, u64>,
    /// Beacons per event name: the client side of parity.
    pub client: BTreeMap<String, u64>,
    pub latency: Latency,
}

/// What an event counts as in the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `origin = proxy`, `event_name = landing`.
    Landing,
    /// `origin = proxy`, any other name: a server-confirmed form conversion.
    /// Ingested back-office events are not conversions here: they carry no
    /// touch of their own, and `touchgate_conversions_total` does not count
    /// them either.
    Conversion,
    /// `origin = ingest`.
    Ingest,
    /// `origin = beacon`.
    Beacon,
    /// `origin = proxy`, `event_name = form_attempt`: one post to a form,
    /// confirmed or not; not a conversion.
    Attempt,
}

pub fn kind(e: &Event) -> Kind {
    match e.origin {
        Origin::Proxy if e.event_name == LANDING => Kind::Landing,
        Origin::Proxy if e.is_attempt() => Kind::Attempt,
        Origin::Proxy => Kind::Conversion,
        Origin::Ingest => Kind::Ingest,
        Origin::Beacon => Kind::Beacon,
    }
}

/// A conversion's last touch: `(is_direct, valid)`. A conversion without a
/// last touch came in direct, and direct is a valid source/medium
/// (`(direct)` / `(none)`).
pub fn last_touch(e: &Event) -> (bool, bool) {
    match &e.last_touch {
        Some(t) => (t.touch.is_direct(), t.touch.valid),
        None => (true, true),
    }
}

/// The UTC day an event is counted on: the day of `occurred_at`.
pub fn day_of(e: &Event) -> Date {
    e.occurred_at.to_offset(UtcOffset::UTC).date()
}

impl Aggregate {
    pub fn add(&mut self, e: &Event) {
        let day = self.days.entry(day_of(e)).or_default();
        match kind(e) {
            Kind::Landing => {
                day.events_proxy += 1;
                day.landings += 1;
                let channel = e.channel();
                if channel == "Direct" {
                    day.landings_direct += 1;
                }
                bump(&mut day.channels, channel);
                if let Some(ga4) = e.touch.as_ref().and_then(|t| t.channel_ga4.as_deref()) {
                    bump(
                        &mut day.channel_rule_differences,
                        &format!("{channel} → {ga4}"),
                    );
                }
                bump(&mut day.server, &e.event_name);
            }
            Kind::Conversion => {
                day.events_proxy += 1;
                day.conversions += 1;
                let (direct, valid) = last_touch(e);
                day.conversions_direct += u64::from(direct);
                day.conversions_valid += u64::from(valid);
                bump(&mut day.server, &e.event_name);
                form_entry(&mut self.forms, &e.event_name).conversions += 1;
            }
            Kind::Attempt => {
                day.events_proxy += 1;
                let prop = |k: &str| e.properties.get(k);
                let form = prop("form_event")
                    .and_then(|v| v.as_str())
                    .unwrap_or("(unknown)");
                let f = form_entry(&mut self.forms, form);
                f.attempts += 1;
                if prop("confirmed").and_then(|v| v.as_bool()) == Some(true) {
                    f.confirmed += 1;
                } else {
                    let reason = prop("reason")
                        .and_then(|v| v.as_str())
                        .unwrap_or("(unknown)");
                    bump(&mut f.unconfirmed, reason);
                }
            }
            Kind::Ingest => day.events_ingest += 1,
            Kind::Beacon => {
                day.events_beacon += 1;
                bump(&mut day.client, &e.event_name);
            }
        }
        let latency_ms = (e.received_at - e.occurred_at).whole_milliseconds();
        day.latency.record(latency_ms);
        self.latency.record(latency_ms);
    }
}

/// The counts of form `name`, within the same bound as the daily maps
/// (the names come from event files).
fn form_entry<'a>(forms: &'a mut BTreeMap<String, FormCounts>, name: &str) -> &'a mut FormCounts {
    let key = if forms.contains_key(name) || forms.len() < MAX_KEYS_PER_DAY {
        name
    } else {
        OTHER
    };
    forms.entry(key.to_string()).or_default()
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    if let Some(n) = map.get_mut(key) {
        *n += 1;
    } else if map.len() < MAX_KEYS_PER_DAY {
        map.insert(key.to_string(), 1);
    } else {
        *map.entry(OTHER.to_string()).or_default() += 1;
    }
}

/// Delivery latency (`received_at − occurred_at`) in milliseconds, in an
/// HDR histogram with two significant digits: percentiles within 1 % in a
/// few KiB per day, whatever the number of events.
/// Latencies above a year are counted as a year: they are back-filled
/// events, and the clamp bounds the histogram's size.
pub const MAX_LATENCY_MS: u64 = 366 * 24 * 3600 * 1000;

#[derive(Debug, Default)]
pub struct Latency {
    hist: Option<Histogram<u64>>,
    /// Events received before they occurred (clock skew), counted as 0.
    pub negative: u64,
}

impl Latency {
    pub fn record(&mut self, ms: i128) {
        if ms < 0 {
            self.negative += 1;
        }
        let ms = u64::try_from(ms.clamp(0, i128::from(MAX_LATENCY_MS))).unwrap_or(MAX_LATENCY_MS);
        let hist = self.hist.get_or_insert_with(|| {
            // Two significant digits is a valid precision (0..=5), so this
            // cannot fail.
            Histogram::new(2).expect("static histogram precision")
        });
        // Auto-resizing; the clamp above bounds how far.
        if hist.record(ms).is_err() {
            hist.saturating_record(ms);
        }
    }

    pub fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len())
    }

    /// The value at quantile `q` (0..1), in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        self.hist
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(q))
    }

    pub fn max_ms(&self) -> Option<u64> {
        self.hist
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.max())
    }
}
