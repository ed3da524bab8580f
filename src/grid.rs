//! The crate's dense 3-D array, in (z, y, x) order: volumes' label maps, masks and
//! resampled grids. The cascade makes them; the SEG, SR and key-image encoders read
//! them, without depending on the cascade.

/// A dense 3D array in (z, y, x) order.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid<T> {
    pub shape: [usize; 3],
    pub data: Vec<T>,
}

impl<T: Copy> Grid<T> {
    pub fn filled(shape: [usize; 3], value: T) -> Self {
        Self {
            shape,
            data: vec![value; shape[0] * shape[1] * shape[2]],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn index(&self, z: usize, y: usize, x: usize) -> usize {
        (z * self.shape[1] + y) * self.shape[2] + x
    }

    /// A grid of the same shape with `f` of each value.
    pub fn map<U>(&self, f: impl Fn(T) -> U) -> Grid<U> {
        Grid {
            shape: self.shape,
            data: self.data.iter().map(|&v| f(v)).collect(),
        }
    }
}

/// A box of grid indices, half-open as Rust's ranges are: from `lo` (the lowest index
/// per axis) up to `end` (one past the highest). The crate's one box convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Box3 {
    pub lo: [usize; 3],
    pub end: [usize; 3],
}

impl Box3 {
    /// The whole of a grid of `shape`.
    pub fn of_shape(shape: [usize; 3]) -> Self {
        Self {
            lo: [0; 3],
            end: shape,
        }
    }

    /// Voxels per axis.
    pub fn size(&self) -> [usize; 3] {
        std::array::from_fn(|i| self.end[i] - self.lo[i])
    }

    /// The box grown by `by` voxels on every side, within a grid of `shape`.
    pub fn grown(&self, by: usize, shape: [usize; 3]) -> Self {
        Self {
            lo: self.lo.map(|v| v.saturating_sub(by)),
            end: std::array::from_fn(|i| (self.end[i] + by).min(shape[i])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_box_is_half_open_and_grows_within_the_grid() {
        let b = Box3 {
            lo: [0, 2, 3],
            end: [1, 5, 9],
        };
        assert_eq!(b.size(), [1, 3, 6]);
        assert_eq!(
            b.grown(1, [4, 5, 10]),
            Box3 {
                lo: [0, 1, 2],
                end: [2, 5, 10]
            }
        );
        assert_eq!(Box3::of_shape([2, 3, 4]).size(), [2, 3, 4]);
    }
}
