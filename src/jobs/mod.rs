//! Jobs: one per (series, revision) that became stable. The state machine is the
//! store's ([`crate::store::JobState`]); this stage owns the rules that move jobs: the
//! processing of a series ([`process`], shared with `segnode run`), the workers that
//! claim jobs ([`pipeline`]), and resuming the jobs a stop interrupted.

pub mod offline;
pub mod pipeline;
pub mod process;
pub mod summary;

use tokio_util::sync::CancellationToken;

use crate::store::{JobOutcome, JobState, Store, StoreError};

/// How many times a job may be started before an interruption ends it: a series that
/// stops the node every time it is processed (a poison job) must not stop it forever.
pub const MAX_STARTS: i64 = 3;

/// What [`resume_interrupted`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Resumed {
    /// Jobs put back in the queue.
    pub requeued: usize,
    /// Jobs ended `failed`: they had been started `max_starts` times.
    pub failed: usize,
}

/// Jobs left `running` by a stop go back to the queue, unless they have been started
/// `max_starts` times: those end `failed` (code `interrupted`) with a reason that says
/// so, and an operator's retry starts them afresh. At start-up (`own`) that is every
/// job this node held; later, and on every node, the jobs whose holder's lease ran
/// out (a node that died: [`Store::take_over_interrupted`]).
pub async fn resume_interrupted(
    store: &Store,
    max_starts: i64,
    own: bool,
) -> Result<Resumed, StoreError> {
    let mut resumed = Resumed::default();
    for interrupted in store.take_over_interrupted(own).await? {
        if let Some(holder) = interrupted
            .holder
            .as_deref()
            .filter(|h| *h != store.node().node_id)
        {
            tracing::warn!(
                job_id = interrupted.job.id.0,
                holder,
                "taking over a job whose node stopped renewing its lease"
            );
        }
        if interrupted.starts < max_starts {
            store.requeue(&interrupted).await?;
            resumed.requeued += 1;
            continue;
        }
        let reason = format!(
            "the node stopped while processing this job {} times; it is not started again \
             automatically (segnode retry {} starts it afresh)",
            interrupted.starts, interrupted.job.id
        );
        tracing::error!(
            job_id = interrupted.job.id.0,
            starts = interrupted.starts,
            "job interrupted too often: failed"
        );
        let outcome = JobOutcome {
            state: JobState::Failed,
            reason: Some(reason),
            error_code: Some("interrupted".into()),
            summary: summary::JobSummary::interrupted(interrupted.starts).to_json(),
            timings_ms: Vec::new(),
            results: Vec::new(),
            instance_count: None,
            qa_verdict: None,
        };
        store.finish_job(&interrupted.job, &outcome, &[]).await?;
        resumed.failed += 1;
    }
    Ok(resumed)
}

/// Until `shutdown`: this node's heartbeat, and every poll interval the jobs whose
/// holder's lease ran out taken over (queued again, `wake` called), so that a node
/// that died loses its work to the others within its lease plus one interval.
pub async fn watch_leases(store: Store, wake: impl Fn(), shutdown: CancellationToken) {
    let started_ms = crate::store::now_ms();
    let interval = store.node().poll_interval();
    loop {
        if let Err(e) = store.heartbeat(started_ms).await {
            tracing::error!(error = %e, "cannot record this node's heartbeat");
        }
        match resume_interrupted(&store, MAX_STARTS, false).await {
            Ok(r) if r.requeued > 0 => wake(),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "cannot take over interrupted jobs"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::queued_job;

    /// A job whose processing stops the node on every start: each restart resumes it
    /// until the cap, then it ends failed, and other jobs go on.
    #[tokio::test]
    async fn a_poison_job_ends_failed_after_the_cap() {
        let store = crate::store::testing::store().await;
        let poison = queued_job(&store, 1, "PACS").await;
        for start in 1..=MAX_STARTS {
            let job = store.claim_next_job().await.unwrap().unwrap();
            assert_eq!(job.id, poison);
            // The node dies here; at the next start:
            let resumed = resume_interrupted(&store, MAX_STARTS, true).await.unwrap();
            let expected = if start < MAX_STARTS {
                Resumed {
                    requeued: 1,
                    failed: 0,
                }
            } else {
                Resumed {
                    requeued: 0,
                    failed: 1,
                }
            };
            assert_eq!(resumed, expected, "start {start}");
        }
        let row = store.job(poison).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Failed);
        assert_eq!(row.error_code.as_deref(), Some("interrupted"));
        assert!(row.reason.unwrap().contains("3 times"));
        assert!(store.claim_next_job().await.unwrap().is_none());

        // An operator's retry starts it afresh: the count starts again.
        store.retry_job(poison).await.unwrap();
        store.claim_next_job().await.unwrap().unwrap();
        let resumed = resume_interrupted(&store, MAX_STARTS, true).await.unwrap();
        assert_eq!(
            resumed,
            Resumed {
                requeued: 1,
                failed: 0
            }
        );
    }
}
