//! What names a session, a seat and a pool.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// A session cookie, hashed with its product so the raw value is never stored or logged.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionKey(pub [u8; 16]);

impl SessionKey {
    pub fn new(product: &str, cookie_value: &str) -> Self {
        let mut h = Sha256::new();
        h.update(product.as_bytes());
        h.update([0u8]);
        h.update(cookie_value.as_bytes());
        let d = h.finalize();
        let mut k = [0u8; 16];
        k.copy_from_slice(&d[..16]);
        SessionKey(k)
    }

    pub fn hex(&self) -> String {
        hex16(&self.0)
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        from_hex16(s).map(SessionKey)
    }
}

/// A 16-byte key as the 32 lowercase hex digits the stores keep it as.
pub(super) fn hex16(k: &[u8; 16]) -> String {
    hex::encode(k)
}

/// The key `hex16` wrote; `None` for anything else (length, or a digit that is not hex).
pub(super) fn from_hex16(s: &str) -> Option<[u8; 16]> {
    let mut k = [0u8; 16];
    hex::decode_to_slice(s, &mut k).ok()?;
    Some(k)
}

impl fmt::Debug for SessionKey {
    /// Only a short prefix: enough to correlate log lines, useless to hijack a session.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sk:{:02x}{:02x}{:02x}{:02x}",
            self.0[0], self.0[1], self.0[2], self.0[3]
        )
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeatId(pub u64);

impl SeatId {
    pub fn random() -> Self {
        SeatId(rand::random::<u64>() | 1)
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "seat:{self}")
    }
}

impl FromStr for SeatId {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.is_empty() || s.len() > 16 {
            return Err(());
        }
        u64::from_str_radix(s, 16).map(SeatId).map_err(|_| ())
    }
}

impl Serialize for SeatId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for SeatId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("bad seat id `{s}`")))
    }
}

#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, PartialOrd, Ord)]
pub struct PoolKey {
    pub product: String,
    pub pool: String,
}

impl PoolKey {
    pub fn new(product: &str, pool: &str) -> Self {
        PoolKey {
            product: product.into(),
            pool: pool.into(),
        }
    }
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.product, self.pool)
    }
}
