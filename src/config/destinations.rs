//! Where results go: the `[[destinations]]` tables, each a C-STORE peer or a DICOMweb
//! service, validated and with their secrets read.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use super::raw::{DestinationKind, RawDestination};
use super::{ConfigError, invalid, seconds, secret, secs, unique_name};
use crate::dicom::{AeTitle, PeerAddress, SegType};
use crate::store::ResultObject;
use crate::tls::ClientTls;

/// Where results go.
#[derive(Debug, Clone, Serialize)]
pub struct Destination {
    pub name: String,
    /// How it is reached: C-STORE or STOW-RS.
    #[serde(flatten)]
    pub transport: Transport,
    pub seg_type: SegType,
    /// The objects of a result this destination receives (default: the SEG and the
    /// measurement report).
    pub objects: Vec<ResultObject>,
    /// Results of series sent by these calling AE titles go here.
    pub route_from: Vec<AeTitle>,
    /// Every result goes here.
    pub fan_out: bool,
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
}

/// How a destination is reached (`kind`).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Transport {
    /// C-STORE to an AE.
    Dimse {
        /// Where it listens and the AE title it answers to.
        #[serde(flatten)]
        peer: PeerAddress,
        /// The AE title the node calls from.
        calling_ae: AeTitle,
        /// DICOM TLS towards it.
        tls: Option<ClientTls>,
    },
    /// STOW-RS to a DICOMweb service.
    Dicomweb(WebTarget),
}

/// A DICOMweb service: its root URL (`…/dicom-web`), credentials, and a CA trusted for
/// HTTPS beside the system's.
#[derive(Debug, Clone, Serialize)]
pub struct WebTarget {
    pub url: String,
    #[serde(skip)]
    pub auth: WebAuth,
    pub ca_file: Option<PathBuf>,
}

/// Credentials read from their files at start-up; never printed.
#[derive(Clone, Default)]
pub enum WebAuth {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl std::fmt::Debug for WebAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WebAuth::None => "none",
            WebAuth::Bearer(_) => "bearer token",
            WebAuth::Basic { .. } => "basic",
        })
    }
}

impl Destination {
    /// Where it is, as logs and the dashboard show it: `AE@host:port` or the URL.
    pub fn address(&self) -> String {
        match &self.transport {
            Transport::Dimse { peer, .. } => peer.to_string(),
            Transport::Dicomweb(web) => web.url.clone(),
        }
    }

    /// The DICOM TLS settings of a C-STORE destination that uses TLS.
    pub fn dicom_tls(&self) -> Option<&ClientTls> {
        match &self.transport {
            Transport::Dimse { tls, .. } => tls.as_ref(),
            Transport::Dicomweb(_) => None,
        }
    }
}

/// The `[[destinations]]` tables: names unique; a C-STORE destination's address, and
/// TLS files only with `tls = true`; a DICOMweb one's URL and credentials.
pub(super) fn destinations(
    raw: Vec<RawDestination>,
    ae_title: &AeTitle,
) -> Result<Vec<Destination>, ConfigError> {
    let mut names = std::collections::HashSet::new();
    let mut out = Vec::new();
    for d in raw {
        unique_name(&mut names, "destinations", &d.name)?;
        if d.objects.contains(&ResultObject::Hl7) {
            return Err(invalid(
                "destinations.objects",
                format!(
                    "destination {:?}: HL7 messages go to [[hl7_destinations]]",
                    d.name
                ),
            ));
        }
        let transport = match d.kind {
            DestinationKind::Dimse => dimse(&d, ae_title)?,
            DestinationKind::Dicomweb => Transport::Dicomweb(dicomweb(&d)?),
        };
        out.push(Destination {
            transport,
            timeout: seconds("destinations.timeout_seconds", d.timeout_seconds)?,
            name: d.name,
            seg_type: d.seg_type,
            objects: d.objects,
            route_from: d.route_from,
            fan_out: d.fan_out,
        });
    }
    Ok(out)
}

