//! The shipped nginx configuration (deploy/nginx/chat.conf) in front of a
//! node: TLS ends at nginx, and `https://` sign-up, `wss://` chat both
//! ways, a streamed upload of several MiB and its download, and the
//! redirect of plain HTTP all pass through it. The file is run as shipped,
//! with only its addresses and certificate paths replaced.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command};

use common::frames::send;
use common::tls::*;
use common::*;

/// nginx in the foreground on two free ports, killed when dropped.
struct Nginx {
    child: Child,
    tls: SocketAddr,
    plain: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shipped server blocks with this test's node, ports and certificate.
fn configure(node: SocketAddr, tls: u16, plain: u16, cert: &Path, key: &Path) -> String {
    let shipped = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/nginx/chat.conf"),
    )
    .unwrap();
    let mut out = String::new();
    let mut upstream_done = false;
    for line in shipped.lines() {
        let t = line.trim();
        let line = if t.starts_with("server 10.0.0.") {
            // Every example node becomes this test's one node.
            if upstream_done {
                continue;
            }
            upstream_done = true;
            line.replace(t.split_whitespace().nth(1).unwrap(), &node.to_string())
        } else if t == "listen 80;" {
            line.replace("80", &format!("127.0.0.1:{plain}"))
        } else if t == "listen 443 ssl;" {
            line.replace("443", &format!("127.0.0.1:{tls}"))
        } else if t.starts_with("ssl_certificate ") {
            format!("    ssl_certificate {};", cert.display())
        } else if t.starts_with("ssl_certificate_key ") {
            format!("    ssl_certificate_key {};", key.display())
        } else {
            line.to_string()
        };
        out.push_str(&line);
        out.push('\n');
    }
    for (what, example) in [
        ("the upstream", upstream_done),
        ("listen 80", out.contains(&format!(":{plain};"))),
        ("listen 443", out.contains(&format!(":{tls} ssl;"))),
        ("the certificate", out.contains(&cert.display().to_string())),
    ] {
        assert!(
            example,
            "deploy/nginx/chat.conf has no {what} line to replace"
        );
    }
    out
}

fn start_nginx(dir: &Path, node: SocketAddr, cert: &Path, key: &Path) -> Nginx {
    let (tls, plain) = (free_port(), free_port());
    std::fs::write(
        dir.join("chat.conf"),
        configure(node, tls, plain, cert, key),
    )
    .unwrap();
    let d = dir.display();
    // As root, workers would drop to `nobody`, who cannot read the test's
    // private directory: they stay root here.
    let root = Command::new("id").arg("-u").output().unwrap().stdout == b"0\n";
    let user = if root { "user root;" } else { "" };
    let main = format!(
        "{user}\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
         fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
         include {d}/chat.conf;\n}}\n"
    );
    std::fs::write(dir.join("nginx.conf"), main).unwrap();
    // Debian puts it in /usr/sbin, which a user's PATH may lack.
    let bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx");
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .stderr(std::fs::File::create(dir.join("stderr.log")).unwrap())
        .spawn()
        .expect("nginx (scripts/test.sh installs nginx-light)");
    Nginx {
        child,
        tls: ([127, 0, 0, 1], tls).into(),
        plain: ([127, 0, 0, 1], plain).into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_nginx_config_carries_https_wss_and_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let certs = issue(&dir.path().join("certs"), "proxy-ca");
    let node = TestNode::start_with(|c| c.listen.max_connections_per_ip = 0).await;
    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let nginx = start_nginx(&nginx_dir, node.addr, &certs.cert, &certs.key);
    let (proxy, ca, log) = (nginx.tls, &certs.ca, nginx_dir.join("stderr.log"));
    eventually("nginx answers over TLS", || async {
        handshake(proxy, ca).await.map(|_| ()).map_err(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            format!("{e}; nginx said: {log}")
        })
    })
    .await;

    let ann = register_https(proxy, &certs.ca, &unique("ann")).await;
    let bob = register_https(proxy, &certs.ca, &unique("bob")).await;
    let mut a = wss(proxy, &certs.ca, &ann.access).await.unwrap();
    let mut b = wss(proxy, &certs.ca, &bob.access).await.unwrap();
    let conv = group(&mut a, &[&bob.id]).await;
    ok(a.request(send(&conv, "m1", "through nginx")).await);
    says(&mut b, "through nginx").await;
    ok(b.request(send(&conv, "m2", "and back")).await);
    says(&mut a, "and back").await;

    // 6 MiB up and down: past nginx's default body limit (1 MiB), streamed.
    let bytes = chat_testkit::noise(6 << 20, 7);
    let http = https_client(&certs.ca);
    let res = http
        .post(format!("https://{proxy}/v1/media?name=big.bin"))
        .bearer_auth(&ann.access)
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let v: serde_json::Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    let id = v["id"].as_str().unwrap();
    let got = http
        .get(format!("https://{proxy}/v1/media/{id}"))
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    assert!(got.bytes().await.unwrap() == bytes, "the same bytes back");

    // Plain HTTP is sent to https.
    let (status, location, _) = plain_get(nginx.plain, "/v1/health?x=1").await;
    assert_eq!(status, 308);
    assert_eq!(location.as_deref(), Some("https://127.0.0.1/v1/health?x=1"));
}
