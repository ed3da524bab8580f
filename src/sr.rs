//! The measurement report: a Comprehensive 3D SR (PS3.3 A.35.13) with TID 1500
//! Measurement Report content, one TID 1411 volumetric ROI group per organ: its volume
//! (ml) and its mean, minimum and maximum attenuation (HU), each group referencing its
//! segment in the node's SEG and the source series, with the algorithm's name and
//! version. Patient and study are the source's; the series is new. The UIDs derive
//! from the SEG's, so encoding the same result again gives the same instance. Pure.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cascade::Segmentation;
use crate::cascade::evidence::Confidence;
use crate::cascade::manifest::{Code, Label, Manifest};
use crate::derived::{
    Equipment, code, derived_uid, made_by, now_da_tm, patient_and_study, uid_from,
};
use crate::dicom::build::{dcm_code, ds, el, item, seq};
use crate::dicom::uid::{COMPREHENSIVE_3D_SR_STORAGE, SEGMENTATION_STORAGE};
use crate::dicom::{Uid, part10};
use crate::grid::Box3;
use crate::quality::{self, Assessment, Facts, Scene, Verdict, patient_mm};
use crate::seg::EncodedSeg;
use crate::volume::Volume;

/// What the report says of one organ (one segment of the SEG).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Organ {
    pub value: u8,
    /// Its segment in the SEG (0 when it was left out of the SEG).
    pub segment_number: u16,
    pub name: String,
    pub voxels: u64,
    pub ml: f64,
    pub hu_mean: f64,
    pub hu_min: f64,
    pub hu_max: f64,
    /// How far the result can be trusted (a truncated organ's volume is a lower bound).
    #[serde(default)]
    pub qa: Assessment,
    /// The network's confidence in the organ, where the cascade gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
    /// Left out of the SEG, the report's measurements and the key images because it
    /// failed its checks (`[review] deliver_failed_organs = false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub left_out: bool,
}

/// Measures each of the model's labels found in the segmentation's label map, of those
/// named in `delivered` when given (the segments of its SEG, in value order, numbered
/// from 1 as the SEG numbers them): voxel count, volume and the attenuation of the
/// voxels it covers; and assesses it with the network's confidence
/// ([`crate::quality`]).
pub fn measure(
    volume: &Volume,
    segmentation: &Segmentation,
    model: &Manifest,
    delivered: Option<&[String]>,
) -> Vec<Organ> {
    let labels = &segmentation.labels;
    use rayon::prelude::*;
    let plane = labels.shape[1] * labels.shape[2];
    // One pass, a plane per task; background voxels (label 0) are skipped.
    let width = labels.shape[2].max(1);
    let stats = labels
        .data
        .par_chunks(plane.max(1))
        .zip(volume.data.par_chunks(plane.max(1)))
        .enumerate()
        .fold(Stats::new, |mut acc, (z, (labels, hu))| {
            for (i, (l, v)) in labels.iter().zip(hu).enumerate() {
                if *l != 0 {
                    acc.add(usize::from(*l), *v, [z, i / width, i % width]);
                }
            }
            acc
        })
        .reduce(Stats::new, Stats::merge);
    let scene = Scene::of(volume);
    let voxel_ml = volume.geometry.spacing.iter().product::<f64>() / 1000.0;
    let mut found: Vec<_> = model
        .labels
        .iter()
        .filter(|l| stats.count[usize::from(l.value)] > 0)
        .filter(|l| delivered.is_none_or(|names| names.contains(&l.name)))
        .collect();
    found.sort_by_key(|l| l.value);
    found
        .into_iter()
        .enumerate()
        .map(|(i, label)| {
            let value = label.value;
            let v = usize::from(value);
            let count = stats.count[v] as f64;
            let bounds = Box3 {
                lo: stats.lo[v],
                end: stats.hi[v].map(|i| i + 1),
            };
            let facts = Facts {
                ml: round2(count * voxel_ml),
                hu_mean: round2(stats.sum[v] / count),
                bounds,
                centre_mm: patient_mm(volume, stats.index_sum[v].map(|s| s / count)),
                largest_part: quality::largest_part(labels, value, bounds),
                confidence: segmentation
                    .summary
                    .labels
                    .iter()
                    .find(|l| l.value == value)
                    .and_then(|l| l.confidence),
            };
            Organ {
                value,
                segment_number: i as u16 + 1,
                name: label.name.clone(),
                voxels: stats.count[v],
                ml: facts.ml,
                hu_mean: facts.hu_mean,
                hu_min: f64::from(stats.min[v]),
                hu_max: f64::from(stats.max[v]),
                qa: quality::assess(label, &facts, &scene),
                confidence: facts.confidence,
                left_out: false,
            }
        })
        .collect()
}

