//! The DICOM SCP: accepts associations (access control, negotiation, limits), answers
//! C-ECHO and C-STORE (PS3.4 Annex A and B, PS3.7 §9.1.1 and §9.1.5). A C-STORE is
//! answered with success only after the instance is durably in the spool and
//! recorded. CT images are kept; other storage objects a PACS routes with a study are
//! acknowledged, not kept, and audited as ignored. Bad input gets an error status or
//! an abort and never affects other associations.

mod accept;
mod dataset;
pub mod negotiation;
mod pending;
mod refusal;

pub use accept::{Listener, serve};

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_ul::pdu::Pdu;
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dicom::lengths;
use crate::dicom::uid::{VERIFICATION, is_ct_image_storage, ts};
use crate::dicom::{Command, CommandField, DimseStatus, Uid, functional, part10};
use crate::spool::{Incoming, Spool};
use crate::store::{AuditEvent, AuditKind, InstanceMeta, RecordOutcome, SpooledFile, Store};
use crate::ul::{Event, UlError, UlStream};
use dataset::{inflate_bounded, parse_instance};
use negotiation::{AcceptedContext, Rejected, negotiate};
use pending::Slot;
use refusal::Refusal;

/// Largest command set accepted; real ones are under 200 bytes.
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// What the SCP needs, shared by all associations.
pub struct Receiver {
    pub config: Arc<Config>,
    pub store: Store,
    pub spool: Spool,
}

async fn association(
    rx: &Receiver,
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    permits: &Arc<Semaphore>,
    tls: Option<&TlsAcceptor>,
    shutdown: &CancellationToken,
) {
    let dicom = &rx.config.dicom;
    let opened = tokio::select! {
        _ = slot.evicted.cancelled() => {
            tracing::debug!("dropped from the pending queue before sending A-ASSOCIATE-RQ");
            return;
        }
        _ = shutdown.cancelled() => return,
        opened = accept::open(rx, stream, peer, tls) => opened,
    };
    drop(slot);
    let Some((mut ul, certificate, request)) = opened else {
        return;
    };
    let rq = match request {
        Ok(Pdu::AssociationRQ(rq)) => rq,
        Ok(other) => {
            tracing::warn!(pdu = %other.short_description(), "expected A-ASSOCIATE-RQ, aborting");
            ul.abort().await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "association not established");
            ul.abort().await;
            return;
        }
    };
    // An accepted request waits up to the ARTIM time for an association slot.
    let decision = match negotiate(
        &rx.config.ae_title,
        dicom,
        &rq,
        peer.ip(),
        certificate.as_ref(),
    ) {
        Ok(accepted) => {
            match tokio::time::timeout(dicom.artim_timeout, permits.clone().acquire_owned()).await {
                Ok(Ok(permit)) => Ok((accepted, permit)),
                _ => Err(Rejected::local_limit(&rq, dicom.max_associations)),
            }
        }
        Err(rejected) => Err(rejected),
    };
    let (accepted, _permit) = match decision {
        Ok(a) => a,
        Err(rejected) => {
            tracing::warn!(reason = %rejected.reason, "association rejected");
            audit(
                rx,
                AuditEvent {
                    calling_ae: Some(&rejected.calling_ae),
                    peer: Some(peer.to_string()),
                    detail: serde_json::json!({ "called_ae": rejected.called_ae, "reason": rejected.reason }),
                    ..AuditEvent::of(AuditKind::AssociationRejected)
                },
            )
            .await;
            let _ = ul
                .send_pdu(&Pdu::AssociationRJ(rejected.response), dicom.dimse_timeout)
                .await;
            ul.close().await;
            return;
        }
    };
    tracing::Span::current().record("calling_ae", accepted.calling_ae.as_str());
    if let Err(e) = ul
        .send_pdu(
            &Pdu::AssociationAC(accepted.response.clone()),
            dicom.dimse_timeout,
        )
        .await
    {
        tracing::warn!(error = %e, "could not send A-ASSOCIATE-AC");
        return;
    }
    ul.set_peer_max_pdu(accepted.peer_max_pdu);
    tracing::info!(contexts = accepted.contexts.len(), "association accepted");
    audit(
        rx,
        AuditEvent {
            calling_ae: Some(accepted.calling_ae.as_str()),
            peer: Some(peer.to_string()),
            detail: serde_json::json!({ "contexts": accepted.contexts.len() }),
            ..AuditEvent::of(AuditKind::AssociationAccepted)
        },
    )
    .await;

    let mut session = Session {
        rx,
        calling_ae: accepted.calling_ae.as_str(),
        peer,
        stored: 0,
        ignored: 0,
        refused: 0,
        shutdown,
    };
    let outcome = session.serve_messages(&mut ul, &accepted.contexts).await;
    let (stored, ignored, refused) = (session.stored, session.ignored, session.refused);
    match outcome {
        Ok(()) => {
            tracing::info!(stored, ignored, refused, "association released");
            ul.close().await;
        }
        Err(UlError::Closed) if shutdown.is_cancelled() => {
            tracing::info!(stored, ignored, refused, "association aborted by shutdown");
            ul.abort().await;
        }
        Err(UlError::Closed) => {
            tracing::warn!(
                stored,
                ignored,
                refused,
                "peer closed the connection without release"
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, stored, ignored, refused, "association aborted");
            ul.abort().await;
        }
    }
}

