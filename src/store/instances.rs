//! Instances: recording each received instance (with its series) through one
//! group-commit writer, what a series' instances are, and the start-up check of rows
//! whose file may not have become durable.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Serialize;
use sqlx::{Any, AnyPool, Transaction};
use tokio::sync::{mpsc, oneshot};

use super::audit::{AuditEvent, append_audit};
use super::{
    AuditKind, Engine, Membership, SeriesId, SeriesState, Store, StoreError, begin_writing, now_ms,
};
use crate::dicom::Uid;

/// The attributes of one received instance that the node records (read from the data
/// set by `series`).
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMeta {
    pub sop_class_uid: Uid,
    pub sop_instance_uid: Uid,
    pub study_uid: Uid,
    pub series_uid: Uid,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub modality: Option<String>,
    pub series_description: Option<String>,
    pub image_type: Option<String>,
    pub number_of_frames: u32,
    pub slice_thickness_mm: Option<f64>,
    pub orientation: Option<[f64; 6]>,
}

/// What happened to a received instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordOutcome {
    /// New to the node.
    Added,
    /// The same data set as the stored copy (whoever sent it): nothing changed.
    Unchanged,
    /// Same SOP Instance UID, different content: the new copy replaced the old one,
    /// whose file is returned for removal. Audited.
    Replaced { old_file: String },
    /// Same SOP Instance UID, different content, and the new file is not durable yet:
    /// nothing changed; record it again once the file is durable, so that a crash
    /// can never trade an acknowledged copy for one that was not.
    ReplacementNeedsDurableFile,
}

/// The facts of a spooled file the store records. `sha256` is the checksum of the
/// data set as the sender sent it (not of the Part 10 header the node wrote): the
/// instance's content, whoever sent it.
#[derive(Debug, Clone)]
pub struct SpooledFile {
    pub file_name: String,
    pub size_bytes: i64,
    pub sha256: String,
    pub transfer_syntax: String,
}

/// One instance of a series as the pipeline reads it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SourceInstance {
    pub sop_instance_uid: Uid,
    pub sha256: String,
    pub file_name: String,
}

/// Instance counts for one series.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct InstanceCount {
    pub series_uid: Uid,
    pub instances: i64,
}

/// An instance row that may have been committed before its file became durable.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecentInstance {
    pub id: i64,
    pub file_name: String,
    pub sha256: String,
}

/// How many instance records one group commit takes at most.
const MAX_GROUP: usize = 64;
/// Pending record requests: one per association in flight is the normal load; the
/// bound makes receivers wait (backpressure) if the disk stalls.
const RECORD_QUEUE: usize = 256;

pub(super) struct RecordRequest {
    meta: InstanceMeta,
    file: SpooledFile,
    calling_ae: String,
    file_durable: bool,
    reply: oneshot::Sender<Result<RecordOutcome, StoreError>>,
}

/// Starts the group-commit writer over `pool`.
pub(super) fn spawn_writer(
    pool: AnyPool,
    engine: Engine,
    node: Arc<Membership>,
) -> mpsc::Sender<RecordRequest> {
    let (writer, requests) = mpsc::channel(RECORD_QUEUE);
    tokio::spawn(record_writer(pool, engine, node, requests));
    writer
}

impl Store {
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

