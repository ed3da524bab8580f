//! Where HL7 v2 results go: the `[[hl7_destinations]]` tables, each a RIS listening for
//! ORU^R01 messages over MLLP.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ConfigError, seconds, secs, unique_name};

/// A RIS (or interface engine) that receives one ORU^R01 per finished job.
#[derive(Debug, Clone, Serialize)]
pub struct Hl7Destination {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// MSH-3 to MSH-6.
    pub sending_application: String,
    pub sending_facility: String,
    pub receiving_application: String,
    pub receiving_facility: String,
    /// Longest wait for the connection and for the ACK.
    #[serde(serialize_with = "secs")]
    pub timeout: Duration,
}

impl Hl7Destination {
    /// `host:port`, as logs and the audit trail name it.
    pub fn address(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHl7Destination {
    name: String,
    host: String,
    port: u16,
    #[serde(default = "default_sending_application")]
    sending_application: String,
    #[serde(default)]
    sending_facility: String,
    #[serde(default)]
    receiving_application: String,
    #[serde(default)]
    receiving_facility: String,
    #[serde(default = "default_timeout_seconds")]
    timeout_seconds: f64,
}

fn default_sending_application() -> String {
    "SEGNODE".into()
}

fn default_timeout_seconds() -> f64 {
    10.0
}

/// The `[[hl7_destinations]]` tables: names unique, among the DICOM destinations' too
/// (a delivery names its destination).
pub(super) fn destinations(
    raw: Vec<RawHl7Destination>,
    dicom: &[super::Destination],
) -> Result<Vec<Hl7Destination>, ConfigError> {
    let mut names: std::collections::HashSet<String> =
        dicom.iter().map(|d| d.name.clone()).collect();
    raw.into_iter()
        .map(|d| {
            unique_name(&mut names, "hl7_destinations", &d.name)?;
            Ok(Hl7Destination {
                timeout: seconds("hl7_destinations.timeout_seconds", d.timeout_seconds)?,
                name: d.name,
                host: d.host,
                port: d.port,
                sending_application: d.sending_application,
                sending_facility: d.sending_facility,
                receiving_application: d.receiving_application,
                receiving_facility: d.receiving_facility,
            })
        })
        .collect()
}
