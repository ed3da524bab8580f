//! Keeping one received instance, whoever sent it (a C-STORE or a STOW-RS part): the
//! checks of its data set (bounded inflation, element lengths, parsing, pixel
//! description, what it claims to be), then the spool file made durable while its row
//! is committed. Every refusal is audited with its reason.

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use sha2::{Digest, Sha256};

use super::dataset::{inflate_bounded, parse_instance};
use super::refusal::Refusal;
use super::{Receiver, audit, opt_text, text};
use crate::dicom::uid::{is_ct_image_storage, ts};
use crate::dicom::{Uid, lengths, part10};
use crate::spool::{Incoming, Spool};
use crate::store::{AuditEvent, AuditKind, InstanceMeta, RecordOutcome, SpooledFile};

/// Who sent an instance, as the audit trail and the series record name them.
pub(super) struct Origin<'a> {
    pub(super) rx: &'a Receiver,
    /// The calling AE title (C-STORE) or the name STOW-RS intake is recorded under.
    pub(super) calling_ae: &'a str,
    pub(super) peer: String,
}

/// What became of one instance.
pub(super) enum Admitted {
    /// Kept, in this study and series.
    Stored {
        study: Uid,
        series: Uid,
    },
    /// Acknowledged, not kept: not a CT image.
    Ignored,
    Refused(Refusal),
}

/// One received data set, and what it was sent as.
pub(super) struct Arrival<'a> {
    pub(super) class: &'a str,
    pub(super) instance: Uid,
    pub(super) transfer_syntax: &'a str,
    /// The data set as sent, without a Part 10 header.
    pub(super) dataset: Vec<u8>,
    /// Its spool file, when the node keeps it.
    pub(super) spooled: Option<Spooled>,
    /// The study it must belong to (STOW-RS to `/studies/{study}`).
    pub(super) study: Option<&'a str>,
}

