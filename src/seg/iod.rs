//! The SEG's data set, module by module (PS3.3 A.51): patient and study copied from
//! the source, the new series and its equipment, the frame of reference, the
//! segmentation image with its segments, the dimensions, the shared and per-frame
//! functional groups and the references to the source instances. [`data_set`] puts
//! them together; Pixel Data is written after it by the caller.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

use super::{SegType, frames};
use crate::cascade::manifest::{Label, Manifest};
use crate::derived::{Equipment, code, made_by, modified, patient_and_study};
use crate::dicom::build::{dcm_code, ds, el, item, seq};
use crate::volume::Volume;

/// One frame: its segment (BINARY; LABELMAP frames hold every segment) and its source
/// slice.
pub(super) type FrameRef = (Option<u16>, usize);

/// The UIDs a SEG carries.
pub(super) struct Uids {
    pub sop_instance: String,
    pub series: String,
    pub dimension: String,
    pub study: String,
    pub source_series: String,
    pub frame_of_reference: String,
}

/// Everything the modules are made from.
pub(super) struct Seg<'a> {
    pub volume: &'a Volume,
    pub model: &'a Manifest,
    pub seg_type: SegType,
    pub equipment: &'a Equipment,
    /// The labels that occur, in segment-number order.
    pub defs: Vec<&'a Label>,
    /// (segment for BINARY, source slice) of each frame.
    pub frames: Vec<FrameRef>,
    pub bits: u16,
    pub uids: Uids,
    /// Creation date (DA) and time (TM).
    pub date: String,
    pub time: String,
}

/// The whole data set but Pixel Data.
pub(super) fn data_set(seg: &Seg) -> InMemDicomObject {
    let mut o = InMemDicomObject::from_element_iter(patient_and_study(seg.volume));
    for e in series_and_equipment(seg)
        .into_iter()
        .chain(image(seg))
        .chain(dimensions(seg))
        .chain([
            segments(seg),
            shared(seg),
            per_frame(seg),
            referenced_series(seg),
        ])
    {
        o.put(e);
    }
    o
}

/// SOP Common, General and Segmentation Series, Frame of Reference, General and
/// Enhanced General Equipment (with the node as contributing equipment, the IHE AI
/// Results way).
fn series_and_equipment(seg: &Seg) -> Vec<DataElement<InMemDicomObject>> {
    let (model, equipment) = (seg.model, seg.equipment);
    let (date, time) = (seg.date.as_str(), seg.time.as_str());
    let mut elements = vec![
        el(tags::SOP_CLASS_UID, VR::UI, seg.seg_type.sop_class()),
        el(
            tags::SOP_INSTANCE_UID,
            VR::UI,
            seg.uids.sop_instance.as_str(),
        ),
        el(tags::INSTANCE_CREATION_DATE, VR::DA, date),
        el(tags::INSTANCE_CREATION_TIME, VR::TM, time),
        el(tags::STUDY_INSTANCE_UID, VR::UI, seg.uids.study.as_str()),
        el(tags::SERIES_INSTANCE_UID, VR::UI, seg.uids.series.as_str()),
        el(tags::MODALITY, VR::CS, "SEG"),
        el(tags::SERIES_DATE, VR::DA, date),
        el(tags::SERIES_TIME, VR::TM, time),
        el(tags::SERIES_NUMBER, VR::IS, "9001"),
        el(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            format!("{} segmentation", model.name),
        ),
        el(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            seg.uids.frame_of_reference.as_str(),
        ),
        el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""),
        el(
            tags::DEVICE_SERIAL_NUMBER,
            VR::LO,
            equipment.device_serial_number.as_str(),
        ),
        seq(
            tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
            vec![item(
                made_by(equipment)
                    .into_iter()
                    .chain([
                        el(
                            tags::CONTRIBUTION_DATE_TIME,
                            VR::DT,
                            format!("{date}{time}"),
                        ),
                        el(
                            tags::CONTRIBUTION_DESCRIPTION,
                            VR::ST,
                            format!("{} {} (automatic segmentation)", model.name, model.version),
                        ),
                        seq(
                            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
                            vec![dcm_code("109102", "Processing Equipment")],
                        ),
                    ])
                    .collect(),
            )],
        ),
    ];
    elements.extend(made_by(equipment));
    elements
}

