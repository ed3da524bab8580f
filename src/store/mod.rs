//! The store, on SQLite (an embedded file, the default) or PostgreSQL (several nodes
//! sharing one queue), through sqlx's Any driver: the schema per engine in
//! `migrations/sqlite` and `migrations/postgres`, applied at open; one file per resource
//! (instances, series, jobs, results, deliveries, the audit log, nodes, retention), each
//! with the queries on its rows and their tests (run on both engines: see
//! [`testing::store`]). The store knows rows and states
//! ([`states`]), not stage types, and holds no business rules: the stages decide (when
//! a job is delivered, what retention may purge, when an interrupted job stops being
//! resumed) and the store records atomically.

mod audit;
mod deliveries;
mod held;
mod instances;
mod jobs;
mod nodes;
mod requests;
mod results;
mod retention;
mod review;
mod series;
mod states;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sqlx::any::AnyPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};
use sqlx::{Any, AnyPool, ConnectOptions, Connection, Executor};
use tokio::sync::mpsc;

use crate::dicom::{SegType, Uid};

pub use audit::{AUDIT_FIELDS, AuditEvent, AuditFilter, AuditRow};
pub use deliveries::{Attempt, DeliveryRow};
pub use held::HeldObject;
pub use instances::{
    InstanceCount, InstanceMeta, RecentInstance, RecordOutcome, SourceInstance, SpooledFile,
};
pub use jobs::{ClaimedJob, InterruptedJob, JobOutcome, JobQuery, JobRow};
pub use nodes::NodeRow;
pub use requests::{NewRequest, RequestEvent, RequestId, RequestRow, RequestSeries, SeriesJob};
pub use results::{NewDelivery, NewResult, ResultRow};
pub use retention::RetentionCandidate;
pub use review::ReviewDecision;
pub use series::{InstanceRow, SeriesRow};
pub use states::{
    AuditKind, DeliveryState, IllegalTransition, JobState, Priority, RequestState, ResultObject,
    SeriesState, UnknownName,
};

/// Where the node keeps its rows: an embedded SQLite file (one node), or a PostgreSQL
/// database that several nodes share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Database {
    Sqlite(PathBuf),
    /// A `postgres://` URL.
    Postgres(String),
}

impl Database {
    /// `postgres://…` or `postgresql://…` selects PostgreSQL; anything else is the path of
    /// an SQLite file.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Database::Postgres(text.to_string())
        } else {
            Database::Sqlite(PathBuf::from(text))
        }
    }

    pub fn engine(&self) -> Engine {
        match self {
            Database::Sqlite(_) => Engine::Sqlite,
            Database::Postgres(_) => Engine::Postgres,
        }
    }
}

/// Shown without a PostgreSQL URL's password.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => match url::Url::parse(url) {
                Ok(mut u) => {
                    if u.password().is_some() {
                        let _ = u.set_password(Some("***"));
                    }
                    f.write_str(u.as_str())
                }
                Err(_) => f.write_str("postgres://(invalid URL)"),
            },
        }
    }
}

impl Serialize for Database {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The database engine behind a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// Who this node is among the nodes sharing the database, and how long its claim on a
/// job or a delivery lasts without renewal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Membership {
    pub node_id: String,
    #[serde(serialize_with = "lease_secs")]
    pub lease: Duration,
}

fn lease_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Membership {
    /// How often a node looks for work whose holder's lease ran out, and renews its
    /// own leases three times as rarely: a job of a node that died is taken over
    /// within the lease plus this.
    pub fn poll_interval(&self) -> Duration {
        (self.lease / 6).clamp(Duration::from_millis(100), Duration::from_secs(5))
    }

    /// One node on its own (the tools and tests that open a store beside a node).
    pub fn solo(node_id: &str) -> Self {
        Self {
            node_id: node_id.to_string(),
            lease: Duration::from_secs(30),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {database}")]
    Open {
        database: String,
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
    #[error("no request {0}")]
    NoSuchRequest(RequestId),
    #[error("group commit failed: {0}")]
    GroupCommit(String),
    #[error(
        "job {0} is no longer held by this node: its lease ran out and another node took it over"
    )]
    LeaseLost(JobId),
    #[error(
        "delivery {0} is no longer held by this node: its lease ran out and another node took it over"
    )]
    DeliveryLeaseLost(i64),
    #[error(
        "node id {node_id:?} is now held by another process (its last heartbeat at {}): this \
         node's heartbeat is not recorded",
        format_ms(*seen_ms)
    )]
    NodeIdHeld { node_id: String, seen_ms: i64 },
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

