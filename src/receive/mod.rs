//! The DICOM SCP: accepts associations (access control, negotiation, limits), answers
//! C-ECHO and C-STORE (PS3.4 Annex A and B, PS3.7 §9.1.1 and §9.1.5). A C-STORE is
//! answered with success only after the instance is durably in the spool and
//! recorded. CT images are kept; other storage objects a PACS routes with a study are
//! acknowledged, not kept, and audited as ignored. Bad input gets an error status or
//! an abort and never affects other associations.

mod accept;
mod admit;
mod dataset;
pub mod negotiation;
mod pending;
mod refusal;
mod stow;

pub use stow::{StowFailure, Stowed};

pub use accept::{Listener, serve};
pub(crate) use dataset::{inflate_bounded, parse_instance};

use std::net::SocketAddr;
use std::sync::Arc;

use dicom_object::DefaultDicomObject;
use dicom_ul::pdu::Pdu;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dicom::uid::VERIFICATION;
use crate::dicom::{Command, CommandField, DimseStatus, Uid, functional};
use crate::spool::Spool;
use crate::store::{AuditEvent, AuditKind, Store};
use crate::ul::{Event, UlError, UlStream};
use admit::{Admitted, Arrival, Origin, Spooled, Spooling};
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
    let opened = tokio::select! {
        _ = slot.evicted.cancelled() => {
            tracing::debug!("dropped from the pending queue before sending A-ASSOCIATE-RQ");
            return;
        }
        _ = shutdown.cancelled() => return,
        opened = accept::open(rx, stream, peer, tls) => opened,
    };
    drop(slot);
    let Some((ul, certificate, request)) = opened else {
        return;
    };
    converse(
        rx,
        ul,
        request,
        peer,
        certificate.as_ref(),
        permits,
        shutdown,
    )
    .await;
}

/// An association from its first PDU on: the A-ASSOCIATE-RQ decided on (rejected, or
/// accepted once a slot is free), then its DIMSE messages served until release or
/// abort.
pub(crate) async fn converse(
    rx: &Receiver,
    mut ul: UlStream,
    request: Result<Pdu, UlError>,
    peer: SocketAddr,
    certificate: Option<&CertificateDer<'static>>,
    permits: &Arc<Semaphore>,
    shutdown: &CancellationToken,
) {
    let dicom = &rx.config.dicom;
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
    let decision = match negotiate(&rx.config.ae_title, dicom, &rq, peer.ip(), certificate) {
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
        origin: Origin {
            rx,
            calling_ae: accepted.calling_ae.as_str(),
            peer: peer.to_string(),
        },
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
    origin: Origin<'a>,
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
        let dicom = &self.origin.rx.config.dicom;
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
        let dicom = &self.origin.rx.config.dicom;
        let mut refusal = self.origin.no_room().map(|r| Verdict::refuse(&r));
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

    /// A spool file for a C-STORE whose data set the node keeps: a CT image sent on its
    /// own presentation context with a valid SOP Instance UID.
    fn start_spooling(
        &self,
        command: &Command,
        context: &AcceptedContext,
    ) -> anyhow::Result<Option<Spooling>> {
        let class = command.affected_sop_class.as_deref().unwrap_or_default();
        let instance = command.affected_sop_instance.as_deref().unwrap_or_default();
        if class != context.abstract_syntax {
            return Ok(None);
        }
        self.origin
            .start_spooling(class, instance, &context.transfer_syntax)
    }

    /// Checks what the request says against its context, then keeps the instance.
    async fn store(
        &mut self,
        command: &Command,
        context: &AcceptedContext,
        received: Received,
    ) -> Verdict {
        let class = command.affected_sop_class.as_deref().unwrap_or_default();
        let admitted = if class != context.abstract_syntax {
            let refusal = Refusal::ContextMismatch(class.to_string());
            self.origin.refuse(refusal, None).await
        } else {
            match Uid::parse(command.affected_sop_instance.as_deref().unwrap_or_default()) {
                Err(e) => self.origin.refuse(Refusal::BadInstanceUid(e), None).await,
                Ok(instance) => {
                    let arrival = Arrival {
                        class,
                        instance,
                        transfer_syntax: &context.transfer_syntax,
                        dataset: received.dataset,
                        spooled: received.spooled,
                        study: None,
                    };
                    self.origin.admit(arrival).await
                }
            }
        };
        match admitted {
            Admitted::Stored { .. } => {
                self.stored += 1;
                Verdict::success()
            }
            Admitted::Ignored => {
                self.ignored += 1;
                Verdict::success()
            }
            Admitted::Refused(refusal) => Verdict::refuse(&refusal),
        }
    }
}

/// A data set read from the peer, with its spool file when the node keeps it.
struct Received {
    dataset: Vec<u8>,
    spooled: Option<Spooled>,
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
