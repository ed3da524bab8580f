//! DICOMweb on the node's HTTP listener: STOW-RS intake under the same contract as
//! C-STORE (every bad body answered with a clear error, nothing half-stored), and
//! QIDO-RS / WADO-RS of what the node holds, read back by an independent parser.

mod common;

use std::path::Path;

use common::*;
use reqwest::StatusCode;
use serde_json::Value;

const BOUNDARY: &str = "segnode-test-boundary";

/// A multipart/related body of `parts` (Content-Type, bytes).
fn body(parts: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (kind, bytes) in parts {
        out.extend(format!("--{BOUNDARY}\r\nContent-Type: {kind}\r\n\r\n").as_bytes());
        out.extend_from_slice(bytes);
        out.extend(b"\r\n");
    }
    out.extend(format!("--{BOUNDARY}--\r\n").as_bytes());
    out
}

fn dicom_parts(files: &[impl AsRef<Path>]) -> Vec<(&'static str, Vec<u8>)> {
    files
        .iter()
        .map(|f| ("application/dicom", std::fs::read(f).unwrap()))
        .collect()
}

struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    fn of(node: &TestNode) -> Self {
        Self {
            base: format!("http://{}", node.http),
            token: node.token(),
            http: reqwest::Client::new(),
        }
    }

    async fn stow_as(&self, path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, String) {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header("Content-Type", content_type)
            .header("Accept", "application/dicom+json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = response.status();
        (status, response.text().await.unwrap())
    }

    async fn stow(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let kind = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
        let (status, text) = self.stow_as(path, &kind, body).await;
        let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: {text}"));
        (status, json)
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response
    }

    async fn json(&self, path: &str) -> Value {
        let response = self.get(path).await;
        assert_eq!(
            response.headers()["content-type"],
            "application/dicom+json",
            "{path}"
        );
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
    }
}

fn items<'a>(response: &'a Value, tag: &str) -> Vec<&'a Value> {
    response[tag]["Value"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

fn first(item: &Value, tag: &str) -> Value {
    item[tag]["Value"][0].clone()
}

/// The parts of a multipart/related response.
fn parts(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))
        .unwrap()
        .trim_matches('"');
    let delimiter = format!("--{boundary}");
    let text = body;
    let mut out = Vec::new();
    let positions: Vec<usize> = (0..text.len())
        .filter(|i| text[*i..].starts_with(delimiter.as_bytes()))
        .collect();
    for pair in positions.windows(2) {
        let part = &text[pair[0] + delimiter.len() + 2..pair[1] - 2];
        let split = part.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let headers = String::from_utf8_lossy(&part[..split]).to_string();
        out.push((headers, part[split + 4..].to_vec()));
    }
    out
}