/// Stores a type as its text and reads it back through `$parse`: a row that holds an
/// unknown name or an invalid UID is an error, never a string passed on.
macro_rules! stored_as_text {
    ($ty:ty, $parse:expr) => {
        impl sqlx::Type<sqlx::Any> for $ty {
            fn type_info() -> sqlx::any::AnyTypeInfo {
                <String as sqlx::Type<sqlx::Any>>::type_info()
            }
        }

        impl<'r> sqlx::Decode<'r, sqlx::Any> for $ty {
            fn decode(
                value: <sqlx::Any as sqlx::Database>::ValueRef<'r>,
            ) -> Result<Self, sqlx::error::BoxDynError> {
                let text = <&str as sqlx::Decode<sqlx::Any>>::decode(value)?;
                Ok(($parse)(text)?)
            }
        }

        impl<'q> sqlx::Encode<'q, sqlx::Any> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut <sqlx::Any as sqlx::Database>::ArgumentBuffer,
            ) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <String as sqlx::Encode<sqlx::Any>>::encode(self.as_str().to_string(), buf)
            }
        }
    };
}
pub(crate) use stored_as_text;

stored_as_text!(Uid, Uid::parse);
stored_as_text!(SegType, |s: &str| s.parse::<SegType>());
stored_as_text!(crate::quality::Verdict, |s: &str| s
    .parse::<crate::quality::Verdict>());

/// The statement for `engine`, where the two differ.
fn dialect(engine: Engine, sqlite: &'static str, postgres: &'static str) -> &'static str {
    match engine {
        Engine::Sqlite => sqlite,
        Engine::Postgres => postgres,
    }
}

/// A transaction that will write. SQLite, IMMEDIATE: a deferred transaction that reads
/// before it writes fails with SQLITE_BUSY (no busy wait) if another connection wrote
/// in between; taking the write lock first waits for it instead. PostgreSQL locks rows.
async fn begin_writing(
    pool: &AnyPool,
    engine: Engine,
) -> Result<sqlx::Transaction<'static, Any>, sqlx::Error> {
    match engine {
        Engine::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
        Engine::Postgres => pool.begin().await,
    }
}

/// An `sqlite://` URL of `path` (`%`, `?` and `#` escaped, as sqlx decodes them).
fn sqlite_url(path: &std::path::Path) -> Result<String, sqlx::Error> {
    let text = path.to_str().ok_or_else(|| {
        sqlx::Error::Configuration(format!("{} is not UTF-8", path.display()).into())
    })?;
    let escaped = text
        .replace('%', "%25")
        .replace('?', "%3F")
        .replace('#', "%23");
    Ok(format!("sqlite://{escaped}?mode=rwc"))
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

/// The counts of [`Store::counts`] that both engines write alike, up to the JSON
/// lookup of a delivery attempt's outcome.
macro_rules! counts_sql {
    () => {
        "SELECT 'jobs', state, COUNT(*) FROM jobs GROUP BY state
         UNION ALL SELECT 'instances', '', COUNT(*) FROM instances
         UNION ALL SELECT 'audit', event, COUNT(*) FROM audit
           WHERE event IN ('association_accepted', 'association_rejected', 'instance_ignored', 'instance_refused')
           GROUP BY event
         UNION ALL SELECT 'deliveries', state, COUNT(*) FROM deliveries GROUP BY state
         UNION ALL SELECT 'running_by_node', COALESCE(node_id, ''), COUNT(*) FROM jobs
           WHERE state = 'running' GROUP BY node_id
         UNION ALL SELECT 'delivery_attempts', "
    };
}

#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    engine: Engine,
    node: Arc<Membership>,
    /// This process's token among the nodes (random, one per opened store): which
    /// process holds the node id ([`Store::claim_node_id`]).
    instance: Arc<str>,
    writer: mpsc::Sender<instances::RecordRequest>,
}

