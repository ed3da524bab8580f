//! Key images for PACS that cannot show a SEG: a small Secondary Capture series (PS3.3
//! A.8.1), RGB, one image per organ found at the source slice where that organ is
//! largest (at most [`MAX_IMAGES`]), at a soft-tissue window, with each organ's outline
//! in its SEG colour and a legend burned in: the organs' names and volumes and the
//! statement that this is a research result. Marked as derived (Image Type DERIVED,
//! Burned In Annotation YES, Derivation Description). UIDs derive from the SEG's. Pure.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use font8x8::UnicodeFonts;

use crate::cascade::manifest::Manifest;
use crate::derived::{Equipment, derived_uid, made_by, now_da_tm, patient_and_study};
use crate::dicom::build::{dcm_code, el, item, seq};
use crate::dicom::uid::SECONDARY_CAPTURE_IMAGE_STORAGE;
use crate::dicom::{Uid, part10};
use crate::grid::Grid;
use crate::seg::EncodedSeg;
use crate::sr::Organ;
use crate::volume::Volume;

/// At most this many images per result.
pub const MAX_IMAGES: usize = 4;
/// The soft-tissue window: centre and width, HU.
const WINDOW: (f32, f32) = (40.0, 400.0);
/// What every image says of itself.
pub const STATEMENT: &str = "RESEARCH RESULT - NOT FOR DIAGNOSIS";

/// One encoded key image.
#[derive(Debug, Clone)]
pub struct KeyImage {
    /// The Part 10 file.
    pub file: Vec<u8>,
    pub sop_instance_uid: Uid,
    /// The source slice (z index) it shows.
    pub slice: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyImageError {
    #[error("source series has no {0}")]
    MissingSource(&'static str),
    #[error("cannot encode a key image: {0}")]
    Encode(String),
}

/// The slices to show: for each organ, the slice where it covers most voxels; each
/// slice once, in ascending z, at most [`MAX_IMAGES`] (the largest organs first).
pub fn choose_slices(labels: &Grid<u8>, organs: &[Organ]) -> Vec<usize> {
    use rayon::prelude::*;
    let plane = labels.shape[1] * labels.shape[2];
    // Voxels of each label on each slice, in one parallel pass.
    let per_slice: Vec<[u32; 256]> = labels
        .data
        .par_chunks(plane.max(1))
        .map(|slice| {
            let mut counts = [0u32; 256];
            for l in slice {
                counts[usize::from(*l)] += 1;
            }
            counts
        })
        .collect();
    let mut by_size: Vec<&Organ> = organs.iter().filter(|o| o.voxels > 0).collect();
    by_size.sort_by_key(|o| std::cmp::Reverse(o.voxels));
    let mut slices = Vec::new();
    for organ in by_size {
        let best = (0..per_slice.len()).max_by_key(|z| per_slice[*z][usize::from(organ.value)]);
        if let Some(z) = best.filter(|z| !slices.contains(z)) {
            slices.push(z);
        }
        if slices.len() == MAX_IMAGES {
            break;
        }
    }
    slices.sort_unstable();
    slices
}

/// Renders source slice `z`: windowed grey, organ outlines in their colours, the legend.
/// RGB, row by row.
pub fn render(
    volume: &Volume,
    labels: &Grid<u8>,
    model: &Manifest,
    organs: &[Organ],
    z: usize,
) -> Vec<u8> {
    let [_, rows, columns] = volume.shape;
    let plane = rows * columns;
    let hu = &volume.data[z * plane..(z + 1) * plane];
    let lab = &labels.data[z * plane..(z + 1) * plane];
    let (centre, width) = WINDOW;
    let mut rgb: Vec<u8> = hu
        .iter()
        .flat_map(|v| {
            let g = (((v - (centre - width / 2.0)) / width).clamp(0.0, 1.0) * 255.0).round() as u8;
            [g, g, g]
        })
        .collect();
    let colour = |value: u8| {
        model
            .labels
            .iter()
            .find(|l| l.value == value)
            .map_or([255, 255, 0], |l| l.color)
    };
    for y in 0..rows {
        for x in 0..columns {
            let v = lab[y * columns + x];
            if v != 0 && is_boundary(lab, rows, columns, y, x) {
                rgb[(y * columns + x) * 3..][..3].copy_from_slice(&colour(v));
            }
        }
    }
    // Glyphs twice as large on a 512-wide image, smaller where a line would not fit.
    let fit = |chars: usize| {
        (columns / 256)
            .min(columns.saturating_sub(8) / (8 * chars).max(1))
            .max(1)
    };
    let mut top = 4;
    for organ in organs.iter().filter(|o| o.voxels > 0) {
        let text = legend(organ);
        let scale = fit(text.len());
        draw_text(
            &mut rgb,
            columns,
            rows,
            4,
            top,
            scale,
            &text,
            colour(organ.value),
        );
        top += 10 * scale;
    }
    let scale = fit(STATEMENT.len());
    let bottom = rows.saturating_sub(10 * scale);
    draw_text(
        &mut rgb,
        columns,
        rows,
        4,
        bottom,
        scale,
        STATEMENT,
        [255, 255, 255],
    );
    rgb
}

/// A labelled pixel with a 4-neighbour of another value (or the image edge).
fn is_boundary(lab: &[u8], rows: usize, columns: usize, y: usize, x: usize) -> bool {
    let v = lab[y * columns + x];
    y == 0
        || x == 0
        || y + 1 == rows
        || x + 1 == columns
        || lab[(y - 1) * columns + x] != v
        || lab[(y + 1) * columns + x] != v
        || lab[y * columns + x - 1] != v
        || lab[y * columns + x + 1] != v
}

/// Burns `text` in at (`left`, `top`), 8x8 glyphs scaled by `scale`, on a dark backing
/// so that it reads on any image; clipped at the edges.
#[allow(clippy::too_many_arguments)]
fn draw_text(
    rgb: &mut [u8],
    columns: usize,
    rows: usize,
    left: usize,
    top: usize,
    scale: usize,
    text: &str,
    colour: [u8; 3],
) {
    for (i, c) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(c).unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                let on = bits & (1 << gx) != 0;
                for dy in 0..scale {
                    for dx in 0..scale {
                        let x = left + (i * 8 + gx) * scale + dx;
                        let y = top + gy * scale + dy;
                        if x < columns && y < rows {
                            let p = &mut rgb[(y * columns + x) * 3..][..3];
                            p.copy_from_slice(&if on { colour } else { [0, 0, 0] });
                        }
                    }
                }
            }
        }
    }
}