/// Leaves out the organs whose verdict is `fail`: they are marked and lose their
/// segment, and the others are numbered again from 1 in value order, as the SEG of a
/// label map without them numbers its segments.
pub fn leave_out_failed(organs: &mut [Organ]) {
    let mut number = 0;
    for organ in organs {
        if organ.qa.verdict == Verdict::Fail {
            organ.left_out = true;
            organ.segment_number = 0;
        } else {
            number += 1;
            organ.segment_number = number;
        }
    }
}

/// Per-label voxel count, HU sum, minimum and maximum, the sum of the voxels' (z, y, x)
/// indices and their box (lowest and highest index). On the heap: rayon moves a
/// partial result by value at every level of its fold, on 2 MiB worker stacks.
struct Stats {
    count: Vec<u64>,
    sum: Vec<f64>,
    min: Vec<f32>,
    max: Vec<f32>,
    index_sum: Vec<[f64; 3]>,
    lo: Vec<[usize; 3]>,
    hi: Vec<[usize; 3]>,
}

impl Stats {
    fn new() -> Self {
        Self {
            count: vec![0; 256],
            sum: vec![0.0; 256],
            min: vec![f32::INFINITY; 256],
            max: vec![f32::NEG_INFINITY; 256],
            index_sum: vec![[0.0; 3]; 256],
            lo: vec![[usize::MAX; 3]; 256],
            hi: vec![[0; 3]; 256],
        }
    }

