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
}
