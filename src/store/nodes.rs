//! The nodes sharing the database: each one's heartbeat, with its clock's offset to
//! the database's (the series tracker's stable age and every lease compare times
//! written by different nodes).

use serde::Serialize;

use super::{Engine, Store, StoreError, now_ms};

/// A node as its last heartbeat left it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NodeRow {
    pub node_id: String,
    pub version: String,
    pub started_ms: i64,
    pub seen_ms: i64,
    /// The node's clock minus the database's (0 on SQLite).
    pub clock_offset_ms: i64,
}

impl Store {
    /// The database's clock against this node's: (node minus database, round trip),
    /// in milliseconds. SQLite runs on this machine: no offset.
    pub async fn clock_offset(&self) -> Result<(i64, i64), StoreError> {
        if self.engine == Engine::Sqlite {
            return Ok((0, 0));
        }
        let before = now_ms();
        let database: i64 = sqlx::query_scalar(
            "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        )
        .fetch_one(&self.pool)
        .await?;
        let after = now_ms();
        Ok(((before + after) / 2 - database, after - before))
    }

    /// Records that this node is alive (started at `started_ms`), with its clock offset.
    pub async fn heartbeat(&self, started_ms: i64) -> Result<(), StoreError> {
        let (offset, _) = self.clock_offset().await?;
        sqlx::query(
            "INSERT INTO nodes (node_id, version, started_ms, seen_ms, clock_offset_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (node_id) DO UPDATE SET version = excluded.version,
                 started_ms = excluded.started_ms, seen_ms = excluded.seen_ms,
                 clock_offset_ms = excluded.clock_offset_ms",
        )
        .bind(&self.node.node_id)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(started_ms)
        .bind(now_ms())
        .bind(offset)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Every node that ever sent a heartbeat, by id.
    pub async fn nodes(&self) -> Result<Vec<NodeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT node_id, version, started_ms, seen_ms, clock_offset_ms FROM nodes ORDER BY node_id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// PostgreSQL's `server_version_num` (e.g. 150014 for 15.14).
    pub async fn postgres_version_number(&self) -> Result<i64, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT CAST(current_setting('server_version_num') AS BIGINT)")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The database engine's version, as it reports it.
    pub async fn database_version(&self) -> Result<String, StoreError> {
        Ok(sqlx::query_scalar(
            self.dialect("SELECT 'SQLite ' || sqlite_version()", "SELECT version()"),
        )
        .fetch_one(&self.pool)
        .await?)
    }
}
