//! `-z pack-relative-relocs` (DT_RELR) for the `touchgate` binary: it
//! shrinks the table of relative relocations that the dynamic loader reads
//! and writes at every start (0.9 MB of them) to a few KiB, which is most
//! of the binary's dirty pages at idle. It needs glibc 2.36 or later where
//! the binary runs (the loader refuses the binary with a clear message
//! otherwise), so it is used only for a native build against a glibc that
//! has it, on x86_64 where it was measured. Set `TOUCHGATE_RELR=0` to link without it.
use std::env;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=TOUCHGATE_RELR");
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if target == "x86_64-unknown-linux-gnu"
        && host == target
        && env::var("TOUCHGATE_RELR").map_or(true, |v| v != "0")
        && glibc_at_least(2, 36)
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// `getconf GNU_LIBC_VERSION` prints "glibc 2.36".
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let mut version = text
        .trim()
        .trim_start_matches("glibc ")
        .split('.')
        .map(|part| part.parse::<u32>().unwrap_or(0));
    let found = (version.next().unwrap_or(0), version.next().unwrap_or(0));
    found >= (major, minor)
}
