//! The objects the node holds, as DICOMweb's studies, series and instances: each read
//! from its spool file up to its pixel data, grouped by the UIDs it carries, with the
//! attributes QIDO-RS answers at each level (PS3.18 §10.6.3.3) and its query matching.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dicom_core::value::{PrimitiveValue, Value as DicomValue};
use dicom_core::{DataDictionary, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::{InMemDicomObject, OpenFileOptions};

use crate::dicom::functional;
use crate::store::HeldObject;

/// One held object, read up to its pixel data.
#[derive(Debug, Clone)]
pub struct Held {
    pub file: PathBuf,
    pub object: InMemDicomObject,
    pub series: String,
    pub sop_instance: String,
}

impl Held {
    /// Reads the spool file at `path` up to its pixel data.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let object = OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path)?
            .into_inner();
        let uid = |tag| text(&object, tag).unwrap_or_default();
        Ok(Self {
            series: uid(tags::SERIES_INSTANCE_UID),
            sop_instance: uid(tags::SOP_INSTANCE_UID),
            file: path.to_path_buf(),
            object,
        })
    }

    /// Reads a held object's file; one that is gone or unreadable is logged and `None`.
    pub fn read_row(spool_path: impl Fn(&str) -> PathBuf, row: &HeldObject) -> Option<Self> {
        Held::read(&spool_path(&row.file))
            .inspect_err(|e| {
                tracing::warn!(file = %row.file, error = %format!("{e:#}"), "held object unreadable: not served");
            })
            .ok()
    }

    fn number(&self) -> i64 {
        text(&self.object, tags::INSTANCE_NUMBER)
            .and_then(|n| n.parse().ok())
            .unwrap_or(i64::MAX)
    }
}

/// One series of a study: its first object read, and the objects it has.
#[derive(Debug, Clone)]
pub struct Series {
    pub uid: String,
    pub first: Held,
    pub objects: Vec<HeldObject>,
}

/// The series of `rows` (the objects of one study): a source series as the store
/// groups it (one file read), each result read to find its series. Objects whose file
/// is gone or unreadable are left out, and logged.
pub fn series(spool_path: impl Fn(&str) -> PathBuf, rows: Vec<HeldObject>) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for row in rows {
        if let Some(uid) = &row.series_uid
            && let Some(s) = out.iter_mut().find(|s| &s.uid == uid)
        {
            s.objects.push(row);
            continue;
        }
        let Some(held) = Held::read_row(&spool_path, &row) else {
            continue;
        };
        match out.iter_mut().find(|s| s.uid == held.series) {
            Some(s) => s.objects.push(row),
            None => out.push(Series {
                uid: held.series.clone(),
                first: held,
                objects: vec![row],
            }),
        }
    }
    out
}

/// Reads every object of a series, in Instance Number order.
pub fn instances(spool_path: impl Fn(&str) -> PathBuf, series: &Series) -> Vec<Held> {
    let mut held: Vec<Held> = series
        .objects
        .iter()
        .filter_map(|row| Held::read_row(&spool_path, row).filter(|h| h.series == series.uid))
        .collect();
    held.sort_by_key(Held::number);
    held
}

const STUDY_TAGS: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::ACCESSION_NUMBER,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::STUDY_INSTANCE_UID,
    tags::STUDY_ID,
    tags::STUDY_DESCRIPTION,
];
const SERIES_TAGS: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::SERIES_DATE,
    tags::SERIES_TIME,
    tags::MODALITY,
    tags::SERIES_DESCRIPTION,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::SERIES_NUMBER,
];
const INSTANCE_TAGS: &[Tag] = &[
    tags::SPECIFIC_CHARACTER_SET,
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::STUDY_INSTANCE_UID,
    tags::SERIES_INSTANCE_UID,
    tags::INSTANCE_NUMBER,
    tags::NUMBER_OF_FRAMES,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
];

fn pick(from: &InMemDicomObject, wanted: &[Tag]) -> InMemDicomObject {
    let mut out = InMemDicomObject::new_empty();
    for tag in wanted {
        if let Some(e) = functional::get(from, *tag) {
            out.put(e.clone());
        }
    }
    out
}

fn put_str(object: &mut InMemDicomObject, tag: Tag, vr: VR, value: String) {
    object.put(dicom_object::mem::InMemElement::new(
        tag,
        vr,
        PrimitiveValue::from(value),
    ));
}

