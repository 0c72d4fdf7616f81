//! `touchgate report`: every check just inside and just outside its
//! threshold, the input handling (gzip, directories, malformed lines), the
//! three formats, the HTML report in headless Chromium, and the Prometheus
//! rules and Grafana dashboard in deploy/ against the real metric names.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::Compression;
use flate2::write::GzEncoder;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use touchgate::cli::report::checks::{Check, Status};
use touchgate::cli::report::{self, ReportArgs, ReportFormat};
use touchgate::config::ChecksConfig;
use touchgate::event::{Event, Origin, Touch, TouchAt};

// ---------------------------------------------------------------- events

/// Noon UTC of day `n` (0 = 2026-11-01).
fn day(n: i64) -> OffsetDateTime {
    datetime!(2026-11-01 12:00 UTC) + Duration::days(n)
}

fn touch(channel: &str, valid: bool) -> Touch {
    if channel == "Direct" {
        return Touch::direct();
    }
    Touch {
        source: Some("google".into()),
        medium: Some(if valid { "cpc" } else { "weird" }.into()),
        channel: channel.into(),
        valid,
        ..Touch::default()
    }
}

fn event(n: i64, name: &str, origin: Origin, seq: usize) -> Event {
    let at = day(n) + Duration::seconds(seq as i64 % 3600);
    Event::new(
        format!("{n:04x}{seq:08x}"),
        name.into(),
        origin,
        at,
        at + Duration::seconds(2),
    )
}

fn landings(n: i64, channel: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let mut e = event(n, "landing", Origin::Proxy, i);
            e.touch = Some(touch(channel, true));
            e
        })
        .collect()
}

/// Conversions whose last touch is `channel` (None: no last touch at all).
fn conversions(n: i64, name: &str, channel: Option<&str>, valid: bool, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| {
            let mut e = event(n, name, Origin::Proxy, 10_000 + i);
            e.last_touch = channel.map(|c| TouchAt {
                touch: touch(c, valid),
                at: day(n),
            });
            e
        })
        .collect()
}

fn beacons(n: i64, name: &str, count: usize) -> Vec<Event> {
    (0..count)
        .map(|i| event(n, name, Origin::Beacon, 20_000 + i))
        .collect()
}

fn jsonl(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap() + "\n")
        .collect()
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

/// Thresholds with every check that a test does not look at switched off.
fn only(f: impl FnOnce(&mut ChecksConfig)) -> ChecksConfig {
    let mut c = ChecksConfig {
        direct_share_max: 1.0,
        direct_jump_pp: 100.0,
        valid_share_min: 0.0,
        parity_min: 0.0,
        // The bare shares on any day: these tests are about the thresholds.
        min_events: 0,
        confidence: 0.5,
    };
    f(&mut c);
    c
}

/// The default thresholds compared as bare shares on any day, for the
/// tests of the output formats (whose fixtures are small days).
fn bare() -> ChecksConfig {
    ChecksConfig {
        min_events: 0,
        confidence: 0.5,
        ..ChecksConfig::default()
    }
}

/// Writes the events to a file in a fresh directory and reports over it.
fn report_over(events: &[Event], checks: ChecksConfig) -> report::ReportOutcome {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, jsonl(events)).unwrap();
    run_quiet(vec![path], checks, ReportFormat::Json, dir.path())
}

fn run_quiet(
    events: Vec<PathBuf>,
    checks: ChecksConfig,
    format: ReportFormat,
    dir: &Path,
) -> report::ReportOutcome {
    let out = dir.join("report.out");
    report::run(&ReportArgs {
        events,
        format,
        out: Some(out),
        checks,
        max_malformed: 1.0,
    })
    .unwrap()
}

fn checks_in_alert(o: &report::ReportOutcome) -> Vec<Check> {
    o.report.alerts.iter().map(|a| a.check).collect()
}

// ---------------------------------------------------------------- checks

#[test]
fn landing_direct_share_at_the_threshold_is_ok_and_above_it_alerts() {
    let checks = || only(|c| c.direct_share_max = 0.5);
    let inside = [landings(0, "Direct", 50), landings(0, "Organic Search", 50)].concat();
    let o = report_over(&inside, checks());
    assert!(!o.alert, "{:?}", o.report.alerts);
    assert_eq!(o.report.days[0].landings.direct_share, Some(0.5));

    let outside = [landings(0, "Direct", 51), landings(0, "Organic Search", 49)].concat();
    let o = report_over(&outside, checks());
    assert!(o.alert);
    assert_eq!(checks_in_alert(&o), vec![Check::LandingDirectShare]);
    assert_eq!(o.report.alerts[0].day, "2026-11-01");
    assert!((o.report.alerts[0].value - 0.51).abs() < 1e-12);
}

/// Seven days at 30 % direct, preceded by a day at 90 % that is outside
/// the trailing window of the last day, then the day under test.
fn jump_days(last_day_direct: usize) -> Vec<Event> {
    let mut events = [landings(0, "Direct", 90), landings(0, "Referral", 10)].concat();
    for n in 1..=7 {
        events.extend(landings(n, "Direct", 30));
        events.extend(landings(n, "Referral", 70));
    }
    events.extend(landings(8, "Direct", last_day_direct));
    events.extend(landings(8, "Referral", 100 - last_day_direct));
    events
}

#[test]
fn direct_jump_over_the_trailing_seven_day_mean() {
    let checks = || only(|c| c.direct_jump_pp = 10.0);
    // 40 % against a 30 % mean: exactly 10 pp, not more.
    let o = report_over(&jump_days(40), checks());
    let last = o.report.days.last().unwrap();
    assert_eq!(
        last.landings.trailing_days, 7,
        "day 0 is outside the window"
    );
    assert!((last.landings.trailing_mean.unwrap() - 0.30).abs() < 1e-12);
    assert!(!last.landings.alert_jump);
    // Day 1 jumps down from 90 % (not an alert: only rises count); day 0
    // has no trailing day at all.
    assert_eq!(o.report.days[0].landings.jump_pp, None);
    assert!(!o.alert, "{:?}", o.report.alerts);

    // 41 %: 11 pp over the mean of days 1..7. Had day 0 been in the window
    // the mean would be 37.5 % and the jump only 3.5 pp.
    let o = report_over(&jump_days(41), checks());
    assert!(o.alert);
    assert_eq!(checks_in_alert(&o), vec![Check::LandingDirectJump]);
    assert_eq!(o.report.alerts[0].day, "2026-11-09");
    assert!((o.report.alerts[0].value - 11.0).abs() < 1e-9);
}

#[test]
fn direct_jump_needs_one_earlier_day_and_uses_what_there_is() {
    let checks = only(|c| c.direct_jump_pp = 10.0);
    // Two days, with a gap day between them: the trailing mean is day 0 alone.
    let events = [
        landings(0, "Direct", 20),
        landings(0, "Email", 80),
        landings(2, "Direct", 31),
        landings(2, "Email", 69),
    ]
    .concat();
    let o = report_over(&events, checks);
    assert_eq!(o.report.days.len(), 2);
    assert_eq!(o.report.days[1].landings.trailing_days, 1);
    assert!(o.alert);
    assert_eq!(checks_in_alert(&o), vec![Check::LandingDirectJump]);
}

