//! What is delivered of a result. `[review] deliver_failed_organs = false`: an organ
//! whose result failed its checks is left out of the SEG, the measurement report's
//! measurements and the key images, and the report lists it as left out with the
//! reasons. `[model] labels`: only the labels named are delivered. Offline and served
//! alike.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use segnode::store::JobState;

/// The node's configuration for a data directory under `dir`, leaving failed organs out.
fn leaving_out(dir: &Path) -> PathBuf {
    configured(dir, "", "[review]\ndeliver_failed_organs = false\n")
}

fn names(organs: &[&serde_json::Value]) -> Vec<String> {
    organs
        .iter()
        .map(|o| o["name"].as_str().unwrap().to_string())
        .collect()
}

/// The default model on the 40 mm slab: both kidneys fail (drawn in front of the spine,
/// the network unsure); they are not in the SEG, the report's groups or the key images,
/// the report names them as left out and says why, and the others keep their segments,
/// numbered again.
#[test]
fn failed_organs_are_left_out_and_the_report_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = leaving_out(dir.path());
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/abdomen-cascade");
    let series = run_offline(
        Some(&config),
        &model,
        &real_series(),
        &dir.path().join("out"),
    );
    let organs = series["sr"]["organs"].as_array().unwrap();
    let (failed, kept): (Vec<_>, Vec<_>) =
        organs.iter().partition(|o| o["qa"]["verdict"] == "fail");
    assert_eq!(
        names(&failed),
        ["right kidney", "left kidney"],
        "{organs:?}"
    );
    assert!(!kept.is_empty());
    for o in &failed {
        assert_eq!(
            (o["left_out"].as_bool(), o["segment_number"].as_u64()),
            (Some(true), Some(0))
        );
    }
    for (i, o) in kept.iter().enumerate() {
        assert!(o.get("left_out").is_none(), "{o}");
        assert_eq!(o["segment_number"].as_u64(), Some(i as u64 + 1), "{o}");
    }

    // The SEG holds exactly the label map without the failed organs.
    let output = PathBuf::from(series["output"].as_str().unwrap());
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&seg_file), Vec::<String>::new());
    let failed_values: Vec<u8> = failed
        .iter()
        .map(|o| o["value"].as_u64().unwrap() as u8)
        .collect();
    let delivered = dir.path().join("delivered");
    std::fs::create_dir(&delivered).unwrap();
    let labels: Vec<u8> = std::fs::read(output.join("labels.u8"))
        .unwrap()
        .into_iter()
        .map(|v| if failed_values.contains(&v) { 0 } else { v })
        .collect();
    std::fs::write(delivered.join("labels.u8"), &labels).unwrap();
    std::fs::copy(output.join("labels.json"), delivered.join("labels.json")).unwrap();
    let report = check_seg(&seg_file, &real_series(), &delivered.join("labels.u8"));
    assert_eq!(report["highdicom_differing_voxels"], 0, "{report}");
    assert_eq!(
        report["segments"],
        serde_json::Value::from(names(&kept)),
        "{report}"
    );

    // The report: a group per kept organ on its new segment; the failed ones left out.
    let sr_file = PathBuf::from(series["sr"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&sr_file), Vec::<String>::new());
    let (ok, sr) = script_json("check_sr.py", &[&sr_file, &seg_file]);
    assert!(ok, "{sr}");
    assert_eq!(sr["tid1500reader_ok"], true, "{sr}");
    let groups = sr["groups"].as_array().unwrap();
    assert_eq!(groups.len(), kept.len(), "{sr}");
    for (g, o) in groups.iter().zip(&kept) {
        assert_eq!(g["organ"], o["name"]);
        assert_eq!(g["segment_label"], o["name"], "{g}");
    }
    let left_out = sr["left_out"].as_array().unwrap();
    assert_eq!(
        left_out
            .iter()
            .map(|l| l["code"][1].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["9846003", "18639004"],
        "right and left kidney (SNOMED CT): {sr}"
    );
    for (l, o) in left_out.iter().zip(&failed) {
        let comment = l["comment"].as_str().unwrap();
        assert!(
            comment.starts_with(o["name"].as_str().unwrap())
                && comment.contains("Organ outside its usual position"),
            "{comment}"
        );
    }

    // Key images: outlines of the delivered organs only, none of the failed ones named.
    let images = series["key_images"].as_array().unwrap();
    assert!(!images.is_empty());
    for k in images {
        let file = PathBuf::from(k["file"].as_str().unwrap());
        // The legend has a line per delivered organ.
        let (slice, lines) = (
            PathBuf::from(k["slice"].to_string()),
            PathBuf::from(kept.len().to_string()),
        );
        let labels = [delivered.join("labels.u8"), delivered.join("labels.json")];
        let (ok, report) = script_json(
            "check_key_image.py",
            &[&file, &labels[0], &labels[1], &slice, &lines],
        );
        assert!(ok, "{report}");
        assert_eq!(report["boundary_coloured"], 1.0, "{report}");
        assert_eq!(report["other_coloured"], 0.0, "{report}");
        let obj = dicom_object::open_file(&file).unwrap();
        let description = obj
            .element(dicom_dictionary_std::tags::DERIVATION_DESCRIPTION)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert!(!description.contains("kidney"), "{description}");
    }
}

