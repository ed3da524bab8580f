//! `segnode import-nnunet`: an nnU-Net v2 results folder becomes a model folder the node
//! runs without Python. The conversion runs `scripts/nnunet_export.py` (built into the
//! binary) with a Python that has `torch` and `nnunetv2`: it exports each fold's network
//! to ONNX at the planned patch size and says what nnU-Net's inference needs; this side
//! writes the manifest (`pipeline = "nnunet"`, the folds with their checksums, target
//! spacing, transpose, CT normalisation, patch, step, Gaussian, mirroring, labels with
//! SNOMED CT codes where the label's name has a known one) and loads it back to check it.
//! Several results folders become one multi-part model (TotalSegmentator's five 1.5 mm
//! `total` networks): each a part with its own plans, their labels merged into one
//! label map as TotalSegmentator merges them ([`merge_labels`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::cascade::frame::Frame;
use crate::cascade::manifest::{
    Code, Label, Manifest, ManifestError, Model, Network, Pipeline, PostProcess, Stage,
};
use crate::cascade::ops::{Blending, Normalization};
use crate::checksum::sha256_hex;

const EXPORT_SCRIPT: &str = include_str!("../../scripts/nnunet_export.py");

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// One results folder, or several: the parts of one model, in the order they run.
    pub results: Vec<PathBuf>,
    pub configuration: String,
    /// Comma-separated folds; none for every fold found.
    pub folds: Option<String>,
    pub checkpoint: String,
    pub mirroring: bool,
    pub out: PathBuf,
    pub python: PathBuf,
    /// The frame the training images were in, as nnU-Net read them.
    pub frame: Frame,
    pub name: String,
    pub version: String,
    /// A model whose stage 1 (and cascade rules) goes in front.
    pub behind: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(
        "cannot run {python} (set --python or SEGNODE_PYTHON to a Python with torch and nnunetv2)"
    )]
    Python {
        python: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the nnU-Net export failed (exit {status}); its messages are above")]
    Export { status: String },
    #[error("the nnU-Net export printed no result: {0}")]
    Output(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

#[derive(Debug, Deserialize)]
struct Exported {
    dataset: String,
    plans: String,
    configuration: String,
    trainer: String,
    folds: Vec<ExportedFold>,
    patch_size: [usize; 3],
    spacing: [f64; 3],
    transpose_forward: [usize; 3],
    transpose_backward: [usize; 3],
    normalization: String,
    clip: [f32; 2],
    mean: f32,
    std: f32,
    mirror_axes: Vec<usize>,
    labels: std::collections::BTreeMap<String, u32>,
}

#[derive(Debug, Deserialize)]
struct ExportedFold {
    fold: serde_json::Value,
    file: String,
    max_abs_difference: f64,
}

/// What an import made.
#[derive(Debug)]
pub struct Imported {
    pub model: Model,
    /// Per fold: its file and the largest difference between PyTorch's and ONNX
    /// Runtime's logits on a random patch.
    pub checks: Vec<(String, f64)>,
    /// Label names that more than one part has (one label; the later part's wins).
    pub shared: Vec<String>,
}

/// Runs the export of each results folder and writes `out/model.toml`.
pub fn import(options: &ImportOptions) -> Result<Imported, ImportError> {
    let several = options.results.len() > 1;
    let exported = options
        .results
        .iter()
        .enumerate()
        .map(|(i, results)| {
            let dir = if several {
                format!("part{}", i + 1)
            } else {
                String::new()
            };
            export(options, results, &dir)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let (manifest, shared) = manifest(options, &exported, |e| fold_networks(options, e))?;
    let path = options.out.join("model.toml");
    let sources: String = exported
        .iter()
        .map(|e| {
            let folds: Vec<String> = e.folds.iter().map(|f| f.fold.to_string()).collect();
            format!(
                "# Imported by `segnode import-nnunet` from nnU-Net v2 {} ({}__{}__{}), folds {}.\n",
                e.dataset,
                e.trainer,
                e.plans,
                e.configuration,
                folds.join(", ")
            )
        })
        .collect();
    let text = format!(
        "{sources}# The weights' licence is the model's own; see where the results folder came from.\n{}",
        toml::to_string(&manifest).map_err(|e| ImportError::Output(e.to_string()))?
    );
    std::fs::write(&path, text).map_err(|source| ImportError::Write { path, source })?;
    Ok(Imported {
        model: Model::load(&options.out)?,
        checks: exported
            .iter()
            .flat_map(|e| &e.folds)
            .map(|f| (f.file.clone(), f.max_abs_difference))
            .collect(),
        shared,
    })
}

/// Exports the folds of `results` into `out/dir`, their files named relative to `out`.
fn export(options: &ImportOptions, results: &Path, dir: &str) -> Result<Exported, ImportError> {
    let out = options.out.join(dir);
    std::fs::create_dir_all(&out).map_err(|source| ImportError::Write {
        path: out.clone(),
        source,
    })?;
    let mut command = Command::new(&options.python);
    command
        .arg("-c")
        .arg(EXPORT_SCRIPT)
        .arg(results)
        .args(["--configuration", &options.configuration])
        .args(["--checkpoint", &options.checkpoint])
        .arg("--out")
        .arg(&out);
    if let Some(folds) = &options.folds {
        command.args(["--folds", folds]);
    }
    if !options.mirroring {
        command.arg("--no-mirroring");
    }
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| ImportError::Python {
            python: options.python.display().to_string(),
            source,
        })?;
    if !output.status.success() {
        return Err(ImportError::Export {
            status: output.status.to_string(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let mut exported: Exported =
        serde_json::from_str(last).map_err(|e| ImportError::Output(e.to_string()))?;
    if !dir.is_empty() {
        for fold in &mut exported.folds {
            fold.file = format!("{dir}/{}", fold.file);
        }
    }
    Ok(exported)
}

/// The manifest of the exported parts (one for most models), and the label names
/// that several parts share.
fn manifest(
    options: &ImportOptions,
    exported: &[Exported],
    networks: impl Fn(&Exported) -> Result<Vec<Network>, ImportError>,
) -> Result<(Manifest, Vec<String>), ImportError> {
    let unsupported = |m: String| Err(ImportError::Unsupported(m));
    let mut stages = exported
        .iter()
        .map(|e| stage(e, networks(e)?))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut labels, shared) = if let [one] = exported {
        let mut labels = Vec::new();
        for (name, value) in &one.labels {
            match u8::try_from(*value) {
                Ok(0) => {}
                Ok(value) => labels.push(label(name, value)),
                Err(_) => return unsupported(format!("label {name} = {value} is above 255")),
            }
        }
        (labels, Vec::new())
    } else {
        let parts: Vec<_> = exported.iter().map(|e| &e.labels).collect();
        let merged = merge_labels(&parts)?;
        for (stage, channels) in stages.iter_mut().zip(merged.channels) {
            stage.channels = channels;
        }
        let labels = merged
            .labels
            .iter()
            .map(|(name, value)| label(name, *value))
            .collect();
        (labels, merged.shared)
    };
    labels.sort_by_key(|l| l.value);
    let (stage1, cascade) = match &options.behind {
        Some(dir) => coarse_stage(dir, &options.out, options.frame)?,
        None => (None, None),
    };
    let description = exported
        .iter()
        .zip(&stages)
        .map(|(e, s)| {
            format!(
                "nnU-Net v2 {} ({}__{}__{}), {} fold(s), mirroring {}",
                e.dataset,
                e.trainer,
                e.plans,
                e.configuration,
                s.folds.len(),
                if e.mirror_axes.is_empty() {
                    "off".to_string()
                } else {
                    format!("on axes {:?}", e.mirror_axes)
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; then ");
    let stage2 = stages.remove(0);
    Ok((
        Manifest {
            name: options.name.clone(),
            version: options.version.clone(),
            description,
            frame: options.frame,
            stage1,
            stage2,
            parts: stages,
            cascade,
            postprocess: PostProcess::default(),
            labels,
        },
        shared,
    ))
}

/// The manifest [`import`] makes of what the export printed for each part (one line
/// each), every fold's checksum that of its file's name: how the fuzz target reads a
/// site's nnU-Net plans as the export passes them on.
pub fn manifest_from_export(output: &str) -> Result<Manifest, ImportError> {
    let exported = output
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| ImportError::Output(e.to_string())))
        .collect::<Result<Vec<Exported>, _>>()?;
    if exported.is_empty() {
        return Err(ImportError::Output("no part".into()));
    }
    let options = ImportOptions {
        results: Vec::new(),
        configuration: "3d_fullres".into(),
        folds: None,
        checkpoint: "checkpoint_final.pth".into(),
        mirroring: true,
        out: PathBuf::new(),
        python: PathBuf::new(),
        frame: Frame::parse("SPL").expect("a frame"),
        name: "fuzz".into(),
        version: "1.0.0".into(),
        behind: None,
    };
    let networks = |e: &Exported| {
        Ok(e.folds
            .iter()
            .map(|f| Network {
                file: f.file.clone(),
                sha256: sha256_hex(f.file.as_bytes()),
            })
            .collect())
    };
    Ok(manifest(&options, &exported, networks)?.0)
}

/// Each exported fold's file under `options.out`, with its checksum.
fn fold_networks(options: &ImportOptions, e: &Exported) -> Result<Vec<Network>, ImportError> {
    e.folds
        .iter()
        .map(|f| {
            let path = options.out.join(&f.file);
            let bytes = std::fs::read(&path).map_err(|source| ImportError::Write {
                path: path.clone(),
                source,
            })?;
            Ok(Network {
                file: f.file.clone(),
                sha256: sha256_hex(&bytes),
            })
        })
        .collect()
}

/// The nnU-Net stage of one exported results folder, its folds' files `folds`.
fn stage(e: &Exported, folds: Vec<Network>) -> Result<Stage, ImportError> {
    let unsupported = |m: String| Err(ImportError::Unsupported(m));
    let mut inverse = [usize::MAX; 3];
    for (i, a) in e.transpose_forward.iter().enumerate() {
        match inverse.get_mut(*a) {
            Some(slot) if *slot == usize::MAX => *slot = i,
            _ => {
                return unsupported(format!(
                    "transpose_forward {:?} is not a permutation of the axes 0, 1, 2",
                    e.transpose_forward
                ));
            }
        }
    }
    if inverse != e.transpose_backward {
        return unsupported(format!(
            "transpose_backward {:?} is not the inverse of transpose_forward {:?}",
            e.transpose_backward, e.transpose_forward
        ));
    }
    let (normalization, hu_window, mean, std) = match e.normalization.as_str() {
        "CTNormalization" => (Normalization::Ct, e.clip, Some(e.mean), Some(e.std)),
        "ZScoreNormalization" => (
            Normalization::Zscore,
            [f32::NEG_INFINITY, f32::INFINITY],
            None,
            None,
        ),
        other => return unsupported(format!("normalisation {other}")),
    };
    Ok(Stage {
        pipeline: Pipeline::Nnunet,
        file: None,
        sha256: None,
        folds,
        input: "input".into(),
        output: "logits".into(),
        spacing_mm: Some(e.spacing),
        downsample: None,
        hu_window,
        normalization,
        mean,
        std,
        patch: e.patch_size,
        overlap: 0.5,
        blending: Blending::Gaussian,
        transpose: (e.transpose_forward != [0, 1, 2]).then_some(e.transpose_forward),
        mirror_axes: e.mirror_axes.clone(),
        channels: Vec::new(),
        frame: None,
    })
}

/// The labels of several parts in one label map.
#[derive(Debug, PartialEq)]
struct Merged {
    /// Each name once, with its value.
    labels: Vec<(String, u8)>,
    /// Per part, the value of each channel after the background.
    channels: Vec<Vec<u8>>,
    /// The names more than one part has.
    shared: Vec<String>,
}

/// Merges the parts' labels (each `dataset.json`'s name to channel) as TotalSegmentator
/// merges its five 1.5 mm `total` parts: every name once, numbered 1, 2, ... in the
/// order the parts, and within a part its channels, first give it (TotalSegmentator's
/// `total` numbering for its parts in their order). A name several parts have is one
/// label; where two parts both label a voxel, the later part's label stays, as
/// TotalSegmentator writes each part's labels over the ones before.
fn merge_labels(parts: &[&std::collections::BTreeMap<String, u32>]) -> Result<Merged, ImportError> {
    let mut merged = Merged {
        labels: Vec::new(),
        channels: Vec::new(),
        shared: Vec::new(),
    };
    for (i, part) in parts.iter().enumerate() {
        let mut by_channel: Vec<(&u32, &String)> = part
            .iter()
            .map(|(n, v)| (v, n))
            .filter(|(v, _)| **v != 0)
            .collect();
        by_channel.sort();
        if by_channel
            .iter()
            .enumerate()
            .any(|(c, (v, _))| **v as usize != c + 1)
        {
            return Err(ImportError::Unsupported(format!(
                "part {}: label values are not 1, 2, ... without gaps",
                i + 1
            )));
        }
        let mut channels = Vec::new();
        for (_, name) in by_channel {
            let value = match merged.labels.iter().find(|(n, _)| n == name) {
                Some((_, value)) => {
                    merged.shared.push(name.clone());
                    *value
                }
                None => {
                    let value = u8::try_from(merged.labels.len() + 1).map_err(|_| {
                        ImportError::Unsupported("more than 255 labels in all parts".into())
                    })?;
                    merged.labels.push((name.clone(), value));
                    value
                }
            };
            channels.push(value);
        }
        merged.channels.push(channels);
    }
    Ok(merged)
}

/// The stage 1 and cascade rules of the model in `dir`, its ONNX file copied to `out`.
fn coarse_stage(
    dir: &Path,
    out: &Path,
    frame: Frame,
) -> Result<
    (
        Option<Stage>,
        Option<crate::cascade::manifest::CascadeRules>,
    ),
    ImportError,
> {
    let coarse = Model::load(dir)?;
    let m = coarse.manifest;
    let (Some(mut stage), Some(rules)) = (m.stage1, m.cascade) else {
        return Err(ImportError::Unsupported(format!(
            "{} has no stage 1 to put in front",
            dir.display()
        )));
    };
    let network = &stage.networks()[0];
    let to = out.join("stage1.onnx");
    std::fs::copy(dir.join(&network.file), &to)
        .map_err(|source| ImportError::Write { path: to, source })?;
    stage.file = Some("stage1.onnx".into());
    stage.frame =
        (stage.frame.unwrap_or(m.frame) != frame).then_some(stage.frame.unwrap_or(m.frame));
    Ok((Some(stage), Some(rules)))
}

/// A label of nnU-Net's `dataset.json`, coded as TotalSegmentator codes the class of
/// that name (SNOMED CT type, side, region and colour; spellings of other nnU-Net
/// data sets through [`ALIASES`]), else with a code of segnode's private scheme
/// `99SEGNODE` that says it has none.
fn label(name: &str, value: u8) -> Label {
    let key = normalised(name);
    let key = ALIASES
        .iter()
        .find(|(alias, _)| *alias == key)
        .map_or(key.as_str(), |(_, canonical)| canonical);
    match snomed().iter().find(|c| normalised(&c.name) == key) {
        Some(coded) => Label {
            value,
            name: name.into(),
            category: coded.category.clone(),
            kind: coded.kind.clone(),
            modifier: coded.modifier.clone(),
            region: coded.region.clone(),
            region_modifier: coded.region_modifier.clone(),
            color: coded.color,
        },
        None => Label {
            value,
            name: name.into(),
            category: Code {
                scheme: "SCT".into(),
                value: "91723000".into(),
                meaning: "Anatomical Structure".into(),
            },
            kind: Code {
                scheme: "99SEGNODE".into(),
                value: format!("nnunet-{value}"),
                meaning: name.chars().take(64).collect(),
            },
            modifier: None,
            region: None,
            region_modifier: None,
            // Hues spread by the golden angle, for labels without a known colour.
            color: hsv((f64::from(value) * 137.508) % 360.0),
        },
    }
}

/// A label name in lower case with spaces for underscores and hyphens.
fn normalised(name: &str) -> String {
    name.to_ascii_lowercase().replace(['_', '-'], " ")
}

fn hsv(hue: f64) -> [u8; 3] {
    let (s, v) = (0.6, 0.9);
    let c = v * s;
    let x = c * (1.0 - ((hue / 60.0) % 2.0 - 1.0).abs());
    let (r, g, b) = match (hue / 60.0) as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r, g, b].map(|ch| ((ch + v - c) * 255.0).round() as u8)
}

/// Other data sets' names (normalised) for TotalSegmentator's classes.
const ALIASES: &[(&str, &str)] = &[
    ("right kidney", "kidney right"),
    ("left kidney", "kidney left"),
    ("gall bladder", "gallbladder"),
    ("ivc", "inferior vena cava"),
    ("oesophagus", "esophagus"),
    ("small intestine", "small bowel"),
    ("bladder", "urinary bladder"),
];

/// One class of TotalSegmentator's SNOMED CT mapping.
#[derive(Debug)]
struct Coded {
    name: String,
    category: Code,
    kind: Code,
    modifier: Option<Code>,
    region: Option<Code>,
    region_modifier: Option<Code>,
    color: [u8; 3],
}

/// TotalSegmentator's mapping of its classes to SNOMED CT (see `NOTICE` beside it),
/// read once.
fn snomed() -> &'static [Coded] {
    static CODED: std::sync::OnceLock<Vec<Coded>> = std::sync::OnceLock::new();
    CODED.get_or_init(|| {
        include_str!("totalsegmentator_snomed_mapping.csv")
            .lines()
            .skip(1)
            .filter(|line| !line.trim().is_empty())
            .map(|line| parse_coded(line).unwrap_or_else(|| panic!("bad mapping row {line}")))
            .collect()
    })
}

/// A row: name; category, type, type modifier, region and region modifier (scheme,
/// value, meaning each, empty when absent); "r,g,b".
fn parse_coded(line: &str) -> Option<Coded> {
    let fields = csv_fields(line);
    if fields.len() != 17 {
        return None;
    }
    let code = |i: usize| {
        (!fields[i].is_empty()).then(|| Code {
            scheme: fields[i].clone(),
            value: fields[i + 1].clone(),
            meaning: fields[i + 2].clone(),
        })
    };
    let rgb: Vec<u8> = fields[16]
        .split(',')
        .map(|v| v.trim().parse().ok())
        .collect::<Option<_>>()?;
    Some(Coded {
        name: fields[0].clone(),
        category: code(1)?,
        kind: code(4)?,
        modifier: code(7),
        region: code(10),
        region_modifier: code(13),
        color: rgb.try_into().ok()?,
    })
}

/// The fields of one CSV line; a field in double quotes may hold commas.
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(String::new()),
            c => fields.last_mut().expect("one field at least").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the `model_files` fuzz target: a `transpose_forward` naming an axis
    /// beyond 2 indexed out of bounds (a panic) instead of being refused.
    #[test]
    fn a_transpose_that_is_not_a_permutation_is_refused() {
        let export = |forward: &str, backward: &str| {
            format!(
                r#"{{"dataset": "Dataset1_x", "plans": "nnUNetPlans", "configuration": "3d_fullres", "trainer": "nnUNetTrainer", "folds": [{{"fold": 0, "file": "fold_0.onnx", "max_abs_difference": 0.0}}], "patch_size": [64, 64, 64], "spacing": [3.0, 1.5, 1.5], "transpose_forward": {forward}, "transpose_backward": {backward}, "normalization": "CTNormalization", "clip": [-1000.0, 1000.0], "mean": 0.0, "std": 1.0, "mirror_axes": [], "labels": {{"background": 0, "liver": 1}}}}"#
            )
        };
        for forward in ["[0, 1, 5]", "[0, 0, 1]"] {
            let err = manifest_from_export(&export(forward, "[0, 1, 2]")).unwrap_err();
            assert!(err.to_string().contains("not a permutation"), "{err}");
        }
        let manifest = manifest_from_export(&export("[2, 0, 1]", "[1, 2, 0]")).unwrap();
        assert_eq!(manifest.stage2.transpose, Some([2, 0, 1]));
    }

    #[test]
    fn a_coarse_stage_comes_with_its_rules_and_its_own_frame() {
        let cascade = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/test-cascade");
        let out = tempfile::tempdir().unwrap();
        let sar = Frame::parse("SAR").unwrap();
        let (stage, rules) = coarse_stage(&cascade, out.path(), sar).unwrap();
        let (stage, rules) = (stage.unwrap(), rules.unwrap());
        assert_eq!(stage.file.as_deref(), Some("stage1.onnx"));
        assert_eq!(
            sha256_hex(&std::fs::read(out.path().join("stage1.onnx")).unwrap()),
            stage.sha256.clone().unwrap()
        );
        // The test cascade was made in SPL: stage 1 keeps it in front of a SAR model.
        assert_eq!(stage.frame, Some(Frame::parse("SPL").unwrap()));
        assert!(rules.dilation_voxels > 0);
        let spl = Frame::parse("SPL").unwrap();
        let (same, _) = coarse_stage(&cascade, out.path(), spl).unwrap();
        assert_eq!(same.unwrap().frame, None);
        assert!(coarse_stage(out.path(), out.path(), sar).is_err());
    }

    #[test]
    fn parts_merge_into_one_label_map_as_totalsegmentator_merges_them() {
        let part = |names: &[&str]| -> std::collections::BTreeMap<String, u32> {
            std::iter::once(("background".to_string(), 0))
                .chain(names.iter().zip(1..).map(|(n, v)| (n.to_string(), v)))
                .collect()
        };
        let organs = part(&["spleen", "kidney_right", "liver"]);
        let spine = part(&["vertebrae_L1", "liver", "sacrum"]);
        let merged = merge_labels(&[&organs, &spine]).unwrap();
        assert_eq!(
            merged.labels,
            [
                ("spleen".to_string(), 1),
                ("kidney_right".to_string(), 2),
                ("liver".to_string(), 3),
                ("vertebrae_L1".to_string(), 4),
                ("sacrum".to_string(), 5),
            ]
        );
        assert_eq!(merged.channels, [vec![1, 2, 3], vec![4, 3, 5]]);
        assert_eq!(merged.shared, ["liver"]);
        let mut gap = part(&["spleen"]);
        gap.insert("liver".into(), 3);
        assert!(merge_labels(&[&organs, &gap]).is_err());
        let many: Vec<String> = (0..200).map(|i| format!("class {i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let big = part(&many);
        let other: Vec<String> = (0..100).map(|i| format!("other {i}")).collect();
        let other: Vec<&str> = other.iter().map(String::as_str).collect();
        assert!(merge_labels(&[&big, &part(&other)]).is_err());
    }

    #[test]
    fn every_class_of_the_mapping_reads() {
        assert_eq!(snomed().len(), 170);
        assert!(snomed().iter().all(|c| c.kind.scheme == "SCT"));
        let paired = snomed().iter().find(|c| c.name == "rib_left_1").unwrap();
        assert_eq!(paired.modifier.as_ref().unwrap().meaning, "Left");
    }

    #[test]
    fn labels_get_snomed_codes_or_say_they_have_none() {
        let right = label("kidney_right", 2);
        assert_eq!(
            (right.kind.scheme.as_str(), right.kind.value.as_str()),
            ("SCT", "64033007")
        );
        assert_eq!(right.modifier.as_ref().unwrap().value, "24028007");
        assert_eq!(right.name, "kidney_right");
        // Another data set's spelling, the same class.
        let other = label("Right-Kidney", 3);
        assert_eq!((other.kind, other.modifier), (right.kind, right.modifier));
        // A vessel inside an organ: its type, and where it lies.
        let vessels = label("liver_vessels", 4);
        assert_eq!(vessels.kind.value, "59820001");
        assert_eq!(vessels.region.unwrap().value, "10200004");
        let odd = label("lesion_candidates", 9);
        assert_eq!(odd.kind.scheme, "99SEGNODE");
        assert_eq!(odd.kind.meaning, "lesion_candidates");
        assert_ne!(odd.color, label("scar", 10).color);
    }
}