#[test]
fn conversion_direct_share_counts_a_missing_last_touch_as_direct() {
    let checks = || only(|c| c.direct_share_max = 0.5);
    let inside = [
        conversions(0, "signup_submitted", Some("Direct"), true, 25),
        conversions(0, "signup_submitted", None, true, 25),
        conversions(0, "signup_submitted", Some("Paid Search"), true, 50),
    ]
    .concat();
    let o = report_over(&inside, checks());
    assert_eq!(o.report.days[0].conversions.direct.direct, 50);
    assert!(!o.alert, "{:?}", o.report.alerts);

    let outside = [
        conversions(0, "signup_submitted", Some("Direct"), true, 25),
        conversions(0, "signup_submitted", None, true, 26),
        conversions(0, "signup_submitted", Some("Paid Search"), true, 49),
    ]
    .concat();
    let o = report_over(&outside, checks());
    assert_eq!(checks_in_alert(&o), vec![Check::ConversionDirectShare]);
}

#[test]
fn conversion_direct_jump() {
    let checks = || only(|c| c.direct_jump_pp = 10.0);
    let days = |last: usize| {
        let mut v = Vec::new();
        for n in 0..3 {
            v.extend(conversions(n, "signup_submitted", None, true, 20));
            v.extend(conversions(n, "signup_submitted", Some("Email"), true, 80));
        }
        v.extend(conversions(3, "signup_submitted", None, true, last));
        v.extend(conversions(
            3,
            "signup_submitted",
            Some("Email"),
            true,
            100 - last,
        ));
        v
    };
    assert!(!report_over(&days(30), checks()).alert);
    let o = report_over(&days(31), checks());
    assert_eq!(checks_in_alert(&o), vec![Check::ConversionDirectJump]);
}

#[test]
fn valid_share_at_the_minimum_is_ok_and_below_it_alerts() {
    let checks = || only(|c| c.valid_share_min = 0.8);
    let inside = [
        conversions(0, "signup_submitted", Some("Paid Search"), true, 79),
        // No last touch: direct, which is a valid source/medium.
        conversions(0, "signup_submitted", None, true, 1),
        conversions(0, "signup_submitted", Some("Unassigned"), false, 20),
    ]
    .concat();
    let o = report_over(&inside, checks());
    assert_eq!(o.report.days[0].conversions.valid_share, Some(0.8));
    assert!(!o.alert, "{:?}", o.report.alerts);

    let outside = [
        conversions(0, "signup_submitted", Some("Paid Search"), true, 79),
        conversions(0, "signup_submitted", Some("Unassigned"), false, 21),
    ]
    .concat();
    let o = report_over(&outside, checks());
    assert_eq!(checks_in_alert(&o), vec![Check::ValidShare]);
    assert!((o.report.alerts[0].value - 0.79).abs() < 1e-12);
}

#[test]
fn parity_is_checked_for_event_names_with_beacons() {
    let checks = || only(|c| c.parity_min = 0.8);
    // contact_submitted has no beacon at all: not checked.
    let base = || conversions(0, "contact_submitted", None, true, 100);
    let inside = [
        base(),
        conversions(0, "signup_submitted", None, true, 100),
        beacons(0, "signup_submitted", 80),
    ]
    .concat();
    let o = report_over(&inside, checks());
    assert!(!o.alert, "{:?}", o.report.alerts);
    let names: Vec<&str> = o
        .report
        .parity
        .iter()
        .map(|p| p.event_name.as_str())
        .collect();
    assert_eq!(names, ["signup_submitted"]);
    assert_eq!(o.report.parity[0].ratio, Some(0.8));

    let outside = [
        base(),
        conversions(0, "signup_submitted", None, true, 100),
        beacons(0, "signup_submitted", 79),
    ]
    .concat();
    let o = report_over(&outside, checks());
    assert_eq!(checks_in_alert(&o), vec![Check::Parity]);
    assert_eq!(
        o.report.alerts[0].event_name.as_deref(),
        Some("signup_submitted")
    );
}

#[test]
fn parity_alerts_on_a_day_whose_beacons_stopped() {
    let checks = only(|c| c.parity_min = 0.8);
    let events = [
        conversions(0, "signup_submitted", None, true, 10),
        beacons(0, "signup_submitted", 10),
        conversions(1, "signup_submitted", None, true, 10),
    ]
    .concat();
    let o = report_over(&events, checks);
    assert_eq!(checks_in_alert(&o), vec![Check::Parity]);
    assert_eq!(o.report.alerts[0].day, "2026-11-02");
    assert_eq!(o.report.parity[0].alert_days, 1);
    assert_eq!(o.report.parity[0].min_ratio, Some(0.0));
}

#[test]
fn default_thresholds_on_healthy_traffic_are_not_in_alert() {
    let mut events = Vec::new();
    for n in 0..10 {
        events.extend(landings(n, "Direct", 30));
        events.extend(landings(n, "Organic Search", 40));
        events.extend(landings(n, "Paid Search", 30));
        events.extend(conversions(
            n,
            "signup_submitted",
            Some("Paid Search"),
            true,
            18,
        ));
        events.extend(conversions(n, "signup_submitted", None, true, 2));
        events.extend(beacons(n, "signup_submitted", 19));
    }
    let o = report_over(&events, ChecksConfig::default());
    assert!(!o.alert, "{:?}", o.report.alerts);
    assert_eq!(o.report.days.len(), 10);
    assert_eq!(o.report.days[3].channels["Organic Search"], 40);
}

// ------------------------------------------------ statistics of the checks

/// The default thresholds (min_events 100, confidence 0.99) with only the
/// check under test switched on.
fn sound(f: impl FnOnce(&mut ChecksConfig)) -> ChecksConfig {
    let mut c = only(f);
    c.min_events = ChecksConfig::default().min_events;
    c.confidence = ChecksConfig::default().confidence;
    c
}

#[test]
fn a_share_alerts_only_with_enough_events_and_past_the_threshold_at_the_confidence() {
    // (events, direct, status): max 50 %.
    let table = [
        // 75 % of 20: a handful of visits, not a signal.
        (20, 15, Status::InsufficientData),
        (99, 90, Status::InsufficientData),
        // 55 % of 100: over the maximum, but within the noise of 100 events.
        (100, 55, Status::Ok),
        (100, 80, Status::Alert),
        // 52 % of 10 000: a small excess on a large day is real.
        (10_000, 5_200, Status::Alert),
        (10_000, 5_000, Status::Ok),
        (1_000, 530, Status::Ok),
        (1_000, 600, Status::Alert),
    ];
    for (total, direct, want) in table {
        let events = [
            landings(0, "Direct", direct),
            landings(0, "Email", total - direct),
        ]
        .concat();
        let o = report_over(&events, sound(|c| c.direct_share_max = 0.5));
        let day = &o.report.days[0];
        assert_eq!(
            day.landings.share_status, want,
            "{direct} of {total}: {:?}",
            day.landings
        );
        assert_eq!(o.alert, want == Status::Alert, "{direct} of {total}");
        assert_eq!(day.status, want, "{direct} of {total}");
        let bound = day.landings.share_bound.unwrap();
        assert!(bound < day.landings.direct_share.unwrap());
    }
}

