//! The real `touchgate demo` binary, run as a child process for a test:
//! started on a port the OS picks (read back from the URL it prints),
//! with its own data dir, stopped with SIGTERM.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the demo may take to print its URL, and to exit after SIGTERM.
const START_LIMIT: Duration = Duration::from_secs(30);
const STOP_LIMIT: Duration = Duration::from_secs(20);
/// How long events may take to reach the file (the sink lingers 50 ms).
const EVENT_LIMIT: Duration = Duration::from_secs(15);

pub struct Demo {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub base: String,
    pub data_dir: tempfile::TempDir,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
}

impl Demo {
    pub fn start() -> Demo {
        Demo::start_in(tempfile::tempdir().unwrap())
    }

    /// Over a data dir the test prepared.
    pub fn start_in(data_dir: tempfile::TempDir) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_touchgate"))
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir.path())
            .env_remove("TOUCHGATE_SECRET")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let out = child.stdout.take().unwrap();
            let lines = stdout.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push(line);
                }
            });
            let mut err = child.stderr.take().unwrap();
            let text = stderr.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        return;
                    }
                    text.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        let mut demo = Demo {
            child: Some(child),
            base: String::new(),
            data_dir,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let url = demo.stdout().iter().find_map(|l| {
                let rest = l.trim().strip_prefix("Open in a browser")?;
                Some(rest.trim().trim_end_matches('/').to_string())
            });
            if let Some(url) = url {
                demo.base = url;
                return demo;
            }
            if let Some(status) = demo.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "touchgate demo exited with {status} before printing its URL\n{}",
                    demo.logs()
                );
            }
            assert!(
                Instant::now() < deadline,
                "touchgate demo printed no URL\n{}",
                demo.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn events_path(&self) -> PathBuf {
        self.data_dir.path().join("events.jsonl")
    }

    pub fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.events_path())
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Wait (bounded) until the events on disk satisfy `done`.
    pub fn wait_events(
        &self,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + EVENT_LIMIT;
        loop {
            let events = self.events();
            if done(&events) {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; events on disk:\n{}\n{}",
                serde_json::to_string_pretty(&events).unwrap(),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stdout(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// Wait (bounded) for a stdout line containing every needle.
    pub fn wait_stdout(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + EVENT_LIMIT;
        loop {
            if let Some(l) = self
                .stdout()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l;
            }
            assert!(
                Instant::now() < deadline,
                "no stdout line with {needles:?}\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "--- stdout\n{}\n--- stderr\n{}",
            self.stdout().join("\n"),
            self.stderr.lock().unwrap()
        )
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("the demo is running");
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM failed");
        let deadline = Instant::now() + STOP_LIMIT;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("touchgate demo did not exit after SIGTERM\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    /// A failed test must not leave the demo running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
