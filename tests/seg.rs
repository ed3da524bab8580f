//! DICOM SEG: every SEG the node writes passes dciodvfy (BINARY) and reads back, in
//! highdicom and dcmqi, to the node's label map voxel for voxel on the source slices.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use segnode::cascade::{self};
use segnode::config::Config;
use segnode::seg::{self, SegError, SegType};
use segnode::volume::{self, Tolerances};

fn run_node(series: &Path, out: &Path, seg_type: &str) -> serde_json::Value {
    let model = test_model();
    serde_json::from_slice(&segnode_ok([
        "run".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--seg-type".as_ref(),
        std::ffi::OsStr::new(seg_type),
        series.as_os_str(),
    ]))
    .unwrap()
}

#[test]
fn binary_seg_of_the_real_series_is_valid_and_reads_back_exactly() {
    let out = tempfile::tempdir().unwrap();
    let summary = run_node(&real_series(), out.path(), "binary");
    let series = &summary["series"][0];
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&seg_file), Vec::<String>::new());
    let labels = Path::new(series["output"].as_str().unwrap()).join("labels.u8");
    let report = check_seg(&seg_file, &real_series(), &labels);
    assert_eq!(report["segmentation_type"], "BINARY");
    assert_eq!(report["highdicom_differing_voxels"], 0);
    assert_eq!(report["dcmqi_differing_voxels"], 0);
    assert_eq!(
        report["segments"],
        serde_json::json!(["soft tissue", "bone"])
    );
    // Sparse: fewer frames than segments x slices when a segment misses slices is
    // checked in the unit tests; here both segments cover all 20 slices at most.
    assert!(report["frames"].as_u64().unwrap() <= 40);
}

fn check_sr(sr: &Path, seg: &Path) -> serde_json::Value {
    let (ok, report) = script_json("check_sr.py", &[sr, seg]);
    assert!(ok, "{report}");
    report
}