#[test]
fn valid_share_and_parity_alert_on_their_upper_bound() {
    // (conversions, valid, status): min 80 %.
    for (total, valid, want) in [
        (20, 14, Status::InsufficientData),
        (100, 75, Status::Ok),
        (200, 140, Status::Alert),
        (2_000, 1_500, Status::Alert),
    ] {
        let events = [
            conversions(0, "signup_submitted", Some("Email"), true, valid),
            conversions(0, "signup_submitted", Some("Email"), false, total - valid),
        ]
        .concat();
        let o = report_over(&events, sound(|c| c.valid_share_min = 0.8));
        let c = &o.report.days[0].conversions;
        assert_eq!(c.valid_status, want, "{valid} of {total}: {c:?}");
        assert_eq!(o.alert, want == Status::Alert);
    }
    // (server events, beacons, status): min 0.8.
    for (server, client, want) in [
        (30, 10, Status::InsufficientData),
        (100, 75, Status::Ok),
        (100, 70, Status::Alert),
        (1_000, 770, Status::Alert),
    ] {
        let events = [
            conversions(0, "signup_submitted", Some("Email"), true, server),
            beacons(0, "signup_submitted", client),
        ]
        .concat();
        let o = report_over(&events, sound(|c| c.parity_min = 0.8));
        let p = &o.report.days[0].parity[0];
        assert_eq!(p.status, want, "{client} / {server}: {p:?}");
        assert_eq!(p.alert, want == Status::Alert);
    }
}

/// Seven trailing days of `per_day` landings at 30 % direct, then a day of
/// `today` landings of which `direct` are direct.
fn jump_after(per_day: usize, today: usize, direct: usize) -> Vec<Event> {
    let mut events = Vec::new();
    for n in 0..7 {
        events.extend(landings(n, "Direct", per_day * 3 / 10));
        events.extend(landings(n, "Referral", per_day - per_day * 3 / 10));
    }
    events.extend(landings(7, "Direct", direct));
    events.extend(landings(7, "Referral", today - direct));
    events
}

#[test]
fn a_jump_alerts_only_when_it_is_past_the_points_and_real() {
    // (trailing per day, today, direct today, status): max 10 pp.
    let table = [
        // 20 conversions, a swing of 3 over the 30 % mean: too few to judge.
        (20, 20, 9, Status::InsufficientData),
        // 11 pp on 100 events against 700: past the points, but noise.
        (100, 100, 41, Status::Ok),
        // 12 pp on 150 events against 1 050: real.
        (150, 150, 63, Status::Alert),
        // 12 pp on 1 000 events: real.
        (1_000, 1_000, 420, Status::Alert),
        // 5 pp on 1 000 events: real, but under the allowed points.
        (1_000, 1_000, 350, Status::Ok),
        // A fall is not a jump.
        (1_000, 1_000, 100, Status::Ok),
    ];
    for (per_day, today, direct, want) in table {
        let o = report_over(
            &jump_after(per_day, today, direct),
            sound(|c| c.direct_jump_pp = 10.0),
        );
        let last = o.report.days.last().unwrap();
        assert_eq!(
            last.landings.jump_status, want,
            "{direct} of {today} after {per_day}/day: {:?}",
            last.landings
        );
        assert_eq!(o.alert, want == Status::Alert);
        assert_eq!(last.landings.trailing_total, 7 * per_day as u64);
    }
    // The first day has no trailing day to be measured against.
    let o = report_over(&jump_after(1_000, 1_000, 420), sound(|_| {}));
    assert_eq!(
        o.report.days[0].landings.jump_status,
        Status::InsufficientData
    );
}

#[test]
fn the_trailing_share_is_pooled_over_events_not_a_mean_of_days() {
    // Six days of 1 000 at 30 %, one day of 2 landings both direct: the
    // mean of daily shares would be 40 %, the pooled share is 30.0 %.
    let mut events = Vec::new();
    for n in 0..6 {
        events.extend(landings(n, "Direct", 300));
        events.extend(landings(n, "Referral", 700));
    }
    events.extend(landings(6, "Direct", 2));
    events.extend(landings(7, "Direct", 300));
    events.extend(landings(7, "Referral", 700));
    let o = report_over(&events, sound(|c| c.direct_jump_pp = 10.0));
    let last = o.report.days.last().unwrap();
    assert!((last.landings.trailing_mean.unwrap() - 1802.0 / 6002.0).abs() < 1e-12);
    assert_eq!(last.landings.trailing_days, 7);
}

#[test]
fn small_days_are_insufficient_data_in_every_format() {
    // Every check would alert on the bare shares of these small days.
    let mut events = Vec::new();
    for n in 0..3 {
        events.extend(landings(n, "Direct", 15 + 3 * n as usize));
        events.extend(landings(n, "Email", 5));
        events.extend(conversions(n, "signup_submitted", None, false, 10));
        events.extend(beacons(n, "signup_submitted", 2));
    }
    assert!(report_over(&events, bare()).alert, "alerts on bare shares");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, jsonl(&events)).unwrap();
    for format in [ReportFormat::Json, ReportFormat::Text, ReportFormat::Html] {
        let o = run_quiet(
            vec![path.clone()],
            ChecksConfig::default(),
            format,
            dir.path(),
        );
        assert!(!o.alert, "{:?}", o.report.alerts);
        assert_eq!(o.report.status, Status::InsufficientData);
        assert_eq!(o.report.insufficient_days, 3);
        assert!(
            o.report
                .days
                .iter()
                .all(|d| d.status == Status::InsufficientData)
        );
        let out = std::fs::read_to_string(dir.path().join("report.out")).unwrap();
        match format {
            ReportFormat::Json => {
                let v: serde_json::Value = serde_json::from_str(&out).unwrap();
                assert_eq!(v["status"], "insufficient_data");
                assert_eq!(
                    v["days"][0]["landings"]["share_status"],
                    "insufficient_data"
                );
            }
            ReportFormat::Text => {
                assert!(out.contains("status: INSUFFICIENT DATA"), "{out}");
                assert!(out.contains("insufficient data"), "{out}");
                assert!(!out.contains("status: OK"), "{out}");
            }
            ReportFormat::Html => {
                assert!(out.contains("INSUFFICIENT DATA"), "{out}");
                assert!(out.contains("<td>insufficient data</td>"), "{out}");
            }
        }
    }
}

// ---------------------------------------------------------------- input

#[test]
fn gzip_directories_and_malformed_lines() {
    let dir = tempfile::tempdir().unwrap();
    let rotated = dir.path().join("rotated");
    std::fs::create_dir(&rotated).unwrap();
    // Rotated files: one gzipped, one plain; a file that is not events.
    std::fs::write(
        rotated.join("events-1.jsonl.gz"),
        gzip(&jsonl(&landings(0, "Direct", 3))),
    )
    .unwrap();
    std::fs::write(
        rotated.join("events-2.jsonl"),
        jsonl(&landings(1, "Email", 2)),
    )
    .unwrap();
    std::fs::write(rotated.join("notes.txt"), "not events\n").unwrap();
    // Malformed lines among good ones, and blank lines that are not lines at all.
    let mut mixed = jsonl(&landings(2, "Referral", 2));
    mixed.push_str("not json\n\n   \n{\"schema\":\"touchgate/1\"}\n");
    mixed.push_str(&"x".repeat(report::read::MAX_LINE_BYTES + 10));
    mixed.push('\n');
    mixed.push_str(&jsonl(&landings(2, "Referral", 1)));
    mixed.push_str("{\"truncated\": ");
    let loose = dir.path().join("loose-name.log");
    std::fs::write(&loose, &mixed).unwrap();
    // A gzip stream cut short: the lines before the cut still count.
    let full = gzip(&jsonl(&landings(3, "Direct", 200)));
    let cut = dir.path().join("cut.jsonl.gz");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();

    let o = run_quiet(
        vec![rotated, loose, cut],
        ChecksConfig::default(),
        ReportFormat::Json,
        dir.path(),
    );
    let input = &o.report.input;
    let names: Vec<&str> = input
        .files
        .iter()
        .map(|f| Path::new(&f.path).file_name().unwrap().to_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "events-1.jsonl.gz",
            "events-2.jsonl",
            "loose-name.log",
            "cut.jsonl.gz"
        ]
    );
    assert!(input.files[0].gzip && !input.files[1].gzip);
    let loose = &input.files[2];
    assert_eq!((loose.lines, loose.events, loose.malformed), (7, 3, 4));
    let cut = &input.files[3];
    assert!(cut.error.is_some(), "a truncated gzip stream is reported");
    assert!(cut.events > 0 && cut.events < 200, "{}", cut.events);
    assert_eq!(input.events, 3 + 2 + 3 + cut.events);
    assert_eq!(input.malformed, 4 + cut.malformed);
    let lines: Vec<u64> = input
        .malformed_samples
        .iter()
        .filter(|m| m.path.ends_with(".log"))
        .map(|m| m.line)
        .collect();
    assert_eq!(lines, [3, 6, 7, 9], "line numbers count blank lines too");
    assert!(input.malformed_samples[2].error.contains("longer than"));
    // Events from every file reached the days.
    let days: Vec<&str> = o.report.days.iter().map(|d| d.day.as_str()).collect();
    assert_eq!(
        days,
        ["2026-11-01", "2026-11-02", "2026-11-03", "2026-11-04"]
    );
}

