//! Accepting connections: the listeners (plain and DICOM TLS), the pending queue they
//! share with the association slots, and a connection's first steps (TLS handshake,
//! A-ASSOCIATE-RQ) before [`association`](super::association) takes over.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use dicom_ul::pdu::Pdu;
use rustls_pki_types::CertificateDer;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::pending::Pending;
use super::{Receiver, association, audit};
use crate::store::{AuditEvent, AuditKind};
use crate::ul::{UlError, UlStream};

/// A DICOM listener: plain, or DICOM TLS with its acceptor.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
}

/// Accepts associations on every listener until `shutdown`; each runs in its own task
/// on `tasks`. The listeners share the association slots and the pending queue.
pub async fn serve(
    listeners: Vec<Listener>,
    receiver: Arc<Receiver>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let dicom = &receiver.config.dicom;
    let shared = Arc::new(Shared {
        permits: Arc::new(Semaphore::new(dicom.max_associations)),
        pending: Pending::new(dicom.max_pending, dicom.max_pending_per_address),
        next_id: AtomicU64::new(1),
    });
    for listener in listeners {
        tasks.spawn(accept_loop(
            listener,
            receiver.clone(),
            shared.clone(),
            shutdown.clone(),
            tasks.clone(),
        ));
    }
}

/// What the listeners share.
struct Shared {
    permits: Arc<Semaphore>,
    pending: Arc<Pending>,
    next_id: AtomicU64,
}

async fn accept_loop(
    listener: Listener,
    receiver: Arc<Receiver>,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    let tls = listener.tls.map(Arc::new);
    loop {
        // Every connection is accepted at once into the pending queue; an association
        // slot is taken only once its A-ASSOCIATE-RQ has been accepted.
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.tcp.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    continue;
                }
            },
        };
        let (slot, dropped) = shared.pending.enter(peer.ip());
        if dropped > 0 {
            tracing::debug!(%peer, dropped, "pending connections full: oldest waiting dropped");
        }
        let assoc_id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let receiver = receiver.clone();
        let shutdown = shutdown.clone();
        let shared = shared.clone();
        let tls = tls.clone();
        let span = tracing::info_span!("association", assoc_id, peer_addr = %peer, tls = tls.is_some(), calling_ae = tracing::field::Empty);
        // The association watches `shutdown` itself: a message in progress is answered
        // before it ends (the node's shutdown deadline bounds the wait).
        tasks.spawn(
            async move {
                let tls = tls.as_deref();
                association(
                    &receiver,
                    stream,
                    peer,
                    slot,
                    &shared.permits,
                    tls,
                    &shutdown,
                )
                .await
            }
            .instrument(span),
        );
    }
}

/// A connection's first steps, within the ARTIM time each: the TLS handshake (with the
/// verified client certificate, if any), then the A-ASSOCIATE-RQ.
pub(super) async fn open(
    rx: &Receiver,
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<&TlsAcceptor>,
) -> Option<(
    UlStream,
    Option<CertificateDer<'static>>,
    Result<Pdu, UlError>,
)> {
    let dicom = &rx.config.dicom;
    let stream = crate::ul::plain(stream);
    let (mut ul, certificate) = match tls {
        None => (UlStream::new(stream, dicom.max_pdu_length), None),
        Some(acceptor) => {
            match tokio::time::timeout(dicom.artim_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let certificate = tls
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|c| c.clone().into_owned());
                    (UlStream::new(tls, dicom.max_pdu_length), certificate)
                }
                failed => {
                    let reason = match failed {
                        Ok(Err(e)) => format!("TLS handshake failed: {e}"),
                        _ => "TLS handshake timed out".to_string(),
                    };
                    tracing::warn!(%reason, "association not established");
                    audit(
                        rx,
                        AuditEvent {
                            peer: Some(peer.to_string()),
                            detail: serde_json::json!({ "reason": reason }),
                            ..AuditEvent::of(AuditKind::AssociationRejected)
                        },
                    )
                    .await;
                    return None;
                }
            }
        }
    };
    let request = ul
        .read_control_pdu(dicom.artim_timeout, "A-ASSOCIATE-RQ")
        .await;
    Some((ul, certificate, request))
}
