//! Attribute access: text values, and functional group lookup for multi-frame images
//! (PS3.3 C.7.6.16), where an attribute is taken from the frame's Per-Frame Functional
//! Groups item, else the Shared Functional Groups, else the top level (classic
//! single-frame images).

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

pub type Element = dicom_core::DataElement<InMemDicomObject>;

/// The element `tag` at the top level of `obj`, if present. (`element_opt`, not
/// `element`: dicom-object builds a "no such element" error with a captured backtrace
/// when `RUST_BACKTRACE` is set, costly on paths where absence is normal.)
pub fn get(obj: &InMemDicomObject, tag: Tag) -> Option<&Element> {
    obj.element_opt(tag).ok().flatten()
}

/// The element `tag` inside the functional group macro `macro_seq` for `frame`
/// (0-based), or at the top level.
pub fn element(obj: &InMemDicomObject, frame: usize, macro_seq: Tag, tag: Tag) -> Option<&Element> {
    let in_group = |groups: Tag, index: usize| {
        let group = get(obj, groups)?.items()?.get(index)?;
        let item = get(group, macro_seq)?.items()?.first()?;
        get(item, tag)
    };
    in_group(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, frame)
        .or_else(|| in_group(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, 0))
        .or_else(|| get(obj, tag))
}

/// The numbers of a multi-valued decimal attribute found by [`element`].
pub fn numbers<const N: usize>(
    obj: &InMemDicomObject,
    frame: usize,
    macro_seq: Tag,
    tag: Tag,
) -> Option<[f64; N]> {
    let values = element(obj, frame, macro_seq, tag)?
        .to_multi_float64()
        .ok()?;
    <[f64; N]>::try_from(values.as_slice()).ok()
}

/// A text attribute, trimmed of padding; `None` when absent or empty.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    get(obj, tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_matches([' ', '\0']).to_string())
        .filter(|s| !s.is_empty())
}
