//! The audit trail: append-only (triggers refuse updates and deletes), queried by
//! time, patient, accession, study, calling AE, job and kind, and read in order by the
//! webhook sender from its cursor.

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::{Any, Transaction};

use super::{AuditKind, Engine, JobId, Store, StoreError, format_ms, now_ms, parse_time};

/// One audit record to append.
#[derive(Debug, Clone)]
pub struct AuditEvent<'a> {
    pub event: AuditKind,
    pub calling_ae: Option<&'a str>,
    pub peer: Option<String>,
    pub study_uid: Option<&'a str>,
    pub series_uid: Option<&'a str>,
    pub patient_id: Option<&'a str>,
    pub accession_number: Option<&'a str>,
    pub job_id: Option<JobId>,
    pub detail: serde_json::Value,
}

impl AuditEvent<'_> {
    /// An event of `event` with none of the optional fields.
    pub fn of(event: AuditKind) -> Self {
        Self {
            event,
            calling_ae: None,
            peer: None,
            study_uid: None,
            series_uid: None,
            patient_id: None,
            accession_number: None,
            job_id: None,
            detail: serde_json::Value::Null,
        }
    }
}

/// A stored audit record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub event: AuditKind,
    pub calling_ae: Option<String>,
    pub peer: Option<String>,
    pub study_uid: Option<String>,
    pub series_uid: Option<String>,
    pub patient_id: Option<String>,
    pub accession_number: Option<String>,
    pub job_id: Option<JobId>,
    pub detail: String,
    /// The node that wrote it.
    pub node_id: Option<String>,
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
    pub job_id: Option<JobId>,
    pub event: Option<AuditKind>,
    pub limit: Option<i64>,
}

/// The audit trail's query parameters, as the API's query string and the CLI's options
/// name them.
pub const AUDIT_FIELDS: [&str; 7] = [
    "from",
    "to",
    "patient",
    "accession",
    "study",
    "calling_ae",
    "event",
];

impl AuditFilter {
    /// The filter that parameters named as [`AUDIT_FIELDS`] ask for; times as
    /// [`parse_time`] reads them.
    pub fn from_params(p: &BTreeMap<String, String>) -> Result<Self, String> {
        let time = |name: &str| {
            p.get(name)
                .map(|v| parse_time(v).map_err(|e| format!("{name}: {e}")))
                .transpose()
        };
        Ok(AuditFilter {
            from_ms: time("from")?,
            to_ms: time("to")?,
            patient_id: p.get("patient").cloned(),
            accession_number: p.get("accession").cloned(),
            study_uid: p.get("study").cloned(),
            calling_ae: p.get("calling_ae").cloned(),
            job_id: None,
            event: p
                .get("event")
                .map(|e| {
                    e.parse::<AuditKind>()
                        .map_err(|_| format!("event: {e:?} is not an audit event"))
                })
                .transpose()?,
            limit: None,
        })
    }
}

