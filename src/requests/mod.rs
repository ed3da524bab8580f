//! Processing on request: a study asked for by its Study Instance UID or Accession
//! Number (the API's `POST /api/requests`, `segnode request`) is found at a configured
//! source with C-FIND or QIDO-RS, its CT series retrieved by C-MOVE (to the node's own
//! SCP), C-GET or WADO-RS (kept here as a C-STORE would be: the same checks, spool and
//! record), and then processed as routed series are: the series tracker settles them
//! into jobs.
//! A series already processed with the same model and the same instances keeps its
//! job, unless the request says `force`. A request ends `done` when every series it
//! covers has a finished job, or `failed` with the reason.

mod session;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Source};
use crate::deliver::query::Retrieved;
use crate::receive::Receiver;
use crate::store::{
    JobState, NewRequest, Priority, RequestRow, RequestState, SeriesState, Store, StoreError,
    now_ms,
};
use session::Session;

/// How often the worker looks for new requests and at the jobs of those processing.
const POLL: Duration = Duration::from_millis(500);

/// How long a retrieved series may take to show up and settle before the request
/// gives up on it, beyond the stable age.
const SETTLE_GRACE: Duration = Duration::from_secs(120);

/// What a request needs to be carried out.
pub struct Requests {
    pub config: Arc<Config>,
    pub store: Store,
    /// Keeps what a C-GET brings back.
    pub receiver: Arc<Receiver>,
    /// The SHA-256 of each file of the model jobs run now: a job made with other files
    /// was made by another model.
    pub model_sha256: Vec<String>,
    pub wake: Arc<Notify>,
}

/// Why a request cannot be accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidRequest {
    #[error("give study_uid or accession_number")]
    NoStudy,
    #[error("no source is configured ([[sources]])")]
    NoSources,
    #[error("no source named {0:?}")]
    UnknownSource(String),
    #[error("{0}")]
    BadValue(String),
}

/// Checks a request against the configuration and records it, `queued`; the source
/// defaults to the first one configured.
pub async fn submit(
    config: &Config,
    store: &Store,
    mut request: NewRequest,
) -> Result<Result<crate::store::RequestId, InvalidRequest>, StoreError> {
    let blank = |v: &Option<String>| v.as_deref().is_none_or(|v| v.trim().is_empty());
    if blank(&request.study_uid) && blank(&request.accession_number) {
        return Ok(Err(InvalidRequest::NoStudy));
    }
    for (name, value) in [
        ("study_uid", &request.study_uid),
        ("series_uid", &request.series_uid),
    ] {
        if let Some(v) = value
            && crate::dicom::Uid::parse(v).is_err()
        {
            return Ok(Err(InvalidRequest::BadValue(format!(
                "{name} {v:?} is not a UID"
            ))));
        }
    }
    if let Some(a) = &request.accession_number
        && (a.len() > 16 || a.contains(['\\', '*', '?']))
    {
        return Ok(Err(InvalidRequest::BadValue(format!(
            "accession_number {a:?} is not an accession number (at most 16 characters, no wildcards)"
        ))));
    }
    let source = if request.source.is_empty() {
        config.source(None).ok_or(InvalidRequest::NoSources)
    } else {
        config
            .source(Some(&request.source))
            .ok_or_else(|| InvalidRequest::UnknownSource(request.source.clone()))
    };
    let source = match source {
        Ok(s) => s,
        Err(e) => return Ok(Err(e)),
    };
    request.source = source.name.clone();
    Ok(Ok(store.create_request(&request).await?))
}

/// Carries out requests until `shutdown`: takes queued ones (one at a time: a
/// retrieve already keeps the source and the spool busy) and follows those processing.
pub async fn run(requests: Arc<Requests>, shutdown: CancellationToken) {
    match requests.store.requeue_requests().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(requests = n, "unfinished requests queued again"),
        Err(e) => tracing::error!(error = %e, "cannot queue unfinished requests again"),
    }
    loop {
        if let Err(e) = requests.tick().await {
            tracing::error!(error = %e, "request worker");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = requests.wake.notified() => {}
            _ = tokio::time::sleep(POLL) => {}
        }
    }
}

/// The outcome of one retrieve step: the progress so far, or the reason it failed.
type Step = Result<serde_json::Value, String>;

