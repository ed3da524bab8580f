//! What an image's pixel description (PS3.3 C.7.6.3) promises about its Pixel Data, and
//! whether the data keeps the promise. Shared by the receiver (refusing at C-STORE time)
//! and volume assembly (failing the job for files that arrived otherwise). Pure.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{DimseStatus, functional};

/// Why pixel data does not match its description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelMismatch {
    #[error(
        "Photometric Interpretation {0:?} is not MONOCHROME1 or MONOCHROME2, as CT images must be"
    )]
    NotMonochrome(String),
    /// `expected`: Rows x Columns x Samples per Pixel x Bits Allocated x Frames, in
    /// bytes, padded to even.
    #[error("Pixel Data has {found} bytes, its description needs {expected}")]
    Length { found: u64, expected: u64 },
    #[error("Bits Stored {stored} exceeds Bits Allocated {allocated}")]
    BitsStored { stored: u64, allocated: u64 },
    #[error("image has no usable {0}")]
    Missing(&'static str),
}

impl PixelMismatch {
    /// The C-STORE status for an instance refused for this: a colour image is not what
    /// the CT Image IOD allows (0xA900); pixel data that contradicts its own
    /// description, or a description that contradicts itself (more bits stored than
    /// allocated, PS3.3 C.7.6.3.1.1), cannot be understood (0xC000).
    pub fn dimse_status(&self) -> DimseStatus {
        match self {
            PixelMismatch::NotMonochrome(_) | PixelMismatch::Missing(_) => {
                DimseStatus::DATASET_DOES_NOT_MATCH_SOP_CLASS
            }
            PixelMismatch::Length { .. } | PixelMismatch::BitsStored { .. } => {
                DimseStatus::CANNOT_UNDERSTAND
            }
        }
    }
}

/// Checks the Photometric Interpretation of an image meant as CT (grayscale), that Bits
/// Stored does not exceed Bits Allocated (PS3.3 C.7.6.3.1.1; where both are given),
/// and, when `native_length` is given (uncompressed Pixel Data of that many bytes), that
/// the data is exactly as long as Rows x Columns x Samples per Pixel x Bits Allocated x
/// Number of Frames, padded to an even length (PS3.5 8.1.1, 8.4).
pub fn check(obj: &InMemDicomObject, native_length: Option<u64>) -> Result<(), PixelMismatch> {
    let photometric = functional::text(obj, tags::PHOTOMETRIC_INTERPRETATION)
        .ok_or(PixelMismatch::Missing("Photometric Interpretation"))?;
    if !matches!(photometric.as_str(), "MONOCHROME1" | "MONOCHROME2") {
        return Err(PixelMismatch::NotMonochrome(photometric));
    }
    let value = |tag| functional::get(obj, tag).and_then(|e| e.to_int::<u64>().ok());
    if let (Some(stored), Some(allocated)) = (value(tags::BITS_STORED), value(tags::BITS_ALLOCATED))
        && stored > allocated
    {
        return Err(PixelMismatch::BitsStored { stored, allocated });
    }
    let Some(found) = native_length else {
        return Ok(());
    };
    let num = |tag, name| value(tag).ok_or(PixelMismatch::Missing(name));
    let frames = functional::get(obj, tags::NUMBER_OF_FRAMES)
        .and_then(|e| e.to_int::<u64>().ok())
        .unwrap_or(1)
        .max(1);
    let samples = functional::get(obj, tags::SAMPLES_PER_PIXEL)
        .and_then(|e| e.to_int::<u64>().ok())
        .unwrap_or(1);
    let bits = num(tags::ROWS, "Rows")?
        * num(tags::COLUMNS, "Columns")?
        * samples
        * frames
        * num(tags::BITS_ALLOCATED, "Bits Allocated")?;
    let bytes = bits.div_ceil(8);
    let expected = bytes + bytes % 2;
    if found != expected {
        return Err(PixelMismatch::Length { found, expected });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn image(rows: u16, columns: u16, bits: u16, photometric: &str) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(rows),
        ));
        obj.put(DataElement::new(
            tags::COLUMNS,
            VR::US,
            PrimitiveValue::from(columns),
        ));
        obj.put(DataElement::new(
            tags::BITS_ALLOCATED,
            VR::US,
            PrimitiveValue::from(bits),
        ));
        obj.put(DataElement::new(
            tags::SAMPLES_PER_PIXEL,
            VR::US,
            PrimitiveValue::from(1u16),
        ));
        obj.put(DataElement::new(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ));
        obj
    }

    #[test]
    fn length_must_match_the_description_with_even_padding() {
        let ct = image(512, 512, 16, "MONOCHROME2");
        assert_eq!(check(&ct, Some(512 * 512 * 2)), Ok(()));
        assert_eq!(check(&ct, None), Ok(()));
        // Rows = 256 with 512 rows of data; 8 bits allocated with 16-bit data.
        assert_eq!(
            check(&image(256, 512, 16, "MONOCHROME2"), Some(512 * 512 * 2)),
            Err(PixelMismatch::Length {
                found: 524_288,
                expected: 262_144
            })
        );
        assert!(check(&image(512, 512, 8, "MONOCHROME2"), Some(512 * 512 * 2)).is_err());
        assert!(check(&ct, Some(512 * 512 * 2 - 2)).is_err());
        // An odd number of bytes is padded by one.
        assert_eq!(check(&image(3, 3, 8, "MONOCHROME1"), Some(10)), Ok(()));
        assert!(check(&image(3, 3, 8, "MONOCHROME1"), Some(9)).is_err());
    }

    #[test]
    fn bits_stored_may_not_exceed_bits_allocated() {
        let mut ct = image(2, 2, 16, "MONOCHROME2");
        ct.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(16u16),
        ));
        assert_eq!(check(&ct, Some(8)), Ok(()));
        ct.put(DataElement::new(
            tags::BITS_STORED,
            VR::US,
            PrimitiveValue::from(17u16),
        ));
        let err = PixelMismatch::BitsStored {
            stored: 17,
            allocated: 16,
        };
        assert_eq!(check(&ct, Some(8)), Err(err.clone()));
        assert_eq!(check(&ct, None), Err(err.clone()), "encapsulated too");
        assert_eq!(err.dimse_status(), DimseStatus::CANNOT_UNDERSTAND);
        assert_eq!(err.to_string(), "Bits Stored 17 exceeds Bits Allocated 16");
    }

    #[test]
    fn only_monochrome_is_grayscale() {
        let palette = image(2, 2, 16, "PALETTE COLOR");
        assert_eq!(
            check(&palette, Some(8)),
            Err(PixelMismatch::NotMonochrome("PALETTE COLOR".into()))
        );
        let mut none = image(2, 2, 16, "MONOCHROME2");
        none.remove_element(tags::PHOTOMETRIC_INTERPRETATION);
        assert!(check(&none, Some(8)).is_err());
    }
}
