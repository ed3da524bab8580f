//! The Segmentation Type (0062,0001, PS3.3 C.8.20.2) a SEG is written as, and its SOP
//! class: one name for the SEG encoder, the configuration, the results table and the
//! outbox.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::uid::{LABEL_MAP_SEGMENTATION_STORAGE, SEGMENTATION_STORAGE};

/// Which Segmentation type to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SegType {
    /// One 1-bit frame per segment per slice: displayed most widely.
    #[default]
    Binary,
    /// One 8-bit frame per slice holding segment numbers: compact.
    Labelmap,
}

impl SegType {
    pub const ALL: [SegType; 2] = [SegType::Binary, SegType::Labelmap];

    /// The Segmentation Type (0062,0001) it writes, as the results table records it.
    pub fn as_str(self) -> &'static str {
        match self {
            SegType::Binary => "BINARY",
            SegType::Labelmap => "LABELMAP",
        }
    }

    pub fn sop_class(self) -> &'static str {
        match self {
            SegType::Binary => SEGMENTATION_STORAGE,
            SegType::Labelmap => LABEL_MAP_SEGMENTATION_STORAGE,
        }
    }
}

impl fmt::Display for SegType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no Segmentation Type segnode writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown segmentation type {0:?} (BINARY or LABELMAP)")]
pub struct UnknownSegType(pub String);

impl FromStr for SegType {
    type Err = UnknownSegType;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SegType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| UnknownSegType(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_name_the_sop_class() {
        for t in SegType::ALL {
            assert_eq!(t.as_str().parse::<SegType>(), Ok(t));
        }
        assert_eq!(
            SegType::Labelmap.sop_class(),
            LABEL_MAP_SEGMENTATION_STORAGE
        );
        assert!("binary".parse::<SegType>().is_err());
    }
}