#[test]
fn a_missing_path_or_no_event_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let args = |p: PathBuf| ReportArgs {
        events: vec![p],
        format: ReportFormat::Text,
        out: Some(dir.path().join("out")),
        checks: ChecksConfig::default(),
        max_malformed: report::DEFAULT_MAX_MALFORMED,
    };
    let err = report::run(&args(dir.path().join("nope.jsonl"))).unwrap_err();
    assert!(err.to_string().contains("nope.jsonl"), "{err}");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert!(matches!(
        report::run(&args(empty)),
        Err(report::ReportError::NoInput)
    ));
}

/// `touchgate report --events PATH ARGS…`: exit code and stderr.
fn report_binary(path: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .arg("report")
        .arg("--events")
        .arg(path)
        .args(args)
        // config/touchgate.toml names the secret; report reads only [checks].
        .env(
            "TOUCHGATE_SECRET",
            "report-tests-secret-of-at-least-32-bytes",
        )
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn garbage_or_too_many_malformed_lines_exit_2_naming_the_first_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.jsonl");
    std::fs::write(&garbage, "not json\n{\"schema\": 1}\n\nalso not\n").unwrap();
    let (code, stdout, stderr) = report_binary(&garbage, &[]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(!stdout.contains("status: OK"), "{stdout}");
    assert!(
        stderr.contains("none of the 3 line(s) is an event"),
        "{stderr}"
    );
    for line in [1, 2, 4] {
        assert!(
            stderr.contains(&format!("garbage.jsonl:{line}: ")),
            "line {line}: {stderr}"
        );
    }

    let empty = dir.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    let (code, _, stderr) = report_binary(&empty, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("no line in the event files"), "{stderr}");

    // 2 of 100 lines malformed: past the default 1 %, within 5 %.
    let mut text = jsonl(&landings(0, "Email", 98));
    text.insert_str(0, "{\"cut\": \n");
    text.push_str("[1,2]\n");
    let some = dir.path().join("some.jsonl");
    std::fs::write(&some, &text).unwrap();
    let (code, _, stderr) = report_binary(&some, &[]);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("2 of 100 line(s) (2.00%) are malformed, more than --max-malformed 1.00%"),
        "{stderr}"
    );
    assert!(
        stderr.contains("some.jsonl:1: ") && stderr.contains("some.jsonl:100: "),
        "{stderr}"
    );
    for ok in ["5%", "0.02"] {
        let (code, stdout, stderr) = report_binary(&some, &["--max-malformed", ok]);
        assert_eq!(code, Some(0), "--max-malformed {ok}: {stdout}{stderr}");
        assert!(stdout.contains("2 malformed line(s)"), "{stdout}");
    }
    let (code, _, stderr) = report_binary(&some, &["--max-malformed", "150%"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("not between 0 and 1"), "{stderr}");
}

#[test]
fn a_line_without_the_fields_no_check_reads_is_still_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut lean: serde_json::Value =
        serde_json::from_str(jsonl(&landings(0, "Email", 1)).trim()).unwrap();
    for unread in [
        "schema",
        "event_id",
        "client",
        "page",
        "session_id",
        "consent",
    ] {
        lean.as_object_mut().unwrap().remove(unread);
    }
    let mut no_time = lean.clone();
    no_time.as_object_mut().unwrap().remove("occurred_at");
    let path = dir.path().join("lean.jsonl");
    std::fs::write(&path, format!("{lean}\n{no_time}\n")).unwrap();
    let r = report::build(&[path], &bare()).unwrap();
    assert_eq!((r.input.events, r.input.malformed), (1, 1), "{:?}", r.input);
    assert_eq!(r.days[0].channels["Email"], 1);
    assert!(
        r.input.malformed_samples[0].error.contains("occurred_at"),
        "{:?}",
        r.input.malformed_samples
    );
}

#[test]
fn checks_keys_come_from_the_config_and_a_bad_confidence_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    // 15 of 20 landings direct: an alert on bare shares, too few for 100.
    let mut small = landings(0, "Direct", 15);
    small.extend(landings(0, "Email", 5));
    std::fs::write(&events, jsonl(&small)).unwrap();
    let base = std::fs::read_to_string(repo("config/touchgate.toml")).unwrap();
    let config = repo("config/touchgate.toml");
    let (code, stdout, stderr) = report_binary(&events, &["--config", config.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("status: INSUFFICIENT DATA"), "{stdout}");
    for (confidence, min_events, want) in [
        ("0.5", "0", Some(1)),
        ("1.0", "100", Some(2)),
        ("0.4", "100", Some(2)),
    ] {
        let cfg = dir.path().join("touchgate.toml");
        let text = base
            .replace("confidence = 0.99", &format!("confidence = {confidence}"))
            .replace("min_events = 100", &format!("min_events = {min_events}"));
        std::fs::write(&cfg, text).unwrap();
        let (code, stdout, stderr) = report_binary(&events, &["--config", cfg.to_str().unwrap()]);
        assert_eq!(code, want, "confidence {confidence}: {stdout}{stderr}");
        if want == Some(2) {
            assert!(stderr.contains("checks.confidence"), "{stderr}");
        }
    }
}

#[test]
fn the_input_gate_counts_lines_not_files() {
    let input = |lines: u64, malformed: u64| report::read::InputSummary {
        lines,
        events: lines - malformed,
        malformed,
        ..Default::default()
    };
    assert!(report::check_input(&input(100, 1), 0.01).is_ok());
    assert!(report::check_input(&input(100, 2), 0.01).is_err());
    assert!(report::check_input(&input(100, 0), 0.0).is_ok());
    assert!(
        report::check_input(&input(1, 1), 1.0).is_err(),
        "no event at all"
    );
    assert!(report::check_input(&input(0, 0), 1.0).is_err());
    assert_eq!(report::parse_share("1%"), Ok(0.01));
    assert_eq!(report::parse_share(" 0.5 "), Ok(0.5));
    assert!(report::parse_share("-1%").is_err());
    assert!(report::parse_share("lots").is_err());
}

