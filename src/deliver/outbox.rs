//! The outbox worker: sends pending deliveries (the `deliveries` table, durable across
//! restarts) to their destinations with C-STORE or STOW-RS ([`stow`]), and HL7
//! messages to the RIS over MLLP ([`crate::hl7`]), classifies the response, and
//! schedules retries with exponential back-off and jitter. LABELMAP falls back to
//! BINARY when the peer refuses the Label Map Segmentation SOP class. A re-delivery
//! sends the same file, so the PACS sees one instance (same SOP Instance UID).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{Association, OutgoingFile, ScuError, ScuTimeouts, stow};
use crate::config::{Config, Destination, Hl7Destination, Transport};
use crate::dicom::DimseStatus;
use crate::dicom::SegType;
use crate::dicom::uid::SEGMENTATION_STORAGE;
use crate::dicom::uid::ts;
use crate::hl7::{self, Ack};
use crate::spool::Spool;
use crate::store::{Attempt, DeliveryRow, JobId, ResultObject, Store, now_ms};

/// How often the outbox looks for due deliveries without a wake-up.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Deliveries claimed at once.
const CLAIM_BATCH: i64 = 4;

pub struct Outbox {
    pub config: Arc<Config>,
    pub store: Store,
    pub spool: Spool,
    pub wake: Arc<Notify>,
    /// The TLS connector of each destination that uses DICOM TLS, by name.
    pub connectors: HashMap<String, TlsConnector>,
    /// The HTTP client of each DICOMweb destination, by name.
    pub web_clients: HashMap<String, reqwest::Client>,
}

