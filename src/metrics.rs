//! Prometheus metrics: one registry for the process, created at start and
//! shared by `Arc`. Names are fixed by CONTRACT.md ("Metrics").
//!
//! Labels are owned strings, so a labelled increment allocates; the
//! pass-through request path only touches the unlabelled counters.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    pub event_name: String,
    pub channel: String,
    pub origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventNameLabel {
    pub event_name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    pub sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CookieLabel {
    pub cookie: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FieldLabel {
    pub field: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConversionLabels {
    pub event_name: String,
    /// "true" when the conversion's last touch has a valid source/medium.
    pub valid: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UnconfirmedLabels {
    pub event_name: String,
    /// Why the form post was not a conversion
    /// (`capture::success::Reason::as_str`).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActionLabel {
    /// `private` or `skip` (`identity.cacheable_responses`).
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone)]
pub struct DeliveryBuckets;

impl MetricConstructor<Histogram> for DeliveryBuckets {
    fn new_metric(&self) -> Histogram {
        // 10 ms .. ~1.5 h: delivery spans a healthy sink and a long outage.
        Histogram::new(exponential_buckets(0.01, 2.5, 14))
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub requests_total: Counter,
    pub request_duration_seconds: Histogram,
    pub upstream_errors_total: Family<KindLabel, Counter>,
    pub connections_open: Gauge,
    pub connections_idle: Gauge,
    pub connections_rejected_total: Counter,
    pub events_total: Family<EventLabels, Counter>,
    pub events_duplicate_total: Family<EventNameLabel, Counter>,
    pub events_dropped_total: Family<ReasonLabel, Counter>,
    pub conversions_total: Family<ConversionLabels, Counter>,
    pub conversions_unconfirmed_total: Family<UnconfirmedLabels, Counter>,
    pub cacheable_cookie_responses_total: Family<ActionLabel, Counter>,
    pub capture_oversize_total: Family<EventNameLabel, Counter>,
    pub context_invalid_total: Counter,
    pub dedupe_fallback_total: Counter,
    pub pii_redacted_total: Family<FieldLabel, Counter>,
    pub cookie_rejected_total: Family<CookieLabel, Counter>,
    /// `consent.mode = "tcf"`: requests without a usable TC string, by
    /// reason (`missing`, `malformed`, `outdated`).
    pub consent_tcf_invalid_total: Family<ReasonLabel, Counter>,
    pub client_beacons_total: Family<EventNameLabel, Counter>,
    pub sink_delivered_total: Family<SinkLabel, Counter>,
    pub sink_failures_total: Family<SinkLabel, Counter>,
    pub sink_dead_letter_total: Family<SinkLabel, Counter>,
    pub sink_queue_depth: Family<SinkLabel, Gauge>,
    pub event_delivery_seconds: Family<SinkLabel, Histogram, DeliveryBuckets>,
    pub spool_bytes: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            requests_total: Counter::default(),
            request_duration_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            upstream_errors_total: Family::default(),
            connections_open: Gauge::default(),
            connections_idle: Gauge::default(),
            connections_rejected_total: Counter::default(),
            events_total: Family::default(),
            events_duplicate_total: Family::default(),
            events_dropped_total: Family::default(),
            conversions_total: Family::default(),
            conversions_unconfirmed_total: Family::default(),
            cacheable_cookie_responses_total: Family::default(),
            capture_oversize_total: Family::default(),
            context_invalid_total: Counter::default(),
            dedupe_fallback_total: Counter::default(),
            pii_redacted_total: Family::default(),
            cookie_rejected_total: Family::default(),
            consent_tcf_invalid_total: Family::default(),
            client_beacons_total: Family::default(),
            sink_delivered_total: Family::default(),
            sink_failures_total: Family::default(),
            sink_dead_letter_total: Family::default(),
            sink_queue_depth: Family::default(),
            event_delivery_seconds: Family::new_with_constructor(DeliveryBuckets),
            spool_bytes: Gauge::default(),
        };
        let r = &mut m.registry;
        // prometheus-client appends `_total` to counters itself.
        r.register(
            "touchgate_requests",
            "Requests received on the public listener",
            m.requests_total.clone(),
        );
        r.register(
            "touchgate_request_duration_seconds",
            "Public request duration, from head received to response head sent",
            m.request_duration_seconds.clone(),
        );
        r.register(
            "touchgate_upstream_errors",
            "Requests the upstream could not answer (kind: connect, timeout, reset)",
            m.upstream_errors_total.clone(),
        );
        r.register(
            "touchgate_connections_open",
            "Open public connections",
            m.connections_open.clone(),
        );
        r.register(
            "touchgate_connections_idle",
            "Open HTTP/1.1 connections idle between requests and holding no request buffers",
            m.connections_idle.clone(),
        );
        r.register(
            "touchgate_connections_rejected",
            "Public connections closed at accept because proxy.max_connections was reached",
            m.connections_rejected_total.clone(),
        );
        r.register(
            "touchgate_events",
            "Events emitted, after dedupe",
            m.events_total.clone(),
        );
        r.register(
            "touchgate_events_duplicate",
            "Events not emitted because their event_id was seen within the dedupe window",
            m.events_duplicate_total.clone(),
        );
        r.register(
            "touchgate_events_dropped",
            "Events lost (reason: queue_full, shutdown, spool_full, spool_error, spool_corrupt, retention, dead_letter_full)",
            m.events_dropped_total.clone(),
        );
        r.register(
            "touchgate_conversions",
            "Server-confirmed conversions, by whether their last touch has a valid source/medium",
            m.conversions_total.clone(),
        );
        r.register(
            "touchgate_conversions_unconfirmed",
            "Form posts the app did not accept by the form's success rule (reason: status, failure_location, success_location, missing_success_header, failure_body, body_encoded, body_incomplete, upstream_error): no conversion emitted",
            m.conversions_unconfirmed_total.clone(),
        );
        r.register(
            "touchgate_cacheable_cookie_responses",
            "Responses a shared cache may store that touchgate had identity cookies for (action: private = made Cache-Control: private, skip = no cookies set)",
            m.cacheable_cookie_responses_total.clone(),
        );
        r.register(
            "touchgate_capture_oversize",
            "Form bodies larger than proxy.max_capture_body, streamed through uncaptured",
            m.capture_oversize_total.clone(),
        );
        r.register(
            "touchgate_context_invalid",
            "Client context objects dropped as invalid",
            m.context_invalid_total.clone(),
        );
        r.register(
            "touchgate_dedupe_fallback",
            "Dedupe checks answered by the local set because Redis was unreachable",
            m.dedupe_fallback_total.clone(),
        );
        r.register(
            "touchgate_pii_redacted",
            "Values redacted by the PII guard, by event field",
            m.pii_redacted_total.clone(),
        );
        r.register(
            "touchgate_cookie_rejected",
            "Identity cookies treated as absent because they failed verification",
            m.cookie_rejected_total.clone(),
        );
        r.register(
            "touchgate_consent_tcf_invalid",
            "Page loads and form posts in consent mode tcf whose TC string was missing, malformed or outdated: no consent",
            m.consent_tcf_invalid_total.clone(),
        );
        r.register(
            "touchgate_client_beacons",
            "Client beacons received, by event name",
            m.client_beacons_total.clone(),
        );
        r.register(
            "touchgate_sink_delivered",
            "Events acknowledged by a sink",
            m.sink_delivered_total.clone(),
        );
        r.register(
            "touchgate_sink_failures",
            "Failed delivery attempts of a batch to a sink",
            m.sink_failures_total.clone(),
        );
        r.register(
            "touchgate_sink_dead_letter",
            "Events a sink rejected or gave up on, written to its dead-letter file",
            m.sink_dead_letter_total.clone(),
        );
        r.register(
            "touchgate_sink_queue_depth",
            "Events in the spool not yet acknowledged by a sink",
            m.sink_queue_depth.clone(),
        );
        r.register(
            "touchgate_event_delivery_seconds",
            "From occurred_at to the sink's acknowledgement",
            m.event_delivery_seconds.clone(),
        );
        r.register(
            "touchgate_spool_bytes",
            "Bytes in the spool on disk",
            m.spool_bytes.clone(),
        );
        m
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn dropped(&self, reason: &str) {
        self.dropped_many(reason, 1);
    }

    pub fn dropped_many(&self, reason: &str, events: u64) {
        self.events_dropped_total
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(events);
    }

    pub fn sink(&self, sink: &str) -> SinkLabel {
        SinkLabel {
            sink: sink.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_names_are_exposed() {
        let m = Metrics::new();
        m.requests_total.inc();
        m.dropped("queue_full");
        m.event_delivery_seconds
            .get_or_create(&m.sink("file"))
            .observe(0.2);
        let text = m.encode();
        for name in [
            "touchgate_requests_total 1",
            "touchgate_events_dropped_total{reason=\"queue_full\"} 1",
            "touchgate_event_delivery_seconds_bucket{le=",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
