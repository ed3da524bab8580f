//! Slice geometry (PS3.3 C.7.6.2): slices are ordered by their position along the
//! slice normal (row direction × column direction), never by Instance Number or file
//! order, and the stack is checked before any pixel is decoded. The stack's
//! orientation, dimensions and pixel spacing are those most of its slices share, so
//! that a failure names the slice at fault, by the name its caller gave it (the
//! instance) and by where it lies: its coordinate and its rank by position. Pure: no
//! I/O.

use std::fmt;

use serde::Serialize;

/// Where one slice lies, as its header says.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    /// What a failure reason calls the slice (e.g. "instance 1.2.3", with the frame
    /// number for a frame of a multi-frame instance).
    pub name: String,
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

/// A slice as a failure reason names it: "instance 1.2.3 at z = -120.0 mm (slice 8 of
/// 20 by position)". The coordinate is the Image Position (Patient) component along
/// the patient axis closest to the slice normal (z for an axial stack); the rank
/// counts along the normal, from 1.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceAt {
    pub name: String,
    pub axis: char,
    pub coordinate_mm: f64,
    pub rank: usize,
    pub count: usize,
}

impl fmt::Display for SliceAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} = {:.1} mm (slice {} of {} by position)",
            self.name, self.axis, self.coordinate_mm, self.rank, self.count
        )
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GeometryError {
    #[error("only {found} slices, at least {min} needed")]
    TooFewSlices { found: usize, min: usize },
    #[error(
        "Image Orientation (Patient) of {name}, as of {agreeing} of {count} slices, is not a pair of unit, orthogonal directions"
    )]
    DegenerateOrientation {
        name: String,
        agreeing: usize,
        count: usize,
    },
    #[error("{slice} has orientation {found:?} where {agreeing} of {} slices have {expected:?}", .slice.count)]
    OrientationInconsistent {
        slice: SliceAt,
        expected: [f64; 6],
        found: [f64; 6],
        agreeing: usize,
    },
    #[error(
        "{slice} is {found_rows}x{found_columns} where {agreeing} of {} slices are {rows}x{columns}",
        .slice.count
    )]
    DimensionsInconsistent {
        slice: SliceAt,
        rows: u32,
        columns: u32,
        found_rows: u32,
        found_columns: u32,
        agreeing: usize,
    },
    #[error(
        "{slice} has pixel spacing {found:?} mm where {agreeing} of {} slices have {expected:?} mm",
        .slice.count
    )]
    PixelSpacingInconsistent {
        slice: SliceAt,
        expected: [f64; 2],
        found: [f64; 2],
        agreeing: usize,
    },
    #[error(
        "{slice} and {other} lie at the same position along the normal (two phases in one series?)"
    )]
    DuplicatePosition { slice: SliceAt, other: SliceAt },
    #[error(
        "a slice is missing after {after}: gap of {found_mm:.3} mm where slices are {expected_mm:.3} mm apart"
    )]
    MissingSlice {
        after: SliceAt,
        expected_mm: f64,
        found_mm: f64,
    },
    #[error(
        "slice spacing is not uniform: {found_mm:.3} mm after {after}, expected {expected_mm:.3} mm"
    )]
    SliceSpacingIrregular {
        after: SliceAt,
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

fn close(a: &[f64], b: &[f64], tolerance: f64) -> bool {
    a.iter().zip(b).all(|(x, y)| (x - y).abs() <= tolerance)
}

/// The value most items share (`same` says which are alike; the first such item
/// stands for them, and of equally common values the first met wins), and how many
/// share it.
fn most_common<T: Copy>(
    items: impl Iterator<Item = T>,
    same: impl Fn(&T, &T) -> bool,
) -> (T, usize) {
    let mut groups: Vec<(T, usize)> = Vec::new();
    for item in items {
        match groups.iter_mut().find(|(v, _)| same(v, &item)) {
            Some((_, n)) => *n += 1,
            None => groups.push((item, 1)),
        }
    }
    groups
        .into_iter()
        .reduce(|best, g| if g.1 > best.1 { g } else { best })
        .expect("at least one item")
}

/// Orders and checks a stack of slices. (The error is boxed: it carries slice names.)
pub fn arrange(
    slices: &[Placement],
    min_slices: usize,
    tol: &Tolerances,
) -> Result<Geometry, Box<GeometryError>> {
    let min = min_slices.max(2);
    if slices.len() < min {
        return Err(Box::new(GeometryError::TooFewSlices {
            found: slices.len(),
            min,
        }));
    }
    // The stack's orientation is its slices' most common one: its normal orders them,
    // and a slice that differs is named with its place in that order.
    let (o, oriented) = most_common(slices.iter().map(|s| s.orientation), |a, b| {
        close(a, b, tol.orientation)
    });
    let [row, col, normal] = directions(slices, o, oriented, tol)?;
    let along: Vec<f64> = slices.iter().map(|s| dot(s.position, normal)).collect();
    let order = order_along(slices, &along);
    let at = slice_namer(slices, &order, normal);
    let spacing = check_slices_agree(slices, &order, o, oriented, tol, &at)?;
    check_no_duplicate_position(&order, &along, tol, &at)?;
    let (lo, hi) = (order[0], order[order.len() - 1]);
    let span = check_tilt(slices[lo].position, slices[hi].position, normal, tol)?;
    let mean = span / (order.len() - 1) as f64;
    check_gaps(&order, &along, mean, tol, &at)?;
    Ok(Geometry {
        spacing: [mean, spacing[0], spacing[1]],
        origin: slices[lo].position,
        direction: [row, col, normal],
        order,
    })
}

/// The row, column and normal directions of orientation `o` (shared by `oriented`
/// slices), or the error naming its first slice when they are not unit and orthogonal.
fn directions(
    slices: &[Placement],
    o: [f64; 6],
    oriented: usize,
    tol: &Tolerances,
) -> Result<[[f64; 3]; 3], Box<GeometryError>> {
    let row = [o[0], o[1], o[2]];
    let col = [o[3], o[4], o[5]];
    let normal = cross(row, col);
    let unit = |v: [f64; 3]| (norm(v) - 1.0).abs() < 1e-2;
    if !unit(row) || !unit(col) || dot(row, col).abs() > 1e-2 || !unit(normal) {
        let first = slices
            .iter()
            .find(|s| close(&s.orientation, &o, tol.orientation));
        return Err(Box::new(GeometryError::DegenerateOrientation {
            name: first.map(|s| s.name.clone()).unwrap_or_default(),
            agreeing: oriented,
            count: slices.len(),
        }));
    }
    Ok([row, col, normal])
}

/// Indices of the slices in ascending position `along` the normal; slices at one
/// position in the order of their names.
fn order_along(slices: &[Placement], along: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..slices.len()).collect();
    // Slices at one position (a fault, found below) in the order of their names, so
    // that the same files name the same slices whatever order they come in.
    order.sort_by(|&a, &b| {
        along[a]
            .total_cmp(&along[b])
            .then_with(|| slices[a].name.cmp(&slices[b].name))
    });
    order
}

