//! The pipeline that drives a queued job through the stages: volume assembly now (and
//! the cascade, SEG encoding and delivery as they arrive). Workers claim jobs from the
//! job table, the durable queue; a `Notify` only wakes them. A stage's failure ends the
//! job in `failed` with the stage, an error code and a reason a person can read; it
//! never stops the worker or touches other jobs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::cascade::Cascade;
use crate::config::{Config, Destination};
use crate::jobs::JobState;
use crate::seg::{self, SegType};
use crate::spool::Spool;
use crate::store::{ClaimedJob, JobOutcome, NewDelivery, Store};
use crate::volume::{self, Tolerances};

/// How often idle workers look at the job table even without a wake-up (jobs queued
/// by another process, e.g. an operator's retry).
const POLL_INTERVAL: Duration = Duration::from_secs(5);

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
                let span = tracing::info_span!("job", job_id = job.id, series_uid = %job.series_uid, worker = id);
                pipeline.run(&job, &mut cascade).instrument(span).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot claim jobs from the database"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = pipeline.wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// What a successful job produced: its SEG (UID, spool file) and the deliveries to make.
struct Produced {
    seg: (String, String),
    deliveries: Vec<NewDelivery>,
}

/// A stage failure: which stage, a stable code, a message.
struct StageError {
    stage: &'static str,
    code: String,
    message: String,
}

impl Pipeline {
    async fn run(&self, job: &ClaimedJob, cascade: &mut Option<Cascade>) {
        tracing::info!("job started");
        let started = Instant::now();
        let mut summary = serde_json::json!({ "timings_ms": {} });
        let mut deliveries = Vec::new();
        let outcome = match self.process(job, cascade, &mut summary).await {
            Ok(produced) => {
                let seg = produced.map(|p| {
                    deliveries = p.deliveries;
                    p.seg
                });
                tracing::info!(
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "job succeeded"
                );
                let empty = summary["cascade"]["empty"].as_bool() == Some(true);
                JobOutcome {
                    state: JobState::Succeeded,
                    reason: empty.then(|| "no structures found".to_string()),
                    error_code: None,
                    summary,
                    seg,
                }
            }
            Err(e) => {
                tracing::warn!(stage = e.stage, code = %e.code, reason = %e.message, "job failed");
                summary["failed_stage"] = e.stage.into();
                JobOutcome {
                    state: JobState::Failed,
                    reason: Some(format!("{}: {}", e.stage, e.message)),
                    error_code: Some(e.code),
                    summary,
                    seg: None,
                }
            }
        };
        if let Err(e) = self.store.finish_job(job, &outcome).await {
            tracing::error!(error = %e, "cannot record the job's outcome; it will be resumed after a restart");
            return;
        }
        if !deliveries.is_empty() {
            match self.store.create_deliveries(job.id, &deliveries).await {
                Ok(()) => self.deliver.notify_one(),
                Err(e) => tracing::error!(error = %e, "cannot queue the deliveries"),
            }
        }
    }

