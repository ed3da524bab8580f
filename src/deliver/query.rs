//! Query/Retrieve as SCU (PS3.4 Annex C, Study Root): C-FIND to learn what a PACS
//! holds, C-MOVE to have it sent to an AE, C-GET to have it sent back on the same
//! association (its C-STORE sub-operations answered here, PS3.4 §C.4.3). Identifiers
//! travel in Implicit VR Little Endian, the one transfer syntax every Q/R SCP accepts.

use std::collections::BTreeSet;

use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_ul::pdu::{RequestorRoles, UserVariableItem};
use tokio_rustls::TlsConnector;

use super::{Association, PeerAddress, ScuError, ScuTimeouts};
use crate::config::Retrieve;
use crate::dicom::uid::{
    CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE, STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE,
    ts,
};
use crate::dicom::{AeTitle, Command, CommandField, DimseStatus, SubOperations, lengths};
use crate::ul::UlError;

/// The final response of a C-MOVE or C-GET: its status and sub-operation counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retrieved {
    pub status: DimseStatus,
    pub counts: SubOperations,
    pub error_comment: Option<String>,
}

/// A C-STORE sub-operation of a C-GET: what the PACS sends, as it sent it.
pub struct SubStore<'a> {
    pub sop_class: &'a str,
    pub sop_instance: &'a str,
    pub transfer_syntax: &'a str,
    pub dataset: Vec<u8>,
}

/// Keeps what a C-GET brings: the answer to each C-STORE sub-operation.
pub trait Keep: Sync {
    fn keep<'a>(
        &'a self,
        sub: SubStore<'a>,
    ) -> std::pin::Pin<Box<dyn Future<Output = (DimseStatus, Option<String>)> + Send + 'a>>;
}

/// The contexts an association for `retrieve` proposes: FIND always; MOVE, or GET with
/// the CT storage classes in every transfer syntax the node accepts.
fn retrieve_pairs(retrieve: Retrieve) -> BTreeSet<(String, String)> {
    let implicit = ts::IMPLICIT_VR_LE.to_string();
    let mut pairs = BTreeSet::from([(STUDY_ROOT_FIND.to_string(), implicit.clone())]);
    match retrieve {
        Retrieve::Move => {
            pairs.insert((STUDY_ROOT_MOVE.to_string(), implicit));
        }
        Retrieve::Get => {
            pairs.insert((STUDY_ROOT_GET.to_string(), implicit));
            for class in [CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE] {
                for syntax in ts::ACCEPTED {
                    pairs.insert((class.to_string(), (*syntax).to_string()));
                }
            }
        }
    }
    pairs
}

/// An identifier's bytes in Implicit VR Little Endian.
fn encode_identifier(identifier: &InMemDicomObject) -> Vec<u8> {
    let mut bytes = Vec::new();
    identifier
        .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .expect("an identifier of text elements encodes");
    bytes
}

/// An identifier the peer sent, its element lengths checked before it is parsed.
fn decode_identifier(peer: &str, bytes: &[u8]) -> Result<InMemDicomObject, ScuError> {
    let malformed = |e: String| ScuError::Protocol {
        peer: peer.to_string(),
        source: UlError::Malformed(format!("C-FIND identifier: {e}")),
    };
    lengths::check(bytes, ts::IMPLICIT_VR_LE).map_err(|e| malformed(e.to_string()))?;
    InMemDicomObject::read_dataset_with_ts(bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| malformed(e.to_string()))
}

/// A query identifier: `level`, the matching keys given, and the return keys (empty).
pub fn identifier(level: &str, keys: &[(Tag, VR, &str)]) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    o.put(crate::dicom::build::el(
        dicom_dictionary_std::tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        level,
    ));
    for (tag, vr, value) in keys {
        o.put(crate::dicom::build::el(*tag, *vr, *value));
    }
    o
}

impl Association {
    /// Opens an association for Query/Retrieve with `retrieve`'s contexts; for C-GET
    /// the node offers the SCP role of the CT storage classes.
    pub async fn for_retrieve(
        peer: &PeerAddress,
        calling: &AeTitle,
        retrieve: Retrieve,
        timeouts: ScuTimeouts,
        tls: Option<&TlsConnector>,
    ) -> Result<Self, ScuError> {
        let roles: Vec<UserVariableItem> = match retrieve {
            Retrieve::Move => Vec::new(),
            Retrieve::Get => [CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE]
                .into_iter()
                .map(|class| {
                    UserVariableItem::ScuScpRoleSelectionSubItem(
                        class.to_string(),
                        RequestorRoles {
                            scu: false,
                            scp: true,
                        },
                    )
                })
                .collect(),
        };
        Self::open(
            peer,
            calling,
            &retrieve_pairs(retrieve),
            timeouts,
            tls,
            roles,
        )
        .await
    }

