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
use crate::cascade::{Cascade, Scope};
use crate::config::{Config, Destination};
use crate::seg::{self, SegType};
use crate::spool::Spool;
use crate::store::{
    ClaimedJob, JobOutcome, JobState, NewDelivery, ResultObject, Store, StoreError,
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

/// What a successful job produced: its SEG (UID, spool file) and the deliveries to make.
struct Produced {
    seg: (String, String),
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
            Ok((summary, produced)) => {
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "job succeeded"
                );
                let empty = summary["cascade"]["empty"].as_bool() == Some(true);
                let (seg, deliveries) = match produced {
                    Some(p) => (Some(p.seg), p.deliveries),
                    None => (None, Vec::new()),
                };
                let outcome = JobOutcome {
                    state: JobState::Succeeded,
                    reason: empty.then(|| "no structures found".to_string()),
                    error_code: None,
                    summary,
                    seg,
                };
                (outcome, deliveries)
            }
            Err(e) => {
                tracing::warn!(stage = e.stage(), code = e.code(), reason = %e, "job failed");
                let outcome = JobOutcome {
                    state: JobState::Failed,
                    reason: Some(e.to_string()),
                    error_code: Some(e.code().to_string()),
                    summary: serde_json::json!({
                        "failed_stage": e.stage(),
                        "retryable": e.retryable(),
                    }),
                    seg: None,
                };
                (outcome, Vec::new())
            }
        };
        match self.store.finish_job(job, &outcome, &deliveries).await {
            Ok(()) if !deliveries.is_empty() => self.deliver.notify_one(),
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

    /// Runs [`process`] on a blocking thread with this worker's cascade, then writes the
    /// SEGs to the spool. Returns the summary and, when there is a result, what to
    /// deliver.
    async fn process(
        &self,
        job: &ClaimedJob,
        cascade: &mut Option<Cascade>,
    ) -> Result<(serde_json::Value, Option<Produced>), StageError> {
        let internal = |stage| move |message: String| StageError::Internal { stage, message };
        let source = Source::new(
            self.store
                .series_sources(job.series_id)
                .await
                .map_err(|e| internal("volume")(e.to_string()))?
                .into_iter()
                .map(|i| (i.sop_instance_uid, i.sha256, self.spool.path(&i.file_name))),
        );
        if cascade.is_none() && self.config.model.is_some() {
            // The worker lost its sessions (a panic inside inference): fail loudly
            // rather than "succeed" without segmenting.
            return Err(StageError::ModelLost);
        }
        // BINARY always (what the job records); LABELMAP too when a destination wants it.
        let destinations: Vec<Destination> = self
            .config
            .route(&job.calling_ae)
            .into_iter()
            .cloned()
            .collect();
        let options = Options {
            min_slices: self.config.eligibility.min_slices as usize,
            scope: Scope::Cascade,
            seg_types: std::iter::once(SegType::Binary)
                .chain(
                    destinations
                        .iter()
                        .any(|d| d.seg_type == SegType::Labelmap)
                        .then_some(SegType::Labelmap),
                )
                .collect(),
            // Always: the dashboard shows them, whoever receives them.
            key_images: true,
            equipment: seg::Equipment::segnode(self.config.ae_title.as_str()),
        };
        let mut model = cascade.take();
        let (model, processed) = tokio::task::spawn_blocking(move || {
            let processed = process(&source, model.as_mut(), &options);
            (model, processed)
        })
        .await
        .map_err(|e| internal("cascade")(e.to_string()))?;
        *cascade = model;
        let Processed {
            segs,
            sr,
            key_images,
            summary,
            ..
        } = processed?;
        let Some(sr) = sr.filter(|_| !segs.is_empty()) else {
            return Ok((summary, None));
        };
        let t = Instant::now();
        let spool = self.spool.clone();
        let written = tokio::task::spawn_blocking(move || {
            let segs = segs
                .into_iter()
                .map(|(seg_type, encoded)| {
                    let name = spool.write(&encoded.file)?;
                    Ok((seg_type, encoded.sop_instance_uid, name))
                })
                .collect::<std::io::Result<Vec<_>>>()?;
            let report = (sr.sop_instance_uid, spool.write(&sr.file)?);
            let keys = key_images
                .into_iter()
                .map(|k| Ok((k.sop_instance_uid, spool.write(&k.file)?)))
                .collect::<std::io::Result<Vec<_>>>()?;
            Ok::<_, std::io::Error>((segs, report, keys))
        })
        .await
        .map_err(|e| internal("seg")(e.to_string()))?;
        let (segs, (sr_uid, sr_file), keys) = written
            .map_err(|e| internal("seg")(format!("cannot write the results to the spool: {e}")))?;
        let mut summary = summary;
        summary["timings_ms"]["spool"] = (t.elapsed().as_millis() as u64).into();
        // Where each key image is kept (the dashboard serves it; retention keeps it).
        for (entry, (_, file)) in summary["key_images"]
            .as_array_mut()
            .into_iter()
            .flatten()
            .zip(&keys)
        {
            entry["file"] = file.clone().into();
        }
        let (_, binary_uid, binary_file) = &segs[0];
        tracing::info!(seg_sop_instance_uid = %binary_uid, sr_sop_instance_uid = %sr_uid, "SEG and SR written");
        let mut deliveries = Vec::new();
        for d in &destinations {
            if d.objects.contains(&ResultObject::KeyImages) {
                deliveries.extend(keys.iter().map(|(uid, file)| NewDelivery {
                    destination: d.name.clone(),
                    object: ResultObject::KeyImages,
                    variant: None,
                    sop_instance_uid: uid.clone(),
                    file: file.clone(),
                    fallback_file: None,
                }));
            }
            for object in &d.objects {
                deliveries.push(match object {
                    ResultObject::Seg => {
                        let (_, uid, file) = segs
                            .iter()
                            .find(|(t, _, _)| *t == d.seg_type)
                            .expect("encoded above");
                        NewDelivery {
                            destination: d.name.clone(),
                            object: ResultObject::Seg,
                            variant: Some(d.seg_type.name().into()),
                            sop_instance_uid: uid.clone(),
                            file: file.clone(),
                            fallback_file: (d.seg_type == SegType::Labelmap)
                                .then(|| binary_file.clone()),
                        }
                    }
                    ResultObject::KeyImages => continue,
                    ResultObject::Sr => NewDelivery {
                        destination: d.name.clone(),
                        object: ResultObject::Sr,
                        variant: None,
                        sop_instance_uid: sr_uid.clone(),
                        file: sr_file.clone(),
                        fallback_file: None,
                    },
                });
            }
        }
        Ok((
            summary,
            Some(Produced {
                seg: (binary_uid.clone(), binary_file.clone()),
                deliveries,
            }),
        ))
    }
}
