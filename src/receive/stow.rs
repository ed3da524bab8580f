//! STOW-RS intake (PS3.18 §10.5): each part of a request is one Part 10 file, kept
//! under the same contract as a C-STORE ([`admit`](super::admit)): an instance
//! reported as stored is durably in the spool and recorded. The HTTP side (the
//! multipart body, the response) is the API's; this is what becomes of one part.

use dicom_object::meta::FileMetaTable;

use super::Receiver;
use super::admit::{Admitted, Arrival, Origin};
use super::refusal::Refusal;
use crate::dicom::uid::ts;
use crate::dicom::{Uid, part10};

/// What became of one part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stowed {
    /// The SOP Class and Instance UIDs its file meta information names, when it has one.
    pub sop_class: Option<String>,
    pub sop_instance: Option<String>,
    /// `Ok` with the study and series where it was kept (`None`: acknowledged, not kept,
    /// as a C-STORE of an object that is not a CT image), or why it was refused.
    pub outcome: Result<Option<(Uid, Uid)>, StowFailure>,
}

/// Why a part was refused: the failure reason of PS3.18 I.2.2 (a DIMSE status code) and
/// the words the audit trail has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StowFailure {
    pub reason: u16,
    pub message: String,
    /// Whether sending it again may succeed (the node's trouble, not the object's).
    pub retryable: bool,
    /// The instance belongs to another study than the request's URL names.
    pub other_study: bool,
}

impl Receiver {
    /// Keeps one Part 10 file received by STOW-RS from `peer`, recorded as sent by
    /// `calling_ae`; `study` is the study the request's URL names.
    pub async fn stow(
        &self,
        calling_ae: &str,
        peer: String,
        file: Vec<u8>,
        study: Option<&str>,
    ) -> Stowed {
        let origin = Origin {
            rx: self,
            calling_ae,
            peer,
        };
        let (meta, dataset_start) = match file_meta(&file) {
            Ok(m) => m,
            Err(refusal) => return refused(&origin, None, refusal).await,
        };
        let class = meta
            .media_storage_sop_class_uid()
            .trim_end_matches(['\0', ' ']);
        let instance = meta
            .media_storage_sop_instance_uid()
            .trim_end_matches(['\0', ' ']);
        let syntax = meta.transfer_syntax().trim_end_matches(['\0', ' ']);
        let named = Some((class, instance));
        if !ts::ACCEPTED.contains(&syntax) {
            let refusal = Refusal::TransferSyntax(syntax.to_string());
            return refused(&origin, named, refusal).await;
        }
        let instance_uid = match Uid::parse(instance) {
            Ok(uid) => uid,
            Err(e) => return refused(&origin, named, Refusal::BadInstanceUid(e)).await,
        };
        if let Some(refusal) = origin.no_room() {
            return refused(&origin, named, refusal).await;
        }
        let mut dataset = file;
        dataset.drain(..dataset_start);
        let spooled = match origin.start_spooling(class, instance, syntax) {
            Ok(Some(mut spooling)) => {
                spooling.append(&dataset);
                spooling.finish().map(Some).map_err(anyhow::Error::from)
            }
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        let spooled = match spooled {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot write a spool file");
                return refused(&origin, named, Refusal::CannotStore).await;
            }
        };
        let arrival = Arrival {
            class,
            instance: instance_uid,
            transfer_syntax: syntax,
            dataset,
            spooled,
            study,
        };
        let outcome = match origin.admit(arrival).await {
            Admitted::Stored { study, series } => Ok(Some((study, series))),
            Admitted::Ignored => Ok(None),
            Admitted::Refused(refusal) => Err(failure(&refusal)),
        };
        Stowed {
            sop_class: Some(class.to_string()),
            sop_instance: Some(instance.to_string()),
            outcome,
        }
    }

    /// Answers a part larger than `max_object_mb` (its first bytes in `head`), as a
    /// C-STORE of it is answered: refused, the node's limit.
    pub async fn stow_too_large(&self, calling_ae: &str, peer: String, head: &[u8]) -> Stowed {
        let origin = Origin {
            rx: self,
            calling_ae,
            peer,
        };
        let meta = file_meta(head).ok().map(|(m, _)| m);
        let named = meta.as_ref().map(|m| {
            (
                m.media_storage_sop_class_uid()
                    .trim_end_matches(['\0', ' ']),
                m.media_storage_sop_instance_uid()
                    .trim_end_matches(['\0', ' ']),
            )
        });
        refused(&origin, named, Refusal::TooLarge).await
    }
}

/// The file meta information of a Part 10 file, and where its data set starts.
fn file_meta(file: &[u8]) -> Result<(FileMetaTable, usize), Refusal> {
    part10::meta(file).map_err(|e| Refusal::NotPart10(e.to_string()))
}

async fn refused(origin: &Origin<'_>, named: Option<(&str, &str)>, refusal: Refusal) -> Stowed {
    let failure = failure(&refusal);
    origin.refuse(refusal, None).await;
    Stowed {
        sop_class: named.map(|(c, _)| c.to_string()),
        sop_instance: named.map(|(_, i)| i.to_string()),
        outcome: Err(failure),
    }
}

fn failure(refusal: &Refusal) -> StowFailure {
    StowFailure {
        reason: refusal.status().0,
        message: refusal.to_string(),
        retryable: refusal.retryable(),
        other_study: matches!(refusal, Refusal::OtherStudy(_)),
    }
}
