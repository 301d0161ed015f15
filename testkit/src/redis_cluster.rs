//! A real Redis Cluster for a test: Debian's `redis-server` started in
//! cluster mode on free loopback ports (each shard a primary and its
//! replicas), joined with `redis-cli --cluster create`, stopped when
//! dropped. A primary can be killed, and the test waits for its replica to
//! take its slots over.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How long a cluster may take to form or to fail over.
const FORM_DEADLINE: Duration = Duration::from_secs(30);

/// How long a primary may be silent before its replica is promoted: short,
/// so that a test's failover takes a few seconds.
const NODE_TIMEOUT_MS: u64 = 1000;

/// One `redis-server` of the cluster.
struct Member {
    port: u16,
    child: Option<Child>,
}

/// A Redis Cluster of `shards` primaries with `replicas` each.
pub struct RedisCluster {
    members: Vec<Member>,
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts `shards` primaries with `replicas` replicas each and waits
    /// until every slot is served.
    pub fn start(shards: usize, replicas: usize) -> RedisCluster {
        let n = shards * (1 + replicas);
        let dir = std::env::temp_dir().join(format!(
            "chat-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("the cluster's directory");
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            let (port, bus) = (free_port(), free_port());
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string()])
                .args(["--cluster-port", &bus.to_string()])
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--dir", dir.to_str().expect("a UTF-8 path")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start redis-server ({e}); scripts/test.sh installs it")
                });
            members.push(Member {
                port,
                child: Some(child),
            });
        }
        let cluster = RedisCluster { members, dir };
        for m in &cluster.members {
            cluster.wait_for(&format!("redis-server on {} to answer", m.port), || {
                cli(m.port, &["PING"]).as_deref() == Some("PONG")
            });
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for m in &cluster.members {
            create.arg(format!("127.0.0.1:{}", m.port));
        }
        let out = create
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_until_healthy();
        cluster
    }

    /// `redis-cluster://` naming every member: a client finds the rest.
    pub fn url(&self) -> String {
        let mut ports = self.members.iter().map(|m| m.port);
        let first = ports.next().expect("a member");
        let rest: Vec<String> = ports.map(|p| format!("node=127.0.0.1:{p}")).collect();
        format!("redis-cluster://127.0.0.1:{first}?{}", rest.join("&"))
    }

    /// The ports of the members still running.
    pub fn ports(&self) -> Vec<u16> {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .map(|m| m.port)
            .collect()
    }

    /// The port of the primary serving `key`'s slot now.
    pub fn primary_of(&self, key: &str) -> u16 {
        let any = self.ports()[0];
        let slot: u16 = cli(any, &["CLUSTER", "KEYSLOT", key])
            .and_then(|s| s.parse().ok())
            .expect("CLUSTER KEYSLOT");
        let nodes = cli(any, &["CLUSTER", "NODES"]).expect("CLUSTER NODES");
        let serving = primaries(&nodes)
            .filter(|p| !p.failed)
            .find(|p| {
                p.slots.iter().any(|range| match range.split_once('-') {
                    Some((a, b)) => {
                        a.parse::<u16>().is_ok_and(|a| a <= slot)
                            && b.parse::<u16>().is_ok_and(|b| slot <= b)
                    }
                    None => range.parse::<u16>().is_ok_and(|s| s == slot),
                })
            })
            .and_then(|p| p.port);
        serving.unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// Kills the member on `port` (as `kill -9` would).
    pub fn kill(&mut self, port: u16) {
        let m = self
            .members
            .iter_mut()
            .find(|m| m.port == port)
            .expect("a member on that port");
        if let Some(mut child) = m.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits until every replica has every write its primary took, so
    /// that killing a primary loses nothing already written.
    pub fn wait_replicated(&self) {
        for port in self.ports() {
            self.wait_for(&format!("{port}'s replicas to catch up"), || {
                let Some(info) = cli(port, &["INFO", "replication"]) else {
                    return false;
                };
                if !info.contains("role:master") {
                    return true;
                }
                let field = |name: &str| {
                    info.lines()
                        .find_map(|l| l.trim().strip_prefix(name))
                        .map(str::to_owned)
                };
                let Some(offset) = field("master_repl_offset:") else {
                    return false;
                };
                // slaveN:ip=...,port=...,state=online,offset=N,lag=0
                info.lines()
                    .filter(|l| l.starts_with("slave"))
                    .all(|l| l.contains(&format!("offset={offset},")))
            });
        }
    }

    /// Waits until every running member says every slot is served, by a
    /// running member (after a kill: once a replica took the dead
    /// primary's slots, which the others notice only after the node
    /// timeout).
    pub fn wait_until_healthy(&self) {
        let running = self.ports();
        for &port in &running {
            self.wait_for(&format!("{port} to see the cluster whole"), || {
                let whole = cli(port, &["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
                });
                whole
                    && cli(port, &["CLUSTER", "NODES"]).is_some_and(|nodes| {
                        primaries(&nodes).all(|p| p.port.is_some_and(|p| running.contains(&p)))
                    })
            });
        }
    }

    fn wait_for(&self, what: &str, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + FORM_DEADLINE;
        while !ok() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A primary serving slots, as one line of CLUSTER NODES describes it.
struct Primary<'a> {
    /// From its `host:port@bus` address.
    port: Option<u16>,
    /// Flagged `fail` (or `fail?`) by the member asked.
    failed: bool,
    /// Its slot ranges, `a-b` or a single slot.
    slots: Vec<&'a str>,
}

/// The primaries serving slots in CLUSTER NODES' output `nodes` (fields:
/// id, address, flags, primary, ping, pong, epoch, link, slots...).
fn primaries(nodes: &str) -> impl Iterator<Item = Primary<'_>> {
    nodes.lines().filter_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() > 8 && f[2].contains("master")).then(|| Primary {
            port: f[1]
                .split('@')
                .next()
                .and_then(|addr| addr.rsplit(':').next())
                .and_then(|p| p.parse().ok()),
            failed: f[2].contains("fail"),
            slots: f[8..].to_vec(),
        })
    })
}

/// `redis-cli -p port args...`, its output trimmed; `None` when it fails.
fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
