//! Processing on request with Orthanc as the PACS: studies stored only in Orthanc (no
//! routing) are asked for by Study Instance UID and by Accession Number, retrieved by
//! C-MOVE, by C-GET and by WADO-RS (Orthanc's DICOMweb plugin), processed, and their SEGs stored back into Orthanc; a study
//! already processed with the same model and instances is not computed again unless
//! forced; an unknown study and a refusing source end `failed` with the reason.

mod common;

use std::path::Path;
use std::time::Duration;

use common::orthanc::*;
use common::*;

/// Sources towards Orthanc on `port` (by C-MOVE and by C-GET, and one under an AE
/// title Orthanc refuses), and on `http` by WADO-RS; Orthanc as the destination of what
/// it sent.
fn sources(port: u16, http: u16) -> String {
    let mut tail = format!(
        "\n[[sources]]\nname = \"pacs-web\"\nretrieve = \"wado-rs\"\nurl = \"http://127.0.0.1:{http}/dicom-web\"\n\
         [[sources]]\nname = \"web-down\"\nretrieve = \"wado-rs\"\nurl = \"http://127.0.0.1:{}/dicom-web\"\n",
        free_port()
    );
    for (name, ae, retrieve) in [
        ("pacs", "ORTHANC", "c-move"),
        ("pacs-get", "ORTHANC", "c-get"),
        ("wrong-ae", "NOT_ORTHANC", "c-move"),
    ] {
        tail.push_str(&format!(
            "\n[[sources]]\nname = \"{name}\"\nae_title = \"{ae}\"\nhost = \"127.0.0.1\"\nport = {port}\nretrieve = \"{retrieve}\"\ntimeout_seconds = 20\n"
        ));
    }
    tail + &destination("ORTHANC", port, "ORTHANC", "timeout_seconds = 10\n")
}

/// Orthanc without routing (what it holds stays there until asked for), calling AE
/// titles checked, DICOMweb on `http`.
fn orthanc(work: &Path, dicom: u16, http: u16, node: &TestNode) -> Orthanc {
    assert!(
        Path::new(DICOMWEB_PLUGIN).exists(),
        "Orthanc's DICOMweb plugin not found: install Debian's orthanc-dicomweb (scripts/setup)"
    );
    start_orthanc(
        work,
        dicom,
        serde_json::json!(["SEGNODE", "127.0.0.1", node.addr.port()]),
        serde_json::json!({
            "LuaScripts": [],
            "DicomCheckCalledAet": true,
            "HttpPort": http,
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        }),
    )
}

fn upload(orthanc: &Orthanc, files: &[std::path::PathBuf]) {
    for f in files {
        curl(&[
            "-X",
            "POST",
            &format!("http://127.0.0.1:{}/instances", orthanc.http),
            "--data-binary",
            &format!("@{}", f.display()),
        ]);
    }
}

/// `POST /api/requests` with `body`: the status and the answer.
async fn post(node: &TestNode, body: serde_json::Value) -> (u16, serde_json::Value) {
    let rsp = reqwest::Client::new()
        .post(format!("http://{}/api/requests", node.http))
        .bearer_auth(node.token())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    (
        status,
        serde_json::from_slice(&rsp.bytes().await.unwrap()).unwrap(),
    )
}

async fn get(node: &TestNode, id: &serde_json::Value) -> serde_json::Value {
    reqwest::Client::new()
        .get(format!("http://{}/api/requests/{id}", node.http))
        .bearer_auth(node.token())
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .map(|b| serde_json::from_slice(&b).unwrap())
        .unwrap()
}

/// Asks for `body` and waits until the request is done or failed.
async fn request(node: &TestNode, body: serde_json::Value) -> serde_json::Value {
    let (status, answer) = post(node, body.clone()).await;
    assert_eq!(status, 202, "{body}: {answer}");
    assert_eq!(answer["state"], "queued");
    wait_for(Duration::from_secs(120), || async {
        let r = get(node, &answer["id"]).await;
        matches!(r["state"].as_str(), Some("done" | "failed")).then_some(r)
    })
    .await
    .expect("the request ends within 120 s")
}

