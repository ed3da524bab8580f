//! The C-STORE / C-ECHO SCU (PS3.4 Annex A and B as requester), and Query/Retrieve
//! ([`query`]) over the same associations: opens an association to a peer, proposes one presentation context per (SOP class, transfer syntax) pair it
//! will send, and sends Part 10 files unchanged. `segnode echo` and `segnode send` use
//! it directly; the outbox ([`outbox`]) delivers results with it. The webhook sender
//! ([`webhooks`]), the node's other outbound worker, tells worklists of job changes
//! with the same back-off.

pub mod outbox;
pub mod query;
pub mod stow;
pub mod wado;
pub mod webhooks;

pub use crate::dicom::PeerAddress;

use std::collections::BTreeSet;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRQ, Pdu, PresentationContextProposed, PresentationContextResultReason,
    UserVariableItem,
};
use tokio::net::TcpStream;

use crate::dicom::uid::{
    APPLICATION_CONTEXT, IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME, VERIFICATION, ts,
};
use crate::dicom::{AeTitle, Command, DimseStatus, part10};
use crate::ul::{Event, UlError, UlStream};
use tokio_rustls::TlsConnector;

/// Largest PDU this SCU accepts from the peer.
const SCU_MAX_PDU: u32 = 262_144;

#[derive(Debug, thiserror::Error)]
pub enum ScuError {
    #[error("cannot connect to {peer}")]
    Connect {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out connecting to {peer}")]
    ConnectTimeout { peer: String },
    #[error("association with {peer} failed")]
    Protocol {
        peer: String,
        #[source]
        source: UlError,
    },
    #[error("{peer} rejected the association: {reason}")]
    Rejected { peer: String, reason: String },
    #[error("TLS with {peer} failed")]
    Tls {
        peer: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("{peer} answered the association with an unexpected PDU")]
    Unexpected { peer: String },
    #[error(
        "{peer} accepted no presentation context for SOP class {sop_class} in transfer syntax {transfer_syntax}"
    )]
    NoContext {
        peer: String,
        sop_class: String,
        transfer_syntax: String,
    },
    #[error("{path} is not a DICOM file")]
    NotDicom {
        path: String,
        #[source]
        source: part10::Part10Error,
    },
    #[error("STOW-RS to {url} failed: {error}")]
    Http { url: String, error: String },
    #[error("cannot read {path}")]
    File {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Timeouts of an SCU association.
#[derive(Debug, Clone, Copy)]
pub struct ScuTimeouts {
    pub connect: Duration,
    pub dimse: Duration,
}

impl Default for ScuTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            dimse: Duration::from_secs(60),
        }
    }
}

/// A Part 10 file ready to send.
#[derive(Debug, Clone)]
pub struct OutgoingFile {
    pub path: String,
    pub sop_class: String,
    pub sop_instance: String,
    pub transfer_syntax: String,
    pub bytes: Vec<u8>,
    pub dataset_offset: usize,
}

impl OutgoingFile {
    pub fn from_bytes(path: String, bytes: Vec<u8>) -> Result<Self, ScuError> {
        let (meta, dataset_offset) = part10::meta(&bytes).map_err(|source| ScuError::NotDicom {
            path: path.clone(),
            source,
        })?;
        let clean = |s: &str| s.trim_end_matches(['\0', ' ']).to_string();
        Ok(Self {
            sop_class: clean(meta.media_storage_sop_class_uid()),
            sop_instance: clean(meta.media_storage_sop_instance_uid()),
            transfer_syntax: clean(meta.transfer_syntax()),
            path,
            bytes,
            dataset_offset,
        })
    }

    pub fn dataset(&self) -> &[u8] {
        &self.bytes[self.dataset_offset..]
    }
}

/// An established SCU association.
pub struct Association {
    ul: UlStream,
    peer: String,
    contexts: Vec<(u8, String, String)>,
    next_message_id: u16,
    timeouts: ScuTimeouts,
}

impl Association {
    /// Connects and negotiates one context per `(sop_class, transfer_syntax)` pair.
    pub async fn connect(
        peer: &PeerAddress,
        calling: &AeTitle,
        pairs: &BTreeSet<(String, String)>,
        timeouts: ScuTimeouts,
    ) -> Result<Self, ScuError> {
        Self::connect_over(peer, calling, pairs, timeouts, None).await
    }

    /// [`connect`](Self::connect), over DICOM TLS when `tls` is given: the peer's
    /// certificate must be valid for its host name (or IP address).
    pub async fn connect_over(
        peer: &PeerAddress,
        calling: &AeTitle,
        pairs: &BTreeSet<(String, String)>,
        timeouts: ScuTimeouts,
        tls: Option<&TlsConnector>,
    ) -> Result<Self, ScuError> {
        Self::open(peer, calling, pairs, timeouts, tls, Vec::new()).await
    }