impl AuditRow {
    /// Rows as CSV (RFC 4180 quoting), with a header line.
    pub fn csv(rows: &[AuditRow]) -> String {
        let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let mut out = String::from(
            "id,at,event,calling_ae,peer,study_uid,series_uid,patient_id,accession_number,job_id,detail,node_id\n",
        );
        for r in rows {
            let fields = [
                r.id.to_string(),
                format_ms(r.at_ms),
                r.event.to_string(),
                r.calling_ae.clone().unwrap_or_default(),
                r.peer.clone().unwrap_or_default(),
                r.study_uid.clone().unwrap_or_default(),
                r.series_uid.clone().unwrap_or_default(),
                r.patient_id.clone().unwrap_or_default(),
                r.accession_number.clone().unwrap_or_default(),
                r.job_id.map(|j| j.to_string()).unwrap_or_default(),
                r.detail.clone(),
                r.node_id.clone().unwrap_or_default(),
            ];
            out.push_str(&fields.iter().map(|f| q(f)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        out
    }
}

/// The SELECT of an [`AuditRow`], before its WHERE clause.
macro_rules! audit_row_sql {
    () => {
        "SELECT id, at_ms, event, calling_ae, peer, study_uid, series_uid, patient_id, accession_number,
                job_id, detail, node_id
         FROM audit"
    };
}

impl Store {
    pub async fn audit(&self, event: &AuditEvent<'_>) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        append_audit(&mut tx, &self.node.node_id, event).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Audit records matching `filter`, oldest first.
    pub async fn audit_query(&self, f: &AuditFilter) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(concat!(
            audit_row_sql!(),
            " WHERE ($1 IS NULL OR at_ms >= $1) AND ($2 IS NULL OR at_ms <= $2)
               AND ($3 IS NULL OR patient_id = $3) AND ($4 IS NULL OR accession_number = $4)
               AND ($5 IS NULL OR study_uid = $5) AND ($6 IS NULL OR calling_ae = $6)
               AND ($7 IS NULL OR job_id = $7) AND ($8 IS NULL OR event = $8)
             ORDER BY id LIMIT $9"
        ))
        .bind(f.from_ms)
        .bind(f.to_ms)
        .bind(&f.patient_id)
        .bind(&f.accession_number)
        .bind(&f.study_uid)
        .bind(&f.calling_ae)
        .bind(f.job_id)
        .bind(f.event)
        .bind(f.limit.unwrap_or(10_000))
        .fetch_all(&self.pool)
        .await?)
    }

    /// Every audit record, oldest first, optionally only one kind.
    pub async fn audit_rows(&self, event: Option<AuditKind>) -> Result<Vec<AuditRow>, StoreError> {
        self.audit_query(&AuditFilter {
            event,
            limit: Some(i64::MAX),
            ..AuditFilter::default()
        })
        .await
    }

    /// Audit records after `id`, oldest first. On PostgreSQL, ids are handed out before
    /// commit, so a row may become visible after a higher one: only rows older than a
    /// few seconds are read there, by when every transaction that wrote one has ended.
    pub async fn audit_after(&self, id: i64, limit: i64) -> Result<Vec<AuditRow>, StoreError> {
        let settled = match self.engine {
            Engine::Sqlite => i64::MAX,
            Engine::Postgres => now_ms() - AUDIT_SETTLE_MS,
        };
        Ok(sqlx::query_as(concat!(
            audit_row_sql!(),
            " WHERE id > $1 AND at_ms <= $3 ORDER BY id LIMIT $2"
        ))
        .bind(id)
        .bind(limit)
        .bind(settled)
        .fetch_all(&self.pool)
        .await?)
    }

    /// Takes (or renews) the webhook sender's lease, which one node at a time holds,
    /// and returns the last audit id handled; `None` while another node holds it.
    pub async fn claim_webhook_cursor(&self) -> Result<Option<i64>, StoreError> {
        let now = now_ms();
        Ok(sqlx::query_scalar(
            "UPDATE webhook_cursor SET node_id = $1, lease_until_ms = $2
             WHERE id = 1 AND (node_id IS NULL OR node_id = $1 OR lease_until_ms < $3)
             RETURNING last_audit_id",
        )
        .bind(&self.node.node_id)
        .bind(now + self.lease_ms())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// Moves the cursor on, while this node holds the sender's lease.
    pub async fn set_webhook_cursor(&self, audit_id: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_cursor SET last_audit_id = $1 WHERE id = 1 AND node_id = $2")
            .bind(audit_id)
            .bind(&self.node.node_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// How old an audit row must be before the webhook sender reads it on PostgreSQL.
const AUDIT_SETTLE_MS: i64 = 3_000;

/// Appends `e`, written by `node`, in `tx`.
pub(super) async fn append_audit(
    tx: &mut Transaction<'_, Any>,
    node: &str,
    e: &AuditEvent<'_>,
) -> Result<(), StoreError> {
    let detail = if e.detail.is_null() {
        "{}".to_string()
    } else {
        e.detail.to_string()
    };
    sqlx::query(
        "INSERT INTO audit (at_ms, event, calling_ae, peer, study_uid, series_uid, patient_id,
                            accession_number, job_id, detail, node_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
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
    .bind(node)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_become_a_filter_or_say_which_one_is_wrong() {
        let p = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let f = AuditFilter::from_params(&p(&[
            ("from", "1000"),
            ("study", "1.2.3"),
            ("event", "job_failed"),
        ]))
        .unwrap();
        assert_eq!(
            (f.from_ms, f.study_uid.as_deref(), f.event),
            (Some(1000), Some("1.2.3"), Some(AuditKind::JobFailed))
        );
        let bad_time = AuditFilter::from_params(&p(&[("to", "yesterday")])).unwrap_err();
        assert!(bad_time.starts_with("to: "), "{bad_time}");
        let bad_event = AuditFilter::from_params(&p(&[("event", "x")])).unwrap_err();
        assert!(bad_event.contains("not an audit event"), "{bad_event}");
    }

    #[test]
    fn csv_quotes_every_field_and_doubles_quotes() {
        let row = AuditRow {
            id: 7,
            at_ms: 0,
            event: AuditKind::JobFailed,
            calling_ae: Some("PACS".into()),
            peer: None,
            study_uid: None,
            series_uid: None,
            patient_id: None,
            accession_number: None,
            job_id: Some(JobId(3)),
            detail: r#"{"reason":"a, \"b\""}"#.into(),
            node_id: Some("n1".into()),
        };
        let csv = AuditRow::csv(&[row]);
        let mut lines = csv.lines();
        assert!(lines.next().unwrap().starts_with("id,at,event,"));
        let line = lines.next().unwrap();
        assert!(line.starts_with(r#""7","1970-01-01"#), "{line}");
        assert!(line.contains(r#""{""reason"":""a, \""b\""""}""#), "{line}");
        assert!(line.ends_with(r#","n1""#), "{line}");
    }

    #[tokio::test]
    async fn records_are_found_by_each_filter_and_never_change() {
        let store = crate::store::testing::store().await;
        for (ae, patient) in [("PACS", "P1"), ("CT1", "P2"), ("PACS", "P2")] {
            store
                .audit(&AuditEvent {
                    calling_ae: Some(ae),
                    patient_id: Some(patient),
                    peer: Some("127.0.0.1:1".into()),
                    ..AuditEvent::of(AuditKind::AssociationAccepted)
                })
                .await
                .unwrap();
        }
        store
            .audit(&AuditEvent {
                job_id: Some(JobId(4)),
                detail: serde_json::json!({ "status": 200 }),
                ..AuditEvent::of(AuditKind::WebhookSent)
            })
            .await
            .unwrap();
        let by = |f: AuditFilter| {
            let store = store.clone();
            async move { store.audit_query(&f).await.unwrap().len() }
        };
        let pacs = AuditFilter {
            calling_ae: Some("PACS".into()),
            ..AuditFilter::default()
        };
        assert_eq!(by(pacs).await, 2);
        let p2 = AuditFilter {
            patient_id: Some("P2".into()),
            limit: Some(1),
            ..AuditFilter::default()
        };
        assert_eq!(by(p2).await, 1);
        let job = AuditFilter {
            job_id: Some(JobId(4)),
            ..AuditFilter::default()
        };
        assert_eq!(by(job).await, 1);
        let later = AuditFilter {
            from_ms: Some(now_ms() + 60_000),
            ..AuditFilter::default()
        };
        assert_eq!(by(later).await, 0);
        let rows = store
            .audit_rows(Some(AuditKind::WebhookSent))
            .await
            .unwrap();
        assert_eq!(
            (rows[0].event, rows[0].detail.as_str()),
            (AuditKind::WebhookSent, r#"{"status":200}"#)
        );
        assert_eq!(store.audit_rows(None).await.unwrap()[0].detail, "{}");

        assert_eq!(store.claim_webhook_cursor().await.unwrap(), Some(0));
        // One sender at a time: another node waits for this one's lease to run out.
        let other = store
            .other_node("other", std::time::Duration::from_secs(30))
            .await;
        assert_eq!(other.claim_webhook_cursor().await.unwrap(), None);
        if store.engine() == Engine::Sqlite {
            let after = store.audit_after(1, 2).await.unwrap();
            assert_eq!(after.iter().map(|r| r.id).collect::<Vec<_>>(), [2, 3]);
        } else {
            // Rows are read once they are a few seconds old.
            assert!(store.audit_after(1, 2).await.unwrap().is_empty());
        }
        store.set_webhook_cursor(3).await.unwrap();
        other.set_webhook_cursor(7).await.unwrap();
        assert_eq!(store.claim_webhook_cursor().await.unwrap(), Some(3));

        let update = sqlx::query("UPDATE audit SET event = 'x'")
            .execute(&store.pool)
            .await;
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = sqlx::query("DELETE FROM audit").execute(&store.pool).await;
        assert!(delete.unwrap_err().to_string().contains("append-only"));
    }
}
