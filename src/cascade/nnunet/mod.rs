//! nnU-Net v2's inference (`nnUNetPredictor` of nnunetv2 2.x), step for step, so that a
//! model imported by `segnode import-nnunet` labels a series as nnU-Net itself would:
//!
//! 1. transpose the array by the plans' `transpose_forward`;
//! 2. crop to the box of non-zero voxels (within stage 1's box, behind a coarse stage);
//! 3. normalise (CT: clip to the training foreground's 0.5/99.5 percentiles, subtract
//!    its mean, divide by its std; or z-score per image);
//! 4. resample to the target spacing with third-order splines (`skimage` `resize`:
//!    `scipy.ndimage.zoom` with `grid_mode`, edges extended, output clipped to the
//!    input's range), or, where the spacing is anisotropic (ratio above 3), in-plane
//!    splines and nearest neighbour along the coarse axis;
//! 5. slide the patch with nnU-Net's steps (`compute_steps_for_sliding_window`) over the
//!    volume padded with zeros to at least a patch, weigh each prediction with nnU-Net's
//!    Gaussian (sigma = patch / 8, truncated at 4 sigma), add the mirrored predictions of
//!    every combination of the mirror axes, average the folds' logits;
//! 6. resample the logits back to the cropped grid linearly (nearest along a coarse
//!    axis), take the argmax, put the crop back and transpose back.
//!
//! nnU-Net keeps the summed logits in half precision (`torch.half`); so does this,
//! rounding every sum, quotient and resampled logit to the nearest half as nnU-Net's
//! tensors are, so that the voxels whose best classes are within that rounding of each
//! other get nnU-Net's label too (what remains: the order of ONNX Runtime's and
//! PyTorch's single-precision convolutions).

use rayon::prelude::*;

use super::Timings;
use super::evidence::Evidence;
use super::manifest::Stage;
use super::ops::{self, Blending, Box3, Grid};
use super::runtime::{RuntimeError, StageSession};
use spline::resample_spline;

mod spline;

/// Spacing ratio above which nnU-Net resamples the coarse axis separately.
const ANISOTROPY: f64 = 3.0;

/// What an nnU-Net stage did.
pub struct Prediction {
    /// Labels on the input grid.
    pub labels: Grid<u8>,
    /// The grid the network ran on (cropped, resampled).
    pub grid: [usize; 3],
    /// Fraction of the input grid inside the crop.
    pub crop_fraction: f64,
    pub patches: usize,
    /// The softmax evidence on nnU-Net's grid.
    pub evidence: Evidence,
}

/// Labels the volume `data` of `shape` and `spacing` (mm) in the model's frame, within
/// `within` (stage 1's box) if given, with one session per fold.
pub fn predict(
    sessions: &mut [StageSession],
    stage: &Stage,
    data: &[f32],
    shape: [usize; 3],
    spacing: [f64; 3],
    within: Option<Box3>,
    timings: &mut Timings,
) -> Result<Prediction, RuntimeError> {
    let axes = stage.transpose();
    let transposed;
    let (data, shape_t) = if axes == [0, 1, 2] {
        (data, shape)
    } else {
        transposed = ops::rearrange(data, shape, axes, [false; 3]);
        (&transposed.data[..], transposed.shape)
    };
    let spacing_t: [f64; 3] = std::array::from_fn(|i| spacing[axes[i]]);
    let within = within.map(|b| Box3 {
        lo: std::array::from_fn(|i| b.lo[axes[i]]),
        end: std::array::from_fn(|i| b.end[axes[i]]),
    });
    let target = stage.spacing_mm.unwrap_or(spacing_t);
    let mut labels_t = Grid::filled(shape_t, 0u8);
    let mut prediction = Prediction {
        labels: Grid::filled(shape, 0u8),
        grid: [0; 3],
        crop_fraction: 0.0,
        patches: 0,
        evidence: Evidence::empty(sessions[0].classes),
    };
    if let Some(b) = nonzero_bounds(data, shape_t, within) {
        let crop_shape = b.size();
        let mut x = ops::crop(data, shape_t, b).data;
        ops::normalize(&mut x, stage.hu_window, stage.normalization, stage.stats());
        let grid: [usize; 3] = std::array::from_fn(|i| {
            ((spacing_t[i] / target[i]) * crop_shape[i] as f64).round_ties_even() as usize
        });
        let x = resample_spline(&x, crop_shape, grid, separate_axis(spacing_t, target));
        timings.lap("stage2_prepare");
        let (logits, patches) = sliding_window(sessions, stage, &x, grid)?;
        timings.lap("stage2_inference");
        let n = grid.iter().product();
        prediction.evidence = Evidence::of(&logits, sessions[0].classes, n, n, |v| Some((v, 1.0)));
        timings.lap("evidence");
        let crop_labels = logits_to_labels(
            &logits,
            sessions[0].classes,
            grid,
            crop_shape,
            separate_axis(target, spacing_t),
        );
        ops::paste(&mut labels_t, &crop_labels, b.lo);
        timings.lap("stage2_to_native_grid");
        prediction.grid = grid;
        prediction.crop_fraction = crop_labels.len() as f64 / labels_t.len().max(1) as f64;
        prediction.patches = patches;
    }
    prediction.labels = if axes == [0, 1, 2] {
        labels_t
    } else {
        let mut back = [0; 3];
        for (i, a) in axes.iter().enumerate() {
            back[*a] = i;
        }
        ops::rearrange(&labels_t.data, shape_t, back, [false; 3])
    };
    Ok(prediction)
}

