//! DICOM Segmentation encoding (PS3.3 A.51, C.8.20; LABELMAP per Supplement 243): a
//! label map aligned with its source [`Volume`] becomes one SEG instance with the
//! patient and study copied, a new series, the source Frame of Reference (derived from
//! the series when the source has none), coded segments from the model manifest,
//! algorithm identification, contributing equipment
//! (the IHE AI Results way), shared and per-frame functional groups with derivation
//! references to each source instance, the dimension organisation and the referenced
//! series. Sparse: frames without segment voxels are omitted. Pure: no I/O.
//!
//! The SOP Instance UID is derived from the source content (a key the caller gives:
//! the source instances' checksums), the model name and version and the SEG type, so
//! that encoding the same result again gives the same instance, not a duplicate.

pub mod frames;
mod iod;

use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;

use sha2::{Digest, Sha256};

use crate::cascade::manifest::{Label, Manifest};
pub use crate::derived::Equipment;
use crate::derived::{now_da_tm, uid_from};
pub use crate::dicom::SegType;
use crate::dicom::{Uid, part10};
use crate::grid::Grid;
use crate::volume::Volume;
use frames::Frame;

/// An encoded SEG.
#[derive(Debug, Clone)]
pub struct EncodedSeg {
    /// The Part 10 file.
    pub file: Vec<u8>,
    pub sop_class_uid: &'static str,
    pub sop_instance_uid: Uid,
    pub series_instance_uid: Uid,
    pub frames: usize,
    /// Label values that became segments, in segment-number order.
    pub segments: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SegError {
    #[error("no structures found: a SEG needs at least one segment voxel")]
    Empty,
    #[error("label map shape {labels:?} does not match the volume {volume:?}")]
    ShapeMismatch {
        labels: [usize; 3],
        volume: [usize; 3],
    },
    #[error("source series has no {0}")]
    MissingSource(&'static str),
    #[error("cannot encode the SEG data set: {0}")]
    Encode(String),
}

/// The Frame of Reference UID for a source series that has none (files from archives
/// and conversion tools often lack this Type 1 attribute): derived from its Series
/// Instance UID, so that every result of the series, whenever made, shares one frame.
/// A viewer aligns the SEG with its source through the per-frame references to the
/// source instances and the Image Position (Patient) values, which are the source's.
pub fn derived_frame_of_reference(series_uid: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"segnode frame of reference\0");
    h.update(series_uid.as_bytes());
    uid_from(h).to_string()
}

/// Encodes the label map of `volume` as a SEG of `seg_type`. `source_key` identifies
/// the source series' content (for example a hash of its instances' checksums).
pub fn encode(
    volume: &Volume,
    labels: &Grid<u8>,
    model: &Manifest,
    seg_type: SegType,
    equipment: &Equipment,
    source_key: &str,
) -> Result<EncodedSeg, SegError> {
    if labels.shape != volume.shape {
        return Err(SegError::ShapeMismatch {
            labels: labels.shape,
            volume: volume.shape,
        });
    }
    let (study_uid, series_uid, frame_of_reference) = source_uids(volume)?;
    let [_, rows, columns] = volume.shape;
    let plane = rows * columns;
    let slice_presence = frames::slice_presence(&labels.data, plane);
    let defs = present_labels(model, &slice_presence)?;
    let segments: Vec<u8> = defs.iter().map(|l| l.value).collect();
    let (seg_series_uid, sop_instance_uid) = derived_uids(source_key, model, seg_type);
    let (date, time) = now_da_tm();
    let (frame_list, pixel_data, bits) =
        frames_and_pixels(seg_type, &labels.data, plane, &slice_presence, &segments);
    let dimension_uid = {
        let mut h = Sha256::new();
        h.update(sop_instance_uid.as_str().as_bytes());
        h.update(b"dimension");
        uid_from(h).to_string()
    };
    let seg = iod::Seg {
        volume,
        model,
        seg_type,
        equipment,
        defs,
        frames: frame_list,
        bits,
        uids: iod::Uids {
            sop_instance: sop_instance_uid.to_string(),
            series: seg_series_uid.to_string(),
            dimension: dimension_uid,
            study: study_uid,
            source_series: series_uid,
            frame_of_reference,
        },
        date,
        time,
    };
    let file = part10_file(&seg, &pixel_data)?;
    Ok(EncodedSeg {
        file,
        sop_class_uid: seg_type.sop_class(),
        frames: seg.frames.len(),
        sop_instance_uid,
        series_instance_uid: seg_series_uid,
        segments,
    })
}

/// The source's Study and Series Instance UIDs and its Frame of Reference UID (derived
/// from the series when it has none).
fn source_uids(volume: &Volume) -> Result<(String, String, String), SegError> {
    let src = &volume.source;
    let study_uid = src
        .study_instance_uid
        .clone()
        .ok_or(SegError::MissingSource("Study Instance UID"))?;
    let series_uid = src
        .series_instance_uid
        .clone()
        .ok_or(SegError::MissingSource("Series Instance UID"))?;
    let frame_of_reference = src
        .frame_of_reference_uid
        .clone()
        .unwrap_or_else(|| derived_frame_of_reference(&series_uid));
    Ok((study_uid, series_uid, frame_of_reference))
}

/// The segments: the manifest's labels that occur in some slice, in value order (the
/// segment numbers count from 1 in that order); none is [`SegError::Empty`].
fn present_labels<'a>(
    model: &'a Manifest,
    slice_presence: &[[bool; 256]],
) -> Result<Vec<&'a Label>, SegError> {
    let mut present = [false; 256];
    for seen in slice_presence {
        present.iter_mut().zip(seen).for_each(|(p, s)| *p |= *s);
    }
    let mut defs: Vec<_> = model
        .labels
        .iter()
        .filter(|l| present[usize::from(l.value)])
        .collect();
    defs.sort_by_key(|l| l.value);
    if defs.is_empty() {
        return Err(SegError::Empty);
    }
    Ok(defs)
}

