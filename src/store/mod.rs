//! The SQLite store: schema in `migrations/`, applied at open; one file per resource
//! (instances, series, jobs, deliveries, the audit log, retention), each with the
//! queries on its rows and their `#[sqlx::test]` tests. The store knows rows and states
//! ([`states`]), not stage types, and holds no business rules: the stages decide (when
//! a job is delivered, what retention may purge, when an interrupted job stops being
//! resumed) and the store records atomically.

mod audit;
mod deliveries;
mod instances;
mod jobs;
mod retention;
mod series;
mod states;

use std::fmt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::mpsc;

use crate::dicom::Uid;

pub use audit::{AuditEvent, AuditFilter, AuditRow};
pub use deliveries::{Attempt, DeliveryRow, NewDelivery};
pub use instances::{
    InstanceCount, InstanceMeta, RecentInstance, RecordOutcome, SourceInstance, SpooledFile,
};
pub use jobs::{ClaimedJob, InterruptedJob, JobOutcome, JobQuery, JobRow};
pub use retention::RetentionCandidate;
pub use series::{InstanceRow, SeriesRow};
pub use states::{
    AuditKind, DeliveryState, IllegalTransition, JobState, ResultObject, UnknownName,
};

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
    #[error(transparent)]
    Transition(#[from] IllegalTransition),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("no job {0}")]
    NoSuchJob(JobId),
    #[error("group commit failed: {0}")]
    GroupCommit(String),
}

/// A job's id: its row in `jobs`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, sqlx::Type,
)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct JobId(pub i64);

/// A series' id: its row in `series`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct SeriesId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// UIDs are stored as their text and read back as [`Uid`]s: a row that holds an
/// invalid one is an error, never a string passed on.
impl sqlx::Type<sqlx::Sqlite> for Uid {
    fn type_info() -> sqlx::sqlite::SqliteTypeInfo {
        <String as sqlx::Type<sqlx::Sqlite>>::type_info()
    }
}

impl<'r> sqlx::Decode<'r, sqlx::Sqlite> for Uid {
    fn decode(value: sqlx::sqlite::SqliteValueRef<'r>) -> Result<Self, sqlx::error::BoxDynError> {
        let text = <&str as sqlx::Decode<sqlx::Sqlite>>::decode(value)?;
        Ok(Uid::parse(text)?)
    }
}

impl<'q> sqlx::Encode<'q, sqlx::Sqlite> for Uid {
    fn encode_by_ref(
        &self,
        buf: &mut <sqlx::Sqlite as sqlx::Database>::ArgumentBuffer,
    ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
        <String as sqlx::Encode<sqlx::Sqlite>>::encode(self.as_str().to_string(), buf)
    }
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
    writer: mpsc::Sender<instances::RecordRequest>,
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
        Ok(Self::with_pool(pool))
    }

    /// The store over a pool whose database has the schema (the tests' databases).
    pub fn with_pool(pool: SqlitePool) -> Self {
        let writer = instances::spawn_writer(pool.clone());
        Self { pool, writer }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
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
}

/// Rows and a store for the resources' `#[sqlx::test]`s.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::dicom::Uid;

    /// An instance of series `series` (a UID suffix) with `sop` as its SOP Instance UID
    /// suffix.
    pub fn instance(series: u32, sop: u32) -> InstanceMeta {
        let uid = |s: String| Uid::parse(&s).expect("valid UID");
        InstanceMeta {
            sop_class_uid: uid(crate::dicom::uid::CT_IMAGE_STORAGE.into()),
            sop_instance_uid: uid(format!("1.2.3.{series}.{sop}")),
            study_uid: uid("1.2.3".into()),
            series_uid: uid(format!("1.2.3.{series}")),
            patient_id: Some("P1".into()),
            accession_number: Some("A1".into()),
            modality: Some("CT".into()),
            series_description: None,
            image_type: None,
            number_of_frames: 1,
            slice_thickness_mm: Some(1.0),
            orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        }
    }

    pub fn file(name: &str, sha256: &str) -> SpooledFile {
        SpooledFile {
            file_name: name.into(),
            size_bytes: 10,
            sha256: sha256.into(),
            transfer_syntax: crate::dicom::uid::ts::EXPLICIT_VR_LE.into(),
        }
    }

    /// Records `count` instances of one series from `ae` and settles it into a queued
    /// job; returns the job.
    pub async fn queued_job(store: &Store, count: u32, ae: &str) -> JobId {
        for i in 0..count {
            let outcome = store
                .record_instance(&instance(1, i), &file(&format!("f{i}"), "x"), ae, true)
                .await
                .unwrap();
            assert_eq!(outcome, RecordOutcome::Added);
        }
        let series = store.series_due(now_ms()).await.unwrap().remove(0);
        store
            .settle_series(&series, i64::from(count), None)
            .await
            .unwrap()
            .expect("a new job")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::queued_job;
    use super::*;

    #[sqlx::test]
    async fn counts_and_stage_durations_sum_what_is_stored(pool: SqlitePool) {
        let store = Store::with_pool(pool);
        store.ping().await.unwrap();
        queued_job(&store, 2, "PACS").await;
        let job = store.claim_next_job().await.unwrap().unwrap();
        let outcome = JobOutcome {
            state: JobState::Succeeded,
            reason: None,
            error_code: None,
            summary: serde_json::json!({ "timings_ms": { "volume": 5, "cascade": 7 } }),
            seg: None,
        };
        store.finish_job(&job, &outcome).await.unwrap();
        let counts = store.counts().await.unwrap();
        assert!(counts.contains(&("jobs".into(), "succeeded".into(), 1)));
        assert!(counts.contains(&("instances".into(), String::new(), 2)));
        assert_eq!(
            store.stage_durations().await.unwrap(),
            vec![("cascade".into(), 7.0, 1), ("volume".into(), 5.0, 1)]
        );
    }

    #[test]
    fn times_parse_and_format() {
        assert_eq!(parse_time("1000").unwrap(), 1000);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86_400_000);
        assert_eq!(parse_time("1970-01-01T00:00:01Z").unwrap(), 1000);
        assert!(parse_time("yesterday").is_err());
        assert_eq!(format_ms(86_400_000), "1970-01-02T00:00:00Z");
    }
}
