//! nnU-Net's input resampling: `skimage.transform.resize(order=3, mode="edge",
//! anti_aliasing=False)`, as nnU-Net's `resample_data_or_seg` calls it for an image, in
//! separable cubic B-spline passes (SciPy's `ndimage.zoom` with `grid_mode`).

use rayon::prelude::*;

use crate::cascade::ops::{self, Grid};

/// Samples of edge extension `scipy.ndimage` adds before a spline prefilter.
const SPLINE_PAD: usize = 12;

/// `skimage.transform.resize(order=3, mode="edge", anti_aliasing=False)` of the
/// (z, y, x) array, or with `separate` its in-plane form with nearest neighbour along
/// that axis: separable passes, each a cubic B-spline prefilter of the line extended by
/// its edge values and the spline evaluated at `(i + 0.5) * n / m - 0.5`; the output
/// clipped to the input's range (per slice of the separate axis).
pub(super) fn resample_spline(
    data: &[f32],
    shape: [usize; 3],
    to: [usize; 3],
    separate: Option<usize>,
) -> Vec<f32> {
    if shape == to {
        return data.to_vec();
    }
    let mut current = Grid {
        shape,
        data: data.to_vec(),
    };
    for axis in 0..3 {
        if Some(axis) == separate || shape[axis] == to[axis] {
            continue;
        }
        current = spline_pass(&current, axis, to[axis]);
    }
    let range = |values: &mut dyn Iterator<Item = f32>| {
        values.fold((f32::MAX, f32::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)))
    };
    match separate {
        None => {
            let (lo, hi) = range(&mut data.iter().copied());
            current.data.iter_mut().for_each(|v| *v = v.clamp(lo, hi));
        }
        Some(axis) => {
            for k in 0..shape[axis] {
                let (lo, hi) = range(&mut slice_values(data, shape, axis, k));
                let mut out_shape = current.shape;
                out_shape[axis] = shape[axis];
                for_slice(&mut current.data, out_shape, axis, k, |v| {
                    *v = v.clamp(lo, hi)
                });
            }
            if shape[axis] != to[axis] {
                let taps = ops::nearest_taps(shape[axis], to[axis]);
                current = gather(&current, axis, &taps);
            }
        }
    }
    current.data
}

/// The values of slice `k` along `axis`.
fn slice_values(
    data: &[f32],
    shape: [usize; 3],
    axis: usize,
    k: usize,
) -> Box<dyn Iterator<Item = f32> + '_> {
    let strides = [shape[1] * shape[2], shape[2], 1];
    let others: Vec<usize> = (0..3).filter(|a| *a != axis).collect();
    let (a, b) = (others[0], others[1]);
    Box::new((0..shape[a]).flat_map(move |i| {
        (0..shape[b]).map(move |j| data[k * strides[axis] + i * strides[a] + j * strides[b]])
    }))
}

fn for_slice(data: &mut [f32], shape: [usize; 3], axis: usize, k: usize, f: impl Fn(&mut f32)) {
    let strides = [shape[1] * shape[2], shape[2], 1];
    let others: Vec<usize> = (0..3).filter(|a| *a != axis).collect();
    let (a, b) = (others[0], others[1]);
    for i in 0..shape[a] {
        for j in 0..shape[b] {
            f(&mut data[k * strides[axis] + i * strides[a] + j * strides[b]]);
        }
    }
}

/// Picks source index `taps[i]` along `axis` for output index `i`.
fn gather(g: &Grid<f32>, axis: usize, taps: &[usize]) -> Grid<f32> {
    let mut shape = g.shape;
    shape[axis] = taps.len();
    let inner: usize = g.shape[axis + 1..].iter().product();
    let outer: usize = g.shape[..axis].iter().product();
    let mut data = Vec::with_capacity(shape.iter().product());
    for o in 0..outer {
        for &t in taps {
            data.extend_from_slice(&g.data[(o * g.shape[axis] + t) * inner..][..inner]);
        }
    }
    Grid { shape, data }
}

/// The cubic B-spline's pole and the weights of its four taps at fraction `t`.
const POLE: f64 = -0.267_949_192_431_122_7; // sqrt(3) - 2
fn spline_weights(t: f64) -> [f64; 4] {
    let u = 1.0 - t;
    [
        u * u * u / 6.0,
        (4.0 - 6.0 * t * t + 3.0 * t * t * t) / 6.0,
        (1.0 + 3.0 * t + 3.0 * t * t - 3.0 * t * t * t) / 6.0,
        t * t * t / 6.0,
    ]
}

/// Cubic B-spline coefficients of `lanes` interleaved lines of `n` samples each
/// (`c[k * lanes + l]`), mirror boundaries (as `scipy.ndimage.spline_filter1d`).
fn prefilter(c: &mut [f64], n: usize, lanes: usize) {
    let z = POLE;
    let gain = (1.0 - z) * (1.0 - 1.0 / z);
    c.iter_mut().for_each(|v| *v *= gain);
    let z_n1 = z.powi(n as i32 - 1);
    for l in 0..lanes {
        let at = |k: usize| k * lanes + l;
        let mut sum = c[at(0)] + z_n1 * c[at(n - 1)];
        let mut zi = z;
        for k in 1..n - 1 {
            sum += zi * (c[at(k)] + z_n1 * c[at(n - 1 - k)]);
            zi *= z;
        }
        c[at(0)] = sum / (1.0 - z_n1 * z_n1);
    }
    for k in 1..n {
        let (before, rest) = c.split_at_mut(k * lanes);
        let previous = &before[(k - 1) * lanes..];
        for (v, p) in rest[..lanes].iter_mut().zip(previous) {
            *v += z * p;
        }
    }
    for l in 0..lanes {
        let last = (n - 1) * lanes + l;
        c[last] = (z * c[last - lanes] + c[last]) * z / (z * z - 1.0);
    }
    for k in (0..n - 1).rev() {
        let (head, tail) = c.split_at_mut((k + 1) * lanes);
        let current = &mut head[k * lanes..];
        for (v, next) in current.iter_mut().zip(&tail[..lanes]) {
            *v = z * (next - *v);
        }
    }
}

