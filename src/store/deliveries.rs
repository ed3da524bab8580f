//! Deliveries: the outbox of a job's results, one row per (job, destination, instance),
//! and the attempts made on them.

use serde::Serialize;

use super::audit::append_audit;
use super::jobs::{claimed_job, promote_to_delivered};
use super::{
    AuditKind, DeliveryState, Engine, JobId, ResultObject, Store, StoreError, begin_writing, now_ms,
};
use crate::dicom::{SegType, Uid};

/// A delivery in the outbox, with the result it sends (from the results table).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub job_id: JobId,
    pub destination: String,
    pub object: ResultObject,
    pub state: DeliveryState,
    pub variant: Option<SegType>,
    pub sop_instance_uid: Uid,
    #[serde(skip)]
    pub file: String,
    #[serde(skip)]
    pub fallback_file: Option<String>,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub delivered_ms: Option<i64>,
    /// The node that holds (or last held) it.
    pub node_id: Option<String>,
}

/// The SELECT of a [`DeliveryRow`] (`d`, its result `r`), before its WHERE clause.
macro_rules! delivery_row_sql {
    () => {
        "SELECT d.id, d.job_id, d.destination, r.kind AS object, d.state, r.variant,
                r.sop_instance_uid, r.file, f.file AS fallback_file, d.attempts, d.next_attempt_ms,
                d.last_status, d.last_error, d.created_ms, d.updated_ms, d.delivered_ms, d.node_id
         FROM deliveries d JOIN results r ON r.id = d.result_id
         LEFT JOIN results f ON f.id = d.fallback_result_id "
    };
}

