//! HL7 results to the RIS: a test MLLP receiver (the `hl7` package's server, which
//! parses every message) gets one ORU^R01 per job with the organ volumes, and answers
//! AA, then AE (retried), then nothing (time-out, retried), then AR (not retried); a
//! patient name with HL7's delimiters round-trips through the escaping.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The name every series of this test carries: HL7's five delimiters, DICOM's
/// component separator between family and given name.
const NAME: &str = r"O|Brien\Smith^Ann~Marie&Co";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ris_gets_one_oru_per_job_acked_retried_and_escaped() {
    let mut receiver = KillOnDrop(
        std::process::Command::new(venv_python())
            .arg(script("mllp_receiver.py"))
            .arg("AA,AE,none,AR")
            .stdout(Stdio::piped())
            .spawn()
            .expect("the MLLP receiver runs (scripts/setup installs the hl7 package)"),
    );
    let stdout = tokio::process::ChildStdout::from_std(receiver.0.stdout.take().unwrap()).unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let port: u16 = lines.next_line().await.unwrap().unwrap().parse().unwrap();
    let tail = format!(
        "[[hl7_destinations]]\nname = \"ris\"\nhost = \"127.0.0.1\"\nport = {port}\n\
         sending_facility = \"RADIOLOGY\"\nreceiving_application = \"RIS\"\ntimeout_seconds = 2\n\
         [delivery]\ninitial_backoff_seconds = 0.2\nmax_backoff_seconds = 1\nmax_attempts = 3\n"
    );
    let node = TestNode::start_with_tail("", &tail).await;
    let work = tempfile::tempdir().unwrap();
    for n in 0..4 {
        let dir = work.path().join(n.to_string());
        for f in tissue_series(&dir, 60 + n, 12, 64) {
            let mut o = dicom_object::open_file(&f).unwrap();
            o.put(DataElement::new(tags::PATIENT_NAME, VR::PN, NAME));
            o.write_to_file(&f).unwrap();
        }
        let (ok, out) = storescu(&node.port(), &[dir.as_path()]).await;
        assert!(ok, "{out}");
    }

    // Four jobs: AA, AE then AA, no answer then AA, AR: six messages.
    let mut received = Vec::new();
    while received.len() < 6 {
        let line = tokio::time::timeout(Duration::from_secs(90), lines.next_line())
            .await
            .expect("the RIS receives a message within 90 s")
            .unwrap()
            .unwrap();
        received.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let answers: Vec<&str> = received
        .iter()
        .map(|m| m["answered"].as_str().unwrap())
        .collect();
    assert_eq!(
        answers,
        ["AA", "AE", "none", "AR", "AA", "AA"],
        "{received:?}"
    );
    let mut controls: Vec<&str> = received
        .iter()
        .map(|m| m["control_id"].as_str().unwrap())
        .collect();
    controls.sort_unstable();
    controls.dedup();
    assert_eq!(
        controls.len(),
        4,
        "one message per job, the same one when retried"
    );

    let jobs = wait_for(Duration::from_secs(30), || async {
        let jobs = all_jobs(&node.store).await;
        let delivered = jobs
            .iter()
            .filter(|j| j.state == JobState::Delivered)
            .count();
        (jobs.len() == 4 && delivered == 3).then_some(jobs)
    })
    .await
    .expect("three jobs delivered, the rejected one not");
    for m in &received {
        assert_eq!(m["type"], "ORU^R01^ORU_R01");
        assert_eq!(m["version"], "2.5.1");
        assert_eq!(m["patient_id"], "SYNTH-0001");
        assert_eq!(m["family_name"], r"O|Brien\Smith", "{m}");
        assert_eq!(m["given_name"], "Ann~Marie&Co", "{m}");
        assert_eq!(m["accession_number"], "SYNACC1");
        let job = jobs
            .iter()
            .find(|j| m["study_uid"] == j.study_uid.as_str())
            .expect("the message names the job's study");
        let summary: serde_json::Value =
            serde_json::from_str(job.summary.as_deref().unwrap()).unwrap();
        let organs = summary["organs"].as_array().unwrap();
        assert!(!organs.is_empty());
        let observations = m["observations"].as_array().unwrap();
        for organ in organs {
            let name = organ["name"].as_str().unwrap();
            let volume = observations
                .iter()
                .find(|o| o["id"] == format!("{name}.volume"))
                .unwrap_or_else(|| panic!("{name}'s volume in {m}"));
            assert_eq!(volume["type"], "NM");
            assert_eq!(volume["unit"], "mL");
            assert_eq!(volume["status"], "F");
            let ml: f64 = volume["value"].as_str().unwrap().parse().unwrap();
            assert!((ml - organ["ml"].as_f64().unwrap()).abs() <= 0.05, "{m}");
            let verdict = observations
                .iter()
                .find(|o| o["id"] == format!("{name}.quality") && o["sub_id"] == volume["sub_id"])
                .unwrap();
            assert!(
                verdict["value"]
                    .as_str()
                    .unwrap()
                    .starts_with(organ["qa"]["verdict"].as_str().unwrap()),
                "{m}"
            );
        }
        let seg = observations.iter().find(|o| o["type"] == "RP").unwrap();
        assert!(
            seg["value"]
                .as_str()
                .unwrap()
                .contains(job.seg_sop_instance_uid.as_ref().unwrap().as_str()),
            "{m}"
        );
    }

    // Each attempt is audited; the AE and the silence were retried, the AR was not.
    let attempts: Vec<String> = node
        .store
        .audit_query(&segnode::store::AuditFilter::default())
        .await
        .unwrap()
        .into_iter()
        .filter(|a| a.event == AuditKind::DeliveryAttempt)
        .map(|a| a.detail)
        .collect();
    let hl7: Vec<&String> = attempts.iter().filter(|d| d.contains("\"ris\"")).collect();
    assert_eq!(hl7.len(), 6, "{attempts:?}");
    assert!(hl7.iter().any(|d| d.contains("answered AE")), "{hl7:?}");
    assert!(
        hl7.iter().any(|d| d.contains("did not acknowledge")),
        "{hl7:?}"
    );
    assert!(hl7.iter().any(|d| d.contains("answered AR")), "{hl7:?}");
    node.stop().await;
    receiver.kill();
}
