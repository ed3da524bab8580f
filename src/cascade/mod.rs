//! The two-stage cascade of Roth et al. 2018: stage 1 segments a coarse grid to find
//! where the organs are; stage 2 labels, on its finer grid, only the voxels inside the
//! stage-1 candidate region (dilated, intersected with the body mask). A model without
//! a stage 1 runs stage 2 on the whole series; a stage 2 may be an nnU-Net v2 model run
//! as nnU-Net runs it ([`nnunet`]), on the box of stage 1's region when there is one.
//! Everything a model needs is in its manifest ([`manifest`]); the array operations are
//! in [`ops`], ONNX Runtime in [`runtime`]. Every series is first mapped into the anatomical frame
//! the model was trained in and its label map mapped back ([`frame`]), so a feet-first
//! or prone patient reaches the network as the head-first supine one it learned. No
//! DICOM here: a [`Volume`] in, a label map aligned with it out.

pub mod evidence;
pub mod frame;
pub mod manifest;
mod nnunet;
pub mod ops;
pub mod runtime;
mod window;

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::volume::Volume;
use evidence::{Confidence, Evidence};
use frame::{Frame, Mapping};
use manifest::{Model, Pipeline, Stage};
use ops::Grid;
use runtime::{Provider, RuntimeError, StageSession};
use window::infer;

/// Why a model could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    #[error("model.labels: {unknown:?} not among the labels of model {model} ({available})")]
    UnknownLabels {
        unknown: Vec<String>,
        model: String,
        available: String,
    },
}

/// What `segnode check` and start-up report about the model and the runtime.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub onnxruntime_library: String,
    pub onnxruntime_build: String,
    pub execution_provider: Provider,
    pub model: String,
    pub model_version: String,
    /// (file, sha256) of each stage, verified.
    pub files: Vec<(String, String)>,
    pub labels: Vec<String>,
}

/// The cascade's options, as the configuration's `[model]` table gives them.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelConfig {
    /// Folder with `model.toml` and the ONNX files.
    pub path: std::path::PathBuf,
    /// `libonnxruntime.so`; else `ORT_DYLIB_PATH`, else the project-local `.venv` one.
    pub onnxruntime: Option<std::path::PathBuf>,
    /// Threads each inference session uses.
    pub intra_threads: usize,
    pub provider: Provider,
    /// The labels delivered, by name (`None`: all): the others are left out of the
    /// SEG, the report, the key images and the quality checks.
    pub labels: Option<Vec<String>>,
}

/// Loads ONNX Runtime and the model, and creates one cascade per worker.
pub fn open_cascades(
    config: &ModelConfig,
    workers: usize,
) -> Result<(Vec<Cascade>, ModelReport), ModelError> {
    let library = runtime::find_library(config.onnxruntime.as_deref())?;
    let build = runtime::init(&library)?;
    let model = Model::load(&config.path)?;
    let m = &model.manifest;
    let unknown: Vec<String> = config
        .labels
        .iter()
        .flatten()
        .filter(|name| !m.labels.iter().any(|l| &l.name == *name))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(ModelError::UnknownLabels {
            unknown,
            model: m.name.clone(),
            available: m
                .labels
                .iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    let report = ModelReport {
        onnxruntime_library: library.display().to_string(),
        onnxruntime_build: build,
        execution_provider: config.provider,
        model: m.name.clone(),
        model_version: m.version.clone(),
        files: m
            .networks()
            .iter()
            .map(|n| (model.path(n).display().to_string(), n.sha256.clone()))
            .collect(),
        labels: m
            .labels
            .iter()
            .map(|l| format!("{} {}", l.value, l.name))
            .collect(),
    };
    let options = SessionOptions {
        intra_threads: config.intra_threads,
        provider: config.provider,
    };
    let cascades = (0..workers)
        .map(|_| Cascade::open(model.clone(), options, config.labels.as_deref()))
        .collect::<Result<_, _>>()?;
    Ok((cascades, report))
}

#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl CascadeError {
    pub fn code(&self) -> &'static str {
        match self {
            CascadeError::Runtime(RuntimeError::Run { .. }) => "inference_failed",
            CascadeError::Runtime(_) => "model_unavailable",
        }
    }

    /// Whether the same volume may succeed later: the sessions' trouble, not a failed
    /// inference on this input.
    pub fn retryable(&self) -> bool {
        !matches!(self, CascadeError::Runtime(RuntimeError::Run { .. }))
    }
}

