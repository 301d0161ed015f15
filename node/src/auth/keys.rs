//! The keys that sign and verify access tokens: an HS256 secret (configured,
//! or generated once into the data directory for a single node), or PEM
//! files for RS256 and EdDSA.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::config::{Algorithm, AuthConfig};
use super::error::AuthError;
use super::secrets::random_bytes;

/// Name of the file in the data directory that keeps the generated HS256
/// development secret.
pub const DEV_SECRET_FILE: &str = "jwt_secret";
/// HS256 secrets shorter than this are guessable offline from one token.
pub(super) const MIN_SECRET_BYTES: usize = 32;

/// A verifying key and, when the node issues tokens, a signing key.
pub(super) type KeyPair = (jsonwebtoken::DecodingKey, Option<jsonwebtoken::EncodingKey>);

pub(super) fn hmac_keys(cfg: &AuthConfig, data_dir: &Path) -> Result<KeyPair, AuthError> {
    if cfg.public_key_file.is_some() || cfg.private_key_file.is_some() {
        return Err(AuthError::Config(
            "public_key_file and private_key_file are for RS256 and EdDSA; HS256 uses jwt_secret"
                .into(),
        ));
    }
    let secret = match &cfg.jwt_secret {
        Some(secret) if secret.is_empty() => {
            return Err(AuthError::Config("jwt_secret must not be empty".into()))
        }
        Some(secret) => {
            if secret.len() < MIN_SECRET_BYTES {
                tracing::warn!(
                    "auth.jwt_secret is shorter than {MIN_SECRET_BYTES} bytes: \
                     tokens signed with it can be brute-forced"
                );
            }
            secret.as_bytes().to_vec()
        }
        None => load_or_create_dev_secret(data_dir)?,
    };
    Ok((
        jsonwebtoken::DecodingKey::from_secret(&secret),
        Some(jsonwebtoken::EncodingKey::from_secret(&secret)),
    ))
}

pub(super) fn pem_keys(cfg: &AuthConfig) -> Result<KeyPair, AuthError> {
    let alg = cfg.algorithm;
    if cfg.jwt_secret.is_some() {
        return Err(AuthError::Config(format!(
            "jwt_secret is for HS256; {} uses public_key_file and private_key_file",
            alg.name()
        )));
    }
    let public_path = cfg
        .public_key_file
        .as_ref()
        .ok_or_else(|| AuthError::Config(format!("{} needs public_key_file", alg.name())))?;
    let pem = read_key_file(public_path)?;
    let decoding = match alg {
        Algorithm::RS256 => jsonwebtoken::DecodingKey::from_rsa_pem(&pem),
        _ => jsonwebtoken::DecodingKey::from_ed_pem(&pem),
    }
    .map_err(|e| bad_key(public_path, alg, "public", &e))?;
    let encoding = match &cfg.private_key_file {
        None => None,
        Some(private_path) => {
            let pem = read_key_file(private_path)?;
            let key = match alg {
                Algorithm::RS256 => jsonwebtoken::EncodingKey::from_rsa_pem(&pem),
                _ => jsonwebtoken::EncodingKey::from_ed_pem(&pem),
            }
            .map_err(|e| bad_key(private_path, alg, "private", &e))?;
            Some(key)
        }
    };
    Ok((decoding, encoding))
}

fn read_key_file(path: &Path) -> Result<Vec<u8>, AuthError> {
    fs::read(path).map_err(|e| AuthError::Config(format!("cannot read {}: {e}", path.display())))
}

fn bad_key(path: &Path, alg: Algorithm, kind: &str, e: &jsonwebtoken::errors::Error) -> AuthError {
    AuthError::Config(format!(
        "{} is not a PEM {} {kind} key: {e}",
        path.display(),
        alg.name()
    ))
}

/// A new random HS256 secret, hex.
pub(crate) fn new_secret() -> String {
    hex::encode(random_bytes::<MIN_SECRET_BYTES>())
}

/// Reads the development secret, creating it on first start.
fn load_or_create_dev_secret(data_dir: &Path) -> Result<Vec<u8>, AuthError> {
    let path = data_dir.join(DEV_SECRET_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => return decode_dev_secret(&path, &text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(AuthError::Config(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    }
    let io_err = |what: &str, p: &Path, e: io::Error| {
        AuthError::Config(format!("cannot {what} {}: {e}", p.display()))
    };
    fs::create_dir_all(data_dir).map_err(|e| io_err("create", data_dir, e))?;
    let secret = random_bytes::<MIN_SECRET_BYTES>();
    // Written whole under a temporary name, then linked into place: a crash
    // never leaves a truncated secret, and of two processes starting on one
    // directory the second finds the first's secret instead of replacing it.
    let tmp = data_dir.join(format!(
        ".{DEV_SECRET_FILE}.{}.tmp",
        hex::encode(random_bytes::<8>())
    ));
    write_private(&tmp, hex::encode(secret).as_bytes()).map_err(|e| io_err("write", &tmp, e))?;
    let linked = fs::hard_link(&tmp, &path);
    // Best effort: a leftover temporary file is harmless.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Best effort as well: losing the link in a machine crash only
            // means a new secret (and new logins) on the next start.
            if let Ok(dir) = fs::File::open(data_dir) {
                let _ = dir.sync_all();
            }
            tracing::warn!(
                path = %path.display(),
                "generated a development JWT secret; set auth.jwt_secret to the same \
                 value on every node of a cluster"
            );
            Ok(secret.to_vec())
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let text = fs::read_to_string(&path).map_err(|e| io_err("read", &path, e))?;
            decode_dev_secret(&path, &text)
        }
        Err(e) => Err(io_err("create", &path, e)),
    }
}

fn decode_dev_secret(path: &Path, text: &str) -> Result<Vec<u8>, AuthError> {
    match hex::decode(text.trim()) {
        Ok(secret) if secret.len() >= MIN_SECRET_BYTES => Ok(secret),
        _ => Err(AuthError::Config(format!(
            "{} is not a hex secret of at least {MIN_SECRET_BYTES} bytes; delete it to \
             generate a new one (every issued token then becomes invalid)",
            path.display()
        ))),
    }
}

/// Creates `path` readable by the owner only, since it holds a secret.
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