/// One spline pass along `axis` to `m` samples, parallel over lanes of the lines.
fn spline_pass(g: &Grid<f32>, axis: usize, m: usize) -> Grid<f32> {
    let n = g.shape[axis];
    let inner: usize = g.shape[axis + 1..].iter().product();
    let outer: usize = g.shape[..axis].iter().product();
    let padded = n + 2 * SPLINE_PAD;
    let taps: Vec<(usize, [f64; 4])> = (0..m)
        .map(|i| {
            let x = (i as f64 + 0.5) * n as f64 / m as f64 - 0.5 + SPLINE_PAD as f64;
            let k = x.floor();
            (k as usize - 1, spline_weights(x - k))
        })
        .collect();
    const LANES: usize = 64;
    let blocks: Vec<(usize, usize)> = (0..outer)
        .flat_map(|o| (0..inner).step_by(LANES).map(move |j| (o, j)))
        .collect();
    let results: Vec<Vec<f32>> = blocks
        .par_iter()
        .map(|&(o, j0)| {
            let lanes = LANES.min(inner - j0);
            let mut c = vec![0f64; padded * lanes];
            for k in 0..padded {
                let source = k.saturating_sub(SPLINE_PAD).min(n - 1);
                let row = &g.data[(o * n + source) * inner + j0..][..lanes];
                for (v, s) in c[k * lanes..(k + 1) * lanes].iter_mut().zip(row) {
                    *v = f64::from(*s);
                }
            }
            prefilter(&mut c, padded, lanes);
            let mut out = vec![0f32; m * lanes];
            for (i, (k, w)) in taps.iter().enumerate() {
                for l in 0..lanes {
                    let v: f64 = (0..4).map(|t| w[t] * c[(k + t) * lanes + l]).sum();
                    out[i * lanes + l] = v as f32;
                }
            }
            out
        })
        .collect();
    let mut shape = g.shape;
    shape[axis] = m;
    let mut data = vec![0f32; shape.iter().product()];
    for (&(o, j0), out) in blocks.iter().zip(results) {
        let lanes = out.len() / m;
        for i in 0..m {
            data[(o * m + i) * inner + j0..][..lanes].copy_from_slice(&out[i * lanes..][..lanes]);
        }
    }
    Grid { shape, data }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spline_resampling_keeps_a_linear_ramp_and_constant_edges() {
        // A cubic spline reproduces a straight line exactly away from the edges.
        let n = 40;
        let data: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let out = resample_spline(&data, [1, 1, n], [1, 1, 20], None);
        for (i, v) in out.iter().enumerate().skip(3).take(14) {
            let expected = (i as f32 + 0.5) * 2.0 - 0.5;
            assert!((v - expected).abs() < 1e-3, "{i}: {v} vs {expected}");
        }
        assert!(out.iter().all(|v| (0.0..=39.0).contains(v)));
        let flat = resample_spline(&[5.0; 27], [3, 3, 3], [5, 4, 2], None);
        assert!(flat.iter().all(|v| (v - 5.0).abs() < 1e-5));
    }

    #[test]
    fn spline_resampling_matches_skimage() {
        // skimage.transform.resize(a, shape, order=3, mode="edge", anti_aliasing=False)
        // of this array, computed with scikit-image 0.26 / SciPy 1.17.
        let mut a = Vec::new();
        for z in 0..6 {
            for y in 0..7 {
                for x in 0..9 {
                    let (z, y, x) = (z as f64, y as f64, x as f64);
                    let v = (0.9 * z + 0.3 * y * y).sin() * 100.0 + (0.7 * x).cos() * 50.0 + z * y;
                    a.push(v as f32);
                }
            }
        }
        let close = |got: f32, want: f64| (f64::from(got) - want).abs() < 1e-3;
        let o = resample_spline(&a, [6, 7, 9], [9, 4, 13], None);
        let at = |z: usize, y: usize, x: usize| o[(z * 4 + y) * 13 + x];
        let sum: f64 = o.iter().map(|v| f64::from(*v)).sum();
        assert!((sum - 5_406.527_910_760_921).abs() < 1e-2, "{sum}");
        assert!(close(at(0, 0, 0), 50.457_857_217_073_89));
        assert!(close(at(4, 2, 6), 22.233_397_760_325_74));
        assert!(close(at(8, 3, 12), 72.208_999_518_113_84));
        assert!(close(at(3, 1, 9), -7.542_386_600_537_713));
        // Clipped to the input's range.
        assert!(close(
            o.iter().copied().fold(f32::MAX, f32::min),
            -146.727_584_838_867_2
        ));
        let o = resample_spline(&a, [6, 7, 9], [6, 4, 13], None);
        assert!(close(o[(5 * 4 + 3) * 13 + 12], 72.434_889_285_917_99));
        assert!(close(o[(2 * 4 + 1) * 13 + 4], -12.839_439_064_614_627));
    }
}
