//! The one way a test of this workspace waits for something: poll a
//! condition until it holds, and fail with what was last seen once a
//! deadline passes. Never a bare sleep standing in for a condition (as
//! ractor's `periodic_check` in its `common_test.rs`). Also the one way a
//! test picks a port for a server it starts ([`free_port`]).
//!
//! The deadline is real time, so a test under paused tokio time still ends.
#![deny(missing_docs, unreachable_pub, unsafe_code)]

mod redis_cluster;
pub use redis_cluster::RedisCluster;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long any single expected event may take in a test.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(5);

/// Polls `check` until it answers `Ok`, for at most `deadline`; panics with
/// `what` and the last `Err` after that.
pub async fn eventually_within<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let end = Instant::now() + deadline;
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) if Instant::now() >= end => {
                panic!("{what}: still not true after {deadline:?}: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// [`eventually_within`] the default [`DEADLINE`].
pub async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    eventually_within(what, DEADLINE, check).await
}

/// Waits until `cond` holds, for at most [`DEADLINE`].
pub async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    eventually(what, || {
        let held = cond();
        async move { held.then_some(()).ok_or_else(|| "no".to_string()) }
    })
    .await
}

/// Ports handed out start here and stay below the kernel's ephemeral range
/// (32768 and up on Linux), from which port 0 binds and outgoing
/// connections draw: a port taken that way could be grabbed by any
/// connection between our check and the server binding it (a node once
/// failed to start with "Address already in use").
const PORT_LOW: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;

/// A loopback port that is free now and that this process has not handed
/// out before (tests in one binary run at once; a port released by one
/// must not be picked again by another before its server binds it). The
/// walk starts at a point drawn from the process id, so concurrent test
/// processes start apart.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % PORT_SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..PORT_SPAN {
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % PORT_SPAN;
        let port = (PORT_LOW + n) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {PORT_LOW}..{}", PORT_LOW + PORT_SPAN)
}

/// `len` bytes no compressor shrinks (xorshift from `seed`): uploads and
/// stores must move them as they are.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Every file under `dir`, at any depth (none when it is missing).
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// A decompression bomb: a valid PNG whose header claims `side` x `side`
/// RGB pixels (40,000 makes 4.8 GB decoded) in a few dozen bytes.
pub fn png_bomb(side: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let body = [kind, data].concat();
        png.extend_from_slice(&body);
        png.extend_from_slice(&crc32(&body).to_be_bytes());
    };
    let mut ihdr = side.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    // A zlib stream of one empty stored block.
    chunk(
        b"IDAT",
        &[0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0, 0, 0, 1],
    );
    chunk(b"IEND", &[]);
    png
}

/// A real S3-compatible store for a test (scripts/s3.sh's s3s-fs, which
/// checks signatures): the one the test run names in `S3_ENDPOINT`,
/// `S3_ACCESS_KEY`, `S3_SECRET_KEY` and `S3_BUCKET`, or else one started
/// here on a free port (built first if missing), stopped when dropped.
pub struct S3Server {
    /// `http://127.0.0.1:port`.
    pub endpoint: String,
    /// Credentials it takes.
    pub access_key: String,
    /// Credentials it takes.
    pub secret_key: String,
    /// A bucket that exists.
    pub bucket: String,
    child: Option<std::process::Child>,
    dir: Option<std::path::PathBuf>,
}

impl S3Server {
    /// The run's store, or a fresh one.
    pub fn start() -> S3Server {
        if let (Ok(endpoint), Ok(access_key), Ok(secret_key), Ok(bucket)) = (
            std::env::var("S3_ENDPOINT"),
            std::env::var("S3_ACCESS_KEY"),
            std::env::var("S3_SECRET_KEY"),
            std::env::var("S3_BUCKET"),
        ) {
            return S3Server {
                endpoint,
                access_key,
                secret_key,
                bucket,
                child: None,
                dir: None,
            };
        }
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3.sh");
        let out = std::process::Command::new("bash")
            .arg(&script)
            .arg("binary")
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/s3.sh runs");
        assert!(out.status.success(), "scripts/s3.sh binary failed");
        let binary = String::from_utf8(out.stdout)
            .expect("a path")
            .trim()
            .to_owned();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("chat-s3-{}-{port}", std::process::id()));
        let bucket = "chat-media".to_owned();
        std::fs::create_dir_all(dir.join(&bucket)).expect("the store's directory");
        let (access_key, secret_key) = (
            "test-access".to_owned(),
            "test-secret-0123456789".to_owned(),
        );
        let child = std::process::Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", &access_key, "--secret-key", &secret_key])
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s3s-fs starts");
        let end = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < end, "s3s-fs did not listen on {port}");
            std::thread::sleep(Duration::from_millis(10));
        }
        S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key,
            secret_key,
            bucket,
            child: Some(child),
            dir: Some(dir),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A real OpenSearch for a test (scripts/opensearch.sh: one node from
/// Maven Central's jars on Java 21+): the one the test run names in
/// `OPENSEARCH_URL`, or else one started here (about 10 s, 512 MB of heap),
/// stopped when dropped.
pub struct OpenSearchServer {
    /// `http://127.0.0.1:port`.
    pub url: String,
    dir: Option<std::path::PathBuf>,
}

impl OpenSearchServer {
    /// The run's OpenSearch, or a fresh one.
    pub fn start() -> OpenSearchServer {
        if let Ok(url) = std::env::var("OPENSEARCH_URL") {
            return OpenSearchServer { url, dir: None };
        }
        let dir = std::env::temp_dir().join(format!(
            "chat-opensearch-{}-{}",
            std::process::id(),
            free_port()
        ));
        let out = std::process::Command::new("bash")
            .arg(Self::script())
            .args(["start", "--dir"])
            .arg(&dir)
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("scripts/opensearch.sh runs");
        assert!(out.status.success(), "scripts/opensearch.sh start failed");
        let said = String::from_utf8_lossy(&out.stdout);
        let url = said
            .lines()
            .find_map(|l| l.strip_prefix("OPENSEARCH_URL="))
            .expect("an OPENSEARCH_URL line")
            .to_owned();
        OpenSearchServer {
            url,
            dir: Some(dir),
        }
    }

    fn script() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/opensearch.sh")
    }
}

impl Drop for OpenSearchServer {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::process::Command::new("bash")
                .arg(Self::script())
                .args(["--dir"])
                .arg(dir)
                .arg("stop")
                .status();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_once_the_check_holds() {
        let mut n = 0;
        let got = eventually("third try", || {
            n += 1;
            let n = n;
            async move {
                if n >= 3 {
                    Ok(n)
                } else {
                    Err(format!("try {n}"))
                }
            }
        })
        .await;
        assert_eq!(got, 3);
    }

    #[tokio::test]
    #[should_panic(expected = "never: still not true after")]
    async fn fails_with_the_last_answer_after_the_deadline() {
        eventually_within("never", Duration::from_millis(30), || async {
            Err::<(), _>("nope".to_string())
        })
        .await;
    }

    #[test]
    fn ports_are_below_the_ephemeral_range_and_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| super::free_port()).collect();
        let distinct: std::collections::HashSet<&u16> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len());
        assert!(ports.iter().all(|p| (20_000..32_000).contains(p)));
    }
}