    fn add(&mut self, label: usize, hu: f32, at: [usize; 3]) {
        self.count[label] += 1;
        self.sum[label] += f64::from(hu);
        self.min[label] = self.min[label].min(hu);
        self.max[label] = self.max[label].max(hu);
        for (axis, i) in at.into_iter().enumerate() {
            self.index_sum[label][axis] += i as f64;
            self.lo[label][axis] = self.lo[label][axis].min(i);
            self.hi[label][axis] = self.hi[label][axis].max(i);
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for l in 0..256 {
            self.count[l] += other.count[l];
            self.sum[l] += other.sum[l];
            self.min[l] = self.min[l].min(other.min[l]);
            self.max[l] = self.max[l].max(other.max[l]);
            for axis in 0..3 {
                self.index_sum[l][axis] += other.index_sum[l][axis];
                self.lo[l][axis] = self.lo[l][axis].min(other.lo[l][axis]);
                self.hi[l][axis] = self.hi[l][axis].max(other.hi[l][axis]);
            }
        }
        self
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// An encoded report.
#[derive(Debug, Clone)]
pub struct EncodedSr {
    /// The Part 10 file.
    pub file: Vec<u8>,
    pub sop_instance_uid: Uid,
    pub series_instance_uid: Uid,
}

#[derive(Debug, thiserror::Error)]
pub enum SrError {
    #[error("source series has no {0}")]
    MissingSource(&'static str),
    #[error("cannot encode the SR data set: {0}")]
    Encode(String),
}

/// Encodes the measurement report of `organs`: those delivered are segments of `seg`, a
/// SEG of `volume`; those left out are listed as such. The UIDs derive from the SEG's,
/// or with no SEG (every organ left out) from `source_key`, the source content.
pub fn encode(
    volume: &Volume,
    organs: &[Organ],
    seg: Option<&EncodedSeg>,
    source_key: &str,
    model: &Manifest,
    equipment: &Equipment,
) -> Result<EncodedSr, SrError> {
    let src = &volume.source;
    let study_uid = src
        .study_instance_uid
        .clone()
        .ok_or(SrError::MissingSource("Study Instance UID"))?;
    let source_series = src
        .series_instance_uid
        .clone()
        .ok_or(SrError::MissingSource("Series Instance UID"))?;
    let basis = seg.map_or(source_key, |s| s.sop_instance_uid.as_str());
    let sop_instance_uid = derived_uid(basis, "sr", b"instance");
    let series_instance_uid = derived_uid(basis, "sr", b"series");
    let (date, time) = now_da_tm();

    let mut o = InMemDicomObject::from_element_iter(patient_and_study(volume));
    let elements = [
        el(tags::SOP_CLASS_UID, VR::UI, COMPREHENSIVE_3D_SR_STORAGE),
        el(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid.as_str()),
        el(tags::INSTANCE_CREATION_DATE, VR::DA, date.as_str()),
        el(tags::INSTANCE_CREATION_TIME, VR::TM, time.as_str()),
        el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid.as_str()),
        el(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            series_instance_uid.as_str(),
        ),
        el(tags::MODALITY, VR::CS, "SR"),
        el(tags::SERIES_NUMBER, VR::IS, "9002"),
        el(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            format!("{} measurements", model.name),
        ),
        el(tags::INSTANCE_NUMBER, VR::IS, "1"),
        el(tags::CONTENT_DATE, VR::DA, date.as_str()),
        el(tags::CONTENT_TIME, VR::TM, time.as_str()),
        el(
            tags::DEVICE_SERIAL_NUMBER,
            VR::LO,
            equipment.device_serial_number.as_str(),
        ),
        seq(tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE, vec![]),
        seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]),
        el(tags::COMPLETION_FLAG, VR::CS, "COMPLETE"),
        el(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED"),
        evidence(volume, seg, &study_uid, &source_series),
    ];
    for e in elements.into_iter().chain(made_by(equipment)) {
        o.put(e);
    }
    for e in root(
        organs,
        seg,
        model,
        &source_series,
        sop_instance_uid.as_str(),
    ) {
        o.put(e);
    }
    let mut file = part10::header(
        COMPREHENSIVE_3D_SR_STORAGE,
        sop_instance_uid.as_str(),
        crate::dicom::uid::ts::EXPLICIT_VR_LE,
        &equipment.ae_title,
        64 * 1024,
    )
    .map_err(|e| SrError::Encode(e.to_string()))?;
    o.write_dataset_with_ts(&mut file, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
        .map_err(|e| SrError::Encode(e.to_string()))?;
    Ok(EncodedSr {
        file,
        sop_instance_uid,
        series_instance_uid,
    })
}

/// Current Requested Procedure Evidence: the source instances and the SEG, if any.
fn evidence(
    volume: &Volume,
    seg: Option<&EncodedSeg>,
    study_uid: &str,
    source_series: &str,
) -> DataElement<InMemDicomObject> {
    let mut sources: Vec<(&str, &str)> = volume
        .slices
        .iter()
        .map(|s| (s.sop_class_uid.as_str(), s.sop_instance_uid.as_str()))
        .collect();
    sources.sort_unstable();
    sources.dedup();
    let series = |uid: &str, instances: Vec<(&str, &str)>| {
        item(vec![
            seq(
                tags::REFERENCED_SOP_SEQUENCE,
                instances
                    .into_iter()
                    .map(|(class, instance)| {
                        item(vec![
                            el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class),
                            el(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance),
                        ])
                    })
                    .collect(),
            ),
            el(tags::SERIES_INSTANCE_UID, VR::UI, uid),
        ])
    };
    seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![item(vec![
            seq(
                tags::REFERENCED_SERIES_SEQUENCE,
                std::iter::once(series(source_series, sources))
                    .chain(seg.map(|seg| {
                        series(
                            seg.series_instance_uid.as_str(),
                            vec![(seg.sop_class_uid, seg.sop_instance_uid.as_str())],
                        )
                    }))
                    .collect(),
            ),
            el(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        ])],
    )
}

/// A content item: relationship, value type, concept name and its value elements.
fn content(
    relationship: &str,
    value_type: &str,
    name: InMemDicomObject,
    value: Vec<DataElement<InMemDicomObject>>,
) -> InMemDicomObject {
    let mut elements = vec![
        el(tags::RELATIONSHIP_TYPE, VR::CS, relationship),
        el(tags::VALUE_TYPE, VR::CS, value_type),
        seq(tags::CONCEPT_NAME_CODE_SEQUENCE, vec![name]),
    ];
    elements.extend(value);
    item(elements)
}

fn coded(scheme: &str, value: &str, meaning: &str) -> InMemDicomObject {
    code(&Code {
        scheme: scheme.into(),
        value: value.into(),
        meaning: meaning.into(),
    })
}

fn code_value(c: InMemDicomObject) -> Vec<DataElement<InMemDicomObject>> {
    vec![seq(tags::CONCEPT_CODE_SEQUENCE, vec![c])]
}

fn text_value(text: &str) -> Vec<DataElement<InMemDicomObject>> {
    vec![el(tags::TEXT_VALUE, VR::UT, text)]
}

fn uid_value(uid: &str) -> Vec<DataElement<InMemDicomObject>> {
    vec![el(tags::UID, VR::UI, uid)]
}

fn template(id: &str) -> DataElement<InMemDicomObject> {
    seq(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![item(vec![
            el(tags::MAPPING_RESOURCE, VR::CS, "DCMR"),
            el(tags::TEMPLATE_IDENTIFIER, VR::CS, id),
        ])],
    )
}

/// A NUM content item: `value` in `unit`, with more content items under it.
fn num(
    name: InMemDicomObject,
    value: f64,
    unit: InMemDicomObject,
    children: Vec<InMemDicomObject>,
) -> InMemDicomObject {
    let measured = item(vec![
        seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, vec![unit]),
        el(
            tags::FLOATING_POINT_VALUE,
            VR::FD,
            PrimitiveValue::from(value),
        ),
        el(tags::NUMERIC_VALUE, VR::DS, ds(value)),
    ]);
    let mut value = vec![seq(tags::MEASURED_VALUE_SEQUENCE, vec![measured])];
    if !children.is_empty() {
        value.push(seq(tags::CONTENT_SEQUENCE, children));
    }
    content("CONTAINS", "NUM", name, value)
}

/// How far the organ's result can be trusted, as TID 1411 qualitative evaluations
/// (coded in the node's private scheme): the verdict, then each finding.
fn qualitative_evaluations(organ: &Organ) -> Vec<InMemDicomObject> {
    let concept = |value: &str, meaning: &str| coded(quality::CODING_SCHEME, value, meaning);
    let verdict = organ.qa.verdict;
    std::iter::once(content(
        "CONTAINS",
        "CODE",
        concept("qa-verdict", "Result quality"),
        code_value(concept(verdict.as_str(), verdict.meaning())),
    ))
    .chain(organ.qa.reasons.iter().map(|r| {
        content(
            "CONTAINS",
            "CODE",
            concept("qa-finding", "Quality finding"),
            code_value(concept(r.code.as_str(), r.code.meaning())),
        )
    }))
    .collect()
}

/// An organ's volume; a truncated organ's is a lower bound, derived as its minimum.
fn volume_measurement(organ: &Organ) -> InMemDicomObject {
    let lower_bound = organ.qa.volume_is_lower_bound().then(|| {
        content(
            "HAS CONCEPT MOD",
            "CODE",
            dcm_code("121401", "Derivation"),
            code_value(coded("SCT", "255605001", "Minimum")),
        )
    });
    num(
        coded("SCT", "118565006", "Volume"),
        organ.ml,
        coded("UCUM", "ml", "milliliter"),
        lower_bound.into_iter().collect(),
    )
}

/// The root container of TID 1500 and its content: language, device observer,
/// procedure reported, the imaging measurements (one group per organ delivered), and
/// the organs left out as qualitative evaluations.
fn root(
    organs: &[Organ],
    seg: Option<&EncodedSeg>,
    model: &Manifest,
    source_series: &str,
    sop_instance_uid: &str,
) -> Vec<DataElement<InMemDicomObject>> {
    let observer_uid = {
        let mut h = Sha256::new();
        h.update(b"segnode device observer\0");
        h.update(model.name.as_bytes());
        uid_from(h)
    };
    let groups: Vec<_> = seg
        .map(|seg| {
            organs
                .iter()
                .filter(|o| !o.left_out)
                .map(|o| group(o, seg, model, source_series, sop_instance_uid))
                .collect()
        })
        .unwrap_or_default();
    let mut children = vec![
        content(
            "HAS CONCEPT MOD",
            "CODE",
            dcm_code("121049", "Language of Content Item and Descendants"),
            code_value(coded("RFC5646", "en-US", "English (United States)")),
        ),
        content(
            "HAS OBS CONTEXT",
            "CODE",
            dcm_code("121005", "Observer Type"),
            code_value(dcm_code("121007", "Device")),
        ),
        content(
            "HAS OBS CONTEXT",
            "UIDREF",
            dcm_code("121012", "Device Observer UID"),
            uid_value(observer_uid.as_str()),
        ),
        content(
            "HAS OBS CONTEXT",
            "TEXT",
            dcm_code("121013", "Device Observer Name"),
            text_value("segnode"),
        ),
        content(
            "HAS CONCEPT MOD",
            "CODE",
            dcm_code("121058", "Procedure reported"),
            code_value(coded("LN", "25045-6", "CT unspecified body region")),
        ),
    ];
    let container = |name, items| {
        content(
            "CONTAINS",
            "CONTAINER",
            name,
            vec![
                el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
                seq(tags::CONTENT_SEQUENCE, items),
            ],
        )
    };
    if !groups.is_empty() {
        children.push(container(
            dcm_code("126010", "Imaging Measurements"),
            groups,
        ));
    }
    let left_out = left_out(organs, model);
    if !left_out.is_empty() {
        children.push(container(
            coded("UMLS", "C0034375", "Qualitative Evaluations"),
            left_out,
        ));
    }
    vec![
        el(tags::VALUE_TYPE, VR::CS, "CONTAINER"),
        seq(
            tags::CONCEPT_NAME_CODE_SEQUENCE,
            vec![dcm_code("126000", "Imaging Measurement Report")],
        ),
        el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
        template("1500"),
        seq(tags::CONTENT_SEQUENCE, children),
    ]
}

/// The model's label of `organ` and its type as a code (a plain Finding without one).
fn finding<'m>(organ: &Organ, model: &'m Manifest) -> (Option<&'m Label>, InMemDicomObject) {
    let label = model.labels.iter().find(|l| l.value == organ.value);
    let code = label.map_or_else(|| coded("DCM", "121071", "Finding"), |l| code(&l.kind));
    (label, code)
}

