//! `segnode run`: the node's processing of a series on files, without network or
//! database. Each series found under the inputs goes through [`process`] as a job would;
//! its label map (raw `uint8`, z y x, with a JSON description), SEG, measurement report
//! and key images are written under the output folder, and a typed [`RunReport`] says
//! what was made (the command line prints it as JSON). A series whose volume is refused
//! is reported with its reason; other failures stop the run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::process::{Options, Processed, Source, process};
use super::summary::{Stage, VolumeSummary};
use crate::cascade::{self, CascadeSummary, ModelConfig, ModelReport};
use crate::dicom::{SegType, Uid};
use crate::sr::Organ;
use crate::volume;
use crate::volume::inspect::{Refusal, Skipped};

/// What `segnode run` did.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub model: ModelReport,
    pub series: Vec<SeriesRun>,
    /// Files that are no usable DICOM image.
    pub skipped: Vec<Skipped>,
}

/// One series: refused (its volume could not be assembled), or segmented.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum SeriesRun {
    Refused {
        series_uid: String,
        refusal: Refusal,
    },
    Segmented(Box<Segmented>),
}

/// What was made of one series.
#[derive(Debug, Serialize)]
pub struct Segmented {
    pub series_uid: String,
    /// The series' output folder.
    pub output: String,
    pub seg: Option<WrittenSeg>,
    pub sr: Option<WrittenSr>,
    pub key_images: Vec<WrittenKeyImage>,
    pub shape: [usize; 3],
    pub volume_ms: Option<u64>,
    /// "segmented", "no structures found", or "every organ failed its quality checks
    /// and was left out".
    pub result: &'static str,
    pub cascade: CascadeSummary,
}

#[derive(Debug, Serialize)]
pub struct WrittenSeg {
    pub file: String,
    pub sop_instance_uid: Uid,
    pub frames: usize,
    pub encode_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct WrittenSr {
    pub file: String,
    pub sop_instance_uid: Uid,
    /// Measuring and assessing the organs and encoding the report.
    pub encode_ms: Option<u64>,
    pub organs: Vec<Organ>,
}

#[derive(Debug, Serialize)]
pub struct WrittenKeyImage {
    pub file: String,
    pub sop_instance_uid: Uid,
    pub slice: usize,
}

/// The label map's description, written beside it as `labels.json`.
#[derive(Debug, Serialize)]
struct LabelsJson<'a> {
    series_uid: &'a str,
    shape_zyx: [usize; 3],
    order: &'static str,
    dtype: &'static str,
    spacing_mm: [f64; 3],
    origin_mm: [f64; 3],
    direction: [[f64; 3]; 3],
    labels: BTreeMap<String, String>,
    slices: Vec<&'a str>,
    model: ModelName<'a>,
}

#[derive(Debug, Serialize)]
struct ModelName<'a> {
    name: &'a str,
    version: &'a str,
}

/// Where stage 2 runs, which SEG type to write, and whether organs that failed their
/// checks are written (`[review] deliver_failed_organs`).
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub scope: cascade::Scope,
    pub seg_type: SegType,
    pub deliver_failed_organs: bool,
}

