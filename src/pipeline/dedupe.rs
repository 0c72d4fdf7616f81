//! Edge dedupe: a bounded, time-windowed set of event ids, optionally
//! shared across replicas through Redis (`SET NX PX`).
//!
//! Memory: the local set holds a 64-bit keyed fingerprint of each id in an
//! open-addressing table ([`KeyTable`]) of a power of two of 8-byte slots,
//! at most three quarters full, plus a FIFO ring of (fingerprint, expiry)
//! pairs (12 bytes). Both grow with the ids the window holds, up to the
//! size `max_entries` plus one needs, and never beyond: about 33 bytes per
//! entry at the default 1,000,000 entries (≈ 32 MB), and at most about 37
//! for any bound. They start small because a hashed table is touched all
//! over by its first few thousand ids: sized for the bound from the start,
//! it would be wholly resident in a sidecar whose window holds a fraction
//! of it. Two different ids share a fingerprint with probability 2⁻⁶⁴ (a
//! false duplicate about once in 10¹³ events at a full million), and the
//! fingerprint key is random per process, so no client can choose ids
//! that collide.
//! Because the window is the same for every id, ids expire in the order
//! they were inserted, so the ring's front is always the next to expire.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

/// The answer for one event id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    Duplicate,
}

type KeyHash = [u8; 16];

/// The 16 bytes an event id is keyed by: the id itself when it is 32 hex
/// characters (every id touchgate makes is), else a hash of it.
pub fn key_of(event_id: &str) -> KeyHash {
    let mut k = [0u8; 16];
    if event_id.len() == 32 && hex::decode_to_slice(event_id, &mut k).is_ok() {
        return k;
    }
    k.copy_from_slice(&blake3::hash(event_id.as_bytes()).as_bytes()[..16]);
    k
}

/// A set of 64-bit keys: linear probing, and backward-shift deletion, so a
/// removal leaves no tombstone and the table is rebuilt only to double,
/// never more often however many ids pass through, and never past the
/// slots its bound needs.
/// (hashbrown's set, used before, left tombstones that forced a rebuild
/// every ~11 million ids, and initialised its 2 MB of control bytes at
/// start.) Slots are hashed with a per-process random SipHash key, so ids a
/// client chooses (ingest accepts any 32-hex id) cannot be made to pile up
/// in one run of slots.
struct KeyTable {
    /// 0 is an empty slot; the all-zero key itself is `has_zero`.
    slots: Box<[u64]>,
    mask: usize,
    /// The most slots the bound needs.
    max_slots: usize,
    len: usize,
    has_zero: bool,
    hasher: RandomState,
}

impl KeyTable {
    /// Slots to start with: a few pages.
    const FIRST_SLOTS: usize = 1024;

    /// Room for `max_len` keys at most three quarters full, where linear
    /// probing still finds a key in a probe or two (4 slots a cache line).
    fn with_max_len(max_len: usize) -> KeyTable {
        let max_slots = (max_len.saturating_mul(4) / 3 + 2).next_power_of_two();
        let slots = max_slots.min(Self::FIRST_SLOTS);
        KeyTable {
            slots: vec![0u64; slots].into_boxed_slice(),
            mask: slots - 1,
            max_slots,
            len: 0,
            has_zero: false,
            hasher: RandomState::new(),
        }
    }