/// How a failure names slice `i`: its name, its coordinate along the patient axis
/// closest to the normal and its rank in `order`.
fn slice_namer<'a>(
    slices: &'a [Placement],
    order: &[usize],
    normal: [f64; 3],
) -> impl Fn(usize) -> SliceAt + 'a {
    let mut rank = vec![0; slices.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r + 1;
    }
    let axis = (0..3)
        .max_by(|&a, &b| normal[a].abs().total_cmp(&normal[b].abs()))
        .expect("three axes");
    move |i: usize| SliceAt {
        name: slices[i].name.clone(),
        axis: ['x', 'y', 'z'][axis],
        coordinate_mm: slices[i].position[axis],
        rank: rank[i],
        count: slices.len(),
    }
}

/// Checks, in `order`, that every slice has the stack's orientation `o` (shared by
/// `oriented` slices), dimensions and pixel spacing; returns the pixel spacing.
fn check_slices_agree(
    slices: &[Placement],
    order: &[usize],
    o: [f64; 6],
    oriented: usize,
    tol: &Tolerances,
    at: &impl Fn(usize) -> SliceAt,
) -> Result<[f64; 2], Box<GeometryError>> {
    let (dimensions, sized) =
        most_common(slices.iter().map(|s| (s.rows, s.columns)), |a, b| a == b);
    let (spacing, spaced) = most_common(slices.iter().map(|s| s.pixel_spacing), |a, b| {
        close(a, b, tol.pixel_spacing_mm)
    });
    for &i in order {
        let s = &slices[i];
        if !close(&s.orientation, &o, tol.orientation) {
            return Err(Box::new(GeometryError::OrientationInconsistent {
                slice: at(i),
                expected: o,
                found: s.orientation,
                agreeing: oriented,
            }));
        }
        if (s.rows, s.columns) != dimensions {
            return Err(Box::new(GeometryError::DimensionsInconsistent {
                slice: at(i),
                rows: dimensions.0,
                columns: dimensions.1,
                found_rows: s.rows,
                found_columns: s.columns,
                agreeing: sized,
            }));
        }
        if !close(&s.pixel_spacing, &spacing, tol.pixel_spacing_mm) {
            return Err(Box::new(GeometryError::PixelSpacingInconsistent {
                slice: at(i),
                expected: spacing,
                found: s.pixel_spacing,
                agreeing: spaced,
            }));
        }
    }
    Ok(spacing)
}

