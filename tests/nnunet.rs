//! nnU-Net v2 models in the node. `onnx/nnunet-reference` is a real nnU-Net v2 model
//! (trained by nnU-Net on the two training patients, `training/nnunet/make_model.py`)
//! imported with `segnode import-nnunet`; `tests/data/nnunet/*.u8.gz` are nnU-Net's own
//! predictions of the test series with it (`nnUNetPredictor`,
//! `training/nnunet/reference.py`). `segnode run` must give the same labels (Dice at
//! least 0.99 per label) with one fold and two, mirroring on and off; and the imported
//! model goes through `segnode serve` to a DCMTK storescp with its own labels and its
//! name, version and checksums in the audit trail; behind a coarse stage 1 it runs on
//! that stage's region only.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use dicom_dictionary_std::tags;
use segnode::cascade::manifest::Manifest;
use segnode::store::{AuditFilter, AuditKind, JobState};

fn reference_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/nnunet-reference")
}

/// nnU-Net's label map of the test series for one variant, (z, y, x) as `labels.u8`.
fn nnunet_labels(variant: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/nnunet")
        .join(format!("{variant}.u8.gz"));
    let mut labels = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).unwrap())
        .read_to_end(&mut labels)
        .unwrap();
    labels
}

/// A copy of the imported model with its first `folds` folds and mirroring on or off:
/// what `import-nnunet --folds … [--no-mirroring]` writes.
fn variant(folds: usize, mirroring: bool, dir: &Path) -> PathBuf {
    let from = reference_model();
    let mut manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(from.join("model.toml")).unwrap()).unwrap();
    manifest.stage2.folds.truncate(folds);
    if !mirroring {
        manifest.stage2.mirror_axes.clear();
    }
    for network in &manifest.stage2.folds {
        std::fs::copy(from.join(&network.file), dir.join(&network.file)).unwrap();
    }
    std::fs::write(dir.join("model.toml"), toml::to_string(&manifest).unwrap()).unwrap();
    dir.to_path_buf()
}

/// Dice per label present in either map.
fn dice_per_label(a: &[u8], b: &[u8]) -> BTreeMap<u8, f64> {
    let labels: std::collections::BTreeSet<u8> =
        a.iter().chain(b).copied().filter(|v| *v != 0).collect();
    labels.into_iter().map(|l| (l, dice(a, l, b, l))).collect()
}