    /// Doubles the slots (up to `max_slots`) once one more key would fill
    /// them past three quarters.
    fn make_room(&mut self) {
        let slots = self.slots.len();
        if slots >= self.max_slots || 4 * (self.len + 1) <= 3 * slots {
            return;
        }
        let old = std::mem::replace(&mut self.slots, vec![0u64; slots * 2].into_boxed_slice());
        self.mask = slots * 2 - 1;
        for key in old.iter().copied().filter(|&k| k != 0) {
            if let Err(Some(empty)) = self.probe(key) {
                self.slots[empty] = key;
            }
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of slots now.
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.slots.len()
    }

    fn home(&self, key: u64) -> usize {
        self.hasher.hash_one(key) as usize & self.mask
    }

    /// Where `key` is (`Ok`), or the empty slot where it would go (`Err`);
    /// `Err(None)` only for a full table, which the callers' bound prevents.
    fn probe(&self, key: u64) -> Result<usize, Option<usize>> {
        let mut i = self.home(key);
        for _ in 0..self.slots.len() {
            match self.slots[i] {
                0 => return Err(Some(i)),
                k if k == key => return Ok(i),
                _ => i = (i + 1) & self.mask,
            }
        }
        Err(None)
    }

    /// Insert `key`; false if it was already there. The caller keeps the
    /// length within `max_len`: on a full table (never reached that way)
    /// the key is reported new and not stored.
    fn insert(&mut self, key: u64) -> bool {
        if key == 0 {
            let new = !self.has_zero;
            self.has_zero = true;
            self.len += usize::from(new);
            return new;
        }
        if self.probe(key).is_ok() {
            return false;
        }
        self.make_room();
        match self.probe(key) {
            Ok(_) => false,
            Err(Some(empty)) => {
                self.slots[empty] = key;
                self.len += 1;
                true
            }
            Err(None) => true,
        }
    }

    /// Remove `key`; false if it was not there.
    fn remove(&mut self, key: u64) -> bool {
        if key == 0 {
            let had = self.has_zero;
            self.has_zero = false;
            self.len -= usize::from(had);
            return had;
        }
        let Ok(mut hole) = self.probe(key) else {
            return false;
        };
        // Close the gap: each key after the hole in the same run moves
        // back into it when the hole lies between the key's home slot and
        // where it sits, so every key stays reachable from its home.
        let mut j = hole;
        // (At most a lap: the table always has an empty slot.)
        for _ in 0..self.mask {
            j = (j + 1) & self.mask;
            let k = self.slots[j];
            if k == 0 {
                break;
            }
            let home = self.home(k);
            if (j.wrapping_sub(home) & self.mask) >= (j.wrapping_sub(hole) & self.mask) {
                self.slots[hole] = k;
                hole = j;
            }
        }
        self.slots[hole] = 0;
        self.len -= 1;
        true
    }

    #[cfg(test)]
    fn contains(&self, key: u64) -> bool {
        if key == 0 {
            return self.has_zero;
        }
        self.probe(key).is_ok()
    }
}

/// A fingerprint and when it expires (seconds since the set's epoch),
/// packed: 12 bytes instead of 16 for each id of the window.
#[derive(Clone, Copy)]
#[repr(C, packed(4))]
struct RingEntry {
    key: u64,
    expires: u32,
}

pub struct LocalSet {
    window: Duration,
    max_entries: usize,
    epoch: Instant,
    set: KeyTable,
    ring: VecDeque<RingEntry>,
    /// Keys the fingerprints.
    fingerprint: RandomState,
}

impl LocalSet {
    pub fn new(window: Duration, max_entries: usize) -> LocalSet {
        let max_entries = max_entries.max(1);
        LocalSet {
            window,
            max_entries,
            epoch: Instant::now(),
            // The set holds one id over the bound until the oldest leaves.
            set: KeyTable::with_max_len(max_entries + 1),
            // Grows with the window, as the set does: a ring allocated for
            // the bound would have its head walk through all of it.
            ring: VecDeque::new(),
            fingerprint: RandomState::new(),
        }
    }

