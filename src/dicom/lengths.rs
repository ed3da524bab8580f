//! A structural pre-check of a received data set (PS3.5 §7.1, §7.5): every element,
//! item and fragment length must fit inside the bytes actually received. Run before the
//! data set is parsed, so that a hostile length (say 2 GiB on a 500 kB object) is
//! refused at once instead of making the parser allocate for it.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use super::uid::ts;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LengthError {
    #[error(
        "element ({group:04X},{element:04X}) at byte {offset} announces {length} bytes, only {available} remain"
    )]
    Overrun {
        group: u16,
        element: u16,
        offset: usize,
        length: u32,
        available: usize,
    },
    #[error("data set ends inside an element header at byte {offset}")]
    Truncated { offset: usize },
    #[error(
        "element ({group:04X},{element:04X}) is {length} bytes long, not a whole number of {size}-byte values"
    )]
    NotWholeValues {
        group: u16,
        element: u16,
        length: u32,
        size: u32,
    },
    #[error(
        "sequence ({group:04X},{element:04X}) of defined length has a sequence delimiter at byte {offset}, before its end"
    )]
    EarlyEnd {
        group: u16,
        element: u16,
        offset: usize,
    },
    #[error("sequence nesting deeper than {MAX_DEPTH}")]
    TooDeep,
}

const MAX_DEPTH: usize = 32;
const UNDEFINED: u32 = 0xFFFF_FFFF;
const ITEM: (u16, u16) = (0xFFFE, 0xE000);
const ITEM_END: (u16, u16) = (0xFFFE, 0xE00D);
const SEQUENCE_END: (u16, u16) = (0xFFFE, 0xE0DD);
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// An element header: tag, VR (explicit encodings, not items), value length.
struct Header {
    tag: (u16, u16),
    vr: Option<[u8; 2]>,
    length: u32,
}

#[derive(Clone, Copy)]
struct Encoding {
    explicit: bool,
    big_endian: bool,
}

/// What the walk found of the top-level Pixel Data (7FE0,0010).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelData {
    Absent,
    /// Native pixel data of this many bytes.
    Native(u32),
    /// Encapsulated (compressed) fragments.
    Encapsulated,
}

/// Checks a data set encoded in `transfer_syntax` (a deflated data set must be inflated
/// first, and its inflated bytes checked as Explicit VR Little Endian).
pub fn check(dataset: &[u8], transfer_syntax: &str) -> Result<PixelData, LengthError> {
    let enc = match transfer_syntax {
        ts::IMPLICIT_VR_LE => Encoding {
            explicit: false,
            big_endian: false,
        },
        ts::EXPLICIT_VR_BE => Encoding {
            explicit: true,
            big_endian: true,
        },
        _ => Encoding {
            explicit: true,
            big_endian: false,
        },
    };
    let mut walker = Walker::new(dataset, enc);
    walker.elements(dataset.len(), 0, false)?;
    Ok(walker.pixel_data)
}

/// The File Meta Information group (after its group length) as the parser reads it:
/// element after element, a sequence's value skipped whole, none of undefined length,
/// each inside the group.
pub fn check_meta_group(group: &[u8]) -> Result<(), LengthError> {
    let explicit_le = Encoding {
        explicit: true,
        big_endian: false,
    };
    let mut walker = Walker::new(group, explicit_le);
    while walker.pos < group.len() {
        let Header { tag, length, .. } = walker.header()?;
        walker.skip(tag, length, group.len())?;
    }
    Ok(())
}

/// The VR the parser gives an element in Implicit VR Little Endian: the dictionary's
/// (OW for Pixel Data).
fn implicit_vr(tag: (u16, u16)) -> Option<VR> {
    if tag == PIXEL_DATA {
        return Some(VR::OW);
    }
    StandardDataDictionary
        .by_tag(Tag(tag.0, tag.1))
        .map(|entry| entry.vr().relaxed())
}

/// The size of one value of a binary VR, whose length must be a multiple of it
/// (PS3.5 6.2): the parser reads whole values only, and would go on reading from
/// inside this element.
fn value_size(vr: &[u8; 2]) -> Option<u32> {
    match vr {
        b"OW" | b"SS" | b"US" => Some(2),
        b"AT" | b"FL" | b"OF" | b"OL" | b"SL" | b"UL" => Some(4),
        b"FD" | b"OD" | b"OV" | b"SV" | b"UV" => Some(8),
        _ => None,
    }
}

struct Walker<'a> {
    bytes: &'a [u8],
    pos: usize,
    enc: Encoding,
    pixel_data: PixelData,
}

impl<'a> Walker<'a> {
    fn new(bytes: &'a [u8], enc: Encoding) -> Self {
        Walker {
            bytes,
            pos: 0,
            enc,
            pixel_data: PixelData::Absent,
        }
    }

