//! Processing one series: its files → volume → cascade → SEG, measurement report and
//! (when asked) key images. The node's workers and
//! `segnode run` both call [`process`], so an offline result is the node's result for
//! the same files, down to the SEG's UIDs. Blocking (decoding and inference): the
//! node runs it on a blocking thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::cascade::{Cascade, CascadeError, Scope, Segmentation};
use crate::dicom::{Uid, part10};
use crate::keyimages::{self, KeyImage, KeyImageError};
use crate::seg::{self, EncodedSeg, Equipment, SegError, SegType};
use crate::sr::{self, EncodedSr, SrError};
use crate::volume::{self, Tolerances, Volume, VolumeError};

/// A series to process: each instance's SOP Instance UID, the SHA-256 of its data set
/// (what the sender sent) and its file.
#[derive(Debug, Clone)]
pub struct Source {
    instances: Vec<SourceInstance>,
}

#[derive(Debug, Clone)]
struct SourceInstance {
    sop_instance_uid: Uid,
    sha256: String,
    file: PathBuf,
}

impl Source {
    /// From (SOP Instance UID, data set SHA-256, file) of each instance, in any order.
    pub fn new(instances: impl IntoIterator<Item = (Uid, String, PathBuf)>) -> Self {
        let mut instances: Vec<_> = instances
            .into_iter()
            .map(|(sop_instance_uid, sha256, file)| SourceInstance {
                sop_instance_uid,
                sha256,
                file,
            })
            .collect();
        instances.sort_by(|a, b| a.sop_instance_uid.cmp(&b.sop_instance_uid));
        Self { instances }
    }

    /// From Part 10 files as they lie on disk (`segnode run`): each file's SOP Instance
    /// UID and data set checksum are read from it, as the node records them on receipt.
    pub fn from_files(files: &[PathBuf]) -> Result<Self, StageError> {
        let instances = files
            .iter()
            .map(|f| {
                let unreadable = |reason: String| StageError::Unreadable {
                    path: f.display().to_string(),
                    reason,
                };
                let bytes = std::fs::read(f).map_err(|e| unreadable(e.to_string()))?;
                let content = part10::content(&bytes).map_err(|e| unreadable(e.to_string()))?;
                let uid = Uid::parse(&content.sop_instance_uid)
                    .map_err(|e| unreadable(format!("Media Storage SOP Instance UID: {e}")))?;
                Ok((uid, content.sha256, f.clone()))
            })
            .collect::<Result<Vec<_>, StageError>>()?;
        Ok(Self::new(instances))
    }

    /// The identity of the series' content, from which the SEG's UIDs derive.
    fn key(&self) -> String {
        self.instances
            .iter()
            .map(|i| format!("{}={}", i.sop_instance_uid, i.sha256))
            .collect::<Vec<_>>()
            .join(";")
    }

    fn files(&self) -> Vec<PathBuf> {
        self.instances.iter().map(|i| i.file.clone()).collect()
    }

    /// "instance <UID>" for a file of the series, as failure reasons name it.
    fn names(&self) -> HashMap<String, String> {
        self.instances
            .iter()
            .map(|i| {
                let name = format!("instance {}", i.sop_instance_uid);
                (i.file.display().to_string(), name)
            })
            .collect()
    }
}

/// How to process: the smallest series accepted, where stage 2 runs, which SEG types
/// to encode and the equipment that the SEG names.
#[derive(Debug, Clone)]
pub struct Options {
    pub min_slices: usize,
    pub scope: Scope,
    pub seg_types: Vec<SegType>,
    /// Whether to render key images too.
    pub key_images: bool,
    pub equipment: Equipment,
}

/// Why processing stopped. Each failure classifies itself: the stage it stopped in, a
/// stable code for the job record and the API, and whether processing the same series
/// again may succeed (the node's trouble) or will fail the same way (the series').
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("volume: cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    #[error("volume: {0}")]
    Volume(VolumeError),
    #[error("cascade: {0}")]
    Cascade(CascadeError),
    #[error("seg: {0}")]
    Seg(SegError),
    #[error("sr: {0}")]
    Sr(SrError),
    #[error("key_images: {0}")]
    KeyImages(KeyImageError),
    #[error(
        "cascade: this worker's model sessions were lost after an inference panic; restart the node"
    )]
    ModelLost,
    #[error("{stage}: {message}")]
    Internal {
        stage: &'static str,
        message: String,
    },
}

impl StageError {
    pub fn stage(&self) -> &'static str {
        match self {
            StageError::Unreadable { .. } | StageError::Volume(_) => "volume",
            StageError::Cascade(_) | StageError::ModelLost => "cascade",
            StageError::Seg(_) => "seg",
            StageError::Sr(_) => "sr",
            StageError::KeyImages(_) => "key_images",
            StageError::Internal { stage, .. } => stage,
        }
    }

    /// The stable code a job records.
    pub fn code(&self) -> &'static str {
        match self {
            StageError::Unreadable { .. } => "unreadable",
            StageError::Volume(e) => e.code(),
            StageError::Cascade(e) => e.code(),
            StageError::Seg(_) | StageError::Sr(_) | StageError::KeyImages(_) => "encode_failed",
            StageError::ModelLost => "model_unavailable",
            StageError::Internal { .. } => "internal",
        }
    }

    /// Whether an operator's retry of the same series may succeed.
    pub fn retryable(&self) -> bool {
        match self {
            StageError::Cascade(e) => e.retryable(),
            StageError::ModelLost | StageError::Internal { .. } => true,
            StageError::Unreadable { .. }
            | StageError::Volume(_)
            | StageError::Seg(_)
            | StageError::Sr(_)
            | StageError::KeyImages(_) => false,
        }
    }
}

