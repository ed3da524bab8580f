//! Start-up recovery after any stop, before a node listens: it takes its node id for
//! this process (refusing to start while another live process holds it), drops the
//! instance rows whose file never became durable (their C-STORE was never
//! acknowledged), sweeps the files no row references (never another node's), readies
//! empty spool files and resumes interrupted jobs (or fails those started too often).

use std::time::Duration;

use crate::jobs;
use crate::spool::{Spool, TmpLock};
use crate::store::{Engine, NodeRow, Store, StoreError, format_ms, now_ms};

/// Empty spool files kept ready for incoming C-STOREs (a few per busy association).
const READY_SPOOL_FILES: usize = 16;
/// How old an unreferenced object on a shared spool must be before start-up removes it.
const SHARED_SWEEP_MIN_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot recover the spool at {path}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node id {node_id:?} is in use by another segnode process on this spool ({lock} is \
         locked; its last heartbeat: {last_seen}): stop that node, or give this one another \
         node_id (node.node_id or SEGNODE_NODE_ID)"
    )]
    NodeIdLocked {
        node_id: String,
        lock: String,
        last_seen: String,
    },
    #[error(
        "node id {node_id:?} is in use by another live node (its last heartbeat: {last_seen}, \
         within the {lease_s} s lease): if that node has stopped, wait {wait_s} s; otherwise \
         give this one another node_id (node.node_id or SEGNODE_NODE_ID)"
    )]
    NodeIdHeld {
        node_id: String,
        last_seen: String,
        lease_s: u64,
        wait_s: u64,
    },
}

/// The error of a spool operation on `spool`.
fn spool_error(spool: &Spool) -> impl Fn(std::io::Error) -> RecoveryError + '_ {
    |source| RecoveryError::Spool {
        path: spool.root().display().to_string(),
        source,
    }
}

/// When a node was last seen, for a person: "3.2 s ago (2026-05-01T10:00:00Z)".
fn last_seen(row: Option<&NodeRow>) -> String {
    match row {
        None => "none yet".into(),
        Some(r) => format!(
            "{:.1} s ago ({})",
            (now_ms() - r.seen_ms).max(0) as f64 / 1000.0,
            format_ms(r.seen_ms)
        ),
    }
}

/// Takes this node's id for this process, before anything touches the spool: its
/// folder on the spool (a second process with the same id on this spool finds it
/// locked), then its row among the nodes (a process with the same id on another spool
/// holds it while it heartbeats). The row of the process that held the folder last on
/// this machine is taken over at once: that process has stopped (a restart after a
/// crash waits for nothing); one that ran elsewhere frees the id after its lease.
pub async fn claim_node_id(store: &Store, spool: &Spool) -> Result<TmpLock, RecoveryError> {
    let spool_error = spool_error(spool);
    let node_id = &store.node().node_id;
    let Some(lock) = spool.lock_tmp(store.instance()).map_err(&spool_error)? else {
        let holder = store.node_row(node_id).await?;
        return Err(RecoveryError::NodeIdLocked {
            node_id: node_id.clone(),
            lock: spool.tmp_lock_path().display().to_string(),
            last_seen: last_seen(holder.as_ref()),
        });
    };
    if let Some(holder) = store.claim_node_id(now_ms(), lock.previous()).await? {
        let lease_ms = store.node().lease.as_millis() as i64;
        let wait_ms = (holder.seen_ms + lease_ms - now_ms()).clamp(0, lease_ms);
        return Err(RecoveryError::NodeIdHeld {
            node_id: node_id.clone(),
            last_seen: last_seen(Some(&holder)),
            lease_s: store.node().lease.as_secs(),
            wait_s: (wait_ms as u64).div_ceil(1000),
        });
    }
    Ok(lock)
}

/// Start-up recovery after any stop: rows whose file never became durable are
/// dropped, files no row references are swept, empty spool files are readied and
/// interrupted jobs resumed (or failed after too many starts).
pub async fn recover(
    store: &Store,
    spool: &Spool,
    tmp_lock: &TmpLock,
) -> Result<(), RecoveryError> {
    let spool_error = spool_error(spool);
    let dropped = drop_unacknowledged(store, spool).await?;
    if dropped > 0 {
        tracing::warn!(
            instances = dropped,
            "dropped instance records whose file was not durable when the node stopped (never acknowledged)"
        );
    }
    // On a spool other nodes share, their objects may be moments from being recorded:
    // on PostgreSQL, or where another node on the same SQLite file is alive.
    let shared = store.engine() == Engine::Postgres || store.other_live_nodes().await? > 0;
    let min_age = if shared {
        SHARED_SWEEP_MIN_AGE
    } else {
        Duration::ZERO
    };
    let swept = spool
        .sweep(tmp_lock, &store.referenced_files().await?, min_age)
        .map_err(&spool_error)?;
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed unacknowledged files left by an earlier run"
        );
    }
    spool.keep_ready(READY_SPOOL_FILES).map_err(&spool_error)?;
    let resumed = jobs::resume_interrupted(store, jobs::MAX_STARTS, true).await?;
    if resumed.requeued > 0 {
        tracing::info!(jobs = resumed.requeued, "interrupted jobs queued again");
    }
    if resumed.failed > 0 {
        tracing::warn!(
            jobs = resumed.failed,
            "jobs interrupted too often ended failed"
        );
    }
    Ok(())
}

/// Instance rows committed while their file was still being made durable when the node
/// stopped (see `receive`): their C-STORE was never acknowledged. Each candidate's file
/// is checked against its recorded SHA-256; rows whose file is missing or differs are
/// dropped (and audited), then their files removed (they are this node's own: a
/// shared spool's sweep would leave a recent one alone).
async fn drop_unacknowledged(store: &Store, spool: &Spool) -> Result<usize, RecoveryError> {
    use rayon::prelude::*;
    let candidates = store.recent_instances().await?;
    let checker = spool.clone();
    let bad: Vec<(i64, String)> = tokio::task::spawn_blocking(move || {
        candidates
            .par_iter()
            .filter(|r| !checker.holds(&r.file_name, &r.sha256))
            .map(|r| (r.id, r.file_name.clone()))
            .collect()
    })
    .await
    .expect("checksums do not panic");
    if !bad.is_empty() {
        let ids: Vec<i64> = bad.iter().map(|(id, _)| *id).collect();
        store.drop_unacknowledged(&ids).await?;
        for (_, file) in &bad {
            if let Err(e) = spool.remove(file) {
                tracing::warn!(error = %e, "cannot remove the file of a dropped instance record");
            }
        }
    }
    Ok(bad.len())
}
