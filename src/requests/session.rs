//! The connection to a source while a request is carried out: a DIMSE association
//! (C-FIND, then C-MOVE or C-GET) or a DICOMweb client (QIDO-RS, then WADO-RS), behind
//! one set of steps; and the keeper that takes in what C-GET and WADO-RS bring.

use std::pin::Pin;
use std::time::Duration;

use dicom_core::{Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::Requests;
use crate::config::{Retrieve, Source, SourceTransport};
use crate::deliver::query::{Keep, Retrieved, SubStore, identifier};
use crate::deliver::wado::{FoundSeries, KeepFile, WebError, WebSource};
use crate::deliver::{Association, PeerAddress, ScuTimeouts};
use crate::dicom::{DimseStatus, SubOperations, part10};
use crate::receive::Receiver;

/// Keeps what a C-GET or WADO-RS brings as a C-STORE from the source would be kept:
/// the same checks, spool and record.
struct Keeper<'a> {
    receiver: &'a Receiver,
    /// The name the instances are recorded as sent by: the source's AE title, or its
    /// name for a DICOMweb source.
    calling: String,
    peer: String,
    study: &'a str,
}

impl Keeper<'_> {
    async fn store(&self, file: Vec<u8>) -> (DimseStatus, Option<String>) {
        let stowed = self
            .receiver
            .stow(&self.calling, self.peer.clone(), file, Some(self.study))
            .await;
        match stowed.outcome {
            Ok(_) => (DimseStatus::SUCCESS, None),
            Err(f) => (DimseStatus(f.reason), Some(f.message)),
        }
    }
}

impl Keep for Keeper<'_> {
    fn keep<'a>(
        &'a self,
        sub: SubStore<'a>,
    ) -> Pin<Box<dyn Future<Output = (DimseStatus, Option<String>)> + Send + 'a>> {
        Box::pin(async move {
            match part10::header(
                sub.sop_class,
                sub.sop_instance,
                sub.transfer_syntax,
                &self.calling,
                sub.dataset.len(),
            ) {
                Ok(mut file) => {
                    file.extend_from_slice(&sub.dataset);
                    self.store(file).await
                }
                Err(e) => (DimseStatus::CANNOT_UNDERSTAND, Some(e.to_string())),
            }
        })
    }
}

impl KeepFile for Keeper<'_> {
    fn keep_file<'a>(
        &'a self,
        file: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(async move {
            match self.store(file).await {
                (status, _) if status.is_success() => Ok(()),
                (status, comment) => Err(format!(
                    "refused ({status}): {}",
                    comment.unwrap_or_default()
                )),
            }
        })
    }
}

/// An open connection to a source: a DIMSE association, or a DICOMweb client.
pub(super) enum Session<'a> {
    Dimse {
        association: Association,
        retrieve: Retrieve,
        peer: &'a PeerAddress,
    },
    Web {
        web: WebSource<'a>,
        name: &'a str,
    },
}

impl<'a> Session<'a> {
    /// Connects to the source; a refusal (the association, TLS, the HTTP client) is
    /// the request's failure reason.
    pub(super) async fn open(source: &'a Source) -> Result<Self, String> {
        match &source.transport {
            SourceTransport::Dimse {
                peer,
                retrieve,
                calling_ae,
                tls,
            } => {
                let tls = tls
                    .as_ref()
                    .map(crate::tls::connector)
                    .transpose()
                    .map_err(|e| format!("TLS towards source {}: {e}", source.name))?;
                let timeouts = ScuTimeouts {
                    connect: Duration::from_secs(10),
                    dimse: source.timeout,
                };
                let association =
                    Association::for_retrieve(peer, calling_ae, *retrieve, timeouts, tls.as_ref())
                        .await
                        .map_err(|e| format!("source refused: {:#}", anyhow::Error::from(e)))?;
                Ok(Session::Dimse {
                    association,
                    retrieve: *retrieve,
                    peer,
                })
            }
            SourceTransport::Dicomweb(target) => {
                let client =
                    crate::deliver::stow::http_client(target.ca_file.as_deref(), source.timeout)
                        .map_err(|e| format!("source {}: {e}", source.name))?;
                Ok(Session::Web {
                    web: WebSource { client, target },
                    name: &source.name,
                })
            }
        }
    }