/// Segments every series under `paths` with the model of `config`, writing each
/// series' results to `out/series-NNN/`.
pub fn run(
    paths: &[PathBuf],
    out: &Path,
    config: &ModelConfig,
    run: RunOptions,
) -> anyhow::Result<RunReport> {
    let (mut cascades, model) = cascade::open_cascades(config, 1)?;
    let mut cascade = cascades.pop().expect("one cascade");
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let volume::Scan {
        series: groups,
        skipped,
    } = volume::scan(paths);
    let options = Options {
        min_slices: 2,
        scope: run.scope,
        seg_types: vec![run.seg_type],
        key_images: true,
        equipment: crate::seg::Equipment::segnode("SEGNODE"),
        deliver_failed_organs: run.deliver_failed_organs,
        labels: config.labels.clone(),
    };
    let mut series = Vec::new();
    for (i, (series_uid, files)) in groups.iter().enumerate() {
        let processed =
            Source::from_files(files).and_then(|s| process(&s, Some(&mut cascade), &options));
        let processed = match processed {
            Ok(p) => p,
            Err(e) if e.stage() == Stage::Volume => {
                series.push(SeriesRun::Refused {
                    series_uid: series_uid.clone(),
                    refusal: Refusal {
                        code: e.code(),
                        message: e.to_string(),
                    },
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let dir = out.join(format!("series-{:03}", i + 1));
        let labels = cascade
            .model
            .manifest
            .labels
            .iter()
            .map(|l| (l.value.to_string(), l.name.clone()))
            .collect();
        let written = write_series(series_uid, &dir, processed, labels)?;
        series.push(SeriesRun::Segmented(Box::new(written)));
    }
    Ok(RunReport {
        model,
        series,
        skipped: Skipped::all(skipped),
    })
}

/// Writes one processed series under `dir`: the label map, the SEG, the report and the
/// key images.
fn write_series(
    series_uid: &str,
    dir: &Path,
    processed: Processed,
    labels: BTreeMap<String, String>,
) -> anyhow::Result<Segmented> {
    let Processed {
        volume,
        segmentation,
        segs,
        sr,
        key_images,
        summary,
    } = processed;
    let segmentation = segmentation.expect("a cascade was given");
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("labels.u8"), &segmentation.labels.data)?;
    let VolumeSummary { shape, .. } = summary.volume.clone().expect("a volume was assembled");
    let description = LabelsJson {
        series_uid,
        shape_zyx: shape,
        order: "z ascending along the slice normal; y = row; x = column",
        dtype: "uint8",
        spacing_mm: volume.geometry.spacing,
        origin_mm: volume.geometry.origin,
        direction: volume.geometry.direction,
        labels,
        slices: volume
            .slices
            .iter()
            .map(|s| s.sop_instance_uid.as_str())
            .collect(),
        model: ModelName {
            name: &segmentation.summary.model,
            version: &segmentation.summary.model_version,
        },
    };
    std::fs::write(
        dir.join("labels.json"),
        serde_json::to_string_pretty(&description)?,
    )?;
    let path = |name: &str| dir.join(name).display().to_string();
    let seg = match segs.into_iter().next() {
        Some((_, encoded)) => {
            std::fs::write(dir.join("seg.dcm"), &encoded.file)?;
            Some(WrittenSeg {
                file: path("seg.dcm"),
                sop_instance_uid: encoded.sop_instance_uid,
                frames: encoded.frames,
                encode_ms: summary.timings_ms.get(&Stage::Seg).copied(),
            })
        }
        None => None,
    };
    let sr = match sr {
        Some(report) => {
            std::fs::write(dir.join("sr.dcm"), &report.file)?;
            Some(WrittenSr {
                file: path("sr.dcm"),
                sop_instance_uid: report.sop_instance_uid,
                encode_ms: summary.timings_ms.get(&Stage::Sr).copied(),
                organs: summary.organs.clone(),
            })
        }
        None => None,
    };
    let mut written_keys = Vec::new();
    for (i, k) in key_images.into_iter().enumerate() {
        let name = format!("key-{:02}.dcm", i + 1);
        std::fs::write(dir.join(&name), &k.file)?;
        written_keys.push(WrittenKeyImage {
            file: path(&name),
            sop_instance_uid: k.sop_instance_uid,
            slice: k.slice,
        });
    }
    Ok(Segmented {
        series_uid: series_uid.to_string(),
        output: dir.display().to_string(),
        seg,
        sr,
        key_images: written_keys,
        shape,
        volume_ms: summary.timings_ms.get(&Stage::Volume).copied(),
        result: summary.no_segmentation().unwrap_or("segmented"),
        cascade: segmentation.summary,
    })
}
