//! Links that open a file without a token, for `<img src>` and downloads:
//! `exp` (Unix seconds) and `sig`, the HMAC-SHA256 of the id and `exp`
//! under a key every node shares. `exp` is the end of the hour after the
//! current one: a link lives one to two hours, and every showing of a
//! message within one hour carries the same link, which browsers cache.

use hmac::{Hmac, Mac};
use sha2::Sha256;

const HOUR_SECS: u64 = 3600;

/// Signs and checks links.
pub struct Links {
    key: Vec<u8>,
}

impl Links {
    /// Links signed with `key`.
    pub fn new(key: &[u8]) -> Links {
        Links { key: key.to_vec() }
    }

    fn mac(&self, id: &str, exp: u64) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(b"media:");
        mac.update(id.as_bytes());
        mac.update(b":");
        mac.update(exp.to_string().as_bytes());
        mac
    }

    /// The query (`exp=..&sig=..`) of a link to `id` valid at least an
    /// hour after `now_ms`.
    pub fn query(&self, id: &str, now_ms: u64) -> String {
        let now = now_ms / 1000;
        let exp = (now / HOUR_SECS + 2) * HOUR_SECS;
        let sig = hex::encode(self.mac(id, exp).finalize().into_bytes());
        format!("exp={exp}&sig={sig}")
    }

    /// Whether `sig` signs `id` until `exp`, and `exp` has not passed.
    pub fn check(&self, id: &str, exp: u64, sig: &str, now_ms: u64) -> bool {
        if exp.saturating_mul(1000) <= now_ms {
            return false;
        }
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.mac(id, exp).verify_slice(&sig).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(query: &str) -> (u64, String) {
        let (exp, sig) = query.split_once('&').unwrap();
        (
            exp.strip_prefix("exp=").unwrap().parse().unwrap(),
            sig.strip_prefix("sig=").unwrap().to_owned(),
        )
    }

    #[test]
    fn links_open_their_file_until_they_expire() {
        let links = Links::new(b"key");
        let now = 1_800_000_123_456;
        let (exp, sig) = parts(&links.query("abc", now));
        assert!(exp * 1000 >= now + 3_600_000, "at least an hour");
        assert!(exp * 1000 <= now + 2 * 3_600_000);
        assert!(links.check("abc", exp, &sig, now));
        assert!(links.check("abc", exp, &sig, exp * 1000 - 1));
        assert!(!links.check("abc", exp, &sig, exp * 1000), "expired");
        assert!(!links.check("abd", exp, &sig, now), "another file");
        assert!(!links.check("abc", exp + 3600, &sig, now), "a later expiry");
        let mut bad = sig.clone();
        bad.replace_range(0..1, if &sig[0..1] == "0" { "1" } else { "0" });
        assert!(!links.check("abc", exp, &bad, now));
        assert!(!links.check("abc", exp, "zz", now));
        assert!(
            !Links::new(b"other").check("abc", exp, &sig, now),
            "another key"
        );
        // The same link all through the hour.
        let hour_start = now / 3_600_000 * 3_600_000;
        assert_eq!(
            links.query("abc", hour_start),
            links.query("abc", hour_start + 3_599_999)
        );
        assert_ne!(
            links.query("abc", hour_start),
            links.query("abc", hour_start + 3_600_000)
        );
    }
}
