//! The cluster's VAPID key (RFC 8292): push services accept a push only
//! with a JWT signed by the key a browser subscribed with, so every node of
//! a cluster signs with the one key, kept like the JWT secret.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::EncodePrivateKey;
use serde::Serialize;

/// A VAPID key that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("VAPID key: {0}")]
pub struct VapidError(String);

/// The key, its published public half and the JWT signer.
pub struct Vapid {
    public: String,
    signer: EncodingKey,
    subject: String,
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    exp: u64,
    sub: &'a str,
}

/// A fresh private key, as the text [`Vapid::from_secret`] reads (base64url
/// of the 32-byte scalar).
pub fn new_secret() -> String {
    let key = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    URL_SAFE_NO_PAD.encode(key.to_bytes())
}

impl Vapid {
    /// The key kept as `secret` ([`new_secret`]), signing for `subject` (a
    /// `mailto:` or `https:` contact the push services may use).
    pub fn from_secret(secret: &str, subject: &str) -> Result<Vapid, VapidError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(secret.trim())
            .map_err(|e| VapidError(format!("not base64url: {e}")))?;
        let key = p256::SecretKey::from_slice(&bytes)
            .map_err(|_| VapidError("not a P-256 private key".into()))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| VapidError(format!("cannot encode: {e}")))?;
        let public = key.public_key().to_encoded_point(false);
        Ok(Vapid {
            public: URL_SAFE_NO_PAD.encode(public.as_bytes()),
            signer: EncodingKey::from_ec_der(der.as_bytes()),
            subject: subject.to_owned(),
        })
    }

    /// The public key as browsers take it (`applicationServerKey`):
    /// base64url of the uncompressed point.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The `Authorization` header for a push to `endpoint`'s origin, valid
    /// until `exp` (Unix seconds; at most 24 h ahead, per RFC 8292).
    pub fn authorization(&self, audience: &str, exp: u64) -> Result<String, VapidError> {
        let claims = Claims {
            aud: audience,
            exp,
            sub: &self.subject,
        };
        let mut header = Header::new(Algorithm::ES256);
        header.typ = Some("JWT".into());
        let jwt = jsonwebtoken::encode(&header, &claims, &self.signer)
            .map_err(|e| VapidError(format!("cannot sign: {e}")))?;
        Ok(format!("vapid t={jwt}, k={}", self.public))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_key_signs_jwts_its_public_key_verifies() {
        let secret = new_secret();
        let vapid = Vapid::from_secret(&secret, "mailto:ops@example.com").unwrap();
        let again = Vapid::from_secret(&secret, "mailto:ops@example.com").unwrap();
        assert_eq!(vapid.public_key(), again.public_key());
        let public = URL_SAFE_NO_PAD.decode(vapid.public_key()).unwrap();
        assert_eq!(public.len(), 65);
        assert_eq!(public[0], 4, "uncompressed point");
        let header = vapid
            .authorization("https://push.example.net", 4_000_000_000)
            .unwrap();
        let jwt = header
            .strip_prefix("vapid t=")
            .and_then(|r| r.split(", k=").next())
            .unwrap();
        let point = p256::PublicKey::from_sec1_bytes(&public).unwrap();
        let pem =
            p256::pkcs8::EncodePublicKey::to_public_key_pem(&point, p256::pkcs8::LineEnding::LF)
                .unwrap();
        let key = jsonwebtoken::DecodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let mut validation = jsonwebtoken::Validation::new(Algorithm::ES256);
        validation.set_audience(&["https://push.example.net"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &validation).unwrap();
        assert_eq!(data.claims["sub"], "mailto:ops@example.com");
        assert!(Vapid::from_secret("not a key", "mailto:x@y").is_err());
    }
}
