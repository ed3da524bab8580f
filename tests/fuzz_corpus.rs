//! The fuzz targets' corpus (fuzz/corpus/<target>/: the seeds, and every input a fuzz
//! run found that crashed, hung or allocated beyond a limit, kept as a regression
//! input) replayed through the same entry points as the fuzz targets, in the ordinary
//! build: each must end without a panic or an allocation beyond the limits.

use std::path::Path;

use segnode::fuzzing::{Limited, allocation_limit};

/// As in the fuzz targets, an allocation beyond the largest target's limit aborts.
#[global_allocator]
static ALLOCATOR: Limited = Limited(allocation_limit::DATASET);

fn replay(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "{} has no inputs", dir.display());
    for input in inputs {
        let bytes = std::fs::read(&input).unwrap();
        eprintln!("{target}: {}", input.display());
        entry(&bytes);
    }
}

/// The association seeds reach what they are made for: instances kept, in every
/// transfer syntax the node accepts, and a wrong called AE title rejected.
#[tokio::test]
async fn association_corpus() {
    let data = tempfile::tempdir().unwrap();
    // SAFETY: set before the entry point's first use, in this test's own process.
    unsafe { std::env::set_var("SEGNODE_FUZZ_DIR", data.path()) };
    tokio::task::spawn_blocking(|| replay("association", segnode::fuzzing::association))
        .await
        .unwrap();
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite:{}",
        data.path().join("segnode.db").display()
    ))
    .await
    .unwrap();
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    assert!(count("SELECT count(*) FROM instances").await >= 1);
    // The same instance in each transfer syntax replaces the one before it.
    assert!(count("SELECT count(*) FROM audit WHERE event = 'instance_replaced'").await >= 4);
    assert!(count("SELECT count(*) FROM audit WHERE event = 'association_rejected'").await >= 1);
}

#[test]
fn pdu_corpus() {
    replay("pdu", segnode::fuzzing::pdu);
}

#[test]
fn command_corpus() {
    replay("command", segnode::fuzzing::command);
}

#[test]
fn dataset_corpus() {
    replay("dataset", segnode::fuzzing::dataset);
}

#[test]
fn part10_corpus() {
    replay("part10", segnode::fuzzing::part10);
}

#[test]
fn multipart_corpus() {
    replay("multipart", segnode::fuzzing::multipart);
}

#[test]
fn model_files_corpus() {
    replay("model_files", segnode::fuzzing::model_files);
}
