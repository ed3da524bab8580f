//! Checks of a received data set before anything is kept: bounded inflation of a
//! deflated one, parsing up to its Pixel Data, and whether the pixel data matches its
//! description. Errors are [`Refusal`]s.

use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, OpenFileOptions};

use super::refusal::Refusal;
use super::text;
use crate::dicom::lengths::PixelData;
use crate::dicom::pixel;
use crate::dicom::uid::is_ct_image_storage;

/// A deflated data set may inflate to this many times its size before it is refused
/// (CT pixel data deflates 2-4x; a bomb, thousands of times)...
const MAX_INFLATION_RATIO: u64 = 20;
/// ...but small objects may always inflate to this size.
const MIN_INFLATED_LIMIT: u64 = 16 * 1024 * 1024;

/// Inflates a Deflated Explicit VR Little Endian data set (PS3.5 A.5: raw deflate),
/// stopping as soon as it exceeds the smaller of `max_object_bytes` (then it is
/// [`Refusal::TooLarge`], as if sent uncompressed) and [`MAX_INFLATION_RATIO`] times its
/// size, at least [`MIN_INFLATED_LIMIT`] ([`Refusal::InflatesBeyond`]: a bomb).
pub(crate) fn inflate_bounded(deflated: &[u8], max_object_bytes: u64) -> Result<Vec<u8>, Refusal> {
    use std::io::Read;
    let bound = (deflated.len() as u64 * MAX_INFLATION_RATIO).max(MIN_INFLATED_LIMIT);
    let limit = max_object_bytes.min(bound);
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(limit + 1)
        .read_to_end(&mut inflated)
        .map_err(Refusal::Inflate)?;
    if inflated.len() as u64 > limit {
        return Err(if limit == max_object_bytes {
            Refusal::TooLarge
        } else {
            Refusal::InflatesBeyond(limit)
        });
    }
    Ok(inflated)
}

/// Parses a received data set (behind its Part 10 header) up to its Pixel Data and
/// checks that the pixel data matches its description.
pub(crate) fn parse_instance(
    header: &[u8],
    dataset: &[u8],
    pixel_data: PixelData,
) -> Result<DefaultDicomObject, Refusal> {
    use std::io::Read;
    // The length walk already proved every element fits: no need to copy pixels.
    let object = OpenFileOptions::new()
        .read_until(tags::PIXEL_DATA)
        .from_reader(header[128..].chain(dataset))
        .map_err(|e| Refusal::Unparsable(e.to_string()))?;
    check_pixel_data(&object, pixel_data)?;
    Ok(object)
}

/// A CT image must carry Pixel Data that matches its description: grayscale, and
/// native pixel data exactly as long as Rows x Columns x Samples x Bits Allocated x
/// Frames say (encapsulated data is checked when it is decoded).
fn check_pixel_data(object: &DefaultDicomObject, pixel_data: PixelData) -> Result<(), Refusal> {
    if !is_ct_image_storage(&text(object, tags::SOP_CLASS_UID)) {
        return Ok(());
    }
    let native = match pixel_data {
        PixelData::Absent => return Err(Refusal::NoPixelData),
        PixelData::Native(length) => Some(u64::from(length)),
        PixelData::Encapsulated => None,
    };
    pixel::check(object, native).map_err(Refusal::Pixels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom::DimseStatus;

    fn deflated(bytes: usize) -> Vec<u8> {
        use std::io::Write;
        let mut deflate =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        deflate.write_all(&vec![0u8; bytes]).unwrap();
        deflate.finish().unwrap()
    }

    /// A bomb is the object's fault and answered so that the sender does not retry; an
    /// object beyond `max_object_mb` is refused as one sent uncompressed would be.
    #[test]
    fn a_bomb_is_not_retried_an_object_beyond_the_maximum_is_too_large() {
        let bomb = deflated(MIN_INFLATED_LIMIT as usize + 1);
        let err = inflate_bounded(&bomb, u64::MAX).unwrap_err();
        assert!(
            matches!(err, Refusal::InflatesBeyond(MIN_INFLATED_LIMIT)),
            "{err}"
        );
        assert_eq!(err.status(), DimseStatus::CANNOT_UNDERSTAND);
        assert!(!err.retryable());

        let err = inflate_bounded(&deflated(2048), 1024).unwrap_err();
        assert!(matches!(err, Refusal::TooLarge), "{err}");
        assert_eq!(err.status(), DimseStatus::OUT_OF_RESOURCES);

        assert_eq!(inflate_bounded(&deflated(1024), 1024).unwrap().len(), 1024);
    }
}
