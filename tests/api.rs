//! The HTTP API and the audit CLI after a series was processed end to end and delivered:
//! content, not only status codes; CSV and Prometheus text parse; tokens are enforced;
//! malformed parameters get a `{code, message}` 400.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use common::*;
use http_body_util::BodyExt;
use segnode::api::{ApiState, router};
use tower::ServiceExt;

async fn get(app: &axum::Router, uri: &str, token: Option<&str>) -> (StatusCode, String) {
    let mut request = Request::builder().uri(uri).header("Host", "localhost:8080");
    if let Some(t) = token {
        request = request.header("Authorization", format!("Bearer {t}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).to_string())
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Splits one CSV line (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                fields.last_mut().unwrap().push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_processed_study_is_visible_through_every_endpoint_and_the_audit_cli() {
    let scp_port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(scp_port, inbox.path(), &[]);
    let tail = destination("PACS", scp_port, "STORESCU", "");
    let node = TestNode::start_with_tail("", &tail).await;
    let series = tempfile::tempdir().unwrap();
    tissue_series(series.path(), 81, 12, 96);
    let (ok, out) = storescu(&node.port(), &[series.path()]).await;
    assert!(ok, "{out}");
    wait_for(Duration::from_secs(30), || async {
        let jobs = all_jobs(&node.store).await;
        (jobs.first()?.state == JobState::Delivered).then_some(())
    })
    .await
    .expect("job delivered");
    let app = router(Arc::new(ApiState {
        store: node.store.clone(),
        config: node.config.clone(),
        token: None,
        model: None,
        receiver: node.receiver(),
        request_wake: Default::default(),
    }));

    let (status, body) = get(&app, "/api/jobs?state=delivered&limit=10", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let jobs = json(&body);
    let job = &jobs["jobs"][0];
    assert_eq!(job["state"], "delivered");
    let id = job["id"].as_i64().unwrap();
    let seg_uid = job["seg_sop_instance_uid"].as_str().unwrap().to_string();
    assert_eq!(job["summary"]["cascade"]["model"], "test-cascade");

    let (status, body) = get(&app, &format!("/api/jobs/{id}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let detail = json(&body);
    let events: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    for e in [
        "job_queued",
        "job_started",
        "job_succeeded",
        "delivery_attempt",
        "job_delivered",
    ] {
        assert!(events.contains(&e), "{e} missing from {events:?}");
    }
    let deliveries = detail["deliveries"].as_array().unwrap();
    let seg = deliveries.iter().find(|d| d["object"] == "seg").unwrap();
    assert_eq!(seg["state"], "delivered");
    assert_eq!(seg["sop_instance_uid"], seg_uid);
    let sr = deliveries.iter().find(|d| d["object"] == "sr").unwrap();
    assert_eq!(sr["state"], "delivered");
    assert_eq!(
        sr["sop_instance_uid"],
        detail["summary"]["sr"]["sop_instance_uid"]
    );

    let study = "1.2.826.0.1.3680043.10.1.81";
    let (status, body) = get(&app, &format!("/api/studies/{study}"), None).await;
    assert_eq!(status, StatusCode::OK);
    let s = json(&body);
    assert_eq!(s["result_available"], true);
    assert_eq!(s["series"][0]["state"], "delivered");
    assert_eq!(s["series"][0]["seg_sop_instance_uid"], seg_uid);
    // Every object of the result, with its UID.
    let objects: Vec<&str> = s["series"][0]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["object"].as_str().unwrap())
        .collect();
    assert_eq!(&objects[..2], ["seg", "sr"]);
    assert!(objects[2..].iter().all(|o| *o == "key_images") && objects.len() > 2);
    assert_eq!(s["series"][0]["objects"][0]["sop_instance_uid"], seg_uid);
    assert!(
        s["series"][0]["summary"]["cascade"]["labels"][0]["ml"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // The audit query by patient ID: model version and checksums, timings, organ
    // volumes, SEG UID and the delivery outcome.
    let (status, body) = get(&app, "/api/audit?patient=SYNTH-0001", None).await;
    assert_eq!(status, StatusCode::OK);
    let records = json(&body)["records"].as_array().unwrap().clone();
    let succeeded = records
        .iter()
        .find(|r| r["event"] == "job_succeeded")
        .expect("job_succeeded audited");
    let summary = &succeeded["detail"]["summary"];
    assert_eq!(summary["cascade"]["model_version"], "1.0.0");
    assert_eq!(
        summary["cascade"]["model_sha256"].as_array().unwrap().len(),
        2
    );
    assert!(summary["timings_ms"]["cascade"].is_number());
    assert!(summary["cascade"]["labels"][0]["ml"].is_number());
    assert_eq!(summary["seg"]["sop_instance_uid"], seg_uid);
    let delivery = records
        .iter()
        .find(|r| r["event"] == "delivery_attempt")
        .unwrap();
    assert_eq!(delivery["detail"]["outcome"], "delivered");
    assert_eq!(delivery["accession_number"], "SYNACC1");

    // By date range, as CSV.
    let today = time::OffsetDateTime::now_utc().date();
    let uri = format!(
        "/api/audit?from={today}&to={}&format=csv",
        today.next_day().unwrap()
    );
    let (status, csv) = get(&app, &uri, None).await;
    assert_eq!(status, StatusCode::OK);
    let mut lines = csv.lines();
    let header = csv_fields(lines.next().unwrap());
    assert_eq!(header[2], "event");
    let rows: Vec<Vec<String>> = lines.map(csv_fields).collect();
    assert!(rows.iter().all(|r| r.len() == header.len()), "ragged CSV");
    let row = rows.iter().find(|r| r[2] == "job_succeeded").unwrap();
    assert_eq!(header[11], "node_id");
    assert_eq!(
        row[11], node.config.membership.node_id,
        "the node that did it"
    );
    let detail: serde_json::Value = serde_json::from_str(&row[10]).unwrap();
    assert_eq!(detail["summary"]["seg"]["sop_instance_uid"], seg_uid);
    let (_, empty) = get(
        &app,
        "/api/audit?from=2001-01-01&to=2001-01-02&format=csv",
        None,
    )
    .await;
    assert_eq!(
        empty.lines().count(),
        1,
        "only the header outside the range"
    );

    // Prometheus text.
    let (status, metrics) = get(&app, "/metrics", None).await;
    assert_eq!(status, StatusCode::OK);
    let sample =
        regex::Regex::new(r#"^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+]+$"#)
            .unwrap();
    for line in metrics.lines().filter(|l| !l.starts_with('#')) {
        assert!(sample.is_match(line), "not Prometheus text: {line:?}");
    }
    assert!(
        metrics.contains("segnode_jobs{state=\"delivered\"} 1"),
        "{metrics}"
    );
    // One attempt for the SEG, one for the measurement report.
    assert!(metrics.contains("segnode_delivery_attempts_total{outcome=\"delivered\"} 2"));
    assert!(metrics.contains("segnode_stage_duration_seconds_count{stage=\"cascade\"} 1"));
    let me = &node.config.membership.node_id;
    assert!(metrics.contains(&format!("segnode_node_info{{node_id=\"{me}\",engine=")));
    assert!(metrics.contains(&format!(
        "segnode_cluster_node_clock_offset_seconds{{node_id=\"{me}\"}}"
    )));

    // The nodes sharing the database: this one, with its heartbeat.
    let (status, body) = get(&app, "/api/nodes", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = json(&body);
    assert_eq!(nodes["node_id"], me.as_str());
    assert_eq!(nodes["nodes"][0]["node_id"], me.as_str());
    assert!(nodes["nodes"][0]["seen_ms"].as_i64().unwrap() > 0);

    let (status, body) = get(&app, "/healthz", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json(&body)["checks"]["database"], "ok");

    // Malformed parameters: a {code, message} 400, never a 500.
    for uri in [
        "/api/jobs?limit=abc",
        "/api/jobs?since=yesterday",
        "/api/jobs?state=done",
        "/api/jobs?colour=red",
        "/api/jobs/xyz",
        "/api/audit?format=xml",
        "/api/audit?from=31/12/2026",
        "/api/studies/not..a..uid",
    ] {
        let (status, body) = get(&app, uri, None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{uri}: {body}");
        let e = json(&body);
        assert_eq!(e["code"], "bad_request", "{uri}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    let (status, body) = get(&app, "/api/jobs/999", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json(&body)["code"], "not_found");

    // The audit CLI mirrors the API.
    let config = node.dir.path().join("cli.toml");
    std::fs::write(&config, test_config(&node.dir.path().join("data"), "")).unwrap();
    let out = segnode_ok([
        "--config",
        config.to_str().unwrap(),
        "audit",
        "--patient",
        "SYNTH-0001",
        "--format",
        "csv",
    ]);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.lines()
            .skip(1)
            .any(|l| csv_fields(l)[2] == "job_delivered"),
        "{text}"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_token_is_required() {
    let node = TestNode::start().await;
    let app = router(Arc::new(ApiState {
        store: node.store.clone(),
        config: node.config.clone(),
        token: Some("s3cret".into()),
        model: None,
        receiver: node.receiver(),
        request_wake: Default::default(),
    }));
    let (status, body) = get(&app, "/api/jobs", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(json(&body)["code"], "unauthorized");
    let (status, _) = get(&app, "/api/jobs", Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&app, "/metrics", Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(&app, "/api/jobs", Some("s3cret")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worklist_receives_signed_webhooks_for_job_state_changes() {
    let (port, mut rx) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "worklist-secret\n").unwrap();
    let tail = format!(
        "[[webhooks]]\nurl = \"http://127.0.0.1:{port}/segnode\"\nsecret_file = {:?}\n",
        secret.display().to_string()
    );
    let node = TestNode::start_with_tail("", &tail).await;
    let series = tempfile::tempdir().unwrap();
    tissue_series(series.path(), 82, 12, 96);
    let (ok, out) = storescu(&node.port(), &[series.path()]).await;
    assert!(ok, "{out}");
    let mut seen = Vec::new();
    let succeeded = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (head, body) = rx.recv().await.unwrap();
            let event: serde_json::Value = serde_json::from_slice(&body).unwrap();
            // Header names are case-insensitive (HTTP/1.1 clients send them lowercase).
            let signature = head
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(": ")?;
                    name.eq_ignore_ascii_case("X-Segnode-Signature")
                        .then(|| value.to_string())
                })
                .expect("signed");
            let expected = segnode::deliver::webhooks::signature(b"worklist-secret", &body);
            assert_eq!(signature, expected, "signature");
            assert!(head.starts_with("POST /segnode HTTP/1.1"));
            seen.push(event["event"].as_str().unwrap().to_string());
            if event["event"] == "job_succeeded" {
                break event;
            }
        }
    })
    .await
    .expect("job_succeeded webhook");
    assert_eq!(
        seen[..2],
        ["job_queued".to_string(), "job_started".to_string()]
    );
    assert_eq!(succeeded["study_uid"], "1.2.826.0.1.3680043.10.1.82");
    assert_eq!(succeeded["accession_number"], "SYNACC1");
    assert!(
        succeeded["seg_sop_instance_uid"]
            .as_str()
            .unwrap()
            .starts_with("2.25.")
    );
    assert_eq!(succeeded["summary"]["cascade"]["model"], "test-cascade");
    let sent = wait_for(Duration::from_secs(5), || async {
        let rows = node
            .store
            .audit_rows(Some(AuditKind::WebhookSent))
            .await
            .unwrap();
        (rows.len() >= 3).then_some(rows)
    })
    .await
    .expect("webhooks audited");
    assert!(sent[0].detail.contains("\"status\":204"));
    node.stop().await;
}

/// One plain HTTP/1.1 GET against a listening node: the status code.
async fn http_status(
    addr: std::net::SocketAddr,
    path: &str,
    host: &str,
    token: Option<&str>,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    response.split(' ').nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_configured_token_the_node_makes_one_and_requires_it() {
    use std::os::unix::fs::PermissionsExt;
    let node = TestNode::start().await;
    let path = node.dir.path().join("data/api-token");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "token file readable by its user only");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert!(token.len() >= 32);
    let host = node.http.to_string();
    assert_eq!(http_status(node.http, "/api/audit", &host, None).await, 401);
    assert_eq!(
        http_status(node.http, "/api/jobs/1/retry", &host, Some("guess")).await,
        401
    );
    assert_eq!(
        http_status(node.http, "/api/jobs", &host, Some(&token)).await,
        200
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_explicit_loopback_opt_out_answers_only_requests_addressed_to_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let text = test_config(&dir.path().join("data"), "").replace(
        "[http]\n",
        "[http]\nallow_unauthenticated_loopback = true\n",
    );
    let config = segnode::config::Config::from_toml(&text, &Default::default()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = segnode::node::start(config, shutdown.clone())
        .await
        .unwrap();
    let http = running.http_addr;
    let wait = tokio::spawn(running.wait());
    assert!(!dir.path().join("data/api-token").exists());
    assert_eq!(
        http_status(http, "/api/jobs", &http.to_string(), None).await,
        200
    );
    assert_eq!(http_status(http, "/api/jobs", "localhost", None).await, 200);
    assert_eq!(
        http_status(http, "/api/jobs", "rebound.example.com", None).await,
        403
    );
    assert_eq!(
        http_status(http, "/api/jobs", "127.0.0.1.example.com:8080", None).await,
        403
    );
    // Off loopback the opt-out is a configuration error.
    let off = text.replace(
        "listen = \"127.0.0.1:0\"\n[model]",
        "listen = \"0.0.0.0:0\"\n[model]",
    );
    assert!(segnode::config::Config::from_toml(&off, &Default::default()).is_err());
    shutdown.cancel();
    wait.await.unwrap();
}

#[test]
fn a_node_start_writes_nothing_under_home() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("segnode.toml");
    std::fs::write(&config, test_config(&dir.path().join("data"), "")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOME", home.path())
        .env_remove("ORT_DISABLE_TELEMETRY")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Ready once the token exists and the model is loaded (the log says so).
    let started = std::time::Instant::now();
    while !dir.path().join("data/api-token").exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "node did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    let written: Vec<_> = std::fs::read_dir(home.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(written.is_empty(), "written under HOME: {written:?}");
}
