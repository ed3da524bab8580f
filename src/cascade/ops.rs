//! The array operations of the cascade, pure and exactly specified so that the Python
//! reference (`scripts/reference_cascade.py`) computes the same thing: grid-aligned
//! resampling (voxel centres map as `(i + 0.5) * n_src / n_dst - 0.5`; linear passes
//! along z, then y, then x), HU windowing,
//! sliding-window positions and blending weights, box dilation and erosion, 6-connected
//! components and hole filling (as `scipy.ndimage` with its default structures).

use rayon::prelude::*;

pub use crate::grid::{Box3, Grid};

/// Applies `f` to every line along `axis` (0 = z, 1 = y, 2 = x) of the (z, y, x) array
/// `data` of `shape`, giving it the line's values and where to write the result line
/// of `out_len` values.
fn map_lines<T: Copy, U: Copy + Default>(
    data: &[T],
    shape: [usize; 3],
    axis: usize,
    out_len: usize,
    mut f: impl FnMut(&[T], &mut [U]),
) -> Grid<U> {
    let mut out_shape = shape;
    out_shape[axis] = out_len;
    let mut out = Grid::filled(out_shape, U::default());
    let stride = |s: [usize; 3]| -> [usize; 3] { [s[1] * s[2], s[2], 1] };
    let (in_stride, out_stride) = (stride(shape), stride(out_shape));
    let others: Vec<usize> = (0..3).filter(|a| *a != axis).collect();
    let (a0, a1) = (others[0], others[1]);
    let mut line = vec![data[0]; shape[axis]];
    let mut result = vec![U::default(); out_len];
    for i in 0..shape[a0] {
        for j in 0..shape[a1] {
            let base_in = i * in_stride[a0] + j * in_stride[a1];
            for (k, v) in line.iter_mut().enumerate() {
                *v = data[base_in + k * in_stride[axis]];
            }
            f(&line, &mut result);
            let base_out = i * out_stride[a0] + j * out_stride[a1];
            for (k, v) in result.iter().enumerate() {
                out.data[base_out + k * out_stride[axis]] = *v;
            }
        }
    }
    out
}

/// The array `data` of `shape` with its axes rearranged: output axis `i` is input axis
/// `axes[i]`, reversed where `reversed[i]`. Exact and invertible.
pub fn rearrange<T: Copy + Send + Sync>(
    data: &[T],
    shape: [usize; 3],
    axes: [usize; 3],
    reversed: [bool; 3],
) -> Grid<T> {
    let out_shape: [usize; 3] = std::array::from_fn(|i| shape[axes[i]]);
    let stride = [shape[1] * shape[2], shape[2], 1];
    // Where output voxel (0, 0, 0) is in the input, and the input step per output index
    // along each output axis.
    let mut base = 0isize;
    let mut step = [0isize; 3];
    for m in 0..3 {
        let s = stride[axes[m]] as isize;
        if reversed[m] {
            base += (shape[axes[m]] as isize - 1) * s;
            step[m] = -s;
        } else {
            step[m] = s;
        }
    }
    let Some(&first) = data.first() else {
        return Grid {
            shape: out_shape,
            data: Vec::new(),
        };
    };
    let plane = out_shape[1] * out_shape[2];
    let mut out = vec![first; data.len()];
    out.par_chunks_mut(plane)
        .enumerate()
        .for_each(|(z, chunk)| {
            let zbase = base + z as isize * step[0];
            for (y, row) in chunk.chunks_mut(out_shape[2]).enumerate() {
                let mut i = zbase + y as isize * step[1];
                for v in row {
                    *v = data[i as usize];
                    i += step[2];
                }
            }
        });
    Grid {
        shape: out_shape,
        data: out,
    }
}

/// The grid shape that covers `shape` voxels of `spacing` mm at `target` mm.
pub fn target_shape(shape: [usize; 3], spacing: [f64; 3], target: [f64; 3]) -> [usize; 3] {
    std::array::from_fn(|i| ((shape[i] as f64 * spacing[i] / target[i]).round() as usize).max(1))
}

/// Where output voxel `i` of `n_dst` falls in a line of `n_src` source voxels.
fn source_coordinate(i: usize, n_src: usize, n_dst: usize) -> f64 {
    ((i as f64 + 0.5) * n_src as f64 / n_dst as f64 - 0.5).clamp(0.0, (n_src - 1) as f64)
}

