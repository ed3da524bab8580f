//! Volume assembly: from the files of one series to a Hounsfield-unit volume whose
//! geometry is right to the voxel, or a refusal with a code and a reason.
//!
//! Headers are read first (up to Pixel Data) and the stack is checked
//! ([`geometry::arrange`]; a failure names the instance at fault and where it lies, and
//! one SOP Instance UID in two files is refused); then every slice is decoded in parallel, straight into its
//! place in the preallocated (z, y, x) `f32` volume. Pixel decoding covers every
//! transfer syntax the SCP accepts (PS3.5 §8, Annex A: native, Deflated, JPEG
//! Baseline/Lossless, JPEG-LS, JPEG 2000, RLE); raw values honour Bits Stored and Pixel
//! Representation, then each slice's own Rescale Slope/Intercept gives HU (PS3.3
//! C.11.1). Enhanced CT (multi-frame, functional groups, PS3.3 A.38) is a stack of
//! frames.

pub mod geometry;
pub mod inspect;

use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use rayon::prelude::*;
use serde::Serialize;

use crate::dicom::functional::{self, text};
use crate::dicom::pixel;
use crate::dicom::uid::ts;
pub use geometry::{Geometry, GeometryError, Tolerances};

/// A CT volume in Hounsfield units.
#[derive(Debug, Clone)]
pub struct Volume {
    /// Voxels in (z, y, x) order, z ascending along the slice normal.
    pub data: Vec<f32>,
    /// (z, y, x) extent.
    pub shape: [usize; 3],
    pub geometry: Geometry,
    /// One per z index.
    pub slices: Vec<SliceSource>,
    /// Patient, study and series attributes a derived object (SEG) copies.
    pub source: SourceAttributes,
}

/// Where a z index came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SliceSource {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    /// 1-based frame number within a multi-frame instance; `None` for single frames.
    pub frame: Option<u32>,
    pub position: [f64; 3],
}

/// Attributes of the source series that a derived object needs. Never logged.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SourceAttributes {
    pub patient_name: Option<String>,
    pub patient_id: Option<String>,
    pub patient_birth_date: Option<String>,
    pub patient_sex: Option<String>,
    pub study_instance_uid: Option<String>,
    pub study_date: Option<String>,
    pub study_time: Option<String>,
    pub study_id: Option<String>,
    pub study_description: Option<String>,
    pub referring_physician_name: Option<String>,
    pub accession_number: Option<String>,
    pub series_instance_uid: Option<String>,
    pub series_description: Option<String>,
    pub frame_of_reference_uid: Option<String>,
    pub modality: Option<String>,
    pub manufacturer: Option<String>,
    pub specific_character_set: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("no DICOM image files given")]
    NoFiles,
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("{path} has no usable {attribute}")]
    MissingAttribute {
        path: String,
        attribute: &'static str,
    },
    #[error("{path} is not a single-channel grayscale image ({samples} samples per pixel)")]
    NotGrayscale { path: String, samples: u16 },
    #[error("{path}: unsupported pixel format ({reason})")]
    UnsupportedPixelFormat { path: String, reason: String },
    #[error("files belong to {count} series, expected one")]
    SeveralSeries { count: usize },
    #[error(
        "instance {sop_instance_uid} is given twice, in {first} and in {second} (two versions of one instance?)"
    )]
    DuplicateInstance {
        sop_instance_uid: String,
        first: String,
        second: String,
    },
    #[error("series {series_uid}: {source}")]
    Geometry {
        series_uid: String,
        #[source]
        source: Box<GeometryError>,
    },
    #[error("cannot decode pixel data of {path}: {reason}")]
    Decode { path: String, reason: String },
}

