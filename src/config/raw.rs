//! The configuration file as written, before validation: the TOML tables and their
//! defaults, strictly parsed (unknown keys are errors).

use std::net::IpAddr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::cascade::runtime::Provider;
use crate::dicom::AeTitle;
use crate::dicom::SegType;
use crate::store::ResultObject;
use crate::tls::ServerTls;
/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) node: RawNode,
    pub(super) dicom: RawDicom,
    #[serde(default)]
    pub(super) series: RawSeries,
    #[serde(default)]
    pub(super) eligibility: RawEligibility,
    #[serde(default)]
    pub(super) jobs: RawJobs,
    pub(super) model: Option<RawModel>,
    #[serde(default)]
    pub(super) delivery: RawDelivery,
    #[serde(default)]
    pub(super) destinations: Vec<RawDestination>,
    #[serde(default)]
    pub(super) http: RawHttp,
    #[serde(default)]
    pub(super) webhooks: Vec<RawWebhook>,
    #[serde(default)]
    pub(super) retention: RawRetention,
    #[serde(default)]
    pub(super) review: super::Review,
    #[serde(default)]
    pub(super) stat: Vec<RawStatRule>,
    #[serde(default)]
    pub(super) sources: Vec<RawSource>,
    #[serde(default)]
    pub(super) hl7_destinations: Vec<super::hl7::RawHl7Destination>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSource {
    pub(super) name: String,
    pub(super) ae_title: Option<AeTitle>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    #[serde(default)]
    pub(super) retrieve: RetrieveKind,
    pub(super) url: Option<String>,
    pub(super) token_file: Option<std::path::PathBuf>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<std::path::PathBuf>,
    pub(super) calling_ae: Option<AeTitle>,
    #[serde(default = "defaults::source_timeout_seconds")]
    pub(super) timeout_seconds: f64,
    #[serde(default)]
    pub(super) tls: bool,
    pub(super) ca_file: Option<std::path::PathBuf>,
    pub(super) cert_file: Option<std::path::PathBuf>,
    pub(super) key_file: Option<std::path::PathBuf>,
}

/// How a source sends what it is asked for (`retrieve`).
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(super) enum RetrieveKind {
    /// C-MOVE to the node's own AE title (the source must know the node as a modality,
    /// and be among `[[dicom.allowed_peers]]`).
    #[default]
    CMove,
    /// C-GET: the instances come back on the node's own association.
    CGet,
    /// QIDO-RS and WADO-RS from a DICOMweb service (`url`).
    WadoRs,
}

/// A `[[stat]]` rule: series it matches are processed before routine work.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStatRule {
    pub(super) calling_ae: Option<AeTitle>,
    pub(super) series_description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRetention {
    pub(super) purge_after_hours: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) url: String,
    pub(super) secret_file: PathBuf,
    pub(super) ca_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    #[serde(default = "defaults::http_listen")]
    pub(super) listen: String,
    pub(super) token_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) allow_unauthenticated_loopback: bool,
    pub(super) tls_cert_file: Option<PathBuf>,
    pub(super) tls_key_file: Option<PathBuf>,
    #[serde(default)]
    pub(super) dashboard_patient_names: bool,
    #[serde(default = "defaults::stow_ae_title")]
    pub(super) stow_ae_title: AeTitle,
    #[serde(default = "defaults::max_stow_mb")]
    pub(super) max_stow_mb: u64,
    #[serde(default = "defaults::viewer_dir")]
    pub(super) viewer_dir: PathBuf,
}

