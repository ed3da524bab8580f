//! The SQLite store: schema in `migrations/`, applied at open; queries for series,
//! instances, jobs and the append-only audit log. Holds no business rules: callers
//! decide, the store records atomically.

use std::collections::HashSet;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::jobs::{IllegalTransition, JobState};
use crate::series::{Decision, InstanceMeta};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}")]
    Open {
        path: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot apply database migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database query failed")]
    Query(#[from] sqlx::Error),
    #[error("job {job_id} is in an unknown state {state:?}")]
    CorruptState { job_id: i64, state: String },
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("no job {0}")]
    NoSuchJob(i64),
    #[error("group commit failed: {0}")]
    GroupCommit(String),
}

/// Milliseconds since the Unix epoch, the time unit of every stored timestamp.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

/// An RFC 3339 rendering of a stored timestamp.
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// Parses a time given by a person or a client: RFC 3339, a date (YYYY-MM-DD, UTC
/// midnight) or Unix milliseconds.
pub fn parse_time(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = time::OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as i64);
    }
    let date = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &date)
        .map(|d| (d.midnight().assume_utc().unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| format!("{text:?} is not a time (RFC 3339, YYYY-MM-DD or Unix milliseconds)"))
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
    writer: mpsc::Sender<RecordRequest>,
}

/// What happened to a received instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// New to the node.
    Added,
    /// Byte-identical to the stored copy: nothing changed.
    Unchanged,
    /// Same SOP Instance UID, different content: the new copy replaced the old one,
    /// whose file is returned for removal.
    Replaced { old_file: String },
    /// Same SOP Instance UID, different content, and the new file is not durable yet:
    /// nothing changed; record it again once the file is durable, so that a crash
    /// can never trade an acknowledged copy for one that was not.
    ReplacementNeedsDurableFile,
}

/// The facts of a spooled file the store records.
#[derive(Debug, Clone)]
pub struct SpooledFile {
    pub file_name: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub transfer_syntax: String,
}

/// A series that is receiving, as the tracker sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SeriesRow {
    pub id: i64,
    pub series_uid: String,
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub calling_ae: String,
    pub revision: i64,
    pub last_received_ms: i64,
}

/// Per-instance facts used for eligibility.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub sop_class_uid: String,
    pub modality: Option<String>,
    pub image_type: Option<String>,
    pub number_of_frames: i64,
    pub slice_thickness_mm: Option<f64>,
    pub orientation: Option<String>,
}

/// A job as listed by `segnode jobs` and the API.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    pub id: i64,
    pub state: String,
    pub reason: Option<String>,
    pub series_uid: String,
    pub study_uid: String,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub calling_ae: String,
    pub series_revision: i64,
    pub instance_count: i64,
    pub superseded_by: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    pub error_code: Option<String>,
    /// JSON object with per-stage timings and results.
    pub summary: Option<String>,
    pub seg_sop_instance_uid: Option<String>,
}

/// A job a worker has claimed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub series_id: i64,
    pub series_uid: String,
    pub study_uid: String,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub calling_ae: String,
}

/// How a job ended.
#[derive(Debug, Clone)]
pub struct JobOutcome {
    pub state: JobState,
    pub reason: Option<String>,
    pub error_code: Option<String>,
    pub summary: serde_json::Value,
    /// The SEG written to the spool: (SOP Instance UID, spool file name).
    pub seg: Option<(String, String)>,
}

/// One audit record to append.
#[derive(Debug, Clone, Default)]
pub struct AuditEvent<'a> {
    pub event: &'a str,
    pub calling_ae: Option<&'a str>,
    pub peer: Option<String>,
    pub study_uid: Option<&'a str>,
    pub series_uid: Option<&'a str>,
    pub patient_id: Option<&'a str>,
    pub accession_number: Option<&'a str>,
    pub job_id: Option<i64>,
    pub detail: serde_json::Value,
}

/// A stored audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub event: String,
    pub calling_ae: Option<String>,
    pub peer: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub job_id: Option<i64>,
    pub detail: String,
}

/// Instance counts for one series.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InstanceCount {
    pub series_uid: String,
    pub instances: i64,
}