    async fn process(
        &self,
        job: &ClaimedJob,
        cascade: &mut Option<Cascade>,
        summary: &mut serde_json::Value,
    ) -> Result<Option<Produced>, StageError> {
        let internal = |stage| {
            move |e: String| StageError {
                stage,
                code: "internal".into(),
                message: e,
            }
        };
        let files: Vec<PathBuf> = self
            .store
            .series_files(job.series_id)
            .await
            .map_err(|e| internal("volume")(e.to_string()))?
            .iter()
            .map(|name| self.spool.path(name))
            .collect();
        let min_slices = self.config.eligibility.min_slices as usize;
        let t = Instant::now();
        let assembled = tokio::task::spawn_blocking(move || {
            volume::assemble(&files, min_slices, &Tolerances::default())
        })
        .await
        .map_err(|e| internal("volume")(e.to_string()))?;
        summary["timings_ms"]["volume"] = (t.elapsed().as_millis() as u64).into();
        let volume = assembled.map_err(|e| StageError {
            stage: "volume",
            code: e.code().to_string(),
            message: e.to_string(),
        })?;
        let (min, max, mean) = volume.hu_stats();
        summary["volume"] = serde_json::json!({
            "shape": volume.shape,
            "spacing_mm": volume.geometry.spacing,
            "origin_mm": volume.geometry.origin,
            "hu": { "min": min, "max": max, "mean": mean },
        });
        let Some(mut model) = cascade.take() else {
            if self.config.model.is_some() {
                // The worker lost its sessions (a panic inside inference): fail loudly
                // rather than "succeed" without segmenting.
                return Err(StageError {
                    stage: "cascade",
                    code: "model_unavailable".into(),
                    message: "this worker's model sessions were lost after an inference panic; restart the node".into(),
                });
            }
            return Ok(None);
        };
        let t = Instant::now();
        let (model, volume, segmented) = tokio::task::spawn_blocking(move || {
            let result = model.run(&volume);
            (model, volume, result)
        })
        .await
        .map_err(|e| internal("cascade")(e.to_string()))?;
        *cascade = Some(model);
        summary["timings_ms"]["cascade"] = (t.elapsed().as_millis() as u64).into();
        let segmentation = segmented.map_err(|e| StageError {
            stage: "cascade",
            code: e.code().to_string(),
            message: e.to_string(),
        })?;
        summary["cascade"] = serde_json::to_value(&segmentation.summary).unwrap_or_default();
        if segmentation.summary.empty {
            return Ok(None);
        }

        // The SEG, written to the spool for delivery.
        let t = Instant::now();
        let manifest = cascade
            .as_ref()
            .map(|c| c.model.manifest.clone())
            .expect("cascade returned");
        let equipment = seg::Equipment::segnode(self.config.ae_title.as_str());
        let source_key = self
            .store
            .series_checksums(job.series_id)
            .await
            .map_err(|e| internal("seg")(e.to_string()))?
            .iter()
            .map(|(uid, sha)| format!("{uid}={sha}"))
            .collect::<Vec<_>>()
            .join(";");
        let spool = self.spool.clone();
        // BINARY always (what the job records); LABELMAP too when a destination wants it.
        let destinations: Vec<Destination> = self
            .config
            .route(&job.calling_ae)
            .into_iter()
            .cloned()
            .collect();
        let types: Vec<SegType> = std::iter::once(SegType::Binary)
            .chain(
                destinations
                    .iter()
                    .any(|d| d.seg_type == SegType::Labelmap)
                    .then_some(SegType::Labelmap),
            )
            .collect();
        let written = tokio::task::spawn_blocking(move || {
            types
                .into_iter()
                .map(|seg_type| {
                    let encoded = seg::encode(
                        &volume,
                        &segmentation.labels,
                        &manifest,
                        seg_type,
                        &equipment,
                        &source_key,
                    )
                    .map_err(|e| ("seg", "encode_failed", e.to_string()))?;
                    let name = spool.write(&encoded.file).map_err(|e| {
                        (
                            "seg",
                            "internal",
                            format!("cannot write the SEG to the spool: {e}"),
                        )
                    })?;
                    Ok::<_, (&str, &str, String)>((seg_type, encoded, name))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| internal("seg")(e.to_string()))?
        .map_err(|(stage, code, message)| StageError {
            stage,
            code: code.to_string(),
            message,
        })?;
        summary["timings_ms"]["seg"] = (t.elapsed().as_millis() as u64).into();
        let (_, binary, binary_file) = &written[0];
        summary["seg"] = serde_json::json!({
            "sop_instance_uid": binary.sop_instance_uid,
            "series_instance_uid": binary.series_instance_uid,
            "sop_class_uid": binary.sop_class_uid,
            "frames": binary.frames,
            "bytes": binary.file.len(),
        });
        tracing::info!(seg_sop_instance_uid = %binary.sop_instance_uid, frames = binary.frames, "SEG written");
        let deliveries = destinations
            .iter()
            .map(|d| {
                let (_, encoded, file) = written
                    .iter()
                    .find(|(t, _, _)| *t == d.seg_type)
                    .expect("encoded above");
                NewDelivery {
                    destination: d.name.clone(),
                    seg_type: match d.seg_type {
                        SegType::Binary => "BINARY".into(),
                        SegType::Labelmap => "LABELMAP".into(),
                    },
                    seg_sop_instance_uid: encoded.sop_instance_uid.clone(),
                    seg_file: file.clone(),
                    fallback_file: (d.seg_type == SegType::Labelmap).then(|| binary_file.clone()),
                }
            })
            .collect();
        Ok(Some(Produced {
            seg: (binary.sop_instance_uid.clone(), binary_file.clone()),
            deliveries,
        }))
    }
}
