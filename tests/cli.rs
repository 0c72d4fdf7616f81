//! The `touchgate` binary's exit status, command by command, as the README
//! ("Running it") and each command's `--help` give it; and a closed stdout,
//! which ends a command quietly with 0.

#[path = "browser/demo_process.rs"]
mod demo_process;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use touchgate::event::{Event, Origin, Touch};

const SECRET: &str = "cli-test-secret-0123456789abcdef0123";

fn touchgate(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_touchgate"));
    cmd.args(args)
        .env("TOUCHGATE_SECRET", SECRET)
        .env_remove("TOUCHGATE_CONFIG")
        .env_remove("RUST_LOG");
    cmd
}

/// Runs to the end with `stdin` as input and `stdout` as its stdout; the
/// exit code and both outputs.
fn run_with(args: &[&str], stdin: &[u8], stdout: Stdio) -> (Option<i32>, String, String) {
    let mut child = touchgate(args)
        .stdin(Stdio::piped())
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    // A command that does not read its stdin may exit before this is
    // written; that is no error of the command's.
    let _ = input.write_all(stdin);
    drop(input);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

fn run(args: &[&str], stdin: &[u8]) -> (i32, String, String) {
    let (code, stdout, stderr) = run_with(args, stdin, Stdio::piped());
    (code.expect("exited, not killed"), stdout, stderr)
}

fn code(args: &[&str]) -> i32 {
    let (code, _, stderr) = run(args, b"");
    println!("touchgate {}: {code}\n{stderr}", args.join(" "));
    code
}

fn repo(path: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .display()
        .to_string()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A valid config: the proxy on `listen`, the admin port where the OS
/// says, the spool in `dir`.
fn config(dir: &Path, name: &str, listen: &str) -> String {
    write(
        dir,
        name,
        &format!(
            "[proxy]\nlisten = \"{listen}\"\nupstream = \"http://127.0.0.1:9\"\n\
             drain_delay = \"0s\"\ndrain_timeout = \"2s\"\n\n\
             [admin]\nlisten = \"127.0.0.1:0\"\n\n\
             [spool]\ndir = \"{}\"\nfsync = \"never\"\n",
            dir.join("spool").display()
        ),
    )
}

const INVALID_CONFIG: &str = "[proxy]\nupstream = \"ftp://app\"\n";

/// `count` landings of one day on `channel`.
fn landings(dir: &Path, name: &str, channel: &str, count: usize) -> String {
    let at = time::macros::datetime!(2026-11-29 12:00 UTC);
    let mut lines = String::new();
    for i in 0..count {
        let mut e = Event::new(format!("{i:032x}"), "landing".into(), Origin::Proxy, at, at);
        e.touch = Some(if channel == "Direct" {
            Touch::direct()
        } else {
            Touch {
                source: Some("google".into()),
                medium: Some("organic".into()),
                channel: channel.into(),
                valid: true,
                ..Touch::default()
            }
        });
        lines.push_str(&serde_json::to_string(&e).unwrap());
        lines.push('\n');
    }
    write(dir, name, &lines)
}

const COMMANDS: [&str; 6] = ["run", "check-config", "demo", "audit", "report", "inject"];

#[test]
fn every_command_gives_its_exit_status_in_its_help() {
    let (code, help, _) = run(&["--help"], b"");
    assert_eq!(code, 0);
    assert!(help.contains("Exit status:"), "{help}");
    for command in COMMANDS {
        let (code, help, stderr) = run(&[command, "--help"], b"");
        assert_eq!(code, 0, "{command}: {stderr}");
        let status = help
            .split_once("Exit status: ")
            .unwrap_or_else(|| panic!("{command} --help has no exit status:\n{help}"))
            .1;
        assert!(status.starts_with('0'), "{command}: {status}");
    }
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(code(&["no-such-command"]), 2);
    assert_eq!(code(&["report"]), 2, "--events is required");
    assert_eq!(code(&["audit", "--format", "yaml"]), 2);
}

#[test]
fn check_config_exits_0_when_valid_and_2_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let default = repo("config/touchgate.toml");
    assert_eq!(code(&["check-config", "--config", &default]), 0);
    let invalid = write(dir.path(), "bad.toml", INVALID_CONFIG);
    assert_eq!(code(&["check-config", "--config", &invalid]), 2);
    let missing = dir.path().join("missing.toml").display().to_string();
    assert_eq!(code(&["check-config", "--config", &missing]), 2);
}

#[test]
fn audit_exits_0_2_on_an_invalid_config_or_request_and_1_on_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let default = repo("config/touchgate.toml");
    assert_eq!(code(&["audit", "--config", &default]), 0);
    assert_eq!(
        code(&["audit", "--config", &default, "--format", "json"]),
        0
    );
    let request = b"GET /?utm_source=google HTTP/1.1\r\nHost: shop.example\r\n\r\n";
    let (status, out, err) = run(&["audit", "--config", &default, "--request", "-"], request);
    assert_eq!(status, 0, "{err}");
    assert!(out.contains("\"events\""), "{out}");

    let invalid = write(dir.path(), "bad.toml", INVALID_CONFIG);
    assert_eq!(code(&["audit", "--config", &invalid]), 2);
    let (status, _, _) = run(
        &["audit", "--config", &default, "--request", "-"],
        b"not an HTTP request\r\n\r\n",
    );
    assert_eq!(status, 2);

    let missing = dir.path().join("missing").display().to_string();
    assert_eq!(code(&["audit", "--config", &missing]), 1);
    assert_eq!(
        code(&["audit", "--config", &default, "--request", &missing]),
        1
    );
}

