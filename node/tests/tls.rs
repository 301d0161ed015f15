//! Client TLS on the node's own port (`[listen] tls_cert`, `tls_key`):
//! real `wss://` and `https://` clients that check the chain against the
//! test's own CA; a certificate replaced on disk (or announced with
//! SIGHUP) served to new connections while open ones keep talking; a
//! broken replacement that changes nothing; plain HTTP redirected or
//! refused; a silent connection closed at the header deadline.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::frames::send;
use common::procs::NodeProc;
use common::tls::*;
use common::*;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

const SECRET: &str = "client-tls-secret-0123456789abcdef";

/// The files the node reads, in `dir`.
struct Live {
    cert: PathBuf,
    key: PathBuf,
}

impl Live {
    fn new(dir: &Path) -> Live {
        std::fs::create_dir_all(dir).unwrap();
        Live {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// Puts `cert` and `key` in place the way a renewal does: each written
    /// beside, then renamed over (a reader never sees half a file).
    fn install(&self, cert: &Path, key: &Path) {
        for (from, to) in [(key, &self.key), (cert, &self.cert)] {
            let tmp = to.with_extension("new");
            std::fs::copy(from, &tmp).unwrap();
            std::fs::rename(&tmp, to).unwrap();
        }
    }

    fn env(&self) -> [(&'static str, String); 2] {
        [
            ("CHAT__LISTEN__TLS_CERT", self.cert.display().to_string()),
            ("CHAT__LISTEN__TLS_KEY", self.key.display().to_string()),
        ]
    }
}

/// Two CAs with a certificate each, the first installed where the node
/// reads it.
struct Setup {
    dir: tempfile::TempDir,
    first: Issued,
    second: Issued,
    live: Live,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let first = issue(&dir.path().join("first"), "first-ca");
    let second = issue(&dir.path().join("second"), "second-ca");
    let live = Live::new(&dir.path().join("live"));
    live.install(&first.cert, &first.key);
    Setup {
        dir,
        first,
        second,
        live,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_certificate_replaced_on_disk() {
    let t = setup();
    let (first, second, live) = (&t.first, &t.second, &t.live);
    let node = TestNode::start_with(|c| {
        c.listen.tls_cert = Some(live.cert.clone());
        c.listen.tls_key = Some(live.key.clone());
        c.listen.tls_watch_secs = 1;
        c.listen.header_read_timeout_secs = 1;
    })
    .await;
    let addr = node.addr;

    let (alpn, served) = handshake(addr, &first.ca).await.unwrap();
    assert_eq!(alpn, b"http/1.1");
    assert_eq!(served, first_cert(&first.cert));
    // The chain is checked: a client that trusts another CA refuses it.
    let e = handshake(addr, &second.ca).await.unwrap_err();
    assert!(e.contains("UnknownIssuer"), "{e}");

    let ann = register_https(addr, &first.ca, &unique("ann")).await;
    let bob = register_https(addr, &first.ca, &unique("bob")).await;
    let mut a = wss(addr, &first.ca, &ann.access).await.unwrap();
    let mut b = wss(addr, &first.ca, &bob.access).await.unwrap();
    let conv = group(&mut a, &[&bob.id]).await;
    ok(a.request(send(&conv, "m1", "over tls")).await);
    says(&mut b, "over tls").await;

    // Plain HTTP to the port: sent to the same place over https.
    let (status, location, _) = plain_get(addr, "/v1/ws?x=1").await;
    assert_eq!(status, 308);
    assert_eq!(location, Some(format!("https://{addr}/v1/ws?x=1")));
    // A connection that says nothing is closed at the header deadline,
    // before any handshake.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut [0u8; 1])).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");

    // Renewed on disk: new connections get the new certificate...
    live.install(&second.cert, &second.key);
    until_trusted(addr, &second.ca, "the replaced certificate served").await;
    let (_, served) = handshake(addr, &second.ca).await.unwrap();
    assert_eq!(served, first_cert(&second.cert));
    assert!(handshake(addr, &first.ca).await.is_err());
    let mut b2 = wss(addr, &second.ca, &bob.access).await.unwrap();
    // ...and the open sessions keep talking.
    ok(a.request(send(&conv, "m2", "still here")).await);
    says(&mut b, "still here").await;
    says(&mut b2, "still here").await;
    ok(b.request(send(&conv, "m3", "both ways")).await);
    says(&mut a, "both ways").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_a_broken_pair_keeps_the_certificate_in_force() {
    let t = setup();
    let (dir, first, second, live) = (t.dir.path(), &t.first, &t.second, &t.live);
    let log = dir.join("node.log");
    let env = live.env();
    let mut own: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // SIGHUP only, and plain HTTP refused.
    own.push(("CHAT__LISTEN__TLS_WATCH_SECS", "0"));
    own.push(("CHAT__LISTEN__PLAIN_HTTP", "refuse"));
    let node = NodeProc::start(&dir.join("data"), &log, Some(SECRET), &own).await;
    let addr = node.addr;

    let ann = register_https(addr, &first.ca, &unique("ann")).await;
    let mut a = wss(addr, &first.ca, &ann.access).await.unwrap();
    let (status, location, body) = plain_get(addr, "/").await;
    assert_eq!((status, location), (400, None));
    assert!(body.contains("speaks TLS"), "{body}");

    live.install(&second.cert, &second.key);
    node.signal("HUP");
    until_trusted(addr, &second.ca, "the certificate reloaded on SIGHUP").await;

    // A key that is not the certificate's: refused, and the pair in force
    // stays.
    live.install(&first.cert, &second.key);
    node.signal("HUP");
    let log_path = log.clone();
    eventually("the broken pair refused", || {
        let log_path = log_path.clone();
        async move {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            match text.contains("client TLS certificate not reloaded") {
                true => Ok(()),
                false => Err("not yet".to_string()),
            }
        }
    })
    .await;
    let (_, served) = handshake(addr, &second.ca).await.unwrap();
    assert_eq!(served, first_cert(&second.cert));
    // The session made before both reloads still works.
    let conv = group(&mut a, &[]).await;
    ok(a.request(send(&conv, "m1", "after two reloads")).await);
}

#[test]
fn a_node_with_unusable_certificate_files_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let one = issue(&dir.path().join("one"), "one-ca");
    let two = issue(&dir.path().join("two"), "two-ca");
    for (cert, key, says) in [
        (&one.cert, &two.key, "does not go with"),
        (&one.cert, &dir.path().join("missing.pem"), "missing.pem"),
    ] {
        let out = std::process::Command::new(node_binary())
            .args(["--http", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .env("CHAT__LISTEN__TLS_CERT", cert)
            .env("CHAT__LISTEN__TLS_KEY", key)
            .env("CHAT__AUTH__JWT_SECRET", SECRET)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{err}");
    }
}
