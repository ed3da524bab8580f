//! Anatomical frames: which way a volume's array axes run through the patient, and
//! the exact mapping (axis permutation and reversals, no resampling) that brings any
//! series into the frame a model was trained in and its label map back. Pure.
//!
//! A frame is written as three letters, one per array axis (z, y, x), each naming the
//! patient direction the index grows towards in DICOM's patient coordinates: `R`/`L`
//! (x), `A`/`P` (y), `I`/`S` (z). A head-first supine axial series stored in the usual
//! way (Image Orientation (1,0,0,0,1,0), slices ascending along the normal) is `SPL`.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::ops::{self, Grid};

/// One patient direction: a patient axis (0 = x, right to left; 1 = y, anterior to
/// posterior; 2 = z, feet to head) and whether the index grows along it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Toward {
    axis: usize,
    positive: bool,
}

impl Toward {
    const LETTERS: [[char; 2]; 3] = [['R', 'L'], ['A', 'P'], ['I', 'S']];

    fn letter(self) -> char {
        Self::LETTERS[self.axis][usize::from(self.positive)]
    }

    fn from_letter(c: char) -> Option<Self> {
        Self::LETTERS.iter().enumerate().find_map(|(axis, pair)| {
            pair.iter()
                .position(|l| *l == c.to_ascii_uppercase())
                .map(|p| Toward {
                    axis,
                    positive: p == 1,
                })
        })
    }
}

/// The patient directions the array axes (z, y, x) grow towards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame([Toward; 3]);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "frame {0:?} is not three letters naming each patient axis once (R or L, A or P, I or S; e.g. \"SPL\")"
)]
pub struct FrameError(String);

impl Frame {
    pub fn parse(text: &str) -> Result<Self, FrameError> {
        let err = || FrameError(text.to_string());
        let letters: Vec<Toward> = text
            .chars()
            .map(Toward::from_letter)
            .collect::<Option<_>>()
            .ok_or_else(err)?;
        let axes: [Toward; 3] = letters.try_into().map_err(|_| err())?;
        let mut seen = [false; 3];
        for t in axes {
            if std::mem::replace(&mut seen[t.axis], true) {
                return Err(err());
            }
        }
        Ok(Frame(axes))
    }

    /// The axis-aligned frame nearest to a volume's direction cosines (rows: the x, y
    /// and z index directions in patient coordinates, as `volume::Geometry` keeps
    /// them): of the 48 axis-aligned frames, the one whose axes are closest to the
    /// volume's, so that an oblique series maps as its nearest axis-aligned layout.
    pub fn nearest(direction: &[[f64; 3]; 3]) -> Self {
        // Array axes (z, y, x) point along direction rows 2, 1, 0.
        let along = [direction[2], direction[1], direction[0]];
        const PERMUTATIONS: [[usize; 3]; 6] = [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ];
        let score = |p: &[usize; 3]| (0..3).map(|a| along[a][p[a]].abs()).sum::<f64>();
        let best = PERMUTATIONS.iter().fold(&PERMUTATIONS[0], |best, p| {
            if score(p) > score(best) { p } else { best }
        });
        Frame(std::array::from_fn(|a| Toward {
            axis: best[a],
            positive: along[a][best[a]] >= 0.0,
        }))
    }
}

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|t| write!(f, "{}", t.letter()))
    }
}

impl Serialize for Frame {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Frame::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// How a source array becomes an array in the model's frame: model axis `i` is source
/// axis `axes[i]`, reversed where `reversed[i]`. Exact and invertible.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub source: Frame,
    pub model: Frame,
    /// Source axis (0 = z, 1 = y, 2 = x) of each model axis.
    pub axes: [usize; 3],
    pub reversed: [bool; 3],
}

const AXIS_NAMES: [char; 3] = ['z', 'y', 'x'];