/// Linear interpolation weights: (lower index, upper index, upper weight) per output.
pub fn linear_taps(n_src: usize, n_dst: usize) -> Vec<(usize, usize, f64)> {
    (0..n_dst)
        .map(|i| {
            let c = source_coordinate(i, n_src, n_dst);
            let i0 = c.floor() as usize;
            let i1 = (i0 + 1).min(n_src - 1);
            (i0, i1, c - i0 as f64)
        })
        .collect()
}

/// Nearest-neighbour source index per output voxel.
pub fn nearest_taps(n_src: usize, n_dst: usize) -> Vec<usize> {
    (0..n_dst)
        .map(|i| (((i as f64 + 0.5) * n_src as f64 / n_dst as f64).floor() as usize).min(n_src - 1))
        .collect()
}

/// One linear pass along `axis`: every output line of the (outer, n, inner) view is
/// the weighted sum of two source lines, so a pass reads only the source planes, rows
/// or voxels its taps name (a 1,200-slice series going to 100 slices reads 200 slices).
fn linear_pass(data: &[f32], shape: [usize; 3], axis: usize, n: usize) -> Grid<f32> {
    let taps = linear_taps(shape[axis], n);
    let inner: usize = shape[axis + 1..].iter().product();
    let m = shape[axis];
    let mut out_shape = shape;
    out_shape[axis] = n;
    let mut out = Grid::filled(out_shape, 0f32);
    let fill = |o: usize, j: usize, dst: &mut [f32]| {
        let (i0, i1, w) = taps[j];
        let w = w as f32;
        let a = &data[(o * m + i0) * inner..][..inner];
        let b = &data[(o * m + i1) * inner..][..inner];
        for ((d, a), b) in dst.iter_mut().zip(a).zip(b) {
            *d = *a * (1.0 - w) + *b * w;
        }
    };
    if inner >= 256 {
        out.data
            .par_chunks_mut(inner)
            .enumerate()
            .for_each(|(k, dst)| fill(k / n, k % n, dst));
    } else {
        out.data
            .par_chunks_mut(n * inner)
            .enumerate()
            .for_each(|(o, line)| {
                for (j, dst) in line.chunks_mut(inner).enumerate() {
                    fill(o, j, dst);
                }
            });
    }
    out
}

/// Trilinear resampling of (z, y, x) `data`, separable: z, then y, then x, so that the
/// cost follows the output grid, not the number of source slices.
pub fn resample_linear(data: &[f32], shape: [usize; 3], to: [usize; 3]) -> Grid<f32> {
    let mut current: Option<Grid<f32>> = None;
    for axis in [0, 1, 2] {
        let (d, s) = match &current {
            Some(g) => (g.data.as_slice(), g.shape),
            None => (data, shape),
        };
        if s[axis] != to[axis] {
            current = Some(linear_pass(d, s, axis, to[axis]));
        }
    }
    current.unwrap_or_else(|| Grid {
        shape,
        data: data.to_vec(),
    })
}

/// Nearest-neighbour resampling (for labels and masks), one output plane per task:
/// each output row is built once per distinct source row and repeated rows are copies.
/// The output starts as untouched zeroed pages ([`crate::memory::zeroed`]), so the first
/// write to a page happens in parallel.
pub fn resample_nearest<T: Copy + Default + Send + Sync>(
    data: &[T],
    shape: [usize; 3],
    to: [usize; 3],
) -> Grid<T> {
    let (tz, ty, tx) = (
        nearest_taps(shape[0], to[0]),
        nearest_taps(shape[1], to[1]),
        nearest_taps(shape[2], to[2]),
    );
    let mut out = crate::memory::zeroed(to.iter().product());
    out.par_chunks_mut((to[1] * to[2]).max(1))
        .zip(&tz)
        .for_each(|(plane, &z)| {
            for (j, &y) in ty.iter().enumerate() {
                let at = j * to[2];
                if j > 0 && ty[j - 1] == y {
                    plane.copy_within(at - to[2]..at, at);
                    continue;
                }
                let base = (z * shape[1] + y) * shape[2];
                for (v, x) in plane[at..at + to[2]].iter_mut().zip(&tx) {
                    *v = data[base + x];
                }
            }
        });
    Grid {
        shape: to,
        data: out,
    }
}