    /// C-FIND: every pending response's identifier, and the final status.
    pub async fn find(
        &mut self,
        identifier: &InMemDicomObject,
    ) -> Result<(Vec<InMemDicomObject>, DimseStatus), ScuError> {
        let pc = self.context_for(STUDY_ROOT_FIND, ts::IMPLICIT_VR_LE)?;
        let id = self.message_id();
        let command = Command::query_rq(CommandField::C_FIND_RQ, id, STUDY_ROOT_FIND, None);
        self.send(pc, &command, &encode_identifier(identifier))
            .await?;
        let mut found = Vec::new();
        loop {
            let (_, rsp, dataset) = self.read_message(MAX_IDENTIFIER_BYTES).await?;
            let status = rsp.dimse_status().unwrap_or(DimseStatus::CANNOT_UNDERSTAND);
            if !status.is_pending() {
                return Ok((found, status));
            }
            if let Some(bytes) = dataset {
                found.push(decode_identifier(&self.peer, &bytes)?);
            }
        }
    }

    /// C-MOVE of what `identifier` matches to `destination`; returns the final response.
    pub async fn move_to(
        &mut self,
        destination: &AeTitle,
        identifier: &InMemDicomObject,
    ) -> Result<Retrieved, ScuError> {
        let pc = self.context_for(STUDY_ROOT_MOVE, ts::IMPLICIT_VR_LE)?;
        let id = self.message_id();
        let command = Command::query_rq(
            CommandField::C_MOVE_RQ,
            id,
            STUDY_ROOT_MOVE,
            Some(destination.as_str()),
        );
        self.send(pc, &command, &encode_identifier(identifier))
            .await?;
        loop {
            let (_, rsp, _) = self.read_message(MAX_IDENTIFIER_BYTES).await?;
            if let Some(done) = final_response(&rsp) {
                return Ok(done);
            }
        }
    }

    /// C-GET of what `identifier` matches: each C-STORE sub-operation is handed to
    /// `keeper` (data sets of at most `max_object` bytes), whose status is the answer;
    /// returns the final response.
    pub async fn get(
        &mut self,
        identifier: &InMemDicomObject,
        max_object: u64,
        keeper: &dyn Keep,
    ) -> Result<Retrieved, ScuError> {
        let pc = self.context_for(STUDY_ROOT_GET, ts::IMPLICIT_VR_LE)?;
        let id = self.message_id();
        let command = Command::query_rq(CommandField::C_GET_RQ, id, STUDY_ROOT_GET, None);
        self.send(pc, &command, &encode_identifier(identifier))
            .await?;
        loop {
            let (context, rsp, dataset) = self.read_message(max_object).await?;
            if rsp.command_field() != CommandField::C_STORE_RQ {
                if let Some(done) = final_response(&rsp) {
                    return Ok(done);
                }
                continue;
            }
            let syntax = self
                .contexts
                .iter()
                .find(|(c, _, _)| *c == context)
                .map(|(_, _, t)| t.clone());
            let (status, comment) = match (syntax, dataset) {
                (Some(syntax), Some(dataset)) => {
                    keeper
                        .keep(SubStore {
                            sop_class: rsp.affected_sop_class.as_deref().unwrap_or_default(),
                            sop_instance: rsp.affected_sop_instance.as_deref().unwrap_or_default(),
                            transfer_syntax: &syntax,
                            dataset,
                        })
                        .await
                }
                _ => (DimseStatus::CANNOT_UNDERSTAND, None),
            };
            let answer = rsp.response(status, comment).encode();
            self.ul
                .send_message(context, &answer, None, self.timeouts.dimse)
                .await
                .map_err(|source| ScuError::Protocol {
                    peer: self.peer.clone(),
                    source,
                })?;
        }
    }

    /// Sends a request with its identifier.
    async fn send(&mut self, pc: u8, command: &Command, dataset: &[u8]) -> Result<(), ScuError> {
        self.ul
            .send_message(pc, &command.encode(), Some(dataset), self.timeouts.dimse)
            .await
            .map_err(|source| ScuError::Protocol {
                peer: self.peer.clone(),
                source,
            })
    }

    /// Aborts the association (A-ABORT), as after a failure mid-exchange.
    pub async fn abort(self) {
        self.ul.abort().await;
    }
}

/// The largest identifier a C-FIND or C-MOVE response may carry.
const MAX_IDENTIFIER_BYTES: u64 = 1 << 20;

/// A retrieve's response when it is the final one (not pending).
fn final_response(rsp: &Command) -> Option<Retrieved> {
    let status = rsp.dimse_status().unwrap_or(DimseStatus::CANNOT_UNDERSTAND);
    (!status.is_pending()).then(|| Retrieved {
        status,
        counts: rsp.sub_operations,
        error_comment: rsp.error_comment.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_round_trips_in_implicit_vr() {
        let keys = [(
            dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
            VR::UI,
            "1.2.3.4",
        )];
        let o = identifier("STUDY", &keys);
        let back = decode_identifier("PACS", &encode_identifier(&o)).unwrap();
        let uid = back
            .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(uid.trim_end_matches('\0'), "1.2.3.4");
        assert!(
            decode_identifier("PACS", &[0x08, 0x00, 0x52, 0x00, 0xff, 0xff, 0xff, 0x7f]).is_err()
        );
    }

    #[test]
    fn a_get_association_offers_ct_storage_in_every_accepted_syntax() {
        let pairs = retrieve_pairs(Retrieve::Get);
        assert!(pairs.contains(&(STUDY_ROOT_GET.to_string(), ts::IMPLICIT_VR_LE.to_string())));
        assert_eq!(pairs.len(), 2 + 2 * ts::ACCEPTED.len());
        assert_eq!(retrieve_pairs(Retrieve::Move).len(), 2);
    }
}
