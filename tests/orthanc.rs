//! The whole loop against a real PACS: the real series is uploaded to Orthanc, Orthanc
//! routes it to segnode when the series is stable (Lua, OnStableSeries), segnode
//! processes it and stores the SEG back, and the SEG is found in the same study through
//! Orthanc's REST API; the job is `delivered`.

mod common;

use std::path::Path;
use std::time::Duration;

use common::orthanc::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_routes_the_series_and_gets_the_seg_back_in_the_same_study() {
    let work = tempfile::tempdir().unwrap();
    // The node first (its port goes into Orthanc's configuration), then Orthanc.
    let orthanc_dicom = free_port();
    let tail = destination(
        "ORTHANC",
        orthanc_dicom,
        "ORTHANC",
        "timeout_seconds = 10\nobjects = [\"seg\", \"sr\", \"key_images\"]\n",
    );
    let node = TestNode::start_with_tail("", &tail).await;
    let orthanc = start_orthanc(
        work.path(),
        orthanc_dicom,
        serde_json::json!(["SEGNODE", "127.0.0.1", node.addr.port()]),
        serde_json::json!({}),
    );
    round_trip(&node, &orthanc, work.path()).await;
    key_images_in_the_study(&node, &orthanc).await;
    drop(orthanc);
    node.stop().await;
}

