//! Where studies can be fetched from on request: the `[[sources]]` tables, each a PACS
//! the node queries (C-FIND) and retrieves from by C-MOVE or C-GET.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::destinations::client_tls;
use super::{ConfigError, invalid, seconds, secs};
use crate::deliver::query::Retrieve;
use crate::dicom::{AeTitle, PeerAddress};
use crate::tls::ClientTls;

/// How a source sends what it is asked for (`retrieve`).
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum RetrieveKind {
    /// C-MOVE to the node's own AE title (the source must know the node as a modality,
    /// and be among `[[dicom.allowed_peers]]`).
    #[default]
    CMove,
    /// C-GET: the instances come back on the node's own association.
    CGet,
}

impl RetrieveKind {
    pub fn retrieve(self) -> Retrieve {
        match self {
            RetrieveKind::CMove => Retrieve::Move,
            RetrieveKind::CGet => Retrieve::Get,
        }
    }
}

/// A PACS the node may query and retrieve from.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub name: String,
    #[serde(flatten)]
    pub peer: PeerAddress,
    pub retrieve: RetrieveKind,
    /// The AE title the node calls from (default: its own).
    pub calling_ae: AeTitle,
    pub tls: Option<ClientTls>,
    /// Longest wait for any one answer of the source (a C-MOVE answers when it has
    /// sent everything, so this bounds the wait between its pending responses).
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    name: String,
    ae_title: AeTitle,
    host: String,
    port: u16,
    #[serde(default)]
    retrieve: RetrieveKind,
    calling_ae: Option<AeTitle>,
    #[serde(default = "default_timeout_seconds")]
    timeout_seconds: f64,
    #[serde(default)]
    tls: bool,
    ca_file: Option<std::path::PathBuf>,
    cert_file: Option<std::path::PathBuf>,
    key_file: Option<std::path::PathBuf>,
}

fn default_timeout_seconds() -> f64 {
    60.0
}

/// The `[[sources]]` tables: names unique, TLS files only with `tls = true`.
pub(super) fn sources(raw: Vec<RawSource>, ae_title: &AeTitle) -> Result<Vec<Source>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    raw.into_iter()
        .map(|s| {
            if !names.insert(s.name.clone()) {
                return Err(invalid(
                    "sources",
                    format!("name {:?} is used twice", s.name),
                ));
            }
            Ok(Source {
                tls: client_tls(
                    "sources",
                    &s.name,
                    s.tls,
                    &s.ca_file,
                    &s.cert_file,
                    &s.key_file,
                )?,
                timeout: seconds("sources.timeout_seconds", s.timeout_seconds)?,
                peer: PeerAddress {
                    ae_title: s.ae_title,
                    host: s.host,
                    port: s.port,
                },
                retrieve: s.retrieve,
                calling_ae: s.calling_ae.unwrap_or_else(|| ae_title.clone()),
                name: s.name,
            })
        })
        .collect()
}
