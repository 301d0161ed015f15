//! A cluster of real `chat-node` processes on loopback, with a real Redis
//! for presence, for the suites that need several nodes.

use std::net::SocketAddr;
use std::time::Duration;

use chat_actors::placement::Placement;
use chat_protocol::{ClientFrame, ConversationId, Message, ServerFrame, Status};
use serde_json::Value;

use super::procs::*;
use super::*;

/// Shared by every node of a test cluster.
pub const SECRET: &str = "cluster-test-secret-0123456789abcdef-0123456789";
pub const COOKIE: &str = "cluster-test-cookie-0123456789";
/// How long a cluster may take to form or re-form.
pub const FORM_DEADLINE: Duration = Duration::from_secs(60);
/// How long after a heal, join or kill every node's copy of a conversation
/// may take to agree (on the embedded store, replicas catch up by
/// anti-entropy; on ScyllaDB they read one database).
pub const CONVERGE_DEADLINE: Duration = Duration::from_secs(30);
/// The operator every test cluster lists in `[admin] users`, whose token
/// the test signs itself.
pub const OPS: &str = "ops";

/// Ids reserved beyond a cluster's first nodes, for those a test adds.
const SPARE_NODE_IDS: u64 = 8;

/// Nodes `node-1`..`node-n` with their data and logs in one temp dir.
pub struct TestCluster {
    pub redis: RedisServer,
    pub cluster_ports: Vec<u16>,
    pub nodes: Vec<Option<NodeProc>>,
    pub starts: usize,
    /// With `start_cuttable`: `links[k][j]` carries node k's connection to
    /// node j (j < k), and each node dials only its links.
    pub links: Vec<Vec<Link>>,
    /// With `start_tls`: the PEM files every node uses (cert, key, ca).
    pub tls: Option<[std::path::PathBuf; 3]>,
    /// Set on every node after the rest (`start_env`).
    pub extra: Vec<(String, String)>,
    /// The build each node runs (this one unless a test says otherwise).
    pub releases: Vec<Release>,
    /// The cluster's block of node ids, unique in this test process
    /// (`fresh_node_ids`): node `i` has `node_id_at(ids, i)`. A block, not
    /// a list, because a test may add nodes.
    pub ids: u64,
    /// Last: fields drop in order, and a node dropped during a panic prints
    /// its log from here, so the directory must outlive the nodes.
    pub root: tempfile::TempDir,
}

impl TestCluster {
    /// Starts `n` nodes at once and waits until each serves with all others.
    pub async fn start(n: usize) -> TestCluster {
        Self::start_with(n, false).await
    }

    /// Like `start`, but every pair of nodes talks through its own TCP proxy
    /// that the test can cut.
    pub async fn start_cuttable(n: usize) -> TestCluster {
        Self::start_with(n, true).await
    }

    /// Like `start`, with mutual TLS between the nodes (certificates from a
    /// CA made for the test by the `openssl` tool).
    pub async fn start_tls(n: usize) -> TestCluster {
        Self::start_with_tls(n, false, true).await
    }

    pub async fn start_with(n: usize, cuttable: bool) -> TestCluster {
        Self::start_with_tls(n, cuttable, false).await
    }

    /// `n` nodes configured (each lists all as seeds), the first `started`
    /// of them running: the others join later with `restart`.
    pub async fn start_some(n: usize, started: usize) -> TestCluster {
        Self::start_inner(n, started, false, false).await
    }

    pub async fn start_with_tls(n: usize, cuttable: bool, tls: bool) -> TestCluster {
        Self::start_inner(n, n, cuttable, tls).await
    }

    /// `start` with more settings for every node.
    pub async fn start_env(n: usize, extra: &[(&str, &str)]) -> TestCluster {
        let extra = extra
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::start_inner_env(n, n, false, false, extra).await
    }

    pub async fn start_inner(n: usize, started: usize, cuttable: bool, tls: bool) -> TestCluster {
        Self::start_inner_env(n, started, cuttable, tls, Vec::new()).await
    }

