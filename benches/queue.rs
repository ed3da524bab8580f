//! Job queue benchmark: jobs claimed and completed per second through the store's own
//! claim and finish (lease, `FOR UPDATE SKIP LOCKED` on PostgreSQL, audit rows in the
//! same transactions as on a node), with a no-op model: a worker claims a job and
//! finishes it at once, so the figure is the queue's ceiling, not the cascade's.
//!
//! Three set-ups in one run, each draining the same number of pre-queued jobs:
//! one node on SQLite (the default, the anchor), one node on PostgreSQL, and three
//! nodes on PostgreSQL (three processes of this binary, each a node with its own
//! connection pool and workers). PostgreSQL is Debian's server, started in a temporary
//! folder (`scripts/postgres`), fsync on.
//!
//! Usage: cargo bench --bench queue -- [JOBS [WORKERS_PER_NODE]]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use segnode::store::{
    Database, InstanceMeta, JobOutcome, JobState, Membership, SpooledFile, Store, now_ms,
};

/// A node's lease in the benchmark (the default of the configuration).
const LEASE: Duration = Duration::from_secs(30);

fn meta(series: usize) -> InstanceMeta {
    let uid = |s: String| segnode::dicom::Uid::parse(&s).expect("valid UID");
    InstanceMeta {
        sop_class_uid: uid(segnode::dicom::uid::CT_IMAGE_STORAGE.into()),
        sop_instance_uid: uid(format!("2.25.7.{series}.1")),
        study_uid: uid(format!("2.25.7.{series}")),
        series_uid: uid(format!("2.25.7.{series}.0")),
        patient_id: None,
        accession_number: None,
        modality: Some("CT".into()),
        series_description: None,
        image_type: None,
        number_of_frames: 1,
        slice_thickness_mm: Some(1.0),
        orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
    }
}

async fn open(database: &Database, node_id: &str) -> Store {
    let node = Membership {
        node_id: node_id.into(),
        lease: LEASE,
    };
    Store::open(database, &node).await.expect("database")
}

/// Queues `jobs` jobs the way a node does (an instance recorded, its series settled).
async fn fill(database: &Database, jobs: usize) {
    let store = open(database, "filler").await;
    for series in 0..jobs {
        let file = SpooledFile {
            file_name: format!("objects/00/{series}.dcm"),
            size_bytes: 1,
            sha256: format!("{series}"),
            transfer_syntax: segnode::dicom::uid::ts::EXPLICIT_VR_LE.into(),
        };
        store
            .record_instance(&meta(series), &file, "BENCH", true)
            .await
            .expect("instance");
    }
    for row in store.series_due(now_ms()).await.expect("series") {
        store
            .settle_series(&row, 1, None, segnode::store::Priority::Routine)
            .await
            .expect("job");
    }
    store.close().await;
}

/// One node: `workers` workers claiming and finishing jobs until none is queued.
/// Returns how many this node did.
async fn drain(database: &Database, node_id: &str, workers: usize) -> usize {
    let store = open(database, node_id).await;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while let Some(job) = store.claim_next_job().await.expect("claim") {
                let outcome = JobOutcome {
                    state: JobState::Succeeded,
                    reason: None,
                    error_code: None,
                    summary: serde_json::json!({}),
                    timings_ms: Vec::new(),
                    results: Vec::new(),
                    instance_count: None,
                    qa_verdict: None,
                };
                store.finish_job(&job, &outcome, &[]).await.expect("finish");
                done += 1;
            }
            done
        }));
    }
    let mut done = 0;
    for t in tasks {
        done += t.await.expect("worker");
    }
    store.close().await;
    done
}

/// Queues `jobs`, lets `nodes` node processes drain them; returns jobs per second and
/// each node's share.
async fn run(database: &Database, jobs: usize, nodes: usize, workers: usize) -> (f64, Vec<usize>) {
    fill(database, jobs).await;
    let url = match database {
        Database::Sqlite(path) => path.display().to_string(),
        Database::Postgres(url) => url.clone(),
    };
    let start = Instant::now();
    let children: Vec<_> = (0..nodes)
        .map(|n| {
            Command::new(std::env::current_exe().expect("this binary"))
                .args([
                    "--node",
                    &url,
                    &format!("node{}", n + 1),
                    &workers.to_string(),
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("node process")
        })
        .collect();
    let shares: Vec<usize> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("node process");
            assert!(out.status.success(), "a node process failed");
            String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .expect("count")
        })
        .collect();
    let seconds = start.elapsed().as_secs_f64();
    assert_eq!(shares.iter().sum::<usize>(), jobs, "every job done once");
    (jobs as f64 / seconds, shares)
}

fn postgres(folder: &Path, command: &str) -> String {
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres"))
        .arg(command)
        .arg(folder)
        .output()
        .expect("scripts/postgres");
    assert!(
        out.status.success(),
        "scripts/postgres {command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn create_database(server: &str, name: &str) -> Database {
    let ok = Command::new("psql")
        .args([server, "-qc", &format!("CREATE DATABASE {name}")])
        .status()
        .expect("psql");
    assert!(ok.success());
    let (base, _) = server.rsplit_once('/').expect("URL");
    Database::Postgres(format!("{base}/{name}"))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.first().map(String::as_str) == Some("--node") {
        let database = Database::parse(&args[1]);
        let done = drain(&database, &args[2], args[3].parse().expect("workers")).await;
        println!("{done}");
        return;
    }
    let jobs: usize = args.first().map_or(1000, |a| a.parse().expect("JOBS"));
    let workers: usize = args.get(1).map_or(2, |a| a.parse().expect("WORKERS"));
    let dir = tempfile::tempdir().expect("temporary folder");
    let server = postgres(&dir.path().join("pg"), "start");

    let sqlite = Database::Sqlite(dir.path().join("queue.db"));
    let (one_sqlite, _) = run(&sqlite, jobs, 1, workers).await;
    let (one_pg, _) = run(&create_database(&server, "queue_one"), jobs, 1, workers).await;
    let (three_pg, shares) = run(&create_database(&server, "queue_three"), jobs, 3, workers).await;
    postgres(&dir.path().join("pg"), "stop");

    let report = serde_json::json!({
        "jobs": jobs,
        "workers_per_node": workers,
        "lease_seconds": LEASE.as_secs(),
        "jobs_per_second": {
            "sqlite_1_node": (one_sqlite * 10.0).round() / 10.0,
            "postgres_1_node": (one_pg * 10.0).round() / 10.0,
            "postgres_3_nodes": (three_pg * 10.0).round() / 10.0,
        },
        "postgres_3_nodes_share": shares,
        "ratio_3_nodes_postgres_to_1_node_sqlite": (three_pg / one_sqlite * 100.0).round() / 100.0,
    });
    println!("{}", serde_json::to_string_pretty(&report).expect("JSON"));
}
