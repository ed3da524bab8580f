//! Delivery of results through the outbox to a DCMTK storescp that misbehaves: down at
//! first, refusing associations for a while, answering slowly, killed mid-transfer.

mod common;

use std::time::Duration;

use common::*;
use segnode::store::{DeliveryState, ResultObject, Store};

/// A PACS destination on `port` that the outbox retries quickly.
fn pacs(port: u16, extra: &str) -> String {
    format!(
        "[delivery]\nmax_attempts = 30\ninitial_backoff_seconds = 0.3\nmax_backoff_seconds = 1.0\n{}",
        destination(
            "PACS",
            port,
            "STORESCU",
            &format!("timeout_seconds = 2\n{extra}")
        )
    )
}

/// Sends a small synthetic series and waits for its job to succeed.
async fn process_series(node: &TestNode, n: u32) -> JobId {
    let dir = tempfile::tempdir().unwrap();
    tissue_series(dir.path(), n, 12, 96);
    let (ok, out) = storescu(&node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 1).await;
    assert!(
        jobs[0].seg_sop_instance_uid.is_some(),
        "the job made no SEG: {:?}",
        jobs[0]
    );
    jobs[0].id
}

async fn wait_delivery(
    store: &Store,
    job: JobId,
    state: DeliveryState,
    timeout: Duration,
) -> segnode::store::DeliveryRow {
    wait_for(timeout, || async {
        let d = store.job_deliveries(job).await.unwrap();
        d.into_iter()
            .find(|d| d.object == ResultObject::Seg && d.state == state)
    })
    .await
    .unwrap_or_else(|| panic!("no {state:?} SEG delivery for job {job}"))
}

