//! Building data sets with dicom-object: elements, sequences, items, DS values within
//! their 16 characters, coded concepts (PS3.3 8.8). The SEG, the measurement report and
//! the key images are put together with these. Pure: no I/O.

use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// Formats a DS value in at most 16 characters.
pub fn ds(v: f64) -> String {
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

pub fn el(tag: Tag, vr: VR, value: impl Into<PrimitiveValue>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, value.into())
}

pub fn text(tag: Tag, vr: VR, value: &Option<String>) -> DataElement<InMemDicomObject> {
    el(tag, vr, value.clone().unwrap_or_default())
}

pub fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

pub fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

/// A Code Sequence item: value, coding scheme designator and meaning.
/// A value over 16 characters goes in Long Code Value (UC), as PS3.3 8.8 says.
pub fn coded(scheme: &str, value: &str, meaning: &str) -> InMemDicomObject {
    item(vec![
        if value.len() > 16 {
            el(tags::LONG_CODE_VALUE, VR::UC, value)
        } else {
            el(tags::CODE_VALUE, VR::SH, value)
        },
        el(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        el(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A code of the DICOM Content Mapping Resource (PS3.16), scheme `DCM`.
pub fn dcm_code(value: &str, meaning: &str) -> InMemDicomObject {
    coded("DCM", value, meaning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_value_over_sixteen_characters_is_a_long_code_value() {
        let short = coded("99SEGNODE", "truncated", "Organ cut");
        assert_eq!(
            short.element(tags::CODE_VALUE).unwrap().to_str().unwrap(),
            "truncated"
        );
        let long = coded("99SEGNODE", "position_implausible", "Organ outside");
        assert!(long.element(tags::CODE_VALUE).is_err());
        assert_eq!(
            long.element(tags::LONG_CODE_VALUE)
                .unwrap()
                .to_str()
                .unwrap(),
            "position_implausible"
        );
    }

    #[test]
    fn ds_values_fit_sixteen_characters() {
        assert_eq!(ds(0.5), "0.5");
        assert!(ds(1.0 / 3.0).len() <= 16);
        assert!(ds(-123_456.789_012_345).len() <= 16);
    }
}