impl Origin<'_> {
    /// Why nothing can be kept now: the spool disk below its watermark, or its free
    /// space unknown.
    pub(super) fn no_room(&self) -> Option<Refusal> {
        let refusal = match self.rx.spool.free_bytes() {
            Ok(free) if free < self.rx.config.dicom.min_free_disk_bytes => Refusal::DiskLow,
            Err(e) => Refusal::FreeSpaceUnknown(e),
            Ok(_) => return None,
        };
        tracing::error!(reason = %refusal, "spool disk below its free-space watermark: refusing to store");
        Some(refusal)
    }

    /// A spool file for a data set the node keeps (a CT image with a valid SOP Instance
    /// UID), its Part 10 header written; `None` for the others, which are checked and
    /// answered without one.
    pub(super) fn start_spooling(
        &self,
        class: &str,
        instance: &str,
        transfer_syntax: &str,
    ) -> anyhow::Result<Option<Spooling>> {
        if !is_ct_image_storage(class) || Uid::parse(instance).is_err() {
            return Ok(None);
        }
        let header = part10::header(class, instance, transfer_syntax, self.calling_ae, 0)?;
        let mut file = self.rx.spool.create()?;
        file.write(&header)?;
        Ok(Some(Spooling {
            file,
            sha: Sha256::new(),
            header,
            error: None,
        }))
    }

    /// Checks and keeps one instance; the node's own failures are logged and refused as
    /// [`Refusal::CannotStore`].
    pub(super) async fn admit(&self, arrival: Arrival<'_>) -> Admitted {
        match self.try_admit(arrival).await {
            Ok(a) => a,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not store instance");
                Admitted::Refused(Refusal::CannotStore)
            }
        }
    }

    async fn try_admit(&self, arrival: Arrival<'_>) -> anyhow::Result<Admitted> {
        let Arrival {
            class,
            instance,
            transfer_syntax,
            dataset,
            spooled,
            study,
        } = arrival;
        // What the spool file holds: its Part 10 header and the data set as sent.
        let size = (spooled.as_ref().map_or(0, |s| s.header.len()) + dataset.len()) as i64;
        // A deflated data set is inflated here, within a bound, before anything parses
        // it: the limit on received bytes says nothing about what they inflate to.
        let (dataset, parse_syntax) = if transfer_syntax == ts::DEFLATED_EXPLICIT_VR_LE {
            let inflated = inflate_bounded(&dataset, self.rx.config.dicom.max_object_bytes);
            drop(dataset);
            match inflated {
                Ok(inflated) => (inflated, ts::EXPLICIT_VR_LE),
                Err(refusal) => return Ok(self.refuse(refusal, None).await),
            }
        } else {
            (dataset, transfer_syntax)
        };
        let pixel_data = match lengths::check(&dataset, parse_syntax) {
            Ok(p) => p,
            Err(e) => return Ok(self.refuse(Refusal::Malformed(e.to_string()), None).await),
        };
        let built;
        let header = match &spooled {
            Some(s) if parse_syntax == transfer_syntax => &s.header,
            _ => {
                // Parsed as it is held here (inflated); a spooled file keeps what was sent.
                built = part10::header(class, instance.as_str(), parse_syntax, self.calling_ae, 0)?;
                &built
            }
        };
        let parsed = parse_instance(header, &dataset, pixel_data);
        drop(dataset);
        let object = match parsed {
            Ok(o) => o,
            Err(refusal) => return Ok(self.refuse(refusal, None).await),
        };
        let dataset_class = text(&object, tags::SOP_CLASS_UID);
        let dataset_instance = text(&object, tags::SOP_INSTANCE_UID);
        if dataset_class != class || dataset_instance != instance.as_str() {
            let refusal = Refusal::RequestMismatch {
                class: dataset_class,
                instance: dataset_instance,
            };
            return Ok(self.refuse(refusal, Some(&object)).await);
        }
        if let Some(expected) = study {
            let found = text(&object, tags::STUDY_INSTANCE_UID);
            if found != expected {
                return Ok(self.refuse(Refusal::OtherStudy(found), Some(&object)).await);
            }
        }
        if !is_ct_image_storage(class) {
            tracing::debug!(sop_class = class, "instance ignored: not a CT image");
            audit(
                self.rx,
                AuditEvent {
                    detail: serde_json::json!({
                        "sop_class": class,
                        "sop_instance": instance.as_str(),
                        "reason": format!("SOP class {class} is not CT image storage; not kept"),
                    }),
                    ..self.object_event(AuditKind::InstanceIgnored, &object)
                },
            )
            .await;
            return Ok(Admitted::Ignored);
        }
        let meta = match InstanceMeta::from_object(&object) {
            Ok(m) => m,
            Err(e) => return Ok(self.refuse(Refusal::Attributes(e), Some(&object)).await),
        };
        let spooled = spooled.ok_or_else(|| anyhow::anyhow!("a CT image was not spooled"))?;
        let record = SpooledFile {
            file_name: spooled.file.name().to_string(),
            size_bytes: size,
            sha256: spooled.sha256,
            transfer_syntax: transfer_syntax.to_string(),
        };
        self.commit(&meta, &record, spooled.file).await?;
        tracing::debug!(series_uid = %meta.series_uid, "instance stored");
        Ok(Admitted::Stored {
            study: meta.study_uid,
            series: meta.series_uid,
        })
    }

    /// Makes the spool file durable (fsync, rename, directory fsync) while its row is
    /// committed, and returns once both are done. A new instance's row may commit
    /// first: if the node stops before the file is durable, the instance was never
    /// acknowledged and the start-up check drops the row. A replacement's row waits
    /// for the durable file, so an acknowledged copy is never traded for one that was
    /// not.
    async fn commit(
        &self,
        meta: &InstanceMeta,
        record: &SpooledFile,
        file: Incoming,
    ) -> anyhow::Result<()> {
        let persist = tokio::task::spawn_blocking(move || file.persist());
        let recorded = self
            .rx
            .store
            .record_instance(meta, record, self.calling_ae, false)
            .await;
        let persisted = persist.await?;
        let mut written = Written {
            spool: &self.rx.spool,
            name: persisted.as_ref().ok().cloned(),
        };
        let outcome = match (persisted, recorded) {
            // The stored copy is identical: the new file was not needed.
            (_, Ok(RecordOutcome::Unchanged)) => return Ok(()),
            (Err(e), Ok(RecordOutcome::Added)) => {
                self.rx
                    .store
                    .forget_instance(meta.sop_instance_uid.as_str(), &record.file_name)
                    .await?;
                return Err(e.into());
            }
            (Err(e), _) => return Err(e.into()),
            (Ok(_), Err(e)) => return Err(e.into()),
            (Ok(_), Ok(RecordOutcome::ReplacementNeedsDurableFile)) => {
                self.rx
                    .store
                    .record_instance(meta, record, self.calling_ae, true)
                    .await?
            }
            (Ok(_), Ok(outcome)) => outcome,
        };
        match outcome {
            RecordOutcome::Unchanged => {}
            RecordOutcome::Replaced { old_file } => {
                written.keep();
                tracing::info!(sop_instance = %meta.sop_instance_uid, "instance re-sent with new content: replaced");
                self.rx.spool.remove(&old_file)?;
            }
            RecordOutcome::Added | RecordOutcome::ReplacementNeedsDurableFile => written.keep(),
        }
        Ok(())
    }

    fn object_event<'o>(
        &'o self,
        event: AuditKind,
        object: &'o DefaultDicomObject,
    ) -> AuditEvent<'o> {
        AuditEvent {
            calling_ae: Some(self.calling_ae),
            peer: Some(self.peer.clone()),
            study_uid: opt_text(object, tags::STUDY_INSTANCE_UID),
            series_uid: opt_text(object, tags::SERIES_INSTANCE_UID),
            patient_id: opt_text(object, tags::PATIENT_ID),
            accession_number: opt_text(object, tags::ACCESSION_NUMBER),
            ..AuditEvent::of(event)
        }
    }

    /// Logs and audits a refusal (with the object's identifiers when it was parsed).
    pub(super) async fn refuse(
        &self,
        refusal: Refusal,
        object: Option<&DefaultDicomObject>,
    ) -> Admitted {
        let (status, reason) = (refusal.status(), refusal.to_string());
        tracing::warn!(%status, %reason, retryable = refusal.retryable(), "instance refused");
        let base = match object {
            Some(o) => self.object_event(AuditKind::InstanceRefused, o),
            None => AuditEvent {
                calling_ae: Some(self.calling_ae),
                peer: Some(self.peer.clone()),
                ..AuditEvent::of(AuditKind::InstanceRefused)
            },
        };
        audit(
            self.rx,
            AuditEvent {
                detail: serde_json::json!({
                    "status": status.to_string(),
                    "reason": reason,
                    "retryable": refusal.retryable(),
                }),
                ..base
            },
        )
        .await;
        Admitted::Refused(refusal)
    }
}

