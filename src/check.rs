//! What `segnode check` and the dashboard's health page find: the spool (free space, and
//! that write, fsync, rename and directory fsync work), the database (engine and
//! version, this node's clock against the database's, the spread of the live nodes'
//! clocks) and the settings that are insecure. The rules are pure functions, unit
//! tested here; [`node_checks`] runs them against a store and a spool, and the command
//! line adds what only a node that is not running can check (the model files, whether
//! the listen addresses are free).

use serde::Serialize;

use crate::config::Config;
use crate::spool::Spool;
use crate::store::{Engine, NodeRow, Store};

/// PostgreSQL releases older than this lack what the store relies on.
pub const MIN_POSTGRES_VERSION: i64 = 120_000;
/// The clock difference between nodes (or a node and the database) that stable ages
/// and leases tolerate.
pub const MAX_CLOCK_SKEW_MS: i64 = 2_000;
/// Nodes seen within this long count as live for the clock comparison.
const RECENT_NODE_MS: i64 = 3_600_000;

/// One thing a check looked at: what, and what it found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub subject: String,
    pub text: String,
}

/// What the checks found: facts, problems (each one would stop or harm the node) and
/// insecure settings (allowed, but said).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckReport {
    pub findings: Vec<Finding>,
    pub problems: Vec<String>,
    pub insecure: Vec<String>,
}

impl CheckReport {
    pub fn found(&mut self, subject: &str, text: impl Into<String>) {
        self.findings.push(Finding {
            subject: subject.to_string(),
            text: text.into(),
        });
    }

