//! segnode's sliding-window inference for a stage: the input padded to whole patches,
//! patches laid over the candidate region's parts (or the whole grid), each run and
//! blended with the stage's weights, and the argmax per voxel. A patch that touches no
//! region voxel is skipped: what the cascade saves.

use std::collections::BTreeSet;

use super::evidence::Evidence;
use super::manifest::Stage;
use super::ops::{self, Grid};
use super::runtime::{RuntimeError, StageSession};

/// How much of a grid stage 2 covered.
pub(super) struct Coverage {
    pub run: usize,
    pub total: usize,
    pub covered: usize,
}

/// A stage's labels, how much of the grid it covered, and the blended logits behind
/// them.
pub(super) struct Inference {
    pub labels: Grid<u8>,
    pub coverage: Coverage,
    /// The weighted sums of the logits, class-major over the padded grid.
    acc: Vec<f32>,
    classes: usize,
    weight_sum: Grid<f32>,
}

impl Inference {
    /// The softmax evidence of the voxels the stage labelled (those of `region`, if
    /// any): the weighted sums over their weights are the blended logits.
    pub fn evidence(&self, region: Option<&Grid<bool>>) -> Evidence {
        let shape = self.labels.shape;
        Evidence::of(
            &self.acc,
            self.classes,
            self.weight_sum.len(),
            self.labels.len(),
            |i| {
                let z = i / (shape[1] * shape[2]);
                let y = i / shape[2] % shape[1];
                let v = self.weight_sum.index(z, y, i % shape[2]);
                let w = self.weight_sum.data[v];
                (w > 0.0 && region.is_none_or(|r| r.data[i])).then(|| (v, 1.0 / w))
            },
        )
    }
}

/// Sliding-window inference with blending; argmax per voxel (first maximum on a tie).
/// With a region, patches that touch no region voxel are skipped and voxels outside
/// it are background.
pub(super) fn infer(
    session: &mut StageSession,
    stage: &Stage,
    x: &Grid<f32>,
    pad: f32,
    region: Option<&Grid<bool>>,
) -> Result<Inference, RuntimeError> {
    let patch = stage.patch;
    let input = pad_to_patch(x, patch, pad);
    let padded = input.shape;
    let steps: [usize; 3] = std::array::from_fn(|i| ops::step(patch[i], stage.overlap));
    let starts = patch_starts(region, padded, patch, steps);
    let grid_patches: usize = (0..3)
        .map(|i| ops::window_starts(padded[i], patch[i], steps[i]).len())
        .product();
    let weights = ops::blend_weights(patch, stage.blending);
    let classes = session.classes;
    let mut acc = vec![0f32; classes * input.len()];
    let mut weight_sum = Grid::filled(padded, 0f32);
    let mut coverage = Coverage {
        run: 0,
        total: grid_patches,
        covered: 0,
    };
    for start in starts {
        if !touches_region(region, x.shape, patch, start) {
            continue;
        }
        let logits = session.run(patch_values(&input, patch, start))?;
        coverage.run += 1;
        add_weighted(
            &mut acc,
            &mut weight_sum,
            &logits,
            &weights,
            classes,
            patch,
            start,
        );
    }
    let labels = argmax_labels(&acc, classes, &weight_sum, x.shape, region, &mut coverage);
    Ok(Inference {
        labels,
        coverage,
        acc,
        classes,
        weight_sum,
    })
}

/// `x` in a grid at least a patch long on every axis, the extra voxels `pad`.
fn pad_to_patch(x: &Grid<f32>, patch: [usize; 3], pad: f32) -> Grid<f32> {
    let padded: [usize; 3] = std::array::from_fn(|i| x.shape[i].max(patch[i]));
    let mut input = Grid::filled(padded, pad);
    for z in 0..x.shape[0] {
        for y in 0..x.shape[1] {
            let from = x.index(z, y, 0);
            let to = input.index(z, y, 0);
            input.data[to..to + x.shape[2]].copy_from_slice(&x.data[from..from + x.shape[2]]);
        }
    }
    input
}