struct Session<'a> {
    rx: &'a Receiver,
    calling_ae: &'a str,
    peer: SocketAddr,
    stored: u64,
    ignored: u64,
    refused: u64,
    /// The node is stopping: the message in progress is finished and answered, then
    /// the association is aborted before the next one.
    shutdown: &'a CancellationToken,
}

/// The verdict on one C-STORE.
struct Verdict {
    status: DimseStatus,
    comment: Option<String>,
}

impl Verdict {
    fn success() -> Self {
        Self {
            status: DimseStatus::SUCCESS,
            comment: None,
        }
    }

    fn refuse(refusal: &Refusal) -> Self {
        Self {
            status: refusal.status(),
            comment: Some(refusal.to_string()),
        }
    }
}

impl Session<'_> {
    /// Serves DIMSE messages until release (Ok) or a protocol failure (Err). At shutdown
    /// a message in progress is read, stored and answered; waiting for the next one ends
    /// the association ([`UlError::Closed`], then A-ABORT).
    async fn serve_messages(
        &mut self,
        ul: &mut UlStream,
        contexts: &std::collections::HashMap<u8, AcceptedContext>,
    ) -> Result<(), UlError> {
        let dicom = &self.rx.config.dicom;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => return Err(UlError::Closed),
                next = ul.next_event(dicom.idle_timeout, "the next request") => next?,
            };
            let first = match next {
                Event::ReleaseRq => {
                    ul.send_pdu(&Pdu::ReleaseRP, dicom.dimse_timeout).await?;
                    return Ok(());
                }
                Event::Abort => return Err(UlError::Closed),
                Event::ReleaseRp => {
                    return Err(UlError::Malformed("unexpected A-RELEASE-RP".into()));
                }
                Event::Pdv(p) => p,
            };
            if !first.is_command {
                return Err(UlError::Malformed(
                    "data set fragment where a command was expected".into(),
                ));
            }
            let pc_id = first.pc_id;
            let context = contexts.get(&pc_id).ok_or_else(|| {
                UlError::Malformed(format!("presentation context {pc_id} was not accepted"))
            })?;
            let mut command_bytes = ul.pdv_data(&first).to_vec();
            let mut last = first.is_last;
            while !last {
                let pdv = expect_pdv(ul, pc_id, true, dicom.dimse_timeout).await?;
                command_bytes.extend_from_slice(ul.pdv_data(&pdv));
                if command_bytes.len() > MAX_COMMAND_BYTES {
                    return Err(UlError::Malformed("command set larger than 64 KiB".into()));
                }
                last = pdv.is_last;
            }
            let command = Command::decode(&command_bytes)
                .map_err(|e| UlError::Malformed(format!("bad command set: {e}")))?;
            let verdict = match command.command_field() {
                CommandField::C_ECHO_RQ if !command.has_dataset => {
                    // PS3.7 9.3.5: a C-ECHO names the Verification SOP Class, on a
                    // context negotiated for it.
                    let class = command
                        .affected_sop_class
                        .as_deref()
                        .map(|c| c.trim_end_matches('\0'));
                    if class == Some(VERIFICATION) && context.abstract_syntax == VERIFICATION {
                        Verdict::success()
                    } else {
                        Verdict::refuse(&Refusal::EchoWithoutVerification)
                    }
                }
                CommandField::C_STORE_RQ if command.has_dataset => {
                    match self
                        .read_dataset(ul, pc_id, Some((&command, context)))
                        .await?
                    {
                        Ok(received) => self.store(&command, context, received).await,
                        Err(refusal) => refusal,
                    }
                }
                field if field.is_request() => {
                    if command.has_dataset {
                        self.read_dataset(ul, pc_id, None).await?.ok();
                    }
                    Verdict::refuse(&Refusal::UnsupportedOperation)
                }
                _ => return Err(UlError::Malformed("unexpected response message".into())),
            };
            if !verdict.status.is_success() {
                self.refused += 1;
            }
            let response = command.response(verdict.status, verdict.comment).encode();
            ul.send_message(pc_id, &response, None, dicom.dimse_timeout)
                .await?;
        }
    }

    /// Reads a data set's fragments. A CT image for its context is streamed into a
    /// spool file (Part 10 header first) and hashed as it arrives, so that only the
    /// fsync is left when the last fragment is in. Over the size limit or the disk
    /// watermark the fragments are drained, not kept, and the refusal is returned.
    async fn read_dataset(
        &self,
        ul: &mut UlStream,
        pc_id: u8,
        keep: Option<(&Command, &AcceptedContext)>,
    ) -> Result<Result<Received, Verdict>, UlError> {
        let dicom = &self.rx.config.dicom;
        let mut refusal = match self.rx.spool.free_bytes() {
            Ok(free) if free < dicom.min_free_disk_bytes => {
                Some(Verdict::refuse(&Refusal::DiskLow))
            }
            Err(e) => Some(Verdict::refuse(&Refusal::FreeSpaceUnknown(e))),
            Ok(_) => None,
        };
        if refusal.is_some() {
            tracing::error!("spool disk below its free-space watermark: refusing C-STORE");
        }
        let mut spooling = match (&refusal, keep) {
            (None, Some((command, context))) => match self.start_spooling(command, context) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "cannot start a spool file");
                    refusal = Some(Verdict::refuse(&Refusal::CannotStore));
                    None
                }
            },
            _ => None,
        };
        let mut data = Vec::new();
        loop {
            let pdv = expect_pdv(ul, pc_id, false, dicom.dimse_timeout).await?;
            if refusal.is_none() {
                let bytes = ul.pdv_data(&pdv);
                if (data.len() + bytes.len()) as u64 > dicom.max_object_bytes {
                    refusal = Some(Verdict::refuse(&Refusal::TooLarge));
                    data = Vec::new();
                    spooling = None;
                } else {
                    data.extend_from_slice(bytes);
                    if let Some(s) = &mut spooling {
                        s.append(bytes);
                    }
                }
            }
            if pdv.is_last {
                break;
            }
        }
        if let Some(refusal) = refusal {
            return Ok(Err(refusal));
        }
        let spooled = match spooling.map(Spooling::finish).transpose() {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot write a spool file");
                return Ok(Err(Verdict::refuse(&Refusal::CannotStore)));
            }
        };
        Ok(Ok(Received {
            dataset: data,
            spooled,
        }))
    }

    /// A spool file for a C-STORE whose data set the node keeps (a CT image sent on its
    /// own presentation context with a valid SOP Instance UID); `None` for the others,
    /// which are checked and answered after reading.
    fn start_spooling(
        &self,
        command: &Command,
        context: &AcceptedContext,
    ) -> anyhow::Result<Option<Spooling>> {
        let class = command.affected_sop_class.as_deref().unwrap_or_default();
        let instance = command.affected_sop_instance.as_deref().unwrap_or_default();
        if !is_ct_image_storage(class)
            || class != context.abstract_syntax
            || Uid::parse(instance).is_err()
        {
            return Ok(None);
        }
        let header = part10::header(
            class,
            instance,
            &context.transfer_syntax,
            self.calling_ae,
            0,
        )?;
        let mut file = self.rx.spool.create()?;
        file.write(&header)?;
        Ok(Some(Spooling {
            file,
            sha: Sha256::new(),
            header,
            error: None,
        }))
    }

    async fn store(
        &mut self,
        command: &Command,
        context: &AcceptedContext,
        received: Received,
    ) -> Verdict {
        match self.try_store(command, context, received).await {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "could not store instance");
                Verdict::refuse(&Refusal::CannotStore)
            }
        }
    }

    async fn try_store(
        &mut self,
        command: &Command,
        context: &AcceptedContext,
        received: Received,
    ) -> anyhow::Result<Verdict> {
        let class = command.affected_sop_class.as_deref().unwrap_or_default();
        if class != context.abstract_syntax {
            return Ok(self
                .refuse_instance(Refusal::ContextMismatch(class.to_string()), None)
                .await);
        }
        let instance =
            match Uid::parse(command.affected_sop_instance.as_deref().unwrap_or_default()) {
                Ok(uid) => uid,
                Err(e) => {
                    return Ok(self.refuse_instance(Refusal::BadInstanceUid(e), None).await);
                }
            };
        let Received { dataset, spooled } = received;
        // What the spool file holds: its Part 10 header and the data set as sent.
        let size = (spooled.as_ref().map_or(0, |s| s.header.len()) + dataset.len()) as i64;
        // A deflated data set is inflated here, within a bound, before anything parses
        // it: the limit on received bytes says nothing about what they inflate to.
        let (dataset, parse_syntax) = if context.transfer_syntax == ts::DEFLATED_EXPLICIT_VR_LE {
            let inflated = inflate_bounded(&dataset, self.rx.config.dicom.max_object_bytes);
            drop(dataset);
            match inflated {
                Ok(inflated) => (inflated, ts::EXPLICIT_VR_LE),
                Err(refusal) => return Ok(self.refuse_instance(refusal, None).await),
            }
        } else {
            (dataset, context.transfer_syntax.as_str())
        };
        let pixel_data = match lengths::check(&dataset, parse_syntax) {
            Ok(p) => p,
            Err(e) => {
                let refusal = Refusal::Malformed(e.to_string());
                return Ok(self.refuse_instance(refusal, None).await);
            }
        };
        let built;
        let header = match &spooled {
            Some(s) if parse_syntax == context.transfer_syntax => &s.header,
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
            Err(refusal) => return Ok(self.refuse_instance(refusal, None).await),
        };
        let dataset_class = text(&object, tags::SOP_CLASS_UID);
        let dataset_instance = text(&object, tags::SOP_INSTANCE_UID);
        if dataset_class != class || dataset_instance != instance.as_str() {
            let refusal = Refusal::RequestMismatch {
                class: dataset_class,
                instance: dataset_instance,
            };
            return Ok(self.refuse_instance(refusal, Some(&object)).await);
        }
        if !is_ct_image_storage(class) {
            self.ignored += 1;
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
            return Ok(Verdict::success());
        }
        let meta = match InstanceMeta::from_object(&object) {
            Ok(m) => m,
            Err(e) => {
                return Ok(self
                    .refuse_instance(Refusal::Attributes(e), Some(&object))
                    .await);
            }
        };
        let spooled = spooled.ok_or_else(|| anyhow::anyhow!("a CT image was not spooled"))?;
        let record = SpooledFile {
            file_name: spooled.file.name().to_string(),
            size_bytes: size,
            sha256: spooled.sha256,
            transfer_syntax: context.transfer_syntax.clone(),
        };
        self.commit(&meta, &record, spooled.file).await?;
        tracing::debug!(series_uid = %meta.series_uid, "instance stored");
        self.stored += 1;
        Ok(Verdict::success())
    }

    /// Makes the spool file durable (fsync, rename, directory fsync) while its row is
    /// committed, and returns once both are done. A new instance's row may commit
    /// first: if the node stops before the file is durable, the C-STORE was never
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
            peer: Some(self.peer.to_string()),
            study_uid: opt_text(object, tags::STUDY_INSTANCE_UID),
            series_uid: opt_text(object, tags::SERIES_INSTANCE_UID),
            patient_id: opt_text(object, tags::PATIENT_ID),
            accession_number: opt_text(object, tags::ACCESSION_NUMBER),
            ..AuditEvent::of(event)
        }
    }

    async fn refuse_instance(
        &self,
        refusal: Refusal,
        object: Option<&DefaultDicomObject>,
    ) -> Verdict {
        let verdict = Verdict::refuse(&refusal);
        let (status, reason) = (verdict.status, refusal.to_string());
        tracing::warn!(%status, %reason, retryable = refusal.retryable(), "C-STORE refused");
        let base = match object {
            Some(o) => self.object_event(AuditKind::InstanceRefused, o),
            None => AuditEvent {
                calling_ae: Some(self.calling_ae),
                peer: Some(self.peer.to_string()),
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
        verdict
    }
}

/// A data set read from the peer, with its spool file when the node keeps it.
struct Received {
    dataset: Vec<u8>,
    spooled: Option<Spooled>,
}

/// A CT data set being streamed into the spool after the Part 10 header the node
/// wrote, and hashed as its fragments arrive: the SHA-256 of the data set as the sender
/// sent it is the instance's content, whoever sends it again.
struct Spooling {
    file: Incoming,
    sha: Sha256,
    header: Vec<u8>,
    /// The first write error; the C-STORE is refused once the data set is read.
    error: Option<std::io::Error>,
}

impl Spooling {
    fn append(&mut self, bytes: &[u8]) {
        if self.error.is_none() {
            self.sha.update(bytes);
            if let Err(e) = self.file.write(bytes) {
                self.error = Some(e);
            }
        }
    }

    fn finish(self) -> std::io::Result<Spooled> {
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
struct Spooled {
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

async fn expect_pdv(
    ul: &mut UlStream,
    pc_id: u8,
    command: bool,
    timeout: std::time::Duration,
) -> Result<crate::ul::Pdv, UlError> {
    match ul.next_event(timeout, "the rest of a message").await? {
        Event::Pdv(p) if p.pc_id == pc_id && p.is_command == command => Ok(p),
        Event::Pdv(_) => Err(UlError::Malformed(
            "fragments of two messages interleaved".into(),
        )),
        Event::Abort => Err(UlError::Closed),
        _ => Err(UlError::Malformed(
            "release requested in the middle of a message".into(),
        )),
    }
}

fn text(object: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    opt_text(object, tag).unwrap_or_default().to_string()
}

fn opt_text(object: &DefaultDicomObject, tag: dicom_core::Tag) -> Option<&str> {
    functional::get(object, tag)
        .and_then(|e| e.string().ok())
        .map(|s| s.trim_matches([' ', '\0']))
}

async fn audit(rx: &Receiver, event: AuditEvent<'_>) {
    if let Err(e) = rx.store.audit(&event).await {
        tracing::error!(error = %e, event = event.event.as_str(), "could not write audit record");
    }
}
