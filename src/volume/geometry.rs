//! Slice geometry (PS3.3 C.7.6.2): slices are ordered by their position along the
//! slice normal (row direction × column direction), never by Instance Number or file
//! order, and the stack is checked before any pixel is decoded. Pure: no I/O.

use serde::Serialize;

/// Where one slice lies, as its header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// Image Orientation (Patient): row direction, then column direction.
    pub orientation: [f64; 6],
    /// Image Position (Patient): centre of the first transmitted voxel, in mm.
    pub position: [f64; 3],
    /// Pixel Spacing: between rows, then between columns, in mm.
    pub pixel_spacing: [f64; 2],
    pub rows: u32,
    pub columns: u32,
}

/// The checked geometry of a stack.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Geometry {
    /// Indices of the input slices, in ascending position along the normal.
    #[serde(skip)]
    pub order: Vec<usize>,
    /// Voxel spacing (z, y, x) in mm.
    pub spacing: [f64; 3],
    /// Position of voxel (0, 0, 0) in patient coordinates, mm.
    pub origin: [f64; 3],
    /// Direction cosines: row (x index), column (y index), normal (z index).
    pub direction: [[f64; 3]; 3],
}

/// Limits of what is accepted as one regular stack.
#[derive(Debug, Clone, Copy)]
pub struct Tolerances {
    /// Direction cosines may differ by this much between slices.
    pub orientation: f64,
    /// Pixel spacing may differ by this many mm between slices.
    pub pixel_spacing_mm: f64,
    /// A slice gap may differ from the mean by this fraction of it...
    pub spacing_fraction: f64,
    /// ...or by this many mm, whichever is larger.
    pub spacing_mm: f64,
    /// Largest angle between the slice normal and the stacking direction.
    pub tilt_degrees: f64,
}

impl Default for Tolerances {
    fn default() -> Self {
        Self {
            orientation: 1e-3,
            pixel_spacing_mm: 1e-3,
            spacing_fraction: 0.02,
            spacing_mm: 0.01,
            tilt_degrees: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("only {found} slices, at least {min} needed")]
    TooFewSlices { found: usize, min: usize },
    #[error(
        "Image Orientation (Patient) of slice {index} is not a pair of unit, orthogonal directions"
    )]
    DegenerateOrientation { index: usize },
    #[error("slice {index} has orientation {found:?}, the first has {expected:?}")]
    OrientationInconsistent {
        index: usize,
        expected: [f64; 6],
        found: [f64; 6],
    },
    #[error("slice {index} is {found_rows}x{found_columns}, the first is {rows}x{columns}")]
    DimensionsInconsistent {
        index: usize,
        rows: u32,
        columns: u32,
        found_rows: u32,
        found_columns: u32,
    },
    #[error("slice {index} has pixel spacing {found:?} mm, the first has {expected:?} mm")]
    PixelSpacingInconsistent {
        index: usize,
        expected: [f64; 2],
        found: [f64; 2],
    },
    #[error(
        "slices {index} and {next} lie at the same position {position_mm:.3} mm along the normal (two phases in one series?)"
    )]
    DuplicatePosition {
        index: usize,
        next: usize,
        position_mm: f64,
    },
    #[error(
        "a slice is missing after position {after_mm:.3} mm: gap of {found_mm:.3} mm where slices are {expected_mm:.3} mm apart"
    )]
    MissingSlice {
        after_mm: f64,
        expected_mm: f64,
        found_mm: f64,
    },
    #[error(
        "slice spacing is not uniform: {found_mm:.3} mm after position {after_mm:.3} mm, expected {expected_mm:.3} mm"
    )]
    SliceSpacingIrregular {
        after_mm: f64,
        expected_mm: f64,
        found_mm: f64,
    },
    #[error("gantry tilt: slices are stacked {degrees:.2}° off their normal")]
    GantryTilt { degrees: f64 },
}

