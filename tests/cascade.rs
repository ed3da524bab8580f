//! The cascade on ONNX Runtime: parity with the Python reference implementation,
//! broken model folders refused with the file named, small volumes padded, empty
//! results reported as "no structures found".

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use segnode::cascade::ModelConfig;
use segnode::cascade::{self, Cascade};
use segnode::config::Config;
use segnode::volume::{self, Tolerances, Volume};

fn model_config(path: &Path) -> ModelConfig {
    let text = format!(
        "[node]\nae_title='A'\ndata_dir='/tmp'\n[dicom]\nlisten='127.0.0.1:0'\nallow_any_calling_ae=true\n[model]\npath={:?}\nintra_threads=2\n",
        path.display().to_string()
    );
    Config::from_toml(&text, &Default::default())
        .unwrap()
        .model
        .unwrap()
}

fn cascade_for(path: &Path) -> Cascade {
    cascade::open_cascades(&model_config(path), 1)
        .unwrap()
        .0
        .pop()
        .unwrap()
}

fn assemble(dir: &Path) -> Volume {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    volume::assemble(&files, 2, &Tolerances::default()).unwrap()
}

/// The node's label map and the Python reference's for `model` on the real series.
fn node_and_reference(model: &Path) -> (segnode::cascade::Segmentation, Vec<u8>) {
    let volume = assemble(&real_series());
    let seg = cascade_for(model).run(&volume).unwrap();
    assert_eq!(seg.labels.shape, volume.shape);
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.u8");
    let status = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference_cascade.py"))
        .arg(real_series())
        .arg(model)
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    (seg, std::fs::read(&reference).unwrap())
}

#[test]
fn node_and_python_reference_agree_on_the_real_series() {
    let (seg, expected) = node_and_reference(&test_model());
    for label in [1u8, 2] {
        let d = dice(&seg.labels.data, label, &expected, label);
        assert!(d >= 0.999, "label {label}: Dice {d}");
    }
    // Both labels are really there: parity of empty maps would prove nothing.
    assert!(
        seg.summary.labels.iter().all(|l| l.voxels > 1000),
        "{:?}",
        seg.summary.labels
    );
    assert!(!seg.summary.empty);
    assert!(seg.summary.stage2_region_fraction > 0.0 && seg.summary.stage2_region_fraction < 1.0);
}

#[test]
fn the_default_model_agrees_with_the_python_reference() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/abdomen-cascade");
    let (seg, expected) = node_and_reference(&model);
    let found: Vec<&segnode::cascade::LabelVolume> =
        seg.summary.labels.iter().filter(|l| l.voxels > 0).collect();
    assert!(
        found.len() >= 2,
        "the default model finds organs: {:?}",
        seg.summary.labels
    );
    for label in 1u8..=6 {
        let d = dice(&seg.labels.data, label, &expected, label);
        assert!(d >= 0.999, "label {label}: Dice {d}");
    }
}

fn broken_model(change: impl FnOnce(&Path)) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["model.toml", "stage1.onnx", "stage2.onnx"] {
        std::fs::copy(test_model().join(f), dir.path().join(f)).unwrap();
    }
    change(dir.path());
    dir
}

fn check_fails_naming(model: &Path, needle: &str) {
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("segnode.toml");
    let text = test_config(&work.path().join("data"), "").replace(
        &test_model().display().to_string(),
        &model.display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "check passed:\n{text}");
    assert!(
        text.contains(needle),
        "check output lacks {needle:?}:\n{text}"
    );
    // Start-up fails the same way.
    let out = Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve started:\n{text}");
    assert!(
        text.contains(needle),
        "serve error lacks {needle:?}:\n{text}"
    );
}

#[test]
fn missing_file_wrong_checksum_or_shape_fail_check_and_start_up_naming_the_file() {
    let missing = broken_model(|d| std::fs::remove_file(d.join("stage2.onnx")).unwrap());
    check_fails_naming(
        missing.path(),
        &format!(
            "{} is missing",
            missing.path().join("stage2.onnx").display()
        ),
    );

    let checksum = broken_model(|d| {
        let m = std::fs::read_to_string(d.join("model.toml")).unwrap();
        let sha = m.split("sha256 = \"").nth(1).unwrap()[..64].to_string();
        std::fs::write(d.join("model.toml"), m.replacen(&sha, &"0".repeat(64), 1)).unwrap();
    });
    check_fails_naming(
        checksum.path(),
        &format!(
            "{} has SHA-256",
            checksum.path().join("stage1.onnx").display()
        ),
    );

    let shape = broken_model(|d| {
        let m = std::fs::read_to_string(d.join("model.toml")).unwrap();
        std::fs::write(
            d.join("model.toml"),
            m.replace("patch = [16, 32, 32]", "patch = [16, 48, 48]"),
        )
        .unwrap();
    });
    check_fails_naming(
        shape.path(),
        &format!(
            "{} does not match the manifest",
            shape.path().join("stage2.onnx").display()
        ),
    );
}

#[test]
fn a_volume_smaller_than_a_patch_is_padded_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_series(dir.path(), 31, 3, 8); // 3 slices of 8x8 at 3 x 0.8 mm
    let volume = assemble(dir.path());
    let seg = cascade_for(&test_model()).run(&volume).unwrap();
    assert_eq!(seg.labels.shape, [3, 8, 8]);
    assert_eq!(seg.summary.stage1_grid, Some([2, 1, 1]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_stage1_result_ends_the_job_succeeded_with_no_structures_found() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let series = tempfile::tempdir().unwrap();
    for (i, f) in synthetic_series(series.path(), 32, 12, 16)
        .iter()
        .enumerate()
    {
        let sop = format!("1.2.826.0.1.3680043.10.1.32.1.{}", i + 1);
        let mut obj = ct_slice(
            "1.2.826.0.1.3680043.10.1.32",
            "1.2.826.0.1.3680043.10.1.32.1",
            &sop,
            i as u32,
            16,
        );
        // Air everywhere: -1024 HU.
        obj.put(DataElement::new(
            dicom_dictionary_std::tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(vec![0u16; 256].into()),
        ));
        write_part10(obj, CT_STORAGE, &sop, f);
    }
    let volume = assemble(series.path());
    let seg = cascade_for(&test_model()).run(&volume).unwrap();
    assert!(seg.summary.empty);
    assert!(seg.labels.data.iter().all(|l| *l == 0));

    let node = TestNode::start().await;
    let (ok, out) = storescu(&node.port(), &[series.path()]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs[0].state, JobState::Succeeded);
    assert_eq!(jobs[0].reason.as_deref(), Some("no structures found"));
    let summary: serde_json::Value =
        serde_json::from_str(jobs[0].summary.as_deref().unwrap()).unwrap();
    assert_eq!(summary["cascade"]["empty"], true);
    node.stop().await;
}

#[test]
fn a_required_cuda_provider_that_is_missing_is_an_error_not_a_fallback() {
    // The pinned PyPI wheel is CPU-only: asking for CUDA must fail, clearly.
    let mut config = model_config(&test_model());
    config.provider = segnode::cascade::runtime::Provider::Cuda;
    let err = match cascade::open_cascades(&config, 1) {
        Ok(_) => panic!("CUDA was required but the session fell back to the CPU"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("CUDA execution provider required but unavailable"),
        "{err}"
    );
    assert!(err.contains("stage1.onnx"), "{err}");
}
