//! The model manifest, `onnx/<model>/model.toml`: what a cascade is (an optional coarse
//! stage 1 and a stage 2, their ONNX files with checksums, grids, HU windows, patches
//! and blending), how the stage-1 region becomes the stage-2 region, the
//! post-processing, and the labels with their coded meaning (SNOMED CT) and display
//! colours. A stage runs segnode's own pipeline or nnU-Net v2's ([`Pipeline`]); an
//! nnU-Net stage may be an ensemble of folds. Parsed strictly and validated; the files
//! and checksums are verified before any session is created.

use std::path::{Path, PathBuf};

use crate::checksum::sha256_hex;
use serde::{Deserialize, Serialize};

use super::frame::Frame;
use super::ops::{Blending, Normalization};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// The anatomical frame the networks were trained in: the patient direction each
    /// array axis (z, y, x) grows towards, e.g. "SPL" (head, back, left).
    pub frame: Frame,
    /// The coarse stage that finds the region; without it stage 2 runs on the whole
    /// series (a single-stage model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage1: Option<Stage>,
    pub stage2: Stage,
    /// The further parts of a multi-part model (TotalSegmentator's five 1.5 mm `total`
    /// networks): nnU-Net stages run after stage 2 on the same series, in order, each
    /// writing its labels (through its `channels`) over what the parts before it wrote,
    /// as TotalSegmentator merges its parts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<Stage>,
    /// How stage 1's region restricts stage 2; required with a stage 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeRules>,
    #[serde(default)]
    pub postprocess: PostProcess,
    pub labels: Vec<Label>,
}

/// How a stage turns a volume into labels.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pipeline {
    /// segnode's own (see [`super::ops`]): linear resampling, windowed HU, its sliding
    /// window over the stage-1 region.
    #[default]
    Segnode,
    /// nnU-Net v2's inference, step for step (see [`super::nnunet`]): transpose, crop to
    /// the non-zero box, normalise, third-order spline resampling, nnU-Net's sliding
    /// window and Gaussian, mirroring, the folds' mean, logits back by linear resampling.
    Nnunet,
}

/// One ONNX file and its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// ONNX file, relative to the model folder.
    pub file: String,
    /// Its SHA-256, hex.
    pub sha256: String,
}

/// One network (or an ensemble of folds) and how to feed it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    #[serde(default, skip_serializing_if = "is_default")]
    pub pipeline: Pipeline,
    /// The network: one ONNX file ...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// ... or an ensemble whose logits are averaged (nnU-Net's folds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub folds: Vec<Network>,
    pub input: String,
    pub output: String,
    /// Target voxel spacing (z, y, x) in mm; or `downsample` instead. For an nnU-Net
    /// stage, in its transposed axis order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spacing_mm: Option<[f64; 3]>,
    /// Downsampling factor per axis from the source spacing (1 = native grid).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downsample: Option<f64>,
    /// HU window [low, high] the input is clipped to (nnU-Net's CT normalisation: the
    /// training foreground's 0.5 and 99.5 percentiles).
    pub hu_window: [f32; 2],
    pub normalization: Normalization,
    /// Mean and standard deviation of `normalization = "ct"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f32>,
    /// Patch size (z, y, x) of the sliding window; the network's input shape.
    pub patch: [usize; 3],
    /// Fraction of a patch that neighbouring patches overlap, in [0, 0.9].
    pub overlap: f64,
    pub blending: Blending,
    /// nnU-Net's `transpose_forward`: the network's axis `i` is the frame's axis
    /// `transpose[i]` (its `transpose_backward` is the inverse permutation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transpose: Option<[usize; 3]>,
    /// Test-time mirroring: the axes (of the network's input) whose every combination
    /// of flips is also predicted and averaged in; empty for none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirror_axes: Vec<usize>,
    /// The label value of each output channel after the background, where they are
    /// not the same (the parts of a multi-part model); empty: channel `c` is label `c`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<u8>,
    /// Stage 1 only: the frame its network was trained in, where not the model's (a
    /// coarse stage of another model in front of an imported one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame: Option<Frame>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// How stage 1 restricts stage 2.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CascadeRules {
    /// Dilation of the stage-1 candidate region, in stage-2 voxels (box).
    pub dilation_voxels: usize,
    /// Intersect the region with a body mask (threshold, erosion, largest component,
    /// dilation, hole filling).
    pub body_mask: bool,
    /// HU threshold of the body mask.
    #[serde(default = "default_body_threshold")]
    pub body_threshold_hu: f32,
}