/// A study's attributes for QIDO-RS, from its series.
pub fn study_attributes(series: &[Series], url: &str) -> Option<InMemDicomObject> {
    let first = &series.first()?.first;
    let mut out = pick(&first.object, STUDY_TAGS);
    let mut modalities: Vec<String> = series
        .iter()
        .filter_map(|s| text(&s.first.object, tags::MODALITY))
        .collect();
    modalities.sort();
    modalities.dedup();
    out.put(dicom_object::mem::InMemElement::new(
        tags::MODALITIES_IN_STUDY,
        VR::CS,
        PrimitiveValue::Strs(modalities.into()),
    ));
    let instances: usize = series.iter().map(|s| s.objects.len()).sum();
    put_str(
        &mut out,
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        VR::IS,
        series.len().to_string(),
    );
    put_str(
        &mut out,
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        VR::IS,
        instances.to_string(),
    );
    put_str(&mut out, tags::RETRIEVE_URL, VR::UR, url.to_string());
    Some(out)
}

/// A series' attributes for QIDO-RS.
pub fn series_attributes(series: &Series, url: &str) -> InMemDicomObject {
    let mut out = pick(&series.first.object, SERIES_TAGS);
    put_str(
        &mut out,
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        VR::IS,
        series.objects.len().to_string(),
    );
    put_str(&mut out, tags::RETRIEVE_URL, VR::UR, url.to_string());
    out
}

/// An instance's attributes for QIDO-RS.
pub fn instance_attributes(held: &Held, url: &str) -> InMemDicomObject {
    let mut out = pick(&held.object, INSTANCE_TAGS);
    put_str(&mut out, tags::RETRIEVE_URL, VR::UR, url.to_string());
    out
}

/// QIDO-RS query keys (PS3.18 §8.3.4): attribute (keyword or tag) to value; the
/// paging and field parameters are not keys.
pub fn query_keys(params: &BTreeMap<String, String>) -> Result<Vec<(Tag, String)>, String> {
    let mut keys = Vec::new();
    for (name, value) in params {
        if matches!(
            name.as_str(),
            "limit" | "offset" | "includefield" | "fuzzymatching"
        ) {
            continue;
        }
        let tag = parse_tag(name).ok_or_else(|| format!("{name:?} is not an attribute"))?;
        keys.push((tag, value.clone()));
    }
    Ok(keys)
}

fn parse_tag(name: &str) -> Option<Tag> {
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        let n = u32::from_str_radix(name, 16).ok()?;
        return Some(Tag((n >> 16) as u16, n as u16));
    }
    StandardDataDictionary.by_name(name).map(|e| e.tag.inner())
}

/// Whether `object` matches every key: single values with `*` and `?` wildcards, lists
/// of UIDs (separated by `\` or `,`), date and time ranges (`from-to`); names case-
/// insensitively. An attribute the object lacks matches only an empty key.
pub fn matches(object: &InMemDicomObject, keys: &[(Tag, String)]) -> bool {
    keys.iter().all(|(tag, key)| {
        let values: Vec<String> = match functional::get(object, *tag).map(|e| e.value()) {
            Some(DicomValue::Primitive(p)) => p
                .to_multi_str()
                .iter()
                .map(|s| s.trim_matches([' ', '\0']).to_string())
                .collect(),
            _ => Vec::new(),
        };
        if key.is_empty() {
            return true;
        }
        let vr = functional::get(object, *tag).map(|e| e.vr());
        values.iter().any(|v| match vr {
            Some(VR::UI) => key.split(['\\', ',']).any(|k| k == v),
            Some(VR::DA | VR::TM | VR::DT) if key.contains('-') => {
                let (from, to) = key.split_once('-').unwrap_or_default();
                (from.is_empty() || v.as_str() >= from) && (to.is_empty() || v.as_str() <= to)
            }
            Some(VR::PN) => wildcard(&key.to_lowercase(), &v.to_lowercase()),
            _ => wildcard(key, v),
        })
    })
}

