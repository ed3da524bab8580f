//! DICOM TLS with real peers: DCMTK `echoscu`/`storescu +tls` into the node's TLS
//! listener (client certificates required, a peer bound to its certificate's identity),
//! the node delivering to DCMTK `storescp +tls`, and peers without a valid certificate
//! refused and audited. Certificates are made per test with Debian's `openssl`.

mod common;

use std::time::Duration;

use common::*;

fn tls_args(pki: &Pki, name: &str) -> Vec<String> {
    vec![
        "+tls".into(),
        pki.path(&format!("{name}.key")).display().to_string(),
        pki.path(&format!("{name}.crt")).display().to_string(),
        "+cf".into(),
        pki.path("ca.crt").display().to_string(),
    ]
}

async fn dcmtk_tls(tool: &str, args: Vec<String>) -> (bool, String) {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_tool(tool, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dcmtk_peers_over_dicom_tls_both_ways_and_untrusted_peers_refused() {
    let pki = Pki::new();
    pki.issue("node", "IP:127.0.0.1,DNS:localhost", false);
    pki.issue("pacs", "DNS:pacs.test", false);
    pki.issue("other", "DNS:other.test", false);
    pki.issue("rogue", "DNS:pacs.test", true);
    pki.issue("pacs-server", "IP:127.0.0.1", false);

    // A DCMTK storescp over TLS as the destination (its certificate valid for the
    // destination's host, 127.0.0.1), requiring the node's client certificate.
    let scp_port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let scp_args = tls_args(&pki, "pacs-server");
    let scp_args: Vec<&str> = scp_args.iter().map(String::as_str).collect();
    let _scp = StoreScp::start(scp_port, inbox.path(), &scp_args);

    let p = |n: &str| pki.path(n).display().to_string();
    let extra_dicom = pki.dicom_tls("node");
    let tail = format!(
        "[[dicom.allowed_peers]]\nae_title = \"TLSPACS\"\ntls_identity = \"pacs.test\"\n{}",
        destination("PACS", scp_port, "TLSPACS", &pki.destination_tls("node"))
    );
    let node = TestNode::start_with_tail(&extra_dicom, &tail).await;
    let tls_port = node.tls_addr.expect("TLS listener").port().to_string();

    // C-ECHO over TLS with the bound identity.
    let mut args = tls_args(&pki, "pacs");
    args.extend(["-aet", "TLSPACS", "-aec", "SEGNODE", "127.0.0.1", &tls_port].map(String::from));
    let (ok, out) = dcmtk_tls("echoscu", args).await;
    assert!(ok, "echoscu +tls: {out}");

    // The real series over TLS (JPEG 2000 kept as is), processed and delivered to the
    // TLS storescp.
    let mut args = tls_args(&pki, "pacs");
    args.extend(["-xv", "-aet", "TLSPACS", "-aec", "SEGNODE", "+sd", "+r"].map(String::from));
    args.push("127.0.0.1".into());
    args.push(tls_port.clone());
    args.push(real_series().display().to_string());
    let (ok, out) = dcmtk_tls("storescu", args).await;
    assert!(ok, "storescu +tls: {out}");
    let delivered = wait_for(Duration::from_secs(60), || async {
        let jobs = all_jobs(&node.store).await;
        jobs.into_iter().find(|j| j.state == JobState::Delivered)
    })
    .await;
    assert!(
        delivered.is_some(),
        "not delivered over TLS: {:?}",
        all_jobs(&node.store).await
    );
    assert_eq!(
        files_under(inbox.path()).len(),
        2,
        "the SEG and the SR at the TLS storescp"
    );

    // Refused: a certificate from another CA; a valid certificate for another identity
    // claiming the bound AE title; no certificate; plain DICOM claiming that AE title.
    let mut args = tls_args(&pki, "rogue");
    args.extend(["-aet", "TLSPACS", "-aec", "SEGNODE", "127.0.0.1", &tls_port].map(String::from));
    let (ok, _) = dcmtk_tls("echoscu", args).await;
    assert!(!ok, "a certificate from an untrusted CA was accepted");
    let mut args = tls_args(&pki, "other");
    args.extend(["-aet", "TLSPACS", "-aec", "SEGNODE", "127.0.0.1", &tls_port].map(String::from));
    let (ok, _) = dcmtk_tls("echoscu", args).await;
    assert!(!ok, "another identity claiming TLSPACS was accepted");
    let args = [
        "+tla",
        "+cf",
        &p("ca.crt"),
        "-aet",
        "TLSPACS",
        "-aec",
        "SEGNODE",
        "127.0.0.1",
        &tls_port,
    ]
    .map(String::from)
    .to_vec();
    let (ok, _) = dcmtk_tls("echoscu", args).await;
    assert!(!ok, "a peer without a certificate was accepted");
    let (ok, _) = run_tool(
        "echoscu",
        &[
            "-aet",
            "TLSPACS",
            "-aec",
            "SEGNODE",
            "127.0.0.1",
            &node.port(),
        ],
    )
    .await;
    assert!(!ok, "TLSPACS over plain DICOM was accepted");

    let audit = node
        .store
        .audit_query(&segnode::store::AuditFilter::default())
        .await
        .unwrap();
    let rejected: Vec<String> = audit
        .iter()
        .filter(|a| a.event == AuditKind::AssociationRejected)
        .map(|a| a.detail.clone())
        .collect();
    assert!(
        rejected.iter().any(|d| d.contains("TLS handshake failed")),
        "{rejected:?}"
    );
    let claimed = audit
        .iter()
        .filter(|a| {
            a.event == AuditKind::AssociationRejected && a.calling_ae.as_deref() == Some("TLSPACS")
        })
        .count();
    assert!(claimed >= 2, "{rejected:?}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_over_https_with_its_token() {
    let pki = Pki::new();
    pki.issue("node", "IP:127.0.0.1,DNS:localhost", false);
    let p = |n: &str| pki.path(n).display().to_string();
    let tail = format!(
        "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
        p("node.crt"),
        p("node.key")
    );
    // The HTTPS keys belong to [http]: the test configuration's [http] table is followed
    // by [model], so they go right after its listen line.
    let dir = tempfile::tempdir().unwrap();
    let text = test_config(&dir.path().join("data"), "").replace(
        "[http]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[http]\nlisten = \"127.0.0.1:0\"\n{tail}"),
    );
    let config = segnode::config::Config::from_toml(&text, &Default::default()).unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let node = segnode::node::start(config, shutdown.clone())
        .await
        .unwrap();
    let http = node.http_addr;
    let wait = tokio::spawn(node.wait());
    let token = std::fs::read_to_string(dir.path().join("data/api-token")).unwrap();
    let curl = |args: Vec<String>| async move {
        let out = tokio::process::Command::new("/usr/bin/curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
            .args(args)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let url = format!("https://127.0.0.1:{}/api/jobs", http.port());
    let auth = format!("Authorization: Bearer {}", token.trim());
    let ca = p("ca.crt");
    assert_eq!(
        curl(vec![
            "--cacert".into(),
            ca.clone(),
            "-H".into(),
            auth.clone(),
            url.clone()
        ])
        .await,
        "200"
    );
    assert_eq!(
        curl(vec!["--cacert".into(), ca.clone(), url.clone()]).await,
        "401"
    );
    // Plain HTTP to the HTTPS port gets no answer; an untrusting client refuses the node.
    assert_eq!(
        curl(vec![format!("http://127.0.0.1:{}/api/jobs", http.port())]).await,
        "000"
    );
    assert_eq!(curl(vec!["-H".into(), auth, url]).await, "000");
    shutdown.cancel();
    wait.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_over_https_trust_the_configured_ca() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    pki.issue("worklist", "IP:127.0.0.1", false);
    let acceptor = segnode::tls::https_acceptor(&segnode::tls::HttpsTls {
        cert_file: pki.path("worklist.crt"),
        key_file: pki.path("worklist.key"),
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut s) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            // The head, then Content-Length bytes of body.
            loop {
                let n = s.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                if let Some(i) = text.find("\r\n\r\n") {
                    let len: usize = text[..i]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if buf.len() >= i + 4 + len {
                        let _ = s
                            .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                            .await;
                        let _ = tx.send(text[i + 4..].to_string());
                        break;
                    }
                }
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let tail = format!(
        "[[webhooks]]\nurl = \"https://127.0.0.1:{port}/hook\"\nsecret_file = {:?}\nca_file = {:?}\n",
        secret.display().to_string(),
        pki.path("ca.crt").display().to_string()
    );
    let node = TestNode::start_with_tail("", &tail).await;
    let series = tempfile::tempdir().unwrap();
    tissue_series(series.path(), 83, 12, 96);
    let (ok, out) = storescu(&node.port(), &[series.path()]).await;
    assert!(ok, "{out}");
    let body = tokio::time::timeout(Duration::from_secs(30), rx.recv())
        .await
        .expect("a webhook over HTTPS within 30 s")
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(event["event"], "job_queued");
    node.stop().await;
}

/// Node to node over DICOMweb: one node's results go by STOW-RS over HTTPS (its CA file,
/// the other's bearer token) to another node's intake, which answers each object; an
/// untrusted certificate is a retried failure, never a delivery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dicomweb_destination_over_https_trusts_its_ca_and_sends_its_token() {
    let pki = Pki::new();
    pki.issue("archive", "IP:127.0.0.1", false);
    let other = Pki::new();
    let p = |n: &str| pki.path(n).display().to_string();
    let token = pki.path("archive-token");
    std::fs::write(&token, "archive-secret\n").unwrap();
    let archive = TestNode::start_text(|data| {
        test_config(data, "").replace(
            "[http]\n",
            &format!(
                "[http]\ntls_cert_file = \"{}\"\ntls_key_file = \"{}\"\ntoken_file = \"{}\"\n",
                p("archive.crt"),
                p("archive.key"),
                token.display()
            ),
        )
    })
    .await;
    let url = format!("https://127.0.0.1:{}/dicom-web", archive.http.port());
    let tail = |name: &str, ca: &std::path::Path| {
        format!(
            "\n[[destinations]]\nname = \"{name}\"\nkind = \"dicomweb\"\nurl = \"{url}\"\n\
             token_file = \"{}\"\nca_file = \"{}\"\nfan_out = true\nobjects = [\"seg\", \"sr\"]\n",
            token.display(),
            ca.display()
        )
    };
    let trusting = tail("archive", &pki.path("ca.crt"));
    let untrusting = tail("elsewhere", &other.path("ca.crt"));
    let node = TestNode::start_text(|data| {
        test_config(data, "")
            + &trusting
            + &untrusting
            + "\n[delivery]\nmax_attempts = 2\ninitial_backoff_seconds = 0.1\n"
    })
    .await;
    let work = tempfile::tempdir().unwrap();
    tissue_series(work.path(), 95, 12, 64);
    let (ok, out) = storescu(&node.port(), &[work.path()]).await;
    assert!(ok, "{out}");
    let job = wait_for(Duration::from_secs(60), || async {
        let jobs = all_jobs(&node.store).await;
        let job = jobs.into_iter().next()?;
        let deliveries = node.store.job_deliveries(job.id).await.ok()?;
        let settled = deliveries.len() == 4
            && deliveries
                .iter()
                .all(|d| d.state != segnode::store::DeliveryState::Pending);
        settled.then_some((job, deliveries))
    })
    .await;
    let (job, deliveries) = job.expect("every delivery settled");
    for d in &deliveries {
        match d.destination.as_str() {
            "archive" => assert_eq!(d.state, segnode::store::DeliveryState::Delivered, "{d:?}"),
            _ => {
                assert_eq!(d.state, segnode::store::DeliveryState::Failed, "{d:?}");
                assert!(
                    d.last_error
                        .as_deref()
                        .unwrap_or_default()
                        .contains("STOW-RS to"),
                    "{d:?}"
                );
            }
        }
    }
    // The archive answered for the SEG and the SR: acknowledged (not CT images, not kept).
    let seg = job.seg_sop_instance_uid.clone().unwrap();
    let ignored = archive
        .store
        .audit_rows(Some(AuditKind::InstanceIgnored))
        .await
        .unwrap();
    assert!(ignored.iter().any(|a| a.detail.contains(seg.as_str())
        && a.calling_ae.as_deref() == Some("DICOMWEB")), "{ignored:?}");
    node.stop().await;
    archive.stop().await;
}
