//! Chromium for the tests that drive a real browser (`tests/browser.rs`,
//! `tests/frameworks.rs`): Debian's `/usr/bin/chromium` (or `$TG_CHROMIUM`),
//! driven by playwright-core, which is `npm ci`-installed once per lock file
//! (`tests/browser/package-lock.json`) into Cargo's temporary directory.
//! Needs Node.js >= 20 and npm, and the npm registry on the first run.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `npm ci` of one small package; generous for a slow registry.
const NPM_LIMIT: Duration = Duration::from_secs(300);
/// One whole journey, Chromium's start included (the script's own watchdog
/// is 60 s; this is the outer bound).
pub const DRIVE_LIMIT: Duration = Duration::from_secs(90);

pub fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

pub fn chromium() -> String {
    let path = std::env::var("TG_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&path).exists(),
        "{path} is missing: apt-get install -y chromium (.ci/run installs it), or set TG_CHROMIUM"
    );
    path
}

/// Run a command to completion within `limit`, in its own process group,
/// which is killed whatever happens: nothing it started outlives the call.
pub fn run_bounded(
    cmd: &mut Command,
    limit: Duration,
    what: &str,
) -> (std::process::ExitStatus, String, String) {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start: {e}"));
    let pgid = child.id();
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = reader(Box::new(child.stdout.take().unwrap()));
    let err = reader(Box::new(child.stderr.take().unwrap()));
    let kill_group = |signal: &str| {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Chromium and its helpers are in the group: end whatever is left.
    kill_group("-KILL");
    let Some(status) = status else {
        let _ = child.wait();
        panic!(
            "{what}: no result within {limit:?}\n--- stderr\n{}",
            err.join().unwrap_or_default()
        )
    };
    (
        status,
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    )
}

/// `npm ci` once per lock file into Cargo's temporary directory; returns the
/// `node_modules` directory.
pub fn node_modules() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let src = browser_dir();
        let lock = std::fs::read(src.join("package-lock.json")).unwrap();
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("touchgate-browser-npm");
        let stamp = dir.join("installed-package-lock.json");
        let modules = dir.join("node_modules");
        if std::fs::read(&stamp).ok().as_deref() == Some(&lock[..]) && modules.join("playwright-core/package.json").exists() {
            return modules;
        }
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(src.join("package.json"), dir.join("package.json")).unwrap();
        std::fs::write(dir.join("package-lock.json"), &lock).unwrap();
        let (status, out, err) = run_bounded(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir)
                // playwright-core downloads nothing at install; make sure.
                .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1"),
            NPM_LIMIT,
            "npm ci (tests/browser)",
        );
        assert!(
            status.success(),
            "npm ci for tests/browser failed ({status}): the browser tests need Node.js >= 20, npm, and the npm \
             registry on the first run.\n{out}\n{err}"
        );
        std::fs::write(&stamp, &lock).unwrap();
        modules
    })
}
