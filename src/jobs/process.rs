//! Processing one series: its files → volume → cascade → SEG. The node's workers and
//! `segnode run` both call [`process`], so an offline result is the node's result for
//! the same files, down to the SEG's UIDs. Blocking (decoding and inference): the
//! node runs it on a blocking thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::cascade::{Cascade, Scope, Segmentation};
use crate::dicom::part10;
use crate::seg::{self, EncodedSeg, Equipment, SegType};
use crate::volume::{self, Tolerances, Volume};

/// A series to process: each instance's SOP Instance UID, the SHA-256 of its data set
/// (what the sender sent) and its file.
#[derive(Debug, Clone)]
pub struct Source {
    instances: Vec<SourceInstance>,
}

#[derive(Debug, Clone)]
struct SourceInstance {
    sop_instance_uid: String,
    sha256: String,
    file: PathBuf,
}

impl Source {
    /// From (SOP Instance UID, data set SHA-256, file) of each instance, in any order.
    pub fn new(instances: impl IntoIterator<Item = (String, String, PathBuf)>) -> Self {
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
                let unreadable = |reason: String| StageError {
                    stage: "volume",
                    code: "unreadable".into(),
                    message: format!("cannot read {}: {reason}", f.display()),
                };
                let bytes = std::fs::read(f).map_err(|e| unreadable(e.to_string()))?;
                let content = part10::content(&bytes).map_err(|e| unreadable(e.to_string()))?;
                Ok((content.sop_instance_uid, content.sha256, f.clone()))
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
    pub equipment: Equipment,
}

/// A stage failure: which stage, a stable code, a message a person can read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageError {
    pub stage: &'static str,
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for StageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.stage, self.message)
    }
}

impl std::error::Error for StageError {}

/// What processing produced. `segmentation` is `None` without a model; `segs` is
/// empty when nothing was found.
pub struct Processed {
    pub volume: Volume,
    pub segmentation: Option<Segmentation>,
    /// One SEG per requested type, in the order of [`Options::seg_types`].
    pub segs: Vec<(SegType, EncodedSeg)>,
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
            let e = e.renamed(|path| names.get(path).cloned());
            StageError {
                stage: "volume",
                code: e.code().to_string(),
                message: e.to_string(),
            }
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
            summary,
        });
    };
    let t = Instant::now();
    let segmentation = cascade
        .run_scoped(&volume, options.scope)
        .map_err(|e| StageError {
            stage: "cascade",
            code: e.code().to_string(),
            message: e.to_string(),
        })?;
    summary["timings_ms"]["cascade"] = (t.elapsed().as_millis() as u64).into();
    summary["cascade"] = serde_json::to_value(&segmentation.summary).unwrap_or_default();
    if segmentation.summary.empty {
        return Ok(Processed {
            volume,
            segmentation: Some(segmentation),
            segs: Vec::new(),
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
            .map_err(|e| StageError {
                stage: "seg",
                code: "encode_failed".into(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    summary["timings_ms"]["seg"] = (t.elapsed().as_millis() as u64).into();
    if let Some((_, first)) = segs.first() {
        summary["seg"] = serde_json::json!({
            "sop_instance_uid": first.sop_instance_uid,
            "series_instance_uid": first.series_instance_uid,
            "sop_class_uid": first.sop_class_uid,
            "frames": first.frames,
            "bytes": first.file.len(),
        });
    }
    Ok(Processed {
        volume,
        segmentation: Some(segmentation),
        segs,
        summary,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_in_uid_order_whatever_the_order_given() {
        let a = Source::new([
            ("1.2.10".to_string(), "b".to_string(), PathBuf::from("x")),
            ("1.2.9".to_string(), "a".to_string(), PathBuf::from("y")),
        ]);
        assert_eq!(a.key(), "1.2.10=b;1.2.9=a");
        assert_eq!(a.files(), [PathBuf::from("x"), PathBuf::from("y")]);
        assert_eq!(a.names()["y"], "instance 1.2.9");
    }

    #[test]
    fn an_unreadable_file_is_a_volume_failure_naming_it() {
        let e = Source::from_files(&[PathBuf::from("/nonexistent/slice.dcm")]).unwrap_err();
        assert_eq!((e.stage, e.code.as_str()), ("volume", "unreadable"));
        assert!(e.message.contains("/nonexistent/slice.dcm"), "{e}");
    }
}