/// General Image, Image Pixel and Segmentation Image (C.7.6.1, C.7.6.3, C.8.20.2) but
/// the segments.
fn image(seg: &Seg) -> Vec<DataElement<InMemDicomObject>> {
    let [_, rows, columns] = seg.volume.shape;
    let bits = seg.bits;
    vec![
        el(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["DERIVED".to_string(), "PRIMARY".to_string()].into()),
        ),
        el(tags::CONTENT_DATE, VR::DA, seg.date.as_str()),
        el(tags::CONTENT_TIME, VR::TM, seg.time.as_str()),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
        el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"),
        el(tags::NUMBER_OF_FRAMES, VR::IS, seg.frames.len().to_string()),
        el(tags::ROWS, VR::US, PrimitiveValue::from(rows as u16)),
        el(tags::COLUMNS, VR::US, PrimitiveValue::from(columns as u16)),
        el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)),
        el(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)),
        el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)),
        el(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(0u16),
        ),
        el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"),
        el(tags::SEGMENTATION_TYPE, VR::CS, seg.seg_type.as_str()),
        el(tags::CONTENT_LABEL, VR::CS, "SEGMENTATION"),
        el(
            tags::CONTENT_DESCRIPTION,
            VR::LO,
            format!("{} {}", seg.model.name, seg.model.version),
        ),
        el(tags::CONTENT_CREATOR_NAME, VR::PN, ""),
    ]
}

/// The Segment Sequence (C.8.20.2): one item per label that occurs, numbered from 1,
/// with its codes, display colour and the algorithm that made it.
fn segments(seg: &Seg) -> DataElement<InMemDicomObject> {
    let model = seg.model;
    let algorithm = |l: &crate::cascade::manifest::Label| {
        vec![
            el(tags::SEGMENT_ALGORITHM_TYPE, VR::CS, "AUTOMATIC"),
            el(tags::SEGMENT_ALGORITHM_NAME, VR::LO, model.name.as_str()),
            seq(
                tags::SEGMENTATION_ALGORITHM_IDENTIFICATION_SEQUENCE,
                vec![item(vec![
                    seq(
                        tags::ALGORITHM_FAMILY_CODE_SEQUENCE,
                        vec![dcm_code("123110", "Artificial Intelligence")],
                    ),
                    el(tags::ALGORITHM_NAME, VR::LO, model.name.as_str()),
                    el(tags::ALGORITHM_VERSION, VR::LO, model.version.as_str()),
                ])],
            ),
            el(tags::SEGMENT_LABEL, VR::LO, l.name.as_str()),
        ]
    };
    let segment_items: Vec<InMemDicomObject> = seg
        .defs
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let lab = frames::srgb_to_dicom_lab(l.color);
            let mut elements = vec![
                el(
                    tags::SEGMENT_NUMBER,
                    VR::US,
                    PrimitiveValue::from(i as u16 + 1),
                ),
                seq(
                    tags::SEGMENTED_PROPERTY_CATEGORY_CODE_SEQUENCE,
                    vec![code(&l.category)],
                ),
                seq(
                    tags::SEGMENTED_PROPERTY_TYPE_CODE_SEQUENCE,
                    vec![modified(
                        &l.kind,
                        tags::SEGMENTED_PROPERTY_TYPE_MODIFIER_CODE_SEQUENCE,
                        &l.modifier,
                    )],
                ),
                el(
                    tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                    VR::US,
                    PrimitiveValue::U16(lab.to_vec().into()),
                ),
            ];
            if let Some(region) = &l.region {
                elements.push(seq(
                    tags::ANATOMIC_REGION_SEQUENCE,
                    vec![modified(
                        region,
                        tags::ANATOMIC_REGION_MODIFIER_SEQUENCE,
                        &l.region_modifier,
                    )],
                ));
            }
            elements.extend(algorithm(l));
            item(elements)
        })
        .collect();
    seq(tags::SEGMENT_SEQUENCE, segment_items)
}