/// The claim of due deliveries by this node, up to the order and limit of the inner
/// SELECT.
macro_rules! claim_deliveries_sql {
    () => {
        "UPDATE deliveries SET node_id = $1, lease_until_ms = $2
         WHERE id IN (SELECT id FROM deliveries
                      WHERE state = 'pending' AND next_attempt_ms <= $3
                        AND (lease_until_ms IS NULL OR lease_until_ms < $3 OR node_id = $1) "
    };
}

/// What one delivery attempt came to.
#[derive(Debug, Clone)]
pub enum Attempt {
    Delivered {
        status: String,
        note: Option<String>,
    },
    Retry {
        error: String,
        next_attempt_ms: i64,
    },
    Failed {
        error: String,
    },
}

impl Attempt {
    pub fn state(&self) -> DeliveryState {
        match self {
            Attempt::Delivered { .. } => DeliveryState::Delivered,
            Attempt::Retry { .. } => DeliveryState::Pending,
            Attempt::Failed { .. } => DeliveryState::Failed,
        }
    }
}

impl Store {
    /// Claims up to `limit` pending deliveries whose next attempt is due for this node,
    /// under a lease (on PostgreSQL, `FOR UPDATE SKIP LOCKED`: nodes claiming at once
    /// get different deliveries); a delivery another node holds is left alone until
    /// its lease runs out. Oldest due first.
    pub async fn claim_due_deliveries(&self, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        let now = now_ms();
        let claimed: Vec<i64> = sqlx::query_scalar(self.dialect(
            concat!(
                claim_deliveries_sql!(),
                "ORDER BY next_attempt_ms, id LIMIT $4) RETURNING id"
            ),
            concat!(
                claim_deliveries_sql!(),
                "ORDER BY next_attempt_ms, id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id"
            ),
        ))
        .bind(&self.node.node_id)
        .bind(now + self.lease_ms())
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let mut rows = Vec::with_capacity(claimed.len());
        for id in claimed {
            rows.push(
                sqlx::query_as(concat!(delivery_row_sql!(), "WHERE d.id = $1"))
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?,
            );
        }
        rows.sort_by_key(|d: &DeliveryRow| (d.next_attempt_ms, d.id));
        Ok(rows)
    }

    /// A job's deliveries, in the order they are due.
    pub async fn job_deliveries(&self, job_id: JobId) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            delivery_row_sql!(),
            "WHERE d.job_id = $1 ORDER BY d.next_attempt_ms, d.id"
        ))
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// How many deliveries of each job with an id in `first..=last` are in each state,
    /// in one query (a page of the job list).
    pub async fn delivery_states(
        &self,
        first: JobId,
        last: JobId,
    ) -> Result<Vec<(JobId, DeliveryState, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT job_id, state, COUNT(*) FROM deliveries WHERE job_id BETWEEN $1 AND $2
             GROUP BY job_id, state",
        )
        .bind(first)
        .bind(last)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Each destination's latest delivery: how it stands.
    pub async fn destination_outcomes(&self) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            delivery_row_sql!(),
            "WHERE d.id = (SELECT id FROM deliveries WHERE destination = d.destination
                           ORDER BY updated_ms DESC, id DESC LIMIT 1)
             ORDER BY d.destination"
        ))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records an attempt, audited; the job's last delivery promotes the job to
    /// `delivered` in the same transaction. Returns how many of the job's deliveries are
    /// not delivered once it is recorded (counted in the same transaction, so that of
    /// two deliveries finishing together the later one sees none left).
    pub async fn record_attempt(
        &self,
        d: &DeliveryRow,
        attempt: &Attempt,
    ) -> Result<i64, StoreError> {
        let now = now_ms();
        let state = attempt.state();
        let mut tx = begin_writing(&self.pool, self.engine).await?;
        // One job's attempts one at a time, so that the last one sees none left.
        if self.engine == Engine::Postgres {
            sqlx::query("SELECT id FROM jobs WHERE id = $1 FOR UPDATE")
                .bind(d.job_id)
                .execute(&mut *tx)
                .await?;
        }
        let (status, error, next, note) = match attempt {
            Attempt::Delivered { status, note } => {
                (Some(status), None, d.next_attempt_ms, note.as_ref())
            }
            Attempt::Retry {
                error,
                next_attempt_ms,
            } => (None, Some(error), *next_attempt_ms, None),
            Attempt::Failed { error } => (None, Some(error), d.next_attempt_ms, None),
        };
        let recorded = sqlx::query(
            "UPDATE deliveries SET state = $1, attempts = attempts + 1, next_attempt_ms = $2,
                 last_status = COALESCE($3, last_status), last_error = $4, updated_ms = $5,
                 delivered_ms = CASE WHEN $1 = 'delivered' THEN $5 ELSE delivered_ms END,
                 lease_until_ms = NULL
             WHERE id = $6 AND node_id = $7",
        )
        .bind(state)
        .bind(next)
        .bind(status)
        .bind(error)
        .bind(now)
        .bind(d.id)
        .bind(&self.node.node_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if recorded == 0 {
            return Err(StoreError::DeliveryLeaseLost(d.id));
        }
        let job = claimed_job(&mut *tx, d.job_id).await?;
        let detail = serde_json::json!({
            "destination": d.destination,
            "object": d.object,
            "attempt": d.attempts + 1,
            "outcome": state,
            "status": status,
            "error": error,
            "note": note,
            "sop_instance_uid": d.sop_instance_uid,
        });
        append_audit(
            &mut tx,
            &self.node.node_id,
            &job.event(AuditKind::DeliveryAttempt, detail),
        )
        .await?;
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM deliveries WHERE job_id = $1 AND state <> 'delivered'",
        )
        .bind(d.job_id)
        .fetch_one(&mut *tx)
        .await?;
        // The last delivery and the job's promotion in one transaction: a node killed
        // between the two would leave the job `succeeded` for good, the other nodes
        // sweeping only when they start.
        if open == 0 && state == DeliveryState::Delivered {
            promote_to_delivered(&mut tx, &self.node.node_id, d.job_id).await?;
        }
        tx.commit().await?;
        Ok(open)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::testing::queued_job;
    use super::super::{NewDelivery, NewResult};
    use super::*;

    /// The result object `object` of a job (one per kind) and its delivery to
    /// `destination`.
    fn delivery(destination: &str, object: ResultObject) -> (NewResult, NewDelivery) {
        let uid = Uid::parse(&format!("2.25.{}", object as u8 + 1)).unwrap();
        let result = NewResult {
            kind: object,
            variant: (object == ResultObject::Seg).then_some(SegType::Binary),
            sop_instance_uid: uid.clone(),
            file: format!("{object:?}"),
        };
        let delivery = NewDelivery {
            destination: destination.into(),
            sop_instance_uid: uid,
            fallback: None,
        };
        (result, delivery)
    }

    async fn create(store: &Store, job: JobId, items: &[(NewResult, NewDelivery)]) {
        let (results, deliveries): (Vec<_>, Vec<_>) = items.iter().cloned().unzip();
        store
            .create_deliveries(job, &results, &deliveries)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn attempts_are_recorded_and_count_what_is_left() {
        let store = crate::store::testing::store().await;
        let job = queued_job(&store, 1, "PACS").await;
        let items = [
            delivery("pacs", ResultObject::Seg),
            delivery("archive", ResultObject::Seg),
        ];
        create(&store, job, &items).await;
        // Once per destination and instance.
        create(&store, job, &items).await;
        let due = store.claim_due_deliveries(10).await.unwrap();
        assert_eq!(due.len(), 2);
        // Held by this node under its lease: another node gets none of them, nor may it
        // record an attempt on one.
        let other = store.other_node("other", Duration::from_secs(30)).await;
        assert!(other.claim_due_deliveries(10).await.unwrap().is_empty());
        let stolen = Attempt::Failed { error: "x".into() };
        assert!(matches!(
            other.record_attempt(&due[0], &stolen).await,
            Err(StoreError::DeliveryLeaseLost(_))
        ));

        let retry = Attempt::Retry {
            error: "refused".into(),
            next_attempt_ms: now_ms() + 60_000,
        };
        assert_eq!(store.record_attempt(&due[0], &retry).await.unwrap(), 2);
        // The attempt ended the claim: the one not yet due stays, the other is due.
        assert_eq!(other.claim_due_deliveries(10).await.unwrap().len(), 0);
        let again = store.claim_due_deliveries(10).await.unwrap();
        assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [due[1].id]);
        let delivered = Attempt::Delivered {
            status: "0x0000".into(),
            note: None,
        };
        assert_eq!(store.record_attempt(&due[1], &delivered).await.unwrap(), 1);
        assert_eq!(store.record_attempt(&due[0], &delivered).await.unwrap(), 0);
        let rows = store.job_deliveries(job).await.unwrap();
        assert!(rows.iter().all(|r| r.state == DeliveryState::Delivered));
        assert!(rows.iter().all(|r| r.delivered_ms.is_some()));
        assert_eq!(rows.iter().map(|r| r.attempts).sum::<i64>(), 3);
        assert_eq!(
            rows.iter()
                .find(|r| r.destination == "pacs")
                .unwrap()
                .last_error
                .as_deref(),
            None
        );

        let failed = Attempt::Failed {
            error: "gone".into(),
        };
        assert_eq!(store.record_attempt(&rows[0], &failed).await.unwrap(), 1);
        // Another object for the same destination is a delivery of its own.
        let sr = [delivery("pacs", ResultObject::Sr)];
        create(&store, job, &sr).await;
        assert_eq!(store.job_deliveries(job).await.unwrap().len(), 3);
        let states = store.delivery_states(job, job).await.unwrap();
        assert!(
            states.contains(&(job, DeliveryState::Delivered, 1)),
            "{states:?}"
        );
        assert!(
            states.contains(&(job, DeliveryState::Failed, 1)),
            "{states:?}"
        );
        assert!(
            states.contains(&(job, DeliveryState::Pending, 1)),
            "{states:?}"
        );
        assert!(
            store
                .delivery_states(JobId(job.0 + 1), JobId(job.0 + 9))
                .await
                .unwrap()
                .is_empty()
        );
        let latest = store.destination_outcomes().await.unwrap();
        let names: Vec<_> = latest.iter().map(|d| d.destination.as_str()).collect();
        assert_eq!(names, ["archive", "pacs"]);
        assert_eq!(latest[1].object, ResultObject::Sr, "the newest of pacs'");
        assert_eq!(store.retry_job(job).await.unwrap(), (false, 1));
        // The instance's file and the two objects' files.
        assert_eq!(store.referenced_files().await.unwrap().len(), 3);
        let attempts = store
            .audit_rows(Some(AuditKind::DeliveryAttempt))
            .await
            .unwrap();
        assert_eq!(attempts.len(), 4);
        assert!(attempts[0].detail.contains(r#""outcome":"pending""#));
    }

    #[tokio::test]
    async fn the_last_delivery_promotes_its_job_in_the_same_transaction() {
        let store = crate::store::testing::store().await;
        let job = queued_job(&store, 1, "PACS").await;
        let claimed = store.claim_next_job().await.unwrap().unwrap();
        let outcome = super::super::testing::outcome(super::super::JobState::Succeeded, Vec::new());
        store.finish_job(&claimed, &outcome, &[]).await.unwrap();
        // Succeeded without deliveries (no destination): nothing to promote.
        assert!(store.fully_delivered_jobs().await.unwrap().is_empty());
        let items = [
            delivery("pacs", ResultObject::Seg),
            delivery("pacs", ResultObject::Sr),
        ];
        create(&store, job, &items).await;
        let due = store.claim_due_deliveries(10).await.unwrap();
        let delivered = Attempt::Delivered {
            status: "0x0000".into(),
            note: None,
        };
        assert_eq!(store.record_attempt(&due[0], &delivered).await.unwrap(), 1);
        let state = || async { store.job(job).await.unwrap().unwrap().state };
        assert_eq!(state().await, super::super::JobState::Succeeded);
        // The last attempt: the job is delivered with it, nothing left to sweep.
        assert_eq!(store.record_attempt(&due[1], &delivered).await.unwrap(), 0);
        assert_eq!(state().await, super::super::JobState::Delivered);
        assert!(store.fully_delivered_jobs().await.unwrap().is_empty());
        assert!(!store.mark_delivered(job).await.unwrap());
        let promoted = store
            .audit_rows(Some(AuditKind::JobDelivered))
            .await
            .unwrap();
        assert_eq!(promoted.len(), 1);
        // A database written before the two were one transaction may hold such a job:
        // the outbox's start-up sweep finds it.
        sqlx::query("UPDATE jobs SET state = 'succeeded' WHERE id = $1")
            .bind(job)
            .execute(&store.pool)
            .await
            .unwrap();
        assert_eq!(store.fully_delivered_jobs().await.unwrap(), vec![job]);
        assert!(store.mark_delivered(job).await.unwrap());
    }
}
