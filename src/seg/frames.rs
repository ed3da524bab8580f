//! The pure parts of SEG pixel encoding: which frames a segmentation has and how
//! BINARY frames are bit-packed (PS3.5 §8.1.1: pixels in order, the first in the least
//! significant bit, frames concatenated without padding).

use rayon::prelude::*;

/// One BINARY frame: a segment on a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// 1-based segment number.
    pub segment: u16,
    /// Slice index (z) in the source volume.
    pub slice: usize,
}

/// Which label values occur on each slice: one scan of the label map, in parallel,
/// skipping runs of eight equal voxels at a time (label maps are mostly background).
pub fn slice_presence(labels: &[u8], plane: usize) -> Vec<[bool; 256]> {
    labels
        .par_chunks(plane)
        .map(|slice| {
            let mut seen = [false; 256];
            let words = slice.chunks_exact(8);
            slice[slice.len() - words.remainder().len()..]
                .iter()
                .for_each(|v| seen[usize::from(*v)] = true);
            for chunk in words {
                let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                let first = word as u8;
                if word == u64::from(first) * 0x0101_0101_0101_0101 {
                    seen[usize::from(first)] = true;
                } else {
                    chunk.iter().for_each(|v| seen[usize::from(*v)] = true);
                }
            }
            seen
        })
        .collect()
}

/// The frames of a BINARY SEG: per segment (in number order), the slices where it has
/// at least one voxel (sparse: empty frames are omitted). `segments[i]` is the label
/// value of segment number `i + 1`; `present` comes from [`slice_presence`].
pub fn binary_frames(present: &[[bool; 256]], segments: &[u8]) -> Vec<Frame> {
    segments
        .iter()
        .enumerate()
        .flat_map(|(i, value)| {
            present
                .iter()
                .enumerate()
                .filter(move |(_, seen)| seen[usize::from(*value)])
                .map(move |(slice, _)| Frame {
                    segment: i as u16 + 1,
                    slice,
                })
        })
        .collect()
}

/// The slices of a LABELMAP SEG: every slice with any segment voxel.
pub fn labelmap_slices(present: &[[bool; 256]]) -> Vec<usize> {
    present
        .iter()
        .enumerate()
        .filter(|(_, seen)| seen[1..].iter().any(|v| *v))
        .map(|(z, _)| z)
        .collect()
}

/// Packs the frames' masks (voxel == value) into one bit stream.
pub fn pack_binary(labels: &[u8], plane: usize, frames: &[Frame], segments: &[u8]) -> Vec<u8> {
    let bits = frames.len() * plane;
    let mut out = vec![0u8; bits.div_ceil(8)];
    let mask = |f: &Frame| {
        let value = segments[usize::from(f.segment - 1)];
        (value, &labels[f.slice * plane..(f.slice + 1) * plane])
    };
    if plane % 8 == 0 {
        // Every frame starts on a byte: pack frames in parallel, eight voxels a byte.
        out.par_chunks_mut(plane / 8)
            .zip(frames)
            .for_each(|(bytes, f)| {
                let (value, slice) = mask(f);
                for (byte, chunk) in bytes.iter_mut().zip(slice.chunks_exact(8)) {
                    let word = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
                    // Segment values are never 0: background words pack to 0 at once.
                    *byte = if word == 0 {
                        0
                    } else {
                        equal_bytes_mask(word, value)
                    };
                }
            });
        return out;
    }
    let mut bit = 0usize;
    for f in frames {
        let (value, slice) = mask(f);
        for (i, v) in slice.iter().enumerate() {
            if *v == value {
                let k = bit + i;
                out[k / 8] |= 1 << (k % 8);
            }
        }
        bit += plane;
    }
    out
}

/// Bit i set where byte i of `word` (little-endian) equals `value`: SWAR zero-byte
/// detection on `word ^ value...`, then the eight flags gathered by one multiply.
fn equal_bytes_mask(word: u64, value: u8) -> u8 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let x = word ^ (u64::from(value) * 0x0101_0101_0101_0101);
    let nonzero = ((x & LOW7) + LOW7) | x;
    let zero = !nonzero & HIGH;
    ((zero >> 7).wrapping_mul(0x0102_0408_1020_4080) >> 56) as u8
}

/// Unpacks `count` bits (the inverse of [`pack_binary`]'s layout).
pub fn unpack_bits(packed: &[u8], count: usize) -> Vec<bool> {
    (0..count)
        .map(|k| packed[k / 8] >> (k % 8) & 1 == 1)
        .collect()
}