/// Checks that no two neighbours in `order` lie at one position along the normal.
fn check_no_duplicate_position(
    order: &[usize],
    along: &[f64],
    tol: &Tolerances,
    at: &impl Fn(usize) -> SliceAt,
) -> Result<(), Box<GeometryError>> {
    for pair in order.windows(2) {
        let gap = along[pair[1]] - along[pair[0]];
        if gap < tol.spacing_mm {
            return Err(Box::new(GeometryError::DuplicatePosition {
                slice: at(pair[0]),
                other: at(pair[1]),
            }));
        }
    }
    Ok(())
}

/// Checks that the stack, from its first slice at `first` to its last at `last`, runs
/// along the normal (no gantry tilt); returns its span along the normal.
fn check_tilt(
    first: [f64; 3],
    last: [f64; 3],
    normal: [f64; 3],
    tol: &Tolerances,
) -> Result<f64, Box<GeometryError>> {
    let step = sub(last, first);
    let span = dot(step, normal);
    let tilt = (norm(cross(step, normal)) / norm(step))
        .clamp(0.0, 1.0)
        .asin()
        .to_degrees();
    if tilt > tol.tilt_degrees {
        return Err(Box::new(GeometryError::GantryTilt { degrees: tilt }));
    }
    Ok(span)
}

/// Checks the gaps between neighbours in `order`: none a missing slice (over 1.5 times
/// the median gap), each within the tolerances of the `mean` spacing.
fn check_gaps(
    order: &[usize],
    along: &[f64],
    mean: f64,
    tol: &Tolerances,
    at: &impl Fn(usize) -> SliceAt,
) -> Result<(), Box<GeometryError>> {
    let allowed = (mean * tol.spacing_fraction).max(tol.spacing_mm);
    // Gaps first: a missing slice makes every other spacing look irregular. Each gap
    // with the slice before it.
    let gaps: Vec<(usize, f64)> = order
        .windows(2)
        .map(|p| (p[0], along[p[1]] - along[p[0]]))
        .collect();
    let typical = {
        let mut g: Vec<f64> = gaps.iter().map(|(_, g)| *g).collect();
        g.sort_by(f64::total_cmp);
        g[g.len() / 2]
    };
    if let Some((after, found)) = gaps.iter().find(|(_, g)| *g > 1.5 * typical) {
        return Err(Box::new(GeometryError::MissingSlice {
            after: at(*after),
            expected_mm: typical,
            found_mm: *found,
        }));
    }
    if let Some((after, found)) = gaps.iter().find(|(_, g)| (g - mean).abs() > allowed) {
        return Err(Box::new(GeometryError::SliceSpacingIrregular {
            after: at(*after),
            expected_mm: mean,
            found_mm: *found,
        }));
    }
    Ok(())
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
            .enumerate()
            .map(|(i, z)| Placement {
                name: format!("instance 1.2.{i}"),
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

    fn arrange_default(s: &[Placement]) -> Result<Geometry, Box<GeometryError>> {
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

    /// The slice listed first is the odd one: the stack's orientation, size and
    /// spacing are what most slices share, so the first is named, by its name, its
    /// coordinate along the axis closest to the normal and its rank by position.
    #[test]
    fn a_fault_names_the_odd_slice_and_where_it_lies() {
        let mut rotated = stack(&[9.0, 0.0, 3.0, 6.0, 12.0], AXIAL);
        rotated[0].orientation = [1., 0., 0., 0., 0.8, 0.6];
        let err = arrange_default(&rotated).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance 1.2.0 at z = 9.0 mm (slice 4 of 5 by position) has orientation \
             [1.0, 0.0, 0.0, 0.0, 0.8, 0.6] where 4 of 5 slices have [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]"
        );
        let mut small = stack(&[9.0, 0.0, 3.0, 6.0], AXIAL);
        small[0].rows = 2;
        let err = arrange_default(&small).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance 1.2.0 at z = 9.0 mm (slice 4 of 4 by position) is 2x5 where 3 of 4 slices are 4x5"
        );
        let err = arrange_default(&stack(&[0.0, 2.0, 2.0, 4.0], AXIAL)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "instance 1.2.1 at z = 2.0 mm (slice 2 of 4 by position) and instance 1.2.2 at z = 2.0 mm \
             (slice 3 of 4 by position) lie at the same position along the normal (two phases in one series?)"
        );
        // Coronal: named by y, the axis along the normal.
        let coronal = [1., 0., 0., 0., 0., -1.];
        let err = arrange_default(&stack(&[0.0, 5.0, 10.0, 20.0, 25.0], coronal)).unwrap_err();
        assert_eq!(err.code(), "missing_slice");
        assert!(
            err.to_string()
                .contains("after instance 1.2.2 at y = -110.0 mm (slice 3 of 5 by position)"),
            "{err}"
        );
    }

    #[test]
    fn tiny_rounding_in_positions_is_tolerated() {
        let g = arrange_default(&stack(&[0.0, 2.0004, 3.9998, 6.0001], AXIAL)).unwrap();
        assert!((g.spacing[0] - 2.0000333).abs() < 1e-4);
    }
}