fn default_body_threshold() -> f32 {
    -500.0
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostProcess {
    /// Keep only the largest 6-connected component of each label.
    #[serde(default)]
    pub largest_component: bool,
    /// Fill holes (background enclosed by a label) with that label.
    #[serde(default)]
    pub fill_holes: bool,
}

/// A coded concept (PS3.3 8.8): scheme designator, code value, code meaning.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Code {
    pub scheme: String,
    pub value: String,
    pub meaning: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Label {
    /// The value in the label map (1..=255), the stage-2 output channel.
    pub value: u8,
    pub name: String,
    pub category: Code,
    #[serde(rename = "type")]
    pub kind: Code,
    /// What qualifies the type, such as the side of a paired organ (SNOMED CT Left or
    /// Right: "Kidney" of type, "Right" of modifier, as TotalSegmentator codes them).
    #[serde(
        default,
        rename = "type_modifier",
        skip_serializing_if = "Option::is_none"
    )]
    pub modifier: Option<Code>,
    /// Where the structure lies when its type does not say (the liver for a "Blood
    /// vessel"), with what qualifies that place (its side).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<Code>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region_modifier: Option<Code>,
    /// Display colour, sRGB.
    pub color: [u8; 3],
}

impl Label {
    /// The side of the body the label names, if any: its type's modifier, or its
    /// region's (SNOMED CT Left 7771000, Right 24028007).
    pub fn laterality(&self) -> Option<&Code> {
        self.modifier
            .iter()
            .chain(&self.region_modifier)
            .find(|c| c.scheme == "SCT" && matches!(c.value.as_str(), LEFT | RIGHT))
    }
}

/// SNOMED CT Left and Right, as type and region modifiers.
pub const LEFT: &str = "7771000";
pub const RIGHT: &str = "24028007";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read model manifest {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("model manifest {path} is not valid")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("model manifest {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("model file {path} is missing")]
    MissingFile { path: PathBuf },
    #[error("model file {path} has SHA-256 {found}, the manifest says {expected}")]
    Checksum {
        path: PathBuf,
        expected: String,
        found: String,
    },
}

/// A manifest and the folder it came from.
#[derive(Debug, Clone)]
pub struct Model {
    pub dir: PathBuf,
    pub manifest: Manifest,
}

impl Model {
    /// Loads and validates `dir/model.toml` and checks every ONNX file's checksum.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("model.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest = Manifest::from_toml(&text).map_err(|e| match e {
            ManifestText::Parse(source) => ManifestError::Parse {
                path: path.clone(),
                source,
            },
            ManifestText::Invalid(reason) => ManifestError::Invalid {
                path: path.clone(),
                reason,
            },
        })?;
        let model = Self {
            dir: dir.to_path_buf(),
            manifest,
        };
        for network in model.manifest.networks() {
            model.verify(&network)?;
        }
        Ok(model)
    }

    pub fn path(&self, network: &Network) -> PathBuf {
        self.dir.join(&network.file)
    }

    fn verify(&self, network: &Network) -> Result<(), ManifestError> {
        let path = self.path(network);
        let bytes =
            std::fs::read(&path).map_err(|_| ManifestError::MissingFile { path: path.clone() })?;
        let found = sha256_hex(&bytes);
        if !found.eq_ignore_ascii_case(&network.sha256) {
            return Err(ManifestError::Checksum {
                path,
                expected: network.sha256.clone(),
                found,
            });
        }
        Ok(())
    }

    /// The stage-2 output channels: background plus one per label, in value order.
    pub fn classes(&self) -> usize {
        self.manifest
            .labels
            .iter()
            .map(|l| usize::from(l.value))
            .max()
            .unwrap_or(0)
            + 1
    }
}

