//! Link settings for the `touchgate` binary that keep its idle RSS low (see
//! docs/performance.md, "RSS idle"):
//!
//! - A linker script made from `link/hot-functions.txt` places the
//!   functions that start-up and the request paths run at the front of the
//!   executable code. The kernel maps code in 64 KiB windows around each
//!   page that runs, so the same code scattered through 12 MB of `.text`
//!   kept about 6 MB of it resident; packed, about 2 MB.
//! - `-z pack-relative-relocs` (DT_RELR) shrinks the 0.9 MB table of
//!   relative relocations that the dynamic loader reads at every start to a
//!   few KiB. It needs glibc 2.36 or later where the binary runs (the
//!   loader refuses the binary with a clear message otherwise), so it is
//!   used only when the glibc it is built against has it.
//!
//! Only for x86_64 Linux with glibc, where both were measured, and only
//! for the binaries (tests and benches link as usual). Set
//! `TOUCHGATE_LINK_LAYOUT=0` to link without either, for a linker that
//! rejects them. What was applied is passed to the package's own targets as
//! `TOUCHGATE_LINK_APPLIED` (`off`, `hot` or `hot relr`), for
//! tests/link_layout.rs.
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

/// Code that `link/generate.sh` cannot see run: callgrind hides AVX-512,
/// so the AVX-512 versions that blake3 (assembly, one section per file) and
/// crc32fast (spool records) pick at run time on CPUs that have it, with
/// blake3's other x86 assembly variants.
const NATIVE_ONLY: &str = "    *blake3_avx512_x86-64_unix.o(.text) *blake3_avx2_x86-64_unix.o(.text) *blake3_sse41_x86-64_unix.o(.text)
    *(.text._RNvNtNtCs*_9crc32fast11specialized9pclmulqdq16calculate_avx512)
";

fn main() {
    println!("cargo:rerun-if-changed=link/hot-functions.txt");
    println!("cargo:rerun-if-env-changed=TOUCHGATE_LINK_LAYOUT");
    let applied = apply();
    println!("cargo:rustc-env=TOUCHGATE_LINK_APPLIED={applied}");
}

/// Emits the link arguments; returns what it applied.
fn apply() -> &'static str {
    let target = env::var("TARGET").unwrap_or_default();
    let host = env::var("HOST").unwrap_or_default();
    if target != "x86_64-unknown-linux-gnu"
        || env::var("TOUCHGATE_LINK_LAYOUT").is_ok_and(|v| v == "0")
    {
        return "off";
    }
    let (Ok(dir), Ok(out)) = (env::var("CARGO_MANIFEST_DIR"), env::var("OUT_DIR")) else {
        return "off";
    };
    let Ok(list) = std::fs::read_to_string(PathBuf::from(dir).join("link/hot-functions.txt"))
    else {
        println!(
            "cargo:warning=link/hot-functions.txt missing: linking without the hot-code layout"
        );
        return "missing";
    };
    let script = PathBuf::from(out).join("hot.ld");
    if let Err(e) = std::fs::write(&script, linker_script(&list)) {
        println!("cargo:warning=writing {}: {e}", script.display());
        return "missing";
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
    // Only a native build can ask the glibc it links against.
    if host == target && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        return "hot relr";
    }
    "hot"
}

/// An output section `.text.hot` before `.text`, with the listed functions in
/// order. `INSERT` keeps the linker's default layout for everything else.
/// A name matches its section in `.text.` or, for `#[cold]` functions,
/// `.text.unlikely.`, with any `.llvm.N` suffix a promoted local function
/// gets. (v0 identifiers are length-prefixed, so the trailing `*` seldom
/// reaches another function; one that it does only joins the hot section.)
/// Names that no longer exist match nothing.
fn linker_script(list: &str) -> String {
    let mut script = String::from("SECTIONS {\n  .text.hot : {\n");
    for name in list.lines().map(str::trim) {
        if name.is_empty() || name.starts_with('#') {
            continue;
        }
        let _ = writeln!(script, "    *(.text.{name}* .text.unlikely.{name}*)");
    }
    script.push_str(NATIVE_ONLY);
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    script
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
