//! The workers that drive queued jobs through [`process`] (volume, cascade, SEG) and
//! queue the result's deliveries. Workers claim jobs from the job table, the durable
//! queue; a `Notify` only wakes them. A stage's failure ends the job in `failed` with
//! the stage, an error code and a reason a person can read; it never stops the worker
//! or touches other jobs.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::process::{Options, Processed, Source, StageError, process};
use super::summary::{JobSummary, Stage};
use crate::cascade::{Cascade, Scope};
use crate::config::{Config, Destination};
use crate::dicom::{SegType, Uid};
use crate::hl7::{self, Findings, Order};
use crate::keyimages::KeyImage;
use crate::seg::{self, EncodedSeg};
use crate::spool::Spool;
use crate::sr::EncodedSr;
use crate::store::{
    ClaimedJob, JobOutcome, JobState, NewDelivery, NewResult, ResultObject, Store, StoreError,
    now_ms,
};

pub struct Pipeline {
    pub config: Arc<Config>,
    pub store: Store,
    pub spool: Spool,
    /// Wakes idle workers when a job is queued.
    pub wake: Arc<Notify>,
    /// Wakes the outbox when deliveries are queued.
    pub deliver: Arc<Notify>,
}

/// Runs one worker until `shutdown`. The worker owns its cascade (its own ONNX Runtime
/// sessions); without a model, jobs assemble and check the volume only.
pub async fn worker(
    pipeline: Arc<Pipeline>,
    id: usize,
    mut cascade: Option<Cascade>,
    shutdown: CancellationToken,
) {
    loop {
        match pipeline.store.claim_next_job().await {
            Ok(Some(job)) => {
                let span = tracing::info_span!("job", job_id = job.id.0, series_uid = %job.series_uid, worker = id);
                pipeline.run(&job, &mut cascade).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot claim jobs from the database"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = pipeline.wake.notified() => {}
            // Jobs queued by another process (an operator's retry, another node).
            _ = tokio::time::sleep(pipeline.store.node().poll_interval()) => {}
        }
    }
}

/// What processing a job made: its summary, how many instances it read, and when there
/// is a result, the objects written to the spool and the deliveries to make.
struct Ran {
    summary: JobSummary,
    instances: usize,
    results: Vec<NewResult>,
    deliveries: Vec<NewDelivery>,
}

impl Pipeline {
    async fn run(&self, job: &ClaimedJob, cascade: &mut Option<Cascade>) {
        tracing::info!("job started");
        let started = Instant::now();
        let processed = {
            let renewing = self.renew_lease(job);
            tokio::pin!(renewing);
            let processing = self.process(job, cascade);
            tokio::pin!(processing);
            tokio::select! {
                processed = &mut processing => processed,
                () = &mut renewing => processing.await,
            }
        };
        let (outcome, deliveries) = match processed {
            Ok(None) => {
                tracing::info!("the series changed before the job read it: set aside");
                if let Err(e) = self.store.set_aside_stale(job).await {
                    tracing::error!(error = %e, "cannot set the job aside; it will be resumed after a restart");
                }
                return;
            }
            Ok(Some(Ran {
                summary,
                instances,
                results,
                deliveries,
            })) => {
                let held = self.config.review.holds(summary.qa_verdict);
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    qa_verdict = summary.qa_verdict.map(|v| v.as_str()),
                    held,
                    "job succeeded"
                );
                let outcome = JobOutcome {
                    state: if held {
                        JobState::Review
                    } else {
                        JobState::Succeeded
                    },
                    reason: summary.no_segmentation().map(str::to_string),
                    error_code: None,
                    summary: summary.to_json(),
                    timings_ms: summary.timings(),
                    results,
                    instance_count: Some(instances as i64),
                    qa_verdict: summary.qa_verdict,
                };
                (outcome, deliveries)
            }
            Err(e) => {
                tracing::warn!(stage = %e.stage(), code = e.code(), reason = %e, "job failed");
                let outcome = JobOutcome {
                    state: JobState::Failed,
                    reason: Some(e.to_string()),
                    error_code: Some(e.code().to_string()),
                    summary: JobSummary::failed(e.stage(), e.retryable()).to_json(),
                    timings_ms: Vec::new(),
                    results: Vec::new(),
                    instance_count: None,
                    qa_verdict: None,
                };
                (outcome, Vec::new())
            }
        };
        match self.store.finish_job(job, &outcome, &deliveries).await {
            Ok(()) if !deliveries.is_empty() && outcome.state == JobState::Succeeded => {
                self.deliver.notify_one()
            }
            Ok(()) => {}
            Err(e @ StoreError::LeaseLost(_)) => {
                tracing::error!(error = %e, "the job's result is dropped: another node processes it");
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot record the job's outcome; it will be resumed after a restart");
            }
        }
    }

    /// Renews this node's lease on `job` while it is processed; returns once the lease
    /// is lost (another node took the job over) or cannot be renewed for good.
    async fn renew_lease(&self, job: &ClaimedJob) {
        let every = self.store.node().lease / 3;
        loop {
            tokio::time::sleep(every).await;
            match self.store.renew_job_lease(job.id).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!(
                        "this node lost the job's lease; another node has taken it over"
                    );
                    return;
                }
                Err(e) => tracing::warn!(error = %e, "cannot renew the job's lease"),
            }
        }
    }

    /// Runs [`process`] on a blocking thread with this worker's cascade on the
    /// instances of the job's revision, then writes the result objects to the spool.
    /// `None` when the series moved on to a later revision before the job read it.
    async fn process(
        &self,
        job: &ClaimedJob,
        cascade: &mut Option<Cascade>,
    ) -> Result<Option<Ran>, StageError> {
        let internal = |stage| move |message: String| StageError::Internal { stage, message };
        let Some(instances) = self
            .store
            .series_sources(job.series_id, job.series_revision)
            .await
            .map_err(|e| internal(Stage::Volume)(e.to_string()))?
        else {
            return Ok(None);
        };
        let count = instances.len();
        let first = instances.first().map(|i| self.spool.path(&i.file_name));
        let source = Source::new(
            instances
                .into_iter()
                .map(|i| (i.sop_instance_uid, i.sha256, self.spool.path(&i.file_name))),
        );
        if cascade.is_none() && self.config.model.is_some() {
            // The worker lost its sessions (a panic inside inference): fail loudly
            // rather than "succeed" without segmenting.
            return Err(StageError::ModelLost);
        }
        let destinations: Vec<Destination> = self
            .config
            .route(&job.calling_ae)
            .into_iter()
            .cloned()
            .collect();
        let options = self.options(&destinations);
        let mut model = cascade.take();
        let (model, processed) = tokio::task::spawn_blocking(move || {
            let processed = process(&source, model.as_mut(), &options);
            (model, processed)
        })
        .await
        .map_err(|e| internal(Stage::Cascade)(e.to_string()))?;
        *cascade = model;
        let Processed {
            segs,
            sr,
            key_images,
            mut summary,
            ..
        } = processed?;
        let Some(sr) = sr else {
            return Ok(Some(Ran {
                summary,
                instances: count,
                results: Vec::new(),
                deliveries: Vec::new(),
            }));
        };
        let t = Instant::now();
        let mut results = self.write_results(segs, sr, key_images).await?;
        let mut deliveries = deliveries(&destinations, &results);
        if !self.config.hl7_destinations.is_empty() {
            for (result, delivery) in self.write_hl7(job, first, &summary, &results).await? {
                results.push(result);
                deliveries.push(delivery);
            }
        }
        summary.time(Stage::Spool, t);
        tracing::info!(objects = results.len(), "result objects written");
        Ok(Some(Ran {
            summary,
            instances: count,
            results,
            deliveries,
        }))
    }

    /// How to process a job for `destinations`: BINARY always (what the job records),
    /// LABELMAP too when a destination wants it, key images always (the dashboard shows
    /// them, whoever receives them).
    fn options(&self, destinations: &[Destination]) -> Options {
        let labelmap = destinations.iter().any(|d| d.seg_type == SegType::Labelmap);
        Options {
            min_slices: self.config.eligibility.min_slices as usize,
            scope: Scope::Cascade,
            seg_types: std::iter::once(SegType::Binary)
                .chain(labelmap.then_some(SegType::Labelmap))
                .collect(),
            key_images: true,
            equipment: seg::Equipment::segnode(self.config.ae_title.as_str()),
            deliver_failed_organs: self.config.review.deliver_failed_organs,
            labels: self.config.model.as_ref().and_then(|m| m.labels.clone()),
        }
    }

    /// Writes the job's HL7 ORU^R01 for each HL7 destination to the spool, with its
    /// delivery: the patient and order of its first source instance, its organs, its
    /// SEG and report; each message's control ID a new UID.
    async fn write_hl7(
        &self,
        job: &ClaimedJob,
        first: Option<std::path::PathBuf>,
        summary: &JobSummary,
        results: &[NewResult],
    ) -> Result<Vec<(NewResult, NewDelivery)>, StageError> {
        let uid_of = |kind, variant| {
            results
                .iter()
                .find(|r| r.kind == kind && r.variant == variant)
                .map(|r| r.sop_instance_uid.as_str().to_string())
        };
        let seg = uid_of(ResultObject::Seg, Some(SegType::Binary));
        let sr = uid_of(ResultObject::Sr, None);
        let organs = summary.organs.clone();
        let destinations = self.config.hl7_destinations.clone();
        let spool = self.spool.clone();
        let job_id = job.id.0;
        let written = tokio::task::spawn_blocking(move || {
            let order = first.map_or_else(Order::default, |p| Order::read(&p, job_id));
            let findings = Findings {
                organs: &organs,
                seg_uid: seg.as_deref(),
                sr_uid: sr.as_deref(),
            };
            destinations
                .iter()
                .map(|dest| {
                    let control = Uid::from_u128(uuid::Uuid::new_v4().as_u128());
                    let message = hl7::oru_r01(dest, control.as_str(), now_ms(), &order, &findings);
                    let file = spool.write(message.as_bytes())?;
                    let delivery = NewDelivery {
                        destination: dest.name.clone(),
                        sop_instance_uid: control.clone(),
                        fallback: None,
                    };
                    let result = NewResult {
                        kind: ResultObject::Hl7,
                        variant: None,
                        sop_instance_uid: control,
                        file,
                    };
                    Ok((result, delivery))
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| StageError::Internal {
            stage: Stage::Spool,
            message: e.to_string(),
        })?;
        written.map_err(|e| StageError::Internal {
            stage: Stage::Spool,
            message: format!("cannot write the HL7 message to the spool: {e}"),
        })
    }

    /// Writes every result object to the spool, in the order the results table keeps
    /// them: the SEGs (BINARY first), the report, the key images.
    async fn write_results(
        &self,
        segs: Vec<(SegType, EncodedSeg)>,
        sr: EncodedSr,
        key_images: Vec<KeyImage>,
    ) -> Result<Vec<NewResult>, StageError> {
        let internal = |message: String| StageError::Internal {
            stage: Stage::Spool,
            message,
        };
        // Every object in the order the results table keeps: the SEGs (BINARY first),
        // the report, the key images.
        let objects: Vec<(ResultObject, Option<SegType>, Uid, Vec<u8>)> = segs
            .into_iter()
            .map(|(t, e)| (ResultObject::Seg, Some(t), e.sop_instance_uid, e.file))
            .chain(std::iter::once((
                ResultObject::Sr,
                None,
                sr.sop_instance_uid,
                sr.file,
            )))
            .chain(
                key_images
                    .into_iter()
                    .map(|k| (ResultObject::KeyImages, None, k.sop_instance_uid, k.file)),
            )
            .collect();
        let spool = self.spool.clone();
        let written = tokio::task::spawn_blocking(move || {
            objects
                .into_iter()
                .map(|(kind, variant, sop_instance_uid, bytes)| {
                    Ok(NewResult {
                        kind,
                        variant,
                        sop_instance_uid,
                        file: spool.write(&bytes)?,
                    })
                })
                .collect::<std::io::Result<Vec<_>>>()
        })
        .await
        .map_err(|e| internal(e.to_string()))?;
        written.map_err(|e| internal(format!("cannot write the results to the spool: {e}")))
    }
}

/// What each destination receives of `results`: the objects it asks for, its SEG type
/// (with the BINARY SEG to fall back on when it asks for LABELMAP).
fn deliveries(destinations: &[Destination], results: &[NewResult]) -> Vec<NewDelivery> {
    let binary = results
        .iter()
        .find(|r| r.variant == Some(SegType::Binary))
        .map(|r| r.sop_instance_uid.clone());
    let mut deliveries = Vec::new();
    for d in destinations {
        for r in results {
            let wanted = d.objects.contains(&r.kind)
                && (r.kind != ResultObject::Seg || r.variant == Some(d.seg_type));
            if wanted {
                deliveries.push(NewDelivery {
                    destination: d.name.clone(),
                    sop_instance_uid: r.sop_instance_uid.clone(),
                    fallback: (r.variant == Some(SegType::Labelmap))
                        .then(|| binary.clone())
                        .flatten(),
                });
            }
        }
    }
    deliveries
}