/// Where stage 2 runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Inside the stage-1 candidate region: the cascade.
    Cascade,
    /// On the whole stage-2 grid, without stage 1: what the cascade saves, measured.
    Everywhere,
}

/// A model's sessions, owned by one worker: stage 1's (if any), and for stage 2 and
/// each further part one per fold, or none for a part that labels nothing delivered.
pub struct Cascade {
    pub model: Model,
    stage1: Option<StageSession>,
    stage2: Vec<Option<Vec<StageSession>>>,
}

/// Per-label result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelVolume {
    pub value: u8,
    pub name: String,
    pub voxels: u64,
    pub ml: f64,
    /// The network's confidence in the label, before post-processing; none where it
    /// won no voxel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<Confidence>,
}

/// What the cascade did, for the job summary and `segnode run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CascadeSummary {
    pub model: String,
    pub model_version: String,
    /// SHA-256 of each ONNX file (stage 1's, then stage 2's folds).
    pub model_sha256: Vec<String>,
    /// How stage 2 ran: segnode's pipeline or nnU-Net's.
    pub pipeline: Pipeline,
    /// The series' frame, the model's, and how one was mapped into the other.
    pub frame: FrameSummary,
    /// Milliseconds per step.
    pub timings_ms: serde_json::Map<String, serde_json::Value>,
    /// Stage 1's grid; none for a single-stage model.
    pub stage1_grid: Option<[usize; 3]>,
    pub stage2_grid: [usize; 3],
    /// Fraction of the stage-2 grid inside the candidate region (what stage 2 labels;
    /// for nnU-Net, the fraction of the series inside its crop).
    pub stage2_region_fraction: f64,
    /// Fraction of the stage-2 grid covered by the patches stage 2 ran.
    pub stage2_patch_fraction: f64,
    pub stage2_patches_run: usize,
    pub stage2_patches_total: usize,
    /// Where an nnU-Net stage 2 ran behind a stage 1: the box of the series in the
    /// model's frame (voxels, `[lo, end)` per axis z, y, x), its image cropped to it as
    /// TotalSegmentator crops to a region; none where it ran on the whole series.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage2_box: Option<[[usize; 3]; 2]>,
    /// The parts of a multi-part model that did not run: none of their labels is
    /// delivered (`[model] labels`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub parts_skipped: usize,
    pub labels: Vec<LabelVolume>,
    /// True when stage 1 found nothing: "no structures found".
    pub empty: bool,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Which anatomical frame mapping the cascade applied (see [`frame`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameSummary {
    /// The series' own layout, as frame letters (e.g. "IPR" for feet-first supine).
    pub source: Frame,
    /// The frame the model was trained in (its manifest's `frame`).
    pub model: Frame,
    /// "identity" or which axes were swapped and reversed.
    pub mapping: String,
}

/// A label map aligned voxel for voxel with the source volume.
pub struct Segmentation {
    pub labels: Grid<u8>,
    pub summary: CascadeSummary,
}

/// Options of the sessions.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    pub intra_threads: usize,
    pub provider: Provider,
}

/// The series in the model's frame: its voxels, shape and spacing.
struct Framed<'a> {
    data: &'a [f32],
    shape: [usize; 3],
    spacing: [f64; 3],
}

/// Stage 2's labels on the series' grid (in the model's frame), post-processed.
struct Stage2 {
    labels: Grid<u8>,
    counts: [u64; 256],
    evidence: Evidence,
}