    pub fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    pub fn is_healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The problem with a PostgreSQL `server_version_num`, if it is too old.
pub fn postgres_version_problem(version_num: i64) -> Option<String> {
    (version_num < MIN_POSTGRES_VERSION).then(|| {
        format!("PostgreSQL {version_num} is older than {MIN_POSTGRES_VERSION} (12): not supported")
    })
}

/// The problem with this node's clock `offset_ms` against the database's, measured
/// over a query that took `round_trip_ms`, if it is off by more than leases tolerate.
pub fn clock_offset_problem(offset_ms: i64, round_trip_ms: i64) -> Option<String> {
    (offset_ms.abs() > MAX_CLOCK_SKEW_MS + round_trip_ms).then(|| {
        format!(
            "this machine's clock is {offset_ms} ms off the database's: stable ages and leases \
             need the nodes' clocks within {MAX_CLOCK_SKEW_MS} ms (run NTP)"
        )
    })
}

/// The problem with the clocks of the nodes seen in the last hour (at `now_ms`), if
/// they differ by more than leases tolerate.
pub fn node_clocks_problem(nodes: &[NodeRow], now_ms: i64) -> Option<String> {
    let offsets = nodes
        .iter()
        .filter(|n| now_ms - n.seen_ms < RECENT_NODE_MS)
        .map(|n| n.clock_offset_ms);
    let (min, max) = (offsets.clone().min()?, offsets.max()?);
    (max - min > MAX_CLOCK_SKEW_MS).then(|| {
        format!(
            "the nodes' clocks differ by {} ms (more than {MAX_CLOCK_SKEW_MS} ms): run NTP on every node",
            max - min
        )
    })
}

/// The problem with the spool's free space, if C-STOREs would be refused.
pub fn free_space_problem(free_bytes: u64, min_free_bytes: u64) -> Option<String> {
    (free_bytes < min_free_bytes).then(|| {
        format!(
            "spool has {} MiB free, below min_free_disk_mb ({} MiB): C-STORE would be refused",
            free_bytes / (1024 * 1024),
            min_free_bytes / (1024 * 1024)
        )
    })
}

/// C-MOVE sources whose AE title may not associate with the node: the PACS sends what
/// it is asked for on an association of its own, which the node would refuse.
pub fn move_sources_problems(config: &Config) -> Vec<String> {
    use crate::config::Retrieve;
    use crate::config::SourceTransport;
    if config.dicom.allow_any_calling_ae {
        return Vec::new();
    }
    config
        .sources
        .iter()
        .filter_map(|s| match &s.transport {
            SourceTransport::Dimse {
                peer,
                retrieve: Retrieve::Move,
                ..
            } if !config
                .dicom
                .allowed_peers
                .iter()
                .any(|p| p.ae_title == peer.ae_title) =>
            {
                Some(format!(
                    "source {:?} retrieves by C-MOVE, but its AE title {} is not among [[dicom.allowed_peers]]: the node would refuse the instances it sends",
                    s.name, peer.ae_title
                ))
            }
            _ => None,
        })
        .collect()
}

/// The spool, the database and the insecure settings of `config`, checked against an
/// open `store` and `spool`.
pub async fn node_checks(config: &Config, store: &Store, spool: &Spool) -> CheckReport {
    let mut report = CheckReport::default();
    check_spool(config, spool, &mut report);
    check_database(config, store, &mut report).await;
    for problem in move_sources_problems(config) {
        report.problem(problem);
    }
    report.insecure = crate::security::insecure_settings(config);
    report
}

fn check_spool(config: &Config, spool: &Spool, report: &mut CheckReport) {
    let dir = config.spool_dir().display().to_string();
    let probed = spool
        .free_bytes()
        .and_then(|free| Ok((free, spool.probe()?)));
    match probed {
        Err(e) => report.problem(format!("spool {dir}: {e}")),
        Ok((free, kind)) => match free_space_problem(free, config.dicom.min_free_disk_bytes) {
            Some(p) => report.problem(p),
            None => report.found(
                "spool",
                format!(
                    "{dir} ({} MiB free, {kind}): write, fsync, rename and directory fsync work",
                    free / (1024 * 1024)
                ),
            ),
        },
    }
}

async fn check_database(config: &Config, store: &Store, report: &mut CheckReport) {
    let version = match store.database_version().await {
        Ok(v) => v,
        Err(e) => return report.problem(format!("database {}: {e:#}", config.database)),
    };
    report.found(
        "database",
        format!(
            "{} ({version}; migrations applied; node id {}, lease {} s)",
            config.database,
            config.membership.node_id,
            config.membership.lease.as_secs_f64()
        ),
    );
    if store.engine() == Engine::Postgres {
        match store.postgres_version_number().await {
            Ok(n) => report.problems.extend(postgres_version_problem(n)),
            Err(e) => report.problem(format!("database version: {e:#}")),
        }
    }
    match store.clock_offset().await {
        Ok((offset, round_trip)) => match clock_offset_problem(offset, round_trip) {
            Some(p) => report.problem(p),
            None => report.found(
                "clock",
                format!("{offset} ms off the database's (round trip {round_trip} ms)"),
            ),
        },
        Err(e) => report.problem(format!("database clock: {e:#}")),
    }
    let now = crate::store::now_ms();
    match store.nodes().await {
        Ok(nodes) => {
            for n in nodes.iter().filter(|n| now - n.seen_ms < RECENT_NODE_MS) {
                report.found(
                    &format!("node {}", n.node_id),
                    format!(
                        "version {}, seen {} s ago, clock {} ms off the database's",
                        n.version,
                        (now - n.seen_ms) / 1000,
                        n.clock_offset_ms
                    ),
                );
            }
            report.problems.extend(node_clocks_problem(&nodes, now));
        }
        Err(e) => report.problem(format!("nodes: {e:#}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, seen_ms: i64, clock_offset_ms: i64) -> NodeRow {
        NodeRow {
            node_id: id.into(),
            version: "0".into(),
            started_ms: 0,
            seen_ms,
            clock_offset_ms,
        }
    }

    #[test]
    fn a_move_source_the_node_would_refuse_is_a_problem() {
        let base = "[node]\nae_title = \"SEGNODE\"\ndata_dir = \"/tmp/x\"\n[dicom]\nlisten = \"127.0.0.1:0\"\n\
                    [[dicom.allowed_peers]]\nae_title = \"PACS\"\n";
        let source = |ae: &str, retrieve: &str| {
            format!(
                "[[sources]]\nname = \"p\"\nae_title = \"{ae}\"\nhost = \"h\"\nport = 104\nretrieve = \"{retrieve}\"\n"
            )
        };
        let problems = |tail: String| {
            let config = Config::from_toml(&format!("{base}{tail}"), &Default::default()).unwrap();
            move_sources_problems(&config)
        };
        assert!(problems(source("PACS", "c-move")).is_empty());
        assert!(problems(source("OTHER", "c-get")).is_empty());
        let found = problems(source("OTHER", "c-move"));
        assert_eq!(found.len(), 1);
        assert!(
            found[0].contains("OTHER is not among [[dicom.allowed_peers]]"),
            "{found:?}"
        );
    }

    #[test]
    fn postgres_before_12_is_refused() {
        assert!(postgres_version_problem(110_022).unwrap().contains("(12)"));
        assert_eq!(postgres_version_problem(120_000), None);
        assert_eq!(postgres_version_problem(150_014), None);
    }

    #[test]
    fn a_clock_off_by_more_than_the_skew_plus_the_round_trip_is_a_problem() {
        assert_eq!(clock_offset_problem(2_000, 0), None);
        assert_eq!(clock_offset_problem(-2_400, 500), None);
        assert!(clock_offset_problem(-2_600, 500).unwrap().contains("NTP"));
    }

    #[test]
    fn only_live_nodes_clocks_are_compared() {
        let now = 10 * RECENT_NODE_MS;
        let live = [node("a", now - 1_000, -900), node("b", now, 1_000)];
        assert_eq!(node_clocks_problem(&live, now), None);
        let apart = [node("a", now, -1_500), node("b", now, 1_000)];
        assert!(
            node_clocks_problem(&apart, now)
                .unwrap()
                .contains("2500 ms")
        );
        // A node gone for over an hour does not count.
        let gone = [node("a", now - RECENT_NODE_MS, -9_000), node("b", now, 0)];
        assert_eq!(node_clocks_problem(&gone, now), None);
        assert_eq!(node_clocks_problem(&[], now), None);
    }

    #[test]
    fn free_space_below_the_minimum_is_a_problem() {
        let mib = 1024 * 1024;
        assert_eq!(free_space_problem(600 * mib, 500 * mib), None);
        assert!(
            free_space_problem(400 * mib, 500 * mib)
                .unwrap()
                .contains("400 MiB free")
        );
    }
}
