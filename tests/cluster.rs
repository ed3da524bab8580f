//! Scale-out: three `segnode serve` processes share one PostgreSQL database (Debian's
//! server, started here in a temporary folder) and one spool folder. Twelve series go
//! round-robin to the three DICOM ports, one of them split over two nodes; the node
//! holding a job is killed with SIGKILL. Every series must end with exactly one SEG at
//! a DCMTK storescp, the killed node's job taken over within the lease plus one poll
//! interval, and the audit trail must say which node did what.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use dicom_dictionary_std::tags;
use segnode::store::{AuditKind, Database, JobQuery, JobState, Membership, Store};

/// The lease of the test's nodes: short, so that the takeover is quick to see.
const LEASE_SECONDS: u64 = 3;

struct ClusterNode {
    id: String,
    dicom_port: u16,
    process: KillOnDrop,
}

/// Node `id`'s configuration: the shared data folder and database, its own ports,
/// results to the PACS at `pacs_port`.
fn node_config(
    dir: &Path,
    shared: &Path,
    database: &str,
    id: &str,
    pacs_port: u16,
) -> (PathBuf, u16) {
    let (dicom, http) = (free_port(), free_port());
    let text = test_config(shared, "")
        .lines()
        .filter(|l| !l.starts_with("database = "))
        .collect::<Vec<_>>()
        .join("\n")
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{dicom}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{http}"), 1)
        .replacen(
            "[dicom]",
            &format!(
                "database = \"{database}\"\nnode_id = \"{id}\"\nlease_seconds = {LEASE_SECONDS}\n[dicom]"
            ),
            1,
        )
        .replacen(
            "[http]\n",
            "[http]\nallow_unauthenticated_loopback = true\n",
            1,
        )
        + &destination("PACS", pacs_port, "STORESCU", "");
    let config = dir.join(format!("{id}.toml"));
    std::fs::write(&config, text).unwrap();
    (config, dicom)
}

/// The series a SEG at the PACS segments (its Referenced Series), for SEGs only.
fn seg_source(file: &Path) -> Option<String> {
    let obj = dicom_object::open_file(file).ok()?;
    let modality = obj.element(tags::MODALITY).ok()?.to_str().ok()?;
    if modality.trim() != "SEG" {
        return None;
    }
    let referenced = obj.element(tags::REFERENCED_SERIES_SEQUENCE).ok()?;
    let item = referenced.items()?.first()?;
    let uid = item
        .element(tags::SERIES_INSTANCE_UID)
        .ok()?
        .to_str()
        .ok()?;
    Some(uid.trim_end_matches('\0').trim().to_string())
}

