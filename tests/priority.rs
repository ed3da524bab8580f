//! Stat before routine: a series that a `[[stat]]` rule matches, sent behind ten
//! routine ones, is the next job a worker starts.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use segnode::store::{JobState, Priority};

#[tokio::test]
async fn a_stat_series_sent_behind_ten_routine_ones_starts_next() {
    // TESTSCU's series are stat; STORESCU's routine. One worker.
    let node = TestNode::start_with_tail("", "[[stat]]\ncalling_ae = \"TESTSCU\"\n").await;
    let port = node.addr.port().to_string();
    let dir = tempfile::tempdir().unwrap();
    // The first routine series is large (300 slices of 512x512), so that its job is
    // still running when the stat series has become a job: the stat series is sent
    // once all ten routine series are jobs, and settles the stable age later.
    let routine: Vec<PathBuf> = (1..=10)
        .flat_map(|n| {
            let (slices, size) = if n == 1 { (300, 512) } else { (12, 64) };
            tissue_series(&dir.path().join(format!("r{n}")), 700 + n, slices, size)
        })
        .collect();
    let stat = tissue_series(&dir.path().join("stat"), 799, 12, 64);
    let (ok, log) = storescu(&port, &paths(&routine)).await;
    assert!(ok, "{log}");
    wait_for(Duration::from_secs(60), || async {
        (all_jobs(&node.store).await.len() == 10).then_some(())
    })
    .await
    .expect("the ten routine series become jobs");
    let (ok, log) = storescu_as("TESTSCU", &port, &paths(&stat)).await;
    assert!(ok, "{log}");

    let jobs = wait_for(Duration::from_secs(240), || async {
        let jobs = all_jobs(&node.store).await;
        (jobs.len() == 11
            && jobs
                .iter()
                .all(|j| j.started_ms.is_some() && j.state != JobState::Running))
        .then_some(jobs)
    })
    .await
    .expect("eleven jobs processed");
    let stat_job = jobs.iter().find(|j| j.priority == Priority::Stat).unwrap();
    assert_eq!(stat_job.calling_ae, "TESTSCU");
    assert_eq!(
        jobs.iter()
            .filter(|j| j.priority == Priority::Routine)
            .count(),
        10
    );
    // The routine jobs that had not started when the stat job was queued: it must
    // have started before every one of them.
    let waiting: Vec<_> = jobs
        .iter()
        .filter(|j| j.priority == Priority::Routine && j.started_ms > Some(stat_job.created_ms))
        .collect();
    assert!(
        !waiting.is_empty(),
        "no routine job was still queued: the stat series came too late to tell"
    );
    let first_waiting = waiting.iter().filter_map(|j| j.started_ms).min().unwrap();
    eprintln!(
        "stat job {} overtook {} queued routine job(s)",
        stat_job.id,
        waiting.len()
    );
    assert!(
        stat_job.started_ms.unwrap() < first_waiting,
        "the stat job started at {:?}, a routine job queued before it at {first_waiting}",
        stat_job.started_ms
    );
    // Its API row says so.
    let body: serde_json::Value = reqwest::Client::new()
        .get(format!("http://{}/api/jobs/{}", node.http, stat_job.id))
        .bearer_auth(node.token())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(body["priority"], "stat", "{body}");
}

fn paths(files: &[PathBuf]) -> Vec<&std::path::Path> {
    files.iter().map(PathBuf::as_path).collect()
}
