//! The node receiving from real DCMTK peers: storage, echo, access control, ignored
//! objects, concurrency, re-sends.

mod common;

use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_real_series_is_spooled_and_queued() {
    let node = TestNode::start().await;
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "storescu failed:\n{out}");
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs.len(), 1);
    // Queued when the series became stable, then processed: the volume assembled.
    assert_eq!(jobs[0].state, JobState::Succeeded, "{:?}", jobs[0].reason);
    assert_eq!(jobs[0].instance_count, 20);
    let summary: serde_json::Value =
        serde_json::from_str(jobs[0].summary.as_deref().unwrap()).unwrap();
    assert_eq!(
        summary["volume"]["shape"],
        serde_json::json!([20, 512, 512])
    );
    let queued = node
        .store
        .audit_rows(Some(AuditKind::JobQueued))
        .await
        .unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].job_id, Some(jobs[0].id));
    assert_eq!(jobs[0].calling_ae, "STORESCU");
    let counts = node.store.instance_counts().await.unwrap();
    assert_eq!(counts.len(), 1);
    assert_eq!(counts[0].instances, 20);
    // 20 instances and the job's results in the spool, none named after a UID.
    let files = files_under(&node.spool().join("objects"));
    assert_eq!(files.len(), 20 + result_files(&jobs));
    let seg_uid = jobs[0]
        .seg_sop_instance_uid
        .as_deref()
        .expect("the job wrote a SEG");
    assert_eq!(summary["seg"]["sop_instance_uid"], seg_uid);
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        assert!(!name.contains("1.2.826"), "{name} is built from a UID");
    }
    // Received files are byte-identical data sets (JPEG 2000 kept as is); the others in
    // the spool are the job's results.
    let mut instances = 0;
    for f in &files {
        let stored = std::fs::read(f).unwrap();
        let meta = dicom_object::meta::FileMetaTable::from_reader(&stored[128..]).unwrap();
        if meta.media_storage_sop_class_uid().trim_end_matches('\0') == CT_STORAGE {
            instances += 1;
            assert_eq!(
                meta.transfer_syntax().trim_end_matches('\0'),
                segnode::dicom::uid::ts::JPEG_2000_LOSSLESS
            );
        }
    }
    assert_eq!(instances, 20);

    // `segnode jobs --json` shows the job.
    let config = node.dir.path().join("segnode.toml");
    std::fs::write(&config, test_config(&node.dir.path().join("data"), "")).unwrap();
    let listed = jobs_json(&config);
    assert_eq!(listed[0]["state"], "succeeded");
    assert_eq!(listed[0]["instance_count"], 20);
    assert_eq!(listed[0]["series_uid"], jobs[0].series_uid.as_str());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echoscu_succeeds_and_unknown_calling_ae_is_rejected() {
    let node = TestNode::start().await;
    let (ok, out) = echoscu(&node.port()).await;
    assert!(ok, "echoscu failed:\n{out}");
    let (ok, out) = run_tool(
        "echoscu",
        &[
            "-aet",
            "INTRUDER",
            "-aec",
            "SEGNODE",
            "127.0.0.1",
            &node.port(),
        ],
    )
    .await;
    assert!(!ok, "unknown calling AE was accepted:\n{out}");
    assert!(out.contains("Calling AE Title Not Recognized"), "{out}");
    let (ok, out) = run_tool(
        "echoscu",
        &[
            "-aet",
            "ECHOSCU",
            "-aec",
            "WRONG",
            "127.0.0.1",
            &node.port(),
        ],
    )
    .await;
    assert!(!ok, "wrong called AE was accepted:\n{out}");
    assert!(out.contains("Called AE Title Not Recognized"), "{out}");
    let rejected = node
        .store
        .audit_rows(Some(AuditKind::AssociationRejected))
        .await
        .unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0].calling_ae.as_deref(), Some("INTRUDER"));
    assert!(
        rejected[0]
            .peer
            .as_deref()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert!(rejected[0].detail.contains("not on the allow-list"));
    assert_eq!(
        node.store
            .audit_rows(Some(AuditKind::AssociationAccepted))
            .await
            .unwrap()
            .len(),
        1
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ct_object_is_accepted_not_kept_and_recorded_as_ignored() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sc = dir.path().join("sc.dcm");
    secondary_capture(&sc);
    let (ok, out) = storescu(&node.port(), &[&sc]).await;
    assert!(ok, "storescu failed:\n{out}");
    let ignored = node
        .store
        .audit_rows(Some(AuditKind::InstanceIgnored))
        .await
        .unwrap();
    assert_eq!(ignored.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&ignored[0].detail).unwrap();
    assert_eq!(detail["sop_class"], SECONDARY_CAPTURE);
    assert!(
        detail["reason"]
            .as_str()
            .unwrap()
            .contains("not CT image storage")
    );
    assert_eq!(
        ignored[0].series_uid.as_deref(),
        Some("1.2.826.0.1.3680043.10.9.7")
    );
    assert!(node.store.instance_counts().await.unwrap().is_empty());
    assert!(spooled_files(&node.spool()).is_empty());
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_storescu_associations_all_land() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let series: Vec<_> = (0..8)
        .map(|n| {
            let d = dir.path().join(format!("s{n}"));
            synthetic_series(&d, n + 1, 12, 64);
            d
        })
        .collect();
    let mut sends = tokio::task::JoinSet::new();
    for d in series {
        let port = node.port();
        sends.spawn(async move { storescu(&port, &[d.as_path()]).await });
    }
    while let Some(result) = sends.join_next().await {
        let (ok, out) = result.unwrap();
        assert!(ok, "storescu failed:\n{out}");
    }
    let jobs = settled_jobs(&node.store, 8).await;
    assert_eq!(jobs.len(), 8);
    assert!(
        jobs.iter()
            .all(|j| j.state == JobState::Succeeded && j.instance_count == 12),
        "{jobs:#?}"
    );
    let objects = files_under(&node.spool().join("objects")).len();
    assert_eq!(objects, 96 + result_files(&jobs));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resent_series_unchanged_makes_no_job_changed_supersedes() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_series(dir.path(), 42, 12, 32);
    let (ok, out) = storescu(&node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    let first = settled_jobs(&node.store, 1).await;
    assert_eq!(first[0].state, JobState::Succeeded);

    // Identical re-send: series becomes active again, settles, no new job.
    let (ok, out) = storescu(&node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(all_jobs(&node.store).await.len(), 1);

    // One slice with different pixels: replaced, a new job supersedes the old one.
    let study = "1.2.826.0.1.3680043.10.1.42";
    let series = format!("{study}.1");
    let sop = format!("{series}.3");
    let mut changed = ct_slice(study, &series, &sop, 2, 32);
    changed.put(dicom_core::DataElement::new(
        dicom_dictionary_std::tags::RESCALE_INTERCEPT,
        dicom_core::VR::DS,
        dicom_core::PrimitiveValue::from("-1000"),
    ));
    write_part10(changed, CT_STORAGE, &sop, &files[2]);
    let (ok, out) = storescu(&node.port(), &[&files[2]]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 2).await;
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs[0].state, JobState::Succeeded);
    assert_eq!(jobs[0].instance_count, 12);
    assert_eq!(jobs[0].series_revision, jobs[1].series_revision + 1);
    assert_eq!(jobs[1].state, JobState::Superseded);
    assert_eq!(jobs[1].superseded_by, Some(jobs[0].id));
    let replaced = node
        .store
        .audit_rows(Some(AuditKind::InstanceReplaced))
        .await
        .unwrap();
    assert_eq!(replaced.len(), 1);
    assert!(replaced[0].detail.contains(&sop), "{}", replaced[0].detail);
    // The replaced copy's old file is gone: one file per instance, plus the results.
    let objects = files_under(&node.spool().join("objects")).len();
    assert_eq!(objects, 12 + result_files(&jobs));
    node.stop().await;
}

/// The same files sent by one peer and then by another are the same instances: the
/// node keeps what the sender sent, and its identity does not depend on the Part 10
/// header the node wraps it in (which names the sender). The job keeps the AE of the
/// association that sent its revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_series_from_another_peer_is_no_new_content() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    synthetic_series(dir.path(), 43, 20, 16);
    let (ok, out) = storescu_as("TESTSCU", &node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    let first = settled_jobs(&node.store, 1).await;
    assert_eq!(first[0].calling_ae, "TESTSCU");

    let (ok, out) = storescu_as("STORESCU", &node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    // Longer than the stable age: the series settles again, with nothing new.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].series_revision, first[0].series_revision);
    assert_eq!(
        jobs[0].calling_ae, "TESTSCU",
        "the job keeps its own sender"
    );
    let replaced = node
        .store
        .audit_rows(Some(AuditKind::InstanceReplaced))
        .await
        .unwrap();
    assert!(replaced.is_empty(), "{replaced:?}");
    // What operators read says the same: `segnode jobs` and the API.
    let config = node.dir.path().join("segnode.toml");
    std::fs::write(&config, test_config(&node.dir.path().join("data"), "")).unwrap();
    let listed = jobs_json(&config);
    assert_eq!(listed[0]["calling_ae"], "TESTSCU");
    node.stop().await;
}

/// A failure reason names the instance as the sender knows it (its SOP Instance UID),
/// never the node's spool file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_names_the_instance_by_its_uid() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_series(dir.path(), 44, 12, 16);
    let study = "1.2.826.0.1.3680043.10.1.44";
    let series = format!("{study}.1");
    let sop = format!("{series}.5");
    let mut slice = ct_slice(study, &series, &sop, 4, 16);
    slice.remove_element(dicom_dictionary_std::tags::PIXEL_SPACING);
    write_part10(slice, CT_STORAGE, &sop, &files[4]);
    let (ok, out) = storescu(&node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs[0].state, JobState::Failed);
    assert_eq!(jobs[0].error_code.as_deref(), Some("missing_attribute"));
    assert_eq!(
        jobs[0].reason.as_deref(),
        Some(format!("volume: instance {sop} has no usable Pixel Spacing").as_str())
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn series_with_a_missing_slice_ends_its_job_failed_with_the_reason() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_series(dir.path(), 77, 14, 16);
    std::fs::remove_file(&files[6]).unwrap();
    let (ok, out) = storescu(&node.port(), &[dir.path()]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs[0].state, JobState::Failed);
    assert_eq!(jobs[0].error_code.as_deref(), Some("missing_slice"));
    let reason = jobs[0].reason.as_deref().unwrap();
    assert!(
        reason.starts_with("volume: series 1.2.826.0.1.3680043.10.1.77.1"),
        "{reason}"
    );
    assert!(
        reason.contains("gap of 6.000 mm where slices are 3.000 mm apart"),
        "{reason}"
    );
    let failed = node
        .store
        .audit_rows(Some(AuditKind::JobFailed))
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].detail.contains("missing_slice"));
    // The node goes on: another series still succeeds.
    let other = tempfile::tempdir().unwrap();
    synthetic_series(other.path(), 78, 12, 16);
    let (ok, out) = storescu(&node.port(), &[other.path()]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 2).await;
    assert_eq!(jobs[0].state, JobState::Succeeded);
    node.stop().await;
}

/// One PDV in a P-DATA-TF on context 1.
fn p_data(data: &[u8], command: bool, last: bool) -> Vec<u8> {
    let header = u8::from(command) | (u8::from(last) << 1);
    let mut pdu = vec![0x04, 0];
    pdu.extend_from_slice(&(data.len() as u32 + 6).to_be_bytes());
    pdu.extend_from_slice(&(data.len() as u32 + 2).to_be_bytes());
    pdu.extend_from_slice(&[1, header]);
    pdu.extend_from_slice(data);
    pdu
}

/// Stopping the node while a C-STORE is in flight: that C-STORE is read to its end,
/// stored and answered with success, then the association ends; new connections are
/// refused meanwhile, and the acknowledged instance is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_c_store_in_flight_at_shutdown_is_finished_and_answered() {
    use tokio::io::AsyncWriteExt;
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_series(dir.path(), 45, 1, 64);
    let file = std::fs::read(&files[0]).unwrap();
    let offset = segnode::dicom::part10::dataset_offset(&file).unwrap();
    let dataset = &file[offset..];
    let sop = "1.2.826.0.1.3680043.10.1.45.1.1";
    let command = segnode::dicom::Command::store_rq(7, CT_STORAGE, sop).encode();

    let mut socket = raw_association(&node).await;
    let (first, rest) = dataset.split_at(dataset.len() / 2);
    socket
        .write_all(&p_data(&command, true, true))
        .await
        .unwrap();
    socket
        .write_all(&p_data(first, false, false))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.begin_stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        tokio::net::TcpStream::connect(node.addr).await.is_err(),
        "a new connection was accepted while stopping"
    );
    socket.write_all(&p_data(rest, false, true)).await.unwrap();
    let (kind, body) = read_pdu(&mut socket).await;
    assert_eq!(kind, 0x04, "expected the C-STORE-RSP");
    let response = segnode::dicom::Command::decode(&body[6..]).unwrap();
    assert_eq!(response.status, Some(0), "{response:?}");
    // Then the association ends.
    let (kind, _) = read_pdu(&mut socket).await;
    assert_eq!(kind, 0x07, "expected A-ABORT");

    // Acknowledged, so durable: its row and its file, after the stop.
    let (database, spool) = (node.config.database.clone(), node.spool());
    let membership = node.config.membership.clone();
    let _dir = node.stop().await;
    let store = segnode::store::Store::open(&database, &membership)
        .await
        .unwrap();
    assert_eq!(store.instance_counts().await.unwrap()[0].instances, 1);
    store.close().await;
    assert_eq!(files_under(&spool.join("objects")).len(), 1);
}