/// How many outputs of a nearest resampling from `n_src` to `n_dst` take each source
/// index: with it, counts over the resampled grid come from the source grid.
pub fn nearest_multiplicity(n_src: usize, n_dst: usize) -> Vec<u64> {
    let mut m = vec![0u64; n_src];
    nearest_taps(n_src, n_dst).iter().for_each(|i| m[*i] += 1);
    m
}

/// How HU values become network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Normalization {
    /// Clip to the window, map it linearly to [-1, 1].
    Window,
    /// Clip to the window, subtract the mean and divide by the standard deviation of
    /// the clipped volume (zero mean, unit variance).
    Zscore,
    /// Clip to the window, subtract a fixed mean and divide by a fixed standard
    /// deviation (nnU-Net's CT normalisation, with the training foreground's).
    Ct,
}

/// Normalises HU in place; returns the value a voxel at the window's low end gets
/// (used to pad volumes smaller than a patch). `stats` is the (mean, std) of
/// [`Normalization::Ct`].
pub fn normalize(
    g: &mut [f32],
    window: [f32; 2],
    mode: Normalization,
    stats: Option<[f32; 2]>,
) -> f32 {
    let [lo, hi] = window;
    g.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
    let (offset, scale) = match (mode, stats) {
        (Normalization::Ct, Some([mean, std])) => (f64::from(mean), f64::from(std).max(1e-8)),
        (Normalization::Window | Normalization::Ct, _) => {
            (f64::from(lo + hi) / 2.0, f64::from(hi - lo) / 2.0)
        }
        (Normalization::Zscore, _) => {
            let n = g.len().max(1) as f64;
            let mean = g.iter().map(|v| f64::from(*v)).sum::<f64>() / n;
            let var = g
                .iter()
                .map(|v| (f64::from(*v) - mean).powi(2))
                .sum::<f64>()
                / n;
            (mean, var.sqrt().max(1e-6))
        }
    };
    let (offset, scale) = (offset as f32, scale as f32);
    g.iter_mut().for_each(|v| *v = (*v - offset) / scale);
    (lo - offset) / scale
}

/// Start positions of patches of length `p` with a fixed stride `step` along a line of
/// `n`, the last one flush with the end.
pub fn window_starts(n: usize, p: usize, step: usize) -> Vec<usize> {
    if n <= p {
        return vec![0];
    }
    let mut starts: Vec<usize> = (0..).map(|k| k * step).take_while(|s| s + p < n).collect();
    starts.push(n - p);
    starts
}

/// The step for a patch length and an overlap fraction.
pub fn step(p: usize, overlap: f64) -> usize {
    ((p as f64 * (1.0 - overlap)).floor() as usize).max(1)
}

/// How overlapping patch predictions are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Blending {
    /// Every voxel of a patch counts the same.
    Constant,
    /// Gaussian importance, sigma = patch / 8 per axis, peak 1 at the centre.
    Gaussian,
}

/// Per-voxel weights of one patch.
pub fn blend_weights(patch: [usize; 3], mode: Blending) -> Vec<f32> {
    let axis = |p: usize| -> Vec<f64> {
        match mode {
            Blending::Constant => vec![1.0; p],
            Blending::Gaussian => {
                let sigma = p as f64 / 8.0;
                let c = (p as f64 - 1.0) / 2.0;
                (0..p)
                    .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * sigma * sigma)).exp())
                    .collect()
            }
        }
    };
    let (wz, wy, wx) = (axis(patch[0]), axis(patch[1]), axis(patch[2]));
    let mut w = Vec::with_capacity(patch.iter().product());
    for a in &wz {
        for b in &wy {
            for c in &wx {
                w.push(((a * b * c) as f32).max(1e-6));
            }
        }
    }
    w
}

/// Box dilation by `r` voxels (a (2r+1)^3 cube), outside the grid counting as false.
pub fn dilate(mask: &Grid<bool>, r: usize) -> Grid<bool> {
    box_filter(mask, r, true)
}

/// Box erosion by `r` voxels, outside the grid counting as false (borders erode).
pub fn erode(mask: &Grid<bool>, r: usize) -> Grid<bool> {
    box_filter(mask, r, false)
}