/// Why a manifest's text is not a manifest.
#[derive(Debug)]
pub enum ManifestText {
    Parse(Box<toml::de::Error>),
    Invalid(String),
}

impl Manifest {
    /// Parses and validates a `model.toml`.
    pub fn from_toml(text: &str) -> Result<Self, ManifestText> {
        let manifest: Manifest =
            toml::from_str(text).map_err(|e| ManifestText::Parse(Box::new(e)))?;
        manifest.validate().map_err(ManifestText::Invalid)?;
        Ok(manifest)
    }

    /// The stages that exist, with their names: stage 1 (if any), stage 2, its parts.
    pub fn stages(&self) -> Vec<(String, &Stage)> {
        let mut stages = Vec::new();
        if let Some(s) = &self.stage1 {
            stages.push(("stage1".to_string(), s));
        }
        stages.push(("stage2".to_string(), &self.stage2));
        for (i, part) in self.parts.iter().enumerate() {
            stages.push((format!("parts[{i}]"), part));
        }
        stages
    }

    /// Stage 2 and the further parts, in the order they run.
    pub fn stage2_parts(&self) -> impl Iterator<Item = &Stage> {
        std::iter::once(&self.stage2).chain(&self.parts)
    }

    /// Every ONNX file of the model, stage 1's first.
    pub fn networks(&self) -> Vec<Network> {
        self.stages()
            .into_iter()
            .flat_map(|(_, s)| s.networks())
            .collect()
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.stage1.is_some() != self.cascade.is_some() {
            return Err("a [stage1] needs [cascade] rules, and [cascade] needs a [stage1]".into());
        }
        if self
            .stage1
            .as_ref()
            .is_some_and(|s| s.pipeline != Pipeline::Segnode)
        {
            return Err("stage1: only the segnode pipeline finds a region".into());
        }
        for (name, s) in self.stages() {
            s.validate().map_err(|reason| format!("{name}: {reason}"))?;
        }
        if self.stage2_parts().any(|s| s.frame.is_some()) {
            return Err("stage2: its frame is the model's `frame`".into());
        }
        if self.stage1.as_ref().is_some_and(|s| !s.channels.is_empty()) {
            return Err("stage1: channels belong to stage 2 and its parts".into());
        }
        if !self.parts.is_empty() && self.stage2_parts().any(|s| s.pipeline != Pipeline::Nnunet) {
            return Err("parts: only nnunet stages are merged as parts".into());
        }
        if self.labels.is_empty() {
            return Err("no labels".into());
        }
        let mut values: Vec<u8> = self.labels.iter().map(|l| l.value).collect();
        values.sort_unstable();
        if values[0] == 0 || values.windows(2).any(|w| w[0] == w[1]) {
            return Err("label values must be unique and 1..=255".into());
        }
        for (name, s) in self.stages() {
            if let Some(v) = s.channels.iter().find(|v| values.binary_search(v).is_err()) {
                return Err(format!("{name}: channel label {v} is not among the labels"));
            }
        }
        Ok(())
    }
}

impl Stage {
    /// The stage's networks: its one file, or its folds.
    pub fn networks(&self) -> Vec<Network> {
        match (&self.file, &self.sha256) {
            (Some(file), Some(sha256)) => vec![Network {
                file: file.clone(),
                sha256: sha256.clone(),
            }],
            _ => self.folds.clone(),
        }
    }

    /// The output channels of this stage 2 (or part) of a model with `classes`
    /// channels: background and its `channels`, else the model's.
    pub fn classes(&self, classes: usize) -> usize {
        if self.channels.is_empty() {
            classes
        } else {
            self.channels.len() + 1
        }
    }

    /// The label value of each output channel (background 0).
    pub fn label_values(&self, classes: usize) -> Vec<u8> {
        if self.channels.is_empty() {
            (0..classes).map(|c| c as u8).collect()
        } else {
            std::iter::once(0)
                .chain(self.channels.iter().copied())
                .collect()
        }
    }