impl Cascade {
    /// Creates the sessions and checks them against the manifest; of a multi-part
    /// model, only the parts that label something of `labels` (by name; all without).
    pub fn open(
        model: Model,
        options: SessionOptions,
        labels: Option<&[String]>,
    ) -> Result<Self, RuntimeError> {
        let m = &model.manifest;
        let delivered = |value: &u8| {
            labels.is_none_or(|names| {
                m.labels
                    .iter()
                    .any(|l| l.value == *value && names.contains(&l.name))
            })
        };
        let session = |stage: &Stage, network: &manifest::Network, classes| {
            StageSession::open(
                model.path(network),
                stage,
                classes,
                options.intra_threads,
                options.provider,
            )
        };
        let stage1 = m
            .stage1
            .as_ref()
            .map(|s| session(s, &s.networks()[0], None))
            .transpose()?;
        let classes = model.classes();
        let stage2 = m
            .stage2_parts()
            .map(|stage| {
                let values = stage.label_values(classes);
                let needed = m.parts.is_empty() || values[1..].iter().any(delivered);
                needed
                    .then(|| {
                        stage
                            .networks()
                            .iter()
                            .map(|n| session(stage, n, Some(stage.classes(classes))))
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            model,
            stage1,
            stage2,
        })
    }

    /// Segments a volume: stage 1, then stage 2 inside the candidate region.
    pub fn run(&mut self, volume: &Volume) -> Result<Segmentation, CascadeError> {
        self.run_scoped(volume, Scope::Cascade)
    }

    /// Segments a volume with stage 2 running where `scope` says.
    pub fn run_scoped(
        &mut self,
        volume: &Volume,
        scope: Scope,
    ) -> Result<Segmentation, CascadeError> {
        let m = self.model.manifest.clone();
        let started = Instant::now();
        let mut timings = Timings::new();
        // Into the model's frame: transposes and flips only, nothing resampled.
        let mapping = Mapping::new(Frame::nearest(&volume.geometry.direction), m.frame);
        let mapped = to_model_frame(volume, &mapping, &mut timings);
        let series = match &mapped {
            None => Framed {
                data: &volume.data,
                shape: volume.shape,
                spacing: volume.geometry.spacing,
            },
            Some(mapped) => Framed {
                data: &mapped.data,
                shape: mapped.shape,
                spacing: mapping.permute(volume.geometry.spacing),
            },
        };
        let mut summary = starting_summary(&m, &mapping, &series);
        let candidate = match (&m.stage1, &mut self.stage1, scope) {
            (Some(stage), Some(session), Scope::Cascade) => Some(stage1_region(
                session,
                stage,
                m.frame,
                &series,
                &mut summary,
                &mut timings,
            )?),
            _ => None,
        };
        let mut stage2 = None;
        if candidate.as_ref().is_none_or(|c| c.data.iter().any(|v| *v)) {
            stage2 = Some(match m.stage2.pipeline {
                Pipeline::Segnode => {
                    self.segnode_stage2(&series, candidate, &mut summary, &mut timings)?
                }
                Pipeline::Nnunet => {
                    self.nnunet_stage2(&series, candidate, &mut summary, &mut timings)?
                }
            });
        }
        let (labels2, counts, evidence) = match stage2 {
            Some(s) => (Some(s.labels), s.counts, Some(s.evidence)),
            None => (None, [0u64; 256], None),
        };
        let labels = to_series_frame(labels2, &mapping, volume.shape, &mut timings);
        summary.labels = label_volumes(&m, &counts, evidence.as_ref(), series.spacing);
        summary.empty = summary.labels.iter().all(|l| l.voxels == 0);
        summary.timings_ms = timings.finish(started);
        Ok(Segmentation { labels, summary })
    }

    /// segnode's stage 2: on its grid, inside the candidate region (dilated, within
    /// the body), or everywhere without one; post-processed there, then labels to the
    /// series' grid.
    fn segnode_stage2(
        &mut self,
        series: &Framed,
        candidate: Option<Grid<bool>>,
        summary: &mut CascadeSummary,
        timings: &mut Timings,
    ) -> Result<Stage2, CascadeError> {
        let m = &self.model.manifest;
        let grid2 = summary.stage2_grid;
        let hu2 = ops::resample_linear(series.data, series.shape, grid2);
        let region = match (&candidate, &m.cascade) {
            (Some(c), Some(rules)) => {
                let mut region = ops::dilate(
                    &ops::resample_nearest(&c.data, c.shape, grid2),
                    rules.dilation_voxels,
                );
                if rules.body_mask {
                    let body = body_mask(&hu2, rules.body_threshold_hu);
                    region
                        .data
                        .iter_mut()
                        .zip(&body.data)
                        .for_each(|(r, b)| *r &= *b);
                }
                region
            }
            _ => Grid::filled(grid2, true),
        };
        let mut x2 = hu2;
        let stage = &m.stage2;
        let pad2 = ops::normalize(
            &mut x2.data,
            stage.hu_window,
            stage.normalization,
            stage.stats(),
        );
        timings.lap("region");
        let session = &mut self.stage2[0]
            .as_mut()
            .expect("a single stage 2 always opens")[0];
        let inference = infer(session, stage, &x2, pad2, Some(&region))?;
        timings.lap("stage2_inference");
        let evidence = inference.evidence(Some(&region));
        timings.lap("evidence");
        let (mut labels2, coverage) = (inference.labels, inference.coverage);
        let evaluated = region.data.iter().filter(|v| **v).count();
        summary.stage2_region_fraction = evaluated as f64 / region.len() as f64;
        summary.stage2_patch_fraction = coverage.covered as f64 / region.len() as f64;
        summary.stage2_patches_run = coverage.run;
        summary.stage2_patches_total = coverage.total;
        // Post-processing runs on the stage-2 grid (components and holes are the same
        // shapes there, at a fraction of the cost), then labels go to the native grid.
        postprocess(&mut labels2, m);
        timings.lap("postprocess");
        let counts = native_counts(&labels2, series.shape);
        let labels = ops::resample_nearest(&labels2.data, grid2, series.shape);
        timings.lap("to_native_grid");
        Ok(Stage2 {
            labels,
            counts,
            evidence,
        })
    }

    /// nnU-Net's stage 2 on the series' grid, within the box of stage 1's region
    /// (dilated by the cascade's voxels at stage 2's spacing) when there is one; of a
    /// multi-part model, each part that opened in turn, its labels written over the
    /// parts' before it.
    fn nnunet_stage2(
        &mut self,
        series: &Framed,
        candidate: Option<Grid<bool>>,
        summary: &mut CascadeSummary,
        timings: &mut Timings,
    ) -> Result<Stage2, CascadeError> {
        let m = &self.model.manifest;
        let classes = self.model.classes();
        let mut labels = Grid::filled(series.shape, 0u8);
        let mut evidence = Evidence::empty(classes);
        let region = candidate
            .as_ref()
            .and_then(|c| Some((bounding_box(c)?, c.shape)));
        let mut first = true;
        for (stage, sessions) in m.stage2_parts().zip(&mut self.stage2) {
            let Some(sessions) = sessions else {
                summary.parts_skipped += 1;
                continue;
            };
            let within = region.map(|(b, grid1)| stage2_box(b, grid1, series, stage, m));
            let prediction = nnunet::predict(
                sessions,
                stage,
                series.data,
                series.shape,
                series.spacing,
                within,
                timings,
            )?;
            if first {
                summary.stage2_box = within.map(|b| [b.lo, b.end]);
                summary.stage2_grid = prediction.grid;
                summary.stage2_region_fraction = prediction.crop_fraction;
                summary.stage2_patch_fraction = prediction.crop_fraction;
            }
            summary.stage2_patches_run += prediction.patches;
            summary.stage2_patches_total += prediction.patches;
            let values = stage.label_values(classes);
            labels
                .data
                .iter_mut()
                .zip(&prediction.labels.data)
                .filter(|(_, c)| **c != 0)
                .for_each(|(l, c)| *l = values[usize::from(*c)]);
            evidence.absorb(prediction.evidence, &values);
            first = false;
        }
        postprocess(&mut labels, m);
        timings.lap("postprocess");
        let mut counts = [0u64; 256];
        labels
            .data
            .iter()
            .for_each(|l| counts[usize::from(*l)] += 1);
        Ok(Stage2 {
            labels,
            counts,
            evidence,
        })
    }
}

/// The box of the series (in the model's frame) that an nnU-Net `stage` runs on: that
/// of stage 1's region `b` on its grid `grid1`, dilated by the cascade's voxels at the
/// stage's spacing.
fn stage2_box(
    b: ops::Box3,
    grid1: [usize; 3],
    series: &Framed,
    stage: &Stage,
    m: &manifest::Manifest,
) -> ops::Box3 {
    let target = stage.spacing(series.spacing);
    let margin = m.cascade.as_ref().map_or(0, |r| r.dilation_voxels) as f64;
    let scale = |i: usize| series.shape[i] as f64 / grid1[i] as f64;
    let pad = |i: usize| (margin * target[i] / series.spacing[i]).ceil();
    ops::Box3 {
        lo: std::array::from_fn(|i| (b.lo[i] as f64 * scale(i) - pad(i)).floor().max(0.0) as usize),
        end: std::array::from_fn(|i| {
            ((b.end[i] as f64 * scale(i) + pad(i)).ceil() as usize).min(series.shape[i])
        }),
    }
}

/// The series' voxels in the model's frame, when its own frame is another (logged and
/// timed); `None` when the two are the same.
fn to_model_frame(volume: &Volume, mapping: &Mapping, timings: &mut Timings) -> Option<Grid<f32>> {
    if mapping.is_identity() {
        return None;
    }
    tracing::info!(
        source = %mapping.source,
        model = %mapping.model,
        mapping = %mapping.describe(),
        "series mapped into the model's frame"
    );
    let mapped = mapping.apply(&volume.data, volume.shape);
    timings.lap("to_model_frame");
    Some(mapped)
}

/// The summary before any stage ran: the model, the frame mapping and stage 2's grid.
fn starting_summary(m: &manifest::Manifest, mapping: &Mapping, series: &Framed) -> CascadeSummary {
    CascadeSummary {
        model: m.name.clone(),
        model_version: m.version.clone(),
        model_sha256: m.networks().into_iter().map(|n| n.sha256).collect(),
        pipeline: m.stage2.pipeline,
        frame: FrameSummary {
            source: mapping.source,
            model: mapping.model,
            mapping: mapping.describe(),
        },
        timings_ms: serde_json::Map::new(),
        stage1_grid: None,
        stage2_grid: ops::target_shape(
            series.shape,
            series.spacing,
            m.stage2.spacing(series.spacing),
        ),
        stage2_region_fraction: 0.0,
        stage2_patch_fraction: 0.0,
        stage2_patches_run: 0,
        stage2_patches_total: 0,
        stage2_box: None,
        parts_skipped: 0,
        labels: Vec::new(),
        empty: true,
    }
}

/// Stage 2's labels mapped back into the series' own frame, or an empty label map of
/// `shape` when stage 2 did not run.
fn to_series_frame(
    labels: Option<Grid<u8>>,
    mapping: &Mapping,
    shape: [usize; 3],
    timings: &mut Timings,
) -> Grid<u8> {
    match labels {
        Some(l) if mapping.is_identity() => l,
        Some(l) => {
            let back = mapping.inverse().apply(&l.data, l.shape);
            timings.lap("to_series_frame");
            back
        }
        None => Grid::filled(shape, 0u8),
    }
}

/// Voxels and millilitres of each of the manifest's labels, from voxel counts on a grid
/// of `spacing` (mm).
fn label_volumes(
    m: &manifest::Manifest,
    counts: &[u64; 256],
    evidence: Option<&Evidence>,
    spacing: [f64; 3],
) -> Vec<LabelVolume> {
    let voxel_ml = spacing.iter().product::<f64>() / 1000.0;
    m.labels
        .iter()
        .map(|l| LabelVolume {
            value: l.value,
            name: l.name.clone(),
            voxels: counts[usize::from(l.value)],
            ml: (counts[usize::from(l.value)] as f64 * voxel_ml * 100.0).round() / 100.0,
            confidence: evidence.and_then(|e| e.confidence(l.value)),
        })
        .collect()
}

/// Stage 1's candidate region on its grid, in the model's frame: the series goes into
/// stage 1's own frame when it has one, and the region comes back.
fn stage1_region(
    session: &mut StageSession,
    stage: &Stage,
    model_frame: Frame,
    series: &Framed,
    summary: &mut CascadeSummary,
    timings: &mut Timings,
) -> Result<Grid<bool>, CascadeError> {
    let into = Mapping::new(model_frame, stage.frame.unwrap_or(model_frame));
    let own;
    let (data, shape, spacing) = if into.is_identity() {
        (series.data, series.shape, series.spacing)
    } else {
        own = into.apply(series.data, series.shape);
        (&own.data[..], own.shape, into.permute(series.spacing))
    };
    let grid1 = ops::target_shape(shape, spacing, stage.spacing(spacing));
    summary.stage1_grid = Some(grid1);
    let mut x1 = ops::resample_linear(data, shape, grid1);
    let pad1 = ops::normalize(
        &mut x1.data,
        stage.hu_window,
        stage.normalization,
        stage.stats(),
    );
    timings.lap("stage1_prepare");
    let labels1 = infer(session, stage, &x1, pad1, None)?.labels;
    timings.lap("stage1_inference");
    let region: Vec<bool> = labels1.data.iter().map(|l| *l > 0).collect();
    Ok(if into.is_identity() {
        Grid {
            shape: grid1,
            data: region,
        }
    } else {
        into.inverse().apply(&region, grid1)
    })
}

/// Milliseconds per step of a run, each step timed from the end of the one before.
pub(crate) struct Timings {
    map: serde_json::Map<String, serde_json::Value>,
    since: Instant,
}

impl Timings {
    fn new() -> Self {
        Self {
            map: serde_json::Map::new(),
            since: Instant::now(),
        }
    }

    /// Ends the step `name` (added to its earlier laps, as each part of a multi-part
    /// model runs the same steps).
    pub(crate) fn lap(&mut self, name: &str) {
        let mut ms = (self.since.elapsed().as_secs_f64() * 1000.0).round();
        ms += self.map.get(name).and_then(|v| v.as_f64()).unwrap_or(0.0);
        self.map.insert(name.into(), ms.into());
        self.since = Instant::now();
    }

    fn finish(mut self, started: Instant) -> serde_json::Map<String, serde_json::Value> {
        let total = (started.elapsed().as_secs_f64() * 1000.0).round();
        self.map.insert("total".into(), total.into());
        self.map
    }
}

/// Voxels per label value of the grid `labels` once resampled (nearest) to `shape`,
/// counted on the small grid: each voxel weighs as many native voxels as take it.
fn native_counts(labels: &Grid<u8>, shape: [usize; 3]) -> [u64; 256] {
    let [mz, my, mx] =
        std::array::from_fn(|i| ops::nearest_multiplicity(labels.shape[i], shape[i]));
    let mut counts = [0u64; 256];
    for (z, wz) in mz.iter().enumerate() {
        for (y, wy) in my.iter().enumerate() {
            let row = labels.index(z, y, 0);
            for (l, wx) in labels.data[row..row + labels.shape[2]].iter().zip(&mx) {
                counts[usize::from(*l)] += wz * wy * wx;
            }
        }
    }
    counts
}

/// The smallest box holding every voxel of `mask`.
fn bounding_box(mask: &Grid<bool>) -> Option<ops::Box3> {
    ops::id_boxes(mask.shape, mask.data.iter().map(|v| usize::from(*v)), 1)[0]
}

/// The body: HU above the threshold, eroded by one voxel, its largest component,
/// dilated back by one voxel, holes filled.
fn body_mask(hu: &Grid<f32>, threshold: f32) -> Grid<bool> {
    let above = Grid {
        shape: hu.shape,
        data: hu.data.iter().map(|v| *v > threshold).collect(),
    };
    let body = ops::largest_component(&ops::erode(&above, 1));
    ops::fill_holes(&ops::dilate(&body, 1))
}

/// Per label, in value order: keep the largest component; fill its holes where no
/// other label is.
fn postprocess(labels: &mut Grid<u8>, m: &manifest::Manifest) {
    if !m.postprocess.largest_component && !m.postprocess.fill_holes {
        return;
    }
    // Each label is processed within its box grown by one voxel (where the grid allows):
    // its components and holes there are those of the whole grid, at a fraction of the
    // cost. Processing one label changes no other label's voxels, so the boxes hold.
    let boxes = ops::id_boxes(
        labels.shape,
        labels.data.iter().map(|l| usize::from(*l)),
        255,
    );
    let mut values: Vec<u8> = m.labels.iter().map(|l| l.value).collect();
    values.sort_unstable();
    for value in values.into_iter().filter(|v| *v > 0) {
        let Some(b) = boxes[usize::from(value) - 1] else {
            continue;
        };
        let b = b.grown(1, labels.shape);
        let mut part = ops::crop(&labels.data, labels.shape, b);
        let mut mask = Grid {
            shape: b.size(),
            data: part.data.iter().map(|l| *l == value).collect(),
        };
        if m.postprocess.largest_component {
            mask = ops::largest_component(&mask);
        }
        if m.postprocess.fill_holes {
            mask = ops::fill_holes(&mask);
        }
        for (l, keep) in part.data.iter_mut().zip(&mask.data) {
            if *l == value && !keep {
                *l = 0;
            } else if *keep && *l == 0 {
                *l = value;
            }
        }
        ops::paste(labels, &part, b.lo);
    }
}
