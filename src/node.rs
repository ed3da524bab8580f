//! Wires the stages into a running node: opens the store and the spool, takes its node
//! id (refusing to start while another live process holds it), sweeps what a crash
//! left, resumes interrupted jobs, loads the model (one cascade per worker; a
//! broken model stops start-up), binds the DICOM and HTTP listeners and starts the
//! receiver, the series tracker, the job workers, the outbox, the HTTP API, and when
//! configured the webhook sender and the retention purge. Everything stops on one
//! cancellation token, with a deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{self, ApiState};
use crate::cascade::{Cascade, ModelError, ModelReport, open_cascades};
use crate::config::Config;
use crate::deliver::outbox::{self, Outbox};
use crate::deliver::webhooks;
use crate::jobs::{
    self,
    pipeline::{self, Pipeline},
};
use crate::receive::{self, Receiver};
use crate::series;
use crate::spool::{self, Spool, TmpLock};
use crate::store::{Engine, NodeRow, Store, StoreError, format_ms, now_ms};
use tokio::sync::Notify;

/// How long shutdown waits for associations and workers to finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);
/// Empty spool files kept ready for incoming C-STOREs (a few per busy association).
const READY_SPOOL_FILES: usize = 16;
/// How old an unreferenced object on a shared spool must be before start-up removes it.
const SHARED_SWEEP_MIN_AGE: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data directory {path}")]
    DataDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("model not ready")]
    Model(#[from] ModelError),
    #[error("cannot read or create the API token file {path}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("DICOM TLS listener")]
    Tls(#[from] crate::tls::TlsError),
    #[error("cannot prepare the spool at {path}")]
    Spool {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen for DICOM on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "node id {node_id:?} is in use by another segnode process on this spool ({lock} is \
         locked; its last heartbeat: {last_seen}): stop that node, or give this one another \
         node_id (node.node_id or SEGNODE_NODE_ID)"
    )]
    NodeIdLocked {
        node_id: String,
        lock: String,
        last_seen: String,
    },
    #[error(
        "node id {node_id:?} is in use by another live node (its last heartbeat: {last_seen}, \
         within the {lease_s} s lease): if that node has stopped, wait {wait_s} s; otherwise \
         give this one another node_id (node.node_id or SEGNODE_NODE_ID)"
    )]
    NodeIdHeld {
        node_id: String,
        last_seen: String,
        lease_s: u64,
        wait_s: u64,
    },
}

/// When a node was last seen, for a person: "3.2 s ago (2026-05-01T10:00:00Z)".
fn last_seen(row: Option<&NodeRow>) -> String {
    match row {
        None => "none yet".into(),
        Some(r) => format!(
            "{:.1} s ago ({})",
            (now_ms() - r.seen_ms).max(0) as f64 / 1000.0,
            format_ms(r.seen_ms)
        ),
    }
}

/// A started node.
pub struct Node {
    pub dicom_addr: SocketAddr,
    /// The DICOM TLS listener's address, when configured.
    pub dicom_tls_addr: Option<SocketAddr>,
    pub http_addr: SocketAddr,
    pub store: Store,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// This process's hold on its spool folder, released when the node has stopped.
    _tmp_lock: TmpLock,
}