/// `[model] labels`: the default model on the slab delivers the spleen and the liver
/// only: the SEG's segments, the report's groups, the summary's organs (and their
/// checks) and the key images' legend; a name the model does not have is refused.
#[test]
fn only_the_labels_named_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let config = configured(dir.path(), "labels = [\"spleen\", \"liver\"]", "");
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/abdomen-cascade");
    let series = run_offline(
        Some(&config),
        &model,
        &real_series(),
        &dir.path().join("out"),
    );
    let organs: Vec<_> = series["sr"]["organs"].as_array().unwrap().iter().collect();
    assert_eq!(names(&organs), ["spleen", "liver"]);
    let seg_file = PathBuf::from(series["seg"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&seg_file), Vec::<String>::new());
    let output = PathBuf::from(series["output"].as_str().unwrap());
    let delivered = dir.path().join("delivered");
    std::fs::create_dir(&delivered).unwrap();
    let values: Vec<u8> = organs
        .iter()
        .map(|o| o["value"].as_u64().unwrap() as u8)
        .collect();
    let labels: Vec<u8> = std::fs::read(output.join("labels.u8"))
        .unwrap()
        .into_iter()
        .map(|v| if values.contains(&v) { v } else { 0 })
        .collect();
    std::fs::write(delivered.join("labels.u8"), &labels).unwrap();
    let report = check_seg(&seg_file, &real_series(), &delivered.join("labels.u8"));
    assert_eq!(report["segments"], serde_json::json!(["spleen", "liver"]));
    let sr_file = PathBuf::from(series["sr"]["file"].as_str().unwrap());
    let (ok, sr) = script_json("check_sr.py", &[&sr_file, &seg_file]);
    assert!(ok, "{sr}");
    assert_eq!(sr["groups"].as_array().unwrap().len(), 2, "{sr}");
    assert_eq!(sr["left_out"], serde_json::json!([]));
    // The cascade still says what it found of every label.
    assert_eq!(series["cascade"]["labels"].as_array().unwrap().len(), 6);

    let wrong = configured(dir.path(), "labels = [\"spleen\", \"appendix\"]", "");
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_segnode"))
        .arg("run")
        .arg("--config")
        .arg(&wrong)
        .arg("--model")
        .arg(&model)
        .arg("--out")
        .arg(dir.path().join("out2"))
        .arg(real_series())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(
        stderr.contains("model.labels: [\"appendix\"] not among the labels of model"),
        "{stderr}"
    );
}

/// The test cascade with its two labels coded as organs they cannot be (1.5 l of soft
/// tissue as a spleen, bone as a liver): both fail, so there is no SEG and no key
/// image; the report alone says what was left out, and why.
#[test]
fn when_every_organ_fails_only_the_report_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let config = leaving_out(dir.path());
    let model = recoded_test_model(
        dir.path(),
        r#"type = { scheme = "SCT", value = "78961009", meaning = "Spleen" }"#,
        r#"type = { scheme = "SCT", value = "10200004", meaning = "Liver" }"#,
    );

    let series = run_offline(
        Some(&config),
        &model,
        &real_series(),
        &dir.path().join("out"),
    );
    assert_eq!(
        series["result"], "every organ failed its quality checks and was left out",
        "{series}"
    );
    assert!(series["seg"].is_null(), "{series}");
    assert_eq!(series["key_images"], serde_json::json!([]));
    let organs = series["sr"]["organs"].as_array().unwrap();
    assert_eq!(organs.len(), 2);
    assert!(organs.iter().all(|o| o["left_out"] == true), "{organs:?}");

    let sr_file = PathBuf::from(series["sr"]["file"].as_str().unwrap());
    assert_eq!(dciodvfy_errors(&sr_file), Vec::<String>::new());
    let (ok, sr) = script_json("check_sr.py", &[&sr_file]);
    assert!(ok, "{sr}");
    assert_eq!(sr["template"], "1500");
    assert_eq!(sr["groups"], serde_json::json!([]));
    let codes: Vec<_> = sr["left_out"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["code"][1].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["78961009", "10200004"], "{sr}");
}

/// Served, with both settings: of the spleen, the kidneys and the liver named, the
/// destination receives a SEG of the spleen and the liver (the kidneys failed; the
/// stomach and pancreas were not named), the report that says the kidneys were left
/// out and the key images; the dashboard marks the kidneys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_result_is_delivered_without_its_failed_organs() {
    let scp_port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(scp_port, inbox.path(), &[]);
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/abdomen-cascade");
    let node = TestNode::start_text(|data| {
        format!(
            "{}\n{}\n[review]\ndeliver_failed_organs = false\n",
            test_config(data, "").replace(
                &format!("path = \"{}\"", test_model().display()),
                &format!(
                    "path = \"{}\"\nlabels = [\"spleen\", \"right kidney\", \"left kidney\", \"liver\"]",
                    model.display()
                )
            ),
            destination("PACS", scp_port, "STORESCU", "")
        )
    })
    .await;
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "{out}");
    let job = wait_for(Duration::from_secs(120), || async {
        all_jobs(&node.store)
            .await
            .into_iter()
            .find(|j| j.state == JobState::Delivered)
    })
    .await
    .expect("the result is delivered");
    let received = files_under(inbox.path());
    let segs: Vec<_> = received
        .iter()
        .map(|f| dicom_object::open_file(f).unwrap())
        .filter(|o| {
            o.element(dicom_dictionary_std::tags::SEGMENT_SEQUENCE)
                .is_ok()
        })
        .collect();
    assert_eq!(segs.len(), 1, "one SEG among {received:?}");
    let segments: Vec<String> = segs[0]
        .element(dicom_dictionary_std::tags::SEGMENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()
        .iter()
        .map(|s| {
            s.element(dicom_dictionary_std::tags::SEGMENT_LABEL)
                .unwrap()
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(segments, ["spleen", "liver"]);

    let token = std::fs::read_to_string(&node.config.http.token_file).unwrap();
    let page = reqwest::Client::new()
        .get(format!("http://{}/ui/jobs/{}", node.http, job.id))
        .header("Cookie", format!("segnode_token={}", token.trim()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("class=\"qa left-out\"").count(), 2, "{page}");
    node.stop().await;
}
