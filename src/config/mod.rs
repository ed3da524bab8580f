//! The node's one typed configuration: `config/segnode.toml` parsed with serde
//! (`deny_unknown_fields`), then validated into typed values. Deployment keys can be
//! overridden from the environment; the overrides are passed in as a map so tests never
//! touch the process environment.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::{Deserialize, Serialize};

use crate::cascade::ModelConfig;
use crate::dicom::AeTitle;
use crate::quality::Verdict;
use crate::store::{Database, Membership};
use crate::tls::{HttpsTls, ServerTls};
use raw::{RawConfig, RawDicom, RawEligibility, RawHttp, RawModel, RawWebhook};

mod destinations;
mod hl7;
mod raw;
mod sources;

pub use destinations::{Destination, Transport, WebAuth, WebTarget};
pub use hl7::Hl7Destination;
use rustls_pki_types::CertificateDer;
pub use sources::{Retrieve, Source, SourceTransport};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("environment override {key}={value:?} is not valid: {reason}")]
    Override {
        key: String,
        value: String,
        reason: String,
    },
    #[error("{field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    pub ae_title: AeTitle,
    pub data_dir: PathBuf,
    pub database: Database,
    /// This node among the nodes sharing the database.
    pub membership: Membership,
    pub dicom: DicomConfig,
    #[serde(serialize_with = "secs")]
    pub stable_age: Duration,
    pub eligibility: Eligibility,
    /// Jobs processed at once (each uses every core for decoding and inference).
    pub workers: usize,
    /// The segmentation model; without one, jobs assemble and check the volume only.
    pub model: Option<ModelConfig>,
    pub delivery: DeliveryConfig,
    pub destinations: Vec<Destination>,
    pub http: HttpConfig,
    pub webhooks: Vec<Webhook>,
    /// Spool files of delivered or ignored jobs are removed this long after the job
    /// ended; `None` keeps them. Audit rows always stay.
    #[serde(serialize_with = "opt_secs")]
    pub purge_after: Option<Duration>,
    pub review: Review,
    /// Series processed before routine work (`[[stat]]`).
    pub stat: Vec<StatRule>,
    /// PACS the node may retrieve studies from on request (`[[sources]]`).
    pub sources: Vec<Source>,
    /// RIS receiving an HL7 ORU^R01 per finished job (`[[hl7_destinations]]`).
    pub hl7_destinations: Vec<Hl7Destination>,
}

/// A series is `stat` when it comes from this calling AE title and its description
/// matches this pattern (each when given; a rule has at least one).
#[derive(Debug, Clone, Serialize)]
pub struct StatRule {
    pub calling_ae: Option<AeTitle>,
    #[serde(serialize_with = "opt_pattern")]
    pub series_description: Option<Regex>,
}

impl StatRule {
    pub fn matches(&self, calling_ae: &str, series_description: &str) -> bool {
        self.calling_ae
            .as_ref()
            .is_none_or(|ae| ae.as_str() == calling_ae)
            && self
                .series_description
                .as_ref()
                .is_none_or(|p| p.is_match(series_description))
    }
}

fn opt_pattern<S: serde::Serializer>(p: &Option<Regex>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_some(&p.as_ref().map(Regex::as_str))
}

/// The `[[stat]]` rules, their patterns compiled.
fn stat_rules(rules: Vec<raw::RawStatRule>) -> Result<Vec<StatRule>, ConfigError> {
    rules
        .into_iter()
        .map(|r| {
            if r.calling_ae.is_none() && r.series_description.is_none() {
                return Err(invalid(
                    "stat",
                    "a rule needs calling_ae, series_description or both",
                ));
            }
            let series_description = r
                .series_description
                .map(|p| {
                    Regex::new(&p).map_err(|e| {
                        invalid("stat.series_description", format!("pattern {p:?}: {e}"))
                    })
                })
                .transpose()?;
            Ok(StatRule {
                calling_ae: r.calling_ae,
                series_description,
            })
        })
        .collect()
}