/// Patient Orientation (0020,0020) of an axial image: the patient direction of its rows
/// and of its columns, each as its dominant letters.
fn patient_orientation(direction: &[[f64; 3]; 3]) -> String {
    let letters = |v: &[f64; 3]| {
        let pairs = [('L', 'R'), ('P', 'A'), ('H', 'F')];
        let mut axes: Vec<usize> = (0..3).filter(|i| v[*i].abs() > 0.25).collect();
        axes.sort_by(|a, b| v[*b].abs().total_cmp(&v[*a].abs()));
        axes.iter()
            .map(|i| {
                if v[*i] > 0.0 {
                    pairs[*i].0
                } else {
                    pairs[*i].1
                }
            })
            .collect::<String>()
    };
    format!("{}\\{}", letters(&direction[0]), letters(&direction[1]))
}

/// Encodes the key images of a result whose SEG is `seg`.
pub fn encode(
    volume: &Volume,
    labels: &Grid<u8>,
    model: &Manifest,
    organs: &[Organ],
    seg: &EncodedSeg,
    equipment: &Equipment,
) -> Result<Vec<KeyImage>, KeyImageError> {
    let src = &volume.source;
    let study_uid = src
        .study_instance_uid
        .clone()
        .ok_or(KeyImageError::MissingSource("Study Instance UID"))?;
    let derive =
        |what: &str| derived_uid(seg.sop_instance_uid.as_str(), "key images", what.as_bytes());
    let series_uid = derive("series");
    let (date, time) = now_da_tm();
    let [_, rows, columns] = volume.shape;
    let organ_list = organs
        .iter()
        .filter(|o| o.voxels > 0)
        .map(legend)
        .collect::<Vec<_>>()
        .join(", ");
    choose_slices(labels, organs)
        .into_iter()
        .enumerate()
        .map(|(i, z)| {
            let sop_instance_uid = derive(&format!("instance {z}"));
            let pixels = render(volume, labels, model, organs, z);
            let mut o = InMemDicomObject::from_element_iter(patient_and_study(volume));
            let elements = [
                el(tags::SOP_CLASS_UID, VR::UI, SECONDARY_CAPTURE_IMAGE_STORAGE),
                el(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid.as_str()),
                el(tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str()),
                el(tags::INSTANCE_CREATION_TIME, VR::TM, time.as_str()),
                el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str()),
                el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str()),
                el(tags::MODALITY, VR::CS, "OT"),
                // Unpaired: no Laterality (Type 2C) to state.
                el(tags::BODY_PART_EXAMINED, VR::CS, "ABDOMEN"),
                el(tags::SERIES_NUMBER, VR::IS, "9003"),
                el(
                    tags::SERIES_DESCRIPTION,
                    VR::LO,
                    format!("{} key images (research)", model.name),
                ),
                el(tags::INSTANCE_NUMBER, VR::IS, (i + 1).to_string()),
                el(tags::CONTENT_DATE, VR::DA, date.as_str()),
                el(tags::CONTENT_TIME, VR::TM, time.as_str()),
                el(tags::CONVERSION_TYPE, VR::CS, "WSD"),
                el(
                    tags::PATIENT_ORIENTATION,
                    VR::CS,
                    PrimitiveValue::Strs(
                        patient_orientation(&volume.geometry.direction)
                            .split('\\')
                            .map(String::from)
                            .collect(),
                    ),
                ),
                el(
                    tags::IMAGE_TYPE,
                    VR::CS,
                    PrimitiveValue::Strs(["DERIVED".to_string(), "SECONDARY".to_string()].into()),
                ),
                el(tags::BURNED_IN_ANNOTATION, VR::CS, "YES"),
                el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(3u16)),
                el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "RGB"),
                el(
                    tags::PLANAR_CONFIGURATION,
                    VR::US,
                    PrimitiveValue::from(0u16),
                ),
                el(tags::ROWS, VR::US, PrimitiveValue::from(rows as u16)),
                el(tags::COLUMNS, VR::US, PrimitiveValue::from(columns as u16)),
                el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(8u16)),
                el(tags::BITS_STORED, VR::US, PrimitiveValue::from(8u16)),
                el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(7u16)),
                el(
                    tags::PIXEL_REPRESENTATION,
                    VR::US,
                    PrimitiveValue::from(0u16),
                ),
                el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
                el(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)),
            ];
            let derivation = derivation(volume, model, seg, z, &organ_list);
            for e in elements
                .into_iter()
                .chain(derivation)
                .chain(made_by(equipment))
            {
                o.put(e);
            }
            let mut file = part10::header(
                SECONDARY_CAPTURE_IMAGE_STORAGE,
                sop_instance_uid.as_str(),
                crate::dicom::uid::ts::EXPLICIT_VR_LE,
                &equipment.ae_title,
                rows * columns * 3 + 16 * 1024,
            )
            .map_err(|e| KeyImageError::Encode(e.to_string()))?;
            o.write_dataset_with_ts(&mut file, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
                .map_err(|e| KeyImageError::Encode(e.to_string()))?;
            Ok(KeyImage {
                file,
                sop_instance_uid,
                slice: z,
            })
        })
        .collect()
}

