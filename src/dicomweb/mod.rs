//! DICOMweb (PS3.18) on the node's HTTP listener: the multipart bodies that STOW-RS
//! and WADO-RS exchange, and the DICOM JSON model (Annex F) of what the node holds.
//! The routes are the API's; keeping an instance is `receive`'s; sending one to a
//! DICOMweb destination is `deliver`'s.

pub mod catalog;
pub mod multipart;