/// Whether results wait for a person before they are delivered, and whether organs
/// that failed their checks are delivered at all (`[review]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Review {
    pub hold: Hold,
    /// `false`: an organ whose verdict is `fail` is left out of the SEG, the report's
    /// measurements and the key images, and the report says it was left out.
    pub deliver_failed_organs: bool,
}

impl Default for Review {
    fn default() -> Self {
        Self {
            hold: Hold::Never,
            deliver_failed_organs: true,
        }
    }
}

/// Which results are held for review.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// None: every result is delivered as soon as it is made.
    #[default]
    Never,
    /// Those with an organ whose verdict is `warn` or `fail`.
    Flagged,
    /// All of them.
    Always,
}

impl Review {
    /// Whether a result whose worst organ verdict is `verdict` (none: no organ
    /// assessed) waits for review.
    pub fn holds(&self, verdict: Option<Verdict>) -> bool {
        match self.hold {
            Hold::Never => false,
            Hold::Flagged => verdict.is_some_and(|v| v != Verdict::Ok),
            Hold::Always => true,
        }
    }
}

/// A worklist's webhook.
#[derive(Debug, Clone, Serialize)]
pub struct Webhook {
    pub url: String,
    #[serde(skip)]
    pub secret: String,
    /// A CA certificate (PEM) trusted for an https:// URL, beside the system's.
    pub ca_file: Option<PathBuf>,
}

/// The HTTP API.
#[derive(Debug, Clone, Serialize)]
pub struct HttpConfig {
    pub listen: SocketAddr,
    /// File holding the bearer token clients must send: the configured one, else
    /// `<data_dir>/api-token`, created (mode 0600) on first start.
    pub token_file: PathBuf,
    /// Whether the token was named in the configuration (a missing one is then an
    /// error, not created).
    pub token_configured: bool,
    /// No token at all, for a loopback-only listener: the explicit opt-out.
    pub allow_unauthenticated_loopback: bool,
    /// HTTPS instead of HTTP.
    pub tls: Option<HttpsTls>,
    /// Whether the dashboard shows patient names (default: Patient ID and accession
    /// number only).
    pub dashboard_patient_names: bool,
    /// The name series received by STOW-RS are recorded under, as a calling AE title is
    /// (`route_from` of destinations, the audit trail).
    pub stow_ae_title: AeTitle,
    /// The most bytes one STOW-RS request may carry (each part is bounded by
    /// `dicom.max_object_mb`).
    pub max_stow_bytes: u64,
    /// The installed web viewer served under `/viewer/` (`scripts/install-viewer`).
    pub viewer_dir: PathBuf,
}

/// Retry policy of the outbox.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryConfig {
    pub max_attempts: u32,
    #[serde(serialize_with = "secs")]
    pub initial_backoff: Duration,
    #[serde(serialize_with = "secs")]
    pub max_backoff: Duration,
}