impl Requests {
    async fn tick(&self) -> Result<(), StoreError> {
        while let Some(request) = self.store.claim_request().await? {
            tracing::info!(request = request.id.0, source = %request.source, "request taken");
            match self.retrieve(&request).await? {
                Ok(progress) => {
                    self.store
                        .advance_request(request.id, RequestState::Processing, None, &progress)
                        .await?
                }
                Err(reason) => {
                    tracing::warn!(request = request.id.0, %reason, "request failed");
                    self.store
                        .advance_request(
                            request.id,
                            RequestState::Failed,
                            Some(&reason),
                            &serde_json::json!({}),
                        )
                        .await?
                }
            }
        }
        for request in self.store.my_requests(RequestState::Processing).await? {
            self.follow(&request).await?;
        }
        Ok(())
    }

    /// Queries the source and retrieves the request's CT series.
    async fn retrieve(&self, request: &RequestRow) -> Result<Step, StoreError> {
        let Some(source) = self.config.source(Some(&request.source)) else {
            return Ok(Err(format!(
                "source {:?} is no longer configured",
                request.source
            )));
        };
        let mut session = match Session::open(source).await {
            Ok(s) => s,
            Err(reason) => return Ok(Err(reason)),
        };
        let step = self.query_and_retrieve(&mut session, source, request).await;
        session.close(matches!(step, Ok(Ok(_)))).await;
        step
    }

    async fn query_and_retrieve(
        &self,
        session: &mut Session<'_>,
        source: &Source,
        request: &RequestRow,
    ) -> Result<Step, StoreError> {
        let studies = match &request.study_uid {
            Some(uid) => vec![uid.clone()],
            None => {
                let accession = request.accession_number.as_deref().unwrap_or_default();
                match session.studies(accession).await {
                    Ok(found) => found,
                    Err(e) => return Ok(Err(e)),
                }
            }
        };
        if studies.is_empty() {
            return Ok(Err(format!(
                "unknown study: {} holds no study with accession number {}",
                source.name,
                request.accession_number.as_deref().unwrap_or_default()
            )));
        }
        let mut series = Vec::new();
        let mut other_modalities = 0;
        for study in &studies {
            let found = match session.series(study, request.series_uid.as_deref()).await {
                Ok(found) => found,
                Err(e) => return Ok(Err(e)),
            };
            for s in found {
                if s.modality.as_deref() == Some("CT") {
                    series.push((study.clone(), s.series_uid, s.instances));
                } else {
                    other_modalities += 1;
                }
            }
        }
        if series.is_empty() {
            return Ok(Err(if other_modalities == 0 {
                format!(
                    "unknown study: {} holds no {} {}",
                    source.name,
                    if request.series_uid.is_some() {
                        "series"
                    } else {
                        "study"
                    },
                    request
                        .series_uid
                        .as_deref()
                        .or(request.study_uid.as_deref())
                        .unwrap_or_default()
                )
            } else {
                format!(
                    "the study has no CT series ({other_modalities} series of other modalities)"
                )
            }));
        }
        let covered: Vec<(String, String)> = series
            .iter()
            .map(|(st, se, _)| (st.clone(), se.clone()))
            .collect();
        self.store.cover_series(request.id, &covered).await?;
        let expected: u32 = series.iter().filter_map(|(_, _, c)| *c).sum();
        let mut progress = serde_json::json!({
            "studies": studies.len(), "series": series.len(), "instances_expected": expected,
            "completed": 0, "failed": 0, "warning": 0, "retrieve": session.kind(),
        });
        self.store
            .advance_request(request.id, RequestState::Retrieving, None, &progress)
            .await?;
        for (study, uid, _) in &series {
            let retrieved = match session.retrieve(self, study, uid).await {
                Ok(r) => r,
                Err(reason) => return Ok(Err(reason)),
            };
            let counts = &retrieved.counts;
            for (key, n) in [
                ("completed", counts.completed),
                ("failed", counts.failed),
                ("warning", counts.warning),
            ] {
                let total = progress[key].as_u64().unwrap_or(0) + u64::from(n.unwrap_or(0));
                progress[key] = total.into();
            }
            self.store
                .advance_request(request.id, RequestState::Retrieving, None, &progress)
                .await?;
            if let Some(reason) = refused(&retrieved) {
                return Ok(Err(reason));
            }
        }
        Ok(Ok(progress))
    }