/// The schema of each engine: one set of migrations per engine, the same tables.
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Store {
    /// Opens the database (creating an SQLite file if needed) and applies pending
    /// migrations. SQLite runs in WAL with `synchronous = FULL` and PostgreSQL commits
    /// synchronously: a committed row survives a crash or power loss.
    pub async fn open(database: &Database, node: &Membership) -> Result<Self, StoreError> {
        let open_error = |source| StoreError::Open {
            database: database.to_string(),
            source,
        };
        sqlx::any::install_default_drivers();
        let (url, engine) = match database {
            Database::Sqlite(path) => {
                // WAL is a setting of the file: set once, by a connection of its own.
                let setup = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .connect()
                    .await
                    .map_err(open_error)?;
                setup.close().await.map_err(open_error)?;
                (sqlite_url(path).map_err(open_error)?, Engine::Sqlite)
            }
            Database::Postgres(url) => (url.clone(), Engine::Postgres),
        };
        // No test query before each acquire for SQLite: a connection is a local handle.
        let pool = AnyPoolOptions::new()
            .max_connections(match engine {
                Engine::Sqlite => 4,
                Engine::Postgres => 8,
            })
            .test_before_acquire(engine == Engine::Postgres)
            // A database that is down fails a request (a C-STORE is refused, a worker
            // retries at its next poll) within seconds rather than after sqlx's 30 s.
            .acquire_timeout(Duration::from_secs(10))
            // A connection whose transaction did not end (a COMMIT that failed on a
            // full disk leaves it counted open, and every later BEGIN on it fails) is
            // closed rather than handed out again; the pool opens a fresh one.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    let settings = match engine {
                        Engine::Sqlite => {
                            "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000"
                        }
                        Engine::Postgres => "SET synchronous_commit = on",
                    };
                    conn.execute(settings).await?;
                    Ok(())
                })
            })
            .connect(&url)
            .await
            .map_err(open_error)?;
        match engine {
            Engine::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Engine::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Self::with_pool(pool, engine, node))
    }

    /// The store over a pool whose database has the schema.
    fn with_pool(pool: AnyPool, engine: Engine, node: &Membership) -> Self {
        let node = Arc::new(node.clone());
        let writer = instances::spawn_writer(pool.clone(), engine, node.clone());
        Self {
            pool,
            engine,
            node,
            instance: uuid::Uuid::new_v4().simple().to_string().into(),
            writer,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    pub fn node(&self) -> &Membership {
        &self.node
    }

    /// This process's token among the nodes: random, one per opened store.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// How long a claim lasts without renewal, in milliseconds.
    fn lease_ms(&self) -> i64 {
        self.node.lease.as_millis() as i64
    }

    /// The statement for this store's engine, where the two differ.
    fn dialect(&self, sqlite: &'static str, postgres: &'static str) -> &'static str {
        dialect(self.engine, sqlite, postgres)
    }

    /// Whether the database answers, within 3 s (a health check must not hang on a
    /// database that is down).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let ping = sqlx::query("SELECT 1").execute(&self.pool);
        match tokio::time::timeout(Duration::from_secs(3), ping).await {
            Ok(answer) => answer.map(|_| ()).map_err(StoreError::from),
            Err(_) => Err(StoreError::Query(sqlx::Error::PoolTimedOut)),
        }
    }

    /// Counts for metrics: (name, label, value).
    pub async fn counts(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        Ok(sqlx::query_as(self.dialect(
            concat!(
                counts_sql!(),
                "COALESCE(json_extract(detail, '$.outcome'), ''), COUNT(*) FROM audit
                 WHERE event = 'delivery_attempt' GROUP BY 2"
            ),
            concat!(
                counts_sql!(),
                "COALESCE(detail::jsonb ->> 'outcome', ''), COUNT(*) FROM audit
                 WHERE event = 'delivery_attempt' GROUP BY 2"
            ),
        ))
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Rows and a store for the resources' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::dicom::Uid;

    /// A job's outcome in `state` with `results`, and nothing else recorded.
    pub fn outcome(state: JobState, results: Vec<NewResult>) -> JobOutcome {
        JobOutcome {
            state,
            reason: None,
            error_code: None,
            summary: serde_json::json!({}),
            timings_ms: Vec::new(),
            results,
            instance_count: None,
            qa_verdict: None,
        }
    }

    /// A store over a new, empty database, with the node id `test-node`: an SQLite
    /// file in a temporary folder, or, when `SEGNODE_TEST_POSTGRES` names a PostgreSQL
    /// server (a `postgres://` URL of a role that may create databases), a database of
    /// its own there. CI runs the tests both ways.
    pub async fn store() -> TestStore {
        let dir = tempfile::tempdir().expect("temporary folder");
        let database = match std::env::var("SEGNODE_TEST_POSTGRES") {
            Ok(server) => Database::Postgres(postgres_database(&server).await),
            Err(_) => Database::Sqlite(dir.path().join("segnode.db")),
        };
        let store = Store::open(&database, &Membership::solo("test-node"))
            .await
            .expect("test database");
        TestStore {
            store,
            database,
            _dir: dir,
        }
    }

    impl TestStore {
        /// Another node on the same database, with its own lease time.
        pub async fn other_node(&self, node_id: &str, lease: Duration) -> Store {
            let node = Membership {
                node_id: node_id.into(),
                lease,
            };
            Store::open(&self.database, &node)
                .await
                .expect("test database")
        }
    }

    /// Creates a database with a fresh name on the server at `server`; returns its URL.
    pub async fn postgres_database(server: &str) -> String {
        use sqlx::postgres::PgConnection;
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let name = format!(
            "segnode_test_{}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            now_ms()
        );
        let mut admin = PgConnection::connect(server)
            .await
            .expect("PostgreSQL server");
        admin
            .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .await
            .expect("CREATE DATABASE");
        let mut url = url::Url::parse(server).expect("URL");
        url.set_path(&name);
        url.to_string()
    }

    /// A test's store and the folder its SQLite file lives in.
    pub struct TestStore {
        store: Store,
        database: Database,
        _dir: tempfile::TempDir,
    }

    impl std::ops::Deref for TestStore {
        type Target = Store;
        fn deref(&self) -> &Store {
            &self.store
        }
    }

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
            .settle_series(&series, i64::from(count), None, Priority::Routine)
            .await
            .unwrap()
            .expect("a new job")
    }
}