/// A CT data set being streamed into the spool after the Part 10 header the node
/// wrote, and hashed as it arrives: the SHA-256 of the data set as the sender sent it
/// is the instance's content, whoever sends it again.
pub(super) struct Spooling {
    file: Incoming,
    sha: Sha256,
    header: Vec<u8>,
    /// The first write error; the instance is refused once the data set is read.
    error: Option<std::io::Error>,
}

impl Spooling {
    pub(super) fn append(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.sha.update(bytes);
            if let Err(e) = self.file.write(bytes) {
                self.error = Some(e);
            }
        }
    }

    pub(super) fn finish(self) -> std::io::Result<Spooled> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Spooled {
                file: self.file,
                sha256: format!("{:x}", self.sha.finalize()),
                header: self.header,
            }),
        }
    }
}

/// A complete spool file in `tmp/`, not yet durable.
pub(super) struct Spooled {
    file: Incoming,
    sha256: String,
    header: Vec<u8>,
}

/// A file written to the spool for an instance not yet recorded: removed when dropped
/// unless kept, so that every refusal or error path cleans up after itself.
struct Written<'a> {
    spool: &'a Spool,
    name: Option<String>,
}

impl Written<'_> {
    fn keep(&mut self) {
        self.name = None;
    }
}

impl Drop for Written<'_> {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            if let Err(e) = self.spool.remove(&name) {
                tracing::error!(error = %e, "could not remove an unrecorded spool file");
            }
        }
    }
}