    /// Links each covered series to its job once it has settled, processes again what
    /// `force` or a changed model calls for, and ends the request when every job has
    /// finished.
    async fn follow(&self, request: &RequestRow) -> Result<(), StoreError> {
        let covered = self.store.request_series(request.id).await?;
        let waited = Duration::from_millis((now_ms() - request.updated_ms).max(0) as u64);
        let mut missing = Vec::new();
        for s in covered.iter().filter(|s| s.job_id.is_none()) {
            let Some(held) = self.store.series_job(&s.series_uid).await? else {
                missing.push(s.series_uid.clone());
                continue;
            };
            let (Some(job), Some(state), Some(created)) =
                (held.job_id, held.job_state, held.job_created_ms)
            else {
                continue;
            };
            if held.series_state == SeriesState::Receiving {
                continue;
            }
            if created >= request.created_ms {
                self.store
                    .link_request_job(request.id, &s.series_uid, job, false)
                    .await?;
                continue;
            }
            let finished = matches!(
                state,
                JobState::Succeeded | JobState::Delivered | JobState::Review | JobState::Ignored
            );
            let same_model = self.same_model(held.summary.as_deref());
            if finished && (state == JobState::Ignored || (same_model && request.forced == 0)) {
                self.store
                    .link_request_job(request.id, &s.series_uid, job, true)
                    .await?;
            } else if !matches!(state, JobState::Queued | JobState::Running) {
                tracing::info!(
                    request = request.id.0,
                    job = job.0,
                    force = request.forced != 0,
                    same_model,
                    "processing the series again"
                );
                self.store.process_again(held.series_id).await?;
            }
        }
        // A series the source said it sent but of which nothing was kept (every
        // instance refused or not a CT image) never gets a job.
        if !missing.is_empty() && waited > self.config.stable_age + SETTLE_GRACE {
            let reason = format!(
                "partial retrieve: no instance of {} of {} series arrived",
                missing.len(),
                covered.len()
            );
            return self
                .store
                .advance_request(
                    request.id,
                    RequestState::Failed,
                    Some(&reason),
                    &progress_of(request),
                )
                .await;
        }
        let covered = self.store.request_series(request.id).await?;
        let done = covered.iter().all(|s| {
            s.job_state
                .is_some_and(|state| !matches!(state, JobState::Queued | JobState::Running))
        });
        if done {
            let mut progress = progress_of(request);
            progress["jobs"] = covered.iter().map(|s| s.job_id.map(|j| j.0)).collect();
            progress["already_processed"] = covered.iter().filter(|s| s.reused != 0).count().into();
            self.store
                .advance_request(request.id, RequestState::Done, None, &progress)
                .await?;
            tracing::info!(request = request.id.0, "request done");
        }
        Ok(())
    }

    /// Whether a job's summary names the files of the model the node runs now.
    fn same_model(&self, summary: Option<&str>) -> bool {
        summary
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
            .and_then(|s| {
                serde_json::from_value::<Vec<String>>(s["cascade"]["model_sha256"].clone()).ok()
            })
            .is_some_and(|files| files == self.model_sha256)
    }
}

/// A request's progress as stored.
fn progress_of(request: &RequestRow) -> serde_json::Value {
    serde_json::from_str(&request.progress).unwrap_or_else(|_| serde_json::json!({}))
}

/// Why a retrieve's final response means the request failed: the source refused, or
/// some instances could not be sent.
fn refused(r: &Retrieved) -> Option<String> {
    let comment = r
        .error_comment
        .as_deref()
        .map(|c| format!(" ({c})"))
        .unwrap_or_default();
    let failed = r.counts.failed.unwrap_or(0);
    let completed = r.counts.completed.unwrap_or(0);
    if r.status.is_success() || r.status.is_warning() && failed == 0 {
        return None;
    }
    Some(if completed == 0 {
        format!("source refused the retrieve: status {}{comment}", r.status)
    } else {
        format!(
            "partial retrieve: {failed} of {} instances failed, status {}{comment}",
            completed + failed,
            r.status
        )
    })
}

/// The priorities as the API and the command line name them.
pub fn priority(name: &str) -> Result<Priority, InvalidRequest> {
    name.parse::<Priority>().map_err(|_| {
        InvalidRequest::BadValue(format!("priority {name:?} is not \"stat\" or \"routine\""))
    })
}
