//! What every object the node derives from a series (the SEG, the measurement report,
//! the key images) shares: the equipment that made it, UIDs derived from content (so
//! that making the same result again gives the same instances), the Patient and General
//! Study modules copied from the source, and coded concepts from the model's manifest.

use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use sha2::{Digest, Sha256};

use crate::cascade::manifest::Code;
use crate::dicom::Uid;
use crate::dicom::build::{coded, el, seq, text};
use crate::volume::Volume;

/// Who made a result object.
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

/// A UID under 2.25 from a hash: the first 128 bits as a decimal number.
pub(crate) fn uid_from(hasher: Sha256) -> Uid {
    let digest = hasher.finalize();
    Uid::from_u128(u128::from_be_bytes(
        digest[..16].try_into().expect("16 bytes"),
    ))
}

/// A UID derived from another object's (`base`): what `object` calls `what`. The SR and
/// the key images derive theirs from their SEG's, so that making the same result again
/// gives the same instances.
pub(crate) fn derived_uid(base: &str, object: &str, what: &[u8]) -> Uid {
    let mut h = Sha256::new();
    h.update(base.as_bytes());
    h.update([0]);
    h.update(object.as_bytes());
    h.update([0]);
    h.update(what);
    uid_from(h)
}

/// DICOM DA and TM of now (UTC).
pub(crate) fn now_da_tm() -> (String, String) {
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
/// Patient and General Study (C.7.1.1, C.7.2.1), copied from the source.
pub(crate) fn patient_and_study(volume: &Volume) -> Vec<DataElement<InMemDicomObject>> {
    let src = &volume.source;
    let mut elements = vec![
        text(tags::PATIENT_NAME, VR::PN, &src.patient_name),
        text(tags::PATIENT_ID, VR::LO, &src.patient_id),
        text(tags::PATIENT_BIRTH_DATE, VR::DA, &src.patient_birth_date),
        text(tags::PATIENT_SEX, VR::CS, &src.patient_sex),
        text(tags::STUDY_DATE, VR::DA, &src.study_date),
        text(tags::STUDY_TIME, VR::TM, &src.study_time),
        text(tags::ACCESSION_NUMBER, VR::SH, &src.accession_number),
        text(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            &src.referring_physician_name,
        ),
        text(tags::STUDY_DESCRIPTION, VR::LO, &src.study_description),
        text(tags::STUDY_ID, VR::SH, &src.study_id),
    ];
    if let Some(cs) = &src.specific_character_set {
        elements.push(el(tags::SPECIFIC_CHARACTER_SET, VR::CS, cs.as_str()));
    }
    elements
}

/// Manufacturer, model name and software versions: the General Equipment module's and
/// the contributing equipment item's.
pub(crate) fn made_by(equipment: &Equipment) -> [DataElement<InMemDicomObject>; 3] {
    [
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
    ]
}

/// The Code Sequence item of a coded concept of the model's manifest.
pub(crate) fn code(c: &Code) -> InMemDicomObject {
    coded(&c.scheme, &c.value, &c.meaning)
}

/// The Code Sequence item of `c` with, when there is one, `modifier` in the modifier
/// sequence `tag` nested in it (a segment's type and its side, a region and its side).
pub(crate) fn modified(c: &Code, tag: Tag, modifier: &Option<Code>) -> InMemDicomObject {
    let mut item = code(c);
    if let Some(m) = modifier {
        item.put(seq(tag, vec![code(m)]));
    }
    item
}
