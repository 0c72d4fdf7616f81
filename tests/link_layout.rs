//! The binary is linked as build.rs intends (docs/performance.md, "RSS
//! idle"): the functions in link/hot-functions.txt gathered in `.text.hot`
//! before `.text`, and relative relocations packed as DT_RELR. A linker
//! that silently ignored the script, or a list whose names no longer match
//! (say, after a change of symbol mangling), would show up here rather than
//! only as a larger RSS in the load bench.
//!
//! Reads the ELF with binutils' `readelf` and `nm`, which the link step
//! already needs. build.rs says what it applied (`TOUCHGATE_LINK_APPLIED`):
//! nothing is checked when it was turned off (`TOUCHGATE_LINK_LAYOUT=0`),
//! and DT_RELR only when the build's glibc allowed it. A `RUSTFLAGS` in the environment replaces the v0 mangling
//! that `.cargo/config.toml` selects; the list then no longer matches
//! touchgate's own functions, and this test says so.
#![cfg(all(target_os = "linux", target_arch = "x86_64", target_env = "gnu"))]

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_touchgate");

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .arg(BIN)
        .output()
        .unwrap_or_else(|e| panic!("running {name}: {e}"));
    assert!(out.status.success(), "{name} {args:?} failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What build.rs applied: `off`, `missing` (the list could not be used),
/// `hot` or `hot relr`.
const APPLIED: &str = env!("TOUCHGATE_LINK_APPLIED");

/// (address, size) of a section, from `readelf -SW`.
fn section(name: &str) -> Option<(u64, u64)> {
    let sections = tool("readelf", &["-SW"]);
    sections.lines().find_map(|line| {
        let line = line.trim_start();
        let rest = line.strip_prefix('[')?.split_once(']')?.1;
        let mut fields = rest.split_whitespace();
        (fields.next()? == name).then_some(())?;
        let _type = fields.next()?;
        let addr = u64::from_str_radix(fields.next()?, 16).ok()?;
        let _offset = fields.next()?;
        let size = u64::from_str_radix(fields.next()?, 16).ok()?;
        Some((addr, size))
    })
}

#[test]
fn hot_functions_come_first() {
    if APPLIED == "off" {
        return;
    }
    let (hot, hot_size) = section(".text.hot").expect("no .text.hot section");
    let (text, _) = section(".text").expect("no .text section");
    assert!(
        hot < text,
        ".text.hot at {hot:#x} is not before .text at {text:#x}"
    );
    assert!(
        hot_size > 64 * 1024,
        ".text.hot holds only {hot_size} bytes"
    );

    // Functions every start runs, in the list by their v0 names, must be
    // inside it: the binary's main, and the config loader.
    let list = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/link/hot-functions.txt"
    ))
    .expect("link/hot-functions.txt");
    let symbols = tool("nm", &["--defined-only"]);
    for (suffix, within) in [
        ("_9touchgate4main", "9touchgate"),
        ("6Config4load", "9touchgate6config"),
    ] {
        assert!(
            list.lines()
                .any(|l| l.starts_with("_RNv") && l.ends_with(suffix) && l.contains(within)),
            "{suffix} is not in link/hot-functions.txt"
        );
        let addr = symbols
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let _kind = f.next()?;
                let name = f.next()?;
                (name.starts_with("_RNv") && name.ends_with(suffix) && name.contains(within))
                    .then_some(addr)
            })
            .next()
            .unwrap_or_else(|| panic!("no symbol ending in {suffix}"));
        assert!(
            (hot..hot + hot_size).contains(&addr),
            "{suffix} at {addr:#x} is outside .text.hot"
        );
    }
}

#[test]
fn relative_relocations_are_packed() {
    // build.rs asks for DT_RELR only against glibc 2.36 or later.
    if !APPLIED.contains("relr") {
        return;
    }
    let dynamic = tool("readelf", &["-dW"]);
    assert!(
        dynamic.contains("(RELR)"),
        "no DT_RELR in the dynamic section"
    );
    let (_, rela_size) = section(".rela.dyn").unwrap_or((0, 0));
    assert!(rela_size < 64 * 1024, ".rela.dyn still {rela_size} bytes");
}
