//! Requests for a study: what was asked for, the node that carries one out (claimed
//! like a job, so one node works on each), every state it passed through with what it
//! had found (its history), and the series it covers with the job each one got.

use serde::Serialize;

use sqlx::{Any, Transaction};

use super::audit::{AuditEvent, append_audit};
use super::{
    AuditKind, JobId, JobState, Priority, RequestState, SeriesId, SeriesState, Store, StoreError,
    begin_writing, now_ms,
};

/// A request's id: its row in `requests`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct RequestId(pub i64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What is asked for: a study by its UID or its accession number, optionally one
/// series of it, from a source.
#[derive(Debug, Clone, Default)]
pub struct NewRequest {
    pub study_uid: Option<String>,
    pub accession_number: Option<String>,
    pub series_uid: Option<String>,
    pub source: String,
    pub priority: Priority,
    /// Process again even what was already processed with the same model and instances.
    pub force: bool,
}

/// A request as stored.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RequestRow {
    pub id: RequestId,
    pub study_uid: Option<String>,
    pub accession_number: Option<String>,
    pub series_uid: Option<String>,
    pub source: String,
    pub priority: Priority,
    #[serde(serialize_with = "as_bool")]
    pub forced: i64,
    pub state: RequestState,
    pub reason: Option<String>,
    pub node_id: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    /// What it found and retrieved so far (series, sub-operation counts).
    #[serde(serialize_with = "as_json")]
    pub progress: String,
}

fn as_bool<S: serde::Serializer>(v: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bool(*v != 0)
}

fn as_json<S: serde::Serializer>(v: &str, s: S) -> Result<S::Ok, S::Error> {
    serde_json::from_str::<serde_json::Value>(v)
        .unwrap_or(serde_json::Value::Null)
        .serialize(s)
}

/// One step of a request's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RequestEvent {
    pub at_ms: i64,
    pub state: RequestState,
    #[serde(serialize_with = "as_json")]
    pub detail: String,
}

/// A series a request covers, and its job once it has one.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct RequestSeries {
    pub series_uid: String,
    pub study_uid: String,
    pub job_id: Option<JobId>,
    pub job_state: Option<JobState>,
    /// The job existed before the request: same model, same instances.
    #[serde(serialize_with = "as_bool")]
    pub reused: i64,
}

/// A series as a request sees it: whether it is still receiving, and the job of its
/// current revision.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SeriesJob {
    pub series_id: SeriesId,
    pub series_state: SeriesState,
    pub job_id: Option<JobId>,
    pub job_state: Option<JobState>,
    pub job_created_ms: Option<i64>,
    pub summary: Option<String>,
}

/// The SELECT of a [`RequestRow`], before its WHERE clause.
macro_rules! request_row_sql {
    () => {
        "SELECT id, study_uid, accession_number, series_uid, source, priority, forced, state, reason,
                node_id, created_ms, updated_ms, progress
         FROM requests "
    };
}

impl RequestRow {
    fn event(&self, detail: serde_json::Value) -> AuditEvent<'_> {
        AuditEvent {
            study_uid: self.study_uid.as_deref(),
            series_uid: self.series_uid.as_deref(),
            accession_number: self.accession_number.as_deref(),
            detail,
            ..AuditEvent::of(AuditKind::RequestChanged)
        }
    }
}