/// The measurement report passes dciodvfy, reads back in highdicom with each organ's
/// volume equal to the summary's and its Referenced Segment the organ's segment in the
/// SEG, and dcmqi's tid1500reader converts it.
#[test]
fn the_measurement_report_is_valid_and_agrees_with_the_seg_and_the_summary() {
    let out = tempfile::tempdir().unwrap();
    let summary = run_node(&real_series(), out.path(), "binary");
    let series = &summary["series"][0];
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    let sr_file = PathBuf::from(series["sr"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&sr_file), Vec::<String>::new());
    let report = check_sr(&sr_file, &seg_file);
    assert_eq!(report["template"], "1500");
    assert_eq!(report["tid1500reader_ok"], true, "{report}");
    let labels = series["cascade"]["labels"].as_array().unwrap();
    let found: Vec<_> = labels
        .iter()
        .filter(|l| l["voxels"].as_u64() > Some(0))
        .collect();
    let groups = report["groups"].as_array().unwrap();
    assert_eq!(groups.len(), found.len(), "{report}");
    assert_eq!(report["tid1500reader_groups"], found.len());
    for label in found {
        let name = label["name"].as_str().unwrap();
        let group = groups.iter().find(|g| g["organ"] == name).unwrap();
        let (sr_ml, summary_ml) = (group["ml"].as_f64().unwrap(), label["ml"].as_f64().unwrap());
        assert!(
            (sr_ml - summary_ml).abs() <= 0.1,
            "{name}: {sr_ml} vs {summary_ml}"
        );
        assert_eq!(group["volume_unit"], "ml");
        // How far it can be trusted, as highdicom reads it: a truncated organ's volume is
        // derived as its minimum (a lower bound); the verdict and each finding are
        // qualitative evaluations.
        let organ = series["sr"]["organs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == name)
            .unwrap();
        let codes: Vec<&str> = organ["qa"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["code"].as_str().unwrap())
            .collect();
        let lower_bound = codes.contains(&"truncated");
        assert!(lower_bound, "{name}: the 40 mm slab cuts every organ");
        assert_eq!(
            group["volume_derivation"],
            if lower_bound {
                serde_json::json!("255605001")
            } else {
                serde_json::Value::Null
            },
            "{name}: {group}"
        );
        let mut expected = vec![serde_json::json!(["qa-verdict", organ["qa"]["verdict"]])];
        expected.extend(codes.iter().map(|c| serde_json::json!(["qa-finding", c])));
        assert_eq!(
            group["qualitative"],
            serde_json::Value::from(expected),
            "{name}"
        );
        assert_eq!(
            group["seg_sop_instance_uid"],
            series["seg"]["sop_instance_uid"]
        );
        assert_eq!(
            group["segment_label"], name,
            "its Referenced Segment is its own"
        );
        let (min, mean, max) = (
            group["hu_min"].as_f64().unwrap(),
            group["hu_mean"].as_f64().unwrap(),
            group["hu_max"].as_f64().unwrap(),
        );
        assert!(min <= mean && mean <= max, "{group}");
    }
    let source = report["tid1500reader_source_series"].as_array().unwrap();
    assert_eq!(source.len(), 1);
}

/// Key images: valid Secondary Capture (dciodvfy), marked derived with burned-in
/// annotation, and their coloured pixels are exactly the organs' outlines (the legend's
/// bands aside).
#[test]
fn key_images_are_valid_and_outline_the_label_map() {
    let out = tempfile::tempdir().unwrap();
    let summary = run_node(&real_series(), out.path(), "binary");
    let series = &summary["series"][0];
    let output = PathBuf::from(series["output"].as_str().unwrap());
    let images = series["key_images"].as_array().unwrap();
    assert!(!images.is_empty() && images.len() <= 4, "{images:?}");
    for k in images {
        let file = PathBuf::from(k["file"].as_str().unwrap());
        assert_eq!(dciodvfy_errors(&file), Vec::<String>::new());
        let obj = dicom_object::open_file(&file).unwrap();
        let text = |tag| obj.element(tag).unwrap().to_str().unwrap().to_string();
        assert_eq!(
            text(dicom_dictionary_std::tags::IMAGE_TYPE),
            "DERIVED\\SECONDARY"
        );
        assert_eq!(
            text(dicom_dictionary_std::tags::BURNED_IN_ANNOTATION),
            "YES"
        );
        assert!(
            text(dicom_dictionary_std::tags::DERIVATION_DESCRIPTION).contains("RESEARCH RESULT")
        );
        let report = check_key_image(&file, &output, k["slice"].as_u64().unwrap());
        assert!(
            report["boundary_pixels"].as_u64().unwrap() > 100,
            "{report}"
        );
        assert_eq!(report["boundary_coloured"], 1.0, "{report}");
        assert_eq!(report["other_coloured"], 0.0, "{report}");
    }
}

/// `segnode run` is the node's processing: the same files give the same SEG, down to
/// its SOP Instance UID, offline and served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_and_serve_give_the_same_seg_for_the_same_files() {
    let out = tempfile::tempdir().unwrap();
    let offline = run_node(&real_series(), out.path(), "binary");
    let offline_uid = offline["series"][0]["seg"]["sop_instance_uid"].clone();
    assert!(offline_uid.is_string(), "{offline}");

    let node = TestNode::start().await;
    let (ok, log) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "{log}");
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs[0].state, JobState::Succeeded, "{:?}", jobs[0].reason);
    assert_eq!(
        jobs[0].seg_sop_instance_uid.as_deref(),
        offline_uid.as_str()
    );
    node.stop().await;
}

#[test]
fn labelmap_seg_reads_back_exactly_in_highdicom_and_dcmqi() {
    let out = tempfile::tempdir().unwrap();
    let summary = run_node(&real_series(), out.path(), "labelmap");
    let series = &summary["series"][0];
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    let labels = Path::new(series["output"].as_str().unwrap()).join("labels.u8");
    let report = check_seg(&seg_file, &real_series(), &labels);
    assert_eq!(report["segmentation_type"], "LABELMAP");
    assert_eq!(report["dcmqi_differing_voxels"], 0);
}