fn box_filter(mask: &Grid<bool>, r: usize, any: bool) -> Grid<bool> {
    if r == 0 {
        return mask.clone();
    }
    let mut g = mask.clone();
    for axis in [2, 1, 0] {
        let n = g.shape[axis];
        g = map_lines(&g.data, g.shape, axis, n, |line, out| {
            // Prefix counts of true voxels give each window's count in O(1).
            let mut prefix = vec![0usize; n + 1];
            for i in 0..n {
                prefix[i + 1] = prefix[i] + usize::from(line[i]);
            }
            for (i, o) in out.iter_mut().enumerate() {
                let lo = i.saturating_sub(r);
                let hi = (i + r + 1).min(n);
                let count = prefix[hi] - prefix[lo];
                // Erosion: every voxel of the full window, inside the grid, is true.
                *o = if any { count > 0 } else { count == 2 * r + 1 };
            }
        });
    }
    g
}

/// Labels 6-connected components of `mask` in raster order; returns (labels, sizes).
fn components(mask: &Grid<bool>) -> (Vec<u32>, Vec<usize>) {
    let [d, h, w] = mask.shape;
    let mut labels = vec![0u32; mask.len()];
    let mut sizes = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask.data[start] || labels[start] != 0 {
            continue;
        }
        let label = sizes.len() as u32 + 1;
        let mut size = 0;
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            size += 1;
            let (z, y, x) = (i / (h * w), (i / w) % h, i % w);
            let mut visit = |j: usize| {
                if mask.data[j] && labels[j] == 0 {
                    labels[j] = label;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1)
            }
            if x + 1 < w {
                visit(i + 1)
            }
            if y > 0 {
                visit(i - w)
            }
            if y + 1 < h {
                visit(i + w)
            }
            if z > 0 {
                visit(i - h * w)
            }
            if z + 1 < d {
                visit(i + h * w)
            }
        }
        sizes.push(size);
    }
    (labels, sizes)
}

/// The box of each id 1..=n among `ids` (one per voxel of a grid of `shape` in raster
/// order; 0 is none), at index id - 1; None for an id that does not occur.
pub fn id_boxes(
    shape: [usize; 3],
    ids: impl Iterator<Item = usize>,
    n: usize,
) -> Vec<Option<Box3>> {
    let [_, h, w] = shape;
    let mut boxes: Vec<Option<Box3>> = vec![None; n];
    for (i, id) in ids.enumerate().filter(|(_, id)| *id != 0) {
        let at = [i / (h * w), (i / w) % h, i % w];
        let b = boxes[id - 1].get_or_insert(Box3 {
            lo: at,
            end: at.map(|v| v + 1),
        });
        for (axis, v) in at.into_iter().enumerate() {
            b.lo[axis] = b.lo[axis].min(v);
            b.end[axis] = b.end[axis].max(v + 1);
        }
    }
    boxes
}

/// The box of each 6-connected component of `mask`, in raster order of the
/// components' first voxels.
pub fn component_boxes(mask: &Grid<bool>) -> Vec<Box3> {
    let (labels, sizes) = components(mask);
    id_boxes(mask.shape, labels.iter().map(|l| *l as usize), sizes.len())
        .into_iter()
        .flatten()
        .collect()
}

/// The part `within` of the array `data` of `shape`.
pub fn crop<T: Copy>(data: &[T], shape: [usize; 3], within: Box3) -> Grid<T> {
    let (lo, size) = (within.lo, within.size());
    let mut out = Vec::with_capacity(size.iter().product());
    for z in lo[0]..lo[0] + size[0] {
        for y in lo[1]..lo[1] + size[1] {
            let row = (z * shape[1] + y) * shape[2] + lo[2];
            out.extend_from_slice(&data[row..row + size[2]]);
        }
    }
    Grid {
        shape: size,
        data: out,
    }
}

/// Writes `part` into `into` at `lo` (the inverse of [`crop`]).
pub fn paste<T: Copy>(into: &mut Grid<T>, part: &Grid<T>, lo: [usize; 3]) {
    for z in 0..part.shape[0] {
        for y in 0..part.shape[1] {
            let from = part.index(z, y, 0);
            let to = into.index(lo[0] + z, lo[1] + y, lo[2]);
            into.data[to..to + part.shape[2]]
                .copy_from_slice(&part.data[from..from + part.shape[2]]);
        }
    }
}