impl Default for RawHttp {
    fn default() -> Self {
        toml::from_str("").expect("http defaults parse")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDelivery {
    #[serde(default = "defaults::max_attempts")]
    pub(super) max_attempts: u32,
    #[serde(default = "defaults::initial_backoff_seconds")]
    pub(super) initial_backoff_seconds: f64,
    #[serde(default = "defaults::max_backoff_seconds")]
    pub(super) max_backoff_seconds: f64,
}

impl Default for RawDelivery {
    fn default() -> Self {
        toml::from_str("").expect("delivery defaults parse")
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDestination {
    pub(super) name: String,
    #[serde(default)]
    pub(super) kind: DestinationKind,
    pub(super) ae_title: Option<AeTitle>,
    pub(super) host: Option<String>,
    pub(super) port: Option<u16>,
    pub(super) url: Option<String>,
    pub(super) token_file: Option<PathBuf>,
    pub(super) username: Option<String>,
    pub(super) password_file: Option<PathBuf>,
    pub(super) calling_ae: Option<AeTitle>,
    #[serde(default)]
    pub(super) seg_type: SegType,
    #[serde(default = "defaults::objects")]
    pub(super) objects: Vec<ResultObject>,
    #[serde(default)]
    pub(super) route_from: Vec<AeTitle>,
    #[serde(default)]
    pub(super) fan_out: bool,
    #[serde(default = "defaults::destination_timeout_seconds")]
    pub(super) timeout_seconds: f64,
    #[serde(default)]
    pub(super) tls: bool,
    pub(super) ca_file: Option<PathBuf>,
    pub(super) cert_file: Option<PathBuf>,
    pub(super) key_file: Option<PathBuf>,
}

/// How a destination is reached.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(super) enum DestinationKind {
    #[default]
    Dimse,
    Dicomweb,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawModel {
    pub(super) path: PathBuf,
    pub(super) onnxruntime: Option<PathBuf>,
    #[serde(default = "defaults::intra_threads")]
    pub(super) intra_threads: usize,
    #[serde(default = "defaults::provider")]
    pub(super) provider: Provider,
    #[serde(default)]
    pub(super) labels: Option<Vec<String>>,
}

impl RawModel {
    /// The model in folder `path` with every other option at its default.
    pub(super) fn at(path: PathBuf) -> Self {
        Self {
            path,
            onnxruntime: None,
            intra_threads: defaults::intra_threads(),
            provider: defaults::provider(),
            labels: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawJobs {
    #[serde(default = "defaults::workers")]
    pub(super) workers: usize,
}

impl Default for RawJobs {
    fn default() -> Self {
        Self {
            workers: defaults::workers(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNode {
    pub(super) ae_title: AeTitle,
    pub(super) data_dir: PathBuf,
    /// An SQLite file's path, or a `postgres://` URL.
    pub(super) database: Option<String>,
    /// This node's name among the nodes sharing a database (default: the host name).
    pub(super) node_id: Option<String>,
    /// How long a node's claim on a job or a delivery lasts without renewal.
    #[serde(default = "defaults::lease_seconds")]
    pub(super) lease_seconds: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDicom {
    pub(super) listen: String,
    #[serde(default = "defaults::max_associations")]
    pub(super) max_associations: usize,
    #[serde(default = "defaults::max_pending")]
    pub(super) max_pending: usize,
    #[serde(default = "defaults::max_pending_per_address")]
    pub(super) max_pending_per_address: usize,
    #[serde(default = "defaults::max_pdu_length")]
    pub(super) max_pdu_length: u32,
    #[serde(default = "defaults::artim_timeout_seconds")]
    pub(super) artim_timeout_seconds: f64,
    #[serde(default = "defaults::dimse_timeout_seconds")]
    pub(super) dimse_timeout_seconds: f64,
    #[serde(default = "defaults::idle_timeout_seconds")]
    pub(super) idle_timeout_seconds: f64,
    #[serde(default = "defaults::max_object_mb")]
    pub(super) max_object_mb: u64,
    #[serde(default = "defaults::min_free_disk_mb")]
    pub(super) min_free_disk_mb: u64,
    #[serde(default)]
    pub(super) allow_any_calling_ae: bool,
    #[serde(default)]
    pub(super) allowed_peers: Vec<RawPeer>,
    pub(super) tls: Option<ServerTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPeer {
    pub(super) ae_title: AeTitle,
    pub(super) host: Option<IpAddr>,
    pub(super) tls_identity: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSeries {
    #[serde(default = "defaults::stable_seconds")]
    pub(super) stable_seconds: f64,
}

impl Default for RawSeries {
    fn default() -> Self {
        Self {
            stable_seconds: defaults::stable_seconds(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEligibility {
    #[serde(default = "defaults::modalities")]
    pub(super) modalities: Vec<String>,
    #[serde(default = "defaults::yes")]
    pub(super) require_axial: bool,
    #[serde(default = "defaults::max_axial_tilt_degrees")]
    pub(super) max_axial_tilt_degrees: f64,
    #[serde(default = "defaults::yes")]
    pub(super) exclude_localizers: bool,
    #[serde(default = "defaults::min_slices")]
    pub(super) min_slices: u32,
    #[serde(default = "defaults::max_slice_thickness_mm")]
    pub(super) max_slice_thickness_mm: f64,
    #[serde(default)]
    pub(super) description_include: Vec<String>,
    #[serde(default)]
    pub(super) description_exclude: Vec<String>,
}

impl Default for RawEligibility {
    fn default() -> Self {
        toml::from_str("").expect("eligibility defaults parse")
    }
}

pub(super) mod defaults {
    pub fn objects() -> Vec<crate::store::ResultObject> {
        vec![
            crate::store::ResultObject::Seg,
            crate::store::ResultObject::Sr,
        ]
    }
    pub fn max_associations() -> usize {
        16
    }
    pub fn max_pending() -> usize {
        64
    }
    pub fn max_pending_per_address() -> usize {
        8
    }
    pub fn max_pdu_length() -> u32 {
        262_144
    }
    pub fn artim_timeout_seconds() -> f64 {
        5.0
    }
    pub fn dimse_timeout_seconds() -> f64 {
        60.0
    }
    pub fn idle_timeout_seconds() -> f64 {
        300.0
    }
    pub fn max_object_mb() -> u64 {
        2048
    }
    pub fn min_free_disk_mb() -> u64 {
        1024
    }
    pub fn intra_threads() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
    pub fn provider() -> super::Provider {
        super::Provider::Cpu
    }
    pub fn stow_ae_title() -> super::AeTitle {
        super::AeTitle::parse("DICOMWEB").expect("a valid AE title")
    }
    pub fn viewer_dir() -> std::path::PathBuf {
        std::path::PathBuf::from("var/viewer/ohif-3.13.2")
    }
    pub fn max_stow_mb() -> u64 {
        16 * 1024
    }
    pub fn http_listen() -> String {
        "127.0.0.1:8080".into()
    }
    pub fn max_attempts() -> u32 {
        8
    }
    pub fn initial_backoff_seconds() -> f64 {
        5.0
    }
    pub fn max_backoff_seconds() -> f64 {
        600.0
    }
    pub fn source_timeout_seconds() -> f64 {
        60.0
    }

    pub fn destination_timeout_seconds() -> f64 {
        30.0
    }
    pub fn workers() -> usize {
        1
    }
    pub fn lease_seconds() -> f64 {
        30.0
    }
    pub fn stable_seconds() -> f64 {
        10.0
    }
    pub fn modalities() -> Vec<String> {
        vec!["CT".to_string()]
    }
    pub fn yes() -> bool {
        true
    }
    pub fn max_axial_tilt_degrees() -> f64 {
        10.0
    }
    pub fn min_slices() -> u32 {
        10
    }
    pub fn max_slice_thickness_mm() -> f64 {
        5.0
    }
}
