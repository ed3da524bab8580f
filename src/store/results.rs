//! A job's result objects (one row each: the SEG of each type, the measurement report,
//! each key image, with its SOP Instance UID and spool file), the deliveries that name
//! them, and each job's time per stage. Written in the transaction that finishes the
//! job ([`super::Store::finish_job`]); read by the outbox, the spool sweep, the API and
//! the dashboard.

use serde::Serialize;

use super::{DeliveryState, JobId, ResultObject, Store, StoreError, now_ms};
use crate::dicom::{SegType, Uid};

/// A result object a job produced, as it is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewResult {
    pub kind: ResultObject,
    /// The SEG's type; `None` for the other kinds.
    pub variant: Option<SegType>,
    pub sop_instance_uid: Uid,
    /// Its spool file.
    pub file: String,
}

/// A recorded result object.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ResultRow {
    pub id: i64,
    pub job_id: JobId,
    /// As the API names it: the object.
    #[serde(rename = "object")]
    pub kind: ResultObject,
    pub variant: Option<SegType>,
    pub sop_instance_uid: Uid,
    /// Its spool file.
    #[serde(skip)]
    pub file: String,
}

/// A delivery to make: one of the job's results (by SOP Instance UID) to a destination,
/// and the result to send instead when the peer refuses it (the BINARY SEG for a
/// LABELMAP one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub destination: String,
    pub sop_instance_uid: Uid,
    pub fallback: Option<Uid>,
}

