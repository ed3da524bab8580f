//! What the node holds, as DICOMweb serves it: every source instance still in the spool
//! (retention removes a purged series' rows) and every result object, by study.

use super::{Store, StoreError};

/// One object the node holds.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct HeldObject {
    pub study_uid: String,
    /// A source instance's series (a result's is in its file only).
    pub series_uid: Option<String>,
    pub sop_instance_uid: String,
    /// Its spool file.
    pub file: String,
    /// `source`, or the result's kind (`seg`, `sr`, `key_images`).
    pub kind: String,
}

const SOURCES: &str = "SELECT s.study_uid, s.series_uid, i.sop_instance_uid, i.file_name AS file,
        'source' AS kind FROM instances i JOIN series s ON s.id = i.series_id";
const RESULTS: &str = "SELECT s.study_uid, CAST(NULL AS TEXT) AS series_uid, r.sop_instance_uid,
        r.file, r.kind FROM results r JOIN jobs j ON j.id = r.job_id
        JOIN series s ON s.id = j.series_id";

impl Store {
    /// The objects held, of one study or of all, in no particular order.
    pub async fn held_objects(&self, study: Option<&str>) -> Result<Vec<HeldObject>, StoreError> {
        let rows = match study {
            Some(study) => {
                let sql = format!(
                    "{SOURCES} WHERE s.study_uid = $1 UNION ALL {RESULTS} WHERE s.study_uid = $2"
                );
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .bind(study)
                    .bind(study)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!("{SOURCES} UNION ALL {RESULTS}");
                sqlx::query_as(sqlx::AssertSqlSafe(sql))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        Ok(rows)
    }
}
