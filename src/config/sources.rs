//! Where studies can be fetched from on request: the `[[sources]]` tables, each a PACS
//! the node queries (C-FIND) and retrieves from by C-MOVE or C-GET, or a DICOMweb
//! service it queries (QIDO-RS) and retrieves from (WADO-RS).

use std::time::Duration;

use serde::Serialize;

use super::destinations::{client_tls, web_target};
use super::raw::{RawSource, RetrieveKind};
use super::{ConfigError, WebTarget, invalid, seconds, secs, unique_name};
use crate::dicom::{AeTitle, PeerAddress};
use crate::tls::ClientTls;

/// How the instances of a query reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retrieve {
    /// C-MOVE to the node's own AE title: the PACS opens an association to the node.
    Move,
    /// C-GET: the PACS sends them back on the association of the request.
    Get,
}

/// A PACS the node may query and retrieve from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub name: String,
    #[serde(flatten)]
    pub transport: SourceTransport,
    /// Longest wait for any one answer of the source (a C-MOVE answers when it has
    /// sent everything, so this bounds the wait between its pending responses; a
    /// WADO-RS series must arrive whole within it).
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
}

/// How a source is reached.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "retrieve", rename_all = "kebab-case")]
pub enum SourceTransport {
    /// C-FIND, then C-MOVE or C-GET.
    Dimse {
        #[serde(flatten)]
        peer: PeerAddress,
        #[serde(skip)]
        retrieve: Retrieve,
        /// The AE title the node calls from (default: its own).
        calling_ae: AeTitle,
        tls: Option<ClientTls>,
    },
    /// QIDO-RS, then WADO-RS.
    Dicomweb(WebTarget),
}

impl Source {
    /// Where it is, as requests and logs name it.
    pub fn address(&self) -> String {
        match &self.transport {
            SourceTransport::Dimse { peer, .. } => peer.to_string(),
            SourceTransport::Dicomweb(web) => web.url.clone(),
        }
    }
}

/// The `[[sources]]` tables: names unique; a C-MOVE or C-GET source's address, and TLS
/// files only with `tls = true`; a WADO-RS source's URL and credentials.
pub(super) fn sources(raw: Vec<RawSource>, ae_title: &AeTitle) -> Result<Vec<Source>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    raw.into_iter()
        .map(|s| {
            unique_name(&mut names, "sources", &s.name)?;
            let transport = match s.retrieve {
                RetrieveKind::WadoRs => {
                    if let Some(key) = [
                        ("ae_title", s.ae_title.is_some()),
                        ("host", s.host.is_some()),
                        ("port", s.port.is_some()),
                        ("calling_ae", s.calling_ae.is_some()),
                        ("tls", s.tls),
                    ]
                    .iter()
                    .find_map(|(key, set)| set.then_some(key))
                    {
                        return Err(invalid(
                            "sources.retrieve",
                            format!("source {:?} is retrieve = \"wado-rs\": {key} is for C-MOVE and C-GET sources", s.name),
                        ));
                    }
                    SourceTransport::Dicomweb(web_target(
                        "sources",
                        &s.name,
                        &s.url,
                        &s.token_file,
                        &s.username,
                        &s.password_file,
                        &s.ca_file,
                    )?)
                }
                kind => {
                    let (Some(peer_ae), Some(host), Some(port)) = (s.ae_title, s.host, s.port)
                    else {
                        return Err(invalid(
                            "sources",
                            format!("source {:?} needs ae_title, host and port", s.name),
                        ));
                    };
                    if s.url.is_some() || s.token_file.is_some() || s.username.is_some() {
                        return Err(invalid(
                            "sources.url",
                            format!("source {:?}: url and credentials are for retrieve = \"wado-rs\"", s.name),
                        ));
                    }
                    SourceTransport::Dimse {
                        tls: client_tls(
                            "sources",
                            &s.name,
                            s.tls,
                            &s.ca_file,
                            &s.cert_file,
                            &s.key_file,
                        )?,
                        peer: PeerAddress {
                            ae_title: peer_ae,
                            host,
                            port,
                        },
                        retrieve: if kind == RetrieveKind::CGet {
                            Retrieve::Get
                        } else {
                            Retrieve::Move
                        },
                        calling_ae: s.calling_ae.unwrap_or_else(|| ae_title.clone()),
                    }
                }
            };
            Ok(Source {
                transport,
                timeout: seconds("sources.timeout_seconds", s.timeout_seconds)?,
                name: s.name,
            })
        })
        .collect()
}