impl Config {
    /// The destinations of a result whose series came from `calling_ae`.
    pub fn route(&self, calling_ae: &str) -> Vec<&Destination> {
        self.destinations
            .iter()
            .filter(|d| d.fan_out || d.route_from.iter().any(|a| a.as_str() == calling_ae))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DicomConfig {
    pub listen: SocketAddr,
    pub max_associations: usize,
    /// Connections waiting for their A-ASSOCIATE-RQ, in all and from one address; when
    /// full, the oldest waiting is dropped.
    pub max_pending: usize,
    pub max_pending_per_address: usize,
    pub max_pdu_length: u32,
    #[serde(serialize_with = "secs")]
    pub artim_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub dimse_timeout: Duration,
    #[serde(serialize_with = "secs")]
    pub idle_timeout: Duration,
    pub max_object_bytes: u64,
    pub min_free_disk_bytes: u64,
    pub allow_any_calling_ae: bool,
    pub allowed_peers: Vec<AllowedPeer>,
    /// The DICOM TLS listener, beside the plain one.
    pub tls: Option<ServerTls>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AllowedPeer {
    pub ae_title: AeTitle,
    pub host: Option<IpAddr>,
    /// A DNS name the peer's verified TLS client certificate must carry (then the peer
    /// is only accepted over TLS with that certificate).
    pub tls_identity: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Eligibility {
    pub modalities: Vec<String>,
    pub require_axial: bool,
    pub max_axial_tilt_degrees: f64,
    pub exclude_localizers: bool,
    pub min_slices: u32,
    pub max_slice_thickness_mm: f64,
    #[serde(serialize_with = "patterns")]
    pub description_include: Vec<Regex>,
    #[serde(serialize_with = "patterns")]
    pub description_exclude: Vec<Regex>,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

fn patterns<S: serde::Serializer>(p: &[Regex], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(p.iter().map(Regex::as_str))
}

/// Environment variables that override deployment keys.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("SEGNODE_AE_TITLE", "node.ae_title"),
    ("SEGNODE_DATA_DIR", "node.data_dir"),
    ("SEGNODE_DATABASE", "node.database"),
    ("SEGNODE_NODE_ID", "node.node_id"),
    ("SEGNODE_DICOM_LISTEN", "dicom.listen"),
    ("SEGNODE_STABLE_SECONDS", "series.stable_seconds"),
    ("SEGNODE_MODEL", "model.path"),
    ("SEGNODE_HTTP_LISTEN", "http.listen"),
];

impl Config {
    /// Loads the file at `path` and applies the overrides found in `env` (typically the
    /// process environment collected by `main`).
    pub fn load(path: &Path, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(&text, env).map_err(|e| match e {
            ConfigError::Parse { source, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    pub fn from_toml(text: &str, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text).map_err(|source| ConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(source),
        })?;
        apply_overrides(&mut raw, env)?;
        Self::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Self, ConfigError> {
        if raw.jobs.workers == 0 {
            return Err(invalid("jobs.workers", "must be at least 1"));
        }
        let database = match raw.node.database {
            Some(text) => Database::parse(&text),
            None => Database::Sqlite(raw.node.data_dir.join("segnode.db")),
        };
        let membership = Membership {
            node_id: match raw.node.node_id {
                Some(id) => node_id(&id)?,
                None => node_id(&host_name()).unwrap_or_else(|_| "segnode".to_string()),
            },
            lease: seconds("node.lease_seconds", raw.node.lease_seconds)?,
        };
        let ae_title = raw.node.ae_title;
        let destinations = destinations::destinations(raw.destinations, &ae_title)?;
        Ok(Config {
            dicom: dicom(raw.dicom)?,
            stable_age: seconds("series.stable_seconds", raw.series.stable_seconds)?,
            eligibility: eligibility(raw.eligibility)?,
            workers: raw.jobs.workers,
            http: http(raw.http, &raw.node.data_dir)?,
            purge_after: raw
                .retention
                .purge_after_hours
                .map(|h| seconds("retention.purge_after_hours", h * 3600.0))
                .transpose()?,
            webhooks: raw
                .webhooks
                .into_iter()
                .map(webhook)
                .collect::<Result<_, _>>()?,
            delivery: DeliveryConfig {
                max_attempts: raw.delivery.max_attempts.max(1),
                initial_backoff: seconds(
                    "delivery.initial_backoff_seconds",
                    raw.delivery.initial_backoff_seconds,
                )?,
                max_backoff: seconds(
                    "delivery.max_backoff_seconds",
                    raw.delivery.max_backoff_seconds,
                )?,
            },
            hl7_destinations: hl7::destinations(raw.hl7_destinations, &destinations)?,
            destinations,
            review: raw.review,
            stat: stat_rules(raw.stat)?,
            sources: sources::sources(raw.sources, &ae_title)?,
            model: model(raw.model)?,
            ae_title,
            data_dir: raw.node.data_dir,
            database,
            membership,
        })
    }

    /// The source named `name`; the first one when `name` is `None`.
    pub fn source(&self, name: Option<&str>) -> Option<&Source> {
        match name {
            Some(name) => self.sources.iter().find(|s| s.name == name),
            None => self.sources.first(),
        }
    }

    /// Where received instances are kept.
    pub fn spool_dir(&self) -> PathBuf {
        self.data_dir.join("spool")
    }
}

impl DicomConfig {
    /// Whether a calling AE title from `peer` may open an association.
    /// Whether `calling` from `peer`, with the verified TLS client certificate
    /// `certificate` (if any), may associate.
    pub fn allows(
        &self,
        calling: &AeTitle,
        peer: IpAddr,
        certificate: Option<&CertificateDer<'_>>,
    ) -> bool {
        self.allow_any_calling_ae
            || self.allowed_peers.iter().any(|p| {
                &p.ae_title == calling
                    && p.host.is_none_or(|h| h == peer)
                    && p.tls_identity.as_deref().is_none_or(|identity| {
                        certificate.is_some_and(|c| crate::tls::has_identity(c, identity))
                    })
            })
    }
}

/// A node id: a name fit for logs, metrics labels and spool paths.
fn node_id(text: &str) -> Result<String, ConfigError> {
    let fits = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if text.is_empty() || text.len() > 64 || !text.chars().all(fits) || text.starts_with('.') {
        return Err(invalid(
            "node.node_id",
            format!("{text:?} is not 1 to 64 letters, digits, '.', '-' or '_'"),
        ));
    }
    Ok(text.to_string())
}

/// This machine's host name (empty if it has none).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that
    // much and the text is read up to its first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Adds `name` to the names of a section's tables; a name used twice is an error.
fn unique_name(
    names: &mut std::collections::HashSet<String>,
    section: &'static str,
    name: &str,
) -> Result<(), ConfigError> {
    if names.insert(name.to_string()) {
        Ok(())
    } else {
        Err(invalid(section, format!("name {name:?} is used twice")))
    }
}

fn seconds(field: &'static str, value: f64) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(value)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| {
            invalid(
                field,
                format!("{value} is not a positive number of seconds"),
            )
        })
}

fn apply_overrides(raw: &mut RawConfig, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    // ONNX Runtime: the configuration file's path first, then ORT_DYLIB_PATH.
    if let (Some(m), Some(lib)) = (&mut raw.model, env.get("ORT_DYLIB_PATH")) {
        m.onnxruntime.get_or_insert_with(|| PathBuf::from(lib));
    }
    for (key, _) in ENV_OVERRIDES {
        let Some(value) = env.get(*key) else { continue };
        let bad = |reason: String| ConfigError::Override {
            key: key.to_string(),
            value: value.clone(),
            reason,
        };
        match *key {
            "SEGNODE_AE_TITLE" => {
                raw.node.ae_title = AeTitle::parse(value).map_err(|e| bad(e.to_string()))?
            }
            "SEGNODE_DATA_DIR" => raw.node.data_dir = PathBuf::from(value),
            "SEGNODE_DATABASE" => raw.node.database = Some(value.clone()),
            "SEGNODE_NODE_ID" => raw.node.node_id = Some(value.clone()),
            "SEGNODE_DICOM_LISTEN" => raw.dicom.listen = value.clone(),
            "SEGNODE_HTTP_LISTEN" => raw.http.listen = value.clone(),
            "SEGNODE_MODEL" => match &mut raw.model {
                Some(m) => m.path = PathBuf::from(value),
                None => raw.model = Some(RawModel::at(PathBuf::from(value))),
            },
            "SEGNODE_STABLE_SECONDS" => {
                raw.series.stable_seconds = value.parse().map_err(|e| bad(format!("{e}")))?
            }
            _ => unreachable!("every ENV_OVERRIDES key is handled"),
        }
    }
    Ok(())
}

/// The `[dicom]` table.
fn dicom(d: RawDicom) -> Result<DicomConfig, ConfigError> {
    let listen: SocketAddr = d.listen.parse().map_err(|e| {
        invalid(
            "dicom.listen",
            format!("{:?} is not HOST:PORT ({e})", d.listen),
        )
    })?;
    if d.max_associations == 0 {
        return Err(invalid("dicom.max_associations", "must be at least 1"));
    }
    if !(4096..=16 * 1024 * 1024).contains(&d.max_pdu_length) {
        return Err(invalid(
            "dicom.max_pdu_length",
            format!("{} is outside 4096..=16777216 bytes", d.max_pdu_length),
        ));
    }
    if !d.allow_any_calling_ae && d.allowed_peers.is_empty() {
        return Err(invalid(
            "dicom.allowed_peers",
            "no calling AE title is allowed: add [[dicom.allowed_peers]] entries or set allow_any_calling_ae = true",
        ));
    }
    if d.max_object_mb == 0 {
        return Err(invalid("dicom.max_object_mb", "must be at least 1"));
    }
    Ok(DicomConfig {
        listen,
        max_associations: d.max_associations,
        max_pending: d.max_pending,
        max_pending_per_address: d.max_pending_per_address,
        max_pdu_length: d.max_pdu_length,
        artim_timeout: seconds("dicom.artim_timeout_seconds", d.artim_timeout_seconds)?,
        dimse_timeout: seconds("dicom.dimse_timeout_seconds", d.dimse_timeout_seconds)?,
        idle_timeout: seconds("dicom.idle_timeout_seconds", d.idle_timeout_seconds)?,
        max_object_bytes: d.max_object_mb * 1024 * 1024,
        min_free_disk_bytes: d.min_free_disk_mb * 1024 * 1024,
        allow_any_calling_ae: d.allow_any_calling_ae,
        allowed_peers: d
            .allowed_peers
            .into_iter()
            .map(|p| AllowedPeer {
                ae_title: p.ae_title,
                host: p.host,
                tls_identity: p.tls_identity,
            })
            .collect(),
        tls: d.tls,
    })
}

/// The `[eligibility]` table.
fn eligibility(e: RawEligibility) -> Result<Eligibility, ConfigError> {
    if !(0.0..=90.0).contains(&e.max_axial_tilt_degrees) {
        return Err(invalid(
            "eligibility.max_axial_tilt_degrees",
            "must be within 0..=90",
        ));
    }
    if e.max_slice_thickness_mm.is_nan() || e.max_slice_thickness_mm <= 0.0 {
        return Err(invalid(
            "eligibility.max_slice_thickness_mm",
            "must be positive",
        ));
    }
    let compile = |field: &'static str, list: &[String]| -> Result<Vec<Regex>, ConfigError> {
        list.iter()
            .map(|p| Regex::new(p).map_err(|err| invalid(field, format!("pattern {p:?}: {err}"))))
            .collect()
    };
    Ok(Eligibility {
        modalities: e
            .modalities
            .iter()
            .map(|m| m.trim().to_uppercase())
            .collect(),
        require_axial: e.require_axial,
        max_axial_tilt_degrees: e.max_axial_tilt_degrees,
        exclude_localizers: e.exclude_localizers,
        min_slices: e.min_slices,
        max_slice_thickness_mm: e.max_slice_thickness_mm,
        description_include: compile("eligibility.description_include", &e.description_include)?,
        description_exclude: compile("eligibility.description_exclude", &e.description_exclude)?,
    })
}

/// The `[http]` table; the token file defaults to `<data_dir>/api-token`.
fn http(h: RawHttp, data_dir: &std::path::Path) -> Result<HttpConfig, ConfigError> {
    let token_file = h
        .token_file
        .clone()
        .unwrap_or_else(|| data_dir.join("api-token"));
    let listen: SocketAddr = h.listen.parse().map_err(|e| {
        invalid(
            "http.listen",
            format!("{:?} is not HOST:PORT ({e})", h.listen),
        )
    })?;
    if h.allow_unauthenticated_loopback && !listen.ip().is_loopback() {
        return Err(invalid(
            "http.allow_unauthenticated_loopback",
            format!("the API listens on {listen}, off loopback: a token is required there"),
        ));
    }
    Ok(HttpConfig {
        listen,
        token_configured: h.token_file.is_some(),
        token_file,
        allow_unauthenticated_loopback: h.allow_unauthenticated_loopback,
        dashboard_patient_names: h.dashboard_patient_names,
        stow_ae_title: h.stow_ae_title,
        max_stow_bytes: h.max_stow_mb.saturating_mul(1024 * 1024),
        viewer_dir: h.viewer_dir,
        tls: match (h.tls_cert_file, h.tls_key_file) {
            (Some(cert_file), Some(key_file)) => Some(HttpsTls {
                cert_file,
                key_file,
            }),
            (None, None) => None,
            _ => {
                return Err(invalid(
                    "http.tls_cert_file",
                    "HTTPS needs both tls_cert_file and tls_key_file",
                ));
            }
        },
    })
}

/// One `[[webhooks]]` table; reads its secret file.
fn webhook(w: RawWebhook) -> Result<Webhook, ConfigError> {
    if !w.url.starts_with("http://") && !w.url.starts_with("https://") {
        return Err(invalid(
            "webhooks.url",
            format!("{:?}: only http:// and https:// URLs are supported", w.url),
        ));
    }
    Ok(Webhook {
        secret: secret("webhooks.secret_file", &w.secret_file)?,
        url: w.url,
        ca_file: w.ca_file,
    })
}

/// A secret read from its file, without its surrounding white space.
fn secret(field: &'static str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(field, format!("cannot read {}: {e}", path.display())))?;
    let text = text.trim().to_string();
    if text.is_empty() {
        return Err(invalid(field, format!("{} is empty", path.display())));
    }
    Ok(text)
}

/// What `segnode run` takes from the configuration.
#[derive(Debug, Clone)]
pub struct Offline {
    /// `None` when neither `--model` nor the configuration names one.
    pub model: Option<ModelConfig>,
    /// Whether organs that failed their checks are written (`[review]`).
    pub review: Review,
}

/// What `segnode run` uses: the model folder `dir` when given (with the other `[model]`
/// options of the configuration file `file`, if it exists, else their defaults and
/// `ORT_DYLIB_PATH`), else the configuration's model; and the configuration's
/// `[review]`.
pub fn offline(
    file: &Path,
    dir: Option<PathBuf>,
    env: &BTreeMap<String, String>,
) -> Result<Offline, ConfigError> {
    let (configured, review) = if file.exists() {
        let config = Config::load(file, env)?;
        (config.model, config.review)
    } else {
        (None, Review::default())
    };
    let model = match (dir, configured) {
        (Some(path), Some(c)) => Some(ModelConfig { path, ..c }),
        (Some(path), None) => {
            let mut raw = RawModel::at(path);
            raw.onnxruntime = env.get("ORT_DYLIB_PATH").map(PathBuf::from);
            model(Some(raw))?
        }
        (None, configured) => configured,
    };
    Ok(Offline { model, review })
}

/// The `[model]` table, when there is one.
fn model(m: Option<RawModel>) -> Result<Option<ModelConfig>, ConfigError> {
    match m {
        Some(m) if m.intra_threads == 0 => {
            Err(invalid("model.intra_threads", "must be at least 1"))
        }
        Some(m) => Ok(Some(ModelConfig {
            path: m.path,
            onnxruntime: m.onnxruntime,
            intra_threads: m.intra_threads,
            provider: m.provider,
            labels: m.labels,
        })),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests;