impl Store {
    /// Opens (creating if needed) the database and applies pending migrations. WAL
    /// with `synchronous = FULL`: a committed row survives a crash or power loss.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        // No test query before each acquire: an SQLite connection is a local handle.
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        let (writer, requests) = mpsc::channel(RECORD_QUEUE);
        tokio::spawn(record_writer(pool.clone(), requests));
        Ok(Self { pool, writer })
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records a spooled instance and its series. Any instance arrival puts the series
    /// back to `receiving`; only new or changed content bumps its revision. Requests
    /// from all associations go to one writer task that commits them in groups: one
    /// fsync of the WAL for every instance that arrived meanwhile.
    pub async fn record_instance(
        &self,
        meta: &InstanceMeta,
        file: &SpooledFile,
        calling_ae: &str,
        file_durable: bool,
    ) -> Result<RecordOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        let request = RecordRequest {
            meta: meta.clone(),
            file: file.clone(),
            calling_ae: calling_ae.to_string(),
            file_durable,
            reply,
        };
        self.writer
            .send(request)
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Series still `receiving` whose last instance arrived at or before `cutoff_ms`.
    pub async fn series_due(&self, cutoff_ms: i64) -> Result<Vec<SeriesRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, series_uid, study_uid, patient_id, accession_number, modality, series_description,
                    calling_ae, revision, last_received_ms
             FROM series WHERE state = 'receiving' AND last_received_ms <= ? ORDER BY last_received_ms",
        )
        .bind(cutoff_ms)
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn series_instances(&self, series_id: i64) -> Result<Vec<InstanceRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT sop_class_uid, modality, image_type, number_of_frames, slice_thickness_mm, orientation
             FROM instances WHERE series_id = ?",
        )
        .bind(series_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Marks a series stable and, unless a job already exists for its current
    /// revision, creates the job the decision calls for, superseding older jobs of the
    /// series. Returns the new job's id, or `None` when the series changed meanwhile
    /// (it stays `receiving`) or its revision already had a job.
    pub async fn settle_series(
        &self,
        series: &SeriesRow,
        instance_count: i64,
        decision: &Decision,
    ) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let settled = sqlx::query(
            "UPDATE series SET state = 'stable' WHERE id = ? AND last_received_ms = ? AND revision = ?",
        )
        .bind(series.id)
        .bind(series.last_received_ms)
        .bind(series.revision)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if settled == 0 {
            return Ok(None);
        }
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM jobs WHERE series_id = ? AND series_revision = ?")
                .bind(series.id)
                .bind(series.revision)
                .fetch_optional(&mut *tx)
                .await?;
        if exists.is_some() {
            tx.commit().await?;
            return Ok(None);
        }
        let (state, reason) = match decision {
            Decision::Eligible => (JobState::Queued, None),
            Decision::Ignored(reason) => (JobState::Ignored, Some(reason.as_str())),
        };
        let job_id: i64 = sqlx::query_scalar(
            "INSERT INTO jobs (series_id, series_revision, state, reason, instance_count, created_ms, updated_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(series.id)
        .bind(series.revision)
        .bind(state.as_str())
        .bind(reason)
        .bind(instance_count)
        .bind(now)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let older: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, state FROM jobs WHERE series_id = ? AND id <> ? AND superseded_by IS NULL",
        )
        .bind(series.id)
        .bind(job_id)
        .fetch_all(&mut *tx)
        .await?;
        for (old_id, old_state) in older {
            let old_state = parse_state(old_id, &old_state)?;
            let next = if old_state.supersedable() {
                old_state.transition(JobState::Superseded)?
            } else {
                old_state
            };
            sqlx::query(
                "UPDATE jobs SET state = ?, superseded_by = ?, updated_ms = ? WHERE id = ?",
            )
            .bind(next.as_str())
            .bind(job_id)
            .bind(now)
            .bind(old_id)
            .execute(&mut *tx)
            .await?;
            append_audit(
                &mut tx,
                &series_event(
                    "job_superseded",
                    series,
                    Some(old_id),
                    serde_json::json!({ "by_job": job_id }),
                ),
            )
            .await?;
        }
        let event = match state {
            JobState::Queued => "job_queued",
            _ => "job_ignored",
        };
        append_audit(
            &mut tx,
            &series_event(
                event,
                series,
                Some(job_id),
                serde_json::json!({ "instances": instance_count, "revision": series.revision, "reason": reason }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(Some(job_id))
    }

    /// One job.
    pub async fn job(&self, id: i64) -> Result<Option<JobRow>, StoreError> {
        Ok(self.select_jobs(None, Some(id), 1).await?.pop())
    }

    /// Jobs, newest first, optionally only those in `state`.
    pub async fn jobs(
        &self,
        state: Option<JobState>,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        self.select_jobs(state, None, limit).await
    }

    async fn select_jobs(
        &self,
        state: Option<JobState>,
        id: Option<i64>,
        limit: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.id, j.state, j.reason, s.series_uid, s.study_uid, s.modality, s.series_description,
                    s.calling_ae, j.series_revision, j.instance_count, j.superseded_by, j.created_ms, j.updated_ms,
                    j.started_ms, j.finished_ms, j.error_code, j.summary, j.seg_sop_instance_uid
             FROM jobs j JOIN series s ON s.id = j.series_id
             WHERE (?1 IS NULL OR j.state = ?1) AND (?3 IS NULL OR j.id = ?3)
             ORDER BY j.id DESC LIMIT ?2",
        )
        .bind(state.map(JobState::as_str))
        .bind(limit)
        .bind(id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Claims the oldest queued job for a worker (queued → running), atomically.
    pub async fn claim_next_job(&self) -> Result<Option<ClaimedJob>, StoreError> {
        let next = JobState::Queued.transition(JobState::Running)?;
        let now = now_ms();
        let claimed: Option<(i64,)> = sqlx::query_as(
            "UPDATE jobs SET state = ?1, started_ms = ?2, updated_ms = ?2
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1)
             RETURNING id",
        )
        .bind(next.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some((id,)) = claimed else {
            return Ok(None);
        };
        let job = claimed_job(&self.pool, id)
            .await?
            .ok_or(StoreError::NoSuchJob(id))?;
        self.audit(&job_event("job_started", &job, serde_json::Value::Null))
            .await?;
        Ok(Some(job))
    }

    /// (SOP Instance UID, SHA-256) of a series' instances, in UID order: the identity
    /// of its content.
    pub async fn series_checksums(
        &self,
        series_id: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT sop_instance_uid, sha256 FROM instances WHERE series_id = ? ORDER BY sop_instance_uid",
        )
        .bind(series_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The spool file names of a series' instances.
    pub async fn series_files(&self, series_id: i64) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT file_name FROM instances WHERE series_id = ? ORDER BY id")
                .bind(series_id)
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Ends a running job with its outcome and audits it.
    pub async fn finish_job(
        &self,
        job: &ClaimedJob,
        outcome: &JobOutcome,
    ) -> Result<(), StoreError> {
        let next = JobState::Running.transition(outcome.state)?;
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET state = ?, reason = ?, error_code = ?, summary = ?, seg_sop_instance_uid = ?,
                 seg_file = ?, finished_ms = ?, updated_ms = ?
             WHERE id = ? AND state = 'running'",
        )
        .bind(next.as_str())
        .bind(&outcome.reason)
        .bind(&outcome.error_code)
        .bind(outcome.summary.to_string())
        .bind(outcome.seg.as_ref().map(|s| s.0.as_str()))
        .bind(outcome.seg.as_ref().map(|s| s.1.as_str()))
        .bind(now)
        .bind(now)
        .bind(job.id)
        .execute(&mut *tx)
        .await?;
        let event = if next == JobState::Succeeded {
            "job_succeeded"
        } else {
            "job_failed"
        };
        let detail = serde_json::json!({
            "reason": outcome.reason,
            "error_code": outcome.error_code,
            "summary": outcome.summary,
        });
        append_audit(&mut tx, &job_event(event, job, detail)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Jobs left `running` by a crash go back to `queued` so that a worker resumes them.
    pub async fn requeue_interrupted(&self) -> Result<u64, StoreError> {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE state = 'running'")
            .fetch_all(&self.pool)
            .await?;
        for id in &ids {
            let next = JobState::Running.transition(JobState::Queued)?;
            sqlx::query("UPDATE jobs SET state = ?, updated_ms = ? WHERE id = ?")
                .bind(next.as_str())
                .bind(now_ms())
                .bind(id)
                .execute(&self.pool)
                .await?;
        }
        Ok(ids.len() as u64)
    }

    pub async fn audit(&self, event: &AuditEvent<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        append_audit(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit records matching `filter`, oldest first.
    pub async fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, event, calling_ae, peer, study_uid, series_uid, patient_id, accession_number,
                    job_id, detail
             FROM audit
             WHERE (?1 IS NULL OR at_ms >= ?1) AND (?2 IS NULL OR at_ms <= ?2)
               AND (?3 IS NULL OR patient_id = ?3) AND (?4 IS NULL OR accession_number = ?4)
               AND (?5 IS NULL OR study_uid = ?5) AND (?6 IS NULL OR calling_ae = ?6)
               AND (?7 IS NULL OR job_id = ?7) AND (?8 IS NULL OR event = ?8)
             ORDER BY id LIMIT ?9",
        )
        .bind(f.from_ms)
        .bind(f.to_ms)
        .bind(&f.patient_id)
        .bind(&f.accession_number)
        .bind(&f.study_uid)
        .bind(&f.calling_ae)
        .bind(f.job_id)
        .bind(&f.event)
        .bind(f.limit.unwrap_or(10_000))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Jobs created within [since, until] (ms), newest first, paginated.
    pub async fn jobs_page(&self, q: &JobQuery) -> Result<Vec<JobRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT j.id, j.state, j.reason, s.series_uid, s.study_uid, s.modality, s.series_description,
                    s.calling_ae, j.series_revision, j.instance_count, j.superseded_by, j.created_ms, j.updated_ms,
                    j.started_ms, j.finished_ms, j.error_code, j.summary, j.seg_sop_instance_uid
             FROM jobs j JOIN series s ON s.id = j.series_id
             WHERE (?1 IS NULL OR j.state = ?1) AND (?2 IS NULL OR j.created_ms >= ?2)
               AND (?3 IS NULL OR j.created_ms <= ?3) AND (?4 IS NULL OR s.study_uid = ?4)
             ORDER BY j.id DESC LIMIT ?5 OFFSET ?6",
        )
        .bind(q.state.map(JobState::as_str))
        .bind(q.since_ms)
        .bind(q.until_ms)
        .bind(&q.study_uid)
        .bind(q.limit)
        .bind(q.offset)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Counts for metrics: (name, label, value).
    pub async fn counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT 'jobs', state, COUNT(*) FROM jobs GROUP BY state
             UNION ALL SELECT 'instances', '', COUNT(*) FROM instances
             UNION ALL SELECT 'audit', event, COUNT(*) FROM audit
               WHERE event IN ('association_accepted', 'association_rejected', 'instance_ignored', 'instance_refused')
               GROUP BY event
             UNION ALL SELECT 'delivery_attempts', COALESCE(json_extract(detail, '$.outcome'), ''), COUNT(*) FROM audit
               WHERE event = 'delivery_attempt' GROUP BY 2
             UNION ALL SELECT 'deliveries', state, COUNT(*) FROM deliveries GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Per-stage duration sums (ms) and counts over finished jobs, from their summaries.
    pub async fn stage_durations(&self) -> Result<Vec<(String, f64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT t.key, CAST(SUM(t.value) AS REAL), COUNT(*) FROM jobs, json_each(jobs.summary, '$.timings_ms') AS t
             WHERE jobs.summary IS NOT NULL GROUP BY t.key ORDER BY t.key",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The last audit id the webhook sender handled.
    pub async fn webhook_cursor(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT last_audit_id FROM webhook_cursor WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    pub async fn set_webhook_cursor(&self, audit_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_cursor SET last_audit_id = ? WHERE id = 1")
            .bind(audit_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Audit records after `id`, oldest first.
    pub async fn audit_after(&self, id: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, event, calling_ae, peer, study_uid, series_uid, patient_id, accession_number,
                    job_id, detail
             FROM audit WHERE id > ? ORDER BY id LIMIT ?",
        )
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes the instance records of series whose latest job is delivered or
    /// ignored and ended before `cutoff_ms`; returns their spool files for removal.
    /// Audited per job.
    pub async fn purge_instances(&self, cutoff_ms: i64) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let jobs: Vec<ClaimedJob> = sqlx::query_as(
            "SELECT j.id, j.series_id, s.series_uid, s.study_uid, s.patient_id, s.accession_number, s.calling_ae
             FROM jobs j JOIN series s ON s.id = j.series_id
             WHERE j.state IN ('delivered', 'ignored') AND j.updated_ms < ?
               AND j.id = (SELECT MAX(id) FROM jobs WHERE series_id = j.series_id)
               AND EXISTS (SELECT 1 FROM instances i WHERE i.series_id = j.series_id)",
        )
        .bind(cutoff_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut files = Vec::new();
        for job in &jobs {
            let names: Vec<String> =
                sqlx::query_scalar("DELETE FROM instances WHERE series_id = ? RETURNING file_name")
                    .bind(job.series_id)
                    .fetch_all(&mut *tx)
                    .await?;
            append_audit(
                &mut tx,
                &job_event(
                    "spool_purged",
                    job,
                    serde_json::json!({ "instances": names.len() }),
                ),
            )
            .await?;
            files.extend(names);
        }
        tx.commit().await?;
        Ok(files)
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Audit records, oldest first, optionally only one event kind.
    pub async fn audit_rows(&self, event: Option<&str>) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, at_ms, event, calling_ae, peer, study_uid, series_uid, patient_id, accession_number,
                    job_id, detail
             FROM audit WHERE (?1 IS NULL OR event = ?1) ORDER BY id",
        )
        .bind(event)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Instance counts per series.
    pub async fn instance_counts(&self) -> Result<Vec<InstanceCount>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT s.series_uid, COUNT(i.id) AS instances
             FROM series s LEFT JOIN instances i ON i.series_id = s.id
             GROUP BY s.id ORDER BY s.id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Removes the row of an instance whose file could not be made durable (the
    /// C-STORE is refused, so the instance was never acknowledged).
    pub async fn forget_instance(
        &self,
        sop_instance_uid: &str,
        file_name: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM instances WHERE sop_instance_uid = ? AND file_name = ?")
            .bind(sop_instance_uid)
            .bind(file_name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Instances whose file may not have become durable before a crash. A row is
    /// committed while its file is fsynced (milliseconds), so the candidates are the
    /// instances received in the last minute of activity. Returns (id, file name,
    /// SHA-256).
    pub async fn recent_instances(&self) -> Result<Vec<(i64, String, String)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, file_name, sha256 FROM instances
             WHERE received_ms >= (SELECT MAX(received_ms) FROM instances) - 60000",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Drops instance rows whose file is missing or differs from its checksum (see
    /// [`Store::recent_instances`]), with an audit event each.
    pub async fn drop_unacknowledged(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            let row: Option<(String, String)> = sqlx::query_as(
                "DELETE FROM instances WHERE id = ? RETURNING sop_instance_uid, file_name",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((sop_instance, file_name)) = row {
                append_audit(
                    &mut tx,
                    &AuditEvent {
                        event: "instance_unacknowledged_dropped",
                        detail: serde_json::json!({
                            "sop_instance": sop_instance,
                            "file": file_name,
                            "reason": "its file was not durable when the node stopped; the C-STORE was never acknowledged",
                        }),
                        ..AuditEvent::default()
                    },
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every spool file name the database references.
    pub async fn referenced_files(&self) -> Result<HashSet<String>, StoreError> {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT file_name FROM instances
             UNION SELECT seg_file FROM jobs WHERE seg_file IS NOT NULL
             UNION SELECT seg_file FROM deliveries",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(names.into_iter().collect())
    }
}

/// How many instance records one group commit takes at most.
const MAX_GROUP: usize = 64;
/// Pending record requests: one per association in flight is the normal load; the
/// bound makes receivers wait (backpressure) if the disk stalls.
const RECORD_QUEUE: usize = 256;

struct RecordRequest {
    meta: InstanceMeta,
    file: SpooledFile,
    calling_ae: String,
    file_durable: bool,
    reply: oneshot::Sender<Result<RecordOutcome, StoreError>>,
}

/// The group-commit writer: takes every waiting request into one transaction, each in
/// its own savepoint so that one failure does not fail the others.
async fn record_writer(pool: SqlitePool, mut requests: mpsc::Receiver<RecordRequest>) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        match record_batch(&pool, &batch).await {
            Ok(outcomes) => {
                for (request, outcome) in batch.into_iter().zip(outcomes) {
                    let _ = request.reply.send(outcome);
                }
            }
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::from(e));
                for request in batch {
                    let _ = request
                        .reply
                        .send(Err(StoreError::GroupCommit(message.clone())));
                }
            }
        }
    }
}

async fn record_batch(
    pool: &SqlitePool,
    batch: &[RecordRequest],
) -> Result<Vec<Result<RecordOutcome, StoreError>>, StoreError> {
    // IMMEDIATE: the first statement reads, and a deferred transaction that reads
    // before it writes fails with SQLITE_BUSY (no busy wait) if another connection
    // wrote in between; taking the write lock first waits for it instead.
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    // A lone request needs no savepoint: its failure rolls the transaction back.
    let savepoints = batch.len() > 1;
    let mut outcomes = Vec::with_capacity(batch.len());
    for r in batch {
        if savepoints {
            sqlx::query("SAVEPOINT instance").execute(&mut *tx).await?;
        }
        let outcome = record_in(&mut tx, r).await;
        if savepoints {
            if outcome.is_err() {
                sqlx::query("ROLLBACK TO instance")
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("RELEASE instance").execute(&mut *tx).await?;
        } else if let Err(e) = outcome {
            return Ok(vec![Err(e)]);
        }
        outcomes.push(outcome);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// Records one instance in three statements (each a round trip to SQLite's thread):
/// the stored copy, if any, decides the outcome; the series is created or touched
/// (its revision counts new or changed content); the instance row is written.
async fn record_in(
    tx: &mut Transaction<'_, Sqlite>,
    request: &RecordRequest,
) -> Result<RecordOutcome, StoreError> {
    let RecordRequest {
        meta,
        file,
        calling_ae,
        file_durable,
        ..
    } = request;
    let now = now_ms();
    let existing: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, sha256, file_name FROM instances WHERE sop_instance_uid = ?")
            .bind(meta.sop_instance_uid.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    let (sql, outcome, existing_id) = match existing {
        Some((_, sha, _)) if sha == file.sha256 => (None, RecordOutcome::Unchanged, None),
        Some(_) if !file_durable => return Ok(RecordOutcome::ReplacementNeedsDurableFile),
        Some((id, _, old_file)) => (
            Some(
                "UPDATE instances SET series_id = ?1, sop_class_uid = ?3, transfer_syntax = ?4, file_name = ?5,
                     size_bytes = ?6, sha256 = ?7, modality = ?8, image_type = ?9, number_of_frames = ?10,
                     slice_thickness_mm = ?11, orientation = ?12, received_ms = ?13,
                     replaced_count = replaced_count + 1
                 WHERE id = ?14",
            ),
            RecordOutcome::Replaced { old_file },
            Some(id),
        ),
        None => (
            Some(
                "INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, transfer_syntax,
                     file_name, size_bytes, sha256, modality, image_type, number_of_frames,
                     slice_thickness_mm, orientation, received_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            ),
            RecordOutcome::Added,
            None,
        ),
    };
    // Any arrival puts the series back to `receiving`; only new or changed content
    // bumps its revision.
    let series_id: i64 = sqlx::query_scalar(
        "INSERT INTO series (series_uid, study_uid, patient_id, accession_number, modality,
                             series_description, calling_ae, state, first_received_ms, last_received_ms,
                             revision)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'receiving', ?8, ?8, ?9)
         ON CONFLICT (series_uid) DO UPDATE SET
             state = 'receiving', last_received_ms = excluded.last_received_ms,
             calling_ae = excluded.calling_ae, revision = revision + excluded.revision
         RETURNING id",
    )
    .bind(meta.series_uid.as_str())
    .bind(meta.study_uid.as_str())
    .bind(&meta.patient_id)
    .bind(&meta.accession_number)
    .bind(&meta.modality)
    .bind(&meta.series_description)
    .bind(calling_ae)
    .bind(now)
    .bind(i64::from(sql.is_some()))
    .fetch_one(&mut **tx)
    .await?;
    let Some(sql) = sql else {
        return Ok(outcome);
    };
    let orientation = meta
        .orientation
        .map(|o| o.iter().map(f64::to_string).collect::<Vec<_>>().join("\\"));
    let query = sqlx::query(sql)
        .bind(series_id)
        .bind(meta.sop_instance_uid.as_str())
        .bind(meta.sop_class_uid.as_str())
        .bind(&file.transfer_syntax)
        .bind(&file.file_name)
        .bind(file.size_bytes)
        .bind(&file.sha256)
        .bind(&meta.modality)
        .bind(&meta.image_type)
        .bind(i64::from(meta.number_of_frames))
        .bind(meta.slice_thickness_mm)
        .bind(&orientation)
        .bind(now);
    match existing_id {
        Some(id) => query.bind(id),
        None => query,
    }
    .execute(&mut **tx)
    .await?;
    Ok(outcome)
}

/// Filters of an audit query; all optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub study_uid: Option<String>,
    pub calling_ae: Option<String>,
    pub job_id: Option<i64>,
    pub event: Option<String>,
    pub limit: Option<i64>,
}

/// A page of jobs.
#[derive(Debug, Clone)]
pub struct JobQuery {
    pub state: Option<JobState>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub study_uid: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

/// A delivery to make.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub destination: String,
    pub seg_type: String,
    pub seg_sop_instance_uid: String,
    pub seg_file: String,
    pub fallback_file: Option<String>,
}

/// A delivery in the outbox.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DeliveryRow {
    pub id: i64,
    pub job_id: i64,
    pub destination: String,
    pub state: String,
    pub seg_type: String,
    pub seg_sop_instance_uid: String,
    #[serde(skip)]
    pub seg_file: String,
    #[serde(skip)]
    pub fallback_file: Option<String>,
    pub attempts: i64,
    pub next_attempt_ms: i64,
    pub last_status: Option<String>,
    pub last_error: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub delivered_ms: Option<i64>,
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

impl Store {
    /// Queues deliveries of a job's result (once per destination).
    pub async fn create_deliveries(
        &self,
        job_id: i64,
        items: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for d in items {
            sqlx::query(
                "INSERT OR IGNORE INTO deliveries (job_id, destination, state, seg_type, seg_sop_instance_uid,
                     seg_file, fallback_file, next_attempt_ms, created_ms, updated_ms)
                 VALUES (?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(job_id)
            .bind(&d.destination)
            .bind(&d.seg_type)
            .bind(&d.seg_sop_instance_uid)
            .bind(&d.seg_file)
            .bind(&d.fallback_file)
            .bind(now)
            .bind(now)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pending deliveries whose next attempt is due.
    pub async fn due_deliveries(&self, now: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        self.deliveries(None, Some(now)).await
    }

    pub async fn job_deliveries(&self, job_id: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        self.deliveries(Some(job_id), None).await
    }

    async fn deliveries(
        &self,
        job_id: Option<i64>,
        due_by: Option<i64>,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, job_id, destination, state, seg_type, seg_sop_instance_uid, seg_file, fallback_file,
                    attempts, next_attempt_ms, last_status, last_error, created_ms, updated_ms, delivered_ms
             FROM deliveries
             WHERE (?1 IS NULL OR job_id = ?1)
               AND (?2 IS NULL OR (state = 'pending' AND next_attempt_ms <= ?2))
             ORDER BY next_attempt_ms, id",
        )
        .bind(job_id)
        .bind(due_by)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Records an attempt; when every delivery of the job is delivered, the job becomes
    /// `delivered`. Audited.
    pub async fn record_attempt(
        &self,
        d: &DeliveryRow,
        attempt: &Attempt,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let (state, status, error, next) = match attempt {
            Attempt::Delivered { status, .. } => {
                ("delivered", Some(status.clone()), None, d.next_attempt_ms)
            }
            Attempt::Retry {
                error,
                next_attempt_ms,
            } => ("pending", None, Some(error.clone()), *next_attempt_ms),
            Attempt::Failed { error } => ("failed", None, Some(error.clone()), d.next_attempt_ms),
        };
        sqlx::query(
            "UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_ms = ?, last_status = COALESCE(?, last_status),
                 last_error = ?, updated_ms = ?, delivered_ms = CASE WHEN ? = 'delivered' THEN ? ELSE delivered_ms END
             WHERE id = ?",
        )
        .bind(state)
        .bind(next)
        .bind(&status)
        .bind(&error)
        .bind(now)
        .bind(state)
        .bind(now)
        .bind(d.id)
        .execute(&mut *tx)
        .await?;
        let job = claimed_job(&mut *tx, d.job_id)
            .await?
            .ok_or(StoreError::NoSuchJob(d.job_id))?;
        let note = match attempt {
            Attempt::Delivered { note, .. } => note.clone(),
            _ => None,
        };
        append_audit(
            &mut tx,
            &job_event(
                "delivery_attempt",
                &job,
                serde_json::json!({
                    "destination": d.destination,
                    "attempt": d.attempts + 1,
                    "outcome": state,
                    "status": status,
                    "error": error,
                    "note": note,
                    "seg_sop_instance_uid": d.seg_sop_instance_uid,
                }),
            ),
        )
        .await?;
        if state == "delivered" {
            let open: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM deliveries WHERE job_id = ? AND state <> 'delivered'",
            )
            .bind(d.job_id)
            .fetch_one(&mut *tx)
            .await?;
            let current: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
                .bind(d.job_id)
                .fetch_one(&mut *tx)
                .await?;
            let current = parse_state(d.job_id, &current)?;
            if open == 0 && current.can_become(JobState::Delivered) {
                sqlx::query("UPDATE jobs SET state = 'delivered', updated_ms = ? WHERE id = ?")
                    .bind(now)
                    .bind(d.job_id)
                    .execute(&mut *tx)
                    .await?;
                append_audit(
                    &mut tx,
                    &job_event("job_delivered", &job, serde_json::Value::Null),
                )
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// An operator's retry: a failed job is queued again; its failed deliveries are
    /// pending again with fresh attempts. Returns (job re-queued, deliveries re-queued).
    pub async fn retry_job(&self, job_id: i64) -> Result<(bool, u64), StoreError> {
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        let job = claimed_job(&mut *tx, job_id).await?;
        let Some(job) = job else {
            return Err(StoreError::NoSuchJob(job_id));
        };
        let state: String = sqlx::query_scalar("SELECT state FROM jobs WHERE id = ?")
            .bind(job_id)
            .fetch_one(&mut *tx)
            .await?;
        let state = parse_state(job_id, &state)?;
        let requeue = state == JobState::Failed;
        if requeue {
            let next = state.transition(JobState::Queued)?;
            sqlx::query("UPDATE jobs SET state = ?, reason = NULL, error_code = NULL, updated_ms = ? WHERE id = ?")
                .bind(next.as_str())
                .bind(now)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
        }
        let deliveries = sqlx::query(
            "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_ms = ?, updated_ms = ?
             WHERE job_id = ? AND state = 'failed'",
        )
        .bind(now)
        .bind(now)
        .bind(job_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        append_audit(
            &mut tx,
            &job_event(
                "operator_retry",
                &job,
                serde_json::json!({ "job_requeued": requeue, "deliveries_requeued": deliveries }),
            ),
        )
        .await?;
        tx.commit().await?;
        Ok((requeue, deliveries))
    }
}

/// A job with the series facts that events about it carry.
async fn claimed_job<'e, E>(executor: E, id: i64) -> Result<Option<ClaimedJob>, StoreError>
where
    E: sqlx::Executor<'e, Database = Sqlite>,
{
    Ok(sqlx::query_as(
        "SELECT j.id, j.series_id, s.series_uid, s.study_uid, s.patient_id, s.accession_number, s.calling_ae
         FROM jobs j JOIN series s ON s.id = j.series_id WHERE j.id = ?",
    )
    .bind(id)
    .fetch_optional(executor)
    .await?)
}

fn parse_state(job_id: i64, state: &str) -> Result<JobState, StoreError> {
    JobState::from_str(state).map_err(|_| StoreError::CorruptState {
        job_id,
        state: state.to_string(),
    })
}

fn series_event<'a>(
    event: &'a str,
    series: &'a SeriesRow,
    job_id: Option<i64>,
    detail: serde_json::Value,
) -> AuditEvent<'a> {
    AuditEvent {
        event,
        calling_ae: Some(&series.calling_ae),
        study_uid: Some(&series.study_uid),
        series_uid: Some(&series.series_uid),
        patient_id: series.patient_id.as_deref(),
        accession_number: series.accession_number.as_deref(),
        job_id,
        detail,
        ..AuditEvent::default()
    }
}

fn job_event<'a>(event: &'a str, job: &'a ClaimedJob, detail: serde_json::Value) -> AuditEvent<'a> {
    AuditEvent {
        event,
        calling_ae: Some(&job.calling_ae),
        study_uid: Some(&job.study_uid),
        series_uid: Some(&job.series_uid),
        patient_id: job.patient_id.as_deref(),
        accession_number: job.accession_number.as_deref(),
        job_id: Some(job.id),
        detail,
        ..AuditEvent::default()
    }
}

async fn append_audit(
    tx: &mut Transaction<'_, Sqlite>,
    e: &AuditEvent<'_>,
) -> Result<(), StoreError> {
    let detail = if e.detail.is_null() {
        "{}".to_string()
    } else {
        e.detail.to_string()
    };
    sqlx::query(
        "INSERT INTO audit (at_ms, event, calling_ae, peer, study_uid, series_uid, patient_id,
                            accession_number, job_id, detail)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(now_ms())
    .bind(e.event)
    .bind(e.calling_ae)
    .bind(&e.peer)
    .bind(e.study_uid)
    .bind(e.series_uid)
    .bind(e.patient_id)
    .bind(e.accession_number)
    .bind(e.job_id)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