impl GeometryError {
    /// A stable code for APIs, logs and tests.
    pub fn code(&self) -> &'static str {
        match self {
            GeometryError::TooFewSlices { .. } => "too_few_slices",
            GeometryError::DegenerateOrientation { .. } => "degenerate_orientation",
            GeometryError::OrientationInconsistent { .. } => "orientation_inconsistent",
            GeometryError::DimensionsInconsistent { .. } => "dimensions_inconsistent",
            GeometryError::PixelSpacingInconsistent { .. } => "pixel_spacing_inconsistent",
            GeometryError::DuplicatePosition { .. } => "duplicate_position",
            GeometryError::MissingSlice { .. } => "missing_slice",
            GeometryError::SliceSpacingIrregular { .. } => "slice_spacing_irregular",
            GeometryError::GantryTilt { .. } => "gantry_tilt",
        }
    }
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}

/// Orders and checks a stack of slices.
pub fn arrange(
    slices: &[Placement],
    min_slices: usize,
    tol: &Tolerances,
) -> Result<Geometry, GeometryError> {
    let min = min_slices.max(2);
    if slices.len() < min {
        return Err(GeometryError::TooFewSlices {
            found: slices.len(),
            min,
        });
    }
    let first = &slices[0];
    for (index, s) in slices.iter().enumerate() {
        if s.orientation
            .iter()
            .zip(first.orientation)
            .any(|(a, b)| (*a - b).abs() > tol.orientation)
        {
            return Err(GeometryError::OrientationInconsistent {
                index,
                expected: first.orientation,
                found: s.orientation,
            });
        }
        if (s.rows, s.columns) != (first.rows, first.columns) {
            return Err(GeometryError::DimensionsInconsistent {
                index,
                rows: first.rows,
                columns: first.columns,
                found_rows: s.rows,
                found_columns: s.columns,
            });
        }
        if s.pixel_spacing
            .iter()
            .zip(first.pixel_spacing)
            .any(|(a, b)| (*a - b).abs() > tol.pixel_spacing_mm)
        {
            return Err(GeometryError::PixelSpacingInconsistent {
                index,
                expected: first.pixel_spacing,
                found: s.pixel_spacing,
            });
        }
    }
    let o = first.orientation;
    let row = [o[0], o[1], o[2]];
    let col = [o[3], o[4], o[5]];
    let normal = cross(row, col);
    let unit = |v: [f64; 3]| (norm(v) - 1.0).abs() < 1e-2;
    if !unit(row) || !unit(col) || dot(row, col).abs() > 1e-2 || !unit(normal) {
        return Err(GeometryError::DegenerateOrientation { index: 0 });
    }
    let along: Vec<f64> = slices.iter().map(|s| dot(s.position, normal)).collect();
    let mut order: Vec<usize> = (0..slices.len()).collect();
    order.sort_by(|&a, &b| along[a].total_cmp(&along[b]));

    for pair in order.windows(2) {
        let gap = along[pair[1]] - along[pair[0]];
        if gap < tol.spacing_mm {
            return Err(GeometryError::DuplicatePosition {
                index: pair[0],
                next: pair[1],
                position_mm: along[pair[0]],
            });
        }
    }
    let (lo, hi) = (order[0], order[order.len() - 1]);
    let step = sub(slices[hi].position, slices[lo].position);
    let span = dot(step, normal);
    let tilt = (norm(cross(step, normal)) / norm(step))
        .clamp(0.0, 1.0)
        .asin()
        .to_degrees();
    if tilt > tol.tilt_degrees {
        return Err(GeometryError::GantryTilt { degrees: tilt });
    }
    let mean = span / (order.len() - 1) as f64;
    let allowed = (mean * tol.spacing_fraction).max(tol.spacing_mm);
    // Gaps first: a missing slice makes every other spacing look irregular.
    let gaps: Vec<(f64, f64)> = order
        .windows(2)
        .map(|p| (along[p[0]], along[p[1]] - along[p[0]]))
        .collect();
    let typical = {
        let mut g: Vec<f64> = gaps.iter().map(|(_, g)| *g).collect();
        g.sort_by(f64::total_cmp);
        g[g.len() / 2]
    };
    if let Some((after, found)) = gaps.iter().find(|(_, g)| *g > 1.5 * typical) {
        return Err(GeometryError::MissingSlice {
            after_mm: *after,
            expected_mm: typical,
            found_mm: *found,
        });
    }
    if let Some((after, found)) = gaps.iter().find(|(_, g)| (g - mean).abs() > allowed) {
        return Err(GeometryError::SliceSpacingIrregular {
            after_mm: *after,
            expected_mm: mean,
            found_mm: *found,
        });
    }
    Ok(Geometry {
        spacing: [mean, first.pixel_spacing[0], first.pixel_spacing[1]],
        origin: slices[lo].position,
        direction: [row, col, normal],
        order,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AXIAL: [f64; 6] = [1., 0., 0., 0., 1., 0.];

    fn stack(zs: &[f64], orientation: [f64; 6]) -> Vec<Placement> {
        let normal = cross(
            [orientation[0], orientation[1], orientation[2]],
            [orientation[3], orientation[4], orientation[5]],
        );
        zs.iter()
            .map(|z| Placement {
                orientation,
                position: [
                    -100.0 + normal[0] * z,
                    -120.0 + normal[1] * z,
                    normal[2] * z,
                ],
                pixel_spacing: [0.8, 0.7],
                rows: 4,
                columns: 5,
            })
            .collect()
    }

    fn arrange_default(s: &[Placement]) -> Result<Geometry, GeometryError> {
        arrange(s, 2, &Tolerances::default())
    }

    #[test]
    fn orders_by_position_not_input_order() {
        let g = arrange_default(&stack(&[6.0, 0.0, 4.0, 2.0], AXIAL)).unwrap();
        assert_eq!(g.order, vec![1, 3, 2, 0]);
        assert_eq!(g.spacing, [2.0, 0.8, 0.7]);
        assert_eq!(g.origin, [-100.0, -120.0, 0.0]);
        assert_eq!(g.direction[2], [0.0, 0.0, 1.0]);
    }

    #[test]
    fn feet_first_and_oblique_but_consistent_stacks_assemble() {
        // Row direction flipped: the normal points to the feet; ascending along it.
        let flipped = [-1., 0., 0., 0., 1., 0.];
        let g = arrange_default(&stack(&[0.0, 3.0, 6.0], flipped)).unwrap();
        assert_eq!(g.direction[2], [0.0, 0.0, -1.0]);
        assert_eq!(g.order, vec![0, 1, 2]);
        // Coronal.
        let coronal = [1., 0., 0., 0., 0., -1.];
        let g = arrange_default(&stack(&[5.0, 0.0, 10.0], coronal)).unwrap();
        assert_eq!(g.order, vec![1, 0, 2]);
        assert!((g.spacing[0] - 5.0).abs() < 1e-9);
    }

    #[test]
    fn each_fault_has_its_code() {
        let mut bad_orientation = stack(&[0.0, 1.0, 2.0], AXIAL);
        bad_orientation[2].orientation = [1., 0., 0., 0., 0.8, 0.6];
        let mut bad_dims = stack(&[0.0, 1.0, 2.0], AXIAL);
        bad_dims[1].rows = 8;
        let mut bad_spacing = stack(&[0.0, 1.0, 2.0], AXIAL);
        bad_spacing[1].pixel_spacing = [0.9, 0.7];
        let mut tilted = stack(&[0.0, 1.0, 2.0, 3.0], AXIAL);
        for (i, s) in tilted.iter_mut().enumerate() {
            s.position[1] += 0.2 * i as f64; // ~11° off the normal
        }
        let cases = [
            (stack(&[0.0], AXIAL), "too_few_slices"),
            (bad_orientation, "orientation_inconsistent"),
            (bad_dims, "dimensions_inconsistent"),
            (bad_spacing, "pixel_spacing_inconsistent"),
            (stack(&[0.0, 1.0, 1.0, 2.0], AXIAL), "duplicate_position"),
            (stack(&[0.0, 1.0, 2.0, 4.0, 5.0], AXIAL), "missing_slice"),
            (
                stack(&[0.0, 1.0, 2.0, 3.3, 4.3], AXIAL),
                "slice_spacing_irregular",
            ),
            (tilted, "gantry_tilt"),
            (
                stack(&[0.0, 1.0], [1., 0., 0., 1., 0., 0.]),
                "degenerate_orientation",
            ),
        ];
        for (slices, code) in cases {
            let err = arrange_default(&slices).unwrap_err();
            assert_eq!(err.code(), code, "{err}");
        }
    }

    #[test]
    fn tiny_rounding_in_positions_is_tolerated() {
        let g = arrange_default(&stack(&[0.0, 2.0004, 3.9998, 6.0001], AXIAL)).unwrap();
        assert!((g.spacing[0] - 2.0000333).abs() < 1e-4);
    }
}
