//! Bytes per entry of the edge dedupe set (`pipeline::dedupe::LocalSet`)
//! at 1,000,000 entries, counted two ways: heap bytes allocated (a
//! counting global allocator) and resident memory (`VmRSS`), each before
//! and after filling the set, and the heap's peak. Then 30,000,000 more
//! inserts past capacity must not allocate: the set is bounded (a table
//! with tombstones would have to rebuild itself every few million ids, and
//! 500,000 would not show it). The empty set holds one small table; the
//! table and the ring grow as ids arrive, up to what the bound needs.
//!
//! `cargo bench --bench dedupe_memory` (not criterion: one measurement,
//! printed). Target: ≤ 64 bytes per entry.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use touchgate::pipeline::dedupe::{LocalSet, Seen, key_of};

/// `System`, plus a running total of live heap bytes.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let live = LIVE.fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK.fetch_max(live, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    // Passed through, so that zeroed memory stays untouched as with
    // `System` (the default would write the zeros).
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn rss_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Event ids as touchgate makes them: 32 hex characters.
fn id(i: u64) -> String {
    let h = blake3::hash(&i.to_le_bytes());
    hex::encode(&h.as_bytes()[..16])
}

fn main() {
    const N: usize = 1_000_000;
    let per = |bytes: usize| bytes as f64 / N as f64;

    let heap0 = LIVE.load(Ordering::Relaxed);
    let rss0 = rss_bytes();
    let mut set = LocalSet::new(Duration::from_secs(24 * 3600), N);
    let heap_empty = LIVE.load(Ordering::Relaxed) - heap0;
    let rss_empty = rss_bytes().saturating_sub(rss0);

    let now = Instant::now();
    let started = Instant::now();
    for i in 0..N as u64 {
        let seen = set.check_and_insert(key_of(&id(i)), now);
        assert_eq!(seen, Seen::New);
    }
    let fill = started.elapsed();
    assert_eq!(set.len(), N);
    let heap_full = LIVE.load(Ordering::Relaxed) - heap0;
    let heap_peak = PEAK.load(Ordering::Relaxed) - heap0;
    let rss_full = rss_bytes().saturating_sub(rss0);

    const MORE: u64 = 30 * N as u64;
    let started = Instant::now();
    for i in N as u64..N as u64 + MORE {
        let mut k = [0u8; 16];
        k.copy_from_slice(&blake3::hash(&i.to_le_bytes()).as_bytes()[..16]);
        set.check_and_insert(k, now);
    }
    let cycle = started.elapsed();
    assert_eq!(set.len(), N, "bounded at max_entries");
    let heap_over = LIVE.load(Ordering::Relaxed) - heap0;
    let heap_peak_over = PEAK.load(Ordering::Relaxed) - heap0;
    assert_eq!(heap_over, heap_full, "no allocation once at max_entries");
    assert_eq!(heap_peak_over, heap_peak, "no resize once at max_entries");

    println!("dedupe LocalSet, max_entries = {N}");
    println!(
        "  heap allocated, empty (the first small table):   {heap_empty} bytes = {:.1} B/entry",
        per(heap_empty)
    );
    println!(
        "  heap allocated, full:                            {heap_full} bytes = {:.1} B/entry",
        per(heap_full)
    );
    println!(
        "  heap peak while filling:                         {heap_peak} bytes = {:.1} B/entry",
        per(heap_peak)
    );
    println!(
        "  heap allocated, after {MORE} more inserts (evicting): {heap_over} bytes, peak {heap_peak_over} bytes ({:.0} ns/insert incl. key hashing)",
        cycle.as_nanos() as f64 / MORE as f64
    );
    println!(
        "  RSS growth, empty: {:.2} MiB; full: {:.1} MiB = {:.1} B/entry",
        rss_empty as f64 / 1048576.0,
        rss_full as f64 / 1048576.0,
        per(rss_full)
    );
    println!(
        "  fill: {N} inserts in {fill:?} ({:.0} ns/insert incl. id hashing)",
        fill.as_nanos() as f64 / N as f64
    );
    let verdict = if per(heap_full.max(rss_full)) <= 64.0 {
        "met"
    } else {
        "MISSED"
    };
    println!("  target <= 64 B/entry: {verdict}");
}