impl VolumeError {
    /// A stable code: the geometry fault's own, or the kind of input problem.
    pub fn code(&self) -> &'static str {
        match self {
            VolumeError::NoFiles => "no_files",
            VolumeError::Unreadable { .. } => "unreadable",
            VolumeError::MissingAttribute { .. } => "missing_attribute",
            VolumeError::NotGrayscale { .. } => "not_grayscale",
            VolumeError::UnsupportedPixelFormat { .. } => "unsupported_pixel_format",
            VolumeError::SeveralSeries { .. } => "several_series",
            VolumeError::DuplicateInstance { .. } => "duplicate_instance",
            VolumeError::Geometry { source, .. } => source.code(),
            VolumeError::Decode { .. } => "decode_failed",
        }
    }

    /// The same error with its file named as `name` says (the node names an instance by
    /// its SOP Instance UID, not by its spool file); unchanged where `name` knows none.
    /// Geometry faults name their instances already; the two files of a duplicate
    /// instance keep their paths (named by their one UID, they could not be told apart).
    pub fn renamed(mut self, name: impl Fn(&str) -> Option<String>) -> Self {
        use VolumeError::*;
        match &mut self {
            Unreadable { path, .. }
            | MissingAttribute { path, .. }
            | NotGrayscale { path, .. }
            | UnsupportedPixelFormat { path, .. }
            | Decode { path, .. } => {
                if let Some(n) = name(path) {
                    *path = n;
                }
            }
            NoFiles | SeveralSeries { .. } | DuplicateInstance { .. } | Geometry { .. } => {}
        }
        self
    }
}

/// The header facts of one frame.
#[derive(Debug, Clone)]
struct FrameHeader {
    file: usize,
    /// 0-based frame index within its file.
    frame: u32,
    multi_frame: bool,
    sop_class_uid: String,
    sop_instance_uid: String,
    placement: geometry::Placement,
    slope: f64,
    intercept: f64,
}

/// How the stored values of one file are laid out.
#[derive(Debug, Clone, Copy)]
struct PixelFormat {
    bits_allocated: u16,
    bits_stored: u16,
    signed: bool,
}

struct FileHeader {
    series_uid: String,
    format: PixelFormat,
    frames: Vec<FrameHeader>,
    source: SourceAttributes,
}

