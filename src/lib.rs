//! segnode: a DICOM-native AI node beside a PACS.
//!
//! The PACS auto-routes CT series to the node; the node keeps every acknowledged
//! instance durably, groups instances into series, decides when a series is complete
//! and whether it is eligible, and tracks a job for it in SQLite.
//!
//! ```text
//! PACS ──C-STORE──▶ receive ──▶ spool + store ──▶ series tracker ──▶ jobs (queued)
//!                   (SCP)       (durable)         (stable age, eligibility)
//! ```
//!
//! | stage | module |
//! | --- | --- |
//! | DICOM vocabulary: UIDs, AE titles, DIMSE commands, Part 10 | [`dicom`] |
//! | Upper Layer framing shared by SCP and SCU | [`ul`] |
//! | associations, C-ECHO, C-STORE, access control, limits | [`receive`] |
//! | durable files | [`spool`] |
//! | instance attributes, stable age, eligibility | [`series`] |
//! | job state machine | [`jobs`] |
//! | SQLite schema and queries | [`store`] |
//! | C-STORE / C-ECHO SCU | [`deliver`] |
//! | configuration | [`config`] |
//! | wiring and shutdown | [`node`] |
//! | command line | [`cli`] |

pub mod api;
pub mod cascade;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod dicom;
pub mod jobs;
pub mod node;
pub mod receive;
pub mod seg;
pub mod series;
pub mod spool;
pub mod store;
pub mod telemetry;
pub mod ul;
pub mod volume;
