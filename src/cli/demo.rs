//! `touchgate demo`: the proxy in front of a built-in sample app, in one
//! process, with no config file and no secret to set.
//!
//! The sample app ([`sample_app`]) listens on an internal 127.0.0.1 port;
//! touchgate is started in-process with a config built here ([`config_toml`])
//! and a secret drawn at random for this run. The live lines on stdout come
//! from following the file sink's output ([`Follower`]): the file is polled
//! every [`POLL`], at most [`MAX_READ`] bytes a time, so what is printed is
//! exactly what was written, and the request path is not touched.

mod sample_app;

use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::app::StartError;
use crate::config::Config;
use crate::event::{Event, Origin};

pub use sample_app::CAMPAIGN_LINKS;

pub struct DemoOptions {
    /// The proxy's public address (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Where events go (default ./touchgate-data).
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Start(String),
}

/// The environment variable the demo config names for the secret. It is
/// never read from the real environment: [`run`] answers it with a secret
/// drawn at random for this run.
const SECRET_ENV: &str = "TOUCHGATE_DEMO_SECRET";
/// The admin port of the default config, used when it is free.
const ADMIN_PORT: u16 = 9901;
/// How often the events file is checked for new lines.
pub const POLL: Duration = Duration::from_millis(250);
/// The most read from the events file per poll; the rest waits a poll.
pub const MAX_READ: usize = 1 << 20;

/// The demo's configuration as TOML: the same parser and validation as a
/// real config file.
pub fn config_toml(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    data_dir: &Path,
) -> Result<String, DemoError> {
    let path = |p: PathBuf| {
        p.to_str()
            .map(|s| toml::Value::String(s.to_string()).to_string())
            .ok_or_else(|| {
                DemoError::Start(format!(
                    "--data-dir {}: the path must be valid UTF-8",
                    data_dir.display()
                ))
            })
    };
    Ok(format!(
        r#"# touchgate demo: built in code, never read from a file.
[proxy]
listen = "{listen}"
upstream = "http://{upstream}"
# Nothing routes traffic here but you: no endpoint update to wait for.
drain_delay = "0s"
drain_timeout = "5s"

[admin]
listen = "{admin}"

[identity]
# Demo only: `run` answers this variable with a random secret per run, so
# cookies from an earlier run fail their signature and count as absent.
secret_env = "{SECRET_ENV}"

[spool]
dir = {spool}

[[form]]
path = "/signup"
method = "POST"
event = "signup_submitted"
lead_id = "email"
natural_key = ["lead_id", "day"]
fields = [{{ name = "plan", mode = "raw" }}]

[[sink]]
type = "file"
path = {events}
# A short linger so that the live lines follow the requests closely.
delivery = {{ linger = "50ms" }}
"#,
        spool = path(data_dir.join("spool"))?,
        events = path(events_path(data_dir))?,
    ))
}

pub fn events_path(data_dir: &Path) -> PathBuf {
    data_dir.join("events.jsonl")
}

/// A secret for this run only: 32 random bytes, hex.
fn demo_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    hex::encode(bytes)
}

/// 127.0.0.1:9901 when nothing listens there, else a port the OS picks: a
/// second touchgate on this machine must not stop the demo. With
/// `--listen …:0` (any port, as tests ask) the admin port is any port too:
/// two demos started at once could both see 9901 free.
fn admin_addr(listen: SocketAddr) -> SocketAddr {
    let any = SocketAddr::from(([127, 0, 0, 1], 0));
    if listen.port() == 0 {
        return any;
    }
    let preferred = SocketAddr::from(([127, 0, 0, 1], ADMIN_PORT));
    match std::net::TcpListener::bind(preferred) {
        Ok(_) => preferred,
        Err(_) => any,
    }
}

