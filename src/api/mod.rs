//! The HTTP API (axum) for worklists and auditors: health, Prometheus metrics, jobs,
//! studies, the audit trail (JSON and CSV) and operator retries; and the dashboard
//! ([`dashboard`]) for people, on the same listener and token. Bound to loopback by
//! default; a bearer token is always required (the configured file's, or one the node
//! creates in its data directory), unless the configuration explicitly allows
//! unauthenticated requests on a loopback listener, addressed to loopback. Errors are
//! `{code, message}`; bad parameters are 400, internal errors a logged, generic 500.
//! Goes through `store` and reads job summaries as `jobs` types them.

mod dashboard;
mod dicomweb;
mod requests;
mod viewer;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use crate::config::{Config, HttpConfig};
use crate::jobs::summary::JobView;
use crate::store::{
    AUDIT_FIELDS, AuditFilter, AuditRow, JobId, JobQuery, JobRow, JobState, ResultRow,
    ReviewDecision, Store, StoreError, format_ms, parse_time,
};

/// What the handlers share.
pub struct ApiState {
    pub store: Store,
    pub config: Arc<Config>,
    /// The bearer token required, if any.
    pub token: Option<String>,
    /// What the model check found at start-up (None: no model configured).
    pub model: Option<crate::cascade::ModelReport>,
    /// Keeps what STOW-RS brings, as the DICOM listener keeps a C-STORE; its spool
    /// holds what DICOMweb serves.
    pub receiver: Arc<crate::Receiver>,
    /// Wakes the request worker when a request is queued.
    pub request_wake: Arc<tokio::sync::Notify>,
}

/// An API error: status, a stable code, a message.
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: message.into(),
        }
    }

    fn internal(message: impl Into<String>) -> Self {
        tracing::error!(error = %message.into(), "API request failed");
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: "internal",
            message: "internal error".into(),
        }
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: "not_found",
            message: message.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NoSuchJob(id) => return Self::not_found(format!("no job {id}")),
            StoreError::Transition(t) => {
                return Self {
                    status: StatusCode::CONFLICT,
                    code: "conflict",
                    message: format!("the job is {}: it cannot become {}", t.from, t.to),
                };
            }
            _ => {}
        }
        Self::internal(format!("{:#}", anyhow::Error::from(e)))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "code": self.code, "message": self.message })),
        )
            .into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

/// The address a request came from, for the audit trail (the router is served with it
/// as connect info, over HTTP and HTTPS).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::tls::HttpsListener>,
    > for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::HttpsListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The router; tests drive it with `oneshot`.
pub fn router(state: Arc<ApiState>) -> Router {
    let protected = Router::new()
        .route("/ui/", get(dashboard::jobs))
        .route("/ui/jobs/{id}", get(dashboard::job))
        .route("/ui/jobs/{id}/key/{n}", get(dashboard::key_image))
        .route("/ui/jobs/{id}/review", post(dashboard::review))
        .route("/ui/audit", get(dashboard::audit))
        .route("/ui/health", get(dashboard::health))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/api/jobs", get(list_jobs))
        .route("/api/jobs/{id}", get(job))
        .route("/api/jobs/{id}/retry", post(retry))
        .route("/api/jobs/{id}/approve", post(approve))
        .route("/api/jobs/{id}/reject", post(reject))
        .route("/api/studies/{study_uid}", get(study))
        .route("/api/audit", get(audit))
        .route("/api/requests", get(requests::list).post(requests::create))
        .route("/api/requests/{id}", get(requests::show))
        .route("/api/nodes", get(nodes))
        .merge(dicomweb::routes())
        .route("/viewer", get(viewer::root))
        .route("/viewer/", get(viewer::index))
        .route("/viewer/{*path}", get(viewer::asset))
        .layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/ui/") }))
        .route(
            "/ui/login",
            get(dashboard::login).post(dashboard::login_form),
        )
        .merge(protected)
        .with_state(state)
}

/// The bearer token the API requires, or `None` where the configuration explicitly
/// allows unauthenticated access on loopback. Read from the token file; the default
/// file (`<data_dir>/api-token`) is created on first start with a random token,
/// readable by the node's user only. A configured file must exist.
pub fn api_token(http: &HttpConfig) -> std::io::Result<Option<String>> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if http.allow_unauthenticated_loopback {
        return Ok(None);
    }
    let path = &http.token_file;
    if !http.token_configured && !path.exists() {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(format!("{token}\n").as_bytes())?;
        file.sync_all()?;
        tracing::info!(path = %path.display(), "API token created");
    }
    let mode = std::fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "API token file is readable by other users");
    }
    let token = std::fs::read_to_string(path)?.trim().to_string();
    if token.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the API token file is empty",
        ));
    }
    Ok(Some(token))
}