#[test]
fn days_are_utc_days_of_occurred_at_and_latency_is_received_minus_occurred() {
    let mut events = Vec::new();
    // 23:30 at UTC-05:00 is 04:30 UTC the next day.
    let mut late = event(0, "landing", Origin::Proxy, 0);
    late.occurred_at = datetime!(2026-11-01 23:30 -05:00).to_offset(time::UtcOffset::UTC);
    late.received_at = late.occurred_at + Duration::seconds(1);
    late.touch = Some(Touch::direct());
    events.push(late);
    // Latencies of 1..=100 s, ingested events count too; one clock skew.
    for i in 1..=100 {
        let mut e = event(2, "account_created", Origin::Ingest, i);
        e.received_at = e.occurred_at + Duration::seconds(i as i64);
        events.push(e);
    }
    let mut skewed = event(2, "account_created", Origin::Ingest, 500);
    skewed.received_at = skewed.occurred_at - Duration::seconds(3);
    events.push(skewed);
    let o = report_over(&events, ChecksConfig::default());
    assert_eq!(o.report.days[0].day, "2026-11-02");
    let l = &o.report.days[1].latency;
    assert_eq!((l.count, l.negative), (101, 1));
    let near = |got: Option<f64>, want: f64| (got.unwrap() - want).abs() <= want * 0.011;
    assert!(near(l.p50_seconds, 50.0), "{l:?}");
    assert!(near(l.p90_seconds, 90.0), "{l:?}");
    assert!(near(l.p99_seconds, 99.0), "{l:?}");
    assert!(near(l.max_seconds, 100.0), "{l:?}");
    assert_eq!(o.report.days[1].events.ingest, 101);
    assert_eq!(o.report.latency.count, 102);
}

/// `form_attempt` events of `form`: `confirmed` of them confirmed, the
/// rest unconfirmed for `reason`.
fn attempts(n: i64, form: &str, total: usize, confirmed: usize, reason: &str) -> Vec<Event> {
    (0..total)
        .map(|i| {
            let mut e = event(n, "form_attempt", Origin::Proxy, 30_000 + i);
            e.properties.insert("form_event".into(), form.into());
            e.properties
                .insert("confirmed".into(), (i < confirmed).into());
            if i >= confirmed {
                e.properties.insert("reason".into(), reason.into());
            }
            e
        })
        .collect()
}

#[test]
fn attempts_per_confirmed_conversion_per_form() {
    let mut events = Vec::new();
    events.extend(landings(0, "Paid Search", 10));
    // signup: 9 posts, 3 confirmed (one of them a repeat: 2 conversions).
    events.extend(attempts(0, "signup_submitted", 5, 2, "failure_body"));
    events.extend(attempts(1, "signup_submitted", 4, 1, "status"));
    events.extend(conversions(
        0,
        "signup_submitted",
        Some("Paid Search"),
        true,
        2,
    ));
    // A form whose posts all failed has no ratio.
    events.extend(attempts(1, "contact_submitted", 2, 0, "failure_location"));
    // Conversions from files without attempts get no row.
    events.extend(conversions(1, "demo_requested", None, true, 3));
    let o = report_over(&events, ChecksConfig::default());
    let forms: Vec<(&str, u64, u64, Option<f64>, u64)> = o
        .report
        .forms
        .iter()
        .map(|f| {
            (
                f.event_name.as_str(),
                f.attempts,
                f.confirmed,
                f.attempts_per_confirmed,
                f.conversions,
            )
        })
        .collect();
    assert_eq!(
        forms,
        [
            ("contact_submitted", 2, 0, None, 0),
            ("signup_submitted", 9, 3, Some(3.0), 2),
        ]
    );
    let signup = &o.report.forms[1];
    assert_eq!(signup.unconfirmed["failure_body"], 3);
    assert_eq!(signup.unconfirmed["status"], 3);
    // Attempts are neither conversions nor parity's server side.
    assert_eq!(o.report.days[0].conversions.direct.total, 2);
    assert_eq!(o.report.days[1].conversions.direct.total, 3);
    let text = report::render(&o.report, ReportFormat::Text);
    let row = text
        .lines()
        .find(|l| l.trim_start().starts_with("signup_submitted"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        row.split_whitespace().collect::<Vec<_>>()[..5]
            == ["signup_submitted", "9", "3", "3.00", "2"],
        "{row}"
    );
    let html = report::render(&o.report, ReportFormat::Html);
    assert!(html.contains("<table id=\"forms\">"), "{html}");
}

#[test]
fn touch_times_in_older_formats_still_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut e = conversions(0, "signup_submitted", Some("Email"), true, 1).remove(0);
    e.first_touch = e.last_touch.clone();
    let line = serde_json::to_string(&e).unwrap();
    let at = "2026-11-01T12:00:00.000Z";
    assert!(line.contains(at), "{line}");
    let old = [
        line.replacen(at, "2026-11-01T12:00:00Z", 2),
        line.replacen(at, "2026-11-01T12:00:00.123456789Z", 2),
        line.replacen(at, "2026-11-01T13:00:00+01:00", 2),
    ]
    .join("\n");
    std::fs::write(&path, old + "\n").unwrap();
    let o = run_quiet(
        vec![path],
        ChecksConfig::default(),
        ReportFormat::Json,
        dir.path(),
    );
    assert_eq!(o.report.input.malformed, 0, "{:?}", o.report.input);
    assert_eq!(o.report.days[0].conversions.direct.total, 3);
}

// ---------------------------------------------------------------- formats

fn alerting_events() -> Vec<Event> {
    let mut events = Vec::new();
    for n in 0..8 {
        // Day 7: 70 of 110 landings are direct, against 30 before.
        let direct = if n == 7 { 70 } else { 30 };
        events.extend(landings(n, "Direct", direct));
        events.extend(landings(n, "Organic Search", 60 - direct / 2));
        events.extend(landings(n, "Paid Search", 40 - direct / 2));
        events.extend(landings(n, "Paid Social", 10));
        events.extend(conversions(
            n,
            "signup_submitted",
            Some("Paid Search"),
            true,
            16,
        ));
        events.extend(conversions(n, "signup_submitted", None, true, 4));
        // Day 5: 20 of 26 valid.
        events.extend(conversions(
            n,
            "contact_submitted",
            Some("Email"),
            n != 5,
            6,
        ));
        // Day 6: half the signup beacons are missing.
        events.extend(beacons(n, "signup_submitted", if n == 6 { 10 } else { 19 }));
        events.extend(beacons(n, "landing", 100));
    }
    events
}