    pub(super) fn kind(&self) -> &'static str {
        match self {
            Session::Dimse {
                retrieve: Retrieve::Move,
                ..
            } => "c-move",
            Session::Dimse {
                retrieve: Retrieve::Get,
                ..
            } => "c-get",
            Session::Web { .. } => "wado-rs",
        }
    }

    /// The studies with `accession`.
    pub(super) async fn studies(&mut self, accession: &str) -> Result<Vec<String>, String> {
        match self {
            Session::Dimse { association, .. } => {
                let query = identifier(
                    "STUDY",
                    &[
                        (tags::ACCESSION_NUMBER, VR::SH, accession),
                        (tags::STUDY_INSTANCE_UID, VR::UI, ""),
                    ],
                );
                Ok(find(association, &query)
                    .await?
                    .iter()
                    .filter_map(|o| text(o, tags::STUDY_INSTANCE_UID))
                    .collect())
            }
            Session::Web { web, .. } => web.studies(accession).await.map_err(web_failure),
        }
    }

    /// The series of `study` (only `series` when given).
    pub(super) async fn series(
        &mut self,
        study: &str,
        series: Option<&str>,
    ) -> Result<Vec<FoundSeries>, String> {
        match self {
            Session::Dimse { association, .. } => {
                let query = identifier(
                    "SERIES",
                    &[
                        (tags::STUDY_INSTANCE_UID, VR::UI, study),
                        (
                            tags::SERIES_INSTANCE_UID,
                            VR::UI,
                            series.unwrap_or_default(),
                        ),
                        (tags::MODALITY, VR::CS, ""),
                        (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""),
                    ],
                );
                Ok(find(association, &query)
                    .await?
                    .iter()
                    .filter_map(|o| {
                        Some(FoundSeries {
                            series_uid: text(o, tags::SERIES_INSTANCE_UID)?,
                            modality: text(o, tags::MODALITY),
                            instances: text(o, tags::NUMBER_OF_SERIES_RELATED_INSTANCES)
                                .and_then(|c| c.parse().ok()),
                        })
                    })
                    .collect())
            }
            Session::Web { web, .. } => web.series(study, series).await.map_err(web_failure),
        }
    }

    /// Retrieves one series into the node.
    pub(super) async fn retrieve(
        &mut self,
        requests: &Requests,
        study: &str,
        series: &str,
    ) -> Result<Retrieved, String> {
        let max = requests.config.dicom.max_object_bytes;
        let retrieved = match self {
            Session::Dimse {
                association,
                retrieve,
                peer,
            } => {
                let query = identifier(
                    "SERIES",
                    &[
                        (tags::STUDY_INSTANCE_UID, VR::UI, study),
                        (tags::SERIES_INSTANCE_UID, VR::UI, series),
                    ],
                );
                match retrieve {
                    Retrieve::Move => association.move_to(&requests.config.ae_title, &query).await,
                    Retrieve::Get => {
                        let keeper = Keeper {
                            receiver: &requests.receiver,
                            calling: peer.ae_title.to_string(),
                            peer: peer.to_string(),
                            study,
                        };
                        association.get(&query, max, &keeper).await
                    }
                }
                .map_err(|e| format!("retrieve failed: {:#}", anyhow::Error::from(e)))?
            }
            Session::Web { web, name } => {
                let keeper = Keeper {
                    receiver: &requests.receiver,
                    calling: name.to_string(),
                    peer: web.target.url.clone(),
                    study,
                };
                let fetched = web
                    .retrieve(study, series, max, &keeper)
                    .await
                    .map_err(|e| format!("retrieve failed: {e}"))?;
                let count = |n: u32| Some(u16::try_from(n).unwrap_or(u16::MAX));
                Retrieved {
                    // Some instances not kept: "sub-operations complete, one or more
                    // failures" (PS3.4 C.4.3.1.4), as a C-GET would answer.
                    status: if fetched.failed == 0 {
                        DimseStatus::SUCCESS
                    } else {
                        DimseStatus(0xB000)
                    },
                    counts: SubOperations {
                        remaining: Some(0),
                        completed: count(fetched.kept),
                        failed: count(fetched.failed),
                        warning: Some(0),
                    },
                    error_comment: None,
                }
            }
        };
        Ok(retrieved)
    }

    /// Ends the session: released after success, aborted after a failure.
    pub(super) async fn close(self, released: bool) {
        if let Session::Dimse { association, .. } = self {
            if released {
                if let Err(e) = association.release().await {
                    tracing::warn!(error = %e, "releasing the source's association");
                }
            } else {
                association.abort().await;
            }
        }
    }
}

/// A DICOMweb failure before anything was retrieved, in words.
fn web_failure(e: WebError) -> String {
    match e {
        WebError::Unreadable { .. } => format!("query failed: {e}"),
        _ => format!("source refused: {e}"),
    }
}

/// A C-FIND, its failure put in words.
async fn find(
    association: &mut Association,
    query: &InMemDicomObject,
) -> Result<Vec<InMemDicomObject>, String> {
    match association.find(query).await {
        Ok((found, status)) if status.is_success() => Ok(found),
        Ok((_, status)) => Err(format!("source refused the query: C-FIND status {status}")),
        Err(e) => Err(format!("query failed: {:#}", anyhow::Error::from(e))),
    }
}

/// An element's text, without padding; `None` when absent or empty.
fn text(o: &InMemDicomObject, tag: Tag) -> Option<String> {
    let v = o.element(tag).ok()?.to_str().ok()?;
    let v = v.trim_end_matches(['\0', ' ']).trim();
    (!v.is_empty()).then(|| v.to_string())
}