/// Records `results` of `job_id` in `tx`. A result recorded before (the same object made
/// again by an operator's retry) now names its new file.
pub(super) async fn insert_results(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: JobId,
    results: &[NewResult],
) -> Result<(), StoreError> {
    for r in results {
        sqlx::query(
            "INSERT INTO results (job_id, kind, variant, sop_instance_uid, file)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (job_id, sop_instance_uid)
             DO UPDATE SET kind = excluded.kind, variant = excluded.variant, file = excluded.file",
        )
        .bind(job_id)
        .bind(r.kind)
        .bind(r.variant)
        .bind(&r.sop_instance_uid)
        .bind(&r.file)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Records the job's time per stage in `tx`, in place of any earlier run's.
pub(super) async fn insert_timings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: JobId,
    timings_ms: &[(&'static str, i64)],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM job_timings WHERE job_id = $1")
        .bind(job_id)
        .execute(&mut **tx)
        .await?;
    for (stage, ms) in timings_ms {
        sqlx::query("INSERT INTO job_timings (job_id, stage, ms) VALUES ($1, $2, $3)")
            .bind(job_id)
            .bind(*stage)
            .bind(*ms)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Queues deliveries of the job's recorded results in `tx`: once per destination and
/// result, and never an object that destination already acknowledged (the same SOP
/// Instance UID is the same content: a later revision that made the identical object
/// is not sent again).
pub(super) async fn insert_deliveries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    job_id: JobId,
    items: &[NewDelivery],
    state: DeliveryState,
) -> Result<(), StoreError> {
    let now = now_ms();
    for d in items {
        sqlx::query(
            "INSERT INTO deliveries (job_id, destination, result_id, fallback_result_id, state,
                 next_attempt_ms, created_ms, updated_ms)
             SELECT $1, $2, r.id,
                    (SELECT f.id FROM results f WHERE f.job_id = $1 AND f.sop_instance_uid = $4),
                    $6, $5, $5, $5
             FROM results r
             WHERE r.job_id = $1 AND r.sop_instance_uid = $3
               AND NOT EXISTS (SELECT 1 FROM deliveries o JOIN results ro ON ro.id = o.result_id
                               WHERE o.destination = $2 AND o.state = 'delivered'
                                 AND ro.sop_instance_uid = r.sop_instance_uid)
             ON CONFLICT DO NOTHING",
        )
        .bind(job_id)
        .bind(&d.destination)
        .bind(&d.sop_instance_uid)
        .bind(&d.fallback)
        .bind(now)
        .bind(state)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Store {
    /// A job's result objects, in the order they were made (the BINARY SEG first).
    pub async fn job_results(&self, job_id: JobId) -> Result<Vec<ResultRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, job_id, kind, variant, sop_instance_uid, file FROM results
             WHERE job_id = $1 ORDER BY id",
        )
        .bind(job_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// The result objects of `jobs` (a page of the job list, a study's series), by job
    /// and in the order they were made: one query per 500 jobs, whatever their ids.
    pub async fn results_of_jobs(&self, jobs: &[JobId]) -> Result<Vec<ResultRow>, StoreError> {
        let mut rows = Vec::new();
        for chunk in jobs.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT id, job_id, kind, variant, sop_instance_uid, file FROM results
                 WHERE job_id IN ({}) ORDER BY job_id, id",
                placeholders.join(", ")
            );
            let mut query = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(*id);
            }
            rows.extend(query.fetch_all(&self.pool).await?);
        }
        Ok(rows)
    }

    /// Time per stage over every finished job: (stage, sum in ms, jobs), by stage.
    pub async fn stage_durations(&self) -> Result<Vec<(String, f64, i64)>, StoreError> {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT stage, CAST(SUM(ms) AS BIGINT), COUNT(*) FROM job_timings GROUP BY stage",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut durations: Vec<_> = rows
            .into_iter()
            .map(|(stage, sum, count)| (stage, sum as f64, count))
            .collect();
        durations.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(durations)
    }

    /// Records results and queues their deliveries for a job, as
    /// [`Store::finish_job`] does.
    #[cfg(test)]
    pub async fn create_deliveries(
        &self,
        job_id: JobId,
        results: &[NewResult],
        items: &[NewDelivery],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_results(&mut tx, job_id, results).await?;
        insert_deliveries(&mut tx, job_id, items, DeliveryState::Pending).await?;
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{AnyPool, Row};

    use super::super::testing::{self, queued_job};
    use super::super::{Attempt, DeliveryState};
    use super::*;

    /// The same object (the same SOP Instance UID: the same content) made again by a
    /// later job is not sent again to a destination that acknowledged it; a destination
    /// that has not got it yet still gets it.
    #[tokio::test]
    async fn an_object_a_destination_acknowledged_is_not_sent_again_unchanged() {
        let store = testing::store().await;
        let sr = |file: &str| NewResult {
            kind: ResultObject::Sr,
            variant: None,
            sop_instance_uid: Uid::parse("2.25.77").unwrap(),
            file: file.into(),
        };
        let to = |destination: &str| NewDelivery {
            destination: destination.into(),
            sop_instance_uid: Uid::parse("2.25.77").unwrap(),
            fallback: None,
        };
        let first = queued_job(&store, 1, "PACS").await;
        store
            .create_deliveries(first, &[sr("a")], &[to("pacs")])
            .await
            .unwrap();
        let due = store.claim_due_deliveries(10).await.unwrap();
        let delivered = Attempt::Delivered {
            status: "0x0000".into(),
            note: None,
        };
        store.record_attempt(&due[0], &delivered).await.unwrap();

        let second = JobId(first.0 + 1);
        sqlx::query(
            "INSERT INTO jobs (id, series_id, series_revision, state, instance_count, created_ms,
                 updated_ms)
             SELECT $1, series_id, series_revision + 1, 'succeeded', 1, 0, 0 FROM jobs WHERE id = $2",
        )
        .bind(second)
        .bind(first)
        .execute(&store.pool)
        .await
        .unwrap();
        store
            .create_deliveries(second, &[sr("b")], &[to("pacs"), to("archive")])
            .await
            .unwrap();
        let again = store.job_deliveries(second).await.unwrap();
        assert_eq!(
            again
                .iter()
                .map(|d| (d.destination.as_str(), d.state))
                .collect::<Vec<_>>(),
            [("archive", DeliveryState::Pending)]
        );
    }

    /// The results of the jobs asked for, and of no job in between.
    #[tokio::test]
    async fn results_are_read_for_the_jobs_asked_only() {
        let store = testing::store().await;
        let first = queued_job(&store, 1, "PACS").await;
        for n in 1..=2 {
            sqlx::query(
                "INSERT INTO jobs (id, series_id, series_revision, state, instance_count,
                     created_ms, updated_ms)
                 SELECT $1, series_id, series_revision + $2, 'succeeded', 1, 0, 0
                 FROM jobs WHERE id = $3",
            )
            .bind(JobId(first.0 + n))
            .bind(n)
            .bind(first)
            .execute(&store.pool)
            .await
            .unwrap();
        }
        for n in 0..=2 {
            let result = NewResult {
                kind: ResultObject::Sr,
                variant: None,
                sop_instance_uid: Uid::parse(&format!("2.25.{}", 10 + n)).unwrap(),
                file: format!("f{n}"),
            };
            store
                .create_deliveries(JobId(first.0 + n), &[result], &[])
                .await
                .unwrap();
        }
        let found = store
            .results_of_jobs(&[JobId(first.0 + 2), first])
            .await
            .unwrap();
        let files: Vec<_> = found.iter().map(|r| r.file.as_str()).collect();
        assert_eq!(files, ["f0", "f2"]);
        assert!(store.results_of_jobs(&[]).await.unwrap().is_empty());
    }

    /// Applies the engine's migration files whose version `take` selects, in order.
    async fn apply(pool: &AnyPool, engine: &str, take: impl Fn(u32) -> bool) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(engine);
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in files {
            let name = f.file_name().unwrap().to_string_lossy().to_string();
            let version: u32 = name[..4].parse().unwrap();
            if take(version) {
                let sql = std::fs::read_to_string(&f).unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
        }
    }

    /// A database as the node left it before the results table (a job with a BINARY
    /// SEG in its columns, an SR and a LABELMAP SEG only in its deliveries, key images
    /// and timings only in its summary) comes out of the migration with every object
    /// in `results`, the deliveries pointing at them and the timings in `job_timings`.
    #[tokio::test]
    async fn the_results_migration_carries_todays_data_over() {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().unwrap();
        let (url, engine, first_new) = match std::env::var("SEGNODE_TEST_POSTGRES") {
            Ok(server) => (testing::postgres_database(&server).await, "postgres", 3),
            Err(_) => {
                let path = dir.path().join("old.db");
                (
                    format!("sqlite://{}?mode=rwc", path.display()),
                    "sqlite",
                    10,
                )
            }
        };
        let pool = AnyPool::connect(&url).await.unwrap();
        apply(&pool, engine, |v| v < first_new).await;
        let old = [
            "INSERT INTO series (id, series_uid, study_uid, calling_ae, revision, state,
                 first_received_ms, last_received_ms)
             VALUES (1, '1.2.3.1', '1.2.3', 'PACS', 1, 'stable', 0, 0)",
            r#"INSERT INTO jobs (id, series_id, series_revision, state, instance_count, created_ms,
                 updated_ms, summary, seg_sop_instance_uid, seg_file)
             VALUES (1, 1, 1, 'succeeded', 20, 0, 0,
                 '{"timings_ms":{"volume":5,"cascade":7},"sr":{"sop_instance_uid":"2.25.2"},"key_images":[{"sop_instance_uid":"2.25.3","slice":4,"file":"key-1"}]}',
                 '2.25.1', 'seg-bin')"#,
            "INSERT INTO deliveries (id, job_id, destination, object, state, variant,
                 sop_instance_uid, file, fallback_file, next_attempt_ms, created_ms, updated_ms)
             VALUES (1, 1, 'pacs', 'seg', 'delivered', 'LABELMAP', '2.25.9', 'seg-lm', 'seg-bin', 0, 0, 0),
                    (2, 1, 'pacs', 'sr', 'pending', NULL, '2.25.2', 'sr-file', NULL, 0, 0, 0)",
        ];
        for sql in old {
            sqlx::query(sqlx::AssertSqlSafe(sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        apply(&pool, engine, |v| v >= first_new).await;

        let results: Vec<(String, Option<String>, String, String)> = sqlx::query_as(
            "SELECT kind, variant, sop_instance_uid, file FROM results ORDER BY sop_instance_uid",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let owned = |k: &str, v: Option<&str>, u: &str, f: &str| {
            (
                k.to_string(),
                v.map(String::from),
                u.to_string(),
                f.to_string(),
            )
        };
        assert_eq!(
            results,
            [
                owned("seg", Some("BINARY"), "2.25.1", "seg-bin"),
                owned("sr", None, "2.25.2", "sr-file"),
                owned("key_images", None, "2.25.3", "key-1"),
                owned("seg", Some("LABELMAP"), "2.25.9", "seg-lm"),
            ]
        );
        let deliveries = sqlx::query(
            "SELECT d.id, r.file, f.file AS fallback, d.state FROM deliveries d
             JOIN results r ON r.id = d.result_id
             LEFT JOIN results f ON f.id = d.fallback_result_id ORDER BY d.id",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let rows: Vec<(String, Option<String>, String)> = deliveries
            .iter()
            .map(|r| (r.get(1), r.get(2), r.get(3)))
            .collect();
        assert_eq!(
            rows,
            [
                ("seg-lm".into(), Some("seg-bin".into()), "delivered".into()),
                ("sr-file".into(), None, "pending".into()),
            ]
        );
        let timings: Vec<(String, i64)> =
            sqlx::query_as("SELECT stage, ms FROM job_timings ORDER BY stage")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(timings, [("cascade".into(), 7), ("volume".into(), 5)]);
        pool.close().await;
    }
}