    fn fingerprint(&self, key: KeyHash) -> u64 {
        self.fingerprint.hash_one(key)
    }

    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Record `key` seen at `now`; whether it was already in the window.
    pub fn check_and_insert(&mut self, key: KeyHash, now: Instant) -> Seen {
        let key = self.fingerprint(key);
        let now_s = now.saturating_duration_since(self.epoch).as_secs() as u32;
        while let Some(&RingEntry { key: k, expires }) = self.ring.front() {
            if expires > now_s {
                break;
            }
            self.ring.pop_front();
            self.set.remove(k);
        }
        // One probe for "seen?" and "insert": the set is tens of megabytes,
        // and each probe is a cache miss.
        if !self.set.insert(key) {
            return Seen::Duplicate;
        }
        if self.ring.len() >= self.max_entries
            && let Some(RingEntry { key: old, .. }) = self.ring.pop_front()
        {
            // Full: the oldest id leaves the window early.
            self.set.remove(old);
        }
        let expires = now_s.saturating_add(self.window.as_secs().max(1) as u32);
        self.ring.push_back(RingEntry { key, expires });
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

    /// A full set that keeps taking new ids (each one over the bound
    /// until the oldest leaves) stays exact, whatever the bound, including
    /// bounds that fill the table to its limit; every id it still holds is
    /// found, and the ones it let go are not.
    #[test]
    fn a_full_set_stays_exact() {
        for n in [
            1, 3, 7, 14, 28, 100, 917, 1791, 1792, 1800, 3071, 3072, 3583,
        ] {
            let mut s = LocalSet::new(Duration::from_secs(3600), n);
            let slots = s.set.max_slots;
            assert!(4 * (n + 1) <= 3 * slots, "bound {n}: at most 3/4 full");
            let t0 = s.epoch;
            let key = |i: u64| {
                let mut k = [0u8; 16];
                k[..8].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
                k
            };
            let total = 200 * n as u64 + 1000;
            for i in 0..total {
                assert_eq!(
                    s.check_and_insert(key(i), t0),
                    Seen::New,
                    "bound {n}, id {i}"
                );
                assert!(s.len() <= n);
                assert!(4 * s.set.len() <= 3 * s.set.slots());
            }
            assert!(s.set.slots() <= slots);
            for i in total - n as u64..total {
                assert!(
                    s.set.contains(s.fingerprint(key(i))),
                    "bound {n}: id {i} lost"
                );
            }
            for i in total - 3 * n as u64..total - n as u64 {
                assert!(
                    !s.set.contains(s.fingerprint(key(i))),
                    "bound {n}: id {i} kept"
                );
            }
            let last = total - 1;
            assert_eq!(s.check_and_insert(key(last), t0), Seen::Duplicate);
            assert_eq!(s.check_and_insert(key(last - n as u64), t0), Seen::New);
        }
    }

    /// Ids that all land in the same few slots (a client choosing ids
    /// cannot do this, the hash key being secret; the test can, by using
    /// a tiny table) and the all-zero id, through inserts and removals in
    /// every order: the table agrees with std's set throughout.
    #[test]
    fn table_agrees_with_a_hash_set() {
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};
        let mut runner = TestRunner::new(Config::with_cases(512));
        let op = (any::<bool>(), 0u64..24);
        runner
            .run(&proptest::collection::vec(op, 0..300), |ops| {
                let mut table = KeyTable::with_max_len(12);
                let mut model = std::collections::HashSet::new();
                for (insert, key) in ops {
                    if insert && (model.len() < 12 || model.contains(&key)) {
                        prop_assert_eq!(table.insert(key), model.insert(key));
                    } else if !insert {
                        prop_assert_eq!(table.remove(key), model.remove(&key));
                    }
                    prop_assert_eq!(table.len(), model.len());
                    for k in 0u64..24 {
                        prop_assert_eq!(table.contains(k), model.contains(&k), "key {}", k);
                    }
                }
                Ok(())
            })
            .unwrap();
    }

    /// The table starts at a few pages and doubles as the window fills,
    /// rehashing every key it holds; it stops at the bound's size.
    #[test]
    fn the_table_grows_with_the_window_and_keeps_every_key() {
        let mut s = LocalSet::new(Duration::from_secs(60), 1_000_000);
        assert_eq!(s.set.slots(), KeyTable::FIRST_SLOTS);
        let t0 = s.epoch;
        let key = |i: u64| {
            let mut k = [0u8; 16];
            k[8..].copy_from_slice(&i.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
            k
        };
        for i in 0..10_000 {
            assert_eq!(s.check_and_insert(key(i), t0), Seen::New, "id {i}");
        }
        // 10,000 keys at most three quarters full: 16,384 slots, not 2²¹.
        assert_eq!(s.set.slots(), 16_384);
        for i in 0..10_000 {
            assert_eq!(s.check_and_insert(key(i), t0), Seen::Duplicate, "id {i}");
        }
        let mut table = KeyTable::with_max_len(3000);
        assert_eq!(table.max_slots, 4096);
        for k in 0..3000u64 {
            assert!(table.insert(k.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        }
        assert_eq!(table.slots(), 4096);
        for k in (0..3000u64).step_by(2) {
            assert!(table.remove(k.wrapping_mul(0x2545_f491_4f6c_dd1d)));
        }
        for k in 0..3000u64 {
            assert_eq!(
                table.contains(k.wrapping_mul(0x2545_f491_4f6c_dd1d)),
                k % 2 == 1
            );
        }
    }

    #[test]
    fn keys_from_hex_and_other_ids() {
        assert_eq!(key_of("000102030405060708090a0b0c0d0e0f")[15], 15);
        assert_ne!(key_of("abc"), key_of("abd"));
    }

    /// Batches through the pipeline's stage keep the window exact.
    #[tokio::test]
    async fn batches_keep_the_last_ids() {
        let n = 100;
        let mut d = Dedupe::local(Duration::from_secs(3600), n);
        let ids: Vec<String> = (0..20_000u64).map(|i| format!("id-{i}")).collect();
        for batch in ids.chunks(37) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            let out = d.check(&refs).await;
            assert!(out.seen.iter().all(|s| *s == Seen::New));
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
