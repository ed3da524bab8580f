//! Processing one series: its files → volume → cascade → SEG, measurement report and
//! (when asked) key images. The node's workers and
//! `segnode run` both call [`process`], so an offline result is the node's result for
//! the same files, down to the SEG's UIDs. Blocking (decoding and inference): the
//! node runs it on a blocking thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::cascade::manifest::Manifest;
use crate::cascade::{Cascade, CascadeError, Scope, Segmentation};
use crate::dicom::{Uid, part10};
use crate::keyimages::{self, KeyImage, KeyImageError};
use crate::seg::{self, EncodedSeg, Equipment, SegError, SegType};
use crate::sr::{self, EncodedSr, Organ, SrError};
use crate::volume::{self, Tolerances, Volume, VolumeError};

use super::summary::{JobSummary, KeyImageSummary, SegSummary, SrSummary, Stage, VolumeSummary};

/// A series to process: each instance's SOP Instance UID, the SHA-256 of its data set
/// (what the sender sent) and its file.
#[derive(Debug, Clone)]
pub struct Source {
    instances: Vec<SourceFile>,
}

#[derive(Debug, Clone)]
struct SourceFile {
    sop_instance_uid: Uid,
    sha256: String,
    file: PathBuf,
}

impl Source {
    /// From (SOP Instance UID, data set SHA-256, file) of each instance, in any order.
    pub fn new(instances: impl IntoIterator<Item = (Uid, String, PathBuf)>) -> Self {
        let mut instances: Vec<_> = instances
            .into_iter()
            .map(|(sop_instance_uid, sha256, file)| SourceFile {
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
    /// Whether organs whose result failed its checks go into the SEG, the report's
    /// measurements and the key images (`[review] deliver_failed_organs`).
    pub deliver_failed_organs: bool,
    /// The labels delivered, by name (`[model] labels`; `None`: all).
    pub labels: Option<Vec<String>>,
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
    Internal { stage: Stage, message: String },
}

impl StageError {
    pub fn stage(&self) -> Stage {
        match self {
            StageError::Unreadable { .. } | StageError::Volume(_) => Stage::Volume,
            StageError::Cascade(_) | StageError::ModelLost => Stage::Cascade,
            StageError::Seg(_) => Stage::Seg,
            StageError::Sr(_) => Stage::Sr,
            StageError::KeyImages(_) => Stage::KeyImages,
            StageError::Internal { stage, .. } => *stage,
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
/// empty when nothing was found, or when every organ was left out (the report then
/// says so).
pub struct Processed {
    pub volume: Volume,
    pub segmentation: Option<Segmentation>,
    /// One SEG per requested type, in the order of [`Options::seg_types`].
    pub segs: Vec<(SegType, EncodedSeg)>,
    /// The measurement report of the first SEG's segments and of the organs left out.
    pub sr: Option<EncodedSr>,
    /// Key images, when asked for.
    pub key_images: Vec<KeyImage>,
    /// Per-stage timings and results.
    pub summary: JobSummary,
}

/// Processes one series. A failure names its stage, and names files by SOP Instance
/// UID; `summary` in the error path is not kept (the caller records the failure).
pub fn process(
    source: &Source,
    cascade: Option<&mut Cascade>,
    options: &Options,
) -> Result<Processed, StageError> {
    let mut summary = JobSummary::default();
    let t = Instant::now();
    let volume = volume::assemble(&source.files(), options.min_slices, &Tolerances::default())
        .map_err(|e| {
            let names = source.names();
            StageError::Volume(e.renamed(|path| names.get(path).cloned()))
        })?;
    summary.time(Stage::Volume, t);
    summary.volume = Some(VolumeSummary {
        shape: volume.shape,
        spacing_mm: volume.geometry.spacing,
        origin_mm: volume.geometry.origin,
        hu: volume.hu_stats(),
    });
    let nothing = |volume, segmentation, summary| Processed {
        volume,
        segmentation,
        segs: Vec::new(),
        sr: None,
        key_images: Vec::new(),
        summary,
    };
    let Some(cascade) = cascade else {
        return Ok(nothing(volume, None, summary));
    };
    let t = Instant::now();
    let segmentation = cascade
        .run_scoped(&volume, options.scope)
        .map_err(StageError::Cascade)?;
    summary.time(Stage::Cascade, t);
    summary.cascade = Some(segmentation.summary.clone());
    if segmentation.summary.empty {
        return Ok(nothing(volume, Some(segmentation), summary));
    }
    let encoded = encode(
        source,
        &volume,
        &segmentation,
        &cascade.model.manifest,
        options,
        &mut summary,
    )?;
    Ok(Processed {
        volume,
        segmentation: Some(segmentation),
        segs: encoded.segs,
        sr: Some(encoded.sr),
        key_images: encoded.key_images,
        summary,
    })
}

/// The result objects of a segmentation.
struct Encoded {
    segs: Vec<(SegType, EncodedSeg)>,
    sr: EncodedSr,
    key_images: Vec<KeyImage>,
}

/// Encodes the SEGs, the measurement report and (when asked) the key images of a
/// segmentation that found something, recording each in `summary`: of the labels
/// `options` delivers, and without the organs that failed their checks (but in the
/// report) when `options` says so; with none left, there is no SEG and no key image.
fn encode(
    source: &Source,
    volume: &Volume,
    segmentation: &Segmentation,
    model: &Manifest,
    options: &Options,
    summary: &mut JobSummary,
) -> Result<Encoded, StageError> {
    let t = Instant::now();
    let mut organs = sr::measure(volume, segmentation, model, options.labels.as_deref());
    if !options.deliver_failed_organs {
        sr::leave_out_failed(&mut organs);
    }
    let measuring = t.elapsed();
    let t = Instant::now();
    let delivered: Vec<Organ> = organs.iter().filter(|o| !o.left_out).cloned().collect();
    let mut kept = [false; 256];
    kept[0] = true;
    for o in &delivered {
        kept[usize::from(o.value)] = true;
    }
    let reduced;
    // Whole when every label the cascade found is delivered (its counts are the
    // label map's).
    let whole = segmentation
        .summary
        .labels
        .iter()
        .filter(|l| l.voxels > 0)
        .all(|l| kept[usize::from(l.value)]);
    let (labels, key) = if whole {
        (&segmentation.labels, source.key())
    } else {
        reduced = segmentation
            .labels
            .map(|v| if kept[usize::from(v)] { v } else { 0 });
        // Another content, another SEG: its UIDs must not be those of the whole result.
        let values: Vec<u8> = delivered.iter().map(|o| o.value).collect();
        (&reduced, format!("{};delivered {values:?}", source.key()))
    };
    let segs = if delivered.is_empty() {
        Vec::new()
    } else {
        options
            .seg_types
            .iter()
            .map(|&seg_type| {
                seg::encode(volume, labels, model, seg_type, &options.equipment, &key)
                    .map(|encoded| (seg_type, encoded))
                    .map_err(StageError::Seg)
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    summary.time(Stage::Seg, t);
    let first = segs.first().map(|(_, seg)| seg);
    summary.seg = first.map(|first| SegSummary {
        sop_instance_uid: first.sop_instance_uid.clone(),
        series_instance_uid: first.series_instance_uid.clone(),
        sop_class_uid: first.sop_class_uid.to_string(),
        frames: first.frames,
        bytes: first.file.len(),
    });
    // The report's lap counts the measuring and assessing too.
    let t = Instant::now() - measuring;
    let sr = sr::encode(volume, &organs, first, &key, model, &options.equipment)
        .map_err(StageError::Sr)?;
    summary.time(Stage::Sr, t);
    summary.sr = Some(SrSummary {
        sop_instance_uid: sr.sop_instance_uid.clone(),
        series_instance_uid: sr.series_instance_uid.clone(),
        bytes: sr.file.len(),
    });
    let key_images = match first.filter(|_| options.key_images) {
        Some(first) => {
            let t = Instant::now();
            let images =
                keyimages::encode(volume, labels, model, &delivered, first, &options.equipment)
                    .map_err(StageError::KeyImages)?;
            summary.time(Stage::KeyImages, t);
            summary.key_images = images
                .iter()
                .map(|k| KeyImageSummary {
                    sop_instance_uid: k.sop_instance_uid.clone(),
                    slice: k.slice,
                })
                .collect();
            images
        }
        None => Vec::new(),
    };
    summary.qa_verdict = organs.iter().map(|o| o.qa.verdict).max();
    summary.organs = organs;
    Ok(Encoded {
        segs,
        sr,
        key_images,
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
            (Stage::Volume, "unreadable", false)
        );
        assert!(
            e.to_string()
                .starts_with("volume: cannot read /nonexistent/slice.dcm"),
            "{e}"
        );
    }
}