/// Each organ left out of the result: a coded item (the organ, under the node's
/// concept "Left out of the result") and a comment that says why.
fn left_out(organs: &[Organ], model: &Manifest) -> Vec<InMemDicomObject> {
    organs
        .iter()
        .filter(|o| o.left_out)
        .flat_map(|organ| {
            let (_, finding) = finding(organ, model);
            let reasons = organ
                .qa
                .reasons
                .iter()
                .map(|r| r.code.meaning())
                .collect::<Vec<_>>()
                .join("; ");
            [
                content(
                    "CONTAINS",
                    "CODE",
                    coded(quality::CODING_SCHEME, "left-out", "Left out of the result"),
                    code_value(finding),
                ),
                content(
                    "CONTAINS",
                    "TEXT",
                    dcm_code("121106", "Comment"),
                    text_value(&format!(
                        "{}: left out of the segmentation and the measurements because its result failed the quality checks: {reasons}",
                        organ.name
                    )),
                ),
            ]
        })
        .collect()
}

/// Where a label lies when its type alone does not say it: its region, or its type
/// when a modifier gives the side; as a Finding Site with its Laterality.
fn finding_site(label: &Label) -> Option<InMemDicomObject> {
    let site = label
        .region
        .as_ref()
        .or(label.modifier.as_ref().map(|_| &label.kind))?;
    let mut value = code_value(code(site));
    if let Some(side) = label.laterality() {
        value.push(seq(
            tags::CONTENT_SEQUENCE,
            vec![content(
                "HAS CONCEPT MOD",
                "CODE",
                coded("SCT", "272741003", "Laterality"),
                code_value(code(side)),
            )],
        ));
    }
    Some(content(
        "HAS CONCEPT MOD",
        "CODE",
        coded("SCT", "363698007", "Finding Site"),
        value,
    ))
}

