//! Series: those still receiving, their instances' facts for eligibility, and settling
//! a stable series into the job its revision calls for.

use super::audit::{AuditEvent, append_audit};
use super::{
    AuditKind, JobId, JobState, Priority, SeriesId, SeriesState, Store, StoreError, now_ms,
};
use crate::dicom::Uid;

/// A series that is receiving, as the tracker sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SeriesRow {
    pub id: SeriesId,
    pub series_uid: Uid,
    pub study_uid: Uid,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    /// Who sent the series' current revision.
    pub calling_ae: String,
    pub revision: i64,
    pub last_received_ms: i64,
}

/// Per-instance facts used for eligibility.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub sop_class_uid: Uid,
    pub modality: Option<String>,
    pub image_type: Option<String>,
    pub number_of_frames: i64,
    pub slice_thickness_mm: Option<f64>,
    pub orientation: Option<String>,
}

impl SeriesRow {
    /// An audit event about this series (and one of its jobs).
    fn event(
        &self,
        event: AuditKind,
        job_id: Option<JobId>,
        detail: serde_json::Value,
    ) -> AuditEvent<'_> {
        AuditEvent {
            calling_ae: Some(&self.calling_ae),
            study_uid: Some(self.study_uid.as_str()),
            series_uid: Some(self.series_uid.as_str()),
            patient_id: self.patient_id.as_deref(),
            accession_number: self.accession_number.as_deref(),
            job_id,
            detail,
            ..AuditEvent::of(event)
        }
    }
}

impl Store {
    /// Series still `receiving` whose last instance arrived at or before `cutoff_ms`.
    pub async fn series_due(&self, cutoff_ms: i64) -> Result<Vec<SeriesRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, series_uid, study_uid, patient_id, accession_number, modality, series_description,
                    calling_ae, revision, last_received_ms
             FROM series WHERE state = $2 AND last_received_ms <= $1 ORDER BY last_received_ms",
        )
        .bind(cutoff_ms)
        .bind(SeriesState::Receiving)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn series_instances(
        &self,
        series_id: SeriesId,
    ) -> Result<Vec<InstanceRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT sop_class_uid, modality, image_type, number_of_frames, slice_thickness_mm, orientation
             FROM instances WHERE series_id = $1",
        )
        .bind(series_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a series stable and, unless a job already exists for its current
    /// revision, creates its job at `priority`: queued, or ignored for `ignored` (the
    /// reason the eligibility rules gave), superseding older jobs of the series. The job
    /// keeps the calling AE of its revision. Returns the new job's id, or `None` when the series
    /// changed meanwhile (it stays `receiving`) or its revision already had a job.
    pub async fn settle_series(
        &self,
        series: &SeriesRow,
        instance_count: i64,
        ignored: Option<&str>,
        priority: Priority,
    ) -> Result<Option<JobId>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let settled = sqlx::query(
            "UPDATE series SET state = $4
             WHERE id = $1 AND last_received_ms = $2 AND revision = $3 AND state = $5",
        )
        .bind(series.id)
        .bind(series.last_received_ms)
        .bind(series.revision)
        .bind(SeriesState::Stable)
        .bind(SeriesState::Receiving)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if settled == 0 {
            return Ok(None);
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE series_id = $1 AND series_revision = $2")
                .bind(series.id)
                .bind(series.revision)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            tx.commit().await?;
            return Ok(None);
        }
        let state = match ignored {
            None => JobState::Queued,
            Some(_) => JobState::Ignored,
        };
        let job_id: JobId = sqlx::query_scalar(
            "INSERT INTO jobs (series_id, series_revision, state, reason, instance_count, calling_ae,
                               created_ms, updated_ms, priority)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
        )
        .bind(series.id)
        .bind(series.revision)
        .bind(state)
        .bind(ignored)
        .bind(instance_count)
        .bind(&series.calling_ae)
        .bind(now)
        .bind(now)
        .bind(priority)
        .fetch_one(&mut *tx)
        .await?;
        let older: Vec<(JobId, JobState)> = sqlx::query_as(
            "SELECT id, state FROM jobs WHERE series_id = $1 AND id <> $2 AND superseded_by IS NULL",
        )
        .bind(series.id)
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        for (old_id, old_state) in older {
            let next = if old_state.supersedable() {
                old_state.transition(JobState::Superseded)?
            } else {
                old_state
            };
            sqlx::query(
                "UPDATE jobs SET state = $1, superseded_by = $2, updated_ms = $3 WHERE id = $4",
            )
            .bind(next)
            .bind(job_id)
            .bind(now)
            .bind(old_id)
            .execute(&mut *tx)
            .await?;
            let detail = serde_json::json!({ "by_job": job_id });
            append_audit(
                &mut tx,
                &self.node.node_id,
                &series.event(AuditKind::JobSuperseded, Some(old_id), detail),
            )
            .await?;
        }
        let event = match state {
            JobState::Queued => AuditKind::JobQueued,
            _ => AuditKind::JobIgnored,
        };
        let detail = serde_json::json!({
            "instances": instance_count, "revision": series.revision, "reason": ignored,
        });
        append_audit(
            &mut tx,
            &self.node.node_id,
            &series.event(event, Some(job_id), detail),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(job_id))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{file, instance, queued_job};
    use super::*;

    #[tokio::test]
    async fn a_stable_series_settles_once_per_revision_and_supersedes_older_jobs() {
        let store = crate::store::testing::store().await;
        let first = queued_job(&store, 3, "PACS").await;
        assert!(store.series_due(now_ms()).await.unwrap().is_empty());
        let rows = store.series_instances(SeriesId(1)).await.unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].orientation.as_deref(), Some("1\\0\\0\\0\\1\\0"));

        // A new instance: a new revision from another sender, a new job.
        store
            .record_instance(&instance(1, 9), &file("f9", "y"), "OTHER", true)
            .await
            .unwrap();
        let series = store.series_due(now_ms()).await.unwrap().remove(0);
        assert_eq!(
            series.revision, 4,
            "one revision per new or changed instance"
        );
        let second = store
            .settle_series(&series, 4, Some("too few slices"), Priority::Routine)
            .await
            .unwrap()
            .unwrap();
        assert_ne!(first, second);
        let old = store.job(first).await.unwrap().unwrap();
        assert_eq!(
            (old.state, old.superseded_by),
            (JobState::Superseded, Some(second))
        );
        assert_eq!(old.calling_ae, "PACS");
        let new = store.job(second).await.unwrap().unwrap();
        assert_eq!(new.state, JobState::Ignored);
        assert_eq!(new.calling_ae, "OTHER");
        assert_eq!(new.reason.as_deref(), Some("too few slices"));

        // Settling the same revision again makes nothing.
        assert_eq!(
            store
                .settle_series(&series, 4, None, Priority::Routine)
                .await
                .unwrap(),
            None
        );
        let kinds: Vec<_> = store
            .audit_rows(None)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect();
        assert_eq!(
            kinds,
            [
                AuditKind::JobQueued,
                AuditKind::JobSuperseded,
                AuditKind::JobIgnored
            ]
        );
    }
}