fn series_uid(file: &Path) -> String {
    let obj = dicom_object::open_file(file).unwrap();
    let uid = obj
        .element(tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap();
    uid.trim_end_matches('\0').trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_queue_and_take_over_the_job_of_a_killed_node() {
    let postgres = Postgres::start();
    let database = create_database(&postgres.url);
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let pacs_port = free_port();
    let pacs_dir = dir.path().join("pacs");
    std::fs::create_dir_all(&pacs_dir).unwrap();
    let _pacs = StoreScp::start(pacs_port, &pacs_dir, &[]);

    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        let (config, dicom_port) = node_config(dir.path(), &shared, &database, id, pacs_port);
        let log = dir.path().join(format!("{id}.log"));
        let process = KillOnDrop(spawn_node(&config, &log));
        nodes.push(ClusterNode {
            id: id.to_string(),
            dicom_port,
            process,
        });
    }
    for node in &nodes {
        wait_until_serving(node.dicom_port).await;
    }
    let logs = || {
        ["n1", "n2", "n3"]
            .iter()
            .map(|id| {
                let log = std::fs::read_to_string(dir.path().join(format!("{id}.log")));
                format!("--- {id}:\n{}", log.unwrap_or_default())
            })
            .collect::<String>()
    };

    // Twelve series: eleven synthetic, sent together, then the real one (the longest
    // job, sent last so that it runs while the test watches); series i goes to node
    // i mod 3, and the eleventh is split over nodes 1 and 2.
    let inputs = tempfile::tempdir().unwrap();
    let mut series: Vec<Vec<PathBuf>> = Vec::new();
    for n in 1..=11 {
        let folder = inputs.path().join(n.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        series.push(tissue_series(&folder, 200 + n, 12, 96));
    }
    series.push(vec![real_series()]);
    let mut expected = BTreeSet::new();
    for files in &series {
        let first = if files[0].is_dir() {
            files_under(&files[0])[0].clone()
        } else {
            files[0].clone()
        };
        expected.insert(series_uid(&first));
    }
    let send = |node: &ClusterNode, part: &[PathBuf]| {
        let port = node.dicom_port.to_string();
        let part: Vec<PathBuf> = part.to_vec();
        async move {
            let refs: Vec<&Path> = part.iter().map(PathBuf::as_path).collect();
            let (ok, out) = storescu(&port, &refs).await;
            assert!(ok, "storescu failed:\n{out}");
        }
    };
    // The eleven synthetic series at once, so that their jobs are queued together and
    // every node's workers find some (one at a time, the node whose series tracker
    // settles each series first would take every job itself).
    let mut sends = Vec::new();
    for (i, files) in series[..11].iter().enumerate() {
        if i == 10 {
            let (a, b) = files.split_at(files.len() / 2);
            sends.push(send(&nodes[0], a));
            sends.push(send(&nodes[1], b));
        } else {
            sends.push(send(&nodes[i % 3], files));
        }
    }
    futures_util::future::join_all(sends).await;
    send(&nodes[11 % 3], &series[11]).await;

    // The test's own view of the cluster: the same database.
    let store = Store::open(
        &Database::Postgres(database.clone()),
        &Membership::solo("test"),
    )
    .await
    .unwrap();
    let all = JobQuery {
        limit: 100,
        ..JobQuery::default()
    };
    // The node that starts the real series' job (the longest, about a second) is
    // killed as soon as it holds it.
    let real = series_uid(&files_under(&real_series())[0]);
    let start = Instant::now();
    let (victim_job, victim) = loop {
        let jobs = store.jobs(&all).await.unwrap();
        let held = jobs
            .into_iter()
            .find(|j| j.series_uid.as_str() == real && j.state == JobState::Running);
        if let Some(job) = held {
            break (job.id, job.node_id.expect("a running job's holder"));
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the real series' job ({real}) never ran: {:?}; logs:\n{}",
            store
                .jobs(&all)
                .await
                .unwrap()
                .iter()
                .map(|j| (j.series_uid.to_string(), j.state))
                .collect::<Vec<_>>(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed_at = Instant::now();
    let killed_at_ms = segnode::store::now_ms();
    nodes
        .iter_mut()
        .find(|n| n.id == victim)
        .expect("a node of the test")
        .process
        .kill();

    // Every series ends delivered, once.
    let delivered = wait_for(Duration::from_secs(240), || async {
        let jobs = store.jobs(&all).await.ok()?;
        let delivered = jobs
            .iter()
            .filter(|j| j.state == JobState::Delivered)
            .count();
        (delivered == expected.len()).then_some(jobs)
    })
    .await;
    let Some(jobs) = delivered else {
        let states: Vec<_> = store
            .jobs(&all)
            .await
            .unwrap()
            .into_iter()
            .map(|j| (j.id.0, j.state, j.node_id))
            .collect();
        panic!(
            "not every series was delivered; jobs: {states:?}\nlogs:\n{}",
            logs()
        );
    };
    let took = killed_at.elapsed();
    assert_eq!(jobs.len(), expected.len(), "one job per series: {jobs:?}");
    let sources: BTreeSet<String> = jobs.iter().map(|j| j.series_uid.to_string()).collect();
    assert_eq!(sources, expected);

    // Exactly one SEG per series at the PACS.
    let mut segs: BTreeMap<String, usize> = BTreeMap::new();
    for file in files_under(&pacs_dir) {
        if let Some(source) = seg_source(&file) {
            *segs.entry(source).or_default() += 1;
        }
    }
    assert_eq!(
        segs,
        expected
            .iter()
            .map(|s| (s.clone(), 1))
            .collect::<BTreeMap<_, _>>(),
        "SEGs per series at the PACS"
    );

    // The killed node's job: taken over by another node within the lease plus one poll
    // interval (the lease ran from its last renewal, before the kill), then succeeded once.
    let audit = store.audit_rows(None).await.unwrap();
    let requeue = audit
        .iter()
        .find(|r| r.event == AuditKind::JobRequeued && r.job_id == Some(victim_job))
        .unwrap_or_else(|| panic!("no takeover of job {victim_job} in the audit trail"));
    let detail: serde_json::Value = serde_json::from_str(&requeue.detail).unwrap();
    assert_eq!(detail["held_by"], victim.as_str());
    let taker = requeue.node_id.clone().unwrap();
    assert_ne!(taker, victim);
    let poll = Membership {
        node_id: "x".into(),
        lease: Duration::from_secs(LEASE_SECONDS),
    }
    .poll_interval();
    let bound_ms = (Duration::from_secs(LEASE_SECONDS) + poll).as_millis() as i64;
    let after_kill = requeue.at_ms - killed_at_ms;
    assert!(
        after_kill <= bound_ms + 500,
        "taken over {after_kill} ms after the kill; the bound is {bound_ms} ms"
    );
    eprintln!(
        "job {victim_job} of {victim} taken over by {taker} {after_kill} ms after the kill \
         (lease {LEASE_SECONDS} s, poll {} ms); all {} series delivered {:.1} s after the kill",
        poll.as_millis(),
        expected.len(),
        took.as_secs_f64()
    );

    // The audit trail: every row names its node; each job queued, started, succeeded
    // (once) and delivered; the work was spread over the nodes.
    assert!(
        audit.iter().all(|r| r.node_id.is_some()),
        "a row without node"
    );
    for job in &jobs {
        let kinds: Vec<AuditKind> = audit
            .iter()
            .filter(|r| r.job_id == Some(job.id))
            .map(|r| r.event)
            .collect();
        for kind in [
            AuditKind::JobQueued,
            AuditKind::JobStarted,
            AuditKind::JobDelivered,
        ] {
            assert!(
                kinds.contains(&kind),
                "job {}: no {kind}: {kinds:?}",
                job.id
            );
        }
        let succeeded = kinds
            .iter()
            .filter(|k| **k == AuditKind::JobSucceeded)
            .count();
        assert_eq!(succeeded, 1, "job {} succeeded {succeeded} times", job.id);
    }
    let mut workers: BTreeMap<String, usize> = BTreeMap::new();
    for node in audit
        .iter()
        .filter(|r| r.event == AuditKind::JobSucceeded)
        .filter_map(|r| r.node_id.clone())
    {
        *workers.entry(node).or_default() += 1;
    }
    eprintln!("jobs done per node: {workers:?}");
    assert!(workers.len() >= 2, "jobs were all done by {workers:?}");
    let receivers: BTreeSet<String> = audit
        .iter()
        .filter(|r| r.event == AuditKind::AssociationAccepted)
        .filter_map(|r| r.node_id.clone())
        .collect();
    assert_eq!(receivers.len(), 3, "associations by {receivers:?}");
    store.close().await;

    // `segnode check` for a fourth node: the database, the shared spool, the clocks.
    let (config, _) = node_config(dir.path(), &shared, &database, "n4", pacs_port);
    let check = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_segnode"))
            .args(["--config", config.to_str().unwrap(), "check"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, text) = check();
    assert!(ok, "{text}");
    for needle in [
        "(PostgreSQL 1",
        "node id n4, lease 3 s",
        "write, fsync, rename and directory fsync work",
        "ms off the database's (round trip",
        "node n1: version",
        "node n3: version",
    ] {
        assert!(text.contains(needle), "check lacks {needle:?}:\n{text}");
    }
    // A node whose clock is 5 s ahead: named as a problem.
    psql(
        &database,
        &format!(
            "INSERT INTO nodes VALUES ('skewed', 'x', 0, {}, 5000)",
            segnode::store::now_ms()
        ),
    );
    let (ok, text) = check();
    assert!(!ok, "{text}");
    assert!(text.contains("the nodes' clocks differ by"), "{text}");
}
