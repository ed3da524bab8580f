//! The one checksum the node records: SHA-256 in lowercase hex, of received data sets
//! (what the sender sent) and of model files (as manifests give them).

use sha2::{Digest, Sha256};

/// The SHA-256 of `bytes` in lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}
