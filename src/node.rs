//! Wires the stages into a running node: opens the store and the spool, recovers
//! ([`crate::recovery`]: takes its node id, sweeps what a crash left, resumes
//! interrupted jobs), loads the model (one cascade per worker; a
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
use crate::recovery::{self, RecoveryError};
use crate::requests::{self, Requests};
use crate::series;
use crate::spool::{self, Spool, TmpLock};
use crate::store::{Store, StoreError};
use tokio::sync::Notify;

/// How long shutdown waits for associations and workers to finish.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

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
    #[error("destination {name:?}: {reason}")]
    Destination { name: String, reason: String },
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
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error("cannot listen for DICOM on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
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
    let tmp_lock = recovery::claim_node_id(&store, &spool).await?;
    recovery::recover(&store, &spool, &tmp_lock).await?;
    // The model is checked (files, checksums, session shapes) before the node listens:
    // a broken model folder stops start-up with the file named.
    let (cascades, model_report) = open_models(&config).await?;
    let Listening {
        dicom: listeners,
        dicom_addr,
        dicom_tls_addr,
        http,
        http_addr,
    } = listen(&config).await?;
    // Every destination's TLS files are read once, now: a wrong path stops start-up.
    let connectors = config
        .destinations
        .iter()
        .filter_map(|d| Some((d.name.clone(), d.dicom_tls()?)))
        .map(|(name, tls)| Ok((name, crate::tls::connector(tls)?)))
        .collect::<Result<_, NodeError>>()?;
    // And every DICOMweb destination's CA file.
    let web_clients = config
        .destinations
        .iter()
        .filter_map(|d| match &d.transport {
            crate::config::Transport::Dicomweb(web) => Some((d, web)),
            crate::config::Transport::Dimse { .. } => None,
        })
        .map(|(d, web)| {
            let client = crate::deliver::stow::http_client(web.ca_file.as_deref(), d.timeout)
                .map_err(|reason| NodeError::Destination {
                    name: d.name.clone(),
                    reason,
                })?;
            Ok((d.name.clone(), client))
        })
        .collect::<Result<_, NodeError>>()?;
    let token = crate::api::api_token(&config.http).map_err(|source| NodeError::Token {
        path: config.http.token_file.display().to_string(),
        source,
    })?;
    tracing::info!(token = token.is_some(), "API token required");

    for problem in crate::check::move_sources_problems(&config) {
        tracing::warn!(%problem, "requests from this source will fail");
    }
    let tasks = TaskTracker::new();
    let config = Arc::new(config);
    let receiver = Arc::new(Receiver {
        config: config.clone(),
        store: store.clone(),
        spool: spool.clone(),
    });
    tasks.spawn(receive::serve(
        listeners,
        receiver.clone(),
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
        web_clients,
    });
    tasks.spawn(outbox::run(outbox, shutdown.clone()));
    spawn_housekeeping(&config, &store, &pipeline.spool, &tasks, &shutdown);
    let request_wake = Arc::new(Notify::new());
    tasks.spawn(requests::run(
        Arc::new(Requests {
            config: config.clone(),
            store: store.clone(),
            receiver: receiver.clone(),
            model_sha256: model_report
                .iter()
                .flat_map(|r| r.files.iter().map(|(_, sha)| sha.clone()))
                .collect(),
            wake: request_wake.clone(),
        }),
        shutdown.clone(),
    ));
    let api = api::router(Arc::new(ApiState {
        store: store.clone(),
        config: config.clone(),
        token,
        model: model_report,
        receiver: receiver.clone(),
        request_wake,
    }));
    serve_api(&config, http, http_addr, api, &tasks, &shutdown)?;
    spawn_workers(&config, &store, &pipeline, cascades, &tasks, &shutdown);
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

/// The job workers (one per cascade), the lease watcher and the series tracker.
fn spawn_workers(
    config: &Config,
    store: &Store,
    pipeline: &Arc<Pipeline>,
    cascades: Vec<Option<Cascade>>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
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
        config.stat.clone(),
        shutdown.clone(),
        move |_job_id| wake.notify_one(),
    ));
}

/// The retention purge and the webhook sender, when configured.
fn spawn_housekeeping(
    config: &Config,
    store: &Store,
    spool: &Spool,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) {
    if let Some(after) = config.purge_after {
        // Check often enough for short retention periods, at most once a minute.
        let interval = (after / 4).clamp(Duration::from_millis(200), Duration::from_secs(60));
        tasks.spawn(spool::purge_loop(
            store.clone(),
            spool.clone(),
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
}

/// The listeners a node serves on, bound.
struct Listening {
    dicom: Vec<receive::Listener>,
    dicom_addr: SocketAddr,
    dicom_tls_addr: Option<SocketAddr>,
    http: TcpListener,
    http_addr: SocketAddr,
}

/// Binds the DICOM listener, the DICOM TLS one when configured, and the HTTP one.
async fn listen(config: &Config) -> Result<Listening, NodeError> {
    let (listener, dicom_addr) = bind(config.dicom.listen).await?;
    tracing::info!(%dicom_addr, ae_title = %config.ae_title, "DICOM SCP listening");
    let mut dicom = vec![receive::Listener {
        tcp: listener,
        tls: None,
    }];
    let mut dicom_tls_addr = None;
    if let Some(tls) = &config.dicom.tls {
        let acceptor = crate::tls::acceptor(tls)?;
        let (listener, addr) = bind(tls.listen).await?;
        tracing::info!(%addr, client_certificates = tls.ca_file.is_some(), "DICOM TLS SCP listening");
        dicom.push(receive::Listener {
            tcp: listener,
            tls: Some(acceptor),
        });
        dicom_tls_addr = Some(addr);
    }
    let (http, http_addr) = bind(config.http.listen).await?;
    tracing::info!(%http_addr, https = config.http.tls.is_some(), "HTTP API listening");
    Ok(Listening {
        dicom,
        dicom_addr,
        dicom_tls_addr,
        http,
        http_addr,
    })
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
                let serve =
                    axum::serve(http, api.into_make_service_with_connect_info::<api::Peer>())
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
                let serve = axum::serve(
                    listener,
                    api.into_make_service_with_connect_info::<api::Peer>(),
                )
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