    /// Connects and negotiates `pairs`, with `roles` (SCP/SCU role selection items)
    /// among the user information.
    async fn open(
        peer: &PeerAddress,
        calling: &AeTitle,
        pairs: &BTreeSet<(String, String)>,
        timeouts: ScuTimeouts,
        tls: Option<&TlsConnector>,
        roles: Vec<UserVariableItem>,
    ) -> Result<Self, ScuError> {
        let name = peer.to_string();
        let stream = tokio::time::timeout(
            timeouts.connect,
            TcpStream::connect((peer.host.as_str(), peer.port)),
        )
        .await
        .map_err(|_| ScuError::ConnectTimeout { peer: name.clone() })?
        .map_err(|source| ScuError::Connect {
            peer: name.clone(),
            source,
        })?;
        let stream = crate::ul::plain(stream);
        let mut ul = match tls {
            None => UlStream::new(stream, SCU_MAX_PDU),
            Some(connector) => {
                let failed = |source: Box<dyn std::error::Error + Send + Sync>| ScuError::Tls {
                    peer: name.clone(),
                    source,
                };
                let server = crate::tls::server_name(&peer.host).map_err(|e| failed(e.into()))?;
                let stream =
                    tokio::time::timeout(timeouts.connect, connector.connect(server, stream))
                        .await
                        .map_err(|_| failed("handshake timed out".into()))?
                        .map_err(|e| failed(e.into()))?;
                UlStream::new(stream, SCU_MAX_PDU)
            }
        };
        let proposed: Vec<_> = pairs
            .iter()
            .zip((1u8..=255).step_by(2))
            .map(|((class, syntax), id)| PresentationContextProposed {
                id,
                abstract_syntax: class.clone(),
                transfer_syntaxes: vec![syntax.clone()],
            })
            .collect();
        let rq = AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.to_string(),
            called_ae_title: peer.ae_title.to_string(),
            application_context_name: APPLICATION_CONTEXT.to_string(),
            presentation_contexts: proposed.clone(),
            user_variables: [
                UserVariableItem::MaxLength(SCU_MAX_PDU),
                UserVariableItem::ImplementationClassUID(IMPLEMENTATION_CLASS_UID.to_string()),
                UserVariableItem::ImplementationVersionName(
                    IMPLEMENTATION_VERSION_NAME.to_string(),
                ),
            ]
            .into_iter()
            .chain(roles)
            .collect(),
        };
        let protocol = |source| ScuError::Protocol {
            peer: name.clone(),
            source,
        };
        ul.send_pdu(&Pdu::AssociationRQ(rq), timeouts.dimse)
            .await
            .map_err(protocol)?;
        let ac = match ul
            .read_control_pdu(timeouts.dimse, "A-ASSOCIATE-AC")
            .await
            .map_err(protocol)?
        {
            Pdu::AssociationAC(ac) => ac,
            Pdu::AssociationRJ(rj) => {
                return Err(ScuError::Rejected {
                    peer: name,
                    reason: format!("{:?}", rj.source),
                });
            }
            _ => return Err(ScuError::Unexpected { peer: name }),
        };
        let peer_max = crate::ul::announced_max_pdu(&ac.user_variables);
        if !crate::ul::max_pdu_is_usable(peer_max) {
            return Err(protocol(UlError::Malformed(format!(
                "maximum PDU length {peer_max} cannot carry a presentation data value"
            ))));
        }
        ul.set_peer_max_pdu(peer_max);
        let contexts = ac
            .presentation_contexts
            .iter()
            .filter(|r| r.reason == PresentationContextResultReason::Acceptance)
            .filter_map(|r| {
                let p = proposed.iter().find(|p| p.id == r.id)?;
                Some((
                    r.id,
                    p.abstract_syntax.clone(),
                    p.transfer_syntaxes[0].clone(),
                ))
            })
            .collect();
        Ok(Self {
            ul,
            peer: name,
            contexts,
            next_message_id: 1,
            timeouts,
        })
    }

    fn context_for(&self, sop_class: &str, transfer_syntax: &str) -> Result<u8, ScuError> {
        self.contexts
            .iter()
            .find(|(_, c, t)| c == sop_class && t == transfer_syntax)
            .map(|(id, _, _)| *id)
            .ok_or_else(|| ScuError::NoContext {
                peer: self.peer.clone(),
                sop_class: sop_class.to_string(),
                transfer_syntax: transfer_syntax.to_string(),
            })
    }

    fn message_id(&mut self) -> u16 {
        let id = self.next_message_id;
        self.next_message_id = self.next_message_id.wrapping_add(1).max(1);
        id
    }

    async fn exchange(
        &mut self,
        pc_id: u8,
        command: Command,
        dataset: Option<&[u8]>,
    ) -> Result<Command, ScuError> {
        let peer = self.peer.clone();
        let protocol = |source| ScuError::Protocol {
            peer: peer.clone(),
            source,
        };
        self.ul
            .send_message(pc_id, &command.encode(), dataset, self.timeouts.dimse)
            .await
            .map_err(protocol)?;
        // A response without a data set: one announced is refused.
        let (_, response, _) = self.read_message(0).await?;
        Ok(response)
    }

    /// One whole DIMSE message from the peer: its context, command, and data set when
    /// the command announces one (at most `max_dataset` bytes).
    async fn read_message(
        &mut self,
        max_dataset: u64,
    ) -> Result<(u8, Command, Option<Vec<u8>>), ScuError> {
        let peer = self.peer.clone();
        let protocol = |source| ScuError::Protocol {
            peer: peer.clone(),
            source,
        };
        let mut command = Vec::new();
        let context = loop {
            match self
                .ul
                .next_event(self.timeouts.dimse, "a DIMSE message")
                .await
                .map_err(protocol)?
            {
                Event::Pdv(p) if p.is_command => {
                    command.extend_from_slice(self.ul.pdv_data(&p));
                    if p.is_last {
                        break p.pc_id;
                    }
                }
                Event::Abort => {
                    return Err(protocol(UlError::Malformed("the peer aborted".into())));
                }
                _ => {
                    return Err(protocol(UlError::Malformed(
                        "expected a DIMSE command".into(),
                    )));
                }
            }
        };
        let command =
            Command::decode(&command).map_err(|e| protocol(UlError::Malformed(e.to_string())))?;
        if !command.has_dataset {
            return Ok((context, command, None));
        }
        let mut dataset = Vec::new();
        loop {
            match self
                .ul
                .next_event(self.timeouts.dimse, "a DIMSE data set")
                .await
                .map_err(protocol)?
            {
                Event::Pdv(p) if !p.is_command && p.pc_id == context => {
                    dataset.extend_from_slice(self.ul.pdv_data(&p));
                    if dataset.len() as u64 > max_dataset {
                        return Err(protocol(UlError::Malformed(format!(
                            "a data set over {max_dataset} bytes"
                        ))));
                    }
                    if p.is_last {
                        break;
                    }
                }
                _ => {
                    return Err(protocol(UlError::Malformed(
                        "expected the data set of the command".into(),
                    )));
                }
            }
        }
        Ok((context, command, Some(dataset)))
    }

    /// Sends a C-ECHO-RQ and returns the status.
    pub async fn echo(&mut self) -> Result<DimseStatus, ScuError> {
        let pc = self.context_for(VERIFICATION, ts::IMPLICIT_VR_LE)?;
        let id = self.message_id();
        let rsp = self.exchange(pc, Command::echo_rq(id), None).await?;
        Ok(rsp.dimse_status().unwrap_or(DimseStatus::CANNOT_UNDERSTAND))
    }

    /// Sends one file with C-STORE and returns the response's status and comment.
    pub async fn store(
        &mut self,
        file: &OutgoingFile,
    ) -> Result<(DimseStatus, Option<String>), ScuError> {
        let pc = self.context_for(&file.sop_class, &file.transfer_syntax)?;
        let id = self.message_id();
        let command = Command::store_rq(id, &file.sop_class, &file.sop_instance);
        let rsp = self.exchange(pc, command, Some(file.dataset())).await?;
        Ok((
            rsp.dimse_status().unwrap_or(DimseStatus::CANNOT_UNDERSTAND),
            rsp.error_comment,
        ))
    }

    /// Releases the association (A-RELEASE-RQ, waits for the RP).
    pub async fn release(mut self) -> Result<(), ScuError> {
        let peer = self.peer.clone();
        let protocol = |source| ScuError::Protocol {
            peer: peer.clone(),
            source,
        };
        self.ul
            .send_pdu(&Pdu::ReleaseRQ, self.timeouts.dimse)
            .await
            .map_err(protocol)?;
        match self
            .ul
            .next_event(self.timeouts.dimse, "A-RELEASE-RP")
            .await
            .map_err(protocol)?
        {
            Event::ReleaseRp => {
                self.ul.close().await;
                Ok(())
            }
            _ => Err(protocol(UlError::Malformed("expected A-RELEASE-RP".into()))),
        }
    }
}

/// The (SOP class, transfer syntax) pairs needed to send `files`.
pub fn context_pairs(files: &[OutgoingFile]) -> BTreeSet<(String, String)> {
    files
        .iter()
        .map(|f| (f.sop_class.clone(), f.transfer_syntax.clone()))
        .collect()
}

/// The single context a C-ECHO needs.
pub fn echo_pairs() -> BTreeSet<(String, String)> {
    BTreeSet::from([(VERIFICATION.to_string(), ts::IMPLICIT_VR_LE.to_string())])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_parses() {
        let p: PeerAddress = "SEGNODE@127.0.0.1:11112".parse().unwrap();
        assert_eq!(p.ae_title.as_str(), "SEGNODE");
        assert_eq!(p.host, "127.0.0.1");
        assert_eq!(p.port, 11112);
        assert_eq!(p.to_string(), "SEGNODE@127.0.0.1:11112");
        assert!("nohost".parse::<PeerAddress>().is_err());
        assert!("A@h:notaport".parse::<PeerAddress>().is_err());
    }
}
