//! A throwaway PostgreSQL server for one test: Debian's PostgreSQL binaries
//! (the newest `/usr/lib/postgresql/*/bin`, else those on PATH), a fresh
//! data directory in a temp dir, trust auth, 127.0.0.1 on
//! a free port. initdb refuses to run as root, so as root every command runs
//! as the `postgres` user (`runuser`). Stopped on drop.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;

/// The directory of initdb/pg_ctl: the newest Debian install, else empty
/// (the tools are then looked up on PATH).
fn bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_default()
}

pub struct PgServer {
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
    bin: PathBuf,
}

impl PgServer {
    pub fn start() -> PgServer {
        let bin = bin_dir();
        assert!(
            bin.join("initdb").exists() || run_ok("initdb", &["--version"]),
            "PostgreSQL is needed for this test: apt-get install postgresql"
        );
        let as_postgres = run_plain("id", &["-u"]).trim() == "0";
        let dir = tempfile::Builder::new().prefix("tg-pg-").tempdir().unwrap();
        if as_postgres {
            run_plain(
                "chown",
                &["-R", "postgres:postgres", dir.path().to_str().unwrap()],
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = PgServer {
            dir,
            port,
            as_postgres,
            bin,
        };
        let data = server.data();
        server.pg(
            "initdb",
            &[
                "-D",
                &data,
                "-A",
                "trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        server.start_again();
        server
    }

    /// `postgresql://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgresql://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn restart(&self) {
        // `-l` again: without it the new server writes to pg_ctl's stdout,
        // and waiting for pg_ctl's output would wait for the server's end.
        let log = self.log();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-m",
                "fast",
                "-w",
                "-t",
                "60",
                "-o",
                &self.options(),
                "restart",
            ],
        );
    }

    pub fn stop(&self) {
        self.pg(
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "-t", "60", "stop"],
        );
    }

    pub fn start_again(&self) {
        let log = self.log();
        self.pg(
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &log,
                "-w",
                "-t",
                "60",
                "-o",
                &self.options(),
                "start",
            ],
        );
    }

    fn options(&self) -> String {
        format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off",
            self.port,
            self.dir.path().display()
        )
    }

    fn log(&self) -> String {
        self.dir.path().join("log").display().to_string()
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    fn pg(&self, tool: &str, args: &[&str]) {
        let exe: PathBuf = self.bin.join(tool);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = cmd.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} {args:?} failed: {}\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
        );
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.data();
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // Best effort: the server may already be stopped by the test.
        let _ = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .output();
    }
}

fn run_ok(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_plain(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}
