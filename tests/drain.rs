//! `touchgate run` as a process: drain on SIGTERM with a slow request in flight.

#[path = "support/upstream.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test]
async fn sigterm_fails_readiness_finishes_in_flight_and_exits_0() {
    let up = start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("touchgate.toml");
    let toml = config_toml(up.addr(), dir.path(), "")
        .replace("drain_delay = \"0s\"", "drain_delay = \"3s\"")
        .replace(
            "upstream_response_timeout = \"2s\"",
            "upstream_response_timeout = \"10s\"",
        );
    std::fs::write(&config, toml).unwrap();
    let (mut child, proxy, admin) = spawn_binary(&config, &[]);
    eventually_async_ready(&admin).await;

    let slow = tokio::spawn({
        let url = format!("http://{proxy}/slow/2500");
        async move { get(&url, &[]).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let killed = Instant::now();
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );

    // Readiness fails at once…
    let mut not_ready = false;
    for _ in 0..20 {
        let (p, _) = get(&format!("http://{admin}/readyz"), &[]).await;
        if p.status == 503 {
            not_ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(not_ready, "/readyz must turn 503 on SIGTERM");
    // Well inside drain_delay (3s), with room for a loaded machine.
    assert!(killed.elapsed() < Duration::from_millis(2500));
    // …new requests are still served during drain_delay…
    let (p, _) = get(&format!("http://{proxy}/status/204"), &[]).await;
    assert_eq!(p.status, 204);
    // …the request in flight completes…
    let (p, body) = slow.await.unwrap();
    assert_eq!(p.status, 200);
    assert_eq!(&body[..], b"slow done\n");
    // …and the process exits 0.
    let status = tokio::task::spawn_blocking(move || {
        for _ in 0..100 {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        panic!("touchgate did not exit after the drain");
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    // After the listener closed, nothing is accepted.
    assert!(tokio::net::TcpStream::connect(&proxy).await.is_err());
}

async fn eventually_async_ready(admin: &str) {
    for _ in 0..100 {
        if let Ok(Ok(resp)) = tokio::time::timeout(Duration::from_secs(1), async {
            client()
                .request(
                    http::Request::get(format!("http://{admin}/readyz"))
                        .body(Default::default())
                        .unwrap(),
                )
                .await
        })
        .await
            && resp.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("touchgate never became ready");
}

#[test]
fn check_config_reports_every_problem_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[proxy]\nupstream = \"ftp://app\"\n\n[[form]]\npath = \"signup\"\nevent = \"Signup!\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("TOUCHGATE_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    assert!(err.contains(&format!("{p}:2: proxy.upstream: ")), "{err}");
    assert!(err.contains(&format!("{p}:5: form[0].path: ")), "{err}");
    assert!(err.contains(&format!("{p}:6: form[0].event: ")), "{err}");
    std::fs::write(
        &path,
        "[proxy]\nlisten = \"127.0.0.1:1\"\nunknown_key = 1\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args(["check-config", "--config", path.to_str().unwrap()])
        .env("TOUCHGATE_SECRET", SECRET)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with(&format!(
            "{p}:3: proxy.unknown_key: unknown field `unknown_key`"
        )),
        "{err}"
    );
    // The shipped default is valid.
    let out = Command::new(env!("CARGO_BIN_EXE_touchgate"))
        .args([
            "check-config",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/config/touchgate.toml"),
        ])
        .env("TOUCHGATE_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