/// How key image `z` was made: the Derivation Description (the source slice, the
/// window, the SEG and the model, the organs, the statement) and the source slice.
fn derivation(
    volume: &Volume,
    model: &Manifest,
    seg: &EncodedSeg,
    z: usize,
    organ_list: &str,
) -> [DataElement<InMemDicomObject>; 2] {
    let source = &volume.slices[z];
    [
        el(
            tags::DERIVATION_DESCRIPTION,
            VR::ST,
            format!(
                "Source slice at {:.1} mm, soft-tissue window {}/{}, outlines of the \
                 organs of SEG {} by {} {}: {organ_list}. {STATEMENT}.",
                source.position[2],
                WINDOW.0,
                WINDOW.1,
                seg.sop_instance_uid,
                model.name,
                model.version,
            ),
        ),
        seq(
            tags::SOURCE_IMAGE_SEQUENCE,
            vec![item(vec![
                el(
                    tags::REFERENCED_SOP_CLASS_UID,
                    VR::UI,
                    source.sop_class_uid.as_str(),
                ),
                el(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    source.sop_instance_uid.as_str(),
                ),
                seq(
                    tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                    vec![dcm_code(
                        "121322",
                        "Source image for image processing operation",
                    )],
                ),
            ])],
        ),
    ]
}