/// Whether a Host header names this machine's loopback interface (localhost,
/// 127.0.0.0/8 or ::1, with or without a port): without a token, a request from a
/// browser page whose DNS name was rebound to 127.0.0.1 carries its own host name.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.chars().all(|c| c.is_ascii_digit()) {
                name
            } else {
                host
            }
        })
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

async fn authenticate(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if state.token.is_none()
        && !headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .is_some_and(loopback_host)
    {
        return ApiError {
            status: StatusCode::FORBIDDEN,
            code: "forbidden_host",
            message: "without a token the API answers only requests addressed to loopback".into(),
        }
        .into_response();
    }
    if let Some(token) = &state.token {
        // A client sends it as a bearer token, a browser as the dashboard's cookie.
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .or_else(|| dashboard::cookie_token(&headers));
        if given != Some(token.as_str()) {
            let path = request.uri().path();
            if path.starts_with("/ui/") || path.starts_with("/viewer") {
                let next = request.uri().path_and_query().map_or(path, |p| p.as_str());
                return dashboard::login_page(next);
            }
            return ApiError {
                status: StatusCode::UNAUTHORIZED,
                code: "unauthorized",
                message: "a valid bearer token is required".into(),
            }
            .into_response();
        }
    }
    next.run(request).await
}

/// Query parameters arrive as strings so that malformed values get a 400 with a
/// message, not a framework rejection.
type Params = BTreeMap<String, String>;

fn time_param(p: &Params, name: &str) -> ApiResult<Option<i64>> {
    p.get(name)
        .map(|v| parse_time(v).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
        .transpose()
}

fn int_param(p: &Params, name: &str, default: i64, max: i64) -> ApiResult<i64> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| (0..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("{name}: {v:?} is not a number within 0..={max}"))
            }),
    }
}

fn bool_param(p: &Params, name: &str) -> ApiResult<bool> {
    match p.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(v) => Err(ApiError::bad_request(format!(
            "{name}: {v:?} is neither true nor false"
        ))),
    }
}