fn parity(folds: usize, mirroring: bool) {
    let name = format!(
        "nnunet-f{}-{}",
        if folds == 1 { "0" } else { "01" },
        if mirroring { "mirror" } else { "nomirror" }
    );
    let expected = nnunet_labels(&name);
    let model = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let stdout = segnode_ok([
        "run".as_ref(),
        "--model".as_ref(),
        variant(folds, mirroring, model.path()).as_os_str(),
        "--out".as_ref(),
        out.path().as_os_str(),
        real_series().as_os_str(),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(summary["series"][0]["cascade"]["pipeline"], "nnunet");
    let got = std::fs::read(out.path().join("series-001/labels.u8")).unwrap();
    assert_eq!(got.len(), expected.len());
    let organs = (1..=6u8)
        .filter(|l| expected.iter().filter(|v| *v == l).count() >= 1000)
        .count();
    assert!(
        organs >= 2,
        "{name}: nnU-Net found {organs} organs; the reference model is too weak to compare"
    );
    let dice = dice_per_label(&got, &expected);
    eprintln!("{name}: Dice per label {dice:?}");
    for (label, d) in &dice {
        assert!(
            *d >= 0.99,
            "{name}: label {label} Dice {d:.4} against nnU-Net (all: {dice:?})"
        );
    }
}

#[test]
fn one_fold_without_mirroring_labels_as_nnunet_does() {
    parity(1, false);
}

#[test]
fn one_fold_with_mirroring_labels_as_nnunet_does() {
    parity(1, true);
}

#[test]
fn two_folds_without_mirroring_label_as_nnunet_does() {
    parity(2, false);
}

#[test]
fn two_folds_with_mirroring_label_as_nnunet_does() {
    parity(2, true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_imported_model_goes_through_serve_with_its_labels_and_checksums() {
    let series = real_series();
    let model_dir = tempfile::tempdir().unwrap();
    let model = variant(1, false, model_dir.path());
    let manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(model.join("model.toml")).unwrap()).unwrap();
    let port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(port, inbox.path(), &[]);
    let node = TestNode::start_text(|data| {
        let config = test_config(data, "").replace(
            &test_model().display().to_string(),
            &model.display().to_string(),
        );
        format!("{config}\n{}", destination("PACS", port, "STORESCU", ""))
    })
    .await;
    let (ok, out) = storescu(&node.port(), &[&series]).await;
    assert!(ok, "{out}");
    let delivered = wait_for(Duration::from_secs(240), || async {
        let jobs = all_jobs(&node.store).await;
        jobs.into_iter().find(|j| j.state == JobState::Delivered)
    })
    .await;
    let Some(delivered) = delivered else {
        panic!("not delivered: {:?}", all_jobs(&node.store).await);
    };
    let seg = files_under(inbox.path())
        .into_iter()
        .find(|f| {
            dicom_object::open_file(f).is_ok_and(|o| {
                o.meta()
                    .media_storage_sop_class_uid()
                    .trim_end_matches('\0')
                    == segnode::dicom::uid::SEGMENTATION_STORAGE
            })
        })
        .expect("a SEG at the storescp");
    assert_eq!(dciodvfy_errors(&seg), Vec::<String>::new());
    // The SEG's segments are the model's labels, by its names and codes.
    let obj = dicom_object::open_file(&seg).unwrap();
    let segments = obj
        .element(tags::SEGMENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    assert!(!segments.is_empty());
    for item in segments {
        let label = item.element(tags::SEGMENT_LABEL).unwrap().to_str().unwrap();
        assert!(
            manifest.labels.iter().any(|l| l.name == label.trim()),
            "segment {label:?} is not a label of the model"
        );
    }
    // The audit trail names the model, its version and every file's checksum.
    let events = node
        .store
        .audit_query(&AuditFilter {
            job_id: Some(delivered.id),
            event: Some(AuditKind::JobSucceeded),
            limit: Some(10),
            ..AuditFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 1);
    let detail: serde_json::Value = serde_json::from_str(&events[0].detail).unwrap();
    let cascade = &detail["summary"]["cascade"];
    assert_eq!(cascade["model"], manifest.name.as_str());
    assert_eq!(cascade["model_version"], manifest.version.as_str());
    let sums: Vec<&str> = manifest
        .stage2
        .folds
        .iter()
        .map(|f| f.sha256.as_str())
        .collect();
    assert_eq!(cascade["model_sha256"], serde_json::json!(sums));
    node.stop().await;
}

#[test]
fn behind_a_coarse_stage_the_nnunet_stage_runs_on_its_region_only() {
    // What `import-nnunet --behind onnx/abdomen-cascade` writes: the default model's
    // stage 1 (trained in SPL) in front of the imported model (SAR).
    let dir = tempfile::tempdir().unwrap();
    let model = variant(1, false, dir.path());
    let coarse_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/abdomen-cascade");
    let coarse: Manifest =
        toml::from_str(&std::fs::read_to_string(coarse_dir.join("model.toml")).unwrap()).unwrap();
    let mut manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(model.join("model.toml")).unwrap()).unwrap();
    let mut stage1 = coarse.stage1.clone().unwrap();
    std::fs::copy(
        coarse_dir.join(stage1.file.as_ref().unwrap()),
        model.join("stage1.onnx"),
    )
    .unwrap();
    stage1.file = Some("stage1.onnx".into());
    stage1.frame = Some(coarse.frame);
    manifest.stage1 = Some(stage1);
    manifest.cascade = coarse.cascade.clone();
    std::fs::write(
        model.join("model.toml"),
        toml::to_string(&manifest).unwrap(),
    )
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    let stdout = segnode_ok([
        "run".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.path().as_os_str(),
        real_series().as_os_str(),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let cascade = &summary["series"][0]["cascade"];
    assert!(cascade["stage1_grid"].is_array(), "{cascade}");
    let fraction = cascade["stage2_region_fraction"].as_f64().unwrap();
    assert!(
        fraction > 0.05 && fraction < 0.6,
        "crop fraction {fraction}"
    );
    // The box it ran on, reported: the crop's share of the series.
    let b: [[f64; 3]; 2] = serde_json::from_value(cascade["stage2_box"].clone()).unwrap();
    let dims = &summary["series"][0]["shape"];
    let series: f64 = (0..3).map(|i| dims[i].as_f64().unwrap()).product();
    let volume: f64 = (0..3).map(|i| b[1][i] - b[0][i]).product();
    assert!((volume / series - fraction).abs() < 1e-9, "{b:?} {dims}");
    // Inside the crop it still finds the liver nnU-Net finds on the whole series.
    let got = std::fs::read(out.path().join("series-001/labels.u8")).unwrap();
    let alone = nnunet_labels("nnunet-f0-nomirror");
    let liver = |labels: &[u8]| labels.iter().filter(|v| **v == 4).count();
    assert!(
        liver(&got) > liver(&alone) / 2,
        "{} vs {}",
        liver(&got),
        liver(&alone)
    );
}

/// The reference model's manifest (its files copied into `dir`) with `edit` applied.
fn edited(dir: &Path, edit: impl FnOnce(&mut Manifest)) -> PathBuf {
    let from = reference_model();
    let mut manifest: Manifest =
        toml::from_str(&std::fs::read_to_string(from.join("model.toml")).unwrap()).unwrap();
    manifest.stage2.mirror_axes.clear();
    for network in &manifest.stage2.folds {
        std::fs::copy(from.join(&network.file), dir.join(&network.file)).unwrap();
    }
    edit(&mut manifest);
    std::fs::write(dir.join("model.toml"), toml::to_string(&manifest).unwrap()).unwrap();
    dir.to_path_buf()
}

/// A two-part model as `import-nnunet A B` writes it, made of the reference model's two
/// folds as its parts, the second's labels numbered 7 to 12 ("... (part 2)"): each part
/// labels as it does alone, the second's labels written over the first's where it has
/// one, as TotalSegmentator merges its parts. With `[model] labels` naming labels of the
/// first part only, the second is never opened nor run.
#[test]
fn the_parts_of_a_multi_part_model_merge_as_totalsegmentator_merges_them() {
    let alone = |fold: usize| {
        let dir = tempfile::tempdir().unwrap();
        let model = edited(dir.path(), |m| {
            m.stage2.folds = vec![m.stage2.folds[fold].clone()];
        });
        let out = dir.path().join("out");
        run_offline(None, &model, &real_series(), &out);
        std::fs::read(out.join("series-001/labels.u8")).unwrap()
    };
    let (first, second) = (alone(0), alone(1));
    let dir = tempfile::tempdir().unwrap();
    let model = edited(dir.path(), |m| {
        let mut part2 = m.stage2.clone();
        part2.folds = vec![m.stage2.folds[1].clone()];
        part2.channels = (7..=12).collect();
        m.stage2.folds.truncate(1);
        m.stage2.channels = (1..=6).collect();
        m.parts = vec![part2];
        let more: Vec<_> = m
            .labels
            .iter()
            .map(|l| {
                let mut l = l.clone();
                l.value += 6;
                l.name = format!("{} (part 2)", l.name);
                l
            })
            .collect();
        m.labels.extend(more);
    });
    let out = dir.path().join("out");
    let summary = run_offline(None, &model, &real_series(), &out);
    assert_eq!(summary["cascade"]["labels"].as_array().unwrap().len(), 12);
    let merged = std::fs::read(out.join("series-001/labels.u8")).unwrap();
    let expected: Vec<u8> = first
        .iter()
        .zip(&second)
        .map(|(a, b)| if *b != 0 { b + 6 } else { *a })
        .collect();
    assert!(second.iter().filter(|v| **v != 0).count() > 10_000);
    assert!(expected.iter().any(|v| (1..=6).contains(v)));
    let differing = merged.iter().zip(&expected).filter(|(a, b)| a != b).count();
    assert_eq!(
        differing, 0,
        "{differing} voxels differ from the parts run alone"
    );
    let liver = summary["cascade"]["labels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "liver (part 2)")
        .unwrap()
        .clone();
    assert!(
        liver["confidence"]["mean"].as_f64().unwrap() > 0.5,
        "{liver}"
    );

    let config = configured(dir.path(), "labels = [\"liver\", \"spleen\"]", "");
    let out = dir.path().join("only-part-1");
    let summary = run_offline(Some(&config), &model, &real_series(), &out);
    assert_eq!(
        summary["cascade"]["parts_skipped"], 1,
        "{}",
        summary["cascade"]
    );
    assert_eq!(
        std::fs::read(out.join("series-001/labels.u8")).unwrap(),
        first
    );
    let organs: Vec<&str> = summary["sr"]["organs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    let found: Vec<&str> = [(1u8, "spleen"), (4, "liver")]
        .into_iter()
        .filter(|(v, _)| first.contains(v))
        .map(|(_, name)| name)
        .collect();
    assert!(found.contains(&"liver"));
    assert_eq!(organs, found);
}
