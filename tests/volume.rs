//! Volume assembly: the real series against an independent pydicom reference, the
//! reference labels' mean HU, every transfer syntax giving the identical volume, and
//! synthetic series for each geometry fault.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use segnode::volume::{self, Tolerances, Volume};

fn assemble_dir(dir: &Path) -> Result<Volume, volume::VolumeError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    volume::assemble(&files, 2, &Tolerances::default())
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn real_series_equals_pydicom_voxel_for_voxel() {
    let v = assemble_dir(&real_series()).unwrap();
    assert_eq!(v.shape, [20, 512, 512]);
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("ref.f32");
    let status = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/reference_volume.py"))
        .arg(real_series())
        .arg(&reference)
        .status()
        .unwrap();
    assert!(status.success());
    let expected = read_f32(&reference);
    assert_eq!(expected.len(), v.data.len());
    let differing = expected.iter().zip(&v.data).filter(|(a, b)| a != b).count();
    assert_eq!(differing, 0, "{differing} voxels differ from pydicom");

    // The CLI's --dump writes the same bytes.
    let dumped = dir.path().join("node.f32");
    let out = segnode_ok([
        "inspect".as_ref(),
        "--json".as_ref(),
        "--dump".as_ref(),
        dumped.as_os_str(),
        real_series().as_os_str(),
    ]);
    assert_eq!(read_f32(&dumped), v.data);
    let report: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        report["series"][0]["shape"],
        serde_json::json!([20, 512, 512])
    );
    assert_eq!(report["series"][0]["spacing"][0], 2.0);
}

#[test]
fn mean_hu_per_reference_label_matches_to_a_tenth() {
    let v = assemble_dir(&real_series()).unwrap();
    let labels_dir = shared_data().join("ct-abdomen-j2k-labels");
    let labels = std::fs::read(labels_dir.join("labels.u8")).unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(labels_dir.join("labels.json")).unwrap())
            .unwrap();
    assert_eq!(labels.len(), v.data.len());
    for (value, name) in meta["labels"].as_object().unwrap() {
        let value: u8 = value.parse().unwrap();
        let (sum, n) = labels
            .iter()
            .zip(&v.data)
            .filter(|(l, _)| **l == value)
            .fold((0f64, 0usize), |(s, n), (_, hu)| {
                (s + f64::from(*hu), n + 1)
            });
        let expected = meta["mean_hu"][name.as_str().unwrap()].as_f64().unwrap();
        assert_eq!(
            n as u64,
            meta["voxels"][name.as_str().unwrap()].as_u64().unwrap()
        );
        let mean = sum / n as f64;
        assert!(
            (mean - expected).abs() <= 0.05 + 1e-9,
            "{name}: {mean:.3} vs {expected}"
        );
    }
}

#[test]
fn series_without_uids_is_refused_with_a_reason() {
    let original = shared_data().join("ct-abdomen-j2k-original");
    let err = assemble_dir(&original).unwrap_err();
    assert_eq!(err.code(), "missing_attribute");
    assert!(
        err.to_string().contains("SOP Class UID") || err.to_string().contains("UID"),
        "{err}"
    );
}

