//! The dashboard in a real browser: headless Chromium (Debian's package) loads every
//! page of a node that has processed the real series; the DOM shows the job, its state
//! and its organ volumes; a screenshot of the job page shows the key image (its
//! coloured outlines); without the token every page is 401.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn chromium() -> PathBuf {
    let path = PathBuf::from("/usr/bin/chromium");
    assert!(
        path.exists(),
        "chromium not found: install Debian's chromium (scripts/setup)"
    );
    path
}

/// Chromium, headless, on `url`; `args` says what to do (`--dump-dom`, `--screenshot`).
fn browse(url: &str, args: &[&str], profile: &Path) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// The whole response to a request without credentials (`body`: a form to POST).
async fn raw_http(addr: std::net::SocketAddr, path: &str, body: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = match body {
        None => format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"),
        Some(b) => format!(
            "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ),
    };
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    response
}

/// The status line of a GET without credentials.
async fn status_without_token(addr: std::net::SocketAddr, path: &str) -> String {
    let response = raw_http(addr, path, None).await;
    response.lines().next().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_page_shows_the_processed_study_in_a_browser() {
    let scp_port = free_port();
    let inbox = tempfile::tempdir().unwrap();
    let _scp = StoreScp::start(scp_port, inbox.path(), &[]);
    let tail = destination("PACS", scp_port, "STORESCU", "");
    let node = TestNode::start_with_tail("", &tail).await;
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "{out}");
    let job = wait_for(Duration::from_secs(60), || async {
        let jobs = all_jobs(&node.store).await;
        jobs.into_iter().find(|j| j.state == JobState::Delivered)
    })
    .await
    .expect("the job is delivered");
    let summary: serde_json::Value = serde_json::from_str(job.summary.as_deref().unwrap()).unwrap();
    let token = std::fs::read_to_string(&node.config.http.token_file).unwrap();
    let token = token.trim();
    let base = format!("http://{}", node.http);
    let login = |next: &str| format!("{base}/ui/login?token={token}&next={next}");
    let profile = tempfile::tempdir().unwrap();

    // Without the token: 401, for pages, images and the API alike.
    for path in [
        "/ui/",
        &format!("/ui/jobs/{}", job.id),
        &format!("/ui/jobs/{}/key/1", job.id),
        "/ui/audit",
        "/ui/health",
        "/api/jobs",
    ] {
        let status = status_without_token(node.http, path).await;
        assert!(status.contains(" 401 "), "{path}: {status}");
    }

    // `/` leads to the dashboard; its sign-in form sets the token as an HttpOnly cookie.
    let root = raw_http(node.http, "/", None).await;
    assert!(
        root.contains(" 303 ") && root.contains("location: /ui/"),
        "{root}"
    );
    let signed_in = raw_http(node.http, "/ui/login", Some(&format!("token={token}"))).await;
    assert!(
        signed_in.contains(&format!(
            "set-cookie: segnode_token={token}; Path=/; HttpOnly; SameSite=Strict"
        )),
        "{signed_in}"
    );
    let refused = raw_http(node.http, "/ui/login", Some("token=wrong")).await;
    assert!(
        refused.starts_with("HTTP/1.1 401") && !refused.contains("set-cookie"),
        "{refused}"
    );

    // The job list: the job, its state, its organ volumes.
    let dom = browse(&login("/ui/"), &["--dump-dom"], profile.path());
    assert!(dom.contains(&format!("data-job=\"{}\"", job.id)), "{dom}");
    assert!(dom.contains("class=\"state delivered\""), "{dom}");
    // The job's badge is its worst organ's verdict.
    let verdict = summary["qa_verdict"].as_str().unwrap();
    assert_eq!(
        job.qa_verdict.map(|v| v.to_string()).as_deref(),
        Some(verdict)
    );
    assert!(
        dom.contains(&format!("class=\"qa job {verdict}\"")),
        "{dom}"
    );
    let organs = summary["organs"].as_array().unwrap();
    assert!(!organs.is_empty());
    for o in organs {
        // A truncated organ's volume is shown as a lower bound, with the verdict.
        let reasons = o["qa"]["reasons"].as_array().unwrap();
        let truncated = reasons.iter().any(|r| r["code"] == "truncated");
        let shown = format!(
            "{} {}{:.1}",
            o["name"].as_str().unwrap(),
            if truncated { "≥" } else { "" },
            o["ml"].as_f64().unwrap()
        );
        assert!(dom.contains(&shown), "{shown} not in {dom}");
        let badge = format!("class=\"qa {}\"", o["qa"]["verdict"].as_str().unwrap());
        assert!(dom.contains(&badge), "{badge} not in {dom}");
    }
    assert!(!dom.contains("Test^Abdomen"), "no patient name by default");

    // The job page: organs, key images, deliveries, timeline.
    let job_page = login(&format!("/ui/jobs/{}", job.id));
    let dom = browse(&job_page, &["--dump-dom"], profile.path());
    for needle in [
        "id=\"organs\"",
        "class=\"key\"",
        "id=\"deliveries\"",
        "job_delivered",
    ] {
        assert!(dom.contains(needle), "{needle} not in the job page: {dom}");
    }
    assert!(dom.contains(summary["sr"]["sop_instance_uid"].as_str().unwrap()));
    // Its screenshot shows the key image: coloured outlines, not only grey.
    let shot = profile.path().join("job.png");
    browse(
        &job_page,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=1200,2000",
            "--virtual-time-budget=5000",
        ],
        profile.path(),
    );
    let script = "import sys, numpy as np; from PIL import Image; \
        a = np.asarray(Image.open(sys.argv[1]).convert('RGB')).astype(int); \
        c = (abs(a[...,0]-a[...,1]) > 40) | (abs(a[...,1]-a[...,2]) > 40); \
        g = (a[...,0] == a[...,1]) & (a[...,1] == a[...,2]) & (a[...,0] < 200) & (a[...,0] > 20); \
        print(int(c.sum()), int(g.sum()))";
    let out = Command::new(venv_python())
        .args(["-c", script])
        .arg(&shot)
        .output()
        .unwrap();
    let counts = String::from_utf8_lossy(&out.stdout);
    let (coloured, grey): (u64, u64) = {
        let mut it = counts.split_whitespace().map(|n| n.parse().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    assert!(
        coloured > 500,
        "no outlines visible: {coloured} coloured pixels"
    );
    assert!(grey > 50_000, "no CT image visible: {grey} grey pixels");

    // The audit search and its CSV export; the health page.
    let dom = browse(&login("/ui/audit"), &["--dump-dom"], profile.path());
    assert!(
        dom.contains("job_queued") && dom.contains("id=\"csv\""),
        "{dom}"
    );
    let dom = browse(&login("/ui/health"), &["--dump-dom"], profile.path());
    assert!(
        dom.contains("test-cascade") && dom.contains("pacs (PACS@127.0.0.1"),
        "{dom}"
    );
    node.stop().await;
}
