//! The two secret-handling primitives every module shares: HMAC-SHA256 and constant-time
//! comparison, both from RustCrypto crates. A hand-written HMAC and a fold over XORs used to
//! live here twice; the optimiser may turn such a fold into an early exit, `subtle` promises
//! not to. Imports nothing of the crate, so audit, admin and policy can all use it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// HMAC-SHA256 (RFC 2104) of `msg` under `key`.
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    // Any key length is valid for HMAC: `new_from_slice` only fails for fixed-size MACs.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// Whether `mac` is HMAC-SHA256 of `msg` under `key`, in constant time.
pub fn hmac_verify(key: &[u8], msg: &[u8], mac: &[u8]) -> bool {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(msg);
    m.verify_slice(mac).is_ok()
}

/// Equality of two secrets without an early exit: timing says nothing about how much matched
/// (a length difference is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// OWASP's floor for argon2id (19 MiB, 2 passes, 1 lane); `seatgate hash-password` makes
/// exactly this.
pub const ARGON2_MIN_MEMORY_KIB: u32 = 19 * 1024;
pub const ARGON2_MIN_PASSES: u32 = 2;

/// Whether a PHC string is an argon2id hash at least as strong as the floor: anything else
/// (argon2i/d, bcrypt, a weakened cost) is refused at config load, never accepted at login.
pub fn check_password_hash(phc: &str) -> Result<(), String> {
    let h = argon2::PasswordHash::new(phc).map_err(|_| {
        "not a PHC password hash (make one with `seatgate hash-password`)".to_string()
    })?;
    if h.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "`{}` hash: only argon2id is accepted (make one with `seatgate hash-password`)",
            h.algorithm
        ));
    }
    let p = argon2::Params::try_from(&h).map_err(|e| format!("argon2id parameters: {e}"))?;
    if p.m_cost() < ARGON2_MIN_MEMORY_KIB || p.t_cost() < ARGON2_MIN_PASSES {
        return Err(format!(
            "argon2id parameters too weak (m={} KiB, t={}): at least m={ARGON2_MIN_MEMORY_KIB}, t={ARGON2_MIN_PASSES}",
            p.m_cost(),
            p.t_cost()
        ));
    }
    if h.hash.is_none_or(|o| o.len() < 16) || h.salt.is_none() {
        return Err("argon2id hash without salt or with a short output".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        hex::encode(b)
    }

    #[test]
    fn hmac_matches_rfc4231() {
        assert_eq!(
            hex(&hmac_sha256(&[0x0b; 20], b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        assert_eq!(
            hex(&hmac_sha256(
                &[0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
        let mac = hmac_sha256(b"k", b"m");
        assert!(hmac_verify(b"k", b"m", &mac));
        assert!(!hmac_verify(b"k", b"n", &mac));
        assert!(!hmac_verify(b"k", b"m", &mac[..31]));
    }

    #[test]
    fn password_hashes_are_argon2id_and_strong_enough() {
        let demo = "$argon2id$v=19$m=19456,t=2,p=1$fbgqBNuHaT+62XHbImpBpg$NZb2rJEyaUxwXGh20TbFWW8bYfciISkQzuu4iECG/o8";
        assert_eq!(check_password_hash(demo), Ok(()));
        let weak = "$argon2id$v=19$m=1024,t=1,p=1$fbgqBNuHaT+62XHbImpBpg$NZb2rJEyaUxwXGh20TbFWW8bYfciISkQzuu4iECG/o8";
        assert!(check_password_hash(weak).unwrap_err().contains("too weak"));
        let argon2i = "$argon2i$v=19$m=19456,t=2,p=1$fbgqBNuHaT+62XHbImpBpg$NZb2rJEyaUxwXGh20TbFWW8bYfciISkQzuu4iECG/o8";
        assert!(check_password_hash(argon2i)
            .unwrap_err()
            .contains("only argon2id"));
        assert!(check_password_hash("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(check_password_hash("plaintext").is_err());
    }

    #[test]
    fn constant_time_equality() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"ab", b"abc"));
        assert!(ct_eq(b"", b""));
    }
}