fn run(tool: &str, args: &[&Path]) {
    let path = Path::new("/usr/bin").join(tool);
    assert!(
        path.exists(),
        "{} not found: install DCMTK and GDCM tools (scripts/setup)",
        path.display()
    );
    let out = Command::new(&path).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_lossless_transfer_syntax_gives_the_identical_volume() {
    let original = assemble_dir(&real_series()).unwrap();
    let work = tempfile::tempdir().unwrap();
    let raw = work.path().join("raw");
    std::fs::create_dir_all(&raw).unwrap();
    let inputs: Vec<PathBuf> = {
        let mut f: Vec<PathBuf> = std::fs::read_dir(real_series())
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        f.sort();
        f
    };
    for f in &inputs {
        run(
            "gdcmconv",
            &[Path::new("--raw"), f, &raw.join(f.file_name().unwrap())],
        );
    }
    // (tool, option): Explicit VR LE, Implicit VR LE, Explicit VR BE, Deflated,
    // JPEG Lossless SV1, JPEG Lossless process 14, JPEG-LS Lossless, RLE.
    let variants: [(&str, Option<&str>); 8] = [
        ("dcmconv", Some("+te")),
        ("dcmconv", Some("+ti")),
        ("dcmconv", Some("+tb")),
        ("dcmconv", Some("+td")),
        ("dcmcjpeg", Some("+e1")),
        ("dcmcjpeg", Some("+el")),
        ("dcmcjpls", None),
        ("dcmcrle", None),
    ];
    for (tool, option) in variants {
        let name = format!("{tool}{}", option.unwrap_or(""));
        let dir = work.path().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        for f in std::fs::read_dir(&raw).unwrap() {
            let f = f.unwrap().path();
            let out = dir.join(f.file_name().unwrap());
            let mut args: Vec<&Path> = option.iter().map(Path::new).collect();
            args.push(&f);
            args.push(&out);
            run(tool, &args);
        }
        let v = assemble_dir(&dir).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(v.shape, original.shape, "{name}");
        assert!(v.data == original.data, "{name}: volume differs");
        assert_eq!(v.geometry, original.geometry, "{name}");
    }
}

/// Writes a synthetic series whose slice `i` sits at `positions[i]`, then lets
/// `modify` change any slice.
fn write_series(
    dir: &Path,
    positions: &[[f64; 3]],
    orientation: &str,
    modify: impl Fn(usize, &mut dicom_object::InMemDicomObject),
) {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    std::fs::create_dir_all(dir).unwrap();
    for (i, p) in positions.iter().enumerate() {
        let sop = format!("1.2.826.0.1.3680043.10.3.1.{}", i + 1);
        let mut obj = ct_slice(
            "1.2.826.0.1.3680043.10.3",
            "1.2.826.0.1.3680043.10.3.1",
            &sop,
            i as u32,
            8,
        );
        obj.put(DataElement::new(
            tags::IMAGE_POSITION_PATIENT,
            VR::DS,
            PrimitiveValue::from(format!("{}\\{}\\{}", p[0], p[1], p[2])),
        ));
        obj.put(DataElement::new(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            PrimitiveValue::from(orientation),
        ));
        modify(i, &mut obj);
        // File names run against the positions: order must come from geometry.
        write_part10(
            obj,
            CT_STORAGE,
            &sop,
            &dir.join(format!("f{:03}.dcm", positions.len() - i)),
        );
    }
}

fn zs(values: &[f64]) -> Vec<[f64; 3]> {
    values.iter().map(|z| [-10.0, -10.0, *z]).collect()
}

const AXIAL: &str = "1\\0\\0\\0\\1\\0";

#[test]
fn synthetic_geometry_faults_get_their_codes() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let work = tempfile::tempdir().unwrap();
    let regular = zs(&[0.0, 3.0, 6.0, 9.0, 12.0]);
    let tilted: Vec<[f64; 3]> = (0..5)
        .map(|i| [-10.0, -10.0 + 0.6 * i as f64, 3.0 * i as f64])
        .collect();
    type Modify = Box<dyn Fn(usize, &mut dicom_object::InMemDicomObject)>;
    let none: fn() -> Modify = || Box::new(|_, _| {});
    let cases: Vec<(&str, Vec<[f64; 3]>, Modify)> = vec![
        ("too_few_slices", zs(&[0.0]), none()),
        ("duplicate_position", zs(&[0.0, 3.0, 3.0, 6.0]), none()),
        ("missing_slice", zs(&[0.0, 3.0, 6.0, 12.0, 15.0]), none()),
        (
            "slice_spacing_irregular",
            zs(&[0.0, 3.0, 6.0, 9.5, 12.5]),
            none(),
        ),
        ("gantry_tilt", tilted, none()),
        (
            "orientation_inconsistent",
            regular.clone(),
            Box::new(|i, o| {
                if i == 2 {
                    o.put(DataElement::new(
                        tags::IMAGE_ORIENTATION_PATIENT,
                        VR::DS,
                        PrimitiveValue::from("1\\0\\0\\0\\0.8\\0.6"),
                    ));
                }
            }),
        ),
        (
            "pixel_spacing_inconsistent",
            regular.clone(),
            Box::new(|i, o| {
                if i == 1 {
                    o.put(DataElement::new(
                        tags::PIXEL_SPACING,
                        VR::DS,
                        PrimitiveValue::from("0.9\\0.9"),
                    ));
                }
            }),
        ),
    ];
    for (code, positions, modify) in cases {
        let dir = work.path().join(code);
        write_series(&dir, &positions, AXIAL, modify);
        let err = assemble_dir(&dir).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        assert!(
            err.to_string().contains("1.2.826.0.1.3680043.10.3.1"),
            "message names the series: {err}"
        );
    }
}