/// The box of non-zero voxels (nnU-Net's `crop_to_nonzero`; filling the mask's holes
/// does not change its box), within `within`.
fn nonzero_bounds(data: &[f32], shape: [usize; 3], within: Option<Box3>) -> Option<Box3> {
    let Box3 { lo: wlo, end: whi } = within.unwrap_or(Box3::of_shape(shape));
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    for z in wlo[0]..whi[0] {
        for y in wlo[1]..whi[1] {
            let row = &data[(z * shape[1] + y) * shape[2]..][wlo[2]..whi[2]];
            let (Some(first), Some(last)) = (
                row.iter().position(|v| *v != 0.0),
                row.iter().rposition(|v| *v != 0.0),
            ) else {
                continue;
            };
            for (i, v) in [z, y, wlo[2] + first].into_iter().enumerate() {
                lo[i] = lo[i].min(v);
            }
            for (i, v) in [z, y, wlo[2] + last].into_iter().enumerate() {
                hi[i] = hi[i].max(v + 1);
            }
        }
    }
    (lo[0] != usize::MAX).then_some(Box3 { lo, end: hi })
}

/// nnU-Net's `determine_do_sep_z_and_axis`: the one coarse axis of `from`, else of
/// `to`, when its spacing is more than 3 times the finest.
fn separate_axis(from: [f64; 3], to: [f64; 3]) -> Option<usize> {
    let coarse = |s: [f64; 3]| -> Option<Option<usize>> {
        let max = s.iter().copied().fold(f64::MIN, f64::max);
        let min = s.iter().copied().fold(f64::MAX, f64::min);
        (max / min > ANISOTROPY).then(|| {
            let axes: Vec<usize> = (0..3).filter(|i| max / s[*i] == 1.0).collect();
            (axes.len() == 1).then(|| axes[0])
        })
    };
    coarse(from).or_else(|| coarse(to)).flatten()
}

/// nnU-Net's `compute_steps_for_sliding_window` along one axis: as many windows as a
/// step of `step_fraction` of the patch needs, spread evenly from the first voxel to the
/// last (segnode's own pipeline steps by a fixed stride instead: [`ops::window_starts`]).
fn spread_window_starts(n: usize, p: usize, step_fraction: f64) -> Vec<usize> {
    let target = p as f64 * step_fraction;
    let steps = ((n - p) as f64 / target).ceil() as usize + 1;
    if steps == 1 {
        return vec![0];
    }
    let actual = (n - p) as f64 / (steps - 1) as f64;
    (0..steps)
        .map(|i| (actual * i as f64).round_ties_even() as usize)
        .collect()
}

/// nnU-Net's `compute_gaussian(patch, 1/8, value_scaling_factor=10)`, or ones.
fn importance(patch: [usize; 3], blending: Blending) -> Vec<f32> {
    if blending == Blending::Constant {
        return vec![1.0; patch.iter().product()];
    }
    let axis = |p: usize| -> Vec<f64> {
        let sigma = p as f64 / 8.0;
        let radius = (4.0 * sigma + 0.5).floor() as i64;
        let centre = (p / 2) as i64;
        (0..p as i64)
            .map(|i| {
                let d = i - centre;
                if d.abs() > radius {
                    0.0
                } else {
                    (-0.5 * (d as f64 / sigma).powi(2)).exp()
                }
            })
            .collect()
    };
    let (wz, wy, wx) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut w: Vec<f32> = Vec::with_capacity(patch.iter().product());
    for a in &wz {
        for b in &wy {
            for c in &wx {
                w.push((10.0 * a * b * c) as f32);
            }
        }
    }
    let min = w
        .iter()
        .copied()
        .filter(|v| *v > 0.0)
        .fold(f32::MAX, f32::min);
    w.iter_mut().filter(|v| **v == 0.0).for_each(|v| *v = min);
    w
}