    /// The (mean, std) of `normalization = "ct"`.
    pub fn stats(&self) -> Option<[f32; 2]> {
        self.mean.zip(self.std).map(|(m, s)| [m, s])
    }

    /// The network's axis order: nnU-Net's `transpose_forward`, else the frame's.
    pub fn transpose(&self) -> [usize; 3] {
        self.transpose.unwrap_or([0, 1, 2])
    }

    fn validate(&self) -> Result<(), String> {
        let s = self;
        match (&s.file, &s.sha256, s.folds.is_empty()) {
            (Some(_), Some(_), true) | (None, None, false) => {}
            _ => return Err("give either file and sha256, or folds".into()),
        }
        for network in s.networks() {
            if network.sha256.len() != 64 || !network.sha256.bytes().all(|b| b.is_ascii_hexdigit())
            {
                return Err(format!("{}: sha256 must be 64 hex digits", network.file));
            }
        }
        match (s.spacing_mm, s.downsample) {
            (Some(sp), None) if sp.iter().all(|v| *v > 0.0 && v.is_finite()) => {}
            (None, Some(f)) if f > 0.0 && f.is_finite() => {}
            _ => return Err("give either spacing_mm (positive) or downsample (positive)".into()),
        }
        if s.hu_window[0] >= s.hu_window[1] {
            return Err("hu_window must be [low, high] with low < high".into());
        }
        if s.patch.contains(&0) {
            return Err("patch sizes must be positive".into());
        }
        if !(0.0..=0.9).contains(&s.overlap) {
            return Err("overlap must be within 0..=0.9".into());
        }
        if s.normalization == Normalization::Ct
            && !(s.mean.is_some_and(f32::is_finite) && s.std.is_some_and(|v| v.is_finite()))
        {
            return Err("normalization \"ct\" needs a finite mean and std".into());
        }
        let mut axes = s.transpose();
        axes.sort_unstable();
        if axes != [0, 1, 2] {
            return Err("transpose must be a permutation of [0, 1, 2]".into());
        }
        let mut mirror = s.mirror_axes.clone();
        mirror.sort_unstable();
        mirror.dedup();
        if mirror.len() != s.mirror_axes.len() || mirror.iter().any(|a| *a > 2) {
            return Err("mirror_axes must be distinct axes among 0, 1, 2".into());
        }
        if s.pipeline == Pipeline::Segnode {
            if s.networks().len() != 1 || s.transpose.is_some() || !s.mirror_axes.is_empty() {
                return Err(
                    "folds, transpose and mirror_axes belong to the nnunet pipeline".into(),
                );
            }
        } else if s.spacing_mm.is_none() {
            return Err("the nnunet pipeline needs spacing_mm".into());
        }
        Ok(())
    }

    /// The stage's voxel spacing for a source of `source` spacing.
    pub fn spacing(&self, source: [f64; 3]) -> [f64; 3] {
        match (self.spacing_mm, self.downsample) {
            (Some(s), _) => s,
            (None, Some(f)) => source.map(|v| v * f),
            (None, None) => source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Manifest {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/nnunet-reference/model.toml");
        toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn parts_are_nnunet_stages_whose_channels_name_labels_of_the_model() {
        let mut m = reference();
        let mut part = m.stage2.clone();
        part.channels = vec![2, 1];
        m.parts = vec![part];
        assert_eq!(m.validate(), Ok(()));
        assert_eq!(m.parts[0].classes(m.labels.len() + 1), 3);
        assert_eq!(m.parts[0].label_values(7), [0, 2, 1]);
        assert_eq!(m.stage2.label_values(3), [0, 1, 2]);
        assert_eq!(m.stages().last().unwrap().0, "parts[0]");

        m.parts[0].channels = vec![2, 9];
        let err = m.validate().unwrap_err();
        assert!(err.contains("parts[0]: channel label 9"), "{err}");

        m.parts[0].channels.clear();
        m.stage2.pipeline = Pipeline::Segnode;
        m.stage2.folds.truncate(1);
        m.stage2.transpose = None;
        m.stage2.mirror_axes.clear();
        assert!(m.validate().unwrap_err().contains("only nnunet stages"));
    }
}