/// Runs until Ctrl-C.
pub async fn run(opts: &DemoOptions) -> Result<(), DemoError> {
    std::fs::create_dir_all(&opts.data_dir).map_err(|e| {
        DemoError::Start(format!(
            "cannot create --data-dir {}: {e}",
            opts.data_dir.display()
        ))
    })?;
    // Signal handlers first: a Ctrl-C during the start must still drain.
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(t), Ok(i)) => (t, i),
        (Err(e), _) | (_, Err(e)) => {
            return Err(DemoError::Start(format!(
                "cannot install signal handlers: {e}"
            )));
        }
    };

    let app = sample_app::start()
        .await
        .map_err(|e| DemoError::Start(format!("cannot start the sample app on 127.0.0.1: {e}")))?;
    let toml = config_toml(
        opts.listen,
        admin_addr(opts.listen),
        app.addr,
        &opts.data_dir,
    )?;
    let secret = demo_secret();
    let env = move |k: &str| (k == SECRET_ENV).then(|| secret.clone());
    let cfg = match Config::parse("(demo config)", &toml, &env) {
        Ok(c) => c,
        Err(e) => {
            app.stop().await;
            return Err(DemoError::Start(e.to_string()));
        }
    };
    let delay = cfg.proxy.drain_delay;
    let running = match crate::app::start(cfg, &env).await {
        Ok(r) => r,
        Err(e) => {
            app.stop().await;
            return Err(DemoError::Start(start_error(&e, opts.listen)));
        }
    };

    let events = events_path(&opts.data_dir);
    let follower = Follower::at_end(&events);
    print_banner(
        running.proxy_addr,
        app.addr,
        running.admin_addr,
        &opts.data_dir,
        follower.skipped,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let live = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || follow(follower, &stop))
    };

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
    running.drain(delay).await;
    app.stop().await;
    // The follower prints what the drain flushed, then ends.
    stop.store(true, Ordering::Relaxed);
    let _ = live.await;
    say(&format!(
        "\nStopped. The events are in {}",
        events.display()
    ));
    Ok(())
}

/// The operator-facing reason the demo could not start.
fn start_error(e: &StartError, listen: SocketAddr) -> String {
    match e {
        StartError::Bind {
            what: "proxy.listen",
            source,
            ..
        } if source.kind() == std::io::ErrorKind::AddrInUse => {
            let mut other = listen;
            other.set_port(listen.port().checked_add(1).unwrap_or(8081));
            format!(
                "{listen} is already in use by another program; pick another address: touchgate demo --listen {other}"
            )
        }
        other => other.to_string(),
    }
}

/// Print to stdout; a closed stdout (`| head`) is not an error of the demo.
fn say(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

fn print_banner(
    proxy: SocketAddr,
    app: SocketAddr,
    admin: SocketAddr,
    data_dir: &Path,
    skipped: u64,
) {
    let base = format!("http://{proxy}");
    let events = events_path(data_dir);
    let jar = data_dir.join("curl-cookies.txt");
    let (_, _, google) = CAMPAIGN_LINKS[0];
    let mut text = format!(
        "\ntouchgate demo: the sample app \"Lumen\" behind touchgate\n\n\
         \x20 Open in a browser   {base}/\n\
         \x20 The app directly    http://{app}/   (no touchgate: no cookies, no events)\n\
         \x20 Events              {events}\n\
         \x20 Admin               http://{admin}/metrics\n\n\
         Try:\n\
         \x20 # 1. a landing from a Google Ads click (sec-fetch-dest: document marks a page load); see the Set-Cookie lines\n\
         \x20 curl -s -o /dev/null -D - -c {jar} -H 'sec-fetch-dest: document' '{base}{google}'\n\
         \x20 # 2. a signup with the same cookies: the conversion carries the Google Ads click as its last touch\n\
         \x20 curl -s -o /dev/null -w '%{{http_code}}\\n' -b {jar} -d 'email=ada@example.com&plan=team' {base}/signup\n\
         \x20 # 3. the counters (or: tail -f {events})\n\
         \x20 curl -s http://{admin}/metrics | grep '^touchgate_events_total'\n\n",
        events = events.display(),
        jar = jar.display(),
    );
    if skipped > 0 {
        text.push_str(&format!("({skipped} bytes of earlier events are already in the file; only new ones are shown.)\n"));
    }
    text.push_str("Live events, as the file sink writes them (Ctrl-C to stop):");
    say(&text);
}

/// Poll until `stop`, then once more for what the drain flushed.
fn follow(mut f: Follower, stop: &AtomicBool) {
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        for line in f.poll() {
            if let Some(text) = live_line(&line) {
                say(&text);
            }
        }
        if stopping {
            return;
        }
        std::thread::sleep(POLL);
    }
}

/// Reads the lines appended to a file since the last poll. Follows a
/// rotation (a new file at the same path, or a shorter one) from its start.
pub struct Follower {
    path: PathBuf,
    offset: u64,
    inode: Option<u64>,
    partial: Vec<u8>,
    /// Bytes already in the file when following started.
    pub skipped: u64,
}

impl Follower {
    /// Follow from the current end: only lines written from now on.
    pub fn at_end(path: &Path) -> Follower {
        let meta = std::fs::metadata(path).ok();
        let offset = meta.as_ref().map_or(0, |m| m.len());
        Follower {
            path: path.to_path_buf(),
            offset,
            inode: meta.as_ref().map(inode),
            partial: Vec::new(),
            skipped: offset,
        }
    }

