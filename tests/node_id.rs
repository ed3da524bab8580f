//! One node id, one running process: a second `segnode serve` with the id of a live node
//! is refused at start-up with a reason and a non-zero exit, before it touches the
//! spool, whether it shares the first one's spool or only its database; the first node
//! keeps its files and goes on receiving. Runs on SQLite, and on PostgreSQL when
//! `SEGNODE_TEST_POSTGRES` names a server.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const NODE_ID: &str = "seg-dup";

/// `text` (a test configuration) with node id [`NODE_ID`], `lease_seconds` and, when
/// given, `database` instead of the test's own.
fn with_node(text: &str, lease_seconds: u64, database: Option<&str>) -> String {
    let mut node = format!("[node]\nnode_id = \"{NODE_ID}\"\nlease_seconds = {lease_seconds}\n");
    if let Some(db) = database {
        node += &format!("database = \"{db}\"\n");
    }
    text.lines()
        .filter(|l| database.is_none() || !l.starts_with("database = "))
        .collect::<Vec<_>>()
        .join("\n")
        .replacen("[node]\n", &node, 1)
}

/// Runs `segnode serve` with `config` until it exits (within 60 s); fails if it starts
/// listening instead. Returns its log.
async fn serve_expecting_refusal(config: &Path, log: &Path) -> String {
    let mut child = KillOnDrop(spawn_node(config, log));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(!status.success(), "exit status {status}; log:\n{text}");
            return text;
        }
        assert!(
            !text.contains("DICOM SCP listening"),
            "the second node started; log:\n{text}"
        );
        assert!(
            Instant::now() < deadline,
            "no exit within 60 s; log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The files in the node's own spool folder (made ahead for C-STOREs, its lock).
fn node_folder(spool: &Path) -> Vec<PathBuf> {
    let mut files = files_under(&spool.join("tmp").join(NODE_ID));
    files.sort();
    files
}

async fn still_receives(node: &TestNode, series_no: u32) {
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_series(dir.path(), series_no, 1, 16);
    let (ok, out) = storescu(&node.port(), &[&files[0]]).await;
    assert!(ok, "the first node no longer receives: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_live_nodes_id_on_its_spool_is_refused_and_sweeps_nothing() {
    let mut text = String::new();
    let node = TestNode::start_text(|data| {
        text = with_node(&test_config(data, ""), 30, None);
        text.clone()
    })
    .await;
    let spool = node.spool();
    let ready = wait_for(Duration::from_secs(20), || async {
        let files = node_folder(&spool);
        (files.len() > 16).then_some(files)
    })
    .await
    .expect("the node keeps 16 spool files ready");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("second.toml");
    std::fs::write(&config, &text).unwrap();
    let log = serve_expecting_refusal(&config, &dir.path().join("second.log")).await;
    assert!(
        log.contains(&format!(
            "node id \"{NODE_ID}\" is in use by another segnode process on this spool"
        )),
        "{log}"
    );
    assert!(log.contains("its last heartbeat: "), "{log}");
    assert!(
        log.contains(" s ago ("),
        "when the first was last seen: {log}"
    );

    for f in &ready {
        assert!(f.exists(), "the first node's {} was swept", f.display());
    }
    still_receives(&node, 61).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_with_a_live_nodes_id_on_its_database_is_refused_until_the_lease_ends() {
    const LEASE_SECONDS: u64 = 2;
    let work = tempfile::tempdir().unwrap();
    let database = match std::env::var("SEGNODE_TEST_POSTGRES") {
        Ok(server) => create_database(&server),
        Err(_) => work.path().join("shared.db").display().to_string(),
    };
    let node = TestNode::start_text(|data| {
        with_node(&test_config(data, ""), LEASE_SECONDS, Some(&database))
    })
    .await;

    // Its own data directory (spool), the first node's database and node id.
    let port = free_port();
    let text = with_node(
        &test_config(&work.path().join("data"), ""),
        LEASE_SECONDS,
        Some(&database),
    )
    .replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1);
    let config = work.path().join("second.toml");
    std::fs::write(&config, &text).unwrap();
    let log = serve_expecting_refusal(&config, &work.path().join("refused.log")).await;
    assert!(
        log.contains(&format!(
            "node id \"{NODE_ID}\" is in use by another live node (its last heartbeat: "
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "within the {LEASE_SECONDS} s lease): if that node has stopped, wait "
        )),
        "{log}"
    );
    still_receives(&node, 62).await;

    // Once the first node has stopped heartbeating for a lease, the id is free.
    node.stop().await;
    tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
    let log = work.path().join("second.log");
    let _second = KillOnDrop(spawn_node(&config, &log));
    wait_until_serving(port).await;
}