    pub async fn start_inner_env(
        n: usize,
        started: usize,
        cuttable: bool,
        tls: bool,
        extra: Vec<(String, String)>,
    ) -> TestCluster {
        Self::start_release(n, started, cuttable, tls, extra, Release::this()).await
    }

    /// `n` nodes of `release` configured, `started` of them running.
    pub async fn start_release(
        n: usize,
        started: usize,
        cuttable: bool,
        tls: bool,
        extra: Vec<(String, String)>,
        release: Release,
    ) -> TestCluster {
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let mut links = Vec::new();
        if cuttable {
            for k in 0..n {
                let mut row = Vec::new();
                for port in cluster_ports.iter().take(k) {
                    row.push(Link::start(([127, 0, 0, 1], *port).into()).await);
                }
                links.push(row);
            }
        }
        let mut c = TestCluster {
            root: tempfile::tempdir().unwrap(),
            redis: RedisServer::start(),
            cluster_ports,
            nodes: (0..n).map(|_| None).collect(),
            starts: 0,
            links,
            tls: None,
            extra,
            releases: vec![release; n],
            ids: fresh_node_ids(n as u64 + SPARE_NODE_IDS),
        };
        if tls {
            c.tls = Some(make_certs(&c.root.path().join("pki"), "cluster-ca"));
        }
        let starts: Vec<_> = (0..started).map(|i| c.spawn(i)).collect();
        for (i, node) in futures_util::future::join_all(starts)
            .await
            .into_iter()
            .enumerate()
        {
            c.nodes[i] = Some(node);
        }
        c.wait_formed(started).await;
        c
    }

    pub fn name(i: usize) -> String {
        format!("node-{}", i + 1)
    }

    /// Node `i`'s id (a test adds at most `SPARE_NODE_IDS` nodes).
    pub fn id(&self, i: usize) -> u64 {
        node_id_at(self.ids, i)
    }

    pub fn env(&self, i: usize) -> Vec<(String, String)> {
        let seeds: Vec<String> = if self.links.is_empty() {
            self.cluster_ports
                .iter()
                .map(|p| format!("\"127.0.0.1:{p}\""))
                .collect()
        } else {
            self.links[i]
                .iter()
                .map(|l| format!("\"{}\"", l.addr))
                .collect()
        };
        let mesh = if self.links.is_empty() && self.tls.is_none() {
            "transitive"
        } else {
            "seeds"
        };
        let mut tls = Vec::new();
        if let Some([cert, key, ca]) = &self.tls {
            for (k, v) in [("CERT", cert), ("KEY", key), ("CA", ca)] {
                tls.push((format!("CHAT__CLUSTER__TLS_{k}"), v.display().to_string()));
            }
        }
        tls.into_iter()
            .chain([
                ("CHAT__CLUSTER__MESH".into(), mesh.into()),
                ("CHAT__NODE__NAME".into(), Self::name(i)),
                ("CHAT__NODE__ID".into(), self.id(i).to_string()),
                (
                    "CHAT__CLUSTER__LISTEN".into(),
                    format!("127.0.0.1:{}", self.cluster_ports[i]),
                ),
                (
                    "CHAT__CLUSTER__SEEDS".into(),
                    format!("[{}]", seeds.join(",")),
                ),
                ("CHAT__CLUSTER__COOKIE".into(), COOKIE.into()),
                ("CHAT__CLUSTER__JOIN_TIMEOUT_SECS".into(), "3".into()),
                ("CHAT__PRESENCE__BACKEND".into(), "redis".into()),
                ("CHAT__PRESENCE__REDIS_URL".into(), self.redis.url()),
                ("CHAT__PRESENCE__TTL_SECS".into(), "5".into()),
                ("CHAT__LIMITS__SENDS_PER_SECOND".into(), "1000000".into()),
                ("CHAT__LIMITS__SEND_BURST".into(), "1000000".into()),
                // A dozen three-node clusters (and, at RF 3, three database
                // nodes) share two cores while this file runs: an owner may
                // take many seconds to load a conversation and confirm a
                // session's interest, and the tests expect live delivery
                // once it has (the default 2 s would let the client in
                // before; 10 s did once on the RF 3 run).
                ("CHAT__ACTORS__INTEREST_ACK_MS".into(), "30000".into()),
                // The operator's token (`ops_token`) is signed by the test,
                // as an outside identity provider's would be: no login
                // stands behind it.
                ("CHAT__ADMIN__USERS".into(), format!("[{OPS:?}]")),
                ("CHAT__AUTH__REQUIRE_SESSION".into(), "false".into()),
            ])
            .chain(self.extra.iter().cloned())
            .collect()
    }