/// A series of 20 slices 3 mm apart whose 8th by position (z = 21 mm, SOP Instance UID
/// ending .8; UID and file order both differ from position order) is at fault: the
/// failure names that instance and where it lies, whichever slice the files list first.
#[test]
fn geometry_failures_name_the_instance_and_its_position() {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let work = tempfile::tempdir().unwrap();
    let z: Vec<f64> = (0..20).map(|i| 3.0 * f64::from(i)).collect();
    let uid = |n: u32| format!("1.2.826.0.1.3680043.10.3.1.{n}");
    let eighth = format!(
        "instance {} at z = 21.0 mm (slice 8 of 20 by position)",
        uid(8)
    );
    type Modify = Box<dyn Fn(usize, &mut dicom_object::InMemDicomObject)>;
    let at_eighth = |tag, vr, value: &'static str| -> Modify {
        Box::new(move |i, o| {
            if i == 7 {
                o.put(DataElement::new(tag, vr, PrimitiveValue::from(value)));
            }
        })
    };
    let mut duplicate = z.clone();
    duplicate[8] = 21.0;
    let cases: Vec<(&str, Vec<f64>, Modify, Vec<String>)> = vec![
        (
            "orientation_inconsistent",
            z.clone(),
            at_eighth(
                tags::IMAGE_ORIENTATION_PATIENT,
                VR::DS,
                "1\\0\\0\\0\\0.8\\0.6",
            ),
            vec![eighth.clone(), "19 of 20 slices".into()],
        ),
        (
            "dimensions_inconsistent",
            z.clone(),
            Box::new(|i, o| {
                if i == 7 {
                    o.put(DataElement::new(
                        tags::ROWS,
                        VR::US,
                        PrimitiveValue::from(16u16),
                    ));
                }
            }),
            vec![eighth.clone(), "16x8".into(), "8x8".into()],
        ),
        (
            "pixel_spacing_inconsistent",
            z.clone(),
            at_eighth(tags::PIXEL_SPACING, VR::DS, "0.9\\0.9"),
            vec![eighth.clone()],
        ),
        (
            "duplicate_position",
            duplicate,
            Box::new(|_, _| {}),
            vec![
                eighth.clone(),
                format!(
                    "instance {} at z = 21.0 mm (slice 9 of 20 by position)",
                    uid(9)
                ),
            ],
        ),
    ];
    for (code, zs_mm, modify, needles) in cases {
        let dir = work.path().join(code);
        write_series(&dir, &zs(&zs_mm), AXIAL, modify);
        let err = assemble_dir(&dir).unwrap_err();
        assert_eq!(err.code(), code, "{err}");
        for needle in needles {
            assert!(
                err.to_string().contains(&needle),
                "{code}: {needle:?} not in: {err}"
            );
        }
    }

    // The 8th slice twice under one SOP Instance UID, with other content.
    let dir = work.path().join("duplicate_instance");
    write_series(&dir, &zs(&z), AXIAL, |_, _| {});
    let mut other = ct_slice(
        "1.2.826.0.1.3680043.10.3",
        "1.2.826.0.1.3680043.10.3.1",
        &uid(8),
        40,
        8,
    );
    other.put(DataElement::new(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        PrimitiveValue::from("-10\\-10\\21"),
    ));
    let again = dir.join("again.dcm");
    write_part10(other, CT_STORAGE, &uid(8), &again);
    let err = assemble_dir(&dir).unwrap_err();
    assert_eq!(err.code(), "duplicate_instance", "{err}");
    let message = err.to_string();
    for needle in [
        format!("instance {}", uid(8)),
        again.display().to_string(),
        dir.join("f013.dcm").display().to_string(),
    ] {
        assert!(message.contains(&needle), "{needle:?} not in: {message}");
    }
}

#[test]
fn reversed_feet_first_and_coronal_series_assemble_correctly() {
    let work = tempfile::tempdir().unwrap();
    // Feet-first: row direction flipped, normal points to the feet.
    let ff = work.path().join("ff");
    write_series(
        &ff,
        &zs(&[0.0, 3.0, 6.0, 9.0]),
        "-1\\0\\0\\0\\1\\0",
        |_, _| {},
    );
    let v = assemble_dir(&ff).unwrap();
    assert_eq!(v.geometry.direction[2], [0.0, 0.0, -1.0]);
    assert_eq!(
        v.slices[0].position[2], 9.0,
        "first slice is the lowest along the normal"
    );
    assert_eq!(v.geometry.spacing[0], 3.0);
    // Coronal, consistent.
    let coronal = work.path().join("coronal");
    let positions: Vec<[f64; 3]> = [4.0, 0.0, 2.0].iter().map(|y| [-10.0, *y, 50.0]).collect();
    write_series(&coronal, &positions, "1\\0\\0\\0\\0\\-1", |_, _| {});
    let v = assemble_dir(&coronal).unwrap();
    assert_eq!(v.geometry.direction[2], [0.0, 1.0, 0.0]);
    let ys: Vec<f64> = v.slices.iter().map(|s| s.position[1]).collect();
    assert_eq!(ys, vec![0.0, 2.0, 4.0]);
    // Each slice's pixels are where its position says: synthetic pixels depend on
    // the slice index, so slot z must hold the slice written with that position.
    assert_eq!(v.slices[0].sop_instance_uid, "1.2.826.0.1.3680043.10.3.1.2");
}