#[test]
fn json_output_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, jsonl(&alerting_events()) + "garbage\n").unwrap();
    let o = run_quiet(vec![path], bare(), ReportFormat::Json, dir.path());
    assert!(o.alert);
    let text = std::fs::read_to_string(dir.path().join("report.out")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let keys = |v: &serde_json::Value| -> BTreeSet<String> {
        v.as_object().unwrap().keys().cloned().collect()
    };
    let set = |k: &[&str]| -> BTreeSet<String> { k.iter().map(|s| s.to_string()).collect() };
    assert_eq!(v["schema"], "touchgate-report/1");
    assert_eq!(v["alert"], true);
    assert_eq!(
        keys(&v),
        set(&[
            "schema",
            "alert",
            "status",
            "insufficient_days",
            "thresholds",
            "input",
            "alerts",
            "days",
            "parity",
            "latency",
            "forms"
        ])
    );
    assert_eq!(
        keys(&v["thresholds"]),
        set(&[
            "direct_share_max",
            "direct_jump_pp",
            "valid_share_min",
            "parity_min",
            "min_events",
            "confidence"
        ])
    );
    assert_eq!(
        keys(&v["input"]),
        set(&["files", "lines", "events", "malformed", "malformed_samples"])
    );
    assert_eq!(v["input"]["malformed"], 1);
    assert_eq!(
        keys(&v["input"]["files"][0]),
        set(&["path", "gzip", "lines", "events", "malformed", "error"])
    );
    assert_eq!(
        keys(&v["input"]["malformed_samples"][0]),
        set(&["path", "line", "error"])
    );
    let day = &v["days"][7];
    assert_eq!(day["day"], "2026-11-08");
    assert_eq!(
        keys(day),
        set(&[
            "day",
            "alert",
            "status",
            "events",
            "landings",
            "channels",
            "conversions",
            "latency",
            "parity"
        ])
    );
    assert_eq!(keys(&day["events"]), set(&["proxy", "ingest", "beacon"]));
    let direct = [
        "total",
        "direct",
        "direct_share",
        "share_bound",
        "trailing_total",
        "trailing_direct",
        "trailing_mean",
        "trailing_days",
        "jump_pp",
        "jump_z",
        "share_status",
        "jump_status",
        "alert_share",
        "alert_jump",
    ];
    assert_eq!(keys(&day["landings"]), set(&direct));
    let mut conv = direct.to_vec();
    conv.extend([
        "valid",
        "valid_share",
        "valid_bound",
        "valid_status",
        "alert_valid",
    ]);
    assert_eq!(keys(&day["conversions"]), set(&conv));
    assert_eq!(day["landings"]["alert_share"], true);
    assert_eq!(day["landings"]["alert_jump"], true);
    assert_eq!(day["channels"]["Direct"], 70);
    assert_eq!(
        keys(&day["latency"]),
        set(&[
            "count",
            "p50_seconds",
            "p90_seconds",
            "p99_seconds",
            "max_seconds",
            "negative"
        ])
    );
    assert_eq!(
        keys(&day["parity"][0]),
        set(&[
            "event_name",
            "server",
            "client",
            "ratio",
            "bound",
            "status",
            "alert"
        ])
    );
    assert_eq!(
        keys(&v["parity"][0]),
        set(&[
            "event_name",
            "server",
            "client",
            "ratio",
            "min_ratio",
            "alert_days"
        ])
    );
    assert_eq!(
        keys(&v["alerts"][0]),
        set(&[
            "day",
            "check",
            "event_name",
            "value",
            "threshold",
            "message"
        ])
    );
    let checks: BTreeSet<&str> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["check"].as_str().unwrap())
        .collect();
    assert_eq!(
        checks,
        [
            "landing_direct_share",
            "landing_direct_jump",
            "valid_share",
            "parity"
        ]
        .into_iter()
        .collect()
    );
}

#[test]
fn text_output_is_aligned_and_marks_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut events = alerting_events();
    // A crafted name must not reach the terminal as an escape sequence.
    events.extend(beacons(7, "evil\u{1b}[2J", 1));
    std::fs::write(&path, jsonl(&events)).unwrap();
    let o = run_quiet(vec![path], bare(), ReportFormat::Text, dir.path());
    assert!(o.alert);
    let text = std::fs::read_to_string(dir.path().join("report.out")).unwrap();
    assert!(!text.contains('\u{1b}'), "raw escape in the text report");
    assert!(text.contains("evil\\u{1b}[2J"));
    assert!(text.contains("ALERT 2026-11-08 landing_direct_share:"));
    assert!(
        text.trim_end().ends_with("status: ALERT (4 alert(s))"),
        "{text}"
    );
    // The per-day table: one row per day, right-aligned under its header.
    let lines: Vec<&str> = text.lines().collect();
    let header = lines
        .iter()
        .position(|l| l.trim_start().starts_with("day") && l.contains("landings"))
        .unwrap();
    let end_of = |l: &str, word: &str| l.find(word).unwrap() + word.len();
    let landings_end = end_of(lines[header], "landings");
    for row in &lines[header + 2..header + 10] {
        let cell_end = row[..landings_end].trim_end().len();
        assert_eq!(cell_end, landings_end, "misaligned row: {row}");
    }
    assert!(
        lines[header + 9].trim_end().ends_with("ALERT"),
        "{}",
        lines[header + 9]
    );
    assert!(lines[header + 9].contains("63.6% !"));
}

fn injection_events() -> Vec<Event> {
    let mut events = alerting_events();
    let evil_name = "<script>alert(1)</script>";
    let evil_channel = "\"><img src=x onerror=alert(1)>";
    events.extend(conversions(7, evil_name, None, true, 5));
    events.extend(beacons(7, evil_name, 1));
    events.extend(landings(7, evil_channel, 3));
    events
}

#[test]
fn html_escapes_every_string_from_the_event_files() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // serde quotes an unknown variant in its error, which the report shows.
    let mut bad = serde_json::to_value(&landings(0, "Direct", 1)[0]).unwrap();
    bad["origin"] = "<b>x</b>".into();
    std::fs::write(&path, jsonl(&injection_events()) + &bad.to_string() + "\n").unwrap();
    run_quiet(vec![path], bare(), ReportFormat::Html, dir.path());
    let html = std::fs::read_to_string(dir.path().join("report.out")).unwrap();
    assert!(!html.contains("<script"), "unescaped script tag");
    assert!(!html.contains("<img"), "unescaped img tag");
    assert!(!html.contains("<b>x"), "unescaped parse error");
    assert!(
        html.contains("&lt;b&gt;x&lt;&#x2F;b&gt;"),
        "the parse error is shown, escaped"
    );
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2F;script&gt;"));
    for needle in ["https://", "src=\"", "href=\"", "url("] {
        assert!(
            !html.contains(needle),
            "{needle} in a self-contained report"
        );
    }
}

// ---------------------------------------------------------------- chromium

const CHROMIUM: &str = "/usr/bin/chromium";

