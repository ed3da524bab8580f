//! Jobs: listing, claiming, finishing, resuming after a stop and an operator's retry.
//! Every change of state goes through [`JobState::transition`].

use serde::Serialize;
use sqlx::Any;

use super::audit::{AuditEvent, append_audit};
use super::{
    AuditKind, DeliveryState, JobId, JobState, NewDelivery, NewResult, Priority, SeriesId, Store,
    StoreError, begin_writing, now_ms, results,
};
use crate::dicom::Uid;
use crate::quality::Verdict;

/// A job as listed by `segnode jobs` and the API.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: JobId,
    pub state: JobState,
    pub reason: Option<String>,
    pub series_uid: Uid,
    pub study_uid: Uid,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    /// The calling AE of the association that sent this job's revision.
    pub calling_ae: String,
    pub series_revision: i64,
    pub instance_count: i64,
    pub superseded_by: Option<JobId>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error_code: Option<String>,
    /// The job summary as JSON (`jobs::summary::JobSummary` reads it).
    #[serde(skip)]
    pub summary: Option<String>,
    /// The BINARY SEG it made (from the results table).
    pub seg_sop_instance_uid: Option<Uid>,
    /// The node that holds (or last held) the job.
    pub node_id: Option<String>,
    /// Its worst organ verdict, once assessed.
    pub qa_verdict: Option<Verdict>,
    pub priority: Priority,
}

/// A job with the series facts that events about it carry.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: JobId,
    pub series_id: SeriesId,
    /// The series' revision the job processes.
    pub series_revision: i64,
    pub series_uid: Uid,
    pub study_uid: Uid,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub calling_ae: String,
}

/// A job a stop left `running`, how many times a worker has started it, and the node
/// that held it.
#[derive(Debug, Clone)]
pub struct InterruptedJob {
    pub job: ClaimedJob,
    pub starts: i64,
    pub holder: Option<String>,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub state: JobState,
    pub reason: Option<String>,
    pub error_code: Option<String>,
    /// The job summary, as `jobs` serialised it (the store keeps it as it is given).
    pub summary: serde_json::Value,
    /// Milliseconds per stage (the metrics add them up).
    pub timings_ms: Vec<(&'static str, i64)>,
    /// The result objects written to the spool.
    pub results: Vec<NewResult>,
    /// How many instances were processed.
    pub instance_count: Option<i64>,
    /// The worst organ verdict of its result.
    pub qa_verdict: Option<Verdict>,
}

/// Which jobs to list: newest first, all filters optional.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub id: Option<JobId>,
    pub state: Option<JobState>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub study_uid: Option<Uid>,
    pub accession_number: Option<String>,
    /// Only jobs that need a person's look: held for review, or with an organ whose
    /// verdict is `warn` or `fail`.
    pub needs_review: bool,
    pub limit: i64,
    pub offset: i64,
}

impl ClaimedJob {
    /// An audit event about this job.
    pub(super) fn event(&self, event: AuditKind, detail: serde_json::Value) -> AuditEvent<'_> {
        AuditEvent {
            calling_ae: Some(&self.calling_ae),
            study_uid: Some(self.study_uid.as_str()),
            series_uid: Some(self.series_uid.as_str()),
            patient_id: self.patient_id.as_deref(),
            accession_number: self.accession_number.as_deref(),
            job_id: Some(self.id),
            detail,
            ..AuditEvent::of(event)
        }
    }
}

/// The SELECT of a [`ClaimedJob`], before its WHERE clause.
macro_rules! claimed_job_sql {
    () => {
        "SELECT j.id, j.series_id, j.series_revision, s.series_uid, s.study_uid, s.patient_id, s.accession_number, j.calling_ae
         FROM jobs j JOIN series s ON s.id = j.series_id"
    };
}

/// The claim of a job by this node, before its WHERE clause.
macro_rules! claim_job_sql {
    () => {
        "UPDATE jobs SET state = $1, started_ms = $2, updated_ms = $2, starts = starts + 1,
             node_id = $3, lease_until_ms = $4 "
    };
}

