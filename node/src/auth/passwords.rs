//! Password hashing on a few dedicated threads, with a bounded queue.
//!
//! argon2id as configured here takes 19 MiB and tens of milliseconds per
//! hash. On the blocking pool, with nothing bounding how many run at once,
//! a burst of logins (for accounts that do not even exist: those are hashed
//! too, so that timing does not tell which exist) ran hundreds of hashes at
//! once, and the allocator kept each thread's 19 MiB afterwards: gigabytes.
//! Here at most `threads` hashes run at once, each on its own long-lived
//! thread that computes argon2 in a block of memory it allocated once and
//! reuses hash after hash (a fresh 19 MiB allocation per hash, freed into
//! whichever allocator arena the thread happened to use, is what kept the
//! gigabytes), so the memory they take is `threads` times 19 MiB, for good
//! and never more; at most `queue` more wait, and past that a request is
//! refused at once ([`AuthError::Busy`], an HTTP 503 with `Retry-After`).

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use tokio::sync::oneshot;

use super::error::AuthError;

/// An argon2id hash (of a password nobody uses) with the crate's default
/// parameters. Logins of unknown users are verified against it so that they
/// take as long as logins of known users and do not reveal which names exist.
pub(super) const DUMMY_PHC: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$TQrf3tcw9fDgjOdV9ZNKwQ$EsIBhzCcT3fIlFujIhkM65q7YdnKM7Y0fL6cJaK2ydw";

enum Job {
    Hash {
        password: String,
        answer: oneshot::Sender<Result<String, AuthError>>,
    },
    Verify {
        password: String,
        stored: Option<String>,
        answer: oneshot::Sender<Result<bool, AuthError>>,
    },
}

/// The hashing threads and their queue. The threads end when this is
/// dropped.
pub(crate) struct Passwords {
    jobs: SyncSender<Job>,
}

impl Passwords {
    /// `threads` hashing threads (at least one), `queue` requests waiting.
    pub(crate) fn start(threads: usize, queue: usize) -> Result<Self, AuthError> {
        let (jobs, rx) = sync_channel(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-{i}"))
                .spawn(move || work(&rx))
                .map_err(|e| AuthError::Config(format!("cannot start a hashing thread: {e}")))?;
        }
        Ok(Passwords { jobs })
    }

    /// The PHC string of `password`, salted.
    pub(crate) async fn hash(&self, password: String) -> Result<String, AuthError> {
        let (answer, rx) = oneshot::channel();
        self.submit(Job::Hash { password, answer })?;
        rx.await
            .map_err(|_| AuthError::Internal("the hashing thread stopped".into()))?
    }

    /// Whether `password` matches `stored`. Without a stored hash it still
    /// verifies against a dummy hash, spending the same time, and answers no.
    pub(crate) async fn verify(
        &self,
        password: String,
        stored: Option<String>,
    ) -> Result<bool, AuthError> {
        let (answer, rx) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            stored,
            answer,
        })?;
        rx.await
            .map_err(|_| AuthError::Internal("the hashing thread stopped".into()))?
    }

    fn submit(&self, job: Job) -> Result<(), AuthError> {
        self.jobs.try_send(job).map_err(|e| match e {
            TrySendError::Full(_) => AuthError::Busy,
            TrySendError::Disconnected(_) => AuthError::Internal("no hashing thread".into()),
        })
    }
}

/// The most memory a stored hash may ask for: a hash made with other
/// parameters (an import, a later default) still verifies, within reason.
const MAX_BLOCKS: usize = 256 * 1024;

/// Salt bytes of a new hash (the PHC recommendation).
const SALT_BYTES: usize = 16;

/// Hash bytes of a new hash (argon2's default).
const OUTPUT_BYTES: usize = 32;

fn work(jobs: &Mutex<Receiver<Job>>) {
    // This thread's argon2 memory: allocated at its first hash, reused.
    let mut memory: Vec<Block> = Vec::new();
    loop {
        // The lock is held only while waiting: one thread takes the next
        // job, the others queue behind it for the one after.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match job {
            Ok(Job::Hash { password, answer }) => {
                let _ = answer.send(hash(&mut memory, &password));
            }
            Ok(Job::Verify {
                password,
                stored,
                answer,
            }) => {
                let _ = answer.send(verify(&mut memory, &password, stored.as_deref()));
            }
            Err(_) => return,
        }
    }
}