/// Loads a file in headless Chromium; returns (stdout, stderr).
fn chromium(file: &Path, extra: &[String]) -> (String, String) {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: apt-get install -y chromium (the CI script installs it)"
    );
    let profile = tempfile::tempdir().unwrap();
    let out = Command::new(CHROMIUM)
        // `.ci/run` runs this suite under libfaketime, which Chromium's
        // child processes do not survive (minutes of restarts, even with
        // the clock not moved). What it renders does not depend on the
        // clock, so it runs on the real one.
        .env_remove("LD_PRELOAD")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(format!("file://{}", file.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Chromium logs every console message, and every uncaught exception, as
/// a `:CONSOLE` line (`[…:INFO:CONSOLE:1] "Uncaught …", source: …`). The
/// report has no script, so any console message is a fault (a CSP
/// violation from an external resource included).
fn console_errors(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught"))
        .collect()
}

#[test]
fn console_error_detection_catches_a_faulty_page() {
    // The negative control for the test below: the same detector on a page
    // that throws and that loads an external image against its CSP.
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("faulty.html");
    std::fs::write(
        &page,
        "<!DOCTYPE html><html><head><meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; script-src 'unsafe-inline'\"></head>\
         <body><script>undefined_function();</script><img src=\"http://127.0.0.1:9/x.png\"></body></html>",
    )
    .unwrap();
    let (_, stderr) = chromium(&page, &["--dump-dom".to_string()]);
    let errors = console_errors(&stderr);
    assert!(
        errors.iter().any(|l| l.contains("Uncaught ReferenceError")),
        "{stderr}"
    );
    assert!(
        errors.iter().any(|l| l.contains("Content Security Policy")),
        "{stderr}"
    );
}

#[test]
fn html_report_renders_its_charts_in_chromium_without_console_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, jsonl(&injection_events())).unwrap();
    let html = dir.path().join("report.html");
    let o = report::run(&ReportArgs {
        events: vec![path],
        format: ReportFormat::Html,
        out: Some(html.clone()),
        checks: bare(),
        max_malformed: 1.0,
    })
    .unwrap();
    assert!(o.alert);

    let (dom, stderr) = chromium(&html, &["--dump-dom".to_string()]);
    let errors = console_errors(&stderr);
    assert!(errors.is_empty(), "console errors: {errors:#?}");
    for id in ["chart-channel-mix", "chart-direct-share", "chart-parity"] {
        assert!(
            dom.contains(&format!("<svg id=\"{id}\"")),
            "chart {id} missing from the DOM"
        );
    }
    // The parsed DOM holds the chart elements: 8 days × 5 channels of stacked
    // bars, 2 series × 8 days of points, 3 parity bars.
    let count = |needle: &str| dom.matches(needle).count();
    assert_eq!(
        count("<rect class=\"bar\"") + count("<rect class=\"bar alert\""),
        8 * 4 + 1 + 3
    );
    assert_eq!(count("<circle class=\"point"), 16);
    assert!(count("<circle class=\"point alert\"") >= 1);
    assert_eq!(
        count("<rect class=\"bar alert\""),
        2,
        "signup_submitted and the crafted name alert"
    );
    assert_eq!(count("<polyline"), 2);
    assert_eq!(count("class=\"threshold\""), 2);
    // Nothing from the event files became markup.
    assert_eq!(count("<script"), 0);
    assert_eq!(count("<img"), 0);
    assert!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));

    let shot = std::env::var_os("TOUCHGATE_REPORT_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.path().join("report.png"));
    chromium(
        &html,
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1100,1900".to_string(),
            "--hide-scrollbars".to_string(),
        ],
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "screenshot of {} bytes",
        png.len()
    );
}

// ---------------------------------------------------------------- deploy/

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The sample names `/metrics` exposes, from the real registry: every
/// family is given one series so that it is encoded.
fn exposed_metric_names() -> BTreeSet<String> {
    use touchgate::metrics::*;
    let m = Metrics::new();
    let s = |v: &str| v.to_string();
    let _ = m.events_total.get_or_create(&EventLabels {
        event_name: s("x"),
        channel: s("x"),
        origin: s("x"),
    });
    let _ = m
        .events_duplicate_total
        .get_or_create(&EventNameLabel { event_name: s("x") });
    m.dropped("x");
    let _ = m.conversions_total.get_or_create(&ConversionLabels {
        event_name: s("x"),
        valid: s("x"),
    });
    let _ = m
        .conversions_unconfirmed_total
        .get_or_create(&UnconfirmedLabels {
            event_name: s("x"),
            reason: s("x"),
        });
    let _ = m
        .cacheable_cookie_responses_total
        .get_or_create(&ActionLabel { action: s("x") });
    let _ = m
        .capture_oversize_total
        .get_or_create(&EventNameLabel { event_name: s("x") });
    let _ = m
        .pii_redacted_total
        .get_or_create(&FieldLabel { field: s("x") });
    let _ = m
        .cookie_rejected_total
        .get_or_create(&CookieLabel { cookie: s("x") });
    let _ = m
        .client_beacons_total
        .get_or_create(&EventNameLabel { event_name: s("x") });
    let _ = m
        .upstream_errors_total
        .get_or_create(&KindLabel { kind: s("x") });
    let _ = m.sink_delivered_total.get_or_create(&m.sink("x"));
    let _ = m.sink_failures_total.get_or_create(&m.sink("x"));
    let _ = m.sink_dead_letter_total.get_or_create(&m.sink("x"));
    let _ = m.sink_queue_depth.get_or_create(&m.sink("x"));
    let _ = m.event_delivery_seconds.get_or_create(&m.sink("x"));
    let mut names = BTreeSet::new();
    for line in m.encode().lines() {
        let mut parts = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
    }
    names
}

/// Every `touchgate_…` metric named in a PromQL expression (recording
/// rules are named `touchgate:…` and are not matched).
fn metric_names_in(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = expr;
    while let Some(i) = rest.find("touchgate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

fn alerts_yaml() -> serde_norway::Value {
    serde_norway::from_str(&std::fs::read_to_string(repo("deploy/prometheus/alerts.yaml")).unwrap())
        .unwrap()
}

#[test]
fn prometheus_rules_are_a_prometheusrule_on_existing_metrics() {
    let known = exposed_metric_names();
    assert!(
        known.contains("touchgate_events_total")
            && known.contains("touchgate_event_delivery_seconds_bucket")
    );
    let doc = alerts_yaml();
    assert_eq!(doc["apiVersion"].as_str(), Some("monitoring.coreos.com/v1"));
    assert_eq!(doc["kind"].as_str(), Some("PrometheusRule"));
    assert!(doc["metadata"]["name"].as_str().is_some());
    let groups = doc["spec"]["groups"].as_sequence().unwrap();
    let mut alerts = BTreeSet::new();
    let mut used = BTreeSet::new();
    for g in groups {
        assert!(g["name"].as_str().is_some());
        for rule in g["rules"].as_sequence().unwrap() {
            let expr = rule["expr"].as_str().unwrap();
            for name in metric_names_in(expr) {
                assert!(
                    known.contains(&name),
                    "{name} is not a touchgate metric (in {expr})"
                );
                used.insert(name);
            }
            if let Some(alert) = rule["alert"].as_str() {
                assert!(
                    rule["labels"]["severity"].as_str().is_some(),
                    "{alert} has no severity"
                );
                assert!(
                    rule["annotations"]["summary"].as_str().is_some(),
                    "{alert} has no summary"
                );
                alerts.insert(alert.to_string());
            } else {
                assert!(rule["record"].as_str().unwrap().starts_with("touchgate:"));
            }
        }
    }
    for alert in [
        "TouchgateLandingDirectShareHigh",
        "TouchgateLandingDirectShareJump",
        "TouchgateConversionDirectShareHigh",
        "TouchgateConversionDirectShareJump",
        "TouchgateValidShareLow",
        "TouchgateDeliveryLatencyHigh",
        "TouchgateParityLow",
        "TouchgateEventsDropped",
        "TouchgateSinkFailing",
        "TouchgateSinkQueueBacklog",
    ] {
        assert!(alerts.contains(alert), "{alert} missing");
    }
    for metric in [
        "touchgate_events_total",
        "touchgate_conversions_total",
        "touchgate_event_delivery_seconds_bucket",
        "touchgate_client_beacons_total",
        "touchgate_sink_failures_total",
        "touchgate_sink_queue_depth",
        "touchgate_events_dropped_total",
    ] {
        assert!(used.contains(metric), "no rule uses {metric}");
    }
}

const PROMTOOL: &str = "/usr/bin/promtool";

fn promtool(args: &[&str], dir: &Path) -> String {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} is missing: apt-get install -y --no-install-recommends prometheus (ships promtool; the CI script installs it)"
    );
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The PrometheusRule's `spec` is the plain rule-groups file promtool reads.
fn write_rule_groups(dir: &Path) {
    let spec = serde_norway::to_string(&alerts_yaml()["spec"]).unwrap();
    std::fs::write(dir.join("rules.yaml"), spec).unwrap();
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let dir = tempfile::tempdir().unwrap();
    write_rule_groups(dir.path());
    let out = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
    // Each alert just inside and just outside its threshold, on series
    // shaped like what touchgate exports.
    std::fs::copy(
        repo("tests/fixtures/report/alerts_test.yaml"),
        dir.path().join("alerts_test.yaml"),
    )
    .unwrap();
    let out = promtool(&["test", "rules", "alerts_test.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(repo("deploy/grafana/touchgate.json")).unwrap())
        .unwrap()
}

/// Every panel with its nested panels (rows).
fn panels(v: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p);
        out.extend(panels(p));
    }
    out
}

/// The PromQL of every panel target, with Grafana's variables replaced so
/// that promtool can parse it.
fn dashboard_exprs() -> Vec<(String, String)> {
    let d = dashboard();
    let mut out = Vec::new();
    for p in panels(&d) {
        if p["type"] == "row" || p["type"] == "text" {
            continue;
        }
        let title = p["title"].as_str().unwrap().to_string();
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("panel {title} has no targets"));
        assert!(!targets.is_empty(), "panel {title} has no targets");
        for t in targets {
            let expr = t["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: target without expr"));
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__interval", "1m")
                .replace("$__range", "1d")
                .replace("$sink", "file")
                .replace("$event_name", "landing");
            out.push((title.clone(), expr));
        }
    }
    out
}