/// `*` any run, `?` one character.
fn wildcard(pattern: &str, value: &str) -> bool {
    let (p, v): (Vec<char>, Vec<char>) = (pattern.chars().collect(), value.chars().collect());
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn text(object: &InMemDicomObject, tag: Tag) -> Option<String> {
    functional::get(object, tag)
        .and_then(|e| e.string().ok())
        .map(|s| s.trim_matches([' ', '\0']).to_string())
        .filter(|s| !s.is_empty())
}

/// The bytes of frames `numbers` (1-based) of a held object's pixel data, read once, and
/// the transfer syntax they are in: slices of native pixel data, or the fragments of
/// encapsulated frames.
pub fn frames(path: &Path, numbers: &[usize]) -> anyhow::Result<(Vec<Vec<u8>>, String)> {
    let file = OpenFileOptions::new().open_file(path)?;
    let syntax = file
        .meta()
        .transfer_syntax()
        .trim_end_matches(['\0', ' '])
        .to_string();
    let object = file.into_inner();
    let integer = |tag| functional::get(&object, tag).and_then(|e| e.to_int::<usize>().ok());
    let count = integer(tags::NUMBER_OF_FRAMES).unwrap_or(1);
    if let Some(n) = numbers.iter().find(|n| !(1..=count).contains(*n)) {
        anyhow::bail!("frame {n} of {count}");
    }
    let pixels = functional::get(&object, tags::PIXEL_DATA)
        .ok_or_else(|| anyhow::anyhow!("no pixel data"))?;
    match pixels.value() {
        DicomValue::PixelSequence(seq) => {
            let fragments = seq.fragments();
            let one = |number: usize| {
                if count == 1 {
                    Ok(fragments.concat())
                } else if fragments.len() == count {
                    Ok(fragments[number - 1].clone())
                } else {
                    anyhow::bail!("{count} frames in {} fragments", fragments.len())
                }
            };
            Ok((
                numbers
                    .iter()
                    .map(|n| one(*n))
                    .collect::<anyhow::Result<_>>()?,
                syntax,
            ))
        }
        DicomValue::Primitive(p) => {
            anyhow::ensure!(
                syntax != crate::dicom::uid::ts::EXPLICIT_VR_BE,
                "big endian pixel data is not served"
            );
            let all = p.to_bytes();
            let number_of = |tag| integer(tag).ok_or_else(|| anyhow::anyhow!("no {tag}"));
            let bits = number_of(tags::ROWS)?
                * number_of(tags::COLUMNS)?
                * number_of(tags::SAMPLES_PER_PIXEL).unwrap_or(1)
                * number_of(tags::BITS_ALLOCATED)?;
            anyhow::ensure!(bits % 8 == 0, "frames are not byte-aligned");
            let size = bits / 8;
            let bytes = numbers
                .iter()
                .map(|n| {
                    all.get((n - 1) * size..n * size)
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| anyhow::anyhow!("pixel data shorter than {count} frames"))
                })
                .collect::<anyhow::Result<_>>()?;
            // Native pixels are the same bytes in every little endian syntax.
            Ok((bytes, crate::dicom::uid::ts::EXPLICIT_VR_LE.to_string()))
        }
        DicomValue::Sequence(_) => anyhow::bail!("pixel data is a sequence"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_qido_says() {
        assert!(wildcard("DOE*", "DOE^JOHN"));
        assert!(wildcard("*", ""));
        assert!(wildcard("D?E", "DOE"));
        assert!(!wildcard("D?E", "DOOE"));
        assert!(wildcard("*J*N", "DOE^JOHN"));
        assert!(!wildcard("DOE", "DOE^JOHN"));
    }

    #[test]
    fn keys_and_ranges() {
        let mut o = InMemDicomObject::new_empty();
        put_str(&mut o, tags::STUDY_DATE, VR::DA, "20240102".into());
        put_str(&mut o, tags::PATIENT_NAME, VR::PN, "Doe^John".into());
        put_str(&mut o, tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3".into());
        let key = |k: &str, v: &str| {
            let params = BTreeMap::from([(k.to_string(), v.to_string())]);
            query_keys(&params).unwrap()
        };
        assert!(matches(&o, &key("StudyDate", "20240101-20240131")));
        assert!(!matches(&o, &key("00080020", "20240201-")));
        assert!(matches(&o, &key("PatientName", "doe*")));
        assert!(matches(&o, &key("StudyInstanceUID", "9.9,1.2.3")));
        assert!(!matches(&o, &key("AccessionNumber", "A1")));
        assert!(matches(&o, &key("limit", "5")));
        assert!(query_keys(&BTreeMap::from([("NoSuchThing".into(), "x".into())])).is_err());
    }
}