#[test]
fn enhanced_ct_multiframe_with_functional_groups_assembles() {
    use dicom_core::value::DataSetSequence;
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    use dicom_object::InMemDicomObject;

    fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
        InMemDicomObject::from_element_iter(elements)
    }
    fn seq(tag: dicom_core::Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
        DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
    }
    let ds = |tag, v: &str| DataElement::new(tag, VR::DS, PrimitiveValue::from(v));

    const ENHANCED_CT: &str = segnode::dicom::uid::ENHANCED_CT_IMAGE_STORAGE;
    let sop = "1.2.826.0.1.3680043.10.4.1.1";
    let mut obj = ct_slice(
        "1.2.826.0.1.3680043.10.4",
        "1.2.826.0.1.3680043.10.4.1",
        sop,
        0,
        8,
    );
    for tag in [
        tags::IMAGE_POSITION_PATIENT,
        tags::IMAGE_ORIENTATION_PATIENT,
        tags::PIXEL_SPACING,
        tags::SLICE_THICKNESS,
        tags::RESCALE_SLOPE,
        tags::RESCALE_INTERCEPT,
    ] {
        obj.remove_element(tag);
    }
    obj.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(ENHANCED_CT),
    ));
    obj.put(DataElement::new(
        tags::NUMBER_OF_FRAMES,
        VR::IS,
        PrimitiveValue::from("4"),
    ));
    obj.put(seq(
        tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
        vec![item(vec![
            seq(
                tags::PIXEL_MEASURES_SEQUENCE,
                vec![item(vec![
                    ds(tags::PIXEL_SPACING, "0.5\\0.5"),
                    ds(tags::SLICE_THICKNESS, "2"),
                ])],
            ),
            seq(
                tags::PLANE_ORIENTATION_SEQUENCE,
                vec![item(vec![ds(
                    tags::IMAGE_ORIENTATION_PATIENT,
                    "1\\0\\0\\0\\1\\0",
                )])],
            ),
            seq(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                vec![item(vec![
                    ds(tags::RESCALE_SLOPE, "1"),
                    ds(tags::RESCALE_INTERCEPT, "-1024"),
                ])],
            ),
        ])],
    ));
    // Frames stored out of position order: z = 4, 0, 6, 2 mm.
    let zs = [4.0, 0.0, 6.0, 2.0];
    obj.put(seq(
        tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
        zs.iter()
            .map(|z| {
                item(vec![seq(
                    tags::PLANE_POSITION_SEQUENCE,
                    vec![item(vec![ds(
                        tags::IMAGE_POSITION_PATIENT,
                        &format!("0\\0\\{z}"),
                    )])],
                )])
            })
            .collect(),
    ));
    // Frame f holds the constant 1000 + f.
    let pixels: Vec<u16> = (0..4u16)
        .flat_map(|f| std::iter::repeat_n(1000 + f, 64))
        .collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    let dir = tempfile::tempdir().unwrap();
    write_part10(obj, ENHANCED_CT, sop, &dir.path().join("enhanced.dcm"));

    let v = assemble_dir(dir.path()).unwrap();
    assert_eq!(v.shape, [4, 8, 8]);
    assert_eq!(v.geometry.spacing, [2.0, 0.5, 0.5]);
    let frames: Vec<Option<u32>> = v.slices.iter().map(|s| s.frame).collect();
    assert_eq!(frames, vec![Some(2), Some(4), Some(1), Some(3)]);
    let first_voxel_per_slice: Vec<f32> = v.data.chunks(64).map(|c| c[0]).collect();
    // HU = stored - 1024: frame 2 (index 1) first, then frames 4, 1, 3.
    assert_eq!(first_voxel_per_slice, vec![-23.0, -21.0, -24.0, -22.0]);
}