/// Every non-empty combination of the mirror axes, in nnU-Net's order.
fn mirror_combinations(axes: &[usize]) -> Vec<Vec<usize>> {
    let mut all = Vec::new();
    for size in 1..=axes.len() {
        let mut pick: Vec<usize> = (0..size).collect();
        loop {
            all.push(pick.iter().map(|i| axes[*i]).collect());
            let Some(i) = (0..size).rev().find(|i| pick[*i] < axes.len() - size + i) else {
                break;
            };
            pick[i] += 1;
            for j in i + 1..size {
                pick[j] = pick[j - 1] + 1;
            }
        }
    }
    all
}

/// `patch` flipped along `axes` (an involution).
fn flip(patch: &[f32], shape: [usize; 3], axes: &[usize]) -> Vec<f32> {
    let rev = |a: usize, i: usize| {
        if axes.contains(&a) {
            shape[a] - 1 - i
        } else {
            i
        }
    };
    let mut out = Vec::with_capacity(patch.len());
    for z in 0..shape[0] {
        for y in 0..shape[1] {
            let row = (rev(0, z) * shape[1] + rev(1, y)) * shape[2];
            for x in 0..shape[2] {
                out.push(patch[row + rev(2, x)]);
            }
        }
    }
    out
}

/// Sliding-window logits (classes, z, y, x) over `x` (the resampled crop), the folds'
/// mean with mirroring, and the number of patch positions, in nnU-Net's arithmetic: its
/// Gaussian in half precision; per patch, the mean of the mirrored predictions in single
/// precision, weighed by the Gaussian and added to sums kept in half precision (each sum
/// rounded to the nearest half as nnU-Net's `torch.half` tensors are), divided by the
/// summed weights in half precision; each fold's window on its own, their sum and mean
/// in half precision. Each network output is weighed in where it lies straight from
/// ONNX Runtime's buffer, and only the voxels of the grid are kept, not the padding.
fn sliding_window(
    sessions: &mut [StageSession],
    stage: &Stage,
    x: &[f32],
    grid: [usize; 3],
) -> Result<(Vec<f32>, usize), RuntimeError> {
    let patch = stage.patch;
    let padded: [usize; 3] = std::array::from_fn(|i| grid[i].max(patch[i]));
    let below: [usize; 3] = std::array::from_fn(|i| (padded[i] - grid[i]) / 2);
    let mut input = Grid::filled(padded, 0f32);
    for z in 0..grid[0] {
        for y in 0..grid[1] {
            let from = (z * grid[1] + y) * grid[2];
            let to = input.index(z + below[0], y + below[1], below[2]);
            input.data[to..to + grid[2]].copy_from_slice(&x[from..from + grid[2]]);
        }
    }
    let step = 1.0 - stage.overlap;
    let starts: [Vec<usize>; 3] =
        std::array::from_fn(|i| spread_window_starts(padded[i], patch[i], step));
    let combinations = mirror_combinations(&stage.mirror_axes);
    let weights: Vec<f32> = importance(patch, stage.blending)
        .into_iter()
        .map(half)
        .collect();
    let ones = vec![1f32; weights.len()];
    let classes = sessions[0].classes;
    let n: usize = grid.iter().product();
    let plane: usize = patch.iter().product();
    let mut weight_sum = vec![0f32; n];
    // The mean of a patch's mirrored predictions (only with mirroring).
    let mut mirrored = vec![
        0f32;
        if combinations.is_empty() {
            0
        } else {
            classes * plane
        }
    ];
    let mut total: Option<Vec<f32>> = None;
    let mut positions = 0;
    for (fold, session) in sessions.iter_mut().enumerate() {
        let mut acc = vec![0f32; classes * n];
        for &z0 in &starts[0] {
            for &y0 in &starts[1] {
                for &x0 in &starts[2] {
                    let at = Placement::new([z0, y0, x0], below, grid, patch);
                    if fold == 0 {
                        positions += 1;
                        at.add(&mut weight_sum, &ones, &weights);
                    }
                    let mut window = Vec::with_capacity(plane);
                    for z in z0..z0 + patch[0] {
                        for y in y0..y0 + patch[1] {
                            let row = input.index(z, y, x0);
                            window.extend_from_slice(&input.data[row..row + patch[2]]);
                        }
                    }
                    let mut batch = window.clone();
                    for axes in &combinations {
                        batch.extend(flip(&window, patch, axes));
                    }
                    let add = |acc: &mut [f32], logits: &[f32]| {
                        acc.par_chunks_mut(n)
                            .zip(logits.par_chunks(plane))
                            .for_each(|(sums, logits)| at.add(sums, logits, &weights));
                    };
                    if combinations.is_empty() {
                        session.run_batch_with(batch, 1, |out| add(&mut acc, out))?;
                        continue;
                    }
                    // The batch's outputs in order: as is, then each mirror combination.
                    let mut flips =
                        std::iter::once(&[][..]).chain(combinations.iter().map(Vec::as_slice));
                    session.run_batch_with(batch, combinations.len() + 1, |out| {
                        for (output, axes) in out.chunks(classes * plane).zip(&mut flips) {
                            if axes.is_empty() {
                                mirrored.copy_from_slice(output);
                                continue;
                            }
                            for c in 0..classes {
                                let back = flip(&output[c * plane..][..plane], patch, axes);
                                mirrored[c * plane..][..plane]
                                    .iter_mut()
                                    .zip(back)
                                    .for_each(|(m, o)| *m += o);
                            }
                        }
                    })?;
                    let count = (combinations.len() + 1) as f32;
                    mirrored.iter_mut().for_each(|m| *m /= count);
                    add(&mut acc, &mirrored);
                }
            }
        }
        acc.par_chunks_mut(n).for_each(|sums| {
            sums.iter_mut()
                .zip(&weight_sum)
                .for_each(|(s, w)| *s = half(*s / w));
        });
        total = Some(match total {
            None => acc,
            Some(mut sum) => {
                sum.par_iter_mut()
                    .zip(&acc)
                    .for_each(|(s, a)| *s = half(*s + a));
                sum
            }
        });
    }
    let mut logits = total.expect("at least one fold");
    if sessions.len() > 1 {
        let folds = sessions.len() as f32;
        logits.par_iter_mut().for_each(|v| *v = half(*v / folds));
    }
    Ok((logits, positions))
}

