//! Labels coded as TotalSegmentator codes them (a type with its side as a modifier, a
//! vessel with the organ it lies in as its region) travel into the SEG's segments and
//! the measurement report's finding sites, valid for dciodvfy and read back by highdicom.

mod common;

use std::path::{Path, PathBuf};

use common::*;

#[test]
fn side_and_region_reach_the_seg_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    // Coded as `kidney_right` (Kidney, modifier Right) and `liver_vessels` (Blood
    // vessel, region Liver).
    let model = recoded_test_model(
        dir.path(),
        r#"type = { scheme = "SCT", value = "64033007", meaning = "Kidney" }
type_modifier = { scheme = "SCT", value = "24028007", meaning = "Right" }"#,
        r#"type = { scheme = "SCT", value = "59820001", meaning = "Blood vessel" }
region = { scheme = "SCT", value = "10200004", meaning = "Liver" }"#,
    );
    let out = dir.path().join("out");
    let summary: serde_json::Value = serde_json::from_slice(&segnode_ok([
        "run".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        real_series().as_os_str(),
    ]))
    .unwrap();
    let series = &summary["series"][0];
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    let sr_file = PathBuf::from(series["sr"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&seg_file), Vec::<String>::new());
    assert_eq!(dciodvfy_errors(&sr_file), Vec::<String>::new());

    let labels = Path::new(series["output"].as_str().unwrap()).join("labels.u8");
    let report = check_seg(&seg_file, &real_series(), &labels);
    assert_eq!(
        report["segment_codes"],
        serde_json::json!([
            {"type": ["SCT", "64033007"], "type_modifier": ["SCT", "24028007"],
             "region": null, "region_modifier": null},
            {"type": ["SCT", "59820001"], "type_modifier": null,
             "region": ["SCT", "10200004"], "region_modifier": null},
        ]),
        "{report}"
    );

    let (ok, sr) = script_json("check_sr.py", &[&sr_file, &seg_file]);
    assert!(ok, "{sr}");
    let sites: Vec<_> = sr["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["finding_sites"].clone())
        .collect();
    assert_eq!(
        sites,
        [
            serde_json::json!([{"site": "64033007", "laterality": "24028007"}]),
            serde_json::json!([{"site": "10200004", "laterality": null}]),
        ],
        "{sr}"
    );
    assert_eq!(sr["tid1500reader_ok"], true, "{sr}");
}