/// Waits until the job's SEG delivery is delivered and `inbox` holds the SEG and the SR.
async fn wait_results_arrive(store: &Store, job: JobId, inbox: &std::path::Path) {
    wait_delivery(
        store,
        job,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    wait_for(Duration::from_secs(20), || async {
        (files_under(inbox).len() == 2).then_some(())
    })
    .await
    .expect("the SEG and the SR arrive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_down_at_first_then_started_gets_the_seg() {
    let port = free_port();
    let node = TestNode::start_with_tail("", &pacs(port, "")).await;
    let job = process_series(&node, 71).await;
    // Nobody listens yet: attempts fail and are retried.
    wait_for(Duration::from_secs(10), || async {
        let d = node.store.job_deliveries(job).await.unwrap();
        (d.first()?.attempts >= 2).then_some(())
    })
    .await
    .expect("retries while the destination is down");
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(port, inbox.path(), &[]);
    let d = wait_delivery(
        &node.store,
        job,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    assert!(d.attempts >= 3);
    assert_eq!(d.last_status.as_deref(), Some("0x0000"));
    // The job is delivered once the measurement report has arrived too.
    let jobs = wait_for(Duration::from_secs(20), || async {
        let jobs = all_jobs(&node.store).await;
        (jobs[0].state == JobState::Delivered).then_some(jobs)
    })
    .await
    .expect("the job becomes delivered");
    let objects = node.store.job_deliveries(job).await.unwrap();
    assert_eq!(objects.len(), 2);
    let received = files_under(inbox.path());
    assert_eq!(received.len(), 2, "the SEG and the SR");
    for o in &objects {
        assert_eq!(o.state, DeliveryState::Delivered);
        assert!(
            received
                .iter()
                .any(|f| f.to_string_lossy().contains(o.sop_instance_uid.as_str())),
            "{:?} {} not received",
            o.object,
            o.sop_instance_uid
        );
    }
    assert_eq!(jobs[0].state, JobState::Delivered);
    let audit = node
        .store
        .audit_rows(Some(AuditKind::DeliveryAttempt))
        .await
        .unwrap();
    assert!(audit.len() as i64 >= d.attempts);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusing_destination_is_retried_until_it_accepts() {
    let port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let refusing = StoreScp::start(port, inbox.path(), &["--refuse"]);
    let node = TestNode::start_with_tail("", &pacs(port, "")).await;
    let job = process_series(&node, 72).await;
    wait_for(Duration::from_secs(10), || async {
        let d = node.store.job_deliveries(job).await.unwrap();
        let d = d.first()?;
        (d.attempts >= 2 && d.last_error.as_deref()?.contains("rejected")).then_some(())
    })
    .await
    .expect("rejections recorded");
    refusing.stop();
    let _scp = StoreScp::start(port, inbox.path(), &[]);
    wait_results_arrive(&node.store, job, inbox.path()).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_destination_times_out_without_hanging_and_retry_resends() {
    let port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let slow = StoreScp::start(port, inbox.path(), &["--sleep-during", "6"]);
    let node = TestNode::start_with_tail(
        "",
        &pacs(port, "").replace("max_attempts = 30", "max_attempts = 2"),
    )
    .await;
    let job = process_series(&node, 73).await;
    let d = wait_delivery(
        &node.store,
        job,
        DeliveryState::Failed,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(d.attempts, 2);
    assert!(
        d.last_error.as_deref().unwrap().contains("timed out"),
        "{:?}",
        d.last_error
    );
    // The node kept serving meanwhile.
    let (ok, out) = echoscu(&node.port()).await;
    assert!(ok, "{out}");
    // The SR goes the same way.
    wait_for(Duration::from_secs(30), || async {
        let d = node.store.job_deliveries(job).await.unwrap();
        d.iter()
            .all(|d| d.state == DeliveryState::Failed)
            .then_some(())
    })
    .await
    .expect("both deliveries fail");
    slow.stop();
    // An operator's retry re-sends it to a healthy destination.
    let (job_requeued, deliveries) = node.store.retry_job(job).await.unwrap();
    assert!(!job_requeued);
    assert_eq!(deliveries, 2, "the SEG and the SR");
    let fresh = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(port, fresh.path(), &[]);
    wait_results_arrive(&node.store, job, fresh.path()).await;
    let retries = node
        .store
        .audit_rows(Some(AuditKind::OperatorRetry))
        .await
        .unwrap();
    assert_eq!(retries.len(), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destination_killed_mid_transfer_is_retried_and_the_same_instance_arrives() {
    let port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let mut dying = StoreScp::start(port, inbox.path(), &["--sleep-during", "3"]);
    let node = TestNode::start_with_tail("", &pacs(port, "")).await;
    let job = process_series(&node, 74).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    dying.0.kill();
    wait_for(Duration::from_secs(10), || async {
        let d = node.store.job_deliveries(job).await.unwrap();
        (d.first()?.attempts >= 1).then_some(())
    })
    .await
    .expect("the broken attempt is recorded");
    let fresh = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(port, fresh.path(), &[]);
    let d = wait_delivery(
        &node.store,
        job,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    let uids: Vec<String> = files_under(fresh.path())
        .iter()
        .map(|f| {
            let bytes = std::fs::read(f).unwrap();
            let meta = dicom_object::meta::FileMetaTable::from_reader(&bytes[128..]).unwrap();
            meta.media_storage_sop_instance_uid()
                .trim_end_matches('\0')
                .to_string()
        })
        .collect();
    assert!(uids.contains(&d.sop_instance_uid.to_string()), "{uids:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_purges_the_instances_of_delivered_jobs_and_keeps_the_audit() {
    let port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(port, inbox.path(), &[]);
    let tail = format!(
        "{}\n[retention]\npurge_after_hours = 0.0005\n",
        pacs(port, "")
    );
    let node = TestNode::start_with_tail("", &tail).await;
    let job = process_series(&node, 75).await;
    wait_delivery(
        &node.store,
        job,
        DeliveryState::Delivered,
        Duration::from_secs(20),
    )
    .await;
    let purged = wait_for(Duration::from_secs(20), || async {
        let rows = node
            .store
            .audit_rows(Some(AuditKind::SpoolPurged))
            .await
            .unwrap();
        rows.into_iter().next()
    })
    .await
    .expect("purged");
    assert!(
        purged.detail.contains("\"instances\":12"),
        "{}",
        purged.detail
    );
    // The instances are gone (their rows at once, their files right after the commit
    // that audits the purge); the results (SEG, SR, key images) and every audit row stay.
    let results = result_files(&all_jobs(&node.store).await);
    let objects = wait_for(Duration::from_secs(10), || async {
        let objects = files_under(&node.spool().join("objects"));
        (objects.len() == results).then_some(objects)
    })
    .await;
    assert!(
        objects.is_some(),
        "only the {results} result files are left: {:?}",
        files_under(&node.spool().join("objects"))
    );
    assert!(
        node.store
            .instance_counts()
            .await
            .unwrap()
            .iter()
            .all(|c| c.instances == 0)
    );
    assert!(
        !node
            .store
            .audit_rows(Some(AuditKind::JobSucceeded))
            .await
            .unwrap()
            .is_empty()
    );
    node.stop().await;
}