#[test]
fn report_exits_0_1_on_an_alert_and_2_on_unusable_input() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = landings(dir.path(), "organic.jsonl", "Organic Search", 20);
    // Enough landings for [checks] min_events (100): 20 would be insufficient data.
    let direct = landings(dir.path(), "direct.jsonl", "Direct", 200);
    assert_eq!(code(&["report", "--events", &healthy]), 0);
    assert_eq!(code(&["report", "--events", &direct]), 1);
    let out = dir.path().join("report.html").display().to_string();
    assert_eq!(
        code(&[
            "report", "--events", &direct, "--format", "html", "--out", &out
        ]),
        1
    );

    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_eq!(code(&["report", "--events", empty.to_str().unwrap()]), 2);
    let missing = dir.path().join("missing.jsonl").display().to_string();
    assert_eq!(code(&["report", "--events", &missing]), 2);
    let invalid = write(dir.path(), "bad.toml", INVALID_CONFIG);
    assert_eq!(
        code(&["report", "--events", &healthy, "--config", &invalid]),
        2
    );
    let unwritable = dir.path().join("no-dir/report.txt").display().to_string();
    assert_eq!(
        code(&["report", "--events", &healthy, "--out", &unwritable]),
        2
    );
}

#[test]
fn inject_exits_0_2_on_input_it_cannot_patch_and_1_on_an_unreadable_file() {
    let dir = tempfile::tempdir().unwrap();
    let deployment = repo("tests/fixtures/inject/deployment.yaml");
    assert_eq!(code(&["inject", &deployment]), 0);
    let (status, out, err) = run(&["inject"], b"apiVersion: v1\nkind: ConfigMap\n");
    assert_eq!(status, 0, "{err}");
    assert_eq!(out, "apiVersion: v1\nkind: ConfigMap\n");

    let no_containers = write(
        dir.path(),
        "pod.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {}\n",
    );
    assert_eq!(code(&["inject", &no_containers]), 2);
    let (status, _, _) = run(&["inject", "-"], b"a: [unclosed\n");
    assert_eq!(status, 2);

    let missing = dir.path().join("missing.yaml").display().to_string();
    assert_eq!(code(&["inject", &missing]), 1);
}

#[test]
fn run_exits_2_on_an_invalid_config_1_when_it_cannot_start_and_0_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let invalid = write(dir.path(), "bad.toml", INVALID_CONFIG);
    assert_eq!(code(&["run", "--config", &invalid]), 2);

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = config(
        dir.path(),
        "busy.toml",
        &taken.local_addr().unwrap().to_string(),
    );
    assert_eq!(code(&["run", "--config", &busy]), 1);

    let good = config(dir.path(), "good.toml", "127.0.0.1:0");
    let mut child = touchgate(&["run", "--config", &good])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines
            .next()
            .expect("touchgate exited before it started")
            .unwrap();
        if line.contains("touchgate started") {
            break;
        }
    }
    std::thread::spawn(move || lines.for_each(drop));
    // The signal handlers are installed right after that line is logged.
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("touchgate run did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0), "{status}");
}

#[test]
fn demo_exits_1_when_it_cannot_start_and_0_after_sigterm() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let listen = taken.local_addr().unwrap().to_string();
    let data = dir.path().display().to_string();
    assert_eq!(code(&["demo", "--listen", &listen, "--data-dir", &data]), 1);

    let mut demo = demo_process::Demo::start();
    assert_eq!(demo.terminate().code(), Some(0));
}

/// Runs the command with its stdout a pipe whose read end is already
/// closed, so its first write fails with `BrokenPipe`.
fn with_stdout_closed(args: &[&str], stdin: &[u8]) -> (Option<i32>, String) {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (code, _, stderr) = run_with(args, stdin, writer.into());
    (code, stderr)
}

#[test]
fn a_closed_stdout_ends_each_command_quietly_with_0() {
    let dir = tempfile::tempdir().unwrap();
    let default = repo("config/touchgate.toml");
    let deployment = std::fs::read(repo("tests/fixtures/inject/deployment.yaml")).unwrap();
    // Enough landings for [checks] min_events (100): 20 would be insufficient data.
    let direct = landings(dir.path(), "direct.jsonl", "Direct", 200);
    let request = b"GET /?utm_source=google HTTP/1.1\r\nHost: shop.example\r\n\r\n";
    let cases: [(&[&str], &[u8]); 7] = [
        (&["audit", "--config", &default], b""),
        (&["audit", "--config", &default, "--format", "json"], b""),
        (&["audit", "--config", &default, "--request", "-"], request),
        (&["report", "--events", &direct], b""),
        (&["report", "--events", &direct, "--format", "json"], b""),
        (&["inject"], &deployment),
        (&["check-config", "--config", &default], b""),
    ];
    for (args, stdin) in cases {
        let (code, stderr) = with_stdout_closed(args, stdin);
        let args = args.join(" ");
        assert_eq!(code, Some(0), "touchgate {args}: {stderr}");
        assert!(!stderr.contains("panicked"), "touchgate {args}: {stderr}");
        assert_eq!(stderr, "", "touchgate {args}");
    }
}