/// An organ as the legend names it: a truncated organ's volume is a lower bound ("at
/// least"), an organ whose check failed says so.
fn legend(organ: &Organ) -> String {
    let bound = if organ.qa.volume_is_lower_bound() {
        "at least "
    } else {
        ""
    };
    let check = match organ.qa.verdict {
        crate::quality::Verdict::Fail => " (check failed)",
        _ => "",
    };
    format!("{} {bound}{:.1} ml{check}", organ.name, organ.ml)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn organ(value: u8, voxels: u64) -> Organ {
        Organ {
            value,
            segment_number: u16::from(value),
            name: format!("organ {value}"),
            voxels,
            ml: voxels as f64,
            hu_mean: 0.0,
            hu_min: 0.0,
            hu_max: 0.0,
            qa: Default::default(),
            confidence: None,
            left_out: false,
        }
    }

    #[test]
    fn the_legend_says_when_a_volume_is_a_lower_bound_or_failed_its_check() {
        use crate::quality::{Assessment, Reason, ReasonCode, Verdict};
        let mut o = organ(4, 12);
        assert_eq!(legend(&o), "organ 4 12.0 ml");
        let reason = |code| Reason {
            code,
            detail: String::new(),
        };
        o.qa = Assessment {
            verdict: Verdict::Warn,
            reasons: vec![reason(ReasonCode::Truncated)],
        };
        assert_eq!(legend(&o), "organ 4 at least 12.0 ml");
        o.qa = Assessment {
            verdict: Verdict::Fail,
            reasons: vec![reason(ReasonCode::PositionImplausible)],
        };
        assert_eq!(legend(&o), "organ 4 12.0 ml (check failed)");
    }

    #[test]
    fn each_organ_is_shown_where_it_is_largest_each_slice_once() {
        let mut labels = Grid::filled([5, 4, 4], 0u8);
        // Organ 1: 3 voxels on slice 1, 5 on slice 3; organ 2: 2 voxels on slice 3.
        labels.data[16..19].fill(1);
        labels.data[48..53].fill(1);
        labels.data[53..55].fill(2);
        let organs = [organ(1, 8), organ(2, 2), organ(3, 0)];
        assert_eq!(choose_slices(&labels, &organs), vec![3]);
        labels.data[4..8].fill(2);
        labels.data[8..10].fill(2);
        assert_eq!(choose_slices(&labels, &organs), vec![0, 3]);
    }

    #[test]
    fn outlines_are_the_labels_boundary() {
        let (rows, columns) = (5, 5);
        let mut lab = vec![0u8; 25];
        for y in 1..4 {
            for x in 1..4 {
                lab[y * columns + x] = 1;
            }
        }
        assert!(is_boundary(&lab, rows, columns, 1, 1));
        assert!(
            !is_boundary(&lab, rows, columns, 2, 2),
            "the inside is not outlined"
        );
    }

    #[test]
    fn axial_head_first_supine_is_l_p() {
        let d = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(patient_orientation(&d), "L\\P");
        let feet_first = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]];
        assert_eq!(patient_orientation(&feet_first), "R\\P");
    }
}