impl Mapping {
    pub fn new(source: Frame, model: Frame) -> Self {
        let mut axes = [0; 3];
        let mut reversed = [false; 3];
        for (m, want) in model.0.iter().enumerate() {
            let a = source
                .0
                .iter()
                .position(|t| t.axis == want.axis)
                .expect("a frame names every patient axis once");
            axes[m] = a;
            reversed[m] = source.0[a].positive != want.positive;
        }
        Mapping {
            source,
            model,
            axes,
            reversed,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.axes == [0, 1, 2] && self.reversed == [false; 3]
    }

    /// The mapping back: from the model's frame to the source's.
    pub fn inverse(&self) -> Self {
        Mapping::new(self.model, self.source)
    }

    /// What the mapping does, for people: "identity" or e.g. "model z = source z
    /// reversed, model x = source x reversed".
    pub fn describe(&self) -> String {
        if self.is_identity() {
            return "identity".into();
        }
        (0..3)
            .filter(|m| self.axes[*m] != *m || self.reversed[*m])
            .map(|m| {
                format!(
                    "model {} = source {}{}",
                    AXIS_NAMES[m],
                    AXIS_NAMES[self.axes[m]],
                    if self.reversed[m] { " reversed" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Per-axis values (shape, spacing) of a source array, in the model's axis order.
    pub fn permute<T: Copy>(&self, source: [T; 3]) -> [T; 3] {
        std::array::from_fn(|m| source[self.axes[m]])
    }

    /// The source array `data` of `shape`, rearranged into the model's frame.
    pub fn apply<T: Copy + Send + Sync>(&self, data: &[T], shape: [usize; 3]) -> Grid<T> {
        ops::rearrange(data, shape, self.axes, self.reversed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames() -> Vec<Frame> {
        let mut all = Vec::new();
        for p in ["RAI", "RIA", "ARI", "AIR", "IRA", "IAR"] {
            for signs in 0..8u8 {
                let letters: String = p
                    .chars()
                    .enumerate()
                    .map(|(i, c)| {
                        let t = Toward::from_letter(c).unwrap();
                        Toward {
                            axis: t.axis,
                            positive: signs >> i & 1 == 1,
                        }
                        .letter()
                    })
                    .collect();
                all.push(Frame::parse(&letters).unwrap());
            }
        }
        all
    }

    #[test]
    fn frames_parse_and_print() {
        assert_eq!(Frame::parse("SPL").unwrap().to_string(), "SPL");
        assert_eq!(Frame::parse("ipr").unwrap().to_string(), "IPR");
        for bad in ["", "SP", "SPLX", "SSL", "LPR", "SPQ"] {
            assert!(Frame::parse(bad).is_err(), "{bad}");
        }
        let all = frames();
        assert_eq!(all.len(), 48);
        let distinct: std::collections::HashSet<String> =
            all.iter().map(ToString::to_string).collect();
        assert_eq!(distinct.len(), 48);
    }

    #[test]
    fn volume_directions_give_their_frame() {
        // Head-first supine axial: row +x, column +y, normal +z.
        let axial = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(Frame::nearest(&axial).to_string(), "SPL");
        // Feet-first supine: row -x, column +y, normal -z.
        let feet_first = [[-1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]];
        assert_eq!(Frame::nearest(&feet_first).to_string(), "IPR");
        // Prone: row -x, column -y, normal +z.
        let prone = [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(Frame::nearest(&prone).to_string(), "SAR");
        // Coronal: row +x, column -z, normal +y... (x × -z = +y).
        let coronal = [[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]];
        assert_eq!(Frame::nearest(&coronal).to_string(), "PIL");
        // Oblique, 20° about z: still the axial frame.
        let (c, s) = (20f64.to_radians().cos(), 20f64.to_radians().sin());
        let oblique = [[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(Frame::nearest(&oblique).to_string(), "SPL");
    }

    /// Every voxel of a source array in frame `f` lands where the same patient point
    /// is in the model frame, for all 48 x 48 pairs, and the inverse restores it.
    #[test]
    fn all_layouts_map_exactly_and_back() {
        let shape = [2, 3, 4];
        let data: Vec<u32> = (0..24).collect();
        // A patient-space key per model-frame voxel: the model frame's own array is
        // the reference; the source is made from it by the inverse mapping.
        let model = Frame::parse("SPL").unwrap();
        for source in frames() {
            let to_source = Mapping::new(model, source);
            let source_grid = to_source.apply(&data, shape);
            let mapping = Mapping::new(source, model);
            assert_eq!(mapping.inverse(), to_source);
            let back = mapping.apply(&source_grid.data, source_grid.shape);
            assert_eq!(back.shape, shape, "{source}");
            assert_eq!(back.data, data, "{source}");
            assert_eq!(mapping.permute(source_grid.shape), shape);
            assert_eq!(mapping.is_identity(), source == model);
        }
        // Between any two frames, mapping there and back is exact.
        for a in frames().into_iter().step_by(5) {
            for b in frames() {
                let m = Mapping::new(a, b);
                let there = m.apply(&data, shape);
                let back = m.inverse().apply(&there.data, there.shape);
                assert_eq!(back.data, data, "{a} -> {b}");
            }
        }
    }

    #[test]
    fn feet_first_reverses_z_and_x() {
        let m = Mapping::new(Frame::parse("IPR").unwrap(), Frame::parse("SPL").unwrap());
        assert_eq!(m.axes, [0, 1, 2]);
        assert_eq!(m.reversed, [true, false, true]);
        assert_eq!(
            m.describe(),
            "model z = source z reversed, model x = source x reversed"
        );
        // A 2 x 1 x 2 array: z and x reversed.
        assert_eq!(m.apply(&[1, 2, 3, 4], [2, 1, 2]).data, vec![4, 3, 2, 1]);
        let t = Mapping::new(Frame::parse("SLP").unwrap(), Frame::parse("SPL").unwrap());
        assert_eq!(t.describe(), "model y = source x, model x = source y");
        // Transpose of a 1 x 2 x 3 array.
        assert_eq!(
            t.apply(&[1, 2, 3, 4, 5, 6], [1, 2, 3]).data,
            vec![1, 4, 2, 5, 3, 6]
        );
    }
}
