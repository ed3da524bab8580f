//! The nodes sharing the database: each one's heartbeat, with its clock's offset to
//! the database's (the series tracker's stable age and every lease compare times
//! written by different nodes), and which process holds each node id: a node id is
//! one running process's at a time ([`Store::claim_node_id`]), since a node sweeps
//! its own spool folder and takes over its own interrupted work at start-up.

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

    /// Takes this node's id for this process ([`Store::instance`]) and records its
    /// heartbeat (started at `started_ms`, with its clock offset), in one statement so
    /// that of two processes starting at once one gets it. Granted when no row holds
    /// the id, when the row is this process's or `predecessor`'s (the process that held
    /// the id on this spool before and has stopped: see `spool::TmpLock`), or when the
    /// row's heartbeat is older than the lease (its holder died or stopped). Otherwise
    /// another live process holds the id: returns its row, unchanged.
    pub async fn claim_node_id(
        &self,
        started_ms: i64,
        predecessor: Option<&str>,
    ) -> Result<Option<NodeRow>, StoreError> {
        let (offset, _) = self.clock_offset().await?;
        let now = now_ms();
        // Both heartbeats on the database's clock: a holder's row is stale once its
        // last heartbeat is older than the lease.
        let stale_before = now - offset - self.lease_ms();
        let claimed = sqlx::query(
            "INSERT INTO nodes (node_id, version, started_ms, seen_ms, clock_offset_ms, instance)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (node_id) DO UPDATE SET version = excluded.version,
                 started_ms = excluded.started_ms, seen_ms = excluded.seen_ms,
                 clock_offset_ms = excluded.clock_offset_ms, instance = excluded.instance
             WHERE nodes.instance = excluded.instance OR nodes.instance = $7
                OR nodes.seen_ms - nodes.clock_offset_ms < $8",
        )
        .bind(&self.node.node_id)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(started_ms)
        .bind(now)
        .bind(offset)
        .bind(self.instance())
        .bind(predecessor)
        .bind(stale_before)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if claimed == 1 {
            return Ok(None);
        }
        self.node_row(&self.node.node_id).await
    }

    /// Records that this node is alive (started at `started_ms`), with its clock
    /// offset; fails, recording nothing, if another live process holds its id
    /// ([`Store::claim_node_id`]).
    pub async fn heartbeat(&self, started_ms: i64) -> Result<(), StoreError> {
        match self.claim_node_id(started_ms, None).await? {
            None => Ok(()),
            Some(holder) => Err(StoreError::NodeIdHeld {
                node_id: holder.node_id,
                seen_ms: holder.seen_ms,
            }),
        }
    }

    /// The heartbeat row of node `node_id`, if it ever sent one.
    pub async fn node_row(&self, node_id: &str) -> Result<Option<NodeRow>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT node_id, version, started_ms, seen_ms, clock_offset_ms FROM nodes
             WHERE node_id = $1",
        )
        .bind(node_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    /// How many other nodes sent a heartbeat within the lease (they may be writing
    /// into a spool this node shares).
    pub async fn other_live_nodes(&self) -> Result<i64, StoreError> {
        let (offset, _) = self.clock_offset().await?;
        Ok(sqlx::query_scalar(
            "SELECT COUNT(*) FROM nodes WHERE node_id <> $1 AND seen_ms - clock_offset_ms >= $2",
        )
        .bind(&self.node.node_id)
        .bind(now_ms() - offset - self.lease_ms())
        .fetch_one(&self.pool)
        .await?)
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::testing;

    /// Ages `node_id`'s heartbeat by more than `lease`, as if its holder had stopped.
    async fn age_heartbeat(store: &Store, node_id: &str, lease: Duration) {
        sqlx::query("UPDATE nodes SET seen_ms = seen_ms - $1 WHERE node_id = $2")
            .bind(lease.as_millis() as i64 + 1_000)
            .bind(node_id)
            .execute(&store.pool)
            .await
            .unwrap();
    }

    /// Two `segnode serve` with one node id on one database: the second is refused
    /// while the first heartbeats, whatever spool each uses; another id is free; the
    /// process that follows a stopped holder on its spool gets the id at once, and the
    /// old holder's heartbeat is then refused.
    #[tokio::test]
    async fn a_node_id_is_one_live_process_at_a_time() {
        let first = testing::store().await;
        assert!(first.claim_node_id(1, None).await.unwrap().is_none());
        first.heartbeat(1).await.unwrap();

        let lease = Duration::from_secs(30);
        let second = first.other_node("test-node", lease).await;
        assert_ne!(second.instance(), first.instance());
        let holder = second.claim_node_id(2, None).await.unwrap();
        let holder = holder.expect("a live holder refuses a second process");
        assert_eq!(
            (holder.node_id.as_str(), holder.started_ms),
            ("test-node", 1)
        );
        assert!(matches!(
            second.heartbeat(2).await,
            Err(StoreError::NodeIdHeld { ref node_id, .. }) if node_id == "test-node"
        ));
        let row = first.node_row("test-node").await.unwrap().unwrap();
        assert_eq!(row.started_ms, 1, "the holder's row is left as it was");

        let other = first.other_node("other-node", lease).await;
        assert!(other.claim_node_id(3, None).await.unwrap().is_none());
        assert_eq!(first.other_live_nodes().await.unwrap(), 1);

        // The first process stopped; the next one on its spool names it as predecessor.
        let next = second
            .claim_node_id(4, Some(first.instance()))
            .await
            .unwrap();
        assert!(
            next.is_none(),
            "a stopped predecessor's id is taken at once"
        );
        let err = first.heartbeat(5).await.unwrap_err();
        assert!(err.to_string().contains("\"test-node\""), "{err}");
        let row = first.node_row("test-node").await.unwrap().unwrap();
        assert_eq!(row.started_ms, 4);
    }

    /// A holder that stops heartbeating (killed, on a spool of its own) frees its id
    /// once its last heartbeat is older than the lease; it no longer counts as live.
    #[tokio::test]
    async fn a_node_id_is_free_once_its_holders_heartbeat_is_older_than_the_lease() {
        let store = testing::store().await;
        let lease = Duration::from_secs(30);
        let dead = store.other_node("n1", lease).await;
        let next = store.other_node("n1", lease).await;
        assert!(dead.claim_node_id(1, None).await.unwrap().is_none());
        assert!(next.claim_node_id(2, None).await.unwrap().is_some());
        assert_eq!(store.other_live_nodes().await.unwrap(), 1);

        age_heartbeat(&store, "n1", lease).await;
        assert_eq!(store.other_live_nodes().await.unwrap(), 0);
        assert!(next.claim_node_id(2, None).await.unwrap().is_none());
        assert!(
            dead.claim_node_id(3, None).await.unwrap().is_some(),
            "the id is now the new holder's"
        );
    }
}
