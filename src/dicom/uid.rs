//! UIDs (PS3.5 §9) and AE titles (PS3.5 §6.2, VR AE) as validated newtypes, and the
//! named UID constants segnode uses.

use std::fmt;

/// segnode's Implementation Class UID (PS3.7 §D.3.3.2), a UUID-derived 2.25 root.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.306991510625265341530301990517899291931";
/// Implementation Version Name sent in associations and file meta headers.
pub const IMPLEMENTATION_VERSION_NAME: &str = concat!("SEGNODE_", env!("CARGO_PKG_VERSION"));

/// Verification SOP Class (C-ECHO).
pub const VERIFICATION: &str = "1.2.840.10008.1.1";
/// CT Image Storage.
pub const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
/// Enhanced CT Image Storage.
pub const ENHANCED_CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2.1";
/// Prefix of every Storage SOP Class (PS3.4 Annex B, PS3.6 Annex A).
pub const STORAGE_SOP_CLASS_PREFIX: &str = "1.2.840.10008.5.1.4.1.1.";
/// Segmentation Storage (BINARY, FRACTIONAL).
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Label Map Segmentation Storage (Supplement 243).
pub const LABEL_MAP_SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.7";
/// Comprehensive 3D SR Storage.
pub const COMPREHENSIVE_3D_SR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.88.34";
/// Secondary Capture Image Storage.
pub const SECONDARY_CAPTURE_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.7";
/// The DICOM application context name (PS3.7 §A.2.1).
/// Study Root Query/Retrieve Information Model: FIND, MOVE, GET (PS3.4 Annex C).
pub const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
pub const STUDY_ROOT_MOVE: &str = "1.2.840.10008.5.1.4.1.2.2.2";
pub const STUDY_ROOT_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
pub const APPLICATION_CONTEXT: &str = "1.2.840.10008.3.1.1.1";

/// Transfer syntaxes (PS3.5 §10, Annex A).
pub mod ts {
    pub const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
    pub const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
    pub const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";
    pub const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
    pub const JPEG_BASELINE: &str = "1.2.840.10008.1.2.4.50";
    pub const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.57";
    pub const JPEG_LOSSLESS_SV1: &str = "1.2.840.10008.1.2.4.70";
    pub const JPEG_LS_LOSSLESS: &str = "1.2.840.10008.1.2.4.80";
    pub const JPEG_2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";
    pub const JPEG_2000: &str = "1.2.840.10008.1.2.4.91";
    pub const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";

    /// Every transfer syntax the node accepts, most preferred first: uncompressed
    /// before compressed, so that a PACS offering both sends the cheapest to decode.
    /// 12-bit lossy JPEG (1.2.840.10008.1.2.4.51) is deliberately absent: the volume
    /// stage cannot decode it, and refusing it makes the PACS send another syntax.
    pub const ACCEPTED: &[&str] = &[
        EXPLICIT_VR_LE,
        IMPLICIT_VR_LE,
        EXPLICIT_VR_BE,
        DEFLATED_EXPLICIT_VR_LE,
        JPEG_LOSSLESS_SV1,
        JPEG_LOSSLESS,
        JPEG_LS_LOSSLESS,
        JPEG_2000_LOSSLESS,
        RLE_LOSSLESS,
        JPEG_2000,
        JPEG_BASELINE,
    ];
}

/// A syntactically valid DICOM UID: 1 to 64 characters, digits and dots, components
/// without leading zeros. Anything else (a path, spaces, letters) is refused, so a UID
/// can never smuggle a path separator or `..` into anything built from it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Uid(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UidError {
    #[error("empty UID")]
    Empty,
    #[error("UID is {len} characters long, more than 64")]
    TooLong { len: usize },
    #[error("UID {value:?} contains characters other than digits and dots")]
    BadCharacter { value: String },
    #[error("UID {value:?} has an empty component or a component with a leading zero")]
    BadComponent { value: String },
}

