//! Crash safety: the node is killed with SIGKILL right after storescu reports success;
//! after a restart every acknowledged instance is there and the series gets its job.

mod common;

use std::time::Duration;

use common::*;

/// A node under `dir` that was sent `series` and then killed with SIGKILL.
struct Killed {
    port: u16,
    data: std::path::PathBuf,
    config: std::path::PathBuf,
    log: std::path::PathBuf,
}

/// Starts a node, sends `series` with storescu and kills the node (SIGKILL) as soon as
/// storescu reports success.
async fn send_then_kill(dir: &std::path::Path, series: &std::path::Path) -> Killed {
    let port = free_port();
    let data = dir.join("data");
    let config = dir.join("segnode.toml");
    let text = test_config(&data, "").replacen("127.0.0.1:0", &format!("127.0.0.1:{port}"), 1);
    // A long stable age: the kill lands before the series could settle.
    let text = text.replace("stable_seconds = 2", "stable_seconds = 3");
    std::fs::write(&config, text).unwrap();
    let log = dir.join("node.log");
    let mut node = KillOnDrop(spawn_node(&config, &log));
    wait_until_serving(port).await;
    let (ok, out) = storescu(&port.to_string(), &[series]).await;
    assert!(ok, "storescu failed:\n{out}");
    node.0.kill().unwrap();
    node.0.wait().unwrap();
    Killed {
        port,
        data,
        config,
        log,
    }
}

/// Restarts the node and waits until its first job has left `queued` and `running`;
/// returns the node and `segnode jobs --json`.
async fn restart_until_a_job_settles(
    port: u16,
    config: &std::path::Path,
    log: &std::path::Path,
) -> (KillOnDrop, serde_json::Value) {
    let node = KillOnDrop(spawn_node(config, log));
    wait_until_serving(port).await;
    let jobs = wait_for(Duration::from_secs(20), || async {
        let jobs = jobs_json(config);
        let settled = jobs
            .as_array()
            .unwrap()
            .first()
            .is_some_and(|j| j["state"] != "queued" && j["state"] != "running");
        settled.then_some(jobs)
    })
    .await
    .unwrap_or_else(|| {
        panic!(
            "no settled job after restart; log:\n{}",
            std::fs::read_to_string(log).unwrap()
        )
    });
    (node, jobs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_after_acknowledgement_loses_nothing_and_job_is_queued_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let Killed {
        port,
        data,
        config,
        log,
    } = send_then_kill(dir.path(), &real_series()).await;
    assert_eq!(
        jobs_json(&config).as_array().unwrap().len(),
        0,
        "series settled before the kill"
    );

    let (_node, jobs) = restart_until_a_job_settles(port, &config, &log).await;
    assert_eq!(jobs[0]["state"], "succeeded");
    // Queued once the series settled after the restart, then processed.
    assert_eq!(jobs.as_array().unwrap().len(), 1);
    assert_eq!(jobs[0]["instance_count"], 20);
    // Plus the result: its SEG, its measurement report and its key images.
    let results = match jobs[0]["seg_sop_instance_uid"].is_null() {
        true => 0,
        false => {
            let objects = jobs[0]["objects"].as_array().unwrap();
            assert_eq!(
                objects.len(),
                2 + jobs[0]["summary"]["key_images"].as_array().unwrap().len()
            );
            objects.len()
        }
    };
    assert_eq!(files_under(&data.join("spool/objects")).len(), 20 + results);
}

/// A record is committed while its file is fsynced (the C-STORE waits for both). If the
/// node dies in between, the C-STORE was never acknowledged: at the next start the row
/// whose file is missing or not what was recorded is dropped (and audited), the rest of
/// the series stays, and its job covers what is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_whose_file_never_became_durable_are_dropped_at_restart() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        synthetic_series(&dir.path().join("in"), 7, 12, 64).len(),
        12
    );
    let Killed {
        port,
        data,
        config,
        log,
    } = send_then_kill(dir.path(), &dir.path().join("in")).await;

    // What a crash between the commit and the fsync can leave: a file cut short, and a
    // file that never got its name.
    let mut files = files_under(&data.join("spool/objects"));
    files.sort();
    assert_eq!(files.len(), 12);
    std::fs::write(&files[0], b"DICM").unwrap();
    std::fs::remove_file(&files[1]).unwrap();

    let (_node, jobs) = restart_until_a_job_settles(port, &config, &log).await;
    assert_eq!(jobs[0]["instance_count"], 10);
    let files = files_under(&data.join("spool/objects"));
    assert!(files.len() >= 10 && !files.iter().any(|f| std::fs::read(f).unwrap() == b"DICM"));
    let audit: serde_json::Value = serde_json::from_slice(&segnode_ok([
        "--config",
        config.to_str().unwrap(),
        "audit",
        "--format",
        "json",
    ]))
    .unwrap();
    let dropped = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "instance_unacknowledged_dropped")
        .count();
    assert_eq!(dropped, 2);
}