/// Binds a listener; returns it with the address it got (port 0 picks one).
async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), NodeError> {
    let listen = |source| NodeError::Listen { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(listen)?;
    let local = listener.local_addr().map_err(listen)?;
    Ok((listener, local))
}

/// Starts the node; it runs until `shutdown` is cancelled, then [`Node::wait`] returns.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Node, NodeError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| NodeError::DataDir {
        path: config.data_dir.display().to_string(),
        source,
    })?;
    let store = Store::open(&config.database, &config.membership).await?;
    let spool_dir = config.spool_dir();
    let spool_error = |source| NodeError::Spool {
        path: spool_dir.display().to_string(),
        source,
    };
    let spool = Spool::open(&spool_dir, &config.membership.node_id).map_err(spool_error)?;
    let tmp_lock = claim_node_id(&store, &spool, &spool_error).await?;
    recover(&store, &spool, &tmp_lock, spool_error).await?;
    // The model is checked (files, checksums, session shapes) before the node listens:
    // a broken model folder stops start-up with the file named.
    let (cascades, model_report) = open_models(&config).await?;
    let (listener, dicom_addr) = bind(config.dicom.listen).await?;
    tracing::info!(%dicom_addr, ae_title = %config.ae_title, "DICOM SCP listening");
    let mut listeners = vec![receive::Listener {
        tcp: listener,
        tls: None,
    }];
    // Every destination's TLS files are read once, now: a wrong path stops start-up.
    let connectors = config
        .destinations
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.tls.as_ref()?)))
        .map(|(name, tls)| Ok((name, crate::tls::connector(tls)?)))
        .collect::<Result<_, NodeError>>()?;
    let mut dicom_tls_addr = None;
    if let Some(tls) = &config.dicom.tls {
        let acceptor = crate::tls::acceptor(tls)?;
        let (listener, addr) = bind(tls.listen).await?;
        tracing::info!(%addr, client_certificates = tls.ca_file.is_some(), "DICOM TLS SCP listening");
        listeners.push(receive::Listener {
            tcp: listener,
            tls: Some(acceptor),
        });
        dicom_tls_addr = Some(addr);
    }
    let token = crate::api::api_token(&config.http).map_err(|source| NodeError::Token {
        path: config.http.token_file.display().to_string(),
        source,
    })?;
    let (http, http_addr) = bind(config.http.listen).await?;
    tracing::info!(%http_addr, token = token.is_some(), https = config.http.tls.is_some(), "HTTP API listening");

    let tasks = TaskTracker::new();
    let config = Arc::new(config);
    let receiver = Arc::new(Receiver {
        config: config.clone(),
        store: store.clone(),
        spool: spool.clone(),
    });
    tasks.spawn(receive::serve(
        listeners,
        receiver,
        shutdown.clone(),
        tasks.clone(),
    ));
    let pipeline = Arc::new(Pipeline {
        config: config.clone(),
        store: store.clone(),
        spool,
        wake: Arc::new(Notify::new()),
        deliver: Arc::new(Notify::new()),
    });
    let outbox = Arc::new(Outbox {
        config: config.clone(),
        store: store.clone(),
        spool: pipeline.spool.clone(),
        wake: pipeline.deliver.clone(),
        connectors,
    });
    tasks.spawn(outbox::run(outbox, shutdown.clone()));
    if let Some(after) = config.purge_after {
        // Check often enough for short retention periods, at most once a minute.
        let interval = (after / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tasks.spawn(spool::purge_loop(
            store.clone(),
            pipeline.spool.clone(),
            after,
            interval,
            shutdown.clone(),
        ));
    }
    if !config.webhooks.is_empty() {
        tasks.spawn(webhooks::run(
            store.clone(),
            Arc::new(config.webhooks.clone()),
            config.delivery.max_attempts,
            shutdown.clone(),
        ));
    }
    let api = api::router(Arc::new(ApiState {
        store: store.clone(),
        config: config.clone(),
        token,
        model: model_report,
    }));
    serve_api(&config, http, http_addr, api, &tasks, &shutdown)?;
    for (id, cascade) in cascades.into_iter().enumerate() {
        tasks.spawn(pipeline::worker(
            pipeline.clone(),
            id,
            cascade,
            shutdown.clone(),
        ));
    }
    let wake = pipeline.wake.clone();
    tasks.spawn(jobs::watch_leases(
        store.clone(),
        move || wake.notify_one(),
        shutdown.clone(),
    ));
    let wake = pipeline.wake.clone();
    tasks.spawn(series::track(
        store.clone(),
        config.stable_age,
        config.eligibility.clone(),
        shutdown.clone(),
        move |_job_id| wake.notify_one(),
    ));
    Ok(Node {
        dicom_addr,
        dicom_tls_addr,
        http_addr,
        store,
        shutdown,
        tasks,
        _tmp_lock: tmp_lock,
    })
}

/// Takes this node's id for this process, before anything touches the spool: its
/// folder on the spool (a second process with the same id on this spool finds it
/// locked), then its row among the nodes (a process with the same id on another spool
/// holds it while it heartbeats). The row of the process that held the folder last on
/// this machine is taken over at once: that process has stopped (a restart after a
/// crash waits for nothing); one that ran elsewhere frees the id after its lease.
async fn claim_node_id(
    store: &Store,
    spool: &Spool,
    spool_error: impl Fn(std::io::Error) -> NodeError,
) -> Result<TmpLock, NodeError> {
    let node_id = &store.node().node_id;
    let Some(lock) = spool.lock_tmp(store.instance()).map_err(&spool_error)? else {
        let holder = store.node_row(node_id).await?;
        return Err(NodeError::NodeIdLocked {
            node_id: node_id.clone(),
            lock: spool.tmp_lock_path().display().to_string(),
            last_seen: last_seen(holder.as_ref()),
        });
    };
    if let Some(holder) = store.claim_node_id(now_ms(), lock.previous()).await? {
        let lease_ms = store.node().lease.as_millis() as i64;
        let wait_ms = (holder.seen_ms + lease_ms - now_ms()).clamp(0, lease_ms);
        return Err(NodeError::NodeIdHeld {
            node_id: node_id.clone(),
            last_seen: last_seen(Some(&holder)),
            lease_s: store.node().lease.as_secs(),
            wait_s: (wait_ms as u64).div_ceil(1000),
        });
    }
    Ok(lock)
}