/// Succeeded → delivered in `tx`, when the job still is succeeded; audited as done by
/// `node_id`. Whether it changed.
pub(super) async fn promote_to_delivered(
    tx: &mut sqlx::Transaction<'static, Any>,
    node_id: &str,
    id: JobId,
) -> Result<bool, StoreError> {
    let next = JobState::Succeeded.transition(JobState::Delivered)?;
    let changed = sqlx::query(
        "UPDATE jobs SET state = $1, updated_ms = $2 WHERE id = $3 AND state = 'succeeded'",
    )
    .bind(next)
    .bind(now_ms())
    .bind(id)
    .execute(&mut **tx)
    .await?
    .rows_affected()
        == 1;
    if changed {
        let job = claimed_job(&mut **tx, id).await?;
        append_audit(
            tx,
            node_id,
            &job.event(AuditKind::JobDelivered, serde_json::Value::Null),
        )
        .await?;
    }
    Ok(changed)
}

/// One job with the series facts that events about it carry.
pub(super) async fn claimed_job<'e, E>(executor: E, id: JobId) -> Result<ClaimedJob, StoreError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    sqlx::query_as(concat!(claimed_job_sql!(), " WHERE j.id = $1"))
        .bind(id)
        .fetch_optional(executor)
        .await?
        .ok_or(StoreError::NoSuchJob(id))
}

impl Store {
    /// One job.
    pub async fn job(&self, id: JobId) -> Result<Option<JobRow>, StoreError> {
        let query = JobQuery {
            id: Some(id),
            limit: 1,
            ..JobQuery::default()
        };
        Ok(self.jobs(&query).await?.pop())
    }

