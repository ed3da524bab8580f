//! A full file system, kept right: the spool and the database on a small tmpfs that is
//! filled up while a series arrives, then the database alone on one. Whatever the node
//! could not store is answered with an error status (never success), C-ECHO and the API
//! still answer, every instance it acknowledged is on disk and recorded, and once space
//! returns the same series sent again makes one complete job. Mounting a tmpfs needs root
//! (these machines run the tests as root); as another user the tests say "NOT RUN" on
//! stderr and end, and as root a mount that fails fails them.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use segnode::deliver::{self, Association, OutgoingFile, ScuTimeouts};
use segnode::dicom::{AeTitle, DimseStatus};
use segnode::store::JobState;

/// Sends every file on one association (as TESTSCU); each file's SOP Instance UID and the
/// status it was answered with.
async fn send_each(node: &TestNode, files: &[PathBuf]) -> Vec<(String, DimseStatus)> {
    let files: Vec<OutgoingFile> = files
        .iter()
        .map(|f| {
            OutgoingFile::from_bytes(f.display().to_string(), std::fs::read(f).unwrap()).unwrap()
        })
        .collect();
    let peer = format!("SEGNODE@127.0.0.1:{}", node.port())
        .parse()
        .unwrap();
    let mut assoc = Association::connect(
        &peer,
        &AeTitle::parse("TESTSCU").unwrap(),
        &deliver::context_pairs(&files),
        ScuTimeouts::default(),
    )
    .await
    .unwrap();
    let mut answers = Vec::new();
    for f in &files {
        let (status, _) = assoc.store(f).await.expect("every C-STORE is answered");
        answers.push((f.sop_instance.clone(), status));
    }
    assoc.release().await.unwrap();
    answers
}

/// What was answered while the disk was full: every success is kept and recorded, every
/// other answer is Out of Resources (the sender may retry), and some were refused.
async fn only_the_stored_were_acknowledged(node: &TestNode, answers: &[(String, DimseStatus)]) {
    let held = node.store.held_objects(None).await.unwrap();
    for (sop, status) in answers {
        let kept = held.iter().any(|o| &o.sop_instance_uid == sop);
        if status.is_success() {
            assert!(kept, "{sop} acknowledged but not recorded");
        } else {
            assert!(status.is_out_of_resources(), "{sop}: {status}");
            assert!(!kept, "{sop} refused but recorded");
        }
    }
    let refused = answers.iter().filter(|(_, s)| !s.is_success()).count();
    assert!(
        refused > 0,
        "the disk was full, yet every instance was acknowledged"
    );
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

/// Whether this process may mount file systems (runs as root). Elsewhere the full-disk
/// tests say so on stderr and end: an ordinary user cannot make a small file system.
fn may_mount() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        eprintln!("NOT RUN: mounting a tmpfs for the full-disk tests needs root");
    }
    root
}

impl Tmpfs {
    fn mount(at: &Path, megabytes: u32) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(at)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_path_buf())
    }

    /// Fills the file system up to `leave` bytes free with a file of its own.
    fn fill(&self, leave: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let df = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.0)
            .output()
            .unwrap();
        let free: u64 = String::from_utf8_lossy(&df.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df gives the free bytes");
        let size = free.saturating_sub(leave);
        let file = std::fs::File::create(&filler).unwrap();
        // Written, not sparse: tmpfs counts pages written.
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        let block = vec![1u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(block.len() as u64) as usize;
            if w.write_all(&block[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = w.flush();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Every instance the node recorded has its spool file, holding what was recorded.
async fn acknowledged_are_kept(node: &TestNode) -> usize {
    let held = node.store.held_objects(None).await.unwrap();
    for object in held.iter().filter(|o| o.kind == "source") {
        let path = node.spool().join(&object.file);
        assert!(
            path.exists(),
            "{} recorded without its file",
            object.sop_instance_uid
        );
    }
    held.iter().filter(|o| o.kind == "source").count()
}

async fn still_answers(node: &TestNode) {
    let (ok, out) = echoscu(&node.port()).await;
    assert!(ok, "C-ECHO while the disk is full: {out}");
    let status = reqwest::Client::new()
        .get(format!("http://{}/healthz", node.http))
        .bearer_auth(node.token())
        .send()
        .await
        .expect("the API answers while the disk is full")
        .status();
    assert!(status.as_u16() == 200 || status.as_u16() == 503, "{status}");
}

/// Sends the series once space is back; the series' latest job is complete and done.
async fn resent_makes_one_complete_job(node: &TestNode, files: &[PathBuf], slices: i64) {
    let answers = send_each(node, files).await;
    assert!(
        answers.iter().all(|(_, s)| s.is_success()),
        "with space back: {answers:?}"
    );
    let job = wait_for(Duration::from_secs(60), || async {
        let jobs = all_jobs(&node.store).await;
        let latest = jobs.into_iter().find(|j| j.superseded_by.is_none())?;
        (latest.instance_count == slices
            && matches!(latest.state, JobState::Succeeded | JobState::Delivered))
        .then_some(latest)
    })
    .await;
    let jobs = all_jobs(&node.store).await;
    let job = job.unwrap_or_else(|| panic!("no complete job: {jobs:#?}"));
    assert!(job.seg_sop_instance_uid.is_some());
    assert_eq!(acknowledged_are_kept(node).await, slices as usize);
    let current = jobs.iter().filter(|j| j.superseded_by.is_none()).count();
    assert_eq!(current, 1, "one job stands for the series: {jobs:#?}");
}

/// The series sent while `disk` has only `leave` bytes free, then again once the filler
/// is gone: what the node answered is what it kept, and the second time makes one job.
async fn full_then_freed(node: &TestNode, disk: &Tmpfs, leave: u64, files: &[PathBuf]) {
    let filler = disk.fill(leave);
    let answers = send_each(node, files).await;
    still_answers(node).await;
    acknowledged_are_kept(node).await;
    only_the_stored_were_acknowledged(node, &answers).await;
    std::fs::remove_file(filler).unwrap();
    resent_makes_one_complete_job(node, files, files.len() as i64).await;
}

const SLICES: u32 = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_spool_disk_refuses_what_it_cannot_store_and_loses_nothing() {
    if !may_mount() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let series = work.path().join("series");
    let files = synthetic_series(&series, 96, SLICES, 512);
    let disk = Tmpfs::mount(&work.path().join("disk"), 64);
    let data = disk.0.join("data");
    let node = TestNode::start_text(|_| {
        // The node's own watermark off: the file system itself runs out.
        test_config(&data, "min_free_disk_mb = 0")
    })
    .await;
    // Room for a few of the 512 KiB slices, not for the series.
    full_then_freed(&node, &disk, 3 << 20, &files).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_disk_refuses_while_the_spool_has_room() {
    if !may_mount() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let series = work.path().join("series");
    let files = synthetic_series(&series, 97, SLICES, 128);
    let disk = Tmpfs::mount(&work.path().join("db-disk"), 16);
    let database = disk.0.join("segnode.db");
    let data = work.path().join("data");
    let node = TestNode::start_text(|_| {
        let text = test_config(&data, "min_free_disk_mb = 0");
        let line = test_database(&data);
        let ours = format!("database = \"{}\"", database.display());
        if line.is_empty() {
            text.replacen("[dicom]", &format!("{ours}\n[dicom]"), 1)
        } else {
            text.replace(&line, &ours)
        }
    })
    .await;
    full_then_freed(&node, &disk, 0, &files).await;
    node.stop().await;
}