    /// The complete lines appended since the last call (a line still being
    /// written waits for the next one).
    pub fn poll(&mut self) -> Vec<String> {
        let Ok(meta) = std::fs::metadata(&self.path) else {
            return Vec::new();
        };
        if self.inode != Some(inode(&meta)) || meta.len() < self.offset {
            self.inode = Some(inode(&meta));
            self.offset = 0;
            self.partial.clear();
        }
        if meta.len() == self.offset {
            return Vec::new();
        }
        let Ok(mut file) = std::fs::File::open(&self.path) else {
            return Vec::new();
        };
        if file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        let Ok(n) = file.take(MAX_READ as u64).read_to_end(&mut buf) else {
            return Vec::new();
        };
        self.offset += n as u64;
        self.partial.extend_from_slice(&buf);
        let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') else {
            if self.partial.len() > MAX_READ {
                // No line is this long: drop it rather than grow forever.
                self.partial.clear();
            }
            return Vec::new();
        };
        let rest = self.partial.split_off(end + 1);
        let complete = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&complete)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn inode(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.ino()
}

/// One short line per event, e.g.
/// `12:00:01  landing           Paid Search    google/cpc   /pricing`.
/// `None` for a line that is not an event.
pub fn live_line(json: &str) -> Option<String> {
    let e: Event = serde_json::from_str(json).ok()?;
    let time = e.occurred_at.time();
    let at = format!(
        "{:02}:{:02}:{:02}",
        time.hour(),
        time.minute(),
        time.second()
    );
    let short = |id: &Option<String>| {
        id.as_deref().map_or_else(
            || "-".to_string(),
            |s| format!("{}…", s.get(..8).unwrap_or(s)),
        )
    };
    let source_medium = |t: &crate::event::Touch| {
        format!(
            "{}/{}",
            t.source.as_deref().unwrap_or("-"),
            t.medium.as_deref().unwrap_or("-")
        )
    };
    let detail = match e.origin {
        Origin::Beacon => {
            let cid = e
                .client
                .context
                .as_ref()
                .and_then(|c| c.get("cid"))
                .and_then(|c| c.as_str())
                .map(|c| c.to_string());
            format!("client beacon  cid={}", short(&cid))
        }
        Origin::Ingest => format!(
            "ingested  user={}  lead={}",
            short(&e.user_id),
            short(&e.lead_id)
        ),
        Origin::Proxy if e.is_attempt() => {
            let form = e
                .properties
                .get("form_event")
                .and_then(|f| f.as_str())
                .unwrap_or("-");
            let status = e.status.map_or_else(|| "-".into(), |s| s.to_string());
            match e.properties.get("reason").and_then(|r| r.as_str()) {
                Some(reason) => format!("{form}  not confirmed ({reason})  status={status}"),
                None => format!("{form}  confirmed  status={status}"),
            }
        }
        Origin::Proxy if e.event_name == "landing" => {
            let touch = e.touch.clone().unwrap_or_default();
            let path = e.page.as_ref().map_or("-", |p| p.path.as_str());
            format!("{:<15} {:<22} {path}", touch.channel, source_medium(&touch))
        }
        Origin::Proxy => {
            let mut s = format!(
                "lead={}  status={}",
                short(&e.lead_id),
                e.status.map_or_else(|| "-".into(), |s| s.to_string())
            );
            if let Some(plan) = e.properties.get("plan").and_then(|p| p.as_str()) {
                s.push_str(&format!("  plan={plan}"));
            }
            match &e.last_touch {
                Some(t) => s.push_str(&format!(
                    "  last touch: {} {}",
                    t.touch.channel,
                    source_medium(&t.touch)
                )),
                None => s.push_str("  last touch: none"),
            }
            if e.client.context.is_some() {
                s.push_str("  +client context");
            }
            s
        }
    };
    Some(format!("  {at}  {:<18} {detail}", e.event_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == SECRET_ENV).then(|| "0123456789abcdef0123456789abcdef".to_string())
    }

    #[test]
    fn the_config_parses_and_validates() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("a \"quoted\" dir\\x");
        let toml = config_toml(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:3456".parse().unwrap(),
            &data,
        )
        .unwrap();
        let cfg = Config::parse("demo", &toml, &env).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(cfg.proxy.upstream, "http://127.0.0.1:3456");
        assert_eq!(cfg.spool.dir, data.join("spool"));
        assert_eq!(cfg.form.len(), 1);
        assert_eq!(cfg.form[0].rule.event, "signup_submitted");
        assert_eq!(cfg.form[0].rule.lead_id.as_deref(), Some("email"));
        assert_eq!(cfg.form[0].rule.natural_key, ["lead_id", "day"]);
        assert_eq!(cfg.identity.secret_env, SECRET_ENV);
    }

    #[test]
    fn the_config_needs_the_secret_from_the_closure_not_the_environment() {
        let toml = config_toml(
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:0".parse().unwrap(),
            "127.0.0.1:3456".parse().unwrap(),
            Path::new("d"),
        )
        .unwrap();
        let err = Config::parse("demo", &toml, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("identity.secret_env"), "{err}");
    }

    #[test]
    fn a_secret_is_drawn_per_run() {
        let (a, b) = (demo_secret(), demo_secret());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn address_in_use_suggests_listen() {
        let e = StartError::Bind {
            what: "proxy.listen",
            addr: "127.0.0.1:8080".parse().unwrap(),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        let msg = start_error(&e, "127.0.0.1:8080".parse().unwrap());
        assert!(msg.contains("127.0.0.1:8080 is already in use"), "{msg}");
        assert!(msg.contains("--listen 127.0.0.1:8081"), "{msg}");
    }

    fn event(name: &str, origin: Origin) -> Event {
        let at = time::macros::datetime!(2026-11-29 12:00:01 UTC);
        Event::new("e1".into(), name.into(), origin, at, at)
    }

    fn touch(source: &str, medium: &str, channel: &str) -> crate::event::Touch {
        crate::event::Touch {
            source: Some(source.into()),
            medium: Some(medium.into()),
            channel: channel.into(),
            valid: true,
            ..Default::default()
        }
    }

    #[test]
    fn live_line_of_a_landing() {
        let mut e = event("landing", Origin::Proxy);
        e.touch = Some(touch("google", "cpc", "Paid Search"));
        e.page = Some(crate::event::Page {
            url: "http://x/pricing".into(),
            path: "/pricing".into(),
            referrer_host: None,
        });
        let line = live_line(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(
            line.split_whitespace().collect::<Vec<_>>(),
            [
                "12:00:01",
                "landing",
                "Paid",
                "Search",
                "google/cpc",
                "/pricing"
            ]
        );
    }

    #[test]
    fn live_line_of_a_conversion_and_a_beacon() {
        let mut e = event("signup_submitted", Origin::Proxy);
        e.lead_id = Some("3f2a1b2c3d4e5f60718293a4b5c6d7e8".into());
        e.status = Some(303);
        e.properties.insert("plan".into(), "team".into());
        e.last_touch = Some(crate::event::TouchAt {
            touch: touch("newsletter", "email", "Email"),
            at: e.occurred_at,
        });
        let line = live_line(&serde_json::to_string(&e).unwrap()).unwrap();
        assert!(line.contains("signup_submitted"), "{line}");
        assert!(
            line.contains(
                "lead=3f2a1b2c…  status=303  plan=team  last touch: Email newsletter/email"
            ),
            "{line}"
        );

        let mut b = event("signup_submitted", Origin::Beacon);
        b.client.context = Some(serde_json::json!({"cid": "0b9e8f7a-1111-2222-3333-444455556666"}));
        let line = live_line(&serde_json::to_string(&b).unwrap()).unwrap();
        assert!(line.contains("client beacon  cid=0b9e8f7a…"), "{line}");
        assert_eq!(live_line("not json"), None);
    }

    #[test]
    fn live_line_of_a_form_attempt() {
        let mut a = event("form_attempt", Origin::Proxy);
        a.status = Some(400);
        a.properties
            .insert("form_event".into(), "signup_submitted".into());
        a.properties.insert("confirmed".into(), false.into());
        a.properties.insert("reason".into(), "status".into());
        let line = live_line(&serde_json::to_string(&a).unwrap()).unwrap();
        assert!(
            line.contains(
                "form_attempt       signup_submitted  not confirmed (status)  status=400"
            ),
            "{line}"
        );
        a.status = Some(303);
        a.properties.remove("reason");
        a.properties.insert("confirmed".into(), true.into());
        let line = live_line(&serde_json::to_string(&a).unwrap()).unwrap();
        assert!(
            line.contains("signup_submitted  confirmed  status=303"),
            "{line}"
        );
    }

    #[test]
    fn follower_reads_complete_lines_and_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, "old\n").unwrap();
        let mut f = Follower::at_end(&path);
        assert_eq!(f.skipped, 4);
        assert!(f.poll().is_empty());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"one\ntw").unwrap();
        assert_eq!(f.poll(), ["one"]);
        file.write_all(b"o\n").unwrap();
        assert_eq!(f.poll(), ["two"]);
        // Rotation: the file is renamed away and a new one started.
        std::fs::rename(&path, dir.path().join("events-1.jsonl")).unwrap();
        std::fs::write(&path, "three\n").unwrap();
        assert_eq!(f.poll(), ["three"]);
    }

    #[test]
    fn follower_waits_for_a_file_that_does_not_exist_yet() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut f = Follower::at_end(&path);
        assert_eq!(f.skipped, 0);
        assert!(f.poll().is_empty());
        std::fs::write(&path, "first\n").unwrap();
        assert_eq!(f.poll(), ["first"]);
    }
}