    /// Starts node `i` on its data directory (a restart keeps its data).
    pub fn spawn(&mut self, i: usize) -> impl std::future::Future<Output = NodeProc> + 'static {
        self.starts += 1;
        let data = self.root.path().join(Self::name(i));
        let log = self
            .root
            .path()
            .join(format!("{}-start{}.log", Self::name(i), self.starts));
        let env = self.env(i);
        // A node added after the start (past `n`) runs this build.
        let release = self.releases.get(i).cloned().unwrap_or_else(Release::this);
        async move {
            let secret = Some(SECRET.to_owned());
            tokio::task::spawn_blocking(move || {
                NodeProc::start_blocking(&release, &data, &log, secret, env)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        }
    }

    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let node = self.spawn(i).await;
        self.nodes[i] = Some(node);
    }

    pub fn node(&self, i: usize) -> &NodeProc {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.node(i).addr
    }

    /// Waits until every running node serves and sees `serving` serving
    /// nodes, all heard and caught up with.
    pub async fn wait_formed(&self, serving: usize) {
        for (i, n) in self.nodes.iter().enumerate() {
            let Some(n) = n else { continue };
            let what = format!("node {i} sees a cluster of {serving}");
            eventually_within(&what, FORM_DEADLINE, || async {
                let (status, body) = http(n.addr, "GET", "/v1/cluster", None, None).await;
                assert_eq!(status, 200, "{body}");
                let v: Value = serde_json::from_str(&body).unwrap();
                let peers = v["peers"].as_array().cloned().unwrap_or_default();
                let formed = v["serving"] == true
                    && v["serving_nodes"].as_array().map(Vec::len) == Some(serving)
                    && peers.len() == serving - 1
                    && peers.iter().all(|p| {
                        p["synced"] == true && p["serving"] == true && p["interest_synced"] == true
                    });
                formed.then_some(()).ok_or(body)
            })
            .await;
        }
    }

    /// Which node (index) owns `conv` while nodes `live` serve.
    pub fn owner(conv: &ConversationId, live: &[usize]) -> usize {
        let p = Placement::new(live.iter().map(|i| Self::name(*i)));
        let owner = p.owner(conv).expect("an owner").to_string();
        live.iter()
            .copied()
            .find(|i| Self::name(*i) == owner)
            .expect("owner is live")
    }

