//! The model manifest, `onnx/<model>/model.toml`: what a cascade is (two stages, their
//! ONNX files with checksums, grids, HU windows, patches and blending), how the stage-1
//! region becomes the stage-2 region, the post-processing, and the labels with their
//! coded meaning (SNOMED CT) and display colours. Parsed strictly and validated; the
//! files and checksums are verified before any session is created.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
    pub stage1: Stage,
    pub stage2: Stage,
    pub cascade: CascadeRules,
    #[serde(default)]
    pub postprocess: PostProcess,
    pub labels: Vec<Label>,
}

/// One network and how to feed it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    /// ONNX file, relative to the model folder.
    pub file: String,
    /// Its SHA-256, hex.
    pub sha256: String,
    pub input: String,
    pub output: String,
    /// Target voxel spacing (z, y, x) in mm; or `downsample` instead.
    pub spacing_mm: Option<[f64; 3]>,
    /// Downsampling factor per axis from the source spacing (1 = native grid).
    pub downsample: Option<f64>,
    /// HU window [low, high] the input is clipped to.
    pub hu_window: [f32; 2],
    pub normalization: Normalization,
    /// Patch size (z, y, x) of the sliding window; the network's input shape.
    pub patch: [usize; 3],
    /// Fraction of a patch that neighbouring patches overlap, in [0, 0.9].
    pub overlap: f64,
    pub blending: Blending,
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
    /// Display colour, sRGB.
    pub color: [u8; 3],
}

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
    /// Loads and validates `dir/model.toml` and checks both ONNX files' checksums.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join("model.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: Manifest = toml::from_str(&text).map_err(|source| ManifestError::Parse {
            path: path.clone(),
            source: Box::new(source),
        })?;
        manifest
            .validate()
            .map_err(|reason| ManifestError::Invalid {
                path: path.clone(),
                reason,
            })?;
        let model = Self {
            dir: dir.to_path_buf(),
            manifest,
        };
        for stage in [&model.manifest.stage1, &model.manifest.stage2] {
            model.verify(stage)?;
        }
        Ok(model)
    }

    pub fn stage_path(&self, stage: &Stage) -> PathBuf {
        self.dir.join(&stage.file)
    }

    fn verify(&self, stage: &Stage) -> Result<(), ManifestError> {
        let path = self.stage_path(stage);
        let bytes =
            std::fs::read(&path).map_err(|_| ManifestError::MissingFile { path: path.clone() })?;
        let found = format!("{:x}", Sha256::digest(&bytes));
        if !found.eq_ignore_ascii_case(&stage.sha256) {
            return Err(ManifestError::Checksum {
                path,
                expected: stage.sha256.clone(),
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

impl Manifest {
    fn validate(&self) -> Result<(), String> {
        for (name, s) in [("stage1", &self.stage1), ("stage2", &self.stage2)] {
            match (s.spacing_mm, s.downsample) {
                (Some(sp), None) if sp.iter().all(|v| *v > 0.0 && v.is_finite()) => {}
                (None, Some(f)) if f > 0.0 && f.is_finite() => {}
                _ => {
                    return Err(format!(
                        "{name}: give either spacing_mm (positive) or downsample (positive)"
                    ));
                }
            }
            if s.hu_window[0] >= s.hu_window[1] {
                return Err(format!(
                    "{name}: hu_window must be [low, high] with low < high"
                ));
            }
            if s.patch.contains(&0) {
                return Err(format!("{name}: patch sizes must be positive"));
            }
            if !(0.0..=0.9).contains(&s.overlap) {
                return Err(format!("{name}: overlap must be within 0..=0.9"));
            }
            if s.sha256.len() != 64 || !s.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(format!("{name}: sha256 must be 64 hex digits"));
            }
        }
        if self.labels.is_empty() {
            return Err("no labels".into());
        }
        let mut values: Vec<u8> = self.labels.iter().map(|l| l.value).collect();
        values.sort_unstable();
        if values[0] == 0 || values.windows(2).any(|w| w[0] == w[1]) {
            return Err("label values must be unique and 1..=255".into());
        }
        Ok(())
    }
}

impl Stage {
    /// The stage's voxel spacing for a source of `source` spacing.
    pub fn spacing(&self, source: [f64; 3]) -> [f64; 3] {
        match (self.spacing_mm, self.downsample) {
            (Some(s), _) => s,
            (None, Some(f)) => source.map(|v| v * f),
            (None, None) => source,
        }
    }
}