    /// Jobs matching `q`, newest first, paginated.
    pub async fn jobs(&self, q: &JobQuery) -> Result<Vec<JobRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.id, j.state, j.reason, s.series_uid, s.study_uid, s.patient_id, s.accession_number,
                    s.modality, s.series_description,
                    j.calling_ae, j.series_revision, j.instance_count, j.superseded_by, j.created_ms, j.updated_ms,
                    j.started_ms, j.finished_ms, j.error_code, j.summary,
                    (SELECT r.sop_instance_uid FROM results r
                     WHERE r.job_id = j.id AND r.kind = 'seg' AND r.variant = 'BINARY') AS seg_sop_instance_uid,
                    j.node_id, j.qa_verdict, j.priority
             FROM jobs j JOIN series s ON s.id = j.series_id
             WHERE ($1 IS NULL OR j.state = $1) AND ($2 IS NULL OR j.created_ms >= $2)
               AND ($3 IS NULL OR j.created_ms <= $3) AND ($4 IS NULL OR s.study_uid = $4)
               AND ($7 IS NULL OR j.id = $7) AND ($8 IS NULL OR s.accession_number = $8)
               AND ($9 = 0 OR j.state = 'review'
                    OR (j.qa_verdict IN ('warn', 'fail')
                        AND j.state IN ('succeeded', 'delivered')))
             ORDER BY j.id DESC LIMIT $5 OFFSET $6",
        )
        .bind(q.state)
        .bind(q.since_ms)
        .bind(q.until_ms)
        .bind(&q.study_uid)
        .bind(q.limit)
        .bind(q.offset)
        .bind(q.id)
        .bind(&q.accession_number)
        .bind(i64::from(q.needs_review))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims the next queued job for a worker of this node (queued → running): the
    /// oldest `stat` one, else the oldest; under a lease, atomically (on PostgreSQL, `FOR UPDATE SKIP LOCKED`: nodes claiming at
    /// once get different jobs), and counts the start.
    pub async fn claim_next_job(&self) -> Result<Option<ClaimedJob>, StoreError> {
        let next = JobState::Queued.transition(JobState::Running)?;
        let now = now_ms();
        let claimed: Option<JobId> = sqlx::query_scalar(self.dialect(
            concat!(
                claim_job_sql!(),
                "WHERE id = (SELECT j.id FROM jobs j JOIN series s ON s.id = j.series_id
                             WHERE j.state = 'queued' AND s.revision = j.series_revision
                             ORDER BY j.priority = 'stat' DESC, j.id LIMIT 1)
                 RETURNING id"
            ),
            concat!(
                claim_job_sql!(),
                "WHERE id = (SELECT j.id FROM jobs j JOIN series s ON s.id = j.series_id
                             WHERE j.state = 'queued' AND s.revision = j.series_revision
                             ORDER BY j.priority = 'stat' DESC, j.id LIMIT 1 FOR UPDATE OF j SKIP LOCKED)
                 RETURNING id"
            ),
        ))
        .bind(next)
        .bind(now)
        .bind(&self.node.node_id)
        .bind(now + self.lease_ms())
        .fetch_optional(&self.pool)
        .await?;
        let Some(id) = claimed else {
            return Ok(None);
        };
        let job = claimed_job(&self.pool, id).await?;
        self.audit(&job.event(AuditKind::JobStarted, serde_json::Value::Null))
            .await?;
        Ok(Some(job))
    }

    /// Extends this node's lease on a running job; `false` when the node no longer
    /// holds it (another node took it over after the lease ran out).
    pub async fn renew_job_lease(&self, id: JobId) -> Result<bool, StoreError> {
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_until_ms = $1 WHERE id = $2 AND state = 'running' AND node_id = $3",
        )
        .bind(now_ms() + self.lease_ms())
        .bind(id)
        .bind(&self.node.node_id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Ends a running job that this node holds with its outcome, queues its result's
    /// `deliveries` and audits it, in one transaction (a stop cannot leave a result
    /// without its deliveries); a job whose lease another node took over is not touched
    /// ([`StoreError::LeaseLost`]).
    pub async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: &JobOutcome,
        deliveries: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let next = JobState::Running.transition(outcome.state)?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let finished = sqlx::query(
            "UPDATE jobs SET state = $1, reason = $2, error_code = $3, summary = $4,
                 instance_count = COALESCE($5, instance_count), finished_ms = $6, updated_ms = $6,
                 qa_verdict = $9
             WHERE id = $7 AND state = 'running' AND node_id = $8",
        )
        .bind(next)
        .bind(&outcome.reason)
        .bind(&outcome.error_code)
        .bind(outcome.summary.to_string())
        .bind(outcome.instance_count)
        .bind(now)
        .bind(job.id)
        .bind(&self.node.node_id)
        .bind(outcome.qa_verdict)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if finished == 0 {
            return Err(StoreError::LeaseLost(job.id));
        }
        results::insert_results(&mut tx, job.id, &outcome.results).await?;
        results::insert_timings(&mut tx, job.id, &outcome.timings_ms).await?;
        let held = next == JobState::Review;
        let state = if held {
            DeliveryState::Held
        } else {
            DeliveryState::Pending
        };
        results::insert_deliveries(&mut tx, job.id, deliveries, state).await?;
        let event = match next {
            JobState::Succeeded => AuditKind::JobSucceeded,
            JobState::Review => AuditKind::JobHeld,
            _ => AuditKind::JobFailed,
        };
        let detail = serde_json::json!({
            "reason": outcome.reason,
            "error_code": outcome.error_code,
            "summary": outcome.summary,
        });
        append_audit(&mut tx, &self.node.node_id, &job.event(event, detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Takes over the running jobs whose holder is gone: those whose lease ran out
    /// (the node died or lost the database), and at start-up (`own`) those this node
    /// held when it stopped. Each is claimed for this node with a fresh lease, one
    /// conditional update each, so that of several nodes looking at once one gets it.
    pub async fn take_over_interrupted(
        &self,
        own: bool,
    ) -> Result<Vec<InterruptedJob>, StoreError> {
        let now = now_ms();
        let candidates: Vec<(JobId, i64, Option<String>, Option<i64>)> = sqlx::query_as(
            "SELECT id, starts, node_id, lease_until_ms FROM jobs
             WHERE state = 'running'
               AND (lease_until_ms IS NULL OR lease_until_ms < $1
                    OR ($2 = 1 AND (node_id IS NULL OR node_id = $3)))
             ORDER BY id",
        )
        .bind(now)
        .bind(i64::from(own))
        .bind(&self.node.node_id)
        .fetch_all(&self.pool)
        .await?;
        let mut jobs = Vec::with_capacity(candidates.len());
        for (id, starts, holder, lease) in candidates {
            let taken = sqlx::query(
                "UPDATE jobs SET node_id = $1, lease_until_ms = $2
                 WHERE id = $3 AND state = 'running'
                   AND node_id IS NOT DISTINCT FROM $4 AND lease_until_ms IS NOT DISTINCT FROM $5",
            )
            .bind(&self.node.node_id)
            .bind(now + self.lease_ms())
            .bind(id)
            .bind(&holder)
            .bind(lease)
            .execute(&self.pool)
            .await?
            .rows_affected();
            if taken == 1 {
                let job = claimed_job(&self.pool, id).await?;
                jobs.push(InterruptedJob {
                    job,
                    starts,
                    holder,
                });
            }
        }
        Ok(jobs)
    }

    /// Puts an interrupted job this node took over back in the queue (running →
    /// queued), audited with the node that held it.
    pub async fn requeue(&self, job: &InterruptedJob) -> Result<(), StoreError> {
        let detail = serde_json::json!({ "starts": job.starts, "held_by": job.holder });
        self.back_to_queue(&job.job, detail).await
    }

    /// Puts a job whose series moved on to a later revision before it was read back in
    /// the queue (running → queued), audited: it is not claimed again, and the job of
    /// the later revision supersedes it once the series is stable.
    pub async fn set_aside_stale(&self, job: &ClaimedJob) -> Result<(), StoreError> {
        let detail = serde_json::json!({
            "reason": "an instance arrived after the job was made: the job of the series' next revision processes it",
        });
        self.back_to_queue(job, detail).await
    }

    async fn back_to_queue(
        &self,
        job: &ClaimedJob,
        detail: serde_json::Value,
    ) -> Result<(), StoreError> {
        let next = JobState::Running.transition(JobState::Queued)?;
        let mut tx = self.pool.begin().await?;
        let requeued = sqlx::query(
            "UPDATE jobs SET state = $1, updated_ms = $2, lease_until_ms = NULL
             WHERE id = $3 AND state = 'running' AND node_id = $4",
        )
        .bind(next)
        .bind(now_ms())
        .bind(job.id)
        .bind(&self.node.node_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if requeued == 0 {
            return Err(StoreError::LeaseLost(job.id));
        }
        append_audit(
            &mut tx,
            &self.node.node_id,
            &job.event(AuditKind::JobRequeued, detail),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Succeeded → delivered, when the job still is succeeded; audited. Returns
    /// whether it changed.
    pub async fn mark_delivered(&self, id: JobId) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let changed = promote_to_delivered(&mut tx, &self.node.node_id, id).await?;
        tx.commit().await?;
        Ok(changed)
    }

    /// Jobs still `succeeded` whose deliveries (at least one) are all delivered: what a
    /// stop between the last attempt and the promotion leaves.
    pub async fn fully_delivered_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT j.id FROM jobs j WHERE j.state = 'succeeded'
               AND EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id)
               AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = j.id AND d.state <> 'delivered')
             ORDER BY j.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// A writing transaction on job `id` for an operator's or reviewer's change, with
    /// the job and its state read in it (it reads before it writes, see
    /// `begin_writing`).
    pub(super) async fn job_to_change(
        &self,
        id: JobId,
    ) -> Result<(sqlx::Transaction<'static, Any>, ClaimedJob, JobState), StoreError> {
        let mut tx = begin_writing(&self.pool, self.engine).await?;
        let job = claimed_job(&mut *tx, id).await?;
        let state: JobState = sqlx::query_scalar("SELECT state FROM jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        Ok((tx, job, state))
    }

    /// An operator's retry: a failed job is queued again; its failed deliveries are
    /// pending again with fresh attempts. Returns (job re-queued, deliveries re-queued).
    pub async fn retry_job(&self, id: JobId) -> Result<(bool, u64), StoreError> {
        let now = now_ms();
        let (mut tx, job, state) = self.job_to_change(id).await?;
        let requeue = state == JobState::Failed;
        if requeue {
            let next = state.transition(JobState::Queued)?;
            sqlx::query(
                "UPDATE jobs SET state = $1, reason = NULL, error_code = NULL, starts = 0, updated_ms = $2
                 WHERE id = $3",
            )
            .bind(next)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        let deliveries = sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = $1, updated_ms = $2
             WHERE job_id = $3 AND state = 'failed'",
        )
        .bind(now)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let detail =
            serde_json::json!({ "job_requeued": requeue, "deliveries_requeued": deliveries });
        append_audit(
            &mut tx,
            &self.node.node_id,
            &job.event(AuditKind::OperatorRetry, detail),
        )
        .await?;
        tx.commit().await?;
        Ok((requeue, deliveries))
    }
}

#[cfg(test)]
mod tests {
    use super::super::ResultObject;
    use super::super::testing::queued_job;
    use super::*;
    use crate::dicom::SegType;

    fn result(kind: ResultObject, variant: Option<SegType>, uid: &str, file: &str) -> NewResult {
        NewResult {
            kind,
            variant,
            sop_instance_uid: Uid::parse(uid).unwrap(),
            file: file.into(),
        }
    }

    fn outcome(state: JobState) -> JobOutcome {
        let results = if state == JobState::Succeeded {
            vec![
                result(
                    ResultObject::Seg,
                    Some(SegType::Binary),
                    "2.25.1",
                    "seg-file",
                ),
                result(ResultObject::KeyImages, None, "2.25.2", "key-file"),
            ]
        } else {
            Vec::new()
        };
        JobOutcome {
            reason: (state == JobState::Failed).then(|| "volume: a slice is missing".into()),
            error_code: (state == JobState::Failed).then(|| "missing_slice".into()),
            timings_ms: vec![("volume", 4)],
            instance_count: Some(2),
            ..crate::store::testing::outcome(state, results)
        }
    }

    #[tokio::test]
    async fn claim_finish_list_and_retry() {
        let store = crate::store::testing::store().await;
        let id = queued_job(&store, 2, "BARSCU").await;
        let job = store.claim_next_job().await.unwrap().unwrap();
        assert_eq!((job.id, job.calling_ae.as_str()), (id, "BARSCU"));
        assert!(store.claim_next_job().await.unwrap().is_none());
        store
            .finish_job(&job, &outcome(JobState::Failed), &[])
            .await
            .unwrap();
        let row = store.job(id).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Failed);
        assert_eq!(row.error_code.as_deref(), Some("missing_slice"));
        assert!(row.started_ms.is_some() && row.finished_ms.is_some());

        let failed = JobQuery {
            state: Some(JobState::Failed),
            limit: 10,
            ..JobQuery::default()
        };
        assert_eq!(store.jobs(&failed).await.unwrap().len(), 1);
        let other_study = JobQuery {
            study_uid: Some(Uid::parse("9.9").unwrap()),
            limit: 10,
            ..JobQuery::default()
        };
        assert!(store.jobs(&other_study).await.unwrap().is_empty());
        let by_accession = |a: &str| JobQuery {
            accession_number: Some(a.into()),
            limit: 10,
            ..JobQuery::default()
        };
        assert_eq!(store.jobs(&by_accession("A1")).await.unwrap().len(), 1);
        assert!(store.jobs(&by_accession("A2")).await.unwrap().is_empty());

        assert_eq!(store.retry_job(id).await.unwrap(), (true, 0));
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            JobState::Queued
        );
        assert!(matches!(
            store.retry_job(JobId(99)).await,
            Err(StoreError::NoSuchJob(JobId(99)))
        ));
        let job = store.claim_next_job().await.unwrap().unwrap();
        store
            .finish_job(&job, &outcome(JobState::Succeeded), &[])
            .await
            .unwrap();
        let row = store.job(id).await.unwrap().unwrap();
        assert_eq!(
            row.seg_sop_instance_uid.map(|u| u.to_string()).as_deref(),
            Some("2.25.1")
        );
        let results = store.job_results(id).await.unwrap();
        assert_eq!(
            results
                .iter()
                .map(|r| (r.kind, r.variant))
                .collect::<Vec<_>>(),
            [
                (ResultObject::Seg, Some(SegType::Binary)),
                (ResultObject::KeyImages, None)
            ]
        );
        // Its result files are referenced: the sweep at start keeps them.
        let referenced = store.referenced_files().await.unwrap();
        assert!(referenced.contains("seg-file") && referenced.contains("key-file"));
        assert!(store.mark_delivered(id).await.unwrap());
        assert!(!store.mark_delivered(id).await.unwrap());
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            JobState::Delivered
        );
    }

    /// A slice that arrives after a series settled but before its job starts makes a
    /// new revision: the old job is not started (the new revision's job supersedes it
    /// once the series is stable again), and one started just before reads nothing and
    /// is set aside, so that no job records one set of instances and processes another.
    #[tokio::test]
    async fn a_job_whose_series_moved_on_is_neither_claimed_nor_read() {
        use super::super::testing::{file, instance};
        let store = crate::store::testing::store().await;
        let first = queued_job(&store, 19, "PACS").await;
        store
            .record_instance(&instance(1, 19), &file("f19", "x"), "PACS", true)
            .await
            .unwrap();
        assert!(store.claim_next_job().await.unwrap().is_none());

        // Claimed before the late slice: its revision's instances are gone.
        let store = crate::store::testing::store().await;
        let first_b = queued_job(&store, 19, "PACS").await;
        let job = store.claim_next_job().await.unwrap().unwrap();
        assert_eq!(job.id, first_b);
        store
            .record_instance(&instance(1, 19), &file("f19", "x"), "PACS", true)
            .await
            .unwrap();
        assert_eq!(
            store
                .series_sources(job.series_id, job.series_revision)
                .await
                .unwrap(),
            None
        );
        store.set_aside_stale(&job).await.unwrap();
        assert_eq!(
            store.job(first_b).await.unwrap().unwrap().state,
            JobState::Queued
        );
        assert!(store.claim_next_job().await.unwrap().is_none());
        // Once stable again, the new revision's job (all 20) supersedes it and runs.
        let series = store.series_due(now_ms()).await.unwrap().remove(0);
        let second = store
            .settle_series(&series, 20, None, Priority::Routine)
            .await
            .unwrap()
            .unwrap();
        let old = store.job(first_b).await.unwrap().unwrap();
        assert_eq!(
            (old.state, old.superseded_by),
            (JobState::Superseded, Some(second))
        );
        let job = store.claim_next_job().await.unwrap().unwrap();
        assert_eq!(job.id, second);
        let sources = store
            .series_sources(job.series_id, job.series_revision)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(sources.len(), 20);
        assert_ne!(first, second);
    }

    #[tokio::test]
    async fn interrupted_jobs_count_their_starts_and_go_back_to_the_queue() {
        let store = crate::store::testing::store().await;
        let id = queued_job(&store, 1, "PACS").await;
        for start in 1..=2 {
            store.claim_next_job().await.unwrap().unwrap();
            // Not another node's: the lease runs.
            assert!(store.take_over_interrupted(false).await.unwrap().is_empty());
            let interrupted = store.take_over_interrupted(true).await.unwrap();
            assert_eq!(interrupted.len(), 1);
            assert_eq!((interrupted[0].job.id, interrupted[0].starts), (id, start));
            store.requeue(&interrupted[0]).await.unwrap();
        }
        assert_eq!(
            store.job(id).await.unwrap().unwrap().state,
            JobState::Queued
        );
        let requeued = store
            .audit_rows(Some(AuditKind::JobRequeued))
            .await
            .unwrap();
        assert_eq!(requeued.len(), 2);
        let detail: serde_json::Value = serde_json::from_str(&requeued[1].detail).unwrap();
        assert_eq!(
            detail,
            serde_json::json!({ "starts": 2, "held_by": "test-node" })
        );
        assert_eq!(requeued[1].node_id.as_deref(), Some("test-node"));
    }

    /// Two nodes on one database: each claim goes to one node; a node that stops
    /// renewing loses its job to the other once the lease runs out, and can then
    /// neither renew nor finish it.
    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_old_holder_cannot_finish() {
        let a = crate::store::testing::store().await;
        let lease = std::time::Duration::from_secs(1);
        let (a, b) = (a.other_node("a", lease).await, a);
        let b = b.other_node("b", lease * 30).await;
        let first = queued_job(&a, 1, "PACS").await;
        let job = a.claim_next_job().await.unwrap().unwrap();
        assert_eq!(job.id, first);
        assert!(b.claim_next_job().await.unwrap().is_none());
        assert!(b.take_over_interrupted(false).await.unwrap().is_empty());
        assert!(a.renew_job_lease(first).await.unwrap());

        tokio::time::sleep(lease * 2).await;
        let taken = b.take_over_interrupted(false).await.unwrap();
        assert_eq!(taken.len(), 1);
        assert_eq!(taken[0].holder.as_deref(), Some("a"));
        // Only one node gets it.
        assert!(a.take_over_interrupted(false).await.unwrap().is_empty());
        b.requeue(&taken[0]).await.unwrap();
        let again = b.claim_next_job().await.unwrap().unwrap();
        assert_eq!(again.id, first);

        assert!(!a.renew_job_lease(first).await.unwrap());
        let outcome = crate::store::testing::outcome(JobState::Succeeded, Vec::new());
        assert!(matches!(
            a.finish_job(&job, &outcome, &[]).await,
            Err(StoreError::LeaseLost(id)) if id == first
        ));
        b.finish_job(&again, &outcome, &[]).await.unwrap();
        let row = b.job(first).await.unwrap().unwrap();
        assert_eq!(row.state, JobState::Succeeded);
        let nodes: Vec<_> = b
            .audit_query(&crate::store::AuditFilter {
                job_id: Some(first),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|r| (r.event, r.node_id.unwrap_or_default()))
            .collect();
        assert_eq!(
            nodes,
            [
                (AuditKind::JobQueued, "a".to_string()),
                (AuditKind::JobStarted, "a".to_string()),
                (AuditKind::JobRequeued, "b".to_string()),
                (AuditKind::JobStarted, "b".to_string()),
                (AuditKind::JobSucceeded, "b".to_string()),
            ]
        );
    }
}