/// The largest 6-connected component (the first in raster order on a tie).
pub fn largest_component(mask: &Grid<bool>) -> Grid<bool> {
    let (labels, sizes) = components(mask);
    let Some(best) = sizes
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, usize)>, (i, s)| match best {
            Some((_, bs)) if bs >= *s => best,
            _ => Some((i, *s)),
        })
        .map(|(i, _)| i as u32 + 1)
    else {
        return mask.clone();
    };
    Grid {
        shape: mask.shape,
        data: labels.iter().map(|l| *l == best).collect(),
    }
}

/// Fills background regions not 6-connected to the grid's border.
pub fn fill_holes(mask: &Grid<bool>) -> Grid<bool> {
    let [d, h, w] = mask.shape;
    let background = Grid {
        shape: mask.shape,
        data: mask.data.iter().map(|v| !v).collect(),
    };
    let (labels, _) = components(&background);
    let mut outside = std::collections::HashSet::new();
    for z in 0..d {
        for y in 0..h {
            for x in 0..w {
                if z == 0 || y == 0 || x == 0 || z + 1 == d || y + 1 == h || x + 1 == w {
                    let l = labels[(z * h + y) * w + x];
                    if l != 0 {
                        outside.insert(l);
                    }
                }
            }
        }
    }
    Grid {
        shape: mask.shape,
        data: labels
            .iter()
            .map(|l| *l == 0 || !outside.contains(l))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(v: &[f32]) -> Grid<f32> {
        Grid {
            shape: [1, 1, v.len()],
            data: v.to_vec(),
        }
    }

    #[test]
    fn linear_resampling_matches_hand_computation() {
        // Downsampling 4 -> 2: outputs sit at source coordinates 0.5 and 2.5.
        assert_eq!(
            resample_linear(&[0., 10., 20., 30.], [1, 1, 4], [1, 1, 2]).data,
            vec![5.0, 25.0]
        );
        // Upsampling 2 -> 4: coordinates -0.25 (clamped to 0), 0.25, 0.75, 1.25 (clamped to 1).
        assert_eq!(
            resample_linear(&[0., 8.], [1, 1, 2], [1, 1, 4]).data,
            vec![0.0, 2.0, 6.0, 8.0]
        );
        // Separable in 3D: a 2x2x2 cube averaged to one voxel.
        let cube: Vec<f32> = (0..8).map(|v| v as f32).collect();
        assert_eq!(resample_linear(&cube, [2, 2, 2], [1, 1, 1]).data, vec![3.5]);
        // Along y only: the z and x lines stay apart.
        let slab: Vec<f32> = vec![0., 1., 10., 11.];
        assert_eq!(
            resample_linear(&slab, [1, 2, 2], [1, 1, 2]).data,
            vec![5.0, 6.0]
        );
    }

    #[test]
    fn nearest_resampling_and_target_shapes() {
        let labels = [1u8, 2, 3];
        assert_eq!(
            resample_nearest(&labels, [1, 1, 3], [1, 1, 6]).data,
            vec![1, 1, 2, 2, 3, 3]
        );
        assert_eq!(
            resample_nearest(&labels, [1, 1, 3], [1, 1, 1]).data,
            vec![2]
        );
        assert_eq!(
            resample_nearest(&[1u8, 2, 3, 4], [2, 2, 1], [1, 2, 1]).data,
            vec![3, 4]
        );
        assert_eq!(
            target_shape([20, 512, 512], [2.0, 0.9765625, 0.9765625], [6.0, 6.0, 6.0]),
            [7, 83, 83]
        );
        assert_eq!(target_shape([1, 1, 1], [1.0; 3], [6.0; 3]), [1, 1, 1]);
        // 3 -> 7 by nearest: sources floor((i + 0.5) * 3 / 7) = 0, 0, 1, 1, 1, 2, 2.
        assert_eq!(nearest_taps(3, 7), vec![0, 0, 1, 1, 1, 2, 2]);
        assert_eq!(nearest_multiplicity(3, 7), vec![2, 3, 2]);
        assert_eq!(nearest_multiplicity(4, 2), vec![0, 1, 0, 1]);
    }

    #[test]
    fn windowing() {
        let mut g = line(&[-1000.0, -500.0, 0.0, 250.0, 2000.0]);
        let pad = normalize(&mut g.data, [-500.0, 500.0], Normalization::Window, None);
        assert_eq!(g.data, vec![-1.0, -1.0, 0.0, 0.5, 1.0]);
        assert_eq!(pad, -1.0);
        let mut z = line(&[0.0, 10.0]);
        normalize(&mut z.data, [-100.0, 100.0], Normalization::Zscore, None);
        assert_eq!(z.data, vec![-1.0, 1.0]);
        // nnU-Net's CT normalisation: clip, then a fixed mean and std.
        let mut ct = line(&[-1000.0, 40.0, 90.0]);
        let pad = normalize(
            &mut ct.data,
            [-60.0, 100.0],
            Normalization::Ct,
            Some([40.0, 50.0]),
        );
        assert_eq!(ct.data, vec![-2.0, 0.0, 1.0]);
        assert_eq!(pad, -2.0);
    }

    #[test]
    fn sliding_window_positions_cover_the_line() {
        assert_eq!(window_starts(10, 4, 2), vec![0, 2, 4, 6]);
        assert_eq!(window_starts(11, 4, 2), vec![0, 2, 4, 6, 7]);
        assert_eq!(window_starts(3, 4, 2), vec![0]);
        assert_eq!(window_starts(4, 4, 2), vec![0]);
        assert_eq!(step(64, 0.5), 32);
        assert_eq!(step(1, 0.9), 1);
    }

    #[test]
    fn gaussian_blending_peaks_at_the_centre() {
        let w = blend_weights([1, 1, 8], Blending::Gaussian);
        // sigma = 1, centre 3.5: exp(-12.25/2), exp(-6.25/2), exp(-2.25/2), exp(-0.25/2)...
        let expected: Vec<f32> = [12.25f64, 6.25, 2.25, 0.25, 0.25, 2.25, 6.25, 12.25]
            .iter()
            .map(|d| ((-d / 2.0).exp() as f32).max(1e-6))
            .collect();
        assert_eq!(w, expected);
        assert_eq!(blend_weights([2, 2, 2], Blending::Constant), vec![1.0; 8]);
    }

    fn mask(shape: [usize; 3], on: &[[usize; 3]]) -> Grid<bool> {
        let mut g = Grid::filled(shape, false);
        for p in on {
            let i = g.index(p[0], p[1], p[2]);
            g.data[i] = true;
        }
        g
    }

    #[test]
    fn box_dilation_and_erosion() {
        let d = dilate(&mask([3, 3, 3], &[[1, 1, 1]]), 1);
        assert!(d.data.iter().all(|v| *v));
        let corner = dilate(&mask([3, 3, 3], &[[0, 0, 0]]), 1);
        assert_eq!(corner.data.iter().filter(|v| **v).count(), 8);
        let e = erode(&Grid::filled([3, 3, 3], true), 1);
        assert_eq!(
            e.data.iter().filter(|v| **v).count(),
            1,
            "only the centre survives"
        );
    }

    #[test]
    fn components_and_holes() {
        let m = mask(
            [1, 3, 5],
            &[[0, 0, 0], [0, 1, 0], [0, 0, 3], [0, 0, 4], [0, 1, 4]],
        );
        let largest = largest_component(&m);
        assert_eq!(largest, mask([1, 3, 5], &[[0, 0, 3], [0, 0, 4], [0, 1, 4]]));
        // Boxes per component, in raster order of their first voxels.
        assert_eq!(
            component_boxes(&m),
            vec![
                Box3 {
                    lo: [0, 0, 0],
                    end: [1, 2, 1]
                },
                Box3 {
                    lo: [0, 0, 3],
                    end: [1, 2, 5]
                }
            ]
        );
        // A hollow 3x3x3 shell in a 5x5x5 grid: the centre is a hole.
        let mut shell = Grid::filled([5, 5, 5], false);
        for z in 1..4 {
            for y in 1..4 {
                for x in 1..4 {
                    let i = shell.index(z, y, x);
                    shell.data[i] = (z, y, x) != (2, 2, 2);
                }
            }
        }
        let filled = fill_holes(&shell);
        assert!(filled.data[filled.index(2, 2, 2)]);
        assert_eq!(filled.data.iter().filter(|v| **v).count(), 27);
    }
}