fn open(path: &Path, until_pixels: bool) -> Result<DefaultDicomObject, VolumeError> {
    let mut options = OpenFileOptions::new();
    if until_pixels {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options
        .open_file(path)
        .map_err(|e| VolumeError::Unreadable {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
}

/// The header facts of file `index` at `path`: its pixel format, series, frames and the
/// source attributes a derived object copies.
fn read_header(index: usize, path: &Path) -> Result<FileHeader, VolumeError> {
    let obj = open(path, true)?;
    let format = pixel_format(&obj, path)?;
    let rows = int(&obj, tags::ROWS).ok_or_else(|| missing(path, "Rows"))?;
    let columns = int(&obj, tags::COLUMNS).ok_or_else(|| missing(path, "Columns"))?;
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1);
    let multi_frame = functional::get(&obj, tags::NUMBER_OF_FRAMES).is_some();
    let sop_class_uid =
        text(&obj, tags::SOP_CLASS_UID).ok_or_else(|| missing(path, "SOP Class UID"))?;
    let sop_instance_uid =
        text(&obj, tags::SOP_INSTANCE_UID).ok_or_else(|| missing(path, "SOP Instance UID"))?;
    let series_uid = text(&obj, tags::SERIES_INSTANCE_UID)
        .ok_or_else(|| missing(path, "Series Instance UID"))?;
    let frame_headers = (0..frames)
        .map(|f| {
            let fi = f as usize;
            let transform = |tag| {
                functional::element(&obj, fi, tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE, tag)
                    .and_then(|e| e.to_float64().ok())
            };
            let name = if multi_frame {
                format!("instance {sop_instance_uid} frame {}", f + 1)
            } else {
                format!("instance {sop_instance_uid}")
            };
            Ok(FrameHeader {
                file: index,
                frame: f,
                multi_frame,
                sop_class_uid: sop_class_uid.clone(),
                sop_instance_uid: sop_instance_uid.clone(),
                placement: placement(&obj, path, fi, name, rows, columns)?,
                slope: transform(tags::RESCALE_SLOPE).unwrap_or(1.0),
                intercept: transform(tags::RESCALE_INTERCEPT).unwrap_or(0.0),
            })
        })
        .collect::<Result<Vec<_>, VolumeError>>()?;
    let source = source_attributes(&obj, &series_uid);
    Ok(FileHeader {
        series_uid,
        format,
        frames: frame_headers,
        source,
    })
}

/// The error for a file at `path` without a usable `attribute`.
fn missing(path: &Path, attribute: &'static str) -> VolumeError {
    VolumeError::MissingAttribute {
        path: path.display().to_string(),
        attribute,
    }
}

/// An unsigned integer attribute at the top level of `obj`.
fn int(obj: &InMemDicomObject, tag: Tag) -> Option<u32> {
    functional::get(obj, tag).and_then(|e| e.to_int::<u32>().ok())
}

/// Pixel description: a single sample per pixel, in a layout the decoder reads
/// (Bits Allocated, Bits Stored, Pixel Representation, then the pixel module's checks).
fn pixel_format(obj: &InMemDicomObject, path: &Path) -> Result<PixelFormat, VolumeError> {
    let p = || path.display().to_string();
    let samples = int(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1) as u16;
    if samples != 1 {
        return Err(VolumeError::NotGrayscale { path: p(), samples });
    }
    let format = PixelFormat {
        bits_allocated: int(obj, tags::BITS_ALLOCATED)
            .ok_or_else(|| missing(path, "Bits Allocated"))? as u16,
        bits_stored: int(obj, tags::BITS_STORED).ok_or_else(|| missing(path, "Bits Stored"))?
            as u16,
        signed: int(obj, tags::PIXEL_REPRESENTATION).unwrap_or(0) == 1,
    };
    if !matches!(format.bits_allocated, 8 | 16 | 32)
        || format.bits_stored == 0
        || format.bits_stored > format.bits_allocated
    {
        return Err(VolumeError::UnsupportedPixelFormat {
            path: p(),
            reason: format!(
                "{} bits allocated, {} stored",
                format.bits_allocated, format.bits_stored
            ),
        });
    }
    pixel::check(obj, None).map_err(|e| VolumeError::UnsupportedPixelFormat {
        path: p(),
        reason: e.to_string(),
    })?;
    Ok(format)
}

/// Geometry of frame `frame` (0-based): its orientation, position and pixel spacing,
/// from its functional groups or the top level.
fn placement(
    obj: &InMemDicomObject,
    path: &Path,
    frame: usize,
    name: String,
    rows: u32,
    columns: u32,
) -> Result<geometry::Placement, VolumeError> {
    Ok(geometry::Placement {
        name,
        orientation: functional::numbers(
            obj,
            frame,
            tags::PLANE_ORIENTATION_SEQUENCE,
            tags::IMAGE_ORIENTATION_PATIENT,
        )
        .ok_or_else(|| missing(path, "Image Orientation (Patient)"))?,
        position: functional::numbers(
            obj,
            frame,
            tags::PLANE_POSITION_SEQUENCE,
            tags::IMAGE_POSITION_PATIENT,
        )
        .ok_or_else(|| missing(path, "Image Position (Patient)"))?,
        pixel_spacing: functional::numbers(
            obj,
            frame,
            tags::PIXEL_MEASURES_SEQUENCE,
            tags::PIXEL_SPACING,
        )
        .ok_or_else(|| missing(path, "Pixel Spacing"))?,
        rows,
        columns,
    })
}

/// The patient, study and series attributes a derived object copies.
fn source_attributes(obj: &InMemDicomObject, series_uid: &str) -> SourceAttributes {
    SourceAttributes {
        patient_name: text(obj, tags::PATIENT_NAME),
        patient_id: text(obj, tags::PATIENT_ID),
        patient_birth_date: text(obj, tags::PATIENT_BIRTH_DATE),
        patient_sex: text(obj, tags::PATIENT_SEX),
        study_instance_uid: text(obj, tags::STUDY_INSTANCE_UID),
        study_date: text(obj, tags::STUDY_DATE),
        study_time: text(obj, tags::STUDY_TIME),
        study_id: text(obj, tags::STUDY_ID),
        study_description: text(obj, tags::STUDY_DESCRIPTION),
        referring_physician_name: text(obj, tags::REFERRING_PHYSICIAN_NAME),
        accession_number: text(obj, tags::ACCESSION_NUMBER),
        series_instance_uid: Some(series_uid.to_string()),
        series_description: text(obj, tags::SERIES_DESCRIPTION),
        frame_of_reference_uid: text(obj, tags::FRAME_OF_REFERENCE_UID),
        modality: text(obj, tags::MODALITY),
        manufacturer: text(obj, tags::MANUFACTURER),
        specific_character_set: text(obj, tags::SPECIFIC_CHARACTER_SET),
    }
}

/// Stored value to HU for one frame: Bits Stored, Pixel Representation, then the frame's
/// Rescale Slope/Intercept.
#[derive(Debug, Clone, Copy)]
struct Rescale {
    bits: u32,
    mask: u64,
    sign_bit: u64,
    signed: bool,
    slope: f64,
    intercept: f64,
}

impl Rescale {
    fn new(format: PixelFormat, slope: f64, intercept: f64) -> Self {
        let bits = u32::from(format.bits_stored);
        Rescale {
            bits,
            mask: if bits >= 32 {
                u64::from(u32::MAX)
            } else {
                (1u64 << bits) - 1
            },
            sign_bit: 1u64 << (bits - 1),
            signed: format.signed,
            slope,
            intercept,
        }
    }

    /// The HU of a raw value; bits above Bits Stored are ignored.
    #[inline]
    fn hu(&self, raw: u64) -> f32 {
        let v = raw & self.mask;
        let stored = if self.signed && v & self.sign_bit != 0 {
            v as i64 - (1i64 << self.bits)
        } else {
            v as i64
        };
        (stored as f64 * self.slope + self.intercept) as f32
    }
}

/// Converts one decoded frame of stored values (little-endian, Bits Allocated wide) to HU.
fn to_hu(
    bytes: &[u8],
    format: PixelFormat,
    rescale: Rescale,
    out: &mut [f32],
) -> Result<(), String> {
    let width = usize::from(format.bits_allocated / 8);
    if bytes.len() < out.len() * width {
        return Err(format!(
            "{} bytes decoded, {} expected",
            bytes.len(),
            out.len() * width
        ));
    }
    match width {
        1 => out
            .iter_mut()
            .zip(bytes)
            .for_each(|(o, b)| *o = rescale.hu(u64::from(*b))),
        2 => out
            .iter_mut()
            .zip(bytes.chunks_exact(2))
            .for_each(|(o, b)| *o = rescale.hu(u64::from(u16::from_le_bytes([b[0], b[1]])))),
        _ => out
            .iter_mut()
            .zip(bytes.chunks_exact(4))
            .for_each(|(o, b)| {
                *o = rescale.hu(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            }),
    }
    Ok(())
}

/// The JPEG 2000 codestream of `frame` when each frame is one fragment, the usual layout.
/// Other layouts go through `dicom-pixeldata`.
fn j2k_codestream(obj: &DefaultDicomObject, frame: u32, frames: usize) -> Option<&[u8]> {
    let syntax = obj.meta().transfer_syntax().trim_end_matches('\0');
    if syntax != ts::JPEG_2000_LOSSLESS && syntax != ts::JPEG_2000 {
        return None;
    }
    let fragments = functional::get(obj, tags::PIXEL_DATA)?
        .value()
        .fragments()?;
    (fragments.len() == frames)
        .then(|| fragments.get(frame as usize).map(Vec::as_slice))
        .flatten()
}

/// Decodes one JPEG 2000 codestream with OpenJPEG straight into HU: one pass from
/// OpenJPEG's samples, without the intermediate byte buffer of the generic path.
fn j2k_to_hu(codestream: &[u8], rescale: Rescale, out: &mut [f32]) -> Result<(), String> {
    let image = jpeg2k::Image::from_bytes(codestream).map_err(|e| e.to_string())?;
    let [component] = image.components() else {
        return Err(format!(
            "{} components in the JPEG 2000 codestream, expected 1",
            image.num_components()
        ));
    };
    let samples = component.data();
    if samples.len() != out.len() {
        return Err(format!(
            "{} samples decoded, {} expected",
            samples.len(),
            out.len()
        ));
    }
    out.iter_mut()
        .zip(samples)
        .for_each(|(o, s)| *o = rescale.hu(u64::from(*s as u32)));
    Ok(())
}

/// Assembles the files of one series into a volume.
pub fn assemble(
    files: &[PathBuf],
    min_slices: usize,
    tol: &Tolerances,
) -> Result<Volume, VolumeError> {
    if files.is_empty() {
        return Err(VolumeError::NoFiles);
    }
    let headers: Vec<FileHeader> = files
        .par_iter()
        .enumerate()
        .map(|(i, p)| read_header(i, p))
        .collect::<Result<_, _>>()?;
    let mut series: Vec<&str> = headers.iter().map(|h| h.series_uid.as_str()).collect();
    series.sort_unstable();
    series.dedup();
    if series.len() > 1 {
        return Err(VolumeError::SeveralSeries {
            count: series.len(),
        });
    }
    let series_uid = series[0].to_string();
    duplicate_instance(files, &headers)?;
    let frames: Vec<&FrameHeader> = headers.iter().flat_map(|h| &h.frames).collect();
    let placements: Vec<geometry::Placement> = frames.iter().map(|f| f.placement.clone()).collect();
    let geometry = geometry::arrange(&placements, min_slices, tol).map_err(|source| {
        VolumeError::Geometry {
            series_uid: series_uid.clone(),
            source,
        }
    })?;
    let (rows, columns) = (placements[0].rows as usize, placements[0].columns as usize);
    let plane = rows * columns;
    let mut data = crate::memory::zeroed::<f32>(plane * frames.len());

    // Each file is opened once; its frames go to their z slots.
    let mut per_file: Vec<Vec<(&FrameHeader, &mut [f32])>> =
        (0..files.len()).map(|_| Vec::new()).collect();
    for (slot, &index) in data.chunks_mut(plane).zip(&geometry.order) {
        let frame = frames[index];
        per_file[frame.file].push((frame, slot));
    }
    per_file
        .into_par_iter()
        .enumerate()
        .filter(|(_, slots)| !slots.is_empty())
        .try_for_each(|(file, slots)| {
            let header = &headers[file];
            decode_file(&files[file], header.format, header.frames.len(), slots)
        })?;

    let slices = geometry
        .order
        .iter()
        .map(|&i| {
            let f = frames[i];
            SliceSource {
                sop_class_uid: f.sop_class_uid.clone(),
                sop_instance_uid: f.sop_instance_uid.clone(),
                frame: f.multi_frame.then_some(f.frame + 1),
                position: f.placement.position,
            }
        })
        .collect();
    Ok(Volume {
        shape: [frames.len(), rows, columns],
        data,
        geometry,
        slices,
        source: headers[0].source.clone(),
    })
}

/// Two files of one SOP Instance UID (one instance in two versions): which slice is the
/// instance is not for the volume to guess.
fn duplicate_instance(files: &[PathBuf], headers: &[FileHeader]) -> Result<(), VolumeError> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (file, header) in headers.iter().enumerate() {
        let Some(frame) = header.frames.first() else {
            continue;
        };
        if let Some(first) = seen.insert(&frame.sop_instance_uid, file) {
            return Err(VolumeError::DuplicateInstance {
                sop_instance_uid: frame.sop_instance_uid.clone(),
                first: files[first].display().to_string(),
                second: files[file].display().to_string(),
            });
        }
    }
    Ok(())
}

fn decode_file(
    path: &Path,
    format: PixelFormat,
    frames: usize,
    slots: Vec<(&FrameHeader, &mut [f32])>,
) -> Result<(), VolumeError> {
    let obj = open(path, false)?;
    let failed = |reason: String| VolumeError::Decode {
        path: path.display().to_string(),
        reason,
    };
    // Native pixel data must be exactly what the description says, not just enough.
    if let Some(Ok(native)) = functional::get(&obj, tags::PIXEL_DATA).map(|e| e.to_bytes()) {
        pixel::check(&obj, Some(native.len() as u64)).map_err(|e| failed(e.to_string()))?;
    }
    for (frame, out) in slots {
        let rescale = Rescale::new(format, frame.slope, frame.intercept);
        if let Some(codestream) = j2k_codestream(&obj, frame.frame, frames) {
            j2k_to_hu(codestream, rescale, out).map_err(failed)?;
            continue;
        }
        let decoded = obj
            .decode_pixel_data_frame(frame.frame)
            .map_err(|e| failed(e.to_string()))?;
        let bytes = decoded.frame_data(0).map_err(|e| failed(e.to_string()))?;
        to_hu(bytes, format, rescale, out).map_err(failed)?;
    }
    Ok(())
}

/// The Hounsfield units a volume holds.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HuRange {
    pub min: f32,
    pub max: f32,
    pub mean: f64,
}

impl Volume {
    /// Minimum, maximum and mean HU.
    pub fn hu_stats(&self) -> HuRange {
        let (min, max, sum) = self
            .data
            .par_chunks(65_536)
            .map(|c| {
                c.iter().fold(
                    (f32::INFINITY, f32::NEG_INFINITY, 0f64),
                    |(lo, hi, s), v| (lo.min(*v), hi.max(*v), s + f64::from(*v)),
                )
            })
            .reduce(
                || (f32::INFINITY, f32::NEG_INFINITY, 0f64),
                |a, b| (a.0.min(b.0), a.1.max(b.1), a.2 + b.2),
            );
        HuRange {
            min,
            max,
            mean: sum / self.data.len().max(1) as f64,
        }
    }

    /// Writes the voxels as raw little-endian float32 in (z, y, x) order.
    pub fn dump(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for v in &self.data {
            out.write_all(&v.to_le_bytes())?;
        }
        out.flush()
    }
}

/// What [`scan`] found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Files grouped by Series Instance UID, in order of first appearance.
    pub series: Vec<(String, Vec<PathBuf>)>,
    /// Files that are not usable DICOM images, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// The files under `paths` grouped by Series Instance UID.
pub fn scan(paths: &[PathBuf]) -> Scan {
    let mut files = Vec::new();
    let mut stack: Vec<PathBuf> = paths.to_vec();
    while let Some(p) = stack.pop() {
        match std::fs::read_dir(&p) {
            Ok(entries) => stack.extend(entries.flatten().map(|e| e.path())),
            Err(_) => files.push(p),
        }
    }
    files.sort();
    let results: Vec<(PathBuf, Result<String, String>)> = files
        .into_par_iter()
        .map(|p| {
            let series = open(&p, true).map_err(|e| e.to_string()).and_then(|o| {
                if functional::get(&o, tags::PIXEL_DATA).is_none()
                    && functional::get(&o, tags::ROWS).is_none()
                {
                    return Err("not an image".to_string());
                }
                text(&o, tags::SERIES_INSTANCE_UID)
                    .ok_or_else(|| "no Series Instance UID".to_string())
            });
            (p, series)
        })
        .collect();
    let mut scan = Scan::default();
    for (path, series) in results {
        match series {
            Ok(uid) => match scan.series.iter_mut().find(|(s, _)| *s == uid) {
                Some((_, list)) => list.push(path),
                None => scan.series.push((uid, vec![path])),
            },
            Err(reason) => scan.skipped.push((path, reason)),
        }
    }
    scan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_values_honour_bits_stored_sign_and_rescale() {
        let unsigned = PixelFormat {
            bits_allocated: 16,
            bits_stored: 12,
            signed: false,
        };
        let mut out = [0f32; 3];
        // High bits above Bits Stored are ignored.
        to_hu(
            &[0x00, 0x00, 0xFF, 0x0F, 0xFF, 0xFF],
            unsigned,
            Rescale::new(unsigned, 1.0, -1024.0),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [-1024.0, 3071.0, 3071.0]);
        let signed = PixelFormat {
            bits_allocated: 16,
            bits_stored: 12,
            signed: true,
        };
        // 0x0FFF in 12-bit two's complement is -1; 0x0800 is -2048.
        to_hu(
            &[0xFF, 0x0F, 0x00, 0x08, 0x05, 0x00],
            signed,
            Rescale::new(signed, 2.0, 0.5),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [-1.5, -4095.5, 10.5]);
        let signed16 = PixelFormat {
            bits_allocated: 16,
            bits_stored: 16,
            signed: true,
        };
        to_hu(
            &[0x18, 0xFC, 0, 0, 0xE8, 0x03],
            signed16,
            Rescale::new(signed16, 1.0, 0.0),
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [-1000.0, 0.0, 1000.0]);
        assert!(
            to_hu(
                &[0, 0],
                unsigned,
                Rescale::new(unsigned, 1.0, 0.0),
                &mut out
            )
            .is_err()
        );
    }
}