/// argon2 of `password` and `salt` into `out`, in `memory`.
fn compute(
    memory: &mut Vec<Block>,
    argon: &Argon2<'_>,
    password: &str,
    salt: &[u8],
    out: &mut [u8],
) -> Result<(), AuthError> {
    let blocks = argon.params().block_count();
    if blocks > MAX_BLOCKS {
        return Err(AuthError::Internal(format!(
            "a stored password hash asks for {blocks} KiB of memory"
        )));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    argon
        .hash_password_into_with_memory(password.as_bytes(), salt, out, &mut memory[..blocks])
        .map_err(|e| AuthError::Internal(format!("password hashing: {e}")))
}

/// A password hash that cannot be made or read: never the client's fault.
fn bad(e: impl std::fmt::Display) -> AuthError {
    AuthError::Internal(format!("password hash: {e}"))
}

/// The PHC string of `password`, on the calling thread: for a command run
/// once (an operator making an account), not for a serving node.
pub(crate) fn hash_once(password: &str) -> Result<String, AuthError> {
    hash(&mut Vec::new(), password)
}

fn hash(memory: &mut Vec<Block>, password: &str) -> Result<String, AuthError> {
    let mut salt = [0u8; SALT_BYTES];
    rand::fill(&mut salt[..]);
    let argon = Argon2::default();
    let mut out = [0u8; OUTPUT_BYTES];
    compute(memory, &argon, password, &salt, &mut out)?;
    let phc = PasswordHash {
        algorithm: Algorithm::default().ident(),
        version: Some(Version::default().into()),
        params: ParamsString::try_from(argon.params()).map_err(bad)?,
        salt: Some(Salt::new(&salt).map_err(bad)?),
        hash: Some(Output::new(&out).map_err(bad)?),
    };
    Ok(phc.to_string())
}

fn verify(
    memory: &mut Vec<Block>,
    password: &str,
    stored: Option<&str>,
) -> Result<bool, AuthError> {
    let phc = PasswordHash::new(stored.unwrap_or(DUMMY_PHC)).map_err(bad)?;
    let (Some(salt), Some(expected)) = (&phc.salt, &phc.hash) else {
        return Err(AuthError::Internal(
            "stored password hash has no salt or hash".into(),
        ));
    };
    let algorithm = Algorithm::try_from(phc.algorithm.as_str()).map_err(bad)?;
    let version = match phc.version {
        Some(v) => Version::try_from(v).map_err(bad)?,
        None => Version::default(),
    };
    let params = Params::try_from(&phc).map_err(bad)?;
    let argon = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    compute(memory, &argon, password, salt, &mut out)?;
    // `Output`'s equality takes the same time wherever the bytes differ.
    let matches = Output::new(&out).map_err(bad)? == *expected;
    Ok(matches && stored.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_a_full_queue_is_refused_at_once() {
        let p = Passwords::start(1, 1).expect("threads");
        let phc = p.hash("correct horse".into()).await.expect("hash");
        // The standard library verifies what the pooled threads made.
        let parsed = argon2::PasswordHash::new(&phc).unwrap();
        argon2::PasswordVerifier::verify_password(
            &argon2::Argon2::default(),
            b"correct horse",
            &parsed,
        )
        .expect("a standard argon2id PHC string");
        assert!(p
            .verify("correct horse".into(), Some(phc.clone()))
            .await
            .unwrap());
        assert!(!p.verify("wrong".into(), Some(phc)).await.unwrap());
        assert!(!p.verify("any".into(), None).await.unwrap(), "no account");

        // One running, one waiting: the rest are refused without waiting.
        let many: Vec<_> = (0..8).map(|_| p.hash("x".repeat(8))).collect();
        let results = futures_util::future::join_all(many).await;
        let busy = results
            .iter()
            .filter(|r| matches!(r, Err(AuthError::Busy)))
            .count();
        assert!(busy >= 1, "a queue of one took eight: {results:?}");
        assert!(results.iter().any(|r| r.is_ok()));
    }
}