/// TID 1411 for one organ.
fn group(
    organ: &Organ,
    seg: &EncodedSeg,
    model: &Manifest,
    source_series: &str,
    sop_instance_uid: &str,
) -> InMemDicomObject {
    let (label, finding) = finding(organ, model);
    let tracking_uid = derived_uid(sop_instance_uid, "tracking", &[organ.value]);
    let hu = || coded("UCUM", "[hnsf'U]", "Hounsfield unit");
    let attenuation = |value: f64, derivation: InMemDicomObject| {
        num(
            dcm_code("112031", "Attenuation Coefficient"),
            value,
            hu(),
            vec![content(
                "HAS CONCEPT MOD",
                "CODE",
                dcm_code("121401", "Derivation"),
                code_value(derivation),
            )],
        )
    };
    let referenced_segment = {
        let mut c = content(
            "CONTAINS",
            "IMAGE",
            dcm_code("121191", "Referenced Segment"),
            vec![],
        );
        c.put(seq(
            tags::REFERENCED_SOP_SEQUENCE,
            vec![item(vec![
                el(tags::REFERENCED_SOP_CLASS_UID, VR::UI, SEGMENTATION_STORAGE),
                el(
                    tags::REFERENCED_SOP_INSTANCE_UID,
                    VR::UI,
                    seg.sop_instance_uid.as_str(),
                ),
                el(
                    tags::REFERENCED_SEGMENT_NUMBER,
                    VR::US,
                    PrimitiveValue::from(organ.segment_number),
                ),
            ])],
        ));
        c
    };
    let children = vec![
        content(
            "HAS OBS CONTEXT",
            "TEXT",
            dcm_code("112039", "Tracking Identifier"),
            text_value(&organ.name),
        ),
        content(
            "HAS OBS CONTEXT",
            "UIDREF",
            dcm_code("112040", "Tracking Unique Identifier"),
            uid_value(tracking_uid.as_str()),
        ),
        content(
            "CONTAINS",
            "CODE",
            dcm_code("121071", "Finding"),
            code_value(finding),
        ),
    ]
    .into_iter()
    .chain(label.and_then(finding_site))
    .chain([
        content(
            "HAS CONCEPT MOD",
            "TEXT",
            dcm_code("111001", "Algorithm Name"),
            text_value(&model.name),
        ),
        content(
            "HAS CONCEPT MOD",
            "TEXT",
            dcm_code("111003", "Algorithm Version"),
            text_value(&model.version),
        ),
        referenced_segment,
        content(
            "CONTAINS",
            "UIDREF",
            dcm_code("121232", "Source Series for Segmentation"),
            uid_value(source_series),
        ),
        volume_measurement(organ),
        attenuation(organ.hu_mean, coded("SCT", "373098007", "Mean")),
        attenuation(organ.hu_min, coded("SCT", "255605001", "Minimum")),
        attenuation(organ.hu_max, coded("SCT", "56851009", "Maximum")),
    ])
    .chain(qualitative_evaluations(organ))
    .collect::<Vec<_>>();
    content(
        "CONTAINS",
        "CONTAINER",
        dcm_code("125007", "Measurement Group"),
        vec![
            el(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE"),
            template("1411"),
            seq(tags::CONTENT_SEQUENCE, children),
        ],
    )
}