/// Runs the outbox until `shutdown`. First, a job whose last delivery was recorded
/// just before a stop, but not yet promoted, is promoted to `delivered`.
pub async fn run(outbox: Arc<Outbox>, shutdown: CancellationToken) {
    match outbox.store.fully_delivered_jobs().await {
        Ok(jobs) => {
            for job in jobs {
                tracing::info!(job = %job, "every delivery done before the stop: job delivered");
                outbox.promote(job).await;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read the jobs left succeeded"),
    }
    loop {
        // A few at a time: each is held under a lease until its attempt is recorded.
        let mut full = false;
        match outbox.store.claim_due_deliveries(CLAIM_BATCH).await {
            Ok(due) => {
                full = due.len() as i64 == CLAIM_BATCH;
                for d in due {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    outbox.deliver(&d).await;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
        if full {
            continue;
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = outbox.wake.notified() => {}
            _ = tokio::time::sleep(POLL_INTERVAL) => {}
        }
    }
}

/// The back-off before attempt `attempts + 1`: doubling from the initial delay up to
/// the maximum, times a random factor in [0.8, 1.2).
pub fn backoff(initial: Duration, max: Duration, attempts: u32, unit_random: f64) -> Duration {
    let doubled = initial.saturating_mul(1u32 << attempts.min(20));
    doubled
        .min(max)
        .mul_f64(0.8 + 0.4 * unit_random.clamp(0.0, 1.0))
}

/// A random number in [0, 1), for [`backoff`]'s jitter.
pub fn unit_random() -> f64 {
    (uuid::Uuid::new_v4().as_u128() % 1_000_000) as f64 / 1_000_000.0
}

/// The object a delivery sends, as the log names it: "SEG (LABELMAP)", "measurement
/// report (SR)", "key image".
fn delivered(object: ResultObject, variant: Option<SegType>) -> String {
    match (object, variant) {
        (ResultObject::Seg, Some(variant)) => format!("SEG ({variant})"),
        (ResultObject::Seg, None) => "SEG".into(),
        (ResultObject::Sr, _) => "measurement report (SR)".into(),
        (ResultObject::KeyImages, _) => "key image".into(),
        (ResultObject::Hl7, _) => "HL7 ORU^R01".into(),
    }
}

/// A C-STORE's outcome: status, the peer's error comment, our note (a fallback).
type Sent = (DimseStatus, Option<String>, Option<String>);

impl Outbox {
    async fn deliver(&self, d: &DeliveryRow) {
        let span = tracing::info_span!("delivery", job_id = d.job_id.0, destination = %d.destination, attempt = d.attempts + 1);
        self.attempt(d).instrument(span).await
    }

    /// One attempt: send, classify, record; the job is delivered once every one of its
    /// deliveries is.
    async fn attempt(&self, d: &DeliveryRow) {
        let hl7 = self
            .config
            .hl7_destinations
            .iter()
            .find(|x| x.name == d.destination);
        let attempt = match self
            .config
            .destinations
            .iter()
            .find(|x| x.name == d.destination)
        {
            None if let Some(dest) = hl7 => self.send_hl7(dest, d).await,
            None => Attempt::Failed {
                error: format!("destination {:?} is no longer configured", d.destination),
            },
            Some(dest) => match self.send(dest, d).await {
                Ok((status, comment, note)) if status.is_success() || status.is_warning() => {
                    tracing::info!(
                        %status,
                        object = d.object.as_str(),
                        sop_instance_uid = %d.sop_instance_uid,
                        note = note.as_deref().unwrap_or_default(),
                        "{} delivered",
                        delivered(d.object, d.variant)
                    );
                    Attempt::Delivered {
                        status: status.to_string(),
                        note: note.or(comment.filter(|_| status.is_warning())),
                    }
                }
                Ok((status, comment, _)) => {
                    let error = format!(
                        "{} answered {status} {}",
                        dest.name,
                        comment.unwrap_or_default()
                    );
                    self.retry_or_fail(d, error, status.is_out_of_resources())
                }
                Err(e) => {
                    let error = format!("{:#}", anyhow::Error::from(e));
                    self.retry_or_fail(d, error, true)
                }
            },
        };
        if let Attempt::Failed { error } = &attempt {
            tracing::error!(%error, "delivery failed for good: an operator must act (segnode retry)");
        }
        if let Err(e) = self.store.record_attempt(d, &attempt).await {
            tracing::error!(error = %e, "cannot record a delivery attempt");
        }
    }

    /// Sends the job's HL7 message over MLLP and reads the ACK: AA is delivered, AE and
    /// no answer are retried, AR is final.
    async fn send_hl7(&self, dest: &Hl7Destination, d: &DeliveryRow) -> Attempt {
        let path = self.spool.path(&d.file);
        let message = match std::fs::read(&path) {
            Ok(m) => m,
            Err(e) => {
                let error = format!("cannot read {}: {e}", path.display());
                return self.retry_or_fail(d, error, true);
            }
        };
        match hl7::send(dest, &message).await {
            Ok(Ack::Accepted) => {
                tracing::info!(destination = %dest.name, "HL7 ORU^R01 acknowledged (AA)");
                Attempt::Delivered {
                    status: "AA".into(),
                    note: None,
                }
            }
            Ok(Ack::Error(text)) => {
                let error = format!("{} answered AE {text}", dest.name);
                self.retry_or_fail(d, error, true)
            }
            Ok(Ack::Rejected(text)) => {
                let error = format!("{} answered AR {text}", dest.name);
                self.retry_or_fail(d, error, false)
            }
            Err(e) => {
                let error = format!("{:#}", anyhow::Error::from(e));
                self.retry_or_fail(d, error, true)
            }
        }
    }

    /// A job whose deliveries are all done: delivered.
    async fn promote(&self, job: JobId) {
        if let Err(e) = self.store.mark_delivered(job).await {
            tracing::error!(error = %e, "cannot mark the job delivered");
        }
    }

    fn retry_or_fail(&self, d: &DeliveryRow, error: String, retry: bool) -> Attempt {
        let attempts = (d.attempts + 1) as u32;
        if !retry || attempts >= self.config.delivery.max_attempts {
            return Attempt::Failed { error };
        }
        let random = unit_random();
        let delay = backoff(
            self.config.delivery.initial_backoff,
            self.config.delivery.max_backoff,
            attempts - 1,
            random,
        );
        tracing::warn!(%error, retry_in_s = delay.as_secs_f64(), "delivery attempt failed; will retry");
        Attempt::Retry {
            error,
            next_attempt_ms: now_ms() + delay.as_millis() as i64,
        }
    }

    /// Sends the delivery's file, by C-STORE or STOW-RS; a LABELMAP SEG the peer
    /// refuses is replaced by its BINARY one.
    async fn send(&self, dest: &Destination, d: &DeliveryRow) -> Result<Sent, ScuError> {
        let read = |name: &str| {
            let path = self.spool.path(name);
            std::fs::read(&path)
                .map_err(|source| ScuError::File {
                    path: path.display().to_string(),
                    source,
                })
                .and_then(|bytes| OutgoingFile::from_bytes(name.to_string(), bytes))
        };
        let file = read(&d.file)?;
        let fallback = match &d.fallback_file {
            Some(f) if d.variant == Some(SegType::Labelmap) => Some(read(f)?),
            _ => None,
        };
        let refused_labelmap = || {
            Some(format!(
                "{} refused {:?}: sent BINARY",
                dest.name,
                SegType::Labelmap
            ))
        };
        match &dest.transport {
            Transport::Dimse {
                peer, calling_ae, ..
            } => {
                let mut pairs =
                    BTreeSet::from([(file.sop_class.clone(), ts::EXPLICIT_VR_LE.to_string())]);
                if fallback.is_some() {
                    pairs.insert((
                        SEGMENTATION_STORAGE.to_string(),
                        ts::EXPLICIT_VR_LE.to_string(),
                    ));
                }
                let timeouts = ScuTimeouts {
                    connect: dest.timeout,
                    dimse: dest.timeout,
                };
                let mut assoc = Association::connect_over(
                    peer,
                    calling_ae,
                    &pairs,
                    timeouts,
                    self.connectors.get(&dest.name),
                )
                .await?;
                let sent = match (assoc.store(&file).await, fallback) {
                    (Err(ScuError::NoContext { .. }), Some(binary)) => {
                        let (status, comment) = assoc.store(&binary).await?;
                        (status, comment, refused_labelmap())
                    }
                    (other, _) => {
                        let (status, comment) = other?;
                        (status, comment, None)
                    }
                };
                // A failed release does not undo a stored object.
                if let Err(e) = assoc.release().await {
                    tracing::debug!(error = %e, "release after C-STORE failed");
                }
                Ok(sent)
            }
            Transport::Dicomweb(web) => {
                let client = self
                    .web_clients
                    .get(&dest.name)
                    .ok_or_else(|| ScuError::Http {
                        url: web.url.clone(),
                        error: "no HTTP client for this destination".into(),
                    })?;
                match (stow::store(client, web, &file).await?, fallback) {
                    ((DimseStatus::SOP_CLASS_NOT_SUPPORTED, _), Some(binary)) => {
                        let (status, comment) = stow::store(client, web, &binary).await?;
                        Ok((status, comment, refused_labelmap()))
                    }
                    ((status, comment), _) => Ok((status, comment, None)),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let (i, m) = (Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(backoff(i, m, 0, 0.5), Duration::from_secs(5));
        assert_eq!(backoff(i, m, 2, 0.5), Duration::from_secs(20));
        assert_eq!(backoff(i, m, 10, 0.5), Duration::from_secs(60));
        assert_eq!(backoff(i, m, 0, 0.0), Duration::from_secs(4));
        assert!(backoff(i, m, 0, 1.0) <= Duration::from_secs(6));
    }

    #[test]
    fn the_log_names_the_object_delivered() {
        assert_eq!(
            delivered(ResultObject::Seg, Some(SegType::Labelmap)),
            "SEG (LABELMAP)"
        );
        assert_eq!(delivered(ResultObject::Seg, None), "SEG");
        assert_eq!(delivered(ResultObject::Sr, None), "measurement report (SR)");
        assert_eq!(delivered(ResultObject::KeyImages, None), "key image");
    }

    #[test]
    fn only_out_of_resources_is_retried() {
        assert!(DimseStatus::OUT_OF_RESOURCES.is_out_of_resources());
        assert!(DimseStatus(0xA701).is_out_of_resources());
        assert!(!DimseStatus::DATASET_DOES_NOT_MATCH_SOP_CLASS.is_out_of_resources());
        assert!(!DimseStatus::CANNOT_UNDERSTAND.is_out_of_resources());
        assert!(!DimseStatus::SOP_CLASS_NOT_SUPPORTED.is_out_of_resources());
    }
}