#[cfg(test)]
mod tests {
    use super::testing::queued_job;
    use super::*;

    #[tokio::test]
    async fn counts_and_stage_durations_sum_what_is_stored() {
        let store = crate::store::testing::store().await;
        store.ping().await.unwrap();
        queued_job(&store, 2, "PACS").await;
        let job = store.claim_next_job().await.unwrap().unwrap();
        let outcome = JobOutcome {
            summary: serde_json::json!({ "timings_ms": { "volume": 5, "cascade": 7 } }),
            timings_ms: vec![("volume", 5), ("cascade", 7)],
            ..testing::outcome(JobState::Succeeded, Vec::new())
        };
        store.finish_job(&job, &outcome, &[]).await.unwrap();
        let counts = store.counts().await.unwrap();
        assert!(counts.contains(&("jobs".into(), "succeeded".into(), 1)));
        assert!(counts.contains(&("instances".into(), String::new(), 2)));
        assert_eq!(
            store.stage_durations().await.unwrap(),
            vec![("cascade".into(), 7.0, 1), ("volume".into(), 5.0, 1)]
        );
    }

    #[test]
    fn a_database_is_an_sqlite_path_or_a_postgres_url_shown_without_its_password() {
        let sqlite = Database::parse("var/segnode.db");
        assert_eq!(sqlite, Database::Sqlite(PathBuf::from("var/segnode.db")));
        assert_eq!(sqlite.engine(), Engine::Sqlite);
        let pg = Database::parse("postgres://seg:secret@db.example:5432/segnode");
        assert_eq!(pg.engine(), Engine::Postgres);
        assert_eq!(pg.to_string(), "postgres://seg:***@db.example:5432/segnode");
        assert!(!serde_json::to_string(&pg).unwrap().contains("secret"));
        let plain = Database::parse("postgresql://db/segnode");
        assert_eq!(plain.to_string(), "postgresql://db/segnode");
        assert_eq!(
            sqlite_url(std::path::Path::new("/data/a?b#c%d.db")).unwrap(),
            "sqlite:///data/a%3Fb%23c%25d.db?mode=rwc"
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