/// What processing produced. `segmentation` is `None` without a model; `segs` is
/// empty when nothing was found.
pub struct Processed {
    pub volume: Volume,
    pub segmentation: Option<Segmentation>,
    /// One SEG per requested type, in the order of [`Options::seg_types`].
    pub segs: Vec<(SegType, EncodedSeg)>,
    /// The measurement report of the first SEG's segments.
    pub sr: Option<EncodedSr>,
    /// Key images, when asked for.
    pub key_images: Vec<KeyImage>,
    /// Per-stage timings and results.
    pub summary: serde_json::Value,
}

/// Processes one series. A failure names its stage, and names files by SOP Instance
/// UID; `summary` in the error path is not kept (the caller records the failure).
pub fn process(
    source: &Source,
    cascade: Option<&mut Cascade>,
    options: &Options,
) -> Result<Processed, StageError> {
    let mut summary = serde_json::json!({ "timings_ms": {} });
    let t = Instant::now();
    let volume = volume::assemble(&source.files(), options.min_slices, &Tolerances::default())
        .map_err(|e| {
            let names = source.names();
            StageError::Volume(e.renamed(|path| names.get(path).cloned()))
        })?;
    summary["timings_ms"]["volume"] = (t.elapsed().as_millis() as u64).into();
    let (min, max, mean) = volume.hu_stats();
    summary["volume"] = serde_json::json!({
        "shape": volume.shape,
        "spacing_mm": volume.geometry.spacing,
        "origin_mm": volume.geometry.origin,
        "hu": { "min": min, "max": max, "mean": mean },
    });
    let Some(cascade) = cascade else {
        return Ok(Processed {
            volume,
            segmentation: None,
            segs: Vec::new(),
            sr: None,
            key_images: Vec::new(),
            summary,
        });
    };
    let t = Instant::now();
    let segmentation = cascade
        .run_scoped(&volume, options.scope)
        .map_err(StageError::Cascade)?;
    summary["timings_ms"]["cascade"] = (t.elapsed().as_millis() as u64).into();
    summary["cascade"] = serde_json::to_value(&segmentation.summary).unwrap_or_default();
    if segmentation.summary.empty {
        return Ok(Processed {
            volume,
            segmentation: Some(segmentation),
            segs: Vec::new(),
            sr: None,
            key_images: Vec::new(),
            summary,
        });
    }
    let t = Instant::now();
    let key = source.key();
    let segs = options
        .seg_types
        .iter()
        .map(|&seg_type| {
            seg::encode(
                &volume,
                &segmentation.labels,
                &cascade.model.manifest,
                seg_type,
                &options.equipment,
                &key,
            )
            .map(|encoded| (seg_type, encoded))
            .map_err(StageError::Seg)
        })
        .collect::<Result<Vec<_>, _>>()?;
    summary["timings_ms"]["seg"] = (t.elapsed().as_millis() as u64).into();
    let (_, first) = &segs[0];
    summary["seg"] = serde_json::json!({
        "sop_instance_uid": first.sop_instance_uid,
        "series_instance_uid": first.series_instance_uid,
        "sop_class_uid": first.sop_class_uid,
        "frames": first.frames,
        "bytes": first.file.len(),
    });
    let t = Instant::now();
    let model = &cascade.model.manifest;
    let organs = sr::measure(&volume, &segmentation.labels, model, first);
    let report =
        sr::encode(&volume, &organs, first, model, &options.equipment).map_err(StageError::Sr)?;
    summary["timings_ms"]["sr"] = (t.elapsed().as_millis() as u64).into();
    summary["organs"] = serde_json::to_value(&organs).unwrap_or_default();
    let key_images = if options.key_images {
        let t = Instant::now();
        let labels = &segmentation.labels;
        let images = keyimages::encode(&volume, labels, model, &organs, first, &options.equipment)
            .map_err(StageError::KeyImages)?;
        summary["timings_ms"]["key_images"] = (t.elapsed().as_millis() as u64).into();
        summary["key_images"] = images
            .iter()
            .map(
                |k| serde_json::json!({ "sop_instance_uid": k.sop_instance_uid, "slice": k.slice }),
            )
            .collect();
        images
    } else {
        Vec::new()
    };
    summary["sr"] = serde_json::json!({
        "sop_instance_uid": report.sop_instance_uid,
        "series_instance_uid": report.series_instance_uid,
        "bytes": report.file.len(),
    });
    Ok(Processed {
        volume,
        segmentation: Some(segmentation),
        segs,
        sr: Some(report),
        key_images,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_in_uid_order_whatever_the_order_given() {
        let uid = |s| Uid::parse(s).unwrap();
        let a = Source::new([
            (uid("1.2.10"), "b".to_string(), PathBuf::from("x")),
            (uid("1.2.9"), "a".to_string(), PathBuf::from("y")),
        ]);
        assert_eq!(a.key(), "1.2.10=b;1.2.9=a");
        assert_eq!(a.files(), [PathBuf::from("x"), PathBuf::from("y")]);
        assert_eq!(a.names()["y"], "instance 1.2.9");
    }

    #[test]
    fn an_unreadable_file_is_a_volume_failure_naming_it() {
        let e = Source::from_files(&[PathBuf::from("/nonexistent/slice.dcm")]).unwrap_err();
        assert_eq!(
            (e.stage(), e.code(), e.retryable()),
            ("volume", "unreadable", false)
        );
        assert!(
            e.to_string()
                .starts_with("volume: cannot read /nonexistent/slice.dcm"),
            "{e}"
        );
    }
}
