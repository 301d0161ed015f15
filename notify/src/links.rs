//! Links mailed to people: to confirm an address, to open the app, and to
//! stop digests without signing in (signed, so that nobody can turn off
//! another person's mail by guessing a URL).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Builds and checks the links.
pub struct Links {
    base: String,
    key: Vec<u8>,
}

impl Links {
    /// Links under `public_url` (the web app's address), unsubscribe links
    /// signed with `key`.
    pub fn new(public_url: &str, key: &[u8]) -> Links {
        Links {
            base: public_url.trim_end_matches('/').to_owned(),
            key: key.to_vec(),
        }
    }

    /// The app.
    pub fn app(&self) -> String {
        format!("{}/", self.base)
    }

    /// Where a verification token is opened.
    pub fn verify_email(&self, token: &str) -> String {
        format!("{}/verify-email?token={token}", self.base)
    }

    /// Where a password reset token is opened.
    pub fn reset_password(&self, token: &str) -> String {
        format!("{}/reset-password?token={token}", self.base)
    }

    /// The signed link that turns `user`'s digests off.
    pub fn unsubscribe(&self, user: &str) -> String {
        format!(
            "{}/v1/notifications/unsubscribe?user={user}&sig={}",
            self.base,
            self.sign(user)
        )
    }

    /// Whether `sig` is the signature of `user`'s unsubscribe link.
    pub fn check_unsubscribe(&self, user: &str, sig: &str) -> bool {
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.mac(user).verify_slice(&sig).is_ok()
    }

    fn mac(&self, user: &str) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes a key of any length");
        mac.update(b"unsubscribe:");
        mac.update(user.as_bytes());
        mac
    }

    fn sign(&self, user: &str) -> String {
        hex::encode(self.mac(user).finalize().into_bytes())
    }
}

/// A fresh token to mail (256 random bits, hex), and the hash the store
/// keeps of it.
pub fn new_token() -> (String, String) {
    let token = hex::encode(rand::random::<[u8; 32]>());
    let hash = hash_token(&token);
    (token, hash)
}

/// What the store keeps of a mailed token: its SHA-256, hex.
pub fn hash_token(token: &str) -> String {
    use sha2::Digest;
    hex::encode(Sha256::digest(token.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsubscribe_links_are_signed_per_user() {
        let links = Links::new("https://chat.example.com/", b"secret");
        let link = links.unsubscribe("bob");
        assert!(
            link.starts_with("https://chat.example.com/v1/notifications/unsubscribe?user=bob&sig=")
        );
        let sig = link.rsplit("sig=").next().unwrap();
        assert!(links.check_unsubscribe("bob", sig));
        assert!(!links.check_unsubscribe("ann", sig));
        assert!(!links.check_unsubscribe("bob", "00"));
        assert!(!Links::new("https://x", b"other").check_unsubscribe("bob", sig));
    }
}