#[test]
fn feet_first_synthetic_series_seg_is_aligned() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let dir = tempfile::tempdir().unwrap();
    for (i, f) in synthetic_series(dir.path(), 61, 12, 48).iter().enumerate() {
        let sop = format!("1.2.826.0.1.3680043.10.1.61.1.{}", i + 1);
        let mut obj = ct_slice(
            "1.2.826.0.1.3680043.10.1.61",
            "1.2.826.0.1.3680043.10.1.61.1",
            &sop,
            i as u32,
            48,
        );
        obj.put(DataElement::new(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            PrimitiveValue::from("-1\\0\\0\\0\\1\\0"),
        ));
        // A bright block (bone-like) on some slices, soft tissue elsewhere.
        let pixels: Vec<u16> = (0..48 * 48)
            .map(|p| {
                if i > 3 && p % 48 > 20 && p / 48 > 10 {
                    1900
                } else {
                    1070
                }
            })
            .collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.into()),
        ));
        write_part10(obj, CT_STORAGE, &sop, f);
    }
    let out = tempfile::tempdir().unwrap();
    let summary = run_node(dir.path(), out.path(), "binary");
    let series = &summary["series"][0];
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&seg_file), Vec::<String>::new());
    let labels = Path::new(series["output"].as_str().unwrap()).join("labels.u8");
    check_seg(&seg_file, dir.path(), &labels);
}

#[test]
fn the_sop_instance_uid_depends_on_content_model_and_type_only() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(real_series())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let volume = volume::assemble(&files, 2, &Tolerances::default()).unwrap();
    let text = format!(
        "[node]\nae_title='A'\ndata_dir='/tmp'\n[dicom]\nlisten='127.0.0.1:0'\nallow_any_calling_ae=true\n[model]\npath={:?}\n",
        test_model().display().to_string()
    );
    let config = Config::from_toml(&text, &Default::default())
        .unwrap()
        .model
        .unwrap();
    let mut c = cascade::open_cascades(&config, 1).unwrap().0.pop().unwrap();
    let seg = c.run(&volume).unwrap();
    let eq = seg::Equipment::segnode("SEGNODE");
    let mut manifest = c.model.manifest.clone();
    let a = seg::encode(&volume, &seg.labels, &manifest, SegType::Binary, &eq, "key").unwrap();
    let b = seg::encode(&volume, &seg.labels, &manifest, SegType::Binary, &eq, "key").unwrap();
    assert_eq!(
        a.sop_instance_uid, b.sop_instance_uid,
        "re-encoding is the same instance"
    );
    assert!(a.sop_instance_uid.starts_with("2.25.") && a.sop_instance_uid.len() <= 64);
    let lm = seg::encode(
        &volume,
        &seg.labels,
        &manifest,
        SegType::Labelmap,
        &eq,
        "key",
    )
    .unwrap();
    assert_ne!(lm.sop_instance_uid, a.sop_instance_uid);
    assert_eq!(lm.series_instance_uid, a.series_instance_uid);
    manifest.version = "9.9.9".into();
    let v = seg::encode(&volume, &seg.labels, &manifest, SegType::Binary, &eq, "key").unwrap();
    assert_ne!(v.sop_instance_uid, a.sop_instance_uid);
    let other = seg::encode(
        &volume,
        &seg.labels,
        &manifest,
        SegType::Binary,
        &eq,
        "changed content",
    )
    .unwrap();
    assert_ne!(other.sop_instance_uid, v.sop_instance_uid);

    let empty = segnode::grid::Grid::filled(volume.shape, 0u8);
    assert!(matches!(
        seg::encode(&volume, &empty, &manifest, SegType::Binary, &eq, "key"),
        Err(SegError::Empty)
    ));
}