/// Where the patches start on the padded grid, in (z, y, x) order, each once.
fn patch_starts(
    region: Option<&Grid<bool>>,
    padded: [usize; 3],
    patch: [usize; 3],
    steps: [usize; 3],
) -> BTreeSet<[usize; 3]> {
    // With a region, patches are laid over each of its components' bounding boxes (at
    // least a patch long), not over the whole grid: stage 2's work follows the region,
    // and a stray component far from the organs costs its own few patches, not a box
    // spanning both.
    let boxes = match region {
        Some(region) => ops::component_boxes(region),
        None => vec![ops::Box3::of_shape(padded)],
    };
    let mut starts = BTreeSet::new();
    for b in boxes {
        let size = b.size();
        let axis: [Vec<usize>; 3] = std::array::from_fn(|i| {
            let length = size[i].max(patch[i]);
            let first = b.lo[i].min(padded[i] - length);
            ops::window_starts(length, patch[i], steps[i])
                .into_iter()
                .map(|s| s + first)
                .collect()
        });
        for &z0 in &axis[0] {
            for &y0 in &axis[1] {
                starts.extend(axis[2].iter().map(|&x0| [z0, y0, x0]));
            }
        }
    }
    starts
}

/// Whether the patch at `start` holds a region voxel of the unpadded grid of `shape`
/// (always, without a region).
fn touches_region(
    region: Option<&Grid<bool>>,
    shape: [usize; 3],
    patch: [usize; 3],
    [z0, y0, x0]: [usize; 3],
) -> bool {
    let Some(region) = region else { return true };
    (z0..(z0 + patch[0]).min(shape[0])).any(|z| {
        (y0..(y0 + patch[1]).min(shape[1])).any(|y| {
            let row = region.index(z, y, 0);
            region.data[row + x0.min(shape[2])..row + (x0 + patch[2]).min(shape[2])]
                .iter()
                .any(|v| *v)
        })
    })
}

/// The voxels of the patch at `start`, in (z, y, x) order: the network's input.
fn patch_values(input: &Grid<f32>, patch: [usize; 3], [z0, y0, x0]: [usize; 3]) -> Vec<f32> {
    let mut values = Vec::with_capacity(patch.iter().product());
    for z in z0..z0 + patch[0] {
        for y in y0..y0 + patch[1] {
            let row = input.index(z, y, x0);
            values.extend_from_slice(&input.data[row..row + patch[2]]);
        }
    }
    values
}

/// Adds a patch's logits, weighted by the blending weights, to the per-class sums
/// `acc` (class-major over the padded grid), and its weights to `weight_sum`.
fn add_weighted(
    acc: &mut [f32],
    weight_sum: &mut Grid<f32>,
    logits: &[f32],
    weights: &[f32],
    classes: usize,
    patch: [usize; 3],
    [z0, y0, x0]: [usize; 3],
) {
    let n = weight_sum.len();
    let plane = patch.iter().product::<usize>();
    let mut k = 0;
    for z in z0..z0 + patch[0] {
        for y in y0..y0 + patch[1] {
            let row = weight_sum.index(z, y, x0);
            for dx in 0..patch[2] {
                let v = row + dx;
                let w = weights[k];
                weight_sum.data[v] += w;
                for c in 0..classes {
                    acc[c * n + v] += logits[c * plane + k] * w;
                }
                k += 1;
            }
        }
    }
}

/// The label of each covered voxel (of positive weight) of the unpadded grid of
/// `shape`: the class with the largest sum (the first on a tie), background outside the
/// region; counts the covered voxels into `coverage`.
fn argmax_labels(
    acc: &[f32],
    classes: usize,
    weight_sum: &Grid<f32>,
    shape: [usize; 3],
    region: Option<&Grid<bool>>,
    coverage: &mut Coverage,
) -> Grid<u8> {
    let n = weight_sum.len();
    let mut labels = Grid::filled(shape, 0u8);
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            for xx in 0..shape[2] {
                let v = weight_sum.index(z, y, xx);
                let out = labels.index(z, y, xx);
                if weight_sum.data[v] <= 0.0 {
                    continue;
                }
                coverage.covered += 1;
                if region.is_some_and(|r| !r.data[out]) {
                    continue;
                }
                let mut best = 0;
                for c in 1..classes {
                    if acc[c * n + v] > acc[best * n + v] {
                        best = c;
                    }
                }
                labels.data[out] = best as u8;
            }
        }
    }
    labels
}
