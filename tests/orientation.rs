//! Any patient position, and real files from elsewhere. The test series written in other
//! acquisition layouts (feet-first, prone, in-plane transposed; scripts/orient_series.py)
//! must give the identical label map once mapped back to patient space, with every
//! variant's SEG overlaying its own source; and a GDCM-written series from another
//! hospital (no Frame of Reference UID, no Patient ID, Instance Number from 0) goes
//! through `segnode serve` to a DCMTK storescp as a valid SEG.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use dicom_dictionary_std::tags;

fn default_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/abdomen-cascade")
}

#[test]
fn the_test_series_in_four_layouts_gives_one_label_map_in_patient_space() {
    let variants = tempfile::tempdir().unwrap();
    let o = Command::new(venv_python())
        .arg(script("orient_series.py"))
        .args([
            "write".as_ref(),
            real_series().as_os_str(),
            variants.path().as_os_str(),
        ])
        .args(["feet_first", "prone", "transposed"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let layouts: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(layouts["source"], "SPL");

    let out = tempfile::tempdir().unwrap();
    let stored = run_offline(
        None,
        &default_model(),
        &real_series(),
        &out.path().join("stored"),
    );
    assert_eq!(stored["cascade"]["frame"]["mapping"], "identity");
    let stored_labels = out.path().join("stored/series-001/labels.u8");
    let found = stored["cascade"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["voxels"].as_u64().unwrap() > 0)
        .count();
    assert!(
        found >= 2,
        "the model finds organs in the test series: {stored}"
    );

    for (name, frame) in [
        ("feet_first", "IPR"),
        ("prone", "SAR"),
        ("transposed", "ILP"),
    ] {
        assert_eq!(layouts["layouts"][name], frame);
        let source = variants.path().join(name);
        let result = run_offline(None, &default_model(), &source, &out.path().join(name));
        // The node says which mapping it applied.
        assert_eq!(result["cascade"]["frame"]["source"], frame, "{name}");
        assert_eq!(result["cascade"]["frame"]["model"], "SPL");
        assert_ne!(result["cascade"]["frame"]["mapping"], "identity", "{name}");
        // The same organ volumes...
        assert_eq!(
            result["cascade"]["labels"], stored["cascade"]["labels"],
            "{name}"
        );
        // ...and, mapped back to the stored layout, the identical label map.
        let labels = out.path().join(name).join("series-001/labels.u8");
        let o = Command::new(venv_python())
            .arg(script("orient_series.py"))
            .arg("compare")
            .arg(&stored_labels)
            .arg("SPL")
            .arg(&labels)
            .arg(frame)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{name}: label maps differ in patient space: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        // The variant's SEG overlays its own source.
        let seg = out.path().join(name).join("series-001/seg.dcm");
        check_seg(&seg, &source, &labels);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gdcm_series_from_another_hospital_goes_through_serve_to_storescp() {
    let series = shared_data().join("eval-ircadb-p1/ct");
    let port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(port, inbox.path(), &[]);
    let node = TestNode::start_with_tail("", &destination("PACS", port, "STORESCU", "")).await;
    let (ok, out) = storescu(&node.port(), &[&series]).await;
    assert!(ok, "{out}");
    let delivered = wait_for(Duration::from_secs(120), || async {
        let jobs = all_jobs(&node.store).await;
        jobs.into_iter().find(|j| j.state == JobState::Delivered)
    })
    .await;
    let Some(delivered) = delivered else {
        panic!(
            "the series was not delivered: {:?}",
            all_jobs(&node.store).await
        );
    };
    let files = files_under(inbox.path());
    assert_eq!(files.len(), 2, "the SEG and the SR at the storescp");
    for f in &files {
        assert_eq!(dciodvfy_errors(f), Vec::<String>::new(), "{}", f.display());
    }
    let class = |f: &Path| {
        let bytes = std::fs::read(f).unwrap();
        let meta = dicom_object::meta::FileMetaTable::from_reader(&bytes[128..]).unwrap();
        meta.media_storage_sop_class_uid()
            .trim_end_matches('\0')
            .to_string()
    };
    let seg = files
        .iter()
        .find(|f| class(f) == segnode::dicom::uid::SEGMENTATION_STORAGE)
        .expect("a SEG");
    // The source has no Frame of Reference UID: the SEG carries the one derived from
    // its Series Instance UID, the same for `segnode run` and the node.
    let text = |file: &Path, tag| {
        let obj = dicom_object::open_file(file).unwrap();
        obj.element(tag)
            .ok()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_end_matches('\0').trim().to_string())
    };
    let source = series.join("image_0");
    assert_eq!(text(&source, tags::FRAME_OF_REFERENCE_UID), None);
    let source_series = text(&source, tags::SERIES_INSTANCE_UID).unwrap();
    assert_eq!(
        text(seg, tags::FRAME_OF_REFERENCE_UID),
        Some(segnode::seg::derived_frame_of_reference(&source_series))
    );
    assert_eq!(text(seg, tags::PATIENT_ID).as_deref(), Some(""));
    assert_eq!(
        delivered.seg_sop_instance_uid.map(|u| u.to_string()),
        text(seg, tags::SOP_INSTANCE_UID)
    );
    // highdicom reads it back onto the source, voxel for voxel with the node's result
    // for the same files offline.
    let offline = tempfile::tempdir().unwrap();
    run_offline(None, &test_model(), &series, offline.path());
    check_seg(seg, &series, &offline.path().join("series-001/labels.u8"));
    node.stop().await;
}