impl Uid {
    /// Validates a UID as received, after removing the trailing NUL/space padding.
    pub fn parse(raw: &str) -> Result<Self, UidError> {
        let value = raw.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if value.is_empty() {
            return Err(UidError::Empty);
        }
        if value.len() > 64 {
            return Err(UidError::TooLong { len: value.len() });
        }
        if !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UidError::BadCharacter {
                value: value.escape_debug().to_string(),
            });
        }
        let bad_component = value
            .split('.')
            .any(|c| c.is_empty() || (c.len() > 1 && c.starts_with('0')));
        if bad_component {
            return Err(UidError::BadComponent {
                value: value.to_string(),
            });
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The UID of a UUID-like 128-bit value under the `2.25` root (PS3.5 §B.2): valid
    /// by construction.
    pub fn from_u128(value: u128) -> Self {
        Self(format!("2.25.{value}"))
    }
}

/// A UID reads as the text it is (validated once, on parsing).
impl std::ops::Deref for Uid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Uid {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Uid {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Uid::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl PartialEq<&str> for Uid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// An Application Entity title: 1 to 16 characters of printable ASCII other than
/// backslash, not all spaces; leading and trailing spaces are not significant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(transparent)]
pub struct AeTitle(String);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AeTitleError {
    #[error("empty AE title")]
    Empty,
    #[error("AE title {value:?} is longer than 16 characters")]
    TooLong { value: String },
    #[error("AE title {value:?} contains a control character or a backslash")]
    BadCharacter { value: String },
}

impl AeTitle {
    pub fn parse(raw: &str) -> Result<Self, AeTitleError> {
        let value = raw.trim_matches([' ', '\0']);
        if value.is_empty() {
            return Err(AeTitleError::Empty);
        }
        if !value
            .bytes()
            .all(|b| (0x20..0x7f).contains(&b) && b != b'\\')
        {
            return Err(AeTitleError::BadCharacter {
                value: value.escape_debug().to_string(),
            });
        }
        if value.len() > 16 {
            return Err(AeTitleError::TooLong {
                value: value.to_string(),
            });
        }
        Ok(Self(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for AeTitle {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        AeTitle::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a SOP class is one of the CT image storage classes the node processes.
pub fn is_ct_image_storage(sop_class: &str) -> bool {
    sop_class == CT_IMAGE_STORAGE || sop_class == ENHANCED_CT_IMAGE_STORAGE
}

/// Whether an abstract syntax is a Storage SOP class the SCP negotiates. Every storage
/// class is accepted so that a PACS routing a whole study never sees a refusal; only
/// CT images are kept.
pub fn is_storage_sop_class(uid: &str) -> bool {
    uid.starts_with(STORAGE_SOP_CLASS_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_accepts_valid_and_strips_padding() {
        assert_eq!(
            Uid::parse("1.2.840.10008.1.2\0").unwrap().as_str(),
            "1.2.840.10008.1.2"
        );
        assert_eq!(Uid::parse("1.2.3 ").unwrap().as_str(), "1.2.3");
    }

    #[test]
    fn uid_refuses_paths_and_garbage() {
        for bad in [
            "../../etc/passwd",
            "1.2/3",
            "1.2.3..4",
            "1.02",
            "",
            "abc",
            ".1.2",
        ] {
            assert!(Uid::parse(bad).is_err(), "{bad:?} should be refused");
        }
        assert_eq!(
            Uid::parse(&"1".repeat(65)),
            Err(UidError::TooLong { len: 65 })
        );
    }

    #[test]
    fn ae_title_rules() {
        assert_eq!(AeTitle::parse(" STORESCU ").unwrap().as_str(), "STORESCU");
        assert!(AeTitle::parse("   ").is_err());
        assert!(AeTitle::parse("A\\B").is_err());
        assert!(AeTitle::parse("ABCDEFGHIJKLMNOPQ").is_err());
    }

    #[test]
    fn accepted_syntaxes_prefer_uncompressed_and_exclude_12bit_jpeg() {
        assert_eq!(ts::ACCEPTED[0], ts::EXPLICIT_VR_LE);
        assert!(!ts::ACCEPTED.contains(&"1.2.840.10008.1.2.4.51"));
    }
}