/// Files in the spool's `tmp/` that are neither ready nor the lock: half-written ones.
fn half_written(node: &TestNode) -> Vec<std::path::PathBuf> {
    files_under(&node.spool().join("tmp"))
        .into_iter()
        .filter(|f| !is_ready_file(f) && !is_node_lock(f))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stow_rs_keeps_a_series_as_c_store_does_and_answers_every_bad_body() {
    let node = TestNode::start_text(|data| {
        format!(
            "{}\n",
            test_config(data, "max_object_mb = 32").replace(
                "listen = \"127.0.0.1:0\"\n[model]",
                "listen = \"127.0.0.1:0\"\nmax_stow_mb = 100\n[model]"
            )
        )
    })
    .await;
    assert_eq!(node.config.http.max_stow_bytes, 100 << 20);
    let client = Client::of(&node);
    let work = tempfile::tempdir().unwrap();
    let files = tissue_series(work.path(), 91, 12, 96);
    let study = "1.2.826.0.1.3680043.10.1.91";

    // The series in one request: every instance referenced, with where to fetch it.
    let (status, response) = client
        .stow("/dicom-web/studies", body(&dicom_parts(&files)))
        .await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let referenced = items(&response, "00081199");
    assert_eq!(referenced.len(), 12, "{response}");
    assert!(items(&response, "00081198").is_empty());
    let url = first(referenced[0], "00081190");
    assert!(
        url.as_str().unwrap().starts_with(&format!(
            "{}/dicom-web/studies/{study}/series/{study}.1/instances/",
            client.base
        )),
        "{url}"
    );
    // Processed as a routed series would be, recorded as sent by STOW-RS.
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs[0].instance_count, 12);
    assert_eq!(jobs[0].calling_ae, "DICOMWEB");
    assert!(
        jobs[0].seg_sop_instance_uid.is_some(),
        "{:?}",
        jobs[0].reason
    );

    // Sent again: the same answer, nothing new to process.
    let (status, response) = client
        .stow("/dicom-web/studies", body(&dicom_parts(&files)))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(items(&response, "00081199").len(), 12);

    // To a study URL that is not its study: a conflict, not stored.
    let other = tempfile::tempdir().unwrap();
    let other_files = tissue_series(other.path(), 92, 2, 32);
    let (status, response) = client
        .stow(
            &format!("/dicom-web/studies/{study}"),
            body(&dicom_parts(&other_files[..1])),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{response}");
    let failed = items(&response, "00081198");
    assert_eq!(first(failed[0], "00081197"), 0xA900);
    assert!(
        first(failed[0], "00091001")
            .as_str()
            .unwrap()
            .contains("another study")
    );

    // Parts that are not DICOM: each failed with its reason, nothing stored.
    let (status, response) = client
        .stow(
            "/dicom-web/studies",
            body(&[
                ("text/plain", b"hello".to_vec()),
                ("application/dicom", b"not part 10".to_vec()),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    let failed = items(&response, "00081198");
    assert_eq!(failed.len(), 2);
    assert!(failed.iter().all(|f| first(f, "00081197") == 0xC000));
    assert!(
        first(failed[1], "00091001")
            .as_str()
            .unwrap()
            .contains("not a DICOM Part 10 file")
    );

    // A part over max_object_mb is refused as the node's limit (retryable), and the
    // part after it is still read and stored.
    let mut huge = std::fs::read(&other_files[0]).unwrap();
    huge.resize(33 << 20, 0);
    let (status, response) = client
        .stow(
            "/dicom-web/studies",
            body(&[
                ("application/dicom", huge.clone()),
                ("application/dicom", std::fs::read(&other_files[1]).unwrap()),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{response}");
    let failed = items(&response, "00081198");
    assert_eq!(first(failed[0], "00081197"), 0xA700);
    assert_eq!(
        first(failed[0], "00081155"),
        "1.2.826.0.1.3680043.10.1.92.1.1"
    );
    assert_eq!(items(&response, "00081199").len(), 1);
    let (status, _) = client
        .stow("/dicom-web/studies", body(&[("application/dicom", huge)]))
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    // A deflate bomb is refused without inflating it.
    let (status, response) = client
        .stow(
            "/dicom-web/studies",
            body(&[(
                "application/dicom",
                deflate_bomb(
                    "1.2.826.0.1.3680043.10.9",
                    "1.2.826.0.1.3680043.10.9.1.1",
                    256 << 20,
                ),
            )]),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{response}");
    let failed = items(&response, "00081198");
    assert_eq!(first(failed[0], "00081197"), 0xC000);
    assert!(
        first(failed[0], "00091001")
            .as_str()
            .unwrap()
            .contains("inflates beyond")
    );

    // Bodies that cannot be read to their end: a clear error, the parts before kept.
    let third = tempfile::tempdir().unwrap();
    let third_files = tissue_series(third.path(), 93, 3, 64);
    let whole = body(&dicom_parts(&third_files));
    let cut = whole.len() - 3000;
    let kind = format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}");
    let (status, text) = client
        .stow_as("/dicom-web/studies", &kind, whole[..cut].to_vec())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("ended before the closing boundary") && text.contains("2 instance(s)"),
        "{text}"
    );
    let wrong = "multipart/related; type=\"application/dicom\"; boundary=another";
    let (status, text) = client
        .stow_as("/dicom-web/studies", wrong, whole.clone())
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let (status, text) = client
        .stow_as(
            "/dicom-web/studies",
            &kind,
            body(&vec![("application/dicom", vec![7u8; 26 << 20]); 4]),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    let (status, _) = client
        .stow_as("/dicom-web/studies", "application/json", b"{}".to_vec())
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let gzip = client
        .http
        .post(format!("{}/dicom-web/studies", client.base))
        .bearer_auth(&client.token)
        .header("Content-Type", &kind)
        .header("Content-Encoding", "gzip")
        .body(whole.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(gzip.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let anonymous = client
        .http
        .post(format!("{}/dicom-web/studies", client.base))
        .header("Content-Type", &kind)
        .body(whole)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);

    // Nothing half-stored: every kept instance is one that was answered as stored.
    assert!(half_written(&node).is_empty(), "{:?}", half_written(&node));
    let held = node.store.held_objects(None).await.unwrap();
    let sources = held.iter().filter(|o| o.kind == "source").count();
    assert_eq!(sources, 12 + 1 + 2, "series 91, one of 92, two of 93");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qido_and_wado_serve_the_source_series_and_every_result() {
    let tail = "";
    let node = TestNode::start_with_tail("", tail).await;
    let client = Client::of(&node);
    let work = tempfile::tempdir().unwrap();
    let files = tissue_series(work.path(), 94, 12, 96);
    let (ok, out) = storescu(&node.port(), &[work.path()]).await;
    assert!(ok, "{out}");
    let jobs = settled_jobs(&node.store, 1).await;
    let seg_uid = jobs[0].seg_sop_instance_uid.clone().expect("a SEG");
    let study = "1.2.826.0.1.3680043.10.1.94";
    let source_series = format!("{study}.1");

    let studies = client.json("/dicom-web/studies").await;
    assert_eq!(studies.as_array().unwrap().len(), 1, "{studies}");
    let s = &studies[0];
    assert_eq!(first(s, "0020000D"), study);
    let modalities = s["00080061"]["Value"].as_array().unwrap();
    for m in ["CT", "SEG", "SR"] {
        assert!(modalities.contains(&Value::from(m)), "{modalities:?}");
    }
    assert_eq!(
        client.json("/dicom-web/studies?PatientID=nobody").await,
        Value::Array(vec![])
    );
    assert_eq!(
        client
            .json(&format!("/dicom-web/studies?StudyInstanceUID={study}"))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let series = client
        .json(&format!("/dicom-web/studies/{study}/series"))
        .await;
    let uid_of = |modality: &str| {
        series
            .as_array()
            .unwrap()
            .iter()
            .find(|s| first(s, "00080060") == modality)
            .map(|s| first(s, "0020000E").as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("no {modality} series in {series}"))
    };
    assert_eq!(uid_of("CT"), source_series);
    let seg_series = uid_of("SEG");

    // The source instances in order, each retrievable with its frame as sent.
    let instances = client
        .json(&format!(
            "/dicom-web/studies/{study}/series/{source_series}/instances"
        ))
        .await;
    let numbers: Vec<i64> = instances
        .as_array()
        .unwrap()
        .iter()
        .map(|i| first(i, "00200013").as_i64().unwrap())
        .collect();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>());
    let sop = first(&instances[0], "00080018")
        .as_str()
        .unwrap()
        .to_string();
    let response = client
        .get(&format!(
            "/dicom-web/studies/{study}/series/{source_series}/instances/{sop}/frames/1"
        ))
        .await;
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let frames = parts(&kind, &response.bytes().await.unwrap());
    assert_eq!(frames.len(), 1);
    assert!(
        frames[0].0.contains("transfer-syntax=1.2.840.10008.1.2.1"),
        "{}",
        frames[0].0
    );
    let original = dicom_object::open_file(&files[0]).unwrap();
    let pixels = original
        .element(dicom_dictionary_std::tags::PIXEL_DATA)
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(frames[0].1, pixels.as_ref());

    // The SEG: metadata, and the object itself as Part 10.
    let metadata = client
        .json(&format!(
            "/dicom-web/studies/{study}/series/{seg_series}/metadata"
        ))
        .await;
    let seg = &metadata[0];
    assert_eq!(first(seg, "00080018"), seg_uid.as_str());
    assert!(
        seg["00620002"]["Value"]
            .as_array()
            .is_some_and(|s| !s.is_empty()),
        "SegmentSequence"
    );
    assert!(seg.get("7FE00010").is_none(), "no pixel data inline");
    let response = client
        .get(&format!(
            "/dicom-web/studies/{study}/series/{seg_series}/instances/{seg_uid}"
        ))
        .await;
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        kind.starts_with("multipart/related; type=\"application/dicom\""),
        "{kind}"
    );
    let objects = parts(&kind, &response.bytes().await.unwrap());
    assert_eq!(objects.len(), 1);
    let path = work.path().join("seg.dcm");
    std::fs::write(&path, &objects[0].1).unwrap();
    assert!(dciodvfy_errors(&path).is_empty());
    let read = dicom_object::open_file(&path).unwrap();
    assert_eq!(
        read.meta()
            .media_storage_sop_instance_uid()
            .trim_end_matches('\0'),
        seg_uid.as_str()
    );

    // The whole study: the 12 slices and every result object.
    let response = client.get(&format!("/dicom-web/studies/{study}")).await;
    let kind = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let all = parts(&kind, &response.bytes().await.unwrap());
    let results = node.store.job_results(jobs[0].id).await.unwrap();
    assert_eq!(all.len(), 12 + results.len());

    let missing = client
        .http
        .get(format!(
            "{}/dicom-web/studies/{study}/series/9.9.9/metadata",
            client.base
        ))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    node.stop().await;
}