    /// A series' instances in SOP Instance UID order, as they are at `revision`: their
    /// checksums are the identity of the series' content, their files what the
    /// pipeline reads. `None` when the series has moved on to a later revision (an
    /// instance arrived after the job of `revision` was made): that job's content no
    /// longer exists.
    pub async fn series_sources(
        &self,
        series_id: SeriesId,
        revision: i64,
    ) -> Result<Option<Vec<SourceInstance>>, StoreError> {
        // One statement: the revision and the instances are one snapshot.
        /// The series' revision beside each of its instances (none: no instance).
        #[derive(sqlx::FromRow)]
        struct Row {
            revision: i64,
            sop_instance_uid: Option<Uid>,
            sha256: Option<String>,
            file_name: Option<String>,
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.revision, i.sop_instance_uid, i.sha256, i.file_name
             FROM series s LEFT JOIN instances i ON i.series_id = s.id
             WHERE s.id = $1 ORDER BY i.sop_instance_uid",
        )
        .bind(series_id)
        .fetch_all(&self.pool)
        .await?;
        if rows.first().is_some_and(|r| r.revision != revision) {
            return Ok(None);
        }
        Ok(Some(
            rows.into_iter()
                .filter_map(|r| {
                    Some(SourceInstance {
                        sop_instance_uid: r.sop_instance_uid?,
                        sha256: r.sha256?,
                        file_name: r.file_name?,
                    })
                })
                .collect(),
        ))
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
        sqlx::query("DELETE FROM instances WHERE sop_instance_uid = $1 AND file_name = $2")
            .bind(sop_instance_uid)
            .bind(file_name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Instances this node received whose file may not have become durable before a
    /// crash. A row is committed while its file is fsynced (milliseconds), so the
    /// candidates are the instances received in the node's last minute of activity
    /// (another node's rows are that node's to check).
    pub async fn recent_instances(&self) -> Result<Vec<RecentInstance>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT id, file_name, sha256 FROM instances
             WHERE (node_id = $1 OR node_id IS NULL)
               AND received_ms >= (SELECT MAX(received_ms) FROM instances
                                   WHERE node_id = $1 OR node_id IS NULL) - 60000",
        )
        .bind(&self.node.node_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Drops instance rows whose file is missing or differs from its checksum (see
    /// [`Store::recent_instances`]), with an audit event each.
    pub async fn drop_unacknowledged(&self, ids: &[i64]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for id in ids {
            let row: Option<(String, String)> = sqlx::query_as(
                "DELETE FROM instances WHERE id = $1 RETURNING sop_instance_uid, file_name",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((sop_instance, file_name)) = row {
                append_audit(
                    &mut tx,
                    &self.node.node_id,
                    &AuditEvent {
                        detail: serde_json::json!({
                            "sop_instance": sop_instance,
                            "file": file_name,
                            "reason": "its file was not durable when the node stopped; the C-STORE was never acknowledged",
                        }),
                        ..AuditEvent::of(AuditKind::InstanceUnacknowledgedDropped)
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
        let names: Vec<String> =
            sqlx::query_scalar("SELECT file_name FROM instances UNION SELECT file FROM results")
                .fetch_all(&self.pool)
                .await?;
        Ok(names.into_iter().collect())
    }
}

/// The group-commit writer: takes every waiting request into one transaction, each in
/// its own savepoint so that one failure does not fail the others.
async fn record_writer(
    pool: AnyPool,
    engine: Engine,
    node: Arc<Membership>,
    mut requests: mpsc::Receiver<RecordRequest>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match requests.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // One lock order for every node's writer (series, then instance):
        // PostgreSQL then has no deadlock between two nodes' batches to break.
        batch.sort_by(|a, b| {
            (a.meta.series_uid.as_str(), a.meta.sop_instance_uid.as_str())
                .cmp(&(b.meta.series_uid.as_str(), b.meta.sop_instance_uid.as_str()))
        });
        match record_batch_retried(&pool, engine, &node.node_id, &batch).await {
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

/// [`record_batch`], and again (up to three tries) for the requests that failed only
/// because another node's transaction got in the way (PostgreSQL: a deadlock, a
/// serialization failure, or the same instance inserted by two nodes at once, which
/// the next try finds stored).
async fn record_batch_retried(
    pool: &AnyPool,
    engine: Engine,
    node: &str,
    batch: &[RecordRequest],
) -> Result<Vec<Result<RecordOutcome, StoreError>>, StoreError> {
    let all: Vec<&RecordRequest> = batch.iter().collect();
    let mut outcomes = record_batch(pool, engine, node, &all).await?;
    for _ in 1..3 {
        let again: Vec<usize> = (0..outcomes.len())
            .filter(|&i| matches!(&outcomes[i], Err(StoreError::Query(e)) if is_contention(e)))
            .collect();
        if again.is_empty() {
            break;
        }
        tracing::debug!(
            requests = again.len(),
            "instances met another node's transaction; again"
        );
        let requests: Vec<&RecordRequest> = again.iter().map(|&i| &batch[i]).collect();
        match record_batch(pool, engine, node, &requests).await {
            Ok(redone) => {
                for (i, outcome) in again.into_iter().zip(redone) {
                    outcomes[i] = outcome;
                }
            }
            Err(StoreError::Query(e)) if is_contention(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(outcomes)
}

/// Whether `e` is PostgreSQL's answer to two transactions meeting (deadlock,
/// serialization failure, unique violation by a concurrent insert).
pub(super) fn is_contention(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|code| matches!(&*code, "40001" | "40P01" | "23505"))
}

async fn record_batch(
    pool: &AnyPool,
    engine: Engine,
    node: &str,
    batch: &[&RecordRequest],
) -> Result<Vec<Result<RecordOutcome, StoreError>>, StoreError> {
    // The first statement reads, then writes (see `begin_writing`).
    let mut tx = begin_writing(pool, engine).await?;
    // A lone request needs no savepoint: its failure rolls the transaction back.
    let savepoints = batch.len() > 1;
    let mut outcomes = Vec::with_capacity(batch.len());
    for r in batch {
        if savepoints {
            sqlx::query("SAVEPOINT instance").execute(&mut *tx).await?;
        }
        let outcome = record_in(&mut tx, node, r).await;
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
/// (its revision counts new or changed content); the instance row is written. A
/// replacement is audited in the same transaction.
async fn record_in(
    tx: &mut Transaction<'_, Any>,
    node: &str,
    request: &RecordRequest,
) -> Result<RecordOutcome, StoreError> {
    let RecordRequest {
        meta,
        file,
        file_durable,
        ..
    } = request;
    let now = now_ms();
    let existing: Option<(i64, String, String)> =
        sqlx::query_as("SELECT id, sha256, file_name FROM instances WHERE sop_instance_uid = $1")
            .bind(meta.sop_instance_uid.as_str())
            .fetch_optional(&mut **tx)
            .await?;
    let (sql, outcome, existing_id) = match existing {
        Some((_, sha, _)) if sha == file.sha256 => (None, RecordOutcome::Unchanged, None),
        Some(_) if !file_durable => return Ok(RecordOutcome::ReplacementNeedsDurableFile),
        Some((id, _, old_file)) => (
            Some(UPDATE_INSTANCE),
            RecordOutcome::Replaced { old_file },
            Some(id),
        ),
        None => (Some(INSERT_INSTANCE), RecordOutcome::Added, None),
    };
    let series_id = touch_series(tx, request, now, sql.is_some()).await?;
    let Some(sql) = sql else {
        return Ok(outcome);
    };
    write_instance(tx, node, request, sql, series_id, existing_id, now).await?;
    if let RecordOutcome::Replaced { .. } = outcome {
        audit_replacement(tx, node, request).await?;
    }
    Ok(outcome)
}

/// Replaces the stored copy's row (`$15`: its id) with the new copy's.
const UPDATE_INSTANCE: &str = "UPDATE instances SET series_id = $1, sop_class_uid = $3, transfer_syntax = $4, file_name = $5,
                     size_bytes = $6, sha256 = $7, modality = $8, image_type = $9, number_of_frames = $10,
                     slice_thickness_mm = $11, orientation = $12, received_ms = $13,
                     replaced_count = replaced_count + 1, node_id = $14
                 WHERE id = $15";

/// Inserts the row of an instance new to the node.
const INSERT_INSTANCE: &str =
    "INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, transfer_syntax,
                     file_name, size_bytes, sha256, modality, image_type, number_of_frames,
                     slice_thickness_mm, orientation, received_ms, node_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)";

/// Creates or touches the instance's series and returns its id. Any arrival puts the
/// series back to `receiving`; only `new_content` bumps its revision (and names the
/// sender of the revision).
async fn touch_series(
    tx: &mut Transaction<'_, Any>,
    request: &RecordRequest,
    now: i64,
    new_content: bool,
) -> Result<i64, StoreError> {
    let meta = &request.meta;
    Ok(sqlx::query_scalar(
        "INSERT INTO series (series_uid, study_uid, patient_id, accession_number, modality,
                             series_description, calling_ae, state, first_received_ms, last_received_ms,
                             revision)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $10, $8, $8, $9)
         ON CONFLICT (series_uid) DO UPDATE SET
             state = excluded.state, last_received_ms = excluded.last_received_ms,
             calling_ae = CASE WHEN excluded.revision > 0 THEN excluded.calling_ae ELSE series.calling_ae END,
             revision = series.revision + excluded.revision
         RETURNING id",
    )
    .bind(meta.series_uid.as_str())
    .bind(meta.study_uid.as_str())
    .bind(&meta.patient_id)
    .bind(&meta.accession_number)
    .bind(&meta.modality)
    .bind(&meta.series_description)
    .bind(&request.calling_ae)
    .bind(now)
    .bind(i64::from(new_content))
    .bind(SeriesState::Receiving)
    .fetch_one(&mut **tx)
    .await?)
}

/// Writes the instance row with `sql` ([`INSERT_INSTANCE`], or [`UPDATE_INSTANCE`] of
/// the row `existing_id`).
async fn write_instance(
    tx: &mut Transaction<'_, Any>,
    node: &str,
    request: &RecordRequest,
    sql: &'static str,
    series_id: i64,
    existing_id: Option<i64>,
    now: i64,
) -> Result<(), StoreError> {
    let RecordRequest { meta, file, .. } = request;
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
        .bind(now)
        .bind(node);
    match existing_id {
        Some(id) => query.bind(id),
        None => query,
    }
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Audits the replacement of a stored copy by the request's new content.
async fn audit_replacement(
    tx: &mut Transaction<'_, Any>,
    node: &str,
    request: &RecordRequest,
) -> Result<(), StoreError> {
    let RecordRequest {
        meta, calling_ae, ..
    } = request;
    append_audit(
        tx,
        node,
        &AuditEvent {
            calling_ae: Some(calling_ae),
            study_uid: Some(meta.study_uid.as_str()),
            series_uid: Some(meta.series_uid.as_str()),
            patient_id: meta.patient_id.as_deref(),
            accession_number: meta.accession_number.as_deref(),
            detail: serde_json::json!({ "sop_instance": meta.sop_instance_uid.as_str() }),
            ..AuditEvent::of(AuditKind::InstanceReplaced)
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::testing::{file, instance};
    use super::*;

    #[tokio::test]
    async fn the_same_content_from_another_sender_is_unchanged_new_content_replaces() {
        let store = crate::store::testing::store().await;
        let meta = instance(1, 1);
        let first = store
            .record_instance(&meta, &file("a", "sha-1"), "BARSCU", true)
            .await
            .unwrap();
        assert_eq!(first, RecordOutcome::Added);
        let again = store
            .record_instance(&meta, &file("b", "sha-1"), "STORESCU", true)
            .await
            .unwrap();
        assert_eq!(again, RecordOutcome::Unchanged);
        let series = store.series_due(now_ms()).await.unwrap();
        assert_eq!(
            (series[0].revision, series[0].calling_ae.as_str()),
            (1, "BARSCU")
        );

        let not_yet = store
            .record_instance(&meta, &file("c", "sha-2"), "STORESCU", false)
            .await
            .unwrap();
        assert_eq!(not_yet, RecordOutcome::ReplacementNeedsDurableFile);
        let replaced = store
            .record_instance(&meta, &file("c", "sha-2"), "STORESCU", true)
            .await
            .unwrap();
        assert_eq!(
            replaced,
            RecordOutcome::Replaced {
                old_file: "a".into()
            }
        );
        let series = store.series_due(now_ms()).await.unwrap();
        assert_eq!(
            (series[0].revision, series[0].calling_ae.as_str()),
            (2, "STORESCU")
        );
        let audit = store
            .audit_rows(Some(AuditKind::InstanceReplaced))
            .await
            .unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(audit[0].calling_ae.as_deref(), Some("STORESCU"));
        assert!(audit[0].detail.contains("1.2.3.1.1"));
    }

    /// Two nodes on one database record the same instances at once (a sender that
    /// retries on another node, a load balancer): every request succeeds, each instance
    /// is stored once, and its series counts one revision per new content.
    #[tokio::test]
    async fn two_nodes_recording_the_same_instances_at_once_store_each_once() {
        let a = crate::store::testing::store().await;
        let b = a.other_node("b", std::time::Duration::from_secs(30)).await;
        // Every request of both nodes in flight at once: each node's writer commits
        // them in groups that meet the other's on the same rows.
        let mut requests = tokio::task::JoinSet::new();
        for i in 0..40 {
            for (store, node) in [((*a).clone(), "A"), (b.clone(), "B")] {
                requests.spawn(async move {
                    let file = file(&format!("f{i}"), "same");
                    store
                        .record_instance(&instance(1, i), &file, node, true)
                        .await
                });
            }
        }
        let mut added = 0;
        while let Some(outcome) = requests.join_next().await {
            let outcome = outcome.unwrap().unwrap();
            assert!(matches!(
                outcome,
                RecordOutcome::Added | RecordOutcome::Unchanged
            ));
            added += usize::from(outcome == RecordOutcome::Added);
        }
        assert_eq!(added, 40, "each added once");
        assert_eq!(a.instance_counts().await.unwrap()[0].instances, 40);
        let series = a.series_due(now_ms()).await.unwrap();
        assert_eq!(series.len(), 1);
        assert_eq!(series[0].revision, 40);
    }

    #[tokio::test]
    async fn sources_counts_forgetting_and_unacknowledged_rows() {
        let store = crate::store::testing::store().await;
        for (sop, name) in [(2, "f2"), (1, "f1"), (3, "f3")] {
            store
                .record_instance(&instance(1, sop), &file(name, name), "PACS", false)
                .await
                .unwrap();
        }
        let series = store.series_due(now_ms()).await.unwrap().remove(0);
        let sources = store
            .series_sources(series.id, series.revision)
            .await
            .unwrap()
            .unwrap();
        let names: Vec<_> = sources.iter().map(|s| s.file_name.as_str()).collect();
        assert_eq!(names, ["f1", "f2", "f3"]);
        assert_eq!(sources[0].sop_instance_uid, "1.2.3.1.1");
        // A later revision: the sources of this one are gone.
        assert_eq!(
            store
                .series_sources(series.id, series.revision - 1)
                .await
                .unwrap(),
            None
        );

        store.forget_instance("1.2.3.1.3", "f3").await.unwrap();
        assert_eq!(store.instance_counts().await.unwrap()[0].instances, 2);
        assert_eq!(
            store.referenced_files().await.unwrap(),
            HashSet::from(["f1".to_string(), "f2".to_string()])
        );

        let recent = store.recent_instances().await.unwrap();
        assert_eq!(recent.len(), 2);
        let f1 = recent.iter().find(|r| r.file_name == "f1").unwrap();
        assert_eq!(f1.sha256, "f1");
        store.drop_unacknowledged(&[f1.id]).await.unwrap();
        assert_eq!(store.instance_counts().await.unwrap()[0].instances, 1);
        let dropped = store
            .audit_rows(Some(AuditKind::InstanceUnacknowledgedDropped))
            .await
            .unwrap();
        assert!(dropped[0].detail.contains("\"f1\""));
    }
}