/// The SEG's Series and SOP Instance UIDs, derived from the source content, the model
/// name and version and (for the instance) the SEG type.
fn derived_uids(source_key: &str, model: &Manifest, seg_type: SegType) -> (Uid, Uid) {
    let hash = {
        let mut h = Sha256::new();
        for part in [source_key, &model.name, &model.version] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h
    };
    let seg_series_uid = {
        let mut h = hash.clone();
        h.update(b"series");
        uid_from(h)
    };
    let sop_instance_uid = {
        let mut h = hash;
        h.update(match seg_type {
            SegType::Binary => b"binary".as_slice(),
            SegType::Labelmap => b"labelmap".as_slice(),
        });
        uid_from(h)
    };
    (seg_series_uid, sop_instance_uid)
}

/// The Part 10 file: header, the data set of `seg`, then its Pixel Data.
fn part10_file(seg: &iod::Seg, pixel_data: &[u8]) -> Result<Vec<u8>, SegError> {
    let o = iod::data_set(seg);
    let pixel_bytes = pixel_data.len();
    let mut file = part10::header(
        seg.seg_type.sop_class(),
        &seg.uids.sop_instance,
        crate::dicom::uid::ts::EXPLICIT_VR_LE,
        &seg.equipment.ae_title,
        pixel_bytes + 64 * 1024 + seg.frames.len() * 1024,
    )
    .map_err(|e| SegError::Encode(e.to_string()))?;
    o.write_dataset_with_ts(&mut file, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| SegError::Encode(e.to_string()))?;
    // Pixel Data (7FE0,0010) has the highest tag, so it goes last: written directly,
    // OB in Explicit VR Little Endian (tag, VR, 2 reserved bytes, 32-bit length),
    // padded to an even length, without a copy through the data set model.
    let padded = pixel_bytes + pixel_bytes % 2;
    let length =
        u32::try_from(padded).map_err(|_| SegError::Encode("Pixel Data over 4 GiB".into()))?;
    file.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0]);
    file.extend_from_slice(&length.to_le_bytes());
    file.extend_from_slice(pixel_data);
    if padded != pixel_bytes {
        file.push(0);
    }
    Ok(file)
}

/// The frames of a SEG of `seg_type` as (segment for BINARY, source slice), its Pixel
/// Data and bits per pixel. Frames without segment voxels are omitted.
fn frames_and_pixels(
    seg_type: SegType,
    labels: &[u8],
    plane: usize,
    slice_presence: &[[bool; 256]],
    segments: &[u8],
) -> (Vec<iod::FrameRef>, Vec<u8>, u16) {
    match seg_type {
        SegType::Binary => {
            let fr = frames::binary_frames(slice_presence, segments);
            let packed = frames::pack_binary(labels, plane, &fr, segments);
            (
                fr.iter()
                    .map(|f: &Frame| (Some(f.segment), f.slice))
                    .collect::<Vec<_>>(),
                packed,
                1u16,
            )
        }
        SegType::Labelmap => {
            let slices = frames::labelmap_slices(slice_presence);
            let mut number = [0u8; 256];
            for (i, v) in segments.iter().enumerate() {
                number[usize::from(*v)] = i as u8 + 1;
            }
            let mut data = Vec::with_capacity(slices.len() * plane);
            for z in &slices {
                data.extend(
                    labels[z * plane..(z + 1) * plane]
                        .iter()
                        .map(|v| number[usize::from(*v)]),
                );
            }
            (slices.into_iter().map(|z| (None, z)).collect(), data, 8u16)
        }
    }
}