    fn u16_at(&self, at: usize) -> u16 {
        let b = [self.bytes[at], self.bytes[at + 1]];
        if self.enc.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = [
            self.bytes[at],
            self.bytes[at + 1],
            self.bytes[at + 2],
            self.bytes[at + 3],
        ];
        if self.enc.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    fn need(&self, n: usize) -> Result<(), LengthError> {
        if self.pos + n > self.bytes.len() {
            Err(LengthError::Truncated { offset: self.pos })
        } else {
            Ok(())
        }
    }

    /// Reads (tag, VR if explicit, length); items and delimiters have no VR.
    fn header(&mut self) -> Result<Header, LengthError> {
        self.need(8)?;
        let tag = (self.u16_at(self.pos), self.u16_at(self.pos + 2));
        if tag.0 == 0xFFFE || !self.enc.explicit {
            let len = self.u32_at(self.pos + 4);
            self.pos += 8;
            // Implicit VR: the VR is the dictionary's, as the parser reads it (a
            // sequence's items are then parsed, a number's value size applies).
            let vr = (tag.0 != 0xFFFE)
                .then(|| implicit_vr(tag))
                .flatten()
                .map(VR::to_bytes);
            return Ok(Header {
                tag,
                vr,
                length: len,
            });
        }
        let vr = [self.bytes[self.pos + 4], self.bytes[self.pos + 5]];
        // PS3.5 7.1.2: these VRs have a 16-bit length; every other one, and a VR this
        // walker does not know (as the parser reads it: UN), a 32-bit length after two
        // reserved bytes.
        let short = matches!(
            &vr,
            b"AE"
                | b"AS"
                | b"AT"
                | b"CS"
                | b"DA"
                | b"DS"
                | b"DT"
                | b"FL"
                | b"FD"
                | b"IS"
                | b"LO"
                | b"LT"
                | b"PN"
                | b"SH"
                | b"SL"
                | b"SS"
                | b"ST"
                | b"TM"
                | b"UI"
                | b"UL"
                | b"US"
        );
        if !short {
            self.need(12)?;
            let len = self.u32_at(self.pos + 8);
            self.pos += 12;
            Ok(Header {
                tag,
                vr: Some(vr),
                length: len,
            })
        } else {
            let len = u32::from(self.u16_at(self.pos + 6));
            self.pos += 8;
            Ok(Header {
                tag,
                vr: Some(vr),
                length: len,
            })
        }
    }

    fn skip(&mut self, tag: (u16, u16), length: u32, end: usize) -> Result<(), LengthError> {
        let available = end.saturating_sub(self.pos);
        if length as usize > available {
            return Err(LengthError::Overrun {
                group: tag.0,
                element: tag.1,
                offset: self.pos,
                length,
                available,
            });
        }
        self.pos += length as usize;
        Ok(())
    }

    /// Elements until `end`, or until an item delimiter when `in_item`.
    fn elements(&mut self, end: usize, depth: usize, in_item: bool) -> Result<(), LengthError> {
        if depth > MAX_DEPTH {
            return Err(LengthError::TooDeep);
        }
        while self.pos < end {
            let Header { tag, vr, length } = self.header()?;
            if in_item && tag == ITEM_END {
                return Ok(());
            }
            if depth == 0 && tag == PIXEL_DATA {
                self.pixel_data = if length == UNDEFINED {
                    PixelData::Encapsulated
                } else {
                    PixelData::Native(length)
                };
            }
            if let Some(size) = vr.as_ref().and_then(value_size)
                && length != UNDEFINED
                && length % size != 0
            {
                return Err(LengthError::NotWholeValues {
                    group: tag.0,
                    element: tag.1,
                    length,
                    size,
                });
            }
            if length != UNDEFINED {
                let nested = vr.as_ref() == Some(b"SQ");
                if nested {
                    let seq_end = self.pos + length as usize;
                    if seq_end > end {
                        return self.skip(tag, length, end);
                    }
                    self.items(seq_end, depth + 1, false)?;
                    // A sequence delimiter inside a sequence of defined length would
                    // end it here for this walk and not for the parser.
                    if self.pos != seq_end {
                        return Err(LengthError::EarlyEnd {
                            group: tag.0,
                            element: tag.1,
                            offset: self.pos,
                        });
                    }
                } else {
                    self.skip(tag, length, end)?;
                }
            } else {
                // Undefined length: a sequence, or encapsulated pixel data (items of
                // fragments), both closed by a sequence delimiter.
                let fragments = tag == PIXEL_DATA;
                self.items(end, depth + 1, fragments)?;
            }
        }
        if in_item {
            return Err(LengthError::Truncated { offset: self.pos });
        }
        Ok(())
    }

    /// Items (or, for encapsulated pixel data, fragments) until `end` or a sequence
    /// delimiter.
    fn items(&mut self, end: usize, depth: usize, fragments: bool) -> Result<(), LengthError> {
        while self.pos < end {
            let Header { tag, length, .. } = self.header()?;
            if tag == SEQUENCE_END {
                return Ok(());
            }
            if tag != ITEM {
                return Err(LengthError::Overrun {
                    group: tag.0,
                    element: tag.1,
                    offset: self.pos,
                    length,
                    available: end.saturating_sub(self.pos),
                });
            }
            if length == UNDEFINED && !fragments {
                self.elements(end, depth, true)?;
            } else if fragments {
                // Fragments are opaque bytes.
                self.skip(tag, length, end)?;
            } else {
                let item_end = self.pos + length as usize;
                if item_end > end {
                    return self.skip(tag, length, end);
                }
                self.elements(item_end, depth, false)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&tag.0.to_le_bytes());
        v.extend_from_slice(&tag.1.to_le_bytes());
        v.extend_from_slice(vr);
        if matches!(vr, b"OB" | b"OW" | b"SQ") {
            v.extend_from_slice(&[0, 0]);
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            v.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        v.extend_from_slice(value);
        v
    }

    /// Found by the `dataset` fuzz target: a VR the walker did not know was walked
    /// with a 16-bit length, while the parser reads it as UN, with a 32-bit length it
    /// then allocated (gigabytes) before reading.
    #[test]
    fn an_unknown_vr_has_a_32_bit_length_as_the_parser_reads_it() {
        let unknown = |length: u32, value: &[u8]| {
            let mut v = vec![0x09, 0x00, 0x10, 0x00, b'Z', b'Z', 0, 0];
            v.extend_from_slice(&length.to_le_bytes());
            v.extend_from_slice(value);
            v
        };
        let absurd = unknown(0x7FFF_FFF0, b"AB");
        assert!(matches!(
            check(&absurd, ts::EXPLICIT_VR_LE),
            Err(LengthError::Overrun {
                length: 0x7FFF_FFF0,
                ..
            })
        ));
        let mut fitting = unknown(4, b"ABCD");
        fitting.extend(el((0x0010, 0x0010), b"PN", b"AB"));
        assert_eq!(check(&fitting, ts::EXPLICIT_VR_LE), Ok(PixelData::Absent));
    }

    /// Found by the `dataset` fuzz target: in Implicit VR a sequence of defined length
    /// was skipped as opaque bytes, while the parser, which knows from the dictionary
    /// that the element is a sequence, read the items inside and allocated what an
    /// element there announced.
    #[test]
    fn an_implicit_vr_sequence_is_walked_into() {
        let implicit = |tag: (u16, u16), value: &[u8]| {
            let mut v = Vec::new();
            v.extend_from_slice(&tag.0.to_le_bytes());
            v.extend_from_slice(&tag.1.to_le_bytes());
            v.extend_from_slice(&(value.len() as u32).to_le_bytes());
            v.extend_from_slice(value);
            v
        };
        // (0010,0010) inside an item: 2 bytes, or 2 GiB announced.
        let inner = |length: u32| {
            let mut v = vec![0x10, 0x00, 0x10, 0x00];
            v.extend_from_slice(&length.to_le_bytes());
            v.extend_from_slice(b"AB");
            v
        };
        for (length, fits) in [(2, true), (0x7FFF_FFF0, false)] {
            let item = implicit(ITEM, &inner(length));
            // Referenced Image Sequence (0008,1140), a sequence by the dictionary.
            let d = implicit((0x0008, 0x1140), &item);
            assert_eq!(check(&d, ts::IMPLICIT_VR_LE).is_ok(), fits, "{length}");
        }
    }

    /// Found by the `dataset` fuzz target: an SL element 34 bytes long. The parser
    /// reads 8 whole values (32 bytes) and the next element's header from inside it,
    /// with a length it then allocated; such a length is malformed (PS3.5 6.2).
    #[test]
    fn a_binary_value_must_be_whole_values() {
        for (vr, length, whole) in [(b"SL", 34, false), (b"SL", 32, true), (b"US", 3, false)] {
            let mut d = el((0x0008, 0x0081), vr, &vec![0; length]);
            d.extend(el((0x0010, 0x0010), b"PN", b"AB"));
            assert_eq!(
                check(&d, ts::EXPLICIT_VR_LE).is_ok(),
                whole,
                "{vr:?} {length}"
            );
        }
        // In Implicit VR by the dictionary's VR: (0028,0010) Rows is US.
        let rows = [0x28, 0x00, 0x10, 0x00, 3, 0, 0, 0, 1, 2, 3];
        assert!(matches!(
            check(&rows, ts::IMPLICIT_VR_LE),
            Err(LengthError::NotWholeValues { size: 2, .. })
        ));
    }

    /// A sequence delimiter inside a sequence of defined length: this walk and the
    /// parser would go on from different places, so it is refused.
    #[test]
    fn a_sequence_of_defined_length_ends_at_its_length() {
        let delimiter = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
        let mut value = delimiter.to_vec();
        value.extend(el((0x0010, 0x0010), b"PN", b"AB"));
        let d = el((0x0008, 0x1140), b"SQ", &value);
        assert!(matches!(
            check(&d, ts::EXPLICIT_VR_LE),
            Err(LengthError::EarlyEnd { offset: 20, .. })
        ));
        let empty = el((0x0008, 0x1140), b"SQ", &delimiter);
        assert_eq!(check(&empty, ts::EXPLICIT_VR_LE), Ok(PixelData::Absent));
    }

    /// Found by the `part10` fuzz target: the meta group walked into a sequence where
    /// the parser skips it whole, and the two went on from different places.
    #[test]
    fn the_meta_group_is_walked_flat() {
        let item = [0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF];
        let mut group = el((0x0002, 0x1032), b"SQ", &item);
        group.extend(el((0x0002, 0x0010), b"UI", b"1.2.840.10008.1.2.1\0"));
        assert_eq!(check_meta_group(&group), Ok(()));
        let mut absurd = el((0x0002, 0x0002), b"UI", b"1.2");
        absurd.truncate(6);
        absurd.extend([0xF0, 0xFF]);
        assert!(check_meta_group(&absurd).is_err());
        assert!(check_meta_group(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]).is_err());
    }

    #[test]
    fn well_formed_explicit_dataset_passes() {
        let mut d = el((0x0008, 0x0060), b"CS", b"CT");
        let item_body = el((0x0020, 0x0037), b"DS", b"1\\0\\0\\0\\1\\0 ");
        let mut item = vec![0xFE, 0xFF, 0x00, 0xE0];
        item.extend_from_slice(&(item_body.len() as u32).to_le_bytes());
        item.extend_from_slice(&item_body);
        d.extend(el((0x0020, 0x9116), b"SQ", &item));
        d.extend(el((0x7FE0, 0x0010), b"OW", &[0u8; 32]));
        assert_eq!(check(&d, ts::EXPLICIT_VR_LE), Ok(PixelData::Native(32)));
        // The same with an absurd length hidden inside the item.
        let mut bad_body = el((0x0020, 0x0037), b"DS", b"1\\0");
        bad_body[6] = 0xFF;
        let mut bad_item = vec![0xFE, 0xFF, 0x00, 0xE0];
        bad_item.extend_from_slice(&(bad_body.len() as u32).to_le_bytes());
        bad_item.extend_from_slice(&bad_body);
        let bad = el((0x0020, 0x9116), b"SQ", &bad_item);
        assert!(check(&bad, ts::EXPLICIT_VR_LE).is_err());
    }

    #[test]
    fn encapsulated_pixel_data_passes() {
        let mut d = el((0x0008, 0x0060), b"CS", b"CT");
        d.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]); // empty offset table
        d.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 1, 2, 3, 4]);
        d.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        assert_eq!(
            check(&d, ts::JPEG_2000_LOSSLESS),
            Ok(PixelData::Encapsulated)
        );
    }

    #[test]
    fn absurd_and_truncated_lengths_are_refused() {
        let mut d = el((0x0008, 0x0060), b"CS", b"CT");
        d.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0xF0, 0xFF, 0xFF, 0x7F, 1, 2,
        ]);
        assert!(matches!(
            check(&d, ts::EXPLICIT_VR_LE),
            Err(LengthError::Overrun { group: 0x7FE0, .. })
        ));
        let cut = el((0x0010, 0x0010), b"PN", b"Doe^John");
        assert!(check(&cut[..cut.len() - 2], ts::EXPLICIT_VR_LE).is_err());
        assert!(matches!(
            check(&cut[..5], ts::EXPLICIT_VR_LE),
            Err(LengthError::Truncated { .. })
        ));
    }

    #[test]
    fn implicit_vr_lengths_are_checked() {
        let mut d = vec![0x08, 0x00, 0x60, 0x00, 2, 0, 0, 0, b'C', b'T'];
        assert_eq!(check(&d, ts::IMPLICIT_VR_LE), Ok(PixelData::Absent));
        d.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 0x00, 0x00, 0x00, 0x10]);
        assert!(check(&d, ts::IMPLICIT_VR_LE).is_err());
    }
}
