//! DICOM vocabulary shared by every stage: UIDs, AE titles, DIMSE status codes and
//! the DIMSE command set encoding (PS3.7 §9, §E). Pure: no I/O, no tokio.

pub mod build;
pub mod command;
pub mod functional;
pub mod lengths;
pub mod part10;
pub mod peer;
pub mod pixel;
pub mod seg_type;
pub mod uid;

pub use command::{Command, CommandError, CommandField, DimseStatus, SubOperations};
pub use peer::PeerAddress;
pub use seg_type::SegType;
pub use uid::{AeTitle, AeTitleError, Uid, UidError};
