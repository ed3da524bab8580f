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

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cascade::manifest::{Code, Manifest};
use crate::cascade::ops::Grid;
use crate::dicom::part10;
use crate::volume::Volume;
use frames::Frame;

/// Segmentation SOP Class (BINARY, FRACTIONAL).
pub const SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.4";
/// Label Map Segmentation SOP Class (Supplement 243).
pub const LABEL_MAP_SEGMENTATION_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.66.7";

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
    /// The Segmentation Type (0062,0001) it writes, as the outbox records it.
    pub fn name(self) -> &'static str {
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

/// Who made the SEG.
#[derive(Debug, Clone)]
pub struct Equipment {
    pub manufacturer: String,
    pub model_name: String,
    pub software_version: String,
    pub device_serial_number: String,
    /// The AE title written as Source Application Entity Title.
    pub ae_title: String,
}

impl Equipment {
    pub fn segnode(ae_title: &str) -> Self {
        Self {
            manufacturer: "segnode".into(),
            model_name: "segnode".into(),
            software_version: env!("CARGO_PKG_VERSION").into(),
            device_serial_number: ae_title.into(),
            ae_title: ae_title.into(),
        }
    }
}

/// An encoded SEG.
#[derive(Debug, Clone)]
pub struct EncodedSeg {
    /// The Part 10 file.
    pub file: Vec<u8>,
    pub sop_class_uid: &'static str,
    pub sop_instance_uid: String,
    pub series_instance_uid: String,
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

/// A UID under 2.25 from a hash: the first 128 bits as a decimal number.
fn uid_from(hasher: Sha256) -> String {
    let digest = hasher.finalize();
    let value = u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"));
    format!("2.25.{value}")
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
    uid_from(h)
}

/// Formats a DS value in at most 16 characters.
fn ds(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    (1..=15)
        .rev()
        .map(|p| format!("{v:.p$}"))
        .find(|s| s.len() <= 16)
        .unwrap_or_else(|| format!("{v:.6e}"))
}

fn ds_multi(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|v| ds(*v)).collect())
}

fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

fn text(tag: Tag, vr: VR, value: &Option<String>) -> DataElement<InMemDicomObject> {
    el(tag, vr, value.clone().unwrap_or_default())
}

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn code(c: &Code) -> InMemDicomObject {
    item(vec![
        el(tags::CODE_VALUE, VR::SH, c.value.as_str()),
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, c.scheme.as_str()),
        el(tags::CODE_MEANING, VR::LO, c.meaning.as_str()),
    ])
}

fn dcm_code(value: &str, meaning: &str) -> InMemDicomObject {
    code(&Code {
        scheme: "DCM".into(),
        value: value.into(),
        meaning: meaning.into(),
    })
}

