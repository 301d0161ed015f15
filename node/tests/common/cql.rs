//! A CQL server of a test's own (scripts/cql.sh), for a test that needs a
//! setting the suite's shared server must not have: the failover test's
//! short write timeout would time writes out across a loaded suite.

use std::path::Path;
use std::process::Command;

/// One CQL node on loopback, stopped when dropped.
pub struct CqlServer {
    dir: tempfile::TempDir,
    /// `host:port`, as `SCYLLA_NODES` says it.
    pub node: String,
}

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/cql.sh")
}

impl CqlServer {
    /// Starts one node whose replicas drop writes older than
    /// `write_timeout_ms` (blocks until it answers CQL: tens of seconds).
    pub fn start(write_timeout_ms: u64) -> CqlServer {
        let dir = tempfile::tempdir().expect("a directory for the CQL server");
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg("--dir")
            .arg(dir.path())
            .args(["--write-timeout-ms", &write_timeout_ms.to_string()])
            .output()
            .expect("run scripts/cql.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "scripts/cql.sh start: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let node = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("SCYLLA_NODES="))
            .unwrap_or_else(|| panic!("no SCYLLA_NODES line in {stdout}"))
            .to_string();
        CqlServer { dir, node }
    }

    /// What points a chat node at this server: a keyspace of its own, one
    /// replica, the node told the server's write timeout.
    pub fn env(&self, keyspace: &str, write_timeout_ms: u64) -> Vec<(String, String)> {
        vec![
            (
                "CHAT__STORAGE__SCYLLA__NODES".into(),
                format!("[{:?}]", self.node),
            ),
            ("CHAT__STORAGE__SCYLLA__KEYSPACE".into(), keyspace.into()),
            (
                "CHAT__STORAGE__SCYLLA__REPLICATION_FACTOR".into(),
                "1".into(),
            ),
            (
                "CHAT__STORAGE__SCYLLA__CONSISTENCY".into(),
                "local_quorum".into(),
            ),
            (
                "CHAT__STORAGE__SCYLLA__WRITE_TIMEOUT_MS".into(),
                write_timeout_ms.to_string(),
            ),
        ]
    }
}

impl Drop for CqlServer {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .arg("stop")
            .arg("--dir")
            .arg(self.dir.path())
            .output();
    }
}