    /// Prints every node's log, for a failure's diagnosis.
    pub fn print_logs(&self) {
        let Ok(dir) = std::fs::read_dir(self.root.path()) else {
            return;
        };
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().ends_with(".log") {
                let text = std::fs::read_to_string(e.path()).unwrap_or_default();
                eprintln!("==== {}\n{text}", e.file_name().to_string_lossy());
            }
        }
    }

    /// A token of [`OPS`], the listed admin (a token without a login: the
    /// node makes the account on first use).
    pub fn ops_token() -> String {
        token(SECRET, OPS, now_secs() + 3600)
    }

    /// What node `i`'s store holds of `conv`, as the admin API tells it.
    pub async fn conversation_state(&self, i: usize, conv: &ConversationId) -> Value {
        let path = format!("/v1/admin/conversations/{conv}");
        let token = Self::ops_token();
        let (status, body) = http(self.addr(i), "GET", &path, Some(&token), None).await;
        assert_eq!(status, 200, "node {i}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until the nodes `live` hold the same state of `conv` (members
    /// and roles, last message, revision, read markers: the admin API's
    /// digest), within [`CONVERGE_DEADLINE`]; that state.
    pub async fn converged(&self, conv: &ConversationId, live: &[usize]) -> Value {
        let started = std::time::Instant::now();
        let what = format!("nodes {live:?} agree on {conv}");
        let state = eventually_within(&what, CONVERGE_DEADLINE, || async {
            let mut states = Vec::new();
            for &i in live {
                let mut v = self.conversation_state(i, conv).await;
                // Which node owns it is each node's view of the cluster.
                v.as_object_mut().unwrap().remove("owner");
                states.push(v);
            }
            if states.windows(2).all(|w| w[0] == w[1]) {
                Ok(states.swap_remove(0))
            } else {
                Err(format!("{states:?}"))
            }
        })
        .await;
        eprintln!("{what} after {} ms", started.elapsed().as_millis());
        state
    }

    pub async fn status(&self, i: usize) -> Value {
        let (status, body) = http(self.addr(i), "GET", "/v1/cluster", None, None).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

/// A TCP proxy between two nodes that can be cut (every connection through
/// it is closed and new ones are refused) and healed.
pub struct Link {
    pub addr: SocketAddr,
    pub cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    pub conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    pub accept: tokio::task::JoinHandle<()>,
}

impl Link {
    pub async fn start(target: SocketAddr) -> Link {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, k) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if c.load(Ordering::SeqCst) {
                    continue; // dropped: the dialer sees its connection close
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                k.lock().unwrap().push(task.abort_handle());
            }
        });
        Link {
            addr,
            cut,
            conns,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn heal(&self) {
        self.cut.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A CA and one certificate for 127.0.0.1 signed by it, made with the
/// `openssl` tool in `dir`: (cert, key, ca).
pub fn make_certs(dir: &std::path::Path, ca_name: &str) -> [std::path::PathBuf; 3] {
    std::fs::create_dir_all(dir).unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl (scripts/test.sh installs it)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let subj = format!("/CN={ca_name}");
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", &subj,
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=node",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "node.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "node.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    [
        dir.join("node.pem"),
        dir.join("node.key"),
        dir.join("ca.pem"),
    ]
}

/// The message a frame carries, if it is one.
pub fn message_of(f: &ServerFrame) -> Option<&Message> {
    match f {
        ServerFrame::Message { message } => Some(message),
        _ => None,
    }
}

/// `user`'s status as a `watch` answers it, or the error code.
pub async fn watch_status(c: &mut Client, user: &str) -> Result<Status, chat_protocol::ErrorCode> {
    let f = c
        .request(ClientFrame::Watch {
            req: None,
            users: vec![frames::user(user)],
        })
        .await;
    match f {
        ServerFrame::Ok(ok) => Ok(ok.presence.expect("presence")[0].status),
        other => Err(err_code(&other)),
    }
}

/// Alice, Bob and Carol, each registered on one node and connected to the
/// next (Bob with MessagePack), in a group Alice created that the others
/// have heard of.
pub async fn three_in_a_group(
    cluster: &TestCluster,
) -> (Vec<TestUser>, Vec<Client>, ConversationId) {
    let names = [unique("alice"), unique("bob"), unique("carol")];
    let mut users = Vec::new();
    let mut clients = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // Registered on its own node; tokens and accounts work everywhere.
        let u = register(cluster.addr(i), name).await;
        let codec = if i == 1 { Codec::MsgPack } else { Codec::Json };
        clients.push(connect(cluster.addr((i + 1) % 3), &u.access, codec).await);
        users.push(u);
    }
    let conv = group(&mut clients[0], &[&users[1].id, &users[2].id]).await;
    for c in clients.iter_mut().skip(1) {
        c.event(
            |f| matches!(f, ServerFrame::Conversation { conversation } if conversation.id == conv),
        )
        .await;
    }
    (users, clients, conv)
}

/// `/readyz` of the node at `addr`: its status and body.
pub async fn ready(addr: SocketAddr) -> (u16, String) {
    http(addr, "GET", "/readyz", None, None).await
}
