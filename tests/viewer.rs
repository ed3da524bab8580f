//! The web viewer: OHIF's prebuilt application (`scripts/install-viewer`) served under
//! `/viewer/` behind the node's token, reading the node's own DICOMweb; the dashboard's
//! job page links to the study in it. In headless Chromium (software WebGL) the source
//! series opens with its SEG drawn over the image: pixels in the segments' colours.

mod common;

use std::time::Duration;

use common::*;
use reqwest::StatusCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_series_opens_in_the_viewer_with_its_seg_drawn_over_it() {
    let node = TestNode::start().await;
    let index = node.config.http.viewer_dir.join("index.html");
    assert!(
        index.exists(),
        "{} missing: run scripts/install-viewer (scripts/setup)",
        index.display()
    );
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "{out}");
    let job = wait_for(Duration::from_secs(90), || async {
        let jobs = all_jobs(&node.store).await;
        jobs.into_iter().find(|j| j.seg_sop_instance_uid.is_some())
    })
    .await
    .expect("a job with a SEG");
    let base = format!("http://{}", node.http);
    let token = node.token();
    let http = reqwest::Client::new();

    // The job page links to the study in the viewer, the SEG in the first viewport.
    let page = http
        .get(format!("{base}/ui/jobs/{}", job.id))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let marker = r#"<a id="viewer" href=""#;
    let start = page.find(marker).expect("a viewer link") + marker.len();
    let link = page[start..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    assert!(
        link.starts_with(&format!(
            "/viewer/viewer?StudyInstanceUIDs={}&initialSeriesInstanceUID=",
            job.study_uid
        )),
        "{link}"
    );

    // Without the token the viewer is a sign-in page that comes back to it.
    let anonymous = http.get(format!("{base}{link}")).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let form = anonymous.text().await.unwrap();
    assert!(
        form.contains(r#"name="next" value="/viewer/viewer?StudyInstanceUIDs="#),
        "{form}"
    );
    // With it: the application, rewritten for /viewer/, and its files.
    let app = http
        .get(format!("{base}{link}"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(app.status(), StatusCode::OK);
    assert!(
        app.text()
            .await
            .unwrap()
            .contains(r#"window.PUBLIC_URL="/viewer/""#)
    );
    let config = http
        .get(format!("{base}/viewer/app-config.js"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(
        config
            .text()
            .await
            .unwrap()
            .contains("qidoRoot: '/dicom-web'")
    );
    let missing = http
        .get(format!("{base}/viewer/../api-token"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);

    // In the browser, signed in by the dashboard's cookie.
    let shots = tempfile::tempdir().unwrap();
    let cookie = format!("segnode_token={token}");
    let report = view_seg(
        &format!("{base}{link}"),
        &shots.path().join("viewer.png"),
        &["--cookie", &cookie, "--expect-colour", SOFT_TISSUE],
    );
    let labels = report["segmentations"][0]["segments"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| x["label"].as_str())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(labels.contains(&"soft tissue"), "{report:#}");
    assert!(
        report["failed_requests"]
            .as_array()
            .is_none_or(Vec::is_empty),
        "{report:#}"
    );
    node.stop().await;
}
