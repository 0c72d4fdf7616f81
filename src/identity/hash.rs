//! Keyed hashing: every identifier that leaves the process is a keyed blake3
//! hash under a key derived per purpose from the secret, so a hash from one
//! purpose cannot be joined against another, and nothing can be reversed
//! without the secret.

use std::fmt;

/// What a hash is for. Each purpose has its own derived key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Device,
    Session,
    /// `lead_id` and `user_id`: one key for both, so an e-mail used as a
    /// lead id in a form and as a user id in ingest hashes the same.
    Identifier,
    Touchpoint,
    EventId,
    CookieMac,
    /// Identifiers handed to ad platforms that need a stable pseudonymous
    /// client id (GA4 `client_id`).
    PlatformClient,
}

impl Purpose {
    const ALL: [Purpose; 7] = [
        Purpose::Device,
        Purpose::Session,
        Purpose::Identifier,
        Purpose::Touchpoint,
        Purpose::EventId,
        Purpose::CookieMac,
        Purpose::PlatformClient,
    ];

    fn context(self) -> &'static str {
        match self {
            Purpose::Device => "touchgate device",
            Purpose::Session => "touchgate session",
            Purpose::Identifier => "touchgate identifier",
            Purpose::Touchpoint => "touchgate touchpoint",
            Purpose::EventId => "touchgate event id",
            Purpose::CookieMac => "touchgate cookie mac",
            Purpose::PlatformClient => "touchgate platform client",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The per-purpose keys derived from one secret.
#[derive(Clone)]
pub struct Keys {
    keys: [[u8; 32]; 7],
}

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// A hash as it leaves the process: 16 bytes, 32 lowercase hex characters.
pub type HexId = String;

impl Keys {
    pub fn derive(secret: &[u8]) -> Keys {
        let mut keys = [[0u8; 32]; 7];
        for p in Purpose::ALL {
            keys[p.index()] = blake3::derive_key(p.context(), secret);
        }
        Keys { keys }
    }

    fn hasher(&self, purpose: Purpose) -> blake3::Hasher {
        blake3::Hasher::new_keyed(&self.keys[purpose.index()])
    }

    /// Keyed hash of several parts. Each part is length-prefixed so that
    /// ("ab","c") and ("a","bc") differ.
    pub fn hash_parts(&self, purpose: Purpose, parts: &[&[u8]]) -> [u8; 16] {
        let mut h = self.hasher(purpose);
        for part in parts {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    /// Keyed hash of several parts, as 32 lowercase hex characters.
    pub fn hex(&self, purpose: Purpose, parts: &[&[u8]]) -> HexId {
        // A table lookup into a stack buffer and one exact allocation:
        // `hex::encode` goes through a char iterator and grows its String.
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut buf = [0u8; 32];
        for (i, b) in self.hash_parts(purpose, parts).into_iter().enumerate() {
            buf[2 * i] = HEX[usize::from(b >> 4)];
            buf[2 * i + 1] = HEX[usize::from(b & 15)];
        }
        // Only ASCII hex digits were written.
        std::str::from_utf8(&buf)
            .expect("hex digits are ASCII")
            .to_owned()
    }

    /// A full 32-byte MAC (for cookies).
    pub fn mac(&self, data: &[u8]) -> [u8; 32] {
        *self
            .hasher(Purpose::CookieMac)
            .update(data)
            .finalize()
            .as_bytes()
    }

    /// Constant-time check of a MAC.
    pub fn verify_mac(&self, data: &[u8], mac: &[u8]) -> bool {
        use subtle::ConstantTimeEq;
        let expected = self.mac(data);
        mac.len() == expected.len() && bool::from(expected.ct_eq(mac))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_are_separated_and_output_is_32_hex() {
        let k = Keys::derive(b"secret");
        let a = k.hex(Purpose::Device, &[b"x"]);
        let b = k.hex(Purpose::Session, &[b"x"]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(a, Keys::derive(b"secret").hex(Purpose::Device, &[b"x"]));
        assert_ne!(a, Keys::derive(b"other").hex(Purpose::Device, &[b"x"]));
    }

    #[test]
    fn hex_is_the_hex_of_the_hash() {
        let k = Keys::derive(b"s");
        for parts in [&[][..], &[&b"x"[..]][..], &[&b"ab"[..], &b"c"[..]][..]] {
            let h = k.hex(Purpose::Identifier, parts);
            assert_eq!(h, hex::encode(k.hash_parts(Purpose::Identifier, parts)));
        }
    }

    #[test]
    fn parts_are_length_prefixed() {
        let k = Keys::derive(b"s");
        assert_ne!(
            k.hex(Purpose::EventId, &[b"ab", b"c"]),
            k.hex(Purpose::EventId, &[b"a", b"bc"])
        );
    }

    #[test]
    fn mac_verifies_only_exact_input() {
        let k = Keys::derive(b"s");
        let m = k.mac(b"data");
        assert!(k.verify_mac(b"data", &m));
        assert!(!k.verify_mac(b"datb", &m));
        assert!(!k.verify_mac(b"data", &m[..31]));
    }
}