/// sRGB (0..255) to DICOM's Recommended Display CIELab Value (PS3.3 C.10.7.1.1):
/// L* 0..100 and a*, b* -128..127 scaled to 0..65535, D65 white.
pub fn srgb_to_dicom_lab(rgb: [u8; 3]) -> [u16; 3] {
    let lin = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let (r, g, b) = (lin(rgb[0]), lin(rgb[1]), lin(rgb[2]));
    // sRGB (D65) to XYZ, normalised by the D65 white point the matrix rows sum to.
    let x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.9504560;
    let y = 0.2126729 * r + 0.7151522 * g + 0.0721750 * b;
    let z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.0888300;
    let f = |t: f64| {
        if t > 216.0 / 24389.0 {
            t.cbrt()
        } else {
            (24389.0 / 27.0 * t + 16.0) / 116.0
        }
    };
    let (fx, fy, fz) = (f(x), f(y), f(z));
    let l = 116.0 * fy - 16.0;
    let a = 500.0 * (fx - fy);
    let bb = 200.0 * (fy - fz);
    let scale = |v: f64, lo: f64, hi: f64| {
        (((v - lo) / (hi - lo)).clamp(0.0, 1.0) * 65535.0).round() as u16
    };
    [
        scale(l, 0.0, 100.0),
        scale(a, -128.0, 127.0),
        scale(bb, -128.0, 127.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_are_sparse_and_ordered_by_segment_then_slice() {
        // 3 slices of 2 voxels: slice 0 has label 5, slice 1 nothing, slice 2 labels 5 and 7.
        let labels = [5, 0, 0, 0, 7, 5];
        let present = slice_presence(&labels, 2);
        let frames = binary_frames(&present, &[5, 7]);
        assert_eq!(
            frames,
            vec![
                Frame {
                    segment: 1,
                    slice: 0
                },
                Frame {
                    segment: 1,
                    slice: 2
                },
                Frame {
                    segment: 2,
                    slice: 2
                },
            ]
        );
        assert_eq!(labelmap_slices(&present), vec![0, 2]);
    }

    #[test]
    fn packing_puts_the_first_pixel_in_the_lowest_bit() {
        let labels = [1, 0, 0, 0, 0, 0, 0, 1, 1, 1];
        let frames = [Frame {
            segment: 1,
            slice: 0,
        }];
        assert_eq!(
            pack_binary(&labels, 10, &frames, &[1]),
            vec![0b1000_0001, 0b0000_0011]
        );
    }

    #[test]
    fn byte_equality_masks() {
        for value in [0u8, 1, 7, 255] {
            for word in [0u64, u64::MAX, 0x0107_0001_ff00_0701, 0x8000_0000_0000_0080] {
                let expected = (0..8).fold(0u8, |m, i| {
                    m | (u8::from(word.to_le_bytes()[i] == value) << i)
                });
                assert_eq!(equal_bytes_mask(word, value), expected, "{word:x} {value}");
            }
        }
    }

    #[test]
    fn colours_map_to_cielab() {
        // White and black: L* 100 and 0, a* = b* = 0 (scaled 32896), within rounding.
        let near = |a: [u16; 3], b: [u16; 3]| a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 2);
        assert!(near(
            srgb_to_dicom_lab([255, 255, 255]),
            [65535, 32896, 32896]
        ));
        assert!(near(srgb_to_dicom_lab([0, 0, 0]), [0, 32896, 32896]));
        let red = srgb_to_dicom_lab([255, 0, 0]);
        assert!(red[1] > 50000, "{red:?}");
    }

    proptest! {
        #[test]
        fn pack_then_unpack_gives_every_frame_mask(
            plane in 1usize..40,
            slices in 1usize..6,
            seed in any::<u64>(),
        ) {
            let mut state = seed;
            let labels: Vec<u8> = (0..plane * slices)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    (state >> 61) as u8 % 4
                })
                .collect();
            let segments = [1u8, 3, 2];
            let frames = binary_frames(&slice_presence(&labels, plane), &segments);
            let packed = pack_binary(&labels, plane, &frames, &segments);
            prop_assert_eq!(packed.len(), (frames.len() * plane).div_ceil(8));
            let bits = unpack_bits(&packed, frames.len() * plane);
            for (i, f) in frames.iter().enumerate() {
                let value = segments[usize::from(f.segment - 1)];
                for p in 0..plane {
                    prop_assert_eq!(bits[i * plane + p], labels[f.slice * plane + p] == value);
                }
            }
            // Every (segment, slice) with a voxel has a frame, and only those.
            for (si, value) in segments.iter().enumerate() {
                for z in 0..slices {
                    let has = labels[z * plane..(z + 1) * plane].contains(value);
                    let framed = frames.contains(&Frame { segment: si as u16 + 1, slice: z });
                    prop_assert_eq!(has, framed);
                }
            }
        }
    }
}
