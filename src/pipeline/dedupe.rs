//! Edge dedupe: a bounded, time-windowed set of event ids, optionally
//! shared across replicas through Redis (`SET NX PX`).
//!
//! Memory: the local set holds 16-byte keys in a hash set (17 bytes a
//! bucket with hashbrown's control byte, at most 7/8 full, allocated once
//! for `max_entries` and a sixteenth more, a power of two of buckets) plus
//! a FIFO ring of (key, expiry) pairs (20 bytes): about 56 bytes per entry
//! at the default 1,000,000 entries (≈ 56 MB), and at most about 62 for
//! any bound. It never grows: see [`LocalSet::rebuild`].
//! Because the window is the same for every id, ids expire in the order
//! they were inserted, so the ring's front is always the next to expire.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

/// The answer for one event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
}

type Key = [u8; 16];

/// The 16 bytes an event id is keyed by: the id itself when it is 32 hex
/// characters (every id touchgate makes is), else a hash of it.
pub fn key_of(event_id: &str) -> Key {
    let mut k = [0u8; 16];
    if event_id.len() == 32 && hex::decode_to_slice(event_id, &mut k).is_ok() {
        return k;
    }
    k.copy_from_slice(&blake3::hash(event_id.as_bytes()).as_bytes()[..16]);
    k
}

pub struct LocalSet {
    window: Duration,
    max_entries: usize,
    epoch: Instant,
    set: HashSet<Key>,
    ring: VecDeque<(Key, u32)>,
    rebuilds: u64,
}

impl LocalSet {
    pub fn new(window: Duration, max_entries: usize) -> LocalSet {
        let max_entries = max_entries.max(1);
        LocalSet {
            window,
            max_entries,
            epoch: Instant::now(),
            // Room for the one id held over the bound, and a sixteenth
            // more for the tombstones that build up between rebuilds, so
            // that a rebuild frees at least that much whatever the bound.
            set: HashSet::with_capacity(max_entries + max_entries / 16 + 2),
            rebuilds: 0,
            ring: VecDeque::with_capacity(max_entries),
        }
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Whether `inserts` more ids could make the table grow: see
    /// [`LocalSet::rebuild`]. (`capacity` is live ids plus the room left,
    /// and tombstones take room.)
    pub fn needs_rebuild(&self, inserts: usize) -> bool {
        let room = self.set.capacity().saturating_sub(self.set.len());
        room <= inserts.min(self.max_entries) + 1
    }

    /// hashbrown leaves a tombstone for some removals and, once they have
    /// used up its spare room, grows the table to twice its size rather
    /// than reuse them (it rehashes in place only when at most half full,
    /// and a full set is more). At the default bound that happened after
    /// about 12 million ids: 35 MB more, and both tables at once while it
    /// copied. Rebuilding from the ring, which holds exactly the set's ids,
    /// clears the tombstones in the allocation the set already has: one
    /// pass over the ids (about 25 ms at the default bound), once per
    /// about 11 million insertions there.
    pub fn rebuild(&mut self) {
        self.set.clear();
        self.set.extend(self.ring.iter().map(|&(k, _)| k));
        self.rebuilds += 1;
    }

    /// How many times [`LocalSet::rebuild`] has run.
    pub fn rebuilds(&self) -> u64 {
        self.rebuilds
    }

    /// Record `key` seen at `now`; whether it was already in the window.
    pub fn check_and_insert(&mut self, key: Key, now: Instant) -> Seen {
        let now_s = now.saturating_duration_since(self.epoch).as_secs() as u32;
        while let Some(&(k, expires)) = self.ring.front() {
            if expires > now_s {
                break;
            }
            self.ring.pop_front();
            self.set.remove(&k);
        }
        if self.needs_rebuild(0) {
            self.rebuild();
        }
        // One probe for "seen?" and "insert": the set is tens of megabytes,
        // and each probe is a cache miss. It holds one id over the bound
        // until the oldest leaves just below (`new` sized it for that).
        if !self.set.insert(key) {
            return Seen::Duplicate;
        }
        if self.ring.len() >= self.max_entries
            && let Some((old, _)) = self.ring.pop_front()
        {
            // Full: the oldest id leaves the window early.
            self.set.remove(&old);
        }
        let expires = now_s.saturating_add(self.window.as_secs().max(1) as u32);
        self.ring.push_back((key, expires));
        Seen::New
    }
}

/// The dedupe stage of the pipeline: the local set, and Redis when
/// configured. Redis is asked only about ids the local set has not seen.
pub struct Dedupe {
    local: LocalSet,
    redis: Option<RedisSet>,
}

struct RedisSet {
    conn: redis::aio::ConnectionManager,
    timeout: Duration,
    window_ms: u64,
}

/// Outcome of a batch check.
#[derive(Debug, Default)]
pub struct BatchOutcome {
    pub seen: Vec<Seen>,
    /// Redis could not answer: the local set decided alone.
    pub fell_back: bool,
}

impl Dedupe {
    pub fn local(window: Duration, max_entries: usize) -> Dedupe {
        Dedupe {
            local: LocalSet::new(window, max_entries),
            redis: None,
        }
    }

