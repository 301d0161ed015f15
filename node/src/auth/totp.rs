//! The second factor: TOTP codes (RFC 6238: HMAC-SHA1, 6 digits, 30 s
//! steps, the authenticator apps' defaults) and recovery codes.
//!
//! A code is taken for the step of now or the one before (a code typed as
//! the step turns), and only for a step later than the last one accepted:
//! each code works once, and no code older than one already used works.
//! Recovery codes are random, shown once, and kept only as hashes; each
//! works once.

use chat_storage::TotpState;
use totp_rs::{Algorithm, Secret, TOTP};

use super::error::AuthError;
use super::secrets::{hash_token, random_bytes, same_secret as same};

/// Seconds per code.
const STEP_SECS: u64 = 30;
const DIGITS: usize = 6;
/// 160 bits: RFC 4226's recommended secret length.
const SECRET_BYTES: usize = 20;
/// Recovery codes given at enrolment.
pub const RECOVERY_CODES: usize = 10;
/// Random bytes of a recovery code (shown as hex, in two groups).
const RECOVERY_BYTES: usize = 5;

fn totp(secret: Vec<u8>, issuer: &str, account: &str) -> Result<TOTP, AuthError> {
    TOTP::new(
        Algorithm::SHA1,
        DIGITS,
        0,
        STEP_SECS,
        secret,
        Some(issuer.to_owned()),
        account.to_owned(),
    )
    .map_err(|e| AuthError::Internal(format!("totp: {e:?}")))
}

/// A new pending factor for `account`: its state, and the `otpauth://` URL
/// an authenticator app reads (from a QR code).
pub(super) fn enrol(issuer: &str, account: &str) -> Result<(TotpState, String), AuthError> {
    let secret = random_bytes::<SECRET_BYTES>().to_vec();
    let t = totp(secret, issuer, account)?;
    let state = TotpState {
        secret: t.get_secret_base32(),
        confirmed: false,
        last_step: 0,
        recovery: Vec::new(),
    };
    Ok((state, t.get_url()))
}

/// The step `code` is right for, if it is right now (this step or the one
/// before) and later than the last step used; the caller stores it as
/// `last_step` before the sign-in goes on.
pub(super) fn accept(
    state: &TotpState,
    code: &str,
    now_secs: u64,
) -> Result<Option<u64>, AuthError> {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(None);
    }
    let secret = Secret::Encoded(state.secret.clone())
        .to_bytes()
        .map_err(|e| AuthError::Internal(format!("stored totp secret: {e:?}")))?;
    let t = totp(secret, "chat", "user")?;
    let now = now_secs / STEP_SECS;
    for step in [now, now.saturating_sub(1)] {
        if step > state.last_step && same(&t.generate(step * STEP_SECS), code) {
            return Ok(Some(step));
        }
    }
    Ok(None)
}

/// New recovery codes, as shown to the user, and as stored.
pub(super) fn recovery_codes() -> (Vec<String>, Vec<String>) {
    (0..RECOVERY_CODES)
        .map(|_| {
            let hex = hex::encode(random_bytes::<RECOVERY_BYTES>());
            let code = format!("{}-{}", &hex[..5], &hex[5..]);
            let hash = hash_token(&code);
            (code, hash)
        })
        .unzip()
}

/// Uses up `code` if it is one of the recovery codes left.
pub(super) fn take_recovery(state: &mut TotpState, code: &str) -> bool {
    let hash = hash_token(&code.trim().to_ascii_lowercase());
    match state.recovery.iter().position(|h| same(h, &hash)) {
        Some(i) => {
            state.recovery.remove(i);
            true
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_works_in_its_step_and_the_next_once() {
        let (mut state, url) = enrol("chat", "ann").unwrap();
        assert!(url.starts_with("otpauth://totp/chat:ann?"), "{url}");
        assert!(url.contains(&format!("secret={}", state.secret)), "{url}");
        let secret = Secret::Encoded(state.secret.clone()).to_bytes().unwrap();
        let t = totp(secret, "chat", "ann").unwrap();
        let at = 1_000_000 * STEP_SECS + 7;
        let code = t.generate(at);
        assert_eq!(accept(&state, &code, at).unwrap(), Some(1_000_000));
        assert_eq!(
            accept(&state, &code, at + STEP_SECS).unwrap(),
            Some(1_000_000)
        );
        assert_eq!(
            accept(&state, &code, at + 2 * STEP_SECS).unwrap(),
            None,
            "too old"
        );
        state.last_step = 1_000_000;
        assert_eq!(accept(&state, &code, at).unwrap(), None, "used");
        assert_eq!(accept(&state, "12345", at).unwrap(), None);
        assert_eq!(accept(&state, "abcdef", at).unwrap(), None);
    }

    #[test]
    fn each_recovery_code_works_once() {
        let (codes, hashes) = recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODES);
        let mut state = TotpState {
            recovery: hashes,
            ..TotpState::default()
        };
        assert!(take_recovery(&mut state, &codes[3].to_uppercase()));
        assert!(!take_recovery(&mut state, &codes[3]), "once");
        assert!(!take_recovery(&mut state, "00000-00000"));
        assert_eq!(state.recovery.len(), RECOVERY_CODES - 1);
    }
}
