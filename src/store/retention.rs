//! Retention: what the purge may consider (each series that still has instances, with
//! its latest job), and removing a series' instance rows once the spool's retention
//! rule lets them go.

use super::audit::append_audit;
use super::jobs::{ClaimedJob, claimed_job};
use super::{AuditKind, JobId, JobState, Store, StoreError};

/// A series that still has instances, and where its latest job stands.
#[derive(Debug, Clone)]
pub struct RetentionCandidate {
    pub job: ClaimedJob,
    pub state: JobState,
    /// When the job last changed state.
    pub updated_ms: i64,
}

impl Store {
    /// Each series with instance rows and its latest job.
    pub async fn retention_candidates(&self) -> Result<Vec<RetentionCandidate>, StoreError> {
        let rows: Vec<(JobId, JobState, i64)> = sqlx::query_as(
            "SELECT j.id, j.state, j.updated_ms FROM jobs j
             WHERE j.id = (SELECT MAX(id) FROM jobs WHERE series_id = j.series_id)
               AND EXISTS (SELECT 1 FROM instances i WHERE i.series_id = j.series_id)
             ORDER BY j.id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut candidates = Vec::with_capacity(rows.len());
        for (id, state, updated_ms) in rows {
            let job = claimed_job(&self.pool, id).await?;
            candidates.push(RetentionCandidate {
                job,
                state,
                updated_ms,
            });
        }
        Ok(candidates)
    }

    /// Removes the instance rows of `job`'s series, audited; returns their spool files
    /// for removal.
    pub async fn purge_series(&self, job: &ClaimedJob) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let names: Vec<String> =
            sqlx::query_scalar("DELETE FROM instances WHERE series_id = $1 RETURNING file_name")
                .bind(job.series_id)
                .fetch_all(&mut *tx)
                .await?;
        let detail = serde_json::json!({ "instances": names.len() });
        append_audit(
            &mut tx,
            &self.node.node_id,
            &job.event(AuditKind::SpoolPurged, detail),
        )
        .await?;
        tx.commit().await?;
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::queued_job;
    use super::*;

    #[tokio::test]
    async fn candidates_are_latest_jobs_with_instances_and_purging_removes_their_rows() {
        let store = crate::store::testing::store().await;
        let id = queued_job(&store, 3, "PACS").await;
        let candidates = store.retention_candidates().await.unwrap();
        assert_eq!(candidates.len(), 1);
        assert_eq!(
            (candidates[0].job.id, candidates[0].state),
            (id, JobState::Queued)
        );
        let mut files = store.purge_series(&candidates[0].job).await.unwrap();
        files.sort();
        assert_eq!(files, ["f0", "f1", "f2"]);
        assert!(store.retention_candidates().await.unwrap().is_empty());
        let purged = store
            .audit_rows(Some(AuditKind::SpoolPurged))
            .await
            .unwrap();
        assert_eq!(purged[0].detail, r#"{"instances":3}"#);
    }
}