fn states(request: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for h in request["history"].as_array().unwrap() {
        let s = h["state"].as_str().unwrap().to_string();
        if out.last() != Some(&s) {
            out.push(s);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn studies_only_in_orthanc_are_retrieved_by_move_get_and_wado_processed_and_stored_back() {
    let work = tempfile::tempdir().unwrap();
    let (dicom, http) = (free_port(), free_port());
    let node = TestNode::start_with_tail("", &sources(dicom, http)).await;
    let orthanc = orthanc(work.path(), dicom, http, &node);
    let first = tissue_series(&work.path().join("a"), 1, 12, 64);
    upload(&orthanc, &first);
    let study = "1.2.826.0.1.3680043.10.1.1";

    // By Study Instance UID, C-MOVE.
    let done = request(
        &node,
        serde_json::json!({ "study_uid": study, "source": "pacs" }),
    )
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        states(&done),
        ["queued", "retrieving", "processing", "done"],
        "{done}"
    );
    assert_eq!(done["progress"]["completed"], 12, "{done}");
    assert_eq!(done["progress"]["failed"], 0, "{done}");
    let jobs = done["jobs"].as_array().unwrap().clone();
    assert_eq!(jobs.len(), 1, "{done}");
    assert_eq!(done["series"][0]["reused"], false);
    let first_job = JobId(jobs[0].as_i64().unwrap());
    let job = wait_for(Duration::from_secs(60), || async {
        let j = node.store.job(first_job).await.unwrap()?;
        (j.state == JobState::Delivered).then_some(j)
    })
    .await
    .expect("the job's results reach Orthanc");
    assert_eq!(job.calling_ae, "ORTHANC");
    let base = format!("http://127.0.0.1:{}", orthanc.http);
    let studies: Vec<String> = serde_json::from_str(&curl(&[&format!("{base}/studies")])).unwrap();
    assert_eq!(studies.len(), 1);
    assert_eq!(
        series_of(&base, &studies[0], "SEG").len(),
        1,
        "the SEG is in the study"
    );

    // By Accession Number (both studies carry it), C-GET, stat: the first study was
    // processed with this model and these instances already; the second is new.
    let second = tissue_series(&work.path().join("b"), 2, 12, 64);
    upload(&orthanc, &second);
    let done = request(
        &node,
        serde_json::json!({ "accession_number": "SYNACC1", "source": "pacs-get", "priority": "stat" }),
    )
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["progress"]["studies"], 2, "{done}");
    assert_eq!(done["progress"]["completed"], 24, "{done}");
    assert_eq!(done["progress"]["already_processed"], 1, "{done}");
    let series = done["series"].as_array().unwrap();
    let reused: Vec<_> = series.iter().filter(|s| s["reused"] == true).collect();
    assert_eq!(reused.len(), 1, "{done}");
    assert_eq!(reused[0]["job_id"], first_job.0, "{done}");
    let new = series.iter().find(|s| s["reused"] == false).unwrap();
    let new_job = node
        .store
        .job(JobId(new["job_id"].as_i64().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new_job.priority, segnode::store::Priority::Stat);
    assert_eq!(new_job.study_uid.as_str(), "1.2.826.0.1.3680043.10.1.2");

    // Forced: the first study is processed again, in a new job that supersedes the old.
    let done = request(
        &node,
        serde_json::json!({ "study_uid": study, "source": "pacs", "force": true }),
    )
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["series"][0]["reused"], false, "{done}");
    let forced = done["jobs"][0].as_i64().unwrap();
    assert!(forced > new_job.id.0, "{done}");
    let old = node.store.job(first_job).await.unwrap().unwrap();
    assert_eq!(old.superseded_by, Some(JobId(forced)));

    // By WADO-RS from Orthanc's DICOMweb plugin: recorded as sent by the source.
    let third = tissue_series(&work.path().join("c"), 3, 12, 64);
    upload(&orthanc, &third);
    let done = request(
        &node,
        serde_json::json!({ "study_uid": "1.2.826.0.1.3680043.10.1.3", "source": "pacs-web" }),
    )
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(done["progress"]["retrieve"], "wado-rs", "{done}");
    assert_eq!(done["progress"]["completed"], 12, "{done}");
    assert_eq!(done["progress"]["instances_expected"], 12, "{done}");
    let web_job = node
        .store
        .job(JobId(done["jobs"][0].as_i64().unwrap()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(web_job.calling_ae, "pacs-web");
    assert!(web_job.summary.is_some());

    // The audit trail has every step of every request.
    let audit: Vec<_> = node
        .store
        .audit_query(&segnode::store::AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.event == AuditKind::RequestChanged)
        .collect();
    assert!(audit.len() >= 12, "{audit:?}");
    drop(orthanc);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_study_and_a_refusing_source_fail_with_the_reason() {
    let work = tempfile::tempdir().unwrap();
    let (dicom, http) = (free_port(), free_port());
    let (hook, mut events) = webhook_receiver().await;
    let secret = work.path().join("secret");
    std::fs::write(&secret, "worklist-secret\n").unwrap();
    let tail = format!(
        "{}\n[[webhooks]]\nurl = \"http://127.0.0.1:{hook}/segnode\"\nsecret_file = {:?}\n",
        sources(dicom, http),
        secret.display().to_string()
    );
    let mut config_text = String::new();
    let node = TestNode::start_text(|data| {
        config_text = format!("{}\n{tail}", test_config(data, ""));
        config_text.clone()
    })
    .await;
    let _orthanc = orthanc(work.path(), dicom, http, &node);

    let failed = request(
        &node,
        serde_json::json!({ "study_uid": "1.2.826.0.1.3680043.10.999", "source": "pacs" }),
    )
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.starts_with("unknown study"), "{reason}");
    assert_eq!(states(&failed), ["queued", "retrieving", "failed"]);
    // The worklist heard of every step, the failure with its reason.
    let failure = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, body) = events.recv().await.unwrap();
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(event["event"], "request_changed", "{event}");
            if event["state"] == "failed" {
                return event;
            }
        }
    })
    .await
    .expect("a webhook for the failed request");
    assert_eq!(failure["request_id"], failed["id"]);
    assert_eq!(failure["reason"], failed["reason"]);

    // From the command line, waiting for the end: exit status 1 and the reason.
    let config = work.path().join("segnode.toml");
    std::fs::write(&config, &config_text).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(["--config", config.to_str().unwrap(), "request", "--study"])
        .args([
            "1.2.826.0.1.3680043.10.998",
            "--source",
            "pacs-get",
            "--wait",
        ])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("failed: unknown study"), "{stderr}");
    let printed: serde_json::Value =
        serde_json::from_slice(&out.stdout[out.stdout.iter().position(|&b| b == b'{').unwrap()..])
            .unwrap();
    assert_eq!(printed["state"], "failed");

    let failed = request(
        &node,
        serde_json::json!({ "accession_number": "NOSUCH", "source": "pacs-get" }),
    )
    .await;
    assert!(
        failed["reason"]
            .as_str()
            .unwrap()
            .starts_with("unknown study"),
        "{failed}"
    );

    let failed = request(
        &node,
        serde_json::json!({ "study_uid": "1.2.826.0.1.3680043.10.1.1", "source": "wrong-ae" }),
    )
    .await;
    assert_eq!(failed["state"], "failed", "{failed}");
    let reason = failed["reason"].as_str().unwrap();
    assert!(reason.starts_with("source refused"), "{reason}");
    assert!(reason.contains("rejected the association"), "{reason}");
    let failed = request(
        &node,
        serde_json::json!({ "accession_number": "SYNACC1", "source": "web-down" }),
    )
    .await;
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("source refused: cannot reach"),
        "{reason}"
    );

    // The dashboard lists them, with their reasons.
    let page = reqwest::Client::new()
        .get(format!("http://{}/ui/", node.http))
        .header("cookie", format!("segnode_token={}", node.token()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(r#"<table id="requests">"#), "{page}");
    assert_eq!(page.matches(r#"class="request""#).count(), 5, "{page}");
    assert!(page.contains("source refused"), "{page}");

    // Requests the node cannot carry out are refused at once.
    let (status, answer) = post(&node, serde_json::json!({ "source": "pacs" })).await;
    assert_eq!(status, 400, "{answer}");
    let (status, answer) = post(
        &node,
        serde_json::json!({ "study_uid": "1.2.3", "source": "nowhere" }),
    )
    .await;
    assert_eq!(status, 404, "{answer}");
    let (status, _) = post(
        &node,
        serde_json::json!({ "study_uid": "1.2.3", "priority": "urgent" }),
    )
    .await;
    assert_eq!(status, 400);
    node.stop().await;
}