fn check_known(p: &Params, known: &[&str]) -> ApiResult<()> {
    match p.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad_request(format!(
            "unknown parameter {k:?} (known: {})",
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

async fn healthz(State(s): State<Arc<ApiState>>) -> Response {
    let database = s.store.ping().await.map_err(|e| e.to_string());
    let disk = crate::spool::free_bytes(&s.config.spool_dir())
        .map_err(|e| e.to_string())
        .and_then(|free| {
            if free < s.config.dicom.min_free_disk_bytes {
                Err(format!(
                    "{} MiB free, below the watermark",
                    free / (1024 * 1024)
                ))
            } else {
                Ok(free)
            }
        });
    let healthy = database.is_ok() && disk.is_ok();
    let body = serde_json::json!({
        "status": if healthy { "ok" } else { "failing" },
        "checks": {
            "database": database.map(|_| "ok".to_string()).unwrap_or_else(|e| e),
            "disk": disk.map(|free| format!("ok, {} MiB free", free / (1024 * 1024))).unwrap_or_else(|e| e),
            "model": match &s.model {
                Some(report) => serde_json::to_value(report).unwrap_or_default(),
                None => "none configured".into(),
            },
        },
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn metrics(State(s): State<Arc<ApiState>>) -> ApiResult<Response> {
    let counts = s.store.counts().await?;
    let stages = s.store.stage_durations().await?;
    let count = |kind: &str, label: &str| stored_count(&counts, kind, label);
    let mut out = String::new();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(&mut out, "segnode_jobs", "gauge", "Jobs by state.");
    for state in JobState::ALL {
        let n = count("jobs", state.as_str());
        let _ = writeln!(out, "segnode_jobs{{state=\"{state}\"}} {n}");
    }
    family(
        &mut out,
        "segnode_instances_stored",
        "gauge",
        "CT instances in the spool.",
    );
    let _ = writeln!(out, "segnode_instances_stored {}", count("instances", ""));
    family(
        &mut out,
        "segnode_associations_total",
        "counter",
        "Associations by outcome.",
    );
    for outcome in ["accepted", "rejected"] {
        let n = count("audit", &format!("association_{outcome}"));
        let _ = writeln!(
            out,
            "segnode_associations_total{{outcome=\"{outcome}\"}} {n}"
        );
    }
    family(
        &mut out,
        "segnode_instances_not_kept_total",
        "counter",
        "Instances ignored or refused.",
    );
    for (event, reason) in [
        ("instance_ignored", "ignored"),
        ("instance_refused", "refused"),
    ] {
        let n = count("audit", event);
        let _ = writeln!(
            out,
            "segnode_instances_not_kept_total{{reason=\"{reason}\"}} {n}"
        );
    }
    family(
        &mut out,
        "segnode_delivery_attempts_total",
        "counter",
        "Delivery attempts by outcome.",
    );
    for (outcome, label) in [
        ("delivered", "delivered"),
        ("pending", "retry"),
        ("failed", "failed"),
    ] {
        let n = count("delivery_attempts", outcome);
        let _ = writeln!(
            out,
            "segnode_delivery_attempts_total{{outcome=\"{label}\"}} {n}"
        );
    }
    family(
        &mut out,
        "segnode_stage_duration_seconds",
        "summary",
        "Time per pipeline stage over finished jobs.",
    );
    for (stage, sum_ms, n) in stages {
        let sum = sum_ms / 1000.0;
        let _ = writeln!(
            out,
            "segnode_stage_duration_seconds_sum{{stage=\"{stage}\"}} {sum}"
        );
        let _ = writeln!(
            out,
            "segnode_stage_duration_seconds_count{{stage=\"{stage}\"}} {n}"
        );
    }
    cluster_metrics(&s.store, &counts, &mut out, family).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response())
}

/// The count of `kind` (`jobs`, `instances`, `audit`, `delivery_attempts`) with `label`
/// among the store's counts; 0 when there is none.
fn stored_count(counts: &[(String, String, i64)], kind: &str, label: &str) -> i64 {
    counts
        .iter()
        .find(|(k, l, _)| k == kind && l == label)
        .map_or(0, |c| c.2)
}

/// The nodes sharing the database: this one, each one's heartbeat and clock offset,
/// and the jobs each one runs.
async fn cluster_metrics(
    store: &crate::store::Store,
    counts: &[(String, String, i64)],
    out: &mut String,
    family: impl Fn(&mut String, &str, &str, &str),
) -> ApiResult<()> {
    let me = store.node();
    family(
        out,
        "segnode_node_info",
        "gauge",
        "This node: its id and database engine.",
    );
    let engine = serde_json::to_value(store.engine()).unwrap_or_default();
    let _ = writeln!(
        out,
        "segnode_node_info{{node_id=\"{}\",engine=\"{}\"}} 1",
        me.node_id,
        engine.as_str().unwrap_or_default()
    );
    family(
        out,
        "segnode_jobs_running",
        "gauge",
        "Running jobs by the node holding them.",
    );
    for (_, node, n) in counts.iter().filter(|(k, _, _)| k == "running_by_node") {
        let _ = writeln!(out, "segnode_jobs_running{{node_id=\"{node}\"}} {n}");
    }
    let nodes = store.nodes().await?;
    type Milliseconds = fn(&crate::store::NodeRow) -> i64;
    let per_node: [(&str, &str, Milliseconds); 2] = [
        (
            "segnode_cluster_node_seen_timestamp_seconds",
            "Each node's last heartbeat (Unix time).",
            |n| n.seen_ms,
        ),
        (
            "segnode_cluster_node_clock_offset_seconds",
            "Each node's clock minus the database's, at its last heartbeat.",
            |n| n.clock_offset_ms,
        ),
    ];
    for (name, help, ms) in per_node {
        family(out, name, "gauge", help);
        for n in &nodes {
            let seconds = ms(n) as f64 / 1000.0;
            let _ = writeln!(out, "{name}{{node_id=\"{}\"}} {seconds}", n.node_id);
        }
    }
    Ok(())
}

/// The nodes sharing the database, as their heartbeats left them.
async fn nodes(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let nodes = s.store.nodes().await?;
    Ok(Json(serde_json::json!({
        "node_id": s.store.node().node_id,
        "engine": s.store.engine(),
        "nodes": nodes,
    })))
}

async fn list_jobs(
    State(s): State<Arc<ApiState>>,
    Query(p): Query<Params>,
) -> ApiResult<Json<serde_json::Value>> {
    check_known(
        &p,
        &["state", "since", "until", "limit", "offset", "needs_review"],
    )?;
    let state = p
        .get("state")
        .map(|v| {
            v.parse::<JobState>()
                .map_err(|_| ApiError::bad_request(format!("{v:?} is not a job state")))
        })
        .transpose()?;
    let q = JobQuery {
        state,
        since_ms: time_param(&p, "since")?,
        until_ms: time_param(&p, "until")?,
        limit: int_param(&p, "limit", 50, 1000)?,
        offset: int_param(&p, "offset", 0, i64::MAX / 2)?,
        needs_review: bool_param(&p, "needs_review")?,
        ..JobQuery::default()
    };
    let jobs = s.store.jobs(&q).await?;
    let results = results_of(&s.store, &jobs).await?;
    Ok(Json(serde_json::json!({
        "jobs": jobs.iter().map(|j| JobView::of(j, &results)).collect::<Vec<_>>(),
        "limit": q.limit,
        "offset": q.offset,
    })))
}

/// The result objects of `jobs`.
async fn results_of(
    store: &Store,
    jobs: impl IntoIterator<Item = &JobRow>,
) -> Result<Vec<ResultRow>, StoreError> {
    let ids: Vec<JobId> = jobs.into_iter().map(|j| j.id).collect();
    store.results_of_jobs(&ids).await
}

fn job_id(id: &str) -> ApiResult<JobId> {
    id.parse()
        .map(JobId)
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a job id")))
}

/// The job a path names: 400 for a malformed id, 404 for an unknown one.
async fn existing_job(s: &ApiState, id: &str) -> ApiResult<(JobId, JobRow)> {
    let id = job_id(id)?;
    let j = s
        .store
        .job(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok((id, j))
}

async fn job(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let (id, j) = existing_job(&s, &id).await?;
    let deliveries = s.store.job_deliveries(id).await?;
    let timeline = s
        .store
        .audit_query(&AuditFilter {
            job_id: Some(id),
            ..AuditFilter::default()
        })
        .await?;
    let results = s.store.job_results(id).await?;
    let mut v = serde_json::to_value(JobView::of(&j, &results))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    v["deliveries"] = serde_json::to_value(&deliveries).unwrap_or_default();
    v["timeline"] = timeline.iter().map(audit_json).collect();
    Ok(Json(v))
}

async fn retry(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = job_id(&id)?;
    let (job, deliveries) = s.store.retry_job(id).await?;
    Ok(Json(
        serde_json::json!({ "job": id, "job_requeued": job, "deliveries_requeued": deliveries }),
    ))
}

/// `POST /api/jobs/{id}/approve`, body optional: `{"reviewer": …, "comment": …}`.
async fn approve(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let (id, decision) = (job_id(&id)?, decision(&body)?);
    let released = s.store.approve_job(id, &decision).await?;
    Ok(Json(
        serde_json::json!({ "job": id, "state": JobState::Succeeded, "deliveries_released": released }),
    ))
}

/// `POST /api/jobs/{id}/reject`, body as for approve.
async fn reject(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let (id, decision) = (job_id(&id)?, decision(&body)?);
    let removed = s.store.reject_job(id, &decision).await?;
    Ok(Json(
        serde_json::json!({ "job": id, "state": JobState::Rejected, "deliveries_removed": removed }),
    ))
}

/// A review decision from a JSON body; an empty body decides without a name or comment.
fn decision(body: &[u8]) -> ApiResult<ReviewDecision> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ReviewDecision::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

async fn study(
    State(s): State<Arc<ApiState>>,
    Path(uid): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let uid = crate::dicom::Uid::parse(&uid)
        .map_err(|e| ApiError::bad_request(format!("study UID: {e}")))?;
    let jobs = s
        .store
        .jobs(&JobQuery {
            study_uid: Some(uid.clone()),
            limit: 1000,
            ..JobQuery::default()
        })
        .await?;
    if jobs.is_empty() {
        return Err(ApiError::not_found(format!(
            "no series of study {uid} was received"
        )));
    }
    // The latest job of each series is the answer for that series.
    let mut latest: Vec<&JobRow> = Vec::new();
    for j in &jobs {
        if !latest.iter().any(|l| l.series_uid == j.series_uid) {
            latest.push(j);
        }
    }
    let has_result = latest.iter().any(|j| j.seg_sop_instance_uid.is_some());
    let results = results_of(&s.store, latest.iter().copied()).await?;
    Ok(Json(serde_json::json!({
        "study_uid": uid,
        "result_available": has_result,
        "series": latest.iter().map(|j| {
            let view = JobView::of(j, &results);
            serde_json::json!({
                "series_uid": j.series_uid,
                "job_id": j.id,
                "state": j.state,
                "reason": j.reason,
                "seg_sop_instance_uid": j.seg_sop_instance_uid,
                "objects": view.objects,
                "summary": view.summary,
            })
        }).collect::<Vec<_>>(),
    })))
}

fn audit_json(r: &AuditRow) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["at"] = format_ms(r.at_ms).into();
    v["detail"] = serde_json::from_str(&r.detail).unwrap_or_default();
    v
}

async fn audit(State(s): State<Arc<ApiState>>, Query(p): Query<Params>) -> ApiResult<Response> {
    let known: Vec<&str> = AUDIT_FIELDS.iter().copied().chain(["format"]).collect();
    check_known(&p, &known)?;
    let filter = AuditFilter::from_params(&p).map_err(ApiError::bad_request)?;
    let rows = s.store.audit_query(&filter).await?;
    match p.get("format").map_or("json", String::as_str) {
        "json" => Ok(Json(
            serde_json::json!({ "records": rows.iter().map(audit_json).collect::<Vec<_>>() }),
        )
        .into_response()),
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            AuditRow::csv(&rows),
        )
            .into_response()),
        other => Err(ApiError::bad_request(format!(
            "format {other:?}: use json or csv"
        ))),
    }
}