    /// With Redis. Connecting never fails the start: the connection
    /// manager reconnects in the background, and until then the local set
    /// answers alone.
    pub async fn with_redis(
        window: Duration,
        max_entries: usize,
        url: &str,
        timeout: Duration,
    ) -> Result<Dedupe, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout.max(Duration::from_millis(200))))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = redis::aio::ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Dedupe {
            local: LocalSet::new(window, max_entries),
            redis: Some(RedisSet {
                conn,
                timeout,
                window_ms: window.as_millis() as u64,
            }),
        })
    }

    /// Check a batch of event ids in order; ids repeated inside the batch
    /// are duplicates of their first occurrence.
    pub async fn check(&mut self, event_ids: &[&str]) -> BatchOutcome {
        if self.local.needs_rebuild(event_ids.len()) {
            // Rebuilt here, before the batch, rather than inside it: on the
            // multi-threaded runtime the worker hands its other tasks (the
            // connections queued on it) to another thread for the pass.
            let local = &mut self.local;
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| local.rebuild())
                }
                _ => local.rebuild(),
            }
        }
        let now = Instant::now();
        let mut out = BatchOutcome {
            seen: event_ids
                .iter()
                .map(|id| self.local.check_and_insert(key_of(id), now))
                .collect(),
            fell_back: false,
        };
        let Some(redis) = &mut self.redis else {
            return out;
        };
        let ask: Vec<usize> = (0..event_ids.len())
            .filter(|&i| out.seen[i] == Seen::New)
            .collect();
        if ask.is_empty() {
            return out;
        }
        let mut pipe = redis::pipe();
        for &i in &ask {
            pipe.cmd("SET")
                .arg(format!("tg:dedupe:{}", event_ids[i]))
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(redis.window_ms);
        }
        let answer: Result<Result<Vec<Option<String>>, redis::RedisError>, _> =
            tokio::time::timeout(redis.timeout, pipe.query_async(&mut redis.conn)).await;
        match answer {
            Ok(Ok(replies)) if replies.len() == ask.len() => {
                for (&i, reply) in ask.iter().zip(replies) {
                    if reply.is_none() {
                        out.seen[i] = Seen::Duplicate;
                    }
                }
            }
            Ok(Ok(_)) => out.fell_back = true,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "redis dedupe failed; local set only");
                out.fell_back = true;
            }
            Err(_) => out.fell_back = true,
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_capacity() {
        let mut s = LocalSet::new(Duration::from_secs(10), 3);
        let t0 = s.epoch;
        let k = |b: u8| [b; 16];
        assert_eq!(s.check_and_insert(k(1), t0), Seen::New);
        assert_eq!(
            s.check_and_insert(k(1), t0 + Duration::from_secs(9)),
            Seen::Duplicate
        );
        assert_eq!(
            s.check_and_insert(k(1), t0 + Duration::from_secs(10)),
            Seen::New
        );
        s.check_and_insert(k(2), t0 + Duration::from_secs(10));
        s.check_and_insert(k(3), t0 + Duration::from_secs(10));
        s.check_and_insert(k(4), t0 + Duration::from_secs(10));
        assert_eq!(s.len(), 3);
        // k(1) was evicted for capacity.
        assert_eq!(
            s.check_and_insert(k(1), t0 + Duration::from_secs(11)),
            Seen::New
        );
    }

    /// The table is allocated once: a full set that keeps taking new ids
    /// (each one over the bound until the oldest leaves, and each removal
    /// possibly a tombstone) never grows it, whatever the bound, including
    /// bounds that fill a power-of-two table. Growth shows as a capacity
    /// above the first one (tombstones only ever lower it).
    #[test]
    fn a_full_set_never_reallocates() {
        for n in [1, 3, 7, 14, 28, 100, 917, 1791, 1792, 1800, 3583] {
            let mut s = LocalSet::new(Duration::from_secs(3600), n);
            let cap = s.set.capacity();
            assert!(cap > n + n / 16, "bound {n}: room for tombstones");
            let t0 = s.epoch;
            let key = |i: u64| {
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                k
            };
            for i in 0..(200 * n as u64 + 1000) {
                assert_eq!(s.check_and_insert(key(i), t0), Seen::New);
                assert!(s.len() <= n);
                assert!(s.set.capacity() <= cap, "bound {n} grew at id {i}");
            }
            // A rebuild frees at least a sixteenth of the bound, so they
            // stay rare whatever the bound.
            let inserts = 200 * n as u64 + 1000;
            assert!(
                s.rebuilds() * (n as u64 / 16 + 1) <= inserts,
                "bound {n}: {} rebuilds",
                s.rebuilds()
            );
            // Still exact after the rebuilds: the last n ids are in, the
            // one before them is not.
            let last = 200 * n as u64 + 999;
            assert_eq!(s.check_and_insert(key(last), t0), Seen::Duplicate);
            assert_eq!(s.check_and_insert(key(last - n as u64), t0), Seen::New);
        }
    }

    #[test]
    fn keys_from_hex_and_other_ids() {
        assert_eq!(key_of("000102030405060708090a0b0c0d0e0f")[15], 15);
        assert_ne!(key_of("abc"), key_of("abd"));
    }

    /// The pipeline's batches rebuild the set before it would grow, on
    /// the multi-threaded runtime too (where the pass is handed off with
    /// `block_in_place`), and the answers stay exact.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn batches_rebuild_before_the_set_would_grow() {
        let n = 100;
        let mut d = Dedupe::local(Duration::from_secs(3600), n);
        let cap = d.local.set.capacity();
        let ids: Vec<String> = (0..20_000u64).map(|i| format!("id-{i}")).collect();
        for batch in ids.chunks(37) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let out = d.check(&refs).await;
            assert!(out.seen.iter().all(|s| *s == Seen::New));
            assert!(d.local.set.capacity() <= cap);
        }
        let out = d
            .check(&[ids[19_999].as_str(), ids[19_999 - n].as_str()])
            .await;
        assert_eq!(out.seen, vec![Seen::Duplicate, Seen::New]);
    }

    #[tokio::test]
    async fn batch_repeats_are_duplicates() {
        let mut d = Dedupe::local(Duration::from_secs(60), 100);
        let out = d.check(&["a", "b", "a"]).await;
        assert_eq!(out.seen, vec![Seen::New, Seen::New, Seen::Duplicate]);
        assert!(!out.fell_back);
    }
}