/// `x` rounded to the nearest half-precision value (ties to even).
fn half(x: f32) -> f32 {
    half::f16::from_f32(x).to_f32()
}

/// Where a patch at `start` of the padded grid lies on the grid: the patch's own
/// index range along each axis that is on the grid (the rest is padding).
struct Placement {
    start: [usize; 3],
    below: [usize; 3],
    grid: [usize; 3],
    patch: [usize; 3],
    lo: [usize; 3],
    hi: [usize; 3],
}

impl Placement {
    fn new(start: [usize; 3], below: [usize; 3], grid: [usize; 3], patch: [usize; 3]) -> Self {
        Self {
            start,
            below,
            grid,
            patch,
            lo: std::array::from_fn(|a| below[a].saturating_sub(start[a]).min(patch[a])),
            hi: std::array::from_fn(|a| {
                (below[a] + grid[a]).saturating_sub(start[a]).min(patch[a])
            }),
        }
    }

    /// Adds `values` times `weights` (one each per patch voxel) to `sums` (one per
    /// grid voxel), each sum rounded to half precision as nnU-Net keeps it.
    fn add(&self, sums: &mut [f32], values: &[f32], weights: &[f32]) {
        let [_, py, px] = self.patch;
        let (x_lo, x_hi) = (self.lo[2], self.hi[2]);
        for z in self.lo[0]..self.hi[0] {
            let gz = self.start[0] + z - self.below[0];
            for y in self.lo[1]..self.hi[1] {
                let gy = self.start[1] + y - self.below[1];
                let gx = self.start[2] + x_lo - self.below[2];
                let to = &mut sums[(gz * self.grid[1] + gy) * self.grid[2] + gx..][..x_hi - x_lo];
                let k = (z * py + y) * px;
                let w = &weights[k + x_lo..k + x_hi];
                let v = &values[k + x_lo..k + x_hi];
                for ((t, w), v) in to.iter_mut().zip(w).zip(v) {
                    *t = half(*t + v * w);
                }
            }
        }
    }
}