/// Adds a step to request `id`'s history and the audit trail, in `tx` (with the change
/// it records); returns the request as it now is.
async fn note_request(
    tx: &mut Transaction<'static, Any>,
    node_id: &str,
    id: RequestId,
    mut detail: serde_json::Value,
) -> Result<RequestRow, StoreError> {
    let row: RequestRow = sqlx::query_as(concat!(request_row_sql!(), "WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or(StoreError::NoSuchRequest(id))?;
    detail["request"] = serde_json::json!(id);
    sqlx::query(
        "INSERT INTO request_events (request_id, at_ms, state, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(id)
    .bind(now_ms())
    .bind(row.state)
    .bind(detail.to_string())
    .execute(&mut **tx)
    .await?;
    append_audit(tx, node_id, &row.event(detail)).await?;
    Ok(row)
}

impl Store {
    /// Records a new request, `queued`, with its first history entry and audit record.
    pub async fn create_request(&self, new: &NewRequest) -> Result<RequestId, StoreError> {
        let now = now_ms();
        let mut tx = begin_writing(&self.pool, self.engine).await?;
        let id: RequestId = sqlx::query_scalar(
            "INSERT INTO requests (study_uid, accession_number, series_uid, source, priority, forced,
                                   state, created_ms, updated_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) RETURNING id",
        )
        .bind(&new.study_uid)
        .bind(&new.accession_number)
        .bind(&new.series_uid)
        .bind(&new.source)
        .bind(new.priority)
        .bind(i64::from(new.force))
        .bind(RequestState::Queued)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let detail = serde_json::json!({ "state": RequestState::Queued });
        note_request(&mut tx, &self.node.node_id, id, detail).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Takes the next queued request for this node (queued → retrieving): the oldest
    /// `stat` one, else the oldest.
    pub async fn claim_request(&self) -> Result<Option<RequestRow>, StoreError> {
        let mut tx = begin_writing(&self.pool, self.engine).await?;
        let claimed: Option<RequestId> = sqlx::query_scalar(self.dialect(
            "UPDATE requests SET state = $1, node_id = $2, updated_ms = $3
             WHERE id = (SELECT id FROM requests WHERE state = 'queued'
                         ORDER BY priority = 'stat' DESC, id LIMIT 1)
             RETURNING id",
            "UPDATE requests SET state = $1, node_id = $2, updated_ms = $3
             WHERE id = (SELECT id FROM requests WHERE state = 'queued'
                         ORDER BY priority = 'stat' DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING id",
        ))
        .bind(RequestState::Retrieving)
        .bind(&self.node.node_id)
        .bind(now_ms())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = claimed else {
            return Ok(None);
        };
        let detail = serde_json::json!({ "state": RequestState::Retrieving });
        let row = note_request(&mut tx, &self.node.node_id, id, detail).await?;
        tx.commit().await?;
        Ok(Some(row))
    }

    /// One request.
    pub async fn request(&self, id: RequestId) -> Result<Option<RequestRow>, StoreError> {
        Ok(sqlx::query_as(concat!(request_row_sql!(), "WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    /// Requests, newest first.
    pub async fn requests(&self, limit: i64) -> Result<Vec<RequestRow>, StoreError> {
        Ok(
            sqlx::query_as(concat!(request_row_sql!(), "ORDER BY id DESC LIMIT $1"))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// This node's requests in `state`, oldest first.
    pub async fn my_requests(&self, state: RequestState) -> Result<Vec<RequestRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            request_row_sql!(),
            "WHERE state = $1 AND node_id = $2 ORDER BY id"
        ))
        .bind(state)
        .bind(&self.node.node_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// A request's history, oldest first.
    pub async fn request_events(&self, id: RequestId) -> Result<Vec<RequestEvent>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT at_ms, state, detail FROM request_events WHERE request_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The series a request covers, with their jobs' states.
    pub async fn request_series(&self, id: RequestId) -> Result<Vec<RequestSeries>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT rs.series_uid, rs.study_uid, rs.job_id, j.state AS job_state, rs.reused
             FROM request_series rs LEFT JOIN jobs j ON j.id = rs.job_id
             WHERE rs.request_id = $1 ORDER BY rs.series_uid",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records the series a request covers (those the source's C-FIND found).
    pub async fn cover_series(
        &self,
        id: RequestId,
        series: &[(String, String)],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (study_uid, series_uid) in series {
            sqlx::query(
                "INSERT INTO request_series (request_id, series_uid, study_uid) VALUES ($1, $2, $3)
                 ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(series_uid)
            .bind(study_uid)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Gives a covered series its job (`reused`: one that existed before the request).
    pub async fn link_request_job(
        &self,
        id: RequestId,
        series_uid: &str,
        job: JobId,
        reused: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE request_series SET job_id = $1, reused = $2 WHERE request_id = $3 AND series_uid = $4",
        )
        .bind(job)
        .bind(i64::from(reused))
        .bind(id)
        .bind(series_uid)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether a request still being carried out asks for `series_uid` at `stat`: its
    /// job is made `stat` when the series settles.
    pub async fn stat_requested(&self, series_uid: &str) -> Result<bool, StoreError> {
        let found: Option<i64> = sqlx::query_scalar(
            "SELECT r.id FROM request_series rs JOIN requests r ON r.id = rs.request_id
             WHERE rs.series_uid = $1 AND r.priority = 'stat' AND r.state IN ('retrieving', 'processing')
             LIMIT 1",
        )
        .bind(series_uid)
        .fetch_optional(&self.pool)
        .await?;
        Ok(found.is_some())
    }

    /// Moves a request on: to `state` (with `reason` when it failed), its progress
    /// replaced by `progress`; the step is added to its history and audited.
    pub async fn advance_request(
        &self,
        id: RequestId,
        state: RequestState,
        reason: Option<&str>,
        progress: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let mut tx = begin_writing(&self.pool, self.engine).await?;
        sqlx::query(
            "UPDATE requests SET state = $1, reason = $2, progress = $3, updated_ms = $4 WHERE id = $5",
        )
        .bind(state)
        .bind(reason)
        .bind(progress.to_string())
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let mut detail = serde_json::json!({ "state": state, "progress": progress });
        if let Some(reason) = reason {
            detail["reason"] = reason.into();
        }
        note_request(&mut tx, &self.node.node_id, id, detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The series `series_uid` and the job of its current revision, if it is held.
    pub async fn series_job(&self, series_uid: &str) -> Result<Option<SeriesJob>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.id AS series_id, s.state AS series_state, j.id AS job_id, j.state AS job_state,
                    j.created_ms AS job_created_ms, j.summary
             FROM series s LEFT JOIN jobs j ON j.series_id = s.id AND j.series_revision = s.revision
             WHERE s.series_uid = $1",
        )
        .bind(series_uid)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Makes a series due for a new job with its instances as they are: a new revision,
    /// `receiving` again, so that the tracker settles it into a job that supersedes
    /// the old one (a request with `force`, or a model that changed since).
    pub async fn process_again(&self, series_id: SeriesId) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE series SET revision = revision + 1, state = $1, last_received_ms = $2 WHERE id = $3",
        )
        .bind(SeriesState::Receiving)
        .bind(now_ms())
        .bind(series_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Puts this node's unfinished requests back in the queue (at start-up: a stop
    /// interrupted them; retrieving again is harmless, instances already held are
    /// recognised).
    pub async fn requeue_requests(&self) -> Result<u64, StoreError> {
        let mut requeued = 0;
        for state in [RequestState::Retrieving, RequestState::Processing] {
            for row in self.my_requests(state).await? {
                self.advance_request(
                    row.id,
                    RequestState::Queued,
                    None,
                    &serde_json::json!({ "requeued_after": state }),
                )
                .await?;
                requeued += 1;
            }
        }
        Ok(requeued)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_request_is_claimed_once_stat_first_and_keeps_its_history() {
        let store = crate::store::testing::store().await;
        let routine = store
            .create_request(&NewRequest {
                study_uid: Some("1.2.3".into()),
                source: "pacs".into(),
                ..NewRequest::default()
            })
            .await
            .unwrap();
        let stat = store
            .create_request(&NewRequest {
                accession_number: Some("A1".into()),
                source: "pacs".into(),
                priority: Priority::Stat,
                ..NewRequest::default()
            })
            .await
            .unwrap();
        let first = store.claim_request().await.unwrap().unwrap();
        assert_eq!(first.id, stat);
        assert_eq!(first.state, RequestState::Retrieving);
        let second = store.claim_request().await.unwrap().unwrap();
        assert_eq!(second.id, routine);
        assert!(store.claim_request().await.unwrap().is_none());

        store
            .cover_series(stat, &[("1.2".into(), "1.2.9".into())])
            .await
            .unwrap();
        assert!(store.stat_requested("1.2.9").await.unwrap());
        assert!(!store.stat_requested("1.2.8").await.unwrap());
        store
            .advance_request(
                stat,
                RequestState::Failed,
                Some("unknown study"),
                &serde_json::json!({}),
            )
            .await
            .unwrap();
        assert!(!store.stat_requested("1.2.9").await.unwrap());
        let states: Vec<_> = store
            .request_events(stat)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.state)
            .collect();
        assert_eq!(
            states,
            [
                RequestState::Queued,
                RequestState::Retrieving,
                RequestState::Failed
            ]
        );
        assert_eq!(store.requeue_requests().await.unwrap(), 1);
        assert_eq!(
            store.request(routine).await.unwrap().unwrap().state,
            RequestState::Queued
        );
    }
}
