//! Review before delivery, end to end: a node with `[review] hold = "flagged"` holds the
//! results of the 40 mm test slab (every organ cut by the scan range); a DCMTK storescp
//! receives nothing of them until a person approves one on the dashboard, in headless
//! Chromium (scripts/browse.py fills the review form and presses its button); the other,
//! rejected there, never reaches it; both decisions are audited with who and why, and
//! taken once.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use segnode::store::{AuditKind, DeliveryState, JobState};

/// scripts/browse.py on `url` with its arguments: the final page's DOM.
fn browse(url: &str, args: &[&str]) -> String {
    let out = Command::new(venv_python())
        .arg(script("browse.py"))
        .arg(url)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "browse.py {url} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The status line and body of an API POST with the bearer token.
async fn api_post(node: &TestNode, path: &str, token: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(node.http).await.unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    response
}

async fn job_in_review(node: &TestNode, not: Option<i64>) -> segnode::store::JobRow {
    wait_for(Duration::from_secs(90), || async {
        all_jobs(&node.store)
            .await
            .into_iter()
            .find(|j| j.state == JobState::Review && Some(j.id.0) != not)
    })
    .await
    .expect("the job is held for review")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_result_is_delivered_once_approved_and_never_once_rejected() {
    let scp_port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(scp_port, inbox.path(), &[]);
    let tail = format!(
        "{}\n[review]\nhold = \"flagged\"\n",
        destination("PACS", scp_port, "STORESCU", "")
    );
    let node = TestNode::start_with_tail("", &tail).await;
    let token = std::fs::read_to_string(&node.config.http.token_file).unwrap();
    let token = token.trim();
    let job_page = |id: i64| {
        format!(
            "http://{}/ui/login?token={token}&next=/ui/jobs/{id}",
            node.http
        )
    };

    // The slab as stored: held, its deliveries held, nothing sent.
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "{out}");
    let first = job_in_review(&node, None).await;
    assert!(
        first.qa_verdict.is_some_and(|v| v.as_str() != "ok"),
        "{first:?}"
    );
    let held = node.store.job_deliveries(first.id).await.unwrap();
    assert!(!held.is_empty());
    assert!(held.iter().all(|d| d.state == DeliveryState::Held));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(files_under(inbox.path()).is_empty(), "sent while held");

    // Listed among the jobs that need review; approved on its page in a browser.
    let list = browse(
        &format!(
            "http://{}/ui/login?token={token}&next=/ui/%3Fneeds_review%3Dtrue",
            node.http
        ),
        &[],
    );
    assert!(
        list.contains(&format!("data-job=\"{}\"", first.id)),
        "{list}"
    );
    let dom = browse(
        &job_page(first.id.0),
        &[
            "--fill",
            "#review input[name=reviewer]",
            "Dr Reviewer",
            "--fill",
            "#review input[name=comment]",
            "organs checked, slab only",
            "--click",
            "#approve",
        ],
    );
    assert!(!dom.contains("id=\"review\""), "still held: {dom}");
    assert!(dom.contains("job_approved"), "{dom}");
    wait_for(Duration::from_secs(60), || async {
        let job = node.store.job(first.id).await.unwrap().unwrap();
        (job.state == JobState::Delivered).then_some(())
    })
    .await
    .expect("the approved result is delivered");
    let delivered = files_under(inbox.path()).len();
    assert_eq!(delivered, held.len());

    // The same patient written feet first (another series): held, rejected in the
    // browser, never sent; a second decision is refused.
    let variants = tempfile::tempdir().unwrap();
    let o = Command::new(venv_python())
        .arg(script("orient_series.py"))
        .arg("write")
        .arg(real_series())
        .arg(variants.path())
        .arg("feet_first")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let (ok, out) = storescu(&node.port(), &[&variants.path().join("feet_first")]).await;
    assert!(ok, "{out}");
    let second = job_in_review(&node, Some(first.id.0)).await;
    let dom = browse(
        &job_page(second.id.0),
        &[
            "--fill",
            "#review input[name=reviewer]",
            "Dr Reviewer",
            "--click",
            "#reject",
        ],
    );
    assert!(dom.contains("class=\"state rejected\""), "{dom}");
    let again = api_post(
        &node,
        &format!("/api/jobs/{}/approve", second.id),
        token,
        r#"{"reviewer": "someone else"}"#,
    )
    .await;
    assert!(
        again.starts_with("HTTP/1.1 409") && again.contains("rejected"),
        "{again}"
    );
    assert!(
        node.store
            .job_deliveries(second.id)
            .await
            .unwrap()
            .is_empty()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(files_under(inbox.path()).len(), delivered, "rejected, sent");
    assert_eq!(
        node.store.job(second.id).await.unwrap().unwrap().state,
        JobState::Rejected
    );

    // Audited: both held, one approved and one rejected, each with who and why.
    let audit = node.store.audit_rows(None).await.unwrap();
    let of = |kind: AuditKind| {
        audit
            .iter()
            .filter(|r| r.event == kind)
            .map(|r| (r.job_id, r.detail.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(of(AuditKind::JobHeld).len(), 2);
    let approved = of(AuditKind::JobApproved);
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].0, Some(first.id));
    assert!(
        approved[0].1.contains("Dr Reviewer") && approved[0].1.contains("slab only"),
        "{approved:?}"
    );
    let rejected = of(AuditKind::JobRejected);
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].0, Some(second.id));
    node.stop().await;
}