#[test]
fn grafana_dashboard_parses_and_every_expr_names_an_existing_metric() {
    let known = exposed_metric_names();
    let d = dashboard();
    assert!(d["title"].as_str().is_some() && d["uid"].as_str().is_some());
    let titles: Vec<String> = panels(&d)
        .iter()
        .filter_map(|p| p["title"].as_str().map(str::to_lowercase))
        .collect();
    for want in [
        "channel mix",
        "direct share",
        "valid share",
        "latency",
        "sink",
        "parity",
        "queue depth",
        "dead letter",
    ] {
        assert!(
            titles.iter().any(|t| t.contains(want)),
            "no panel about {want}: {titles:?}"
        );
    }
    let exprs = dashboard_exprs();
    assert!(exprs.len() >= 8);
    for (title, expr) in &exprs {
        let names = metric_names_in(expr);
        assert!(
            !names.is_empty(),
            "panel {title}: no touchgate metric in {expr}"
        );
        for name in names {
            assert!(
                known.contains(&name),
                "panel {title}: {name} is not a touchgate metric"
            );
        }
    }
}

#[test]
fn promtool_parses_every_dashboard_expr() {
    // promtool has no lone-expression check; a recording rule per panel
    // expression makes `check rules` parse each one.
    let dir = tempfile::tempdir().unwrap();
    let rules: Vec<serde_json::Value> = dashboard_exprs()
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({ "record": format!("dashboard:expr{i}"), "expr": expr }))
        .collect();
    let groups = serde_json::json!({ "groups": [{ "name": "dashboard", "rules": rules }] });
    std::fs::write(
        dir.path().join("dashboard.yaml"),
        serde_norway::to_string(&groups).unwrap(),
    )
    .unwrap();
    let out = promtool(&["check", "rules", "dashboard.yaml"], dir.path());
    assert!(out.contains("SUCCESS"), "{out}");
}

// ---------------------------------------------------------------- properties

mod properties {
    use super::*;
    use proptest::prelude::*;
    use touchgate::cli::report::aggregate::Aggregate;
    use touchgate::cli::report::read::InputSummary;

    /// A report whose only names (event name, channel) are `name`.
    fn report_named(name: &str) -> report::Report {
        let mut agg = Aggregate::default();
        for e in [
            landings(0, name, 2),
            conversions(0, name, None, true, 3),
            beacons(0, name, 1),
        ]
        .concat()
        {
            agg.add(&e);
        }
        report::evaluate(&agg, InputSummary::default(), &ChecksConfig::default())
    }

    proptest! {
        /// Escaping works when a crafted name adds no markup: the report
        /// has as many `<` as with a harmless name of the same length.
        #[test]
        fn names_never_add_markup_to_the_html(name in "\\PC{0,30}|[<>&\"'/a-z =]{0,30}") {
            prop_assume!(name != "landing");
            let plain = "a".repeat(name.chars().count());
            let html = report::render(&report_named(&name), ReportFormat::Html);
            let reference = report::render(&report_named(&plain), ReportFormat::Html);
            prop_assert_eq!(html.matches('<').count(), reference.matches('<').count());
            prop_assert_eq!(html.matches('>').count(), reference.matches('>').count());
        }

        /// No control character reaches the terminal but the newline.
        #[test]
        fn names_never_put_control_characters_on_the_terminal(name in "\\PC{0,10}[\\x00-\\x1f\\x7f\\u{202e}]\\PC{0,10}") {
            prop_assume!(name != "landing");
            let text = report::render(&report_named(&name), ReportFormat::Text);
            let clean = text
                .chars()
                .all(|c| c == '\n' || !(c.is_control() || c == '\u{202e}'));
            prop_assert!(clean, "control character in {:?}", text);
        }

        /// Every non-blank line is an event or a malformed line, never lost
        /// and never fatal.
        #[test]
        fn every_line_is_counted(lines in proptest::collection::vec(
            prop_oneof![
                Just(None),
                "[^\\n]{0,40}".prop_map(Some),
            ],
            0..40,
        )) {
            let dir = tempfile::tempdir().unwrap();
            let good = jsonl(&landings(0, "Email", 1));
            let mut text = String::new();
            let (mut events, mut blank) = (0u64, 0u64);
            for l in &lines {
                match l {
                    None => { text.push_str(&good); events += 1; }
                    Some(s) => {
                        text.push_str(s);
                        text.push('\n');
                        // Blank: only JSON whitespace.
                        blank += u64::from(s.chars().all(|c| matches!(c, ' ' | '\t' | '\r')));
                    }
                }
            }
            let path = dir.path().join("e.jsonl");
            std::fs::write(&path, &text).unwrap();
            let r = report::build(&[path], &ChecksConfig::default()).unwrap();
            prop_assert_eq!(r.input.events, events);
            prop_assert_eq!(r.input.lines, lines.len() as u64 - blank);
            prop_assert_eq!(r.input.malformed, lines.len() as u64 - blank - events);
        }
    }
}

// ------------------------------------------------------- channel rule sets

#[test]
fn landings_whose_channel_differs_under_ga4_rules_are_shown() {
    let mut events = landings(0, "Organic Search", 5);
    for mut e in landings(0, "Email", 3) {
        if let Some(t) = &mut e.touch {
            t.channel_ga4 = Some("Referral".into());
        }
        events.push(e);
    }
    let o = report_over(&events, ChecksConfig::default());
    let diff = &o.report.days[0].channel_rule_differences;
    assert_eq!(diff.len(), 1);
    assert_eq!(diff["Email → Referral"], 3);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, jsonl(&events)).unwrap();
    run_quiet(
        vec![path],
        ChecksConfig::default(),
        ReportFormat::Text,
        dir.path(),
    );
    let text = std::fs::read_to_string(dir.path().join("report.out")).unwrap();
    assert!(text.contains("differs under GA4's rules"), "{text}");
    assert!(text.contains("Email → Referral"), "{text}");

    let same = landings(0, "Organic Search", 5);
    let o = report_over(&same, ChecksConfig::default());
    assert!(o.report.days[0].channel_rule_differences.is_empty());
}
