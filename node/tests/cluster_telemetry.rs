//! A real cluster seen as its operators see it: three `chat-node`
//! processes scraped by a real Prometheus (every panel of the shipped
//! dashboard and every alert has data; the rules pass promtool), and their
//! traces received by a real OpenTelemetry Collector (a send is one trace
//! from the socket through the owner and its store to another node).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chat_protocol::ServerFrame;
use common::cluster::*;
use common::procs::*;
use common::*;
use serde_json::Value;

/// A real Prometheus, on a free port, killed when dropped.
struct Prometheus {
    child: std::process::Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `targets` every second as job `chat`, with the shipped rules.
    fn start(targets: &[SocketAddr], rules: &std::path::Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let targets: Vec<String> = targets.iter().map(|a| format!("\"{a}\"")).collect();
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [\"{}\"]\n\
             scrape_configs:\n  - job_name: chat\n    static_configs:\n      - targets: [{}]\n",
            rules.display(),
            targets.join(", ")
        );
        let path = dir.path().join("prometheus.yml");
        std::fs::write(&path, config).unwrap();
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = std::process::Command::new("prometheus")
            .arg(format!("--config.file={}", path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian's package; scripts/test.sh installs it)");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The result of an instant query (`data.result`), or why not.
    async fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let (status, body) = http(self.addr, "GET", &path, None, None).await;
        let v: Value = serde_json::from_str(&body).map_err(|e| format!("{status}: {e}: {body}"))?;
        if v["status"] != "success" {
            return Err(body);
        }
        Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

fn promtool(args: &[&str]) {
    let out = std::process::Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool (with Debian's prometheus package)");
    assert!(
        out.status.success(),
        "promtool {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The shipped Prometheus rules pass promtool's checks and unit tests, and a
/// real Prometheus scraping a 3-node cluster under traffic has data for every
/// panel of the shipped Grafana dashboard and for every alert expression
/// (the part before its threshold).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_cluster_and_every_panel_and_alert_has_data() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    promtool(&["check", "rules", rules.to_str().unwrap()]);
    promtool(&[
        "test",
        "rules",
        deploy.join("prometheus/alerts_test.yml").to_str().unwrap(),
    ]);
    promtool(&[
        "check",
        "config",
        deploy.join("prometheus/prometheus.yml").to_str().unwrap(),
    ]);

    let cluster = TestCluster::start(3).await;
    let prom = Prometheus::start(&[cluster.addr(0), cluster.addr(1), cluster.addr(2)], &rules);

    // Traffic that touches every metric a panel shows: sends across nodes,
    // an edit, a history read, an error answered.
    let (_, mut clients, conv) = three_in_a_group(&cluster).await;
    let mut last = None;
    for round in 0..5 {
        for (i, c) in clients.iter_mut().enumerate() {
            let cmid = format!("p{i}-{round}");
            last = ok(c.request(frames::send(&conv, &cmid, &body_of(&cmid))).await).message;
        }
    }
    let last = last.expect("a message");
    ok(clients[2]
        .request(frames::edit(&conv, last.id, "edited"))
        .await);
    ok(clients[1]
        .request(frames::history(&conv, None, None, None))
        .await);
    clients[0].send_raw(b"{not json".to_vec()).await;
    clients[0]
        .event(|f| matches!(f, ServerFrame::Error { .. }))
        .await;

    eventually_within(
        "Prometheus scrapes the three nodes",
        FORM_DEADLINE,
        || async {
            let up = prom.query("up{job=\"chat\"} == 1").await?;
            (up.len() == 3)
                .then_some(())
                .ok_or(format!("{} of 3 up", up.len()))
        },
    )
    .await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(deploy.join("grafana/chat-cluster.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "1m");
            queries.push((panel["title"].as_str().unwrap().to_string(), expr));
        }
    }
    assert!(queries.len() >= 20, "the dashboard has its panels");
    for line in std::fs::read_to_string(&rules).unwrap().lines() {
        let Some(expr) = line.trim().strip_prefix("expr: ") else {
            continue;
        };
        let cut = [" > ", " < ", " == "]
            .iter()
            .filter_map(|op| expr.rfind(op))
            .max()
            .expect("an alert compares with a threshold");
        queries.push(("alert".into(), expr[..cut].to_string()));
    }
    for (title, expr) in &queries {
        eventually_within(
            &format!("{title}: {expr}"),
            Duration::from_secs(30),
            || async {
                let result = prom.query(expr).await?;
                (!result.is_empty())
                    .then_some(())
                    .ok_or("no data".to_string())
            },
        )
        .await;
    }
}

/// A real OpenTelemetry Collector (deploy/otelcol, built from the Go module
/// proxy by scripts/otelcol.sh) receiving OTLP/HTTP and writing what it
/// gets to a JSON-lines file.
struct Collector {
    child: std::process::Child,
    http: SocketAddr,
    file: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

/// One span as the collector wrote it.
#[derive(Debug, Clone)]
struct SpanRecord {
    node: String,
    trace: String,
    id: String,
    parent: Option<String>,
    name: String,
}

impl Collector {
    fn start() -> Collector {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let built = std::process::Command::new("bash")
            .arg(root.join("scripts/otelcol.sh"))
            .arg("build")
            .output()
            .expect("scripts/otelcol.sh");
        assert!(
            built.status.success(),
            "building the collector: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        let stdout = String::from_utf8(built.stdout).unwrap();
        let bin = stdout.lines().last().expect("the binary's path").trim();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("traces.jsonl");
        let http: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let grpc: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let child = std::process::Command::new(bin)
            .arg("--config")
            .arg(root.join("deploy/otelcol/config.yaml"))
            .env("OTELCOL_HTTP_ENDPOINT", http.to_string())
            .env("OTELCOL_GRPC_ENDPOINT", grpc.to_string())
            .env("OTELCOL_TRACES_FILE", &file)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("collector.log")).unwrap())
            .spawn()
            .expect("the collector");
        Collector {
            child,
            http,
            file,
            _dir: dir,
        }
    }

    /// Every span in the file so far (complete lines only: the exporter
    /// flushes on a timer, possibly mid-line).
    fn spans(&self) -> Vec<SpanRecord> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        let mut spans = Vec::new();
        for line in complete.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let node = rs["resource"]["attributes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|a| a["key"] == "chat.node")
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or("")
                    .to_string();
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for s in ss["spans"].as_array().into_iter().flatten() {
                        spans.push(SpanRecord {
                            node: node.clone(),
                            trace: s["traceId"].as_str().unwrap_or("").into(),
                            id: s["spanId"].as_str().unwrap_or("").into(),
                            parent: s["parentSpanId"]
                                .as_str()
                                .filter(|p| !p.is_empty())
                                .map(String::from),
                            name: s["name"].as_str().unwrap_or("").into(),
                        });
                    }
                }
            }
        }
        spans
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A send from a client on one node to a conversation owned by a second,
/// heard by a member on a third, is one trace: the receiving node's root,
/// the owner's conversation span with the store write inside, and the
/// fan-out on the third node, all linked through the node-to-node
/// messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_is_one_trace_from_the_socket_through_the_owner_and_its_store_to_another_node() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.http);
    let cluster = TestCluster::start_env(
        3,
        &[
            ("CHAT__TELEMETRY__OTLP_ENDPOINT", endpoint.as_str()),
            ("CHAT__TELEMETRY__SAMPLING_RATIO", "1.0"),
        ],
    )
    .await;
    // Client i is on node (i + 1) % 3: one member per node.
    let (_, mut clients, conv) = three_in_a_group(&cluster).await;
    let owner = TestCluster::owner(&conv, &[0, 1, 2]);
    let node_of = |client: usize| (client + 1) % 3;
    let sender = (0..3).find(|c| node_of(*c) != owner).unwrap();
    let listener = (0..3)
        .find(|c| node_of(*c) != owner && *c != sender)
        .unwrap();
    let sent = ok(clients[sender]
        .request(frames::send(&conv, "traced-1", "follow me"))
        .await)
    .message
    .expect("the message");
    clients[listener]
        .event(|f| matches!(f, ServerFrame::Message { message } if message.id == sent.id))
        .await;

    let (sender_node, owner_node, listener_node) = (
        TestCluster::name(node_of(sender)),
        TestCluster::name(owner),
        TestCluster::name(node_of(listener)),
    );
    let trace = eventually_within("the trace reaches the collector", FORM_DEADLINE, || async {
        let spans = collector.spans();
        let find = |name: &str, node: &str, parent: Option<&SpanRecord>| {
            spans
                .iter()
                .find(|s| {
                    s.name == name
                        && s.node == node
                        && parent.is_none_or(|p| {
                            s.trace == p.trace && s.parent.as_deref() == Some(p.id.as_str())
                        })
                })
                .cloned()
        };
        let missing = || format!("{} spans so far: {spans:?}", spans.len());
        let root = find("chat.send", &sender_node, None).ok_or_else(missing)?;
        let conv_span = find("conversation.send", &owner_node, Some(&root)).ok_or_else(missing)?;
        let store = find("store.append", &owner_node, Some(&conv_span)).ok_or_else(missing)?;
        let fanout =
            find("fanout.deliver", &listener_node, Some(&conv_span)).ok_or_else(missing)?;
        Ok::<_, String>([root, conv_span, store, fanout])
    })
    .await;
    assert!(trace[0].parent.is_none(), "the socket's span is the root");
    assert!(
        trace.iter().all(|s| s.trace == trace[0].trace),
        "one trace: {trace:?}"
    );
}