/// Start-up recovery after any stop: rows whose file never became durable are
/// dropped, files no row references are swept, empty spool files are readied and
/// interrupted jobs resumed (or failed after too many starts).
async fn recover(
    store: &Store,
    spool: &Spool,
    tmp_lock: &TmpLock,
    spool_error: impl Fn(std::io::Error) -> NodeError,
) -> Result<(), NodeError> {
    let dropped = drop_unacknowledged(store, spool).await?;
    if dropped > 0 {
        tracing::warn!(
            instances = dropped,
            "dropped instance records whose file was not durable when the node stopped (never acknowledged)"
        );
    }
    // On a spool other nodes share, their objects may be moments from being recorded:
    // on PostgreSQL, or where another node on the same SQLite file is alive.
    let shared = store.engine() == Engine::Postgres || store.other_live_nodes().await? > 0;
    let min_age = if shared {
        SHARED_SWEEP_MIN_AGE
    } else {
        Duration::ZERO
    };
    let swept = spool
        .sweep(tmp_lock, &store.referenced_files().await?, min_age)
        .map_err(&spool_error)?;
    if swept > 0 {
        tracing::info!(
            files = swept,
            "removed unacknowledged files left by an earlier run"
        );
    }
    spool.keep_ready(READY_SPOOL_FILES).map_err(&spool_error)?;
    let resumed = jobs::resume_interrupted(store, jobs::MAX_STARTS, true).await?;
    if resumed.requeued > 0 {
        tracing::info!(jobs = resumed.requeued, "interrupted jobs queued again");
    }
    if resumed.failed > 0 {
        tracing::warn!(
            jobs = resumed.failed,
            "jobs interrupted too often ended failed"
        );
    }
    Ok(())
}

/// One cascade per worker (`None` without a model) and the model's report for the API.
async fn open_models(
    config: &Config,
) -> Result<(Vec<Option<Cascade>>, Option<ModelReport>), NodeError> {
    let mut model_report = None;
    let cascades = match config.model.clone() {
        None => {
            tracing::warn!("no model configured: jobs assemble and check volumes only");
            (0..config.workers).map(|_| None).collect()
        }
        Some(m) => {
            let workers = config.workers;
            let (cascades, report) =
                tokio::task::spawn_blocking(move || open_cascades(&m, workers))
                    .await
                    .expect("model loading does not panic")?;
            tracing::info!(
                model = %report.model,
                version = %report.model_version,
                onnxruntime = %report.onnxruntime_library,
                provider = ?report.execution_provider,
                "model ready"
            );
            model_report = Some(report);
            cascades.into_iter().map(Some).collect()
        }
    };
    Ok((cascades, model_report))
}

/// Serves the HTTP API on `http`, over TLS when configured, until `shutdown`.
fn serve_api(
    config: &Config,
    http: TcpListener,
    http_addr: SocketAddr,
    api: axum::Router,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> Result<(), NodeError> {
    let api_shutdown = shutdown.clone();
    match &config.http.tls {
        None => {
            tasks.spawn(async move {
                let serve = axum::serve(http, api)
                    .with_graceful_shutdown(async move { api_shutdown.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTP API stopped");
                }
            });
        }
        Some(tls) => {
            let listener = crate::tls::HttpsListener::spawn(
                http,
                crate::tls::https_acceptor(tls)?,
                shutdown.clone(),
            )
            .map_err(|source| NodeError::Listen {
                addr: http_addr,
                source,
            })?;
            tasks.spawn(async move {
                let serve = axum::serve(listener, api)
                    .with_graceful_shutdown(async move { api_shutdown.cancelled().await });
                if let Err(e) = serve.await {
                    tracing::error!(error = %e, "HTTPS API stopped");
                }
            });
        }
    }
    Ok(())
}

impl Node {
    /// Waits for shutdown, then for the tasks (bounded by a deadline), then closes the
    /// database.
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed with tasks still running");
        }
        self.store.close().await;
        tracing::info!("node stopped");
    }
}

/// Instance rows committed while their file was still being made durable when the node
/// stopped (see `receive`): their C-STORE was never acknowledged. Each candidate's file
/// is checked against its recorded SHA-256; rows whose file is missing or differs are
/// dropped (and audited), then their files removed (they are this node's own: a
/// shared spool's sweep would leave a recent one alone).
async fn drop_unacknowledged(store: &Store, spool: &Spool) -> Result<usize, NodeError> {
    use rayon::prelude::*;
    let candidates = store.recent_instances().await?;
    let checker = spool.clone();
    let bad: Vec<(i64, String)> = tokio::task::spawn_blocking(move || {
        candidates
            .par_iter()
            .filter(|r| !checker.holds(&r.file_name, &r.sha256))
            .map(|r| (r.id, r.file_name.clone()))
            .collect()
    })
    .await
    .expect("checksums do not panic");
    if !bad.is_empty() {
        let ids: Vec<i64> = bad.iter().map(|(id, _)| *id).collect();
        store.drop_unacknowledged(&ids).await?;
        for (_, file) in &bad {
            if let Err(e) = spool.remove(file) {
                tracing::warn!(error = %e, "cannot remove the file of a dropped instance record");
            }
        }
    }
    Ok(bad.len())
}