/// The key images reached the study; Orthanc renders each (its own preview), and the
/// coloured pixels of its rendering are the outline of the label map on that slice.
async fn key_images_in_the_study(node: &TestNode, orthanc: &Orthanc) {
    let base = format!("http://127.0.0.1:{}", orthanc.http);
    let studies: Vec<String> = serde_json::from_str(&curl(&[&format!("{base}/studies")])).unwrap();
    let jobs = all_jobs(&node.store).await;
    let summary: serde_json::Value =
        serde_json::from_str(jobs[0].summary.as_deref().unwrap()).unwrap();
    let expected = summary["key_images"].as_array().unwrap();
    assert!(!expected.is_empty());
    let series = series_of(&base, &studies[0], "OT");
    assert_eq!(series.len(), 1, "one key image series");
    let instances = series[0]["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), expected.len());
    let offline = tempfile::tempdir().unwrap();
    segnode_ok([
        "run".as_ref(),
        "--model".as_ref(),
        test_model().as_os_str(),
        "--out".as_ref(),
        offline.path().as_os_str(),
        real_series().as_os_str(),
    ]);
    let output = offline.path().join("series-001");
    for id in instances {
        let id = id.as_str().unwrap();
        let tags: serde_json::Value =
            serde_json::from_str(&curl(&[&format!("{base}/instances/{id}/simplified-tags")]))
                .unwrap();
        let uid = tags["SOPInstanceUID"].as_str().unwrap();
        let k = expected
            .iter()
            .find(|k| k["sop_instance_uid"] == uid)
            .expect("a key image of the job");
        let png = offline.path().join(format!("{id}.png"));
        curl(&[
            &format!("{base}/instances/{id}/preview"),
            "-o",
            png.to_str().unwrap(),
        ]);
        let report = check_key_image(&png, &output, k["slice"].as_u64().unwrap());
        assert_eq!(report["size"], serde_json::json!([512, 512]), "{report}");
        assert!(
            report["boundary_pixels"].as_u64().unwrap() > 100,
            "{report}"
        );
        assert!(
            report["boundary_coloured"].as_f64().unwrap() > 0.99,
            "{report}"
        );
        assert!(
            report["other_coloured"].as_f64().unwrap() < 0.001,
            "{report}"
        );
    }
}

/// Uploads the real series to Orthanc, waits for the SEG that segnode stores back into
/// the same study, and checks it against the node's delivered job.
async fn round_trip(node: &TestNode, orthanc: &Orthanc, work: &Path) {
    let base = format!("http://127.0.0.1:{}", orthanc.http);

    for f in std::fs::read_dir(real_series()).unwrap() {
        let f = f.unwrap().path();
        curl(&[
            "-X",
            "POST",
            &format!("{base}/instances"),
            "--data-binary",
            &format!("@{}", f.display()),
        ]);
    }
    let studies: Vec<String> = serde_json::from_str(&curl(&[&format!("{base}/studies")])).unwrap();
    assert_eq!(studies.len(), 1);
    let study = &studies[0];

    // Orthanc routes the stable series; segnode segments and stores the SEG back.
    let seg_series = wait_for(Duration::from_secs(90), || async {
        let series: Vec<serde_json::Value> =
            serde_json::from_str(&curl(&[&format!("{base}/studies/{study}/series?expand")]))
                .ok()?;
        series
            .into_iter()
            .find(|s| s["MainDicomTags"]["Modality"] == "SEG")
    })
    .await
    .unwrap_or_else(|| {
        let log = std::fs::read_to_string(work.join("orthanc.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "no SEG in the study; Orthanc log (last lines, newest first):\n{}",
            tail.join("\n")
        )
    });
    let instances = seg_series["Instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1);
    let tags: serde_json::Value = serde_json::from_str(&curl(&[&format!(
        "{base}/instances/{}/simplified-tags",
        instances[0].as_str().unwrap()
    )]))
    .unwrap();
    let jobs = wait_for(Duration::from_secs(20), || async {
        let jobs = all_jobs(&node.store).await;
        (jobs.first()?.state == JobState::Delivered).then_some(jobs)
    })
    .await
    .expect("the job becomes delivered");
    assert_eq!(jobs[0].calling_ae, "ORTHANC");
    assert_eq!(jobs[0].instance_count, 20);
    assert_eq!(
        tags["SOPInstanceUID"].as_str(),
        jobs[0].seg_sop_instance_uid.as_deref()
    );
    assert_eq!(
        tags["StudyInstanceUID"].as_str(),
        Some(jobs[0].study_uid.as_str())
    );
    assert_eq!(tags["Modality"], "SEG");
    // The measurement report is in the study too.
    let summary: serde_json::Value =
        serde_json::from_str(jobs[0].summary.as_deref().unwrap()).unwrap();
    let sr = series_of(&base, study, "SR");
    assert_eq!(sr.len(), 1, "one SR series");
    let sr_instance = sr[0]["Instances"][0].as_str().unwrap();
    let sr_tags: serde_json::Value = serde_json::from_str(&curl(&[&format!(
        "{base}/instances/{sr_instance}/simplified-tags"
    )]))
    .unwrap();
    assert_eq!(sr_tags["SOPInstanceUID"], summary["sr"]["sop_instance_uid"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_over_dicom_tls_both_ways() {
    let work = tempfile::tempdir().unwrap();
    let pki = Pki::new();
    pki.issue("node", "IP:127.0.0.1", false);
    pki.issue("orthanc", "IP:127.0.0.1,DNS:orthanc.test", false);
    let p = |n: &str| pki.path(n).display().to_string();
    let orthanc_dicom = free_port();
    let extra_dicom = pki.dicom_tls("node");
    let tail = destination(
        "ORTHANC",
        orthanc_dicom,
        "ORTHANC",
        &format!("timeout_seconds = 10\n{}", pki.destination_tls("node")),
    );
    let node = TestNode::start_with_tail(&extra_dicom, &tail).await;
    let tls_port = node.tls_addr.expect("TLS listener").port();
    // Orthanc's own DICOM port speaks TLS only; it sends to segnode's TLS listener.
    let orthanc = start_orthanc(
        work.path(),
        orthanc_dicom,
        serde_json::json!({ "AET": "SEGNODE", "Host": "127.0.0.1", "Port": tls_port, "UseDicomTls": true }),
        serde_json::json!({
            "DicomTlsEnabled": true,
            "DicomTlsCertificate": p("orthanc.crt"),
            "DicomTlsPrivateKey": p("orthanc.key"),
            "DicomTlsTrustedCertificates": p("ca.crt"),
            "DicomTlsRemoteCertificateRequired": true,
        }),
    );
    round_trip(&node, &orthanc, work.path()).await;
    let audit = node
        .store
        .audit_query(&segnode::store::AuditFilter::default())
        .await
        .unwrap();
    assert!(
        audit
            .iter()
            .all(|a| a.event != AuditKind::AssociationRejected),
        "{:?}",
        audit
            .iter()
            .filter(|a| a.event == AuditKind::AssociationRejected)
            .collect::<Vec<_>>()
    );
    drop(orthanc);
    node.stop().await;
}

/// DICOMweb both ways: Orthanc's DICOMweb client pushes the series to the node by
/// STOW-RS (the node's token in its headers), and the node delivers SEG, SR and key
/// images back by STOW-RS to Orthanc's DICOMweb server, with basic authentication.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orthanc_sends_by_stow_rs_and_gets_the_results_back_by_stow_rs() {
    assert!(
        Path::new(DICOMWEB_PLUGIN).exists(),
        "Orthanc's DICOMweb plugin not found: install Debian's orthanc-dicomweb (scripts/setup)"
    );
    let work = tempfile::tempdir().unwrap();
    let orthanc_http = free_port();
    let password = work.path().join("orthanc-password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let tail = format!(
        "\n[[destinations]]\nname = \"orthanc-web\"\nkind = \"dicomweb\"\n\
         url = \"http://127.0.0.1:{orthanc_http}/dicom-web\"\nusername = \"segnode\"\n\
         password_file = \"{}\"\nroute_from = [\"DICOMWEB\"]\ntimeout_seconds = 20\n\
         objects = [\"seg\", \"sr\", \"key_images\"]\n",
        password.display()
    );
    // The viewer the node serves here reads Orthanc's DICOMweb: what the PACS side sees.
    let viewer = work.path().join("viewer");
    std::fs::create_dir(&viewer).unwrap();
    let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("var/viewer/ohif-3.13.2");
    assert!(
        installed.join("index.html").exists(),
        "run scripts/install-viewer (scripts/setup)"
    );
    viewer_reading(
        &installed,
        &format!("http://127.0.0.1:{orthanc_http}/dicom-web"),
        &viewer,
    );
    let node = TestNode::start_text(|data| {
        test_config(data, "").replace(
            "[http]\n",
            &format!("[http]\nviewer_dir = \"{}\"\n", viewer.display()),
        ) + &tail
    })
    .await;
    let orthanc = start_orthanc(
        work.path(),
        free_port(),
        serde_json::json!(["SEGNODE", "127.0.0.1", node.addr.port()]),
        serde_json::json!({
            "HttpPort": orthanc_http,
            "AuthenticationEnabled": true,
            "RegisteredUsers": { "segnode": "s3cret" },
            "LuaScripts": [],
            "Plugins": [DICOMWEB_PLUGIN],
            "DicomWeb": {
                "Enable": true,
                "Root": "/dicom-web/",
                "Servers": { "segnode": {
                    "Url": format!("http://{}/dicom-web/", node.http),
                    "HttpHeaders": { "Authorization": format!("Bearer {}", node.token()) },
                } },
            },
        }),
    );
    let base = format!("http://127.0.0.1:{}", orthanc.http);
    let auth = ["-u", "segnode:s3cret"];
    for f in std::fs::read_dir(real_series()).unwrap() {
        let f = f.unwrap().path();
        let url = format!("{base}/instances");
        let data = format!("@{}", f.display());
        curl(&[&auth[..], &["-X", "POST", &url, "--data-binary", &data]].concat());
    }
    let series: Vec<String> =
        serde_json::from_str(&curl(&[&auth[..], &[&format!("{base}/series")]].concat())).unwrap();
    assert_eq!(series.len(), 1);
    let body = serde_json::json!({ "Resources": [series[0]] }).to_string();
    let stow = format!("{base}/dicom-web/servers/segnode/stow");
    let answer = curl(&[&auth[..], &["-X", "POST", &stow, "-d", &body]].concat());
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["InstancesCount"], "20", "{answer}");

    let jobs = wait_for(Duration::from_secs(90), || async {
        let jobs = all_jobs(&node.store).await;
        (jobs.first()?.state == JobState::Delivered).then_some(jobs)
    })
    .await
    .expect("the job becomes delivered");
    assert_eq!(jobs[0].calling_ae, "DICOMWEB");
    assert_eq!(jobs[0].instance_count, 20);

    // In Orthanc, by its own DICOMweb: the SEG, the SR and the key images, in the study.
    let qido = format!("{base}/dicom-web/studies/{}/series", jobs[0].study_uid);
    let found: Vec<serde_json::Value> =
        serde_json::from_str(&curl(&[&auth[..], &[&qido]].concat())).unwrap();
    let modalities: Vec<&str> = found
        .iter()
        .filter_map(|s| s["00080060"]["Value"][0].as_str())
        .collect();
    // (The key images are secondary captures: OT.)
    for m in ["CT", "SEG", "SR", "OT"] {
        assert!(modalities.contains(&m), "{modalities:?}");
    }
    let seg = jobs[0].seg_sop_instance_uid.clone().unwrap();
    let instances = format!("{base}/dicom-web/instances?SOPInstanceUID={seg}");
    let found: Vec<serde_json::Value> =
        serde_json::from_str(&curl(&[&auth[..], &[&instances]].concat())).unwrap();
    assert_eq!(found.len(), 1, "the SEG by its UID");
    let deliveries = node.store.job_results(jobs[0].id).await.unwrap();
    assert!(deliveries.len() >= 3, "SEG, SR and key images");

    // OHIF reading Orthanc's DICOMweb (another origin, with Orthanc's credentials) shows
    // the delivered SEG over the CT.
    let seg_series = qido_series_of(&base, &auth, &jobs[0].study_uid, "SEG");
    let url = format!(
        "http://{}/viewer/viewer?StudyInstanceUIDs={}&initialSeriesInstanceUID={seg_series}",
        node.http, jobs[0].study_uid
    );
    let shots = tempfile::tempdir().unwrap();
    let cookie = format!("segnode_token={}", node.token());
    view_seg(
        &url,
        &shots.path().join("orthanc.png"),
        &[
            "--cookie",
            &cookie,
            "--header",
            "Authorization: Basic c2Vnbm9kZTpzM2NyZXQ=",
            "--chromium-flag=--disable-web-security",
            "--expect-colour",
            SOFT_TISSUE,
        ],
    );
    drop(orthanc);
    node.stop().await;
}

/// The UID of the study's series of `modality`, by Orthanc's QIDO-RS.
fn qido_series_of(base: &str, auth: &[&str], study: &str, modality: &str) -> String {
    let url = format!("{base}/dicom-web/studies/{study}/series?Modality={modality}");
    let found: Vec<serde_json::Value> =
        serde_json::from_str(&curl(&[auth, &[&url]].concat())).unwrap();
    found[0]["0020000E"]["Value"][0]
        .as_str()
        .unwrap()
        .to_string()
}