/// DICOM DA and TM of now (UTC).
fn now_da_tm() -> (String, String) {
    let now = time::OffsetDateTime::now_utc();
    (
        format!(
            "{:04}{:02}{:02}",
            now.year(),
            u8::from(now.month()),
            now.day()
        ),
        format!("{:02}{:02}{:02}", now.hour(), now.minute(), now.second()),
    )
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

    // Segments: the manifest's labels that occur, numbered from 1 in value order.
    let [_, rows, columns] = volume.shape;
    let plane = rows * columns;
    let slice_presence = frames::slice_presence(&labels.data, plane);
    let mut present = [false; 256];
    for seen in &slice_presence {
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
    let segments: Vec<u8> = defs.iter().map(|l| l.value).collect();

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
    let (date, time) = now_da_tm();
    let direction = volume.geometry.direction;
    let spacing = volume.geometry.spacing;

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
    let segment_items: Vec<InMemDicomObject> = defs
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
                    vec![code(&l.kind)],
                ),
                el(
                    tags::RECOMMENDED_DISPLAY_CIE_LAB_VALUE,
                    VR::US,
                    PrimitiveValue::U16(lab.to_vec().into()),
                ),
            ];
            elements.extend(algorithm(l));
            item(elements)
        })
        .collect();
    // Frames.
    let (frame_list, pixel_data, bits) = match seg_type {
        SegType::Binary => {
            let fr = frames::binary_frames(&slice_presence, &segments);
            let packed = frames::pack_binary(&labels.data, plane, &fr, &segments);
            (
                fr.iter()
                    .map(|f: &Frame| (Some(f.segment), f.slice))
                    .collect::<Vec<_>>(),
                packed,
                1u16,
            )
        }
        SegType::Labelmap => {
            let slices = frames::labelmap_slices(&slice_presence);
            let mut number = [0u8; 256];
            for (i, v) in segments.iter().enumerate() {
                number[usize::from(*v)] = i as u8 + 1;
            }
            let mut data = Vec::with_capacity(slices.len() * plane);
            for z in &slices {
                data.extend(
                    labels.data[z * plane..(z + 1) * plane]
                        .iter()
                        .map(|v| number[usize::from(*v)]),
                );
            }
            (slices.into_iter().map(|z| (None, z)).collect(), data, 8u16)
        }
    };

    let source_ref = |z: usize| {
        let s = &volume.slices[z];
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
    let per_frame: Vec<InMemDicomObject> = frame_list
        .iter()
        .map(|(segment, z)| {
            let position = volume.slices[*z].position;
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

    let dimension_uid = {
        let mut h = Sha256::new();
        h.update(sop_instance_uid.as_bytes());
        h.update(b"dimension");
        uid_from(h)
    };
    // Dimensions (C.7.6.17): segment number (BINARY only), then plane position.
    let dimension = |pointer: Tag, group: Tag, label: &str| {
        item(vec![
            el(
                tags::DIMENSION_ORGANIZATION_UID,
                VR::UI,
                dimension_uid.as_str(),
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
    if seg_type == SegType::Binary {
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

    // Referenced Series: every source instance (each once).
    let mut referenced: Vec<(&str, &str)> = volume
        .slices
        .iter()
        .map(|s| (s.sop_class_uid.as_str(), s.sop_instance_uid.as_str()))
        .collect();
    referenced.sort_unstable();
    referenced.dedup();

    let mut o = InMemDicomObject::new_empty();
    let mut put = |e: DataElement<InMemDicomObject>| {
        o.put(e);
    };
    if let Some(cs) = &src.specific_character_set {
        put(el(tags::SPECIFIC_CHARACTER_SET, VR::CS, cs.as_str()));
    }
    put(el(
        tags::IMAGE_TYPE,
        VR::CS,
        PrimitiveValue::Strs(["DERIVED".to_string(), "PRIMARY".to_string()].into()),
    ));
    put(el(tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str()));
    put(el(tags::INSTANCE_CREATION_TIME, VR::TM, time.as_str()));
    put(el(tags::SOP_CLASS_UID, VR::UI, seg_type.sop_class()));
    put(el(
        tags::SOP_INSTANCE_UID,
        VR::UI,
        sop_instance_uid.as_str(),
    ));
    put(text(tags::STUDY_DATE, VR::DA, &src.study_date));
    put(el(tags::SERIES_DATE, VR::DA, date.as_str()));
    put(el(tags::CONTENT_DATE, VR::DA, date.as_str()));
    put(text(tags::STUDY_TIME, VR::TM, &src.study_time));
    put(el(tags::SERIES_TIME, VR::TM, time.as_str()));
    put(el(tags::CONTENT_TIME, VR::TM, time.as_str()));
    put(text(tags::ACCESSION_NUMBER, VR::SH, &src.accession_number));
    put(el(tags::MODALITY, VR::CS, "SEG"));
    put(el(
        tags::MANUFACTURER,
        VR::LO,
        equipment.manufacturer.as_str(),
    ));
    put(text(
        tags::REFERRING_PHYSICIAN_NAME,
        VR::PN,
        &src.referring_physician_name,
    ));
    put(text(
        tags::STUDY_DESCRIPTION,
        VR::LO,
        &src.study_description,
    ));
    put(el(
        tags::SERIES_DESCRIPTION,
        VR::LO,
        format!("{} segmentation", model.name),
    ));
    put(el(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        equipment.model_name.as_str(),
    ));
    put(seq(
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
            el(tags::SERIES_INSTANCE_UID, VR::UI, series_uid.as_str()),
        ])],
    ));
    put(text(tags::PATIENT_NAME, VR::PN, &src.patient_name));
    put(text(tags::PATIENT_ID, VR::LO, &src.patient_id));
    put(text(
        tags::PATIENT_BIRTH_DATE,
        VR::DA,
        &src.patient_birth_date,
    ));
    put(text(tags::PATIENT_SEX, VR::CS, &src.patient_sex));
    put(el(
        tags::DEVICE_SERIAL_NUMBER,
        VR::LO,
        equipment.device_serial_number.as_str(),
    ));
    put(el(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        equipment.software_version.as_str(),
    ));
    put(seq(
        tags::CONTRIBUTING_EQUIPMENT_SEQUENCE,
        vec![item(vec![
            el(tags::MANUFACTURER, VR::LO, equipment.manufacturer.as_str()),
            el(
                tags::MANUFACTURER_MODEL_NAME,
                VR::LO,
                equipment.model_name.as_str(),
            ),
            el(
                tags::SOFTWARE_VERSIONS,
                VR::LO,
                equipment.software_version.as_str(),
            ),
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
        ])],
    ));
    put(el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str()));
    put(el(
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        seg_series_uid.as_str(),
    ));
    put(text(tags::STUDY_ID, VR::SH, &src.study_id));
    put(el(tags::SERIES_NUMBER, VR::IS, "9001"));
    put(el(tags::INSTANCE_NUMBER, VR::IS, "1"));
    put(el(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        frame_of_reference.as_str(),
    ));
    put(el(tags::POSITION_REFERENCE_INDICATOR, VR::LO, ""));
    put(seq(
        tags::DIMENSION_ORGANIZATION_SEQUENCE,
        vec![item(vec![el(
            tags::DIMENSION_ORGANIZATION_UID,
            VR::UI,
            dimension_uid.as_str(),
        )])],
    ));
    put(seq(tags::DIMENSION_INDEX_SEQUENCE, dimension_index));
    put(el(
        tags::SAMPLES_PER_PIXEL,
        VR::US,
        PrimitiveValue::from(1u16),
    ));
    put(el(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2"));
    put(el(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        frame_list.len().to_string(),
    ));
    put(el(tags::ROWS, VR::US, PrimitiveValue::from(rows as u16)));
    put(el(
        tags::COLUMNS,
        VR::US,
        PrimitiveValue::from(columns as u16),
    ));
    put(el(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(bits)));
    put(el(tags::BITS_STORED, VR::US, PrimitiveValue::from(bits)));
    put(el(tags::HIGH_BIT, VR::US, PrimitiveValue::from(bits - 1)));
    put(el(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    ));
    put(el(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, "00"));
    put(el(tags::SEGMENTATION_TYPE, VR::CS, seg_type.name()));
    put(el(tags::CONTENT_LABEL, VR::CS, "SEGMENTATION"));
    put(el(
        tags::CONTENT_DESCRIPTION,
        VR::LO,
        format!("{} {}", model.name, model.version),
    ));
    put(el(tags::CONTENT_CREATOR_NAME, VR::PN, ""));
    put(seq(tags::SEGMENT_SEQUENCE, segment_items));
    put(seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![shared]));
    put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame));
    let pixel_bytes = pixel_data.len();

    let mut file = part10::header(
        seg_type.sop_class(),
        &sop_instance_uid,
        crate::dicom::uid::ts::EXPLICIT_VR_LE,
        &equipment.ae_title,
        pixel_bytes + 64 * 1024 + frame_list.len() * 1024,
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
    file.extend_from_slice(&pixel_data);
    if padded != pixel_bytes {
        file.push(0);
    }
    Ok(EncodedSeg {
        file,
        sop_class_uid: seg_type.sop_class(),
        sop_instance_uid,
        series_instance_uid: seg_series_uid,
        frames: frame_list.len(),
        segments,
    })
}