/// A C-STORE destination: its AE, host and port; TLS files only with `tls = true`.
fn dimse(d: &RawDestination, ae_title: &AeTitle) -> Result<Transport, ConfigError> {
    let web_keys = [
        ("url", d.url.is_some()),
        ("token_file", d.token_file.is_some()),
        ("username", d.username.is_some()),
        ("password_file", d.password_file.is_some()),
    ];
    if let Some((key, _)) = web_keys.iter().find(|(_, set)| *set) {
        return Err(invalid(
            "destinations.kind",
            format!(
                "destination {:?} has {key}, which only kind = \"dicomweb\" takes",
                d.name
            ),
        ));
    }
    let (Some(peer_ae), Some(host), Some(port)) = (&d.ae_title, &d.host, d.port) else {
        return Err(invalid(
            "destinations",
            format!("destination {:?} needs ae_title, host and port", d.name),
        ));
    };
    let tls = client_tls(
        "destinations",
        &d.name,
        d.tls,
        &d.ca_file,
        &d.cert_file,
        &d.key_file,
    )?;
    Ok(Transport::Dimse {
        peer: PeerAddress {
            ae_title: peer_ae.clone(),
            host: host.clone(),
            port,
        },
        calling_ae: d.calling_ae.clone().unwrap_or_else(|| ae_title.clone()),
        tls,
    })
}

/// DICOM TLS towards a peer (`section`: `destinations` or `sources`): a CA file is
/// required with `tls = true`, and TLS files are refused without it.
pub(super) fn client_tls(
    section: &'static str,
    name: &str,
    tls: bool,
    ca_file: &Option<PathBuf>,
    cert_file: &Option<PathBuf>,
    key_file: &Option<PathBuf>,
) -> Result<Option<ClientTls>, ConfigError> {
    match (tls, ca_file) {
        (true, Some(ca_file)) => Ok(Some(ClientTls {
            ca_file: ca_file.clone(),
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        })),
        (true, None) => Err(invalid(
            section,
            format!("{name:?} uses TLS: a ca_file is required"),
        )),
        (false, ca) if ca.is_some() || cert_file.is_some() || key_file.is_some() => Err(invalid(
            section,
            format!("{name:?} names TLS files but not tls = true"),
        )),
        (false, _) => Ok(None),
    }
}

/// A DICOMweb destination: an http(s) URL, a bearer token or a user name and password
/// (each from a file), and a CA file for HTTPS beside the system's.
fn dicomweb(d: &RawDestination) -> Result<WebTarget, ConfigError> {
    let dimse_keys = [
        ("ae_title", d.ae_title.is_some()),
        ("host", d.host.is_some()),
        ("port", d.port.is_some()),
        ("calling_ae", d.calling_ae.is_some()),
        ("tls", d.tls),
        ("cert_file", d.cert_file.is_some()),
        ("key_file", d.key_file.is_some()),
    ];
    if let Some((key, _)) = dimse_keys.iter().find(|(_, set)| *set) {
        return Err(invalid(
            "destinations.kind",
            format!(
                "destination {:?} is kind = \"dicomweb\": {key} is for C-STORE destinations",
                d.name
            ),
        ));
    }
    web_target(
        "destinations",
        &d.name,
        &d.url,
        &d.token_file,
        &d.username,
        &d.password_file,
        &d.ca_file,
    )
}

/// A DICOMweb service (`section`: `destinations` or `sources`): an http(s) URL, a
/// bearer token or a user name and password (each from a file), and a CA file for
/// HTTPS beside the system's.
pub(super) fn web_target(
    section: &'static str,
    name: &str,
    url: &Option<String>,
    token_file: &Option<PathBuf>,
    username: &Option<String>,
    password_file: &Option<PathBuf>,
    ca_file: &Option<PathBuf>,
) -> Result<WebTarget, ConfigError> {
    // The field a mistake is reported under: `destinations.url`, `sources.url`, ...
    let field = |key: &'static str| -> &'static str {
        match (section, key) {
            ("sources", "url") => "sources.url",
            ("sources", _) => "sources.token_file",
            (_, "url") => "destinations.url",
            _ => "destinations.token_file",
        }
    };
    let url = match url {
        Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
            u.trim_end_matches('/').to_string()
        }
        Some(u) => {
            return Err(invalid(
                field("url"),
                format!("{u:?}: only http:// and https:// URLs are supported"),
            ));
        }
        None => {
            return Err(invalid(
                field("url"),
                format!("{name:?} is a DICOMweb service: a url is required"),
            ));
        }
    };
    let auth = match (token_file, username, password_file) {
        (None, None, None) => WebAuth::None,
        (Some(token), None, None) => WebAuth::Bearer(secret(field("token_file"), token)?),
        (None, Some(username), Some(password)) => WebAuth::Basic {
            username: username.clone(),
            password: secret(field("password_file"), password)?,
        },
        _ => {
            return Err(invalid(
                field("token_file"),
                format!("{name:?}: give token_file, or username with password_file"),
            ));
        }
    };
    Ok(WebTarget {
        url,
        auth,
        ca_file: ca_file.clone(),
    })
}