/// The Per-Frame Functional Groups (C.7.6.16): each frame's source slice, dimension
/// index, position and (BINARY) segment.
fn per_frame(seg: &Seg) -> DataElement<InMemDicomObject> {
    let source_ref = |z: usize| {
        let s = &seg.volume.slices[z];
        let mut refs = vec![
            el(
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                s.sop_class_uid.as_str(),
            ),
            el(
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                s.sop_instance_uid.as_str(),
            ),
        ];
        if let Some(f) = s.frame {
            refs.push(el(tags::REFERENCED_FRAME_NUMBER, VR::IS, f.to_string()));
        }
        refs.push(seq(
            tags::PURPOSE_OF_REFERENCE_CODE_SEQUENCE,
            vec![dcm_code(
                "121322",
                "Source image for image processing operation",
            )],
        ));
        item(refs)
    };
    // Position of frame z: the source slice's own position.
    let per_frame: Vec<InMemDicomObject> = seg
        .frames
        .iter()
        .map(|(segment, z)| {
            let position = seg.volume.slices[*z].position;
            let mut index = Vec::new();
            if let Some(s) = segment {
                index.push(u32::from(*s));
            }
            index.push(*z as u32 + 1);
            let mut groups = vec![
                seq(
                    tags::DERIVATION_IMAGE_SEQUENCE,
                    vec![item(vec![
                        seq(tags::SOURCE_IMAGE_SEQUENCE, vec![source_ref(*z)]),
                        seq(
                            tags::DERIVATION_CODE_SEQUENCE,
                            vec![dcm_code("113076", "Segmentation")],
                        ),
                    ])],
                ),
                seq(
                    tags::FRAME_CONTENT_SEQUENCE,
                    vec![item(vec![el(
                        tags::DIMENSION_INDEX_VALUES,
                        VR::UL,
                        PrimitiveValue::U32(index.into()),
                    )])],
                ),
                seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(vec![el(
                        tags::IMAGE_POSITION_PATIENT,
                        VR::DS,
                        ds_multi(&position),
                    )])],
                ),
            ];
            if let Some(s) = segment {
                groups.push(seq(
                    tags::SEGMENT_IDENTIFICATION_SEQUENCE,
                    vec![item(vec![el(
                        tags::REFERENCED_SEGMENT_NUMBER,
                        VR::US,
                        PrimitiveValue::from(*s),
                    )])],
                ));
            }
            item(groups)
        })
        .collect();

    seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame)
}

/// The Multi-frame Dimension module (C.7.6.17): segment number (BINARY only), then
/// plane position.
fn dimensions(seg: &Seg) -> [DataElement<InMemDicomObject>; 2] {
    // Dimensions (C.7.6.17): segment number (BINARY only), then plane position.
    let dimension = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                seg.uids.dimension.as_str(),
            ),
            el(
                tags::DIMENSION_INDEX_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![pointer].into()),
            ),
            el(
                tags::FUNCTIONAL_GROUP_POINTER,
                VR::AT,
                PrimitiveValue::Tags(vec![group].into()),
            ),
            el(tags::DIMENSION_DESCRIPTION_LABEL, VR::LO, label),
        ])
    };
    let mut dimension_index = Vec::new();
    if seg.seg_type == SegType::Binary {
        dimension_index.push(dimension(
            tags::REFERENCED_SEGMENT_NUMBER,
            tags::SEGMENT_IDENTIFICATION_SEQUENCE,
            "Segment Number",
        ));
    }
    dimension_index.push(dimension(
        tags::IMAGE_POSITION_PATIENT,
        tags::PLANE_POSITION_SEQUENCE,
        "Image Position Patient",
    ));

    [
        seq(
            tags::DIMENSION_ORGANIZATION_SEQUENCE,
            vec![item(vec![el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                seg.uids.dimension.as_str(),
            )])],
        ),
        seq(tags::DIMENSION_INDEX_SEQUENCE, dimension_index),
    ]
}

/// The Shared Functional Groups (C.7.6.16): the source's pixel measures and
/// orientation.
fn shared(seg: &Seg) -> DataElement<InMemDicomObject> {
    let direction = seg.volume.geometry.direction;
    let spacing = seg.volume.geometry.spacing;
    let orientation = [
        direction[0][0],
        direction[0][1],
        direction[0][2],
        direction[1][0],
        direction[1][1],
        direction[1][2],
    ];
    let shared = item(vec![
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                el(tags::SLICE_THICKNESS, VR::DS, ds(spacing[0])),
                el(tags::SPACING_BETWEEN_SLICES, VR::DS, ds(spacing[0])),
                el(
                    tags::PIXEL_SPACING,
                    VR::DS,
                    ds_multi(&[spacing[1], spacing[2]]),
                ),
            ])],
        ),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![el(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                ds_multi(&orientation),
            )])],
        ),
    ]);

    seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared])
}

/// The Common Instance Reference module (C.12.2): every source instance, each once.
fn referenced_series(seg: &Seg) -> DataElement<InMemDicomObject> {
    // Referenced Series: every source instance (each once).
    let mut referenced: Vec<(&str, &str)> = seg
        .volume
        .slices
        .iter()
        .map(|s| (s.sop_class_uid.as_str(), s.sop_instance_uid.as_str()))
        .collect();
    referenced.sort_unstable();
    referenced.dedup();

    seq(
        tags::REFERENCED_SERIES_SEQUENCE,
        vec![item(vec![
            seq(
                tags::REFERENCED_INSTANCE_SEQUENCE,
                referenced
                    .iter()
                    .map(|(class, instance)| {
                        item(vec![
                            el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, *class),
                            el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, *instance),
                        ])
                    })
                    .collect(),
            ),
            el(
                tags::SERIES_INSTANCE_UID,
                VR::UI,
                seg.uids.source_series.as_str(),
            ),
        ])],
    )
}

fn ds_multi(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|v| ds(*v)).collect())
}