/// The logits (classes, grid) resampled to `to` (linear, nearest along `separate`)
/// and their argmax, computed one output plane at a time.
fn logits_to_labels(
    logits: &[f32],
    classes: usize,
    grid: [usize; 3],
    to: [usize; 3],
    separate: Option<usize>,
) -> Grid<u8> {
    let taps: [Vec<(usize, usize, f64)>; 3] = std::array::from_fn(|a| {
        if Some(a) == separate {
            ops::nearest_taps(grid[a], to[a])
                .into_iter()
                .map(|i| (i, i, 0.0))
                .collect()
        } else {
            ops::linear_taps(grid[a], to[a])
        }
    });
    let n = grid.iter().product::<usize>();
    let at = |c: usize, z: usize, y: usize, x: usize| {
        f64::from(logits[c * n + (z * grid[1] + y) * grid[2] + x])
    };
    let mut labels = Grid::filled(to, 0u8);
    labels
        .data
        .par_chunks_mut(to[1] * to[2])
        .enumerate()
        .for_each(|(oz, plane)| {
            let (z0, z1, wz) = taps[0][oz];
            let mut line = vec![0f64; grid[2]];
            let mut best = vec![f32::MIN; to[2]];
            for (oy, out) in plane.chunks_mut(to[2]).enumerate() {
                let (y0, y1, wy) = taps[1][oy];
                best.iter_mut().for_each(|b| *b = f32::MIN);
                for c in 0..classes {
                    for (x, v) in line.iter_mut().enumerate() {
                        let a = at(c, z0, y0, x) * (1.0 - wy) + at(c, z0, y1, x) * wy;
                        let b = at(c, z1, y0, x) * (1.0 - wy) + at(c, z1, y1, x) * wy;
                        *v = a * (1.0 - wz) + b * wz;
                    }
                    for (ox, (label, b)) in out.iter_mut().zip(best.iter_mut()).enumerate() {
                        let (x0, x1, wx) = taps[2][ox];
                        // Interpolated in double precision and stored in half, as
                        // nnU-Net's resampling of its half-precision logits does.
                        let v = half::f16::from_f64(line[x0] * (1.0 - wx) + line[x1] * wx).to_f32();
                        if v > *b {
                            *b = v;
                            *label = c as u8;
                        }
                    }
                }
            }
        });
    labels
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_window_starts_follow_nnunet() {
        // The example of nnU-Net's own comment: 110 voxels, patch 64, step 0.5.
        assert_eq!(spread_window_starts(110, 64, 0.5), vec![0, 23, 46]);
        assert_eq!(spread_window_starts(64, 64, 0.5), vec![0]);
        assert_eq!(
            spread_window_starts(222, 64, 0.5),
            vec![0, 32, 63, 95, 126, 158]
        );
    }

    #[test]
    fn gaussian_peaks_at_the_centre_and_has_no_zeros() {
        let w = importance([4, 8, 16], Blending::Gaussian);
        let centre = (2 * 8 + 4) * 16 + 8;
        assert_eq!(w[centre], 10.0);
        assert!(w.iter().all(|v| *v > 0.0 && *v <= 10.0));
        // nnU-Net's compute_gaussian((4, 8, 16), 1/8, 10) at a few voxels.
        let at = |z: usize, y: usize, x: usize| f64::from(w[(z * 8 + y) * 16 + x]);
        for (value, want) in [
            (at(0, 0, 0), 3.775_134_649_330_88e-10),
            (at(3, 7, 15), 3.288_759_762_654_081e-5),
            (at(1, 2, 3), 0.008_047_330_193_221_569),
        ] {
            assert!((value / want - 1.0).abs() < 1e-4, "{value} vs {want}");
        }
    }

    #[test]
    fn mirror_combinations_in_itertools_order() {
        assert_eq!(
            mirror_combinations(&[0, 1, 2]),
            vec![
                vec![0],
                vec![1],
                vec![2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0, 1, 2]
            ]
        );
        assert!(mirror_combinations(&[]).is_empty());
    }

    #[test]
    fn the_coarse_axis_is_separate_only_beyond_three() {
        assert_eq!(separate_axis([5.0, 1.0, 1.0], [2.0, 2.0, 2.0]), Some(0));
        assert_eq!(separate_axis([2.0, 0.98, 0.98], [2.25, 2.25, 2.25]), None);
        assert_eq!(separate_axis([2.25, 2.25, 2.25], [1.0, 1.0, 4.0]), Some(2));
        assert_eq!(separate_axis([4.0, 4.0, 1.0], [1.0; 3]), None);
    }

    #[test]
    fn flips_are_their_own_inverse() {
        let data: Vec<f32> = (0..24).map(|v| v as f32).collect();
        let flipped = flip(&data, [2, 3, 4], &[0, 2]);
        assert_eq!(flipped[0], 15.0);
        assert_eq!(flip(&flipped, [2, 3, 4], &[0, 2]), data);
    }
}
