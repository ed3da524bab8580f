//! segnode: a DICOM-native AI node beside a PACS.
//!
//! The PACS auto-routes CT series to the node; the node keeps every acknowledged
//! instance durably, decides when a series is complete and whether it is eligible,
//! assembles it into a Hounsfield-unit volume, segments abdominal organs with a
//! two-stage cascade of 3D FCNs on ONNX Runtime, encodes a DICOM SEG, a measurement
//! report and key images and sends them back, tracking every job and event in SQLite
//! (embedded, one node) or PostgreSQL (several nodes sharing one queue).
//!
//! ```text
//! PACS ──C-STORE──▶ receive ──▶ spool + store ──▶ series tracker ──▶ job queue
//!                   (SCP)       (durable)         (stable age)          │
//!                                                                       ▼
//! PACS ◀──C-STORE── outbox ◀── seg, sr,  ◀── cascade ◀── volume ◀── job workers
//!                   (retries)   key images  (ONNX Runtime) (decode, HU, geometry)
//!                        │
//!                        └──▶ jobs, results + audit (SQLite or PostgreSQL)
//!                                  ──▶ HTTP API, dashboard, CLI, webhooks
//! ```
//!
//! | stage | module |
//! | --- | --- |
//! | DICOM vocabulary: UIDs, AE titles, DIMSE commands, Part 10, length and pixel checks | [`dicom`] |
//! | Upper Layer framing shared by SCP and SCU, over TCP or TLS | [`ul`] |
//! | DICOM TLS and HTTPS: certificates, acceptors, connectors, peer identities | [`tls`] |
//! | associations, C-ECHO, C-STORE, access control, limits, refusals that classify themselves | [`receive`] |
//! | durable files, the retention rule | [`spool`] |
//! | the SHA-256 of data sets and model files | [`checksum`] |
//! | instance attributes, stable age, eligibility | [`series`] |
//! | processing a series (shared by `serve` and `run`), the typed job summary, the workers, the offline runner, resuming interrupted jobs | [`jobs`] |
//! | pixel decoding, HU, slice order, geometry checks | [`volume`] |
//! | the 3-D array every stage passes on (label maps, masks) | [`grid`] |
//! | large buffers (zeroed, huge pages) for volumes and label maps | [`memory`] |
//! | model manifest and frame, ONNX Runtime, stages, region, post-processing | [`cascade`] |
//! | bringing a model: nnU-Net v2 results folders to ONNX and a manifest (runs Python) | [`import`] |
//! | what the SEG, SR and key images share: equipment, derived UIDs, patient and study | [`derived`] |
//! | DICOM Segmentation encoding, module by module | [`seg`] |
//! | how far each organ's result can be trusted: truncation, plausibility, position, parts | [`quality`] |
//! | measurement report: organ volumes and attenuation as TID 1500 SR | [`sr`] |
//! | key images for PACS that cannot show a SEG: outlines and legend burned in | [`keyimages`] |
//! | C-STORE / C-ECHO SCU, the delivery outbox (when a job is delivered) and the webhook sender | [`deliver`] |
//! | the schema on SQLite or PostgreSQL; rows and states per resource (instances, series, jobs, results, deliveries, audit, nodes, retention), no business rules | [`store`] |
//! | what `check` and the health page find: spool, database, clocks | [`check`] |
//! | HTTP API and dashboard | [`api`] |
//! | configuration; the insecure settings `check` reports | [`config`], [`security`] |
//! | start-up recovery: the node id, unacknowledged rows, the sweep, interrupted jobs | [`recovery`] |
//! | wiring and shutdown | [`node`] |
//! | command line | [`cli`] |

pub mod api;
pub mod cascade;
pub mod check;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod derived;
pub mod dicom;
pub mod dicomweb;
#[doc(hidden)]
pub mod fuzzing;
pub mod grid;
pub mod hl7;
pub mod import;
mod jobs;
pub mod keyimages;
mod memory;
pub mod node;
pub mod quality;
mod receive;
mod recovery;
pub mod requests;
mod security;
pub mod seg;
mod series;
mod spool;
pub mod sr;
pub mod store;
pub mod telemetry;
pub mod tls;
mod ul;
pub mod volume;

pub use receive::Receiver;
pub use spool::Spool;
