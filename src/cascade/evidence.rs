//! What the network's own output says of each label, before post-processing: its
//! softmax probabilities. For each label, the voxels it won, the sum of its probability
//! over them, and the sum of its probability over every voxel the stage labelled (its
//! "soft volume"). From these, how sure the network was where it put the organ, and the
//! Dice it expects of itself (the soft Dice between its hard and its probabilistic
//! answer): an organ drawn with a confident inside and a sharp boundary expects close
//! to 1; one drawn where the network hesitated, or with much probability spread around
//! it, expects less.

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The network's confidence in one label.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Confidence {
    /// The label's mean softmax probability over the voxels it won.
    pub mean: f64,
    /// 2 Σ_won p / (won + Σ_all p): the Dice between the label's voxels and its
    /// probability map.
    pub expected_dice: f64,
}

/// Softmax sums per class over a stage's labelled voxels.
#[derive(Debug)]
pub struct Evidence {
    won: Vec<u64>,
    inside: Vec<f64>,
    soft: Vec<f64>,
}

impl Evidence {
    /// No voxel yet.
    pub fn empty(classes: usize) -> Self {
        Self {
            won: vec![0; classes],
            inside: vec![0.0; classes],
            soft: vec![0.0; classes],
        }
    }

    /// The evidence of `voxels` voxels whose logits `logits` holds class-major (class
    /// `c` of position `v` at `c * stride + v`): `position(i)` gives the i-th voxel's
    /// position and the scale that turns its values into logits, or none where the
    /// stage labelled nothing.
    pub fn of(
        logits: &[f32],
        classes: usize,
        stride: usize,
        voxels: usize,
        position: impl Fn(usize) -> Option<(usize, f32)> + Sync,
    ) -> Self {
        (0..voxels)
            .into_par_iter()
            .fold(
                || (Self::empty(classes), vec![0f32; classes]),
                |(mut e, mut p), i| {
                    if let Some((v, scale)) = position(i) {
                        p.iter_mut()
                            .enumerate()
                            .for_each(|(c, p)| *p = logits[c * stride + v] * scale);
                        e.add(&mut p);
                    }
                    (e, p)
                },
            )
            .map(|(e, _)| e)
            .reduce(|| Self::empty(classes), Self::merge)
    }

    /// Adds one voxel, given its logits (overwritten with its probabilities).
    fn add(&mut self, p: &mut [f32]) {
        let max = p.iter().copied().fold(f32::MIN, f32::max);
        let mut sum = 0f64;
        for v in p.iter_mut() {
            *v = (*v - max).exp();
            sum += f64::from(*v);
        }
        let mut best = 0;
        for (c, v) in p.iter().enumerate() {
            let prob = f64::from(*v) / sum;
            self.soft[c] += prob;
            if *v > p[best] {
                best = c;
            }
        }
        self.won[best] += 1;
        self.inside[best] += f64::from(p[best]) / sum;
    }

    /// Adds the evidence of a part whose channel `c` is label `values[c]` (the
    /// background of every part is the model's).
    pub fn absorb(&mut self, part: Self, values: &[u8]) {
        for (c, v) in values.iter().enumerate().take(part.won.len()) {
            let v = usize::from(*v);
            self.won[v] += part.won[c];
            self.inside[v] += part.inside[c];
            self.soft[v] += part.soft[c];
        }
    }

    fn merge(mut self, other: Self) -> Self {
        for c in 0..self.won.len() {
            self.won[c] += other.won[c];
            self.inside[c] += other.inside[c];
            self.soft[c] += other.soft[c];
        }
        self
    }

    /// The confidence in label `value`; none if it won no voxel.
    pub fn confidence(&self, value: u8) -> Option<Confidence> {
        let c = usize::from(value);
        let won = *self.won.get(c).filter(|w| **w > 0)? as f64;
        let round = |x: f64| (x * 10_000.0).round() / 10_000.0;
        Some(Confidence {
            mean: round(self.inside[c] / won),
            expected_dice: round(2.0 * self.inside[c] / (won + self.soft[c])),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two classes over `n` voxels from each voxel's class-1 logit (class 0's is 0).
    fn evidence(class1: &[f32]) -> Evidence {
        let n = class1.len();
        let mut logits = vec![0f32; n];
        logits.extend_from_slice(class1);
        Evidence::of(&logits, 2, n, n, |v| Some((v, 1.0)))
    }

    #[test]
    fn a_sure_network_expects_a_dice_near_one() {
        let e = evidence(&[12.0, 12.0, 12.0, -12.0, -12.0, -12.0]);
        let c = e.confidence(1).unwrap();
        assert!(c.mean > 0.999 && c.expected_dice > 0.999, "{c:?}");
    }

    #[test]
    fn hesitation_inside_and_probability_spread_outside_lower_the_expected_dice() {
        // Won at 0.6 each; 0.4 of the label left on each of three voxels outside.
        let logit = (0.6f32 / 0.4).ln();
        let e = evidence(&[logit, logit, logit, -logit, -logit, -logit]);
        let c = e.confidence(1).unwrap();
        assert!((c.mean - 0.6).abs() < 1e-3, "{c:?}");
        // 2 * 1.8 / (3 + 1.8 + 1.2)
        assert!((c.expected_dice - 0.6).abs() < 1e-3, "{c:?}");
    }

    #[test]
    fn voxels_the_stage_did_not_label_count_nothing_and_a_label_never_won_has_none() {
        let n = 4;
        let logits = vec![0.0, 0.0, 0.0, 0.0, 9.0, 9.0, 9.0, 9.0];
        let e = Evidence::of(&logits, 2, n, n, |v| (v < 2).then_some((v, 1.0)));
        assert_eq!(e.won, vec![0, 2]);
        assert_eq!(e.confidence(0), None);
        assert_eq!(e.confidence(7), None);
    }

    #[test]
    fn a_part_s_channels_add_to_the_labels_they_stand_for() {
        let mut model = Evidence::empty(4);
        model.absorb(evidence(&[9.0, 9.0, -9.0]), &[0, 3]);
        model.absorb(evidence(&[9.0, -9.0, -9.0]), &[0, 2]);
        assert_eq!(model.won, vec![3, 0, 1, 2]);
        assert_eq!(model.confidence(1), None);
        assert!(model.confidence(3).unwrap().mean > 0.99);
    }

    #[test]
    fn the_scale_turns_weighted_sums_into_logits() {
        let n = 2;
        // Sums of two patches' logits with weights 2 each: the logits are a quarter.
        let logits = vec![0.0, 0.0, 4.0 * 0.4f32.ln() - 4.0 * 0.6f32.ln(), 0.0];
        let e = Evidence::of(&logits, 2, n, 1, |v| Some((v, 0.25)));
        let c = e.confidence(0).unwrap();
        assert!((c.mean - 0.6).abs() < 1e-3, "{c:?}");
    }
}
