//! How far each organ's result can be trusted, from the image and the label map alone
//! (no reference labels): whether the scan range or the field of view cut the organ (its
//! volume is then a lower bound), whether its volume and mean attenuation fall in what
//! adult organs show with or without contrast, whether it lies on its side of the body,
//! and whether it is in one piece. Each finding is a reason with a stable code and a
//! sentence; the organ's verdict is its worst reason's, the job's its worst organ's.
//!
//! The reference ranges are wide on purpose: they flag results that cannot be the organ
//! (a 5 ml liver, a spleen of fat), not unusual patients. Sources: liver 1,000–2,500 ml
//! typical in adults (Heymsfield et al., Ann Intern Med 1979; Vauthey et al., Liver
//! Transpl 2002); spleen about 100–350 ml, splenomegaly above about 500 ml (Prassopoulos
//! et al., Eur Radiol 1997; Bezerra et al., AJR 2005); kidney 100–250 ml each (Emamian et
//! al., AJR 1993); pancreas 40–110 ml (Saisho et al., Clin Anat 2007); the stomach varies
//! with its filling. Checked against the whole organs of the shared label maps (s0327,
//! s0328: liver 1,291 and 2,026 ml, spleen 195 and 212 ml, kidneys 71 to 193 ml,
//! pancreas 54 and 58 ml, stomach 117 and 376 ml).

use serde::{Deserialize, Serialize};

use crate::cascade::evidence::Confidence;
use crate::cascade::manifest::{LEFT, Label};
use crate::cascade::ops::{self, Box3, Grid};
use crate::volume::Volume;

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How far a result can be trusted.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    #[default]
    Ok,
    /// Usable with care: the reasons say what to check (a truncated organ, a split one).
    Warn,
    /// Not the organ: its measurements must not be used.
    Fail,
}

/// The private coding scheme of the node's quality concepts in the SR (PS3.3 8.2: a
/// private designator starts with "99").
pub const CODING_SCHEME: &str = "99SEGNODE";

impl Verdict {
    pub const ALL: [Verdict; 3] = [Verdict::Ok, Verdict::Warn, Verdict::Fail];

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }

    /// The verdict's meaning, as the SR's coded value says it.
    pub fn meaning(self) -> &'static str {
        match self {
            Verdict::Ok => "Result passed its quality checks",
            Verdict::Warn => "Result to be checked",
            Verdict::Fail => "Result failed its quality checks",
        }
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a verdict (ok, warn, fail)"))
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReasonCode {
    /// The scan range or the field of view cut the organ: its volume is a lower bound.
    Truncated,
    VolumeImplausible,
    AttenuationImplausible,
    PositionImplausible,
    /// The largest connected part holds too little of the label.
    Fragmented,
    /// The network itself was unsure of the organ: little of its softmax agrees with
    /// the label it drew.
    LowConfidence,
}

impl ReasonCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Truncated => "truncated",
            ReasonCode::VolumeImplausible => "volume_implausible",
            ReasonCode::AttenuationImplausible => "attenuation_implausible",
            ReasonCode::PositionImplausible => "position_implausible",
            ReasonCode::Fragmented => "fragmented",
            ReasonCode::LowConfidence => "low_confidence",
        }
    }

    /// The finding's meaning, as the SR's coded value says it.
    pub fn meaning(self) -> &'static str {
        match self {
            ReasonCode::Truncated => "Organ cut by the scan range or field of view",
            ReasonCode::VolumeImplausible => "Volume outside the adult range",
            ReasonCode::AttenuationImplausible => "Attenuation outside the organ's range",
            ReasonCode::PositionImplausible => "Organ outside its usual position",
            ReasonCode::Fragmented => "Organ in several parts",
            ReasonCode::LowConfidence => "Network unsure of the organ",
        }
    }

    /// The verdict a reason of this kind calls for.
    pub fn verdict(self) -> Verdict {
        match self {
            ReasonCode::Truncated | ReasonCode::Fragmented | ReasonCode::LowConfidence => {
                Verdict::Warn
            }
            ReasonCode::VolumeImplausible
            | ReasonCode::AttenuationImplausible
            | ReasonCode::PositionImplausible => Verdict::Fail,
        }
    }
}

/// One finding: its code and a sentence a person can read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    pub detail: String,
}

/// An organ's assessment: the summary's `organs[i].qa`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    pub verdict: Verdict,
    pub reasons: Vec<Reason>,
}

impl Assessment {
    fn from_reasons(reasons: Vec<Reason>) -> Self {
        let verdict = reasons
            .iter()
            .map(|r| r.code.verdict())
            .max()
            .unwrap_or_default();
        Self { verdict, reasons }
    }

    /// Whether the organ's volume is only a lower bound (the organ was cut).
    pub fn volume_is_lower_bound(&self) -> bool {
        self.reasons.iter().any(|r| r.code == ReasonCode::Truncated)
    }
}

/// What the label map says of one organ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Facts {
    pub ml: f64,
    pub hu_mean: f64,
    /// Its box on the grid.
    pub bounds: Box3,
    /// Its centre in patient coordinates (mm, DICOM LPS: +x the patient's left, +y
    /// posterior, +z superior).
    pub centre_mm: [f64; 3],
    /// The share of its voxels in its largest 6-connected part.
    pub largest_part: f64,
    /// The network's confidence in it; none for a label map without one.
    pub confidence: Option<Confidence>,
}

/// What the whole series says: the grid, which way its slices run and where the body is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scene {
    pub shape: [usize; 3],
    /// Whether z increases towards the head (axial series: the last slice is superior).
    pub z_superior: Option<bool>,
    /// The length of body the slices cover along z, for an axial series (mm).
    pub scan_mm: Option<f64>,
    /// The body's centre in patient coordinates (mm).
    pub body_mm: [f64; 3],
}

/// Side of a body axis an organ lies on, with a margin for organs that cross the
/// midline.
const MIDLINE_MARGIN_MM: f64 = 10.0;
/// The share of an organ that its largest part must hold.
const MIN_LARGEST_PART: f64 = 0.8;
/// The Dice the network must expect of itself.
const MIN_EXPECTED_DICE: f64 = 0.75;
/// Soft tissue and denser: the body, for its centre.
const BODY_HU: f32 = -300.0;

/// What adults' organs show: volume (ml) and mean attenuation (HU, without or with
/// contrast), the least length they span from head to feet (mm), and where they lie.
struct Reference {
    ml: (f64, f64),
    hu: (f64, f64),
    extent_mm: f64,
    side: Option<Side>,
    posterior: bool,
}

#[derive(Clone, Copy)]
enum Side {
    Left,
    Right,
}

/// The reference of an organ by its SNOMED CT code.
fn reference(label: &Label) -> Option<Reference> {
    let r = |ml, hu, extent_mm, side, posterior| {
        Some(Reference {
            ml,
            hu,
            extent_mm,
            side,
            posterior,
        })
    };
    if label.kind.scheme != "SCT" {
        return None;
    }
    let (left, right) = (Some(Side::Left), Some(Side::Right));
    let side = label.laterality().map(|c| {
        if c.value == LEFT {
            Side::Left
        } else {
            Side::Right
        }
    });
    match label.kind.value.as_str() {
        "10200004" => r((600.0, 4_000.0), (0.0, 220.0), 100.0, right, false),
        "78961009" => r((30.0, 2_000.0), (0.0, 250.0), 50.0, left, false),
        "9846003" => r((40.0, 450.0), (0.0, 350.0), 60.0, right, true),
        "18639004" => r((40.0, 450.0), (0.0, 350.0), 60.0, left, true),
        // "Kidney" with its side as a modifier, as TotalSegmentator codes it.
        "64033007" if side.is_some() => r((40.0, 450.0), (0.0, 350.0), 60.0, side, true),
        "15776009" => r((10.0, 250.0), (-60.0, 220.0), 45.0, None, false),
        "69695003" => r((20.0, 3_000.0), (-600.0, 300.0), 60.0, None, false),
        _ => None,
    }
}

/// The assessment of the organ `label` names, with `facts`, in `scene`.
pub fn assess(label: &Label, facts: &Facts, scene: &Scene) -> Assessment {
    let mut reasons = Vec::new();
    let known = reference(label);
    let cut = cut_sides(facts.bounds, scene);
    let short = known
        .as_ref()
        .zip(scene.scan_mm)
        .filter(|(r, scan)| *scan < r.extent_mm);
    if !cut.is_empty() {
        reasons.push(Reason {
            code: ReasonCode::Truncated,
            detail: format!(
                "the organ reaches {}: its volume ({:.1} ml) is a lower bound",
                cut.join(" and "),
                facts.ml
            ),
        });
    } else if let Some((r, scan)) = short {
        reasons.push(Reason {
            code: ReasonCode::Truncated,
            detail: format!(
                "the scan range covers {scan:.0} mm, less than the organ spans in adults (at least {:.0} mm): its volume ({:.1} ml) is a lower bound",
                r.extent_mm, facts.ml
            ),
        });
    }
    if let Some(r) = &known {
        let (lo, hi) = r.ml;
        let too_small = cut.is_empty() && short.is_none() && facts.ml < lo;
        if too_small || facts.ml > hi {
            reasons.push(Reason {
                code: ReasonCode::VolumeImplausible,
                detail: format!(
                    "{:.1} ml is outside what the organ measures in adults ({lo:.0} to {hi:.0} ml)",
                    facts.ml
                ),
            });
        }
        let (lo, hi) = r.hu;
        if facts.hu_mean < lo || facts.hu_mean > hi {
            reasons.push(Reason {
                code: ReasonCode::AttenuationImplausible,
                detail: format!(
                    "mean attenuation {:.0} HU is outside what the organ shows with or without contrast ({lo:.0} to {hi:.0} HU)",
                    facts.hu_mean
                ),
            });
        }
        reasons.extend(position(r, facts, scene));
    }
    if facts.largest_part < MIN_LARGEST_PART {
        reasons.push(Reason {
            code: ReasonCode::Fragmented,
            detail: format!(
                "its largest connected part holds {:.0} % of it",
                facts.largest_part * 100.0
            ),
        });
    }
    if let Some(c) = facts
        .confidence
        .filter(|c| c.expected_dice < MIN_EXPECTED_DICE)
    {
        reasons.push(Reason {
            code: ReasonCode::LowConfidence,
            detail: format!(
                "the network expects a Dice of {:.2} of its own result (mean probability {:.2} inside the organ)",
                c.expected_dice, c.mean
            ),
        });
    }
    Assessment::from_reasons(reasons)
}

/// Where the grid cut the organ: the first or last slice (named by side when the
/// slices are axial), the edge of the reconstructed field of view.
fn cut_sides(b: Box3, scene: &Scene) -> Vec<&'static str> {
    let [nz, ny, nx] = scene.shape;
    let mut sides = Vec::new();
    let (first, last) = match scene.z_superior {
        Some(true) => (
            "the inferior end of the scan range",
            "the superior end of the scan range",
        ),
        Some(false) => (
            "the superior end of the scan range",
            "the inferior end of the scan range",
        ),
        None => ("the first slice", "the last slice"),
    };
    if b.lo[0] == 0 {
        sides.push(first);
    }
    if b.end[0] == nz {
        sides.push(last);
    }
    if b.lo[1] == 0 || b.end[1] == ny || b.lo[2] == 0 || b.end[2] == nx {
        sides.push("the edge of the field of view");
    }
    sides
}

/// The organ on the wrong side of the body (left or right of the midline, in front of
/// the body's centre for an organ that lies behind it).
fn position(r: &Reference, facts: &Facts, scene: &Scene) -> Option<Reason> {
    let [x, y, _] = facts.centre_mm;
    let [bx, by, _] = scene.body_mm;
    let wrong_side = match r.side {
        Some(Side::Left) => x < bx - MIDLINE_MARGIN_MM,
        Some(Side::Right) => x > bx + MIDLINE_MARGIN_MM,
        None => false,
    };
    let in_front = r.posterior && y < by - MIDLINE_MARGIN_MM;
    if !(wrong_side || in_front) {
        return None;
    }
    let side = |d: f64| if d > 0.0 { "left" } else { "right" };
    Some(Reason {
        code: ReasonCode::PositionImplausible,
        detail: format!(
            "its centre lies {:.0} mm to the patient's {} of the body's centre and {:.0} mm {} it",
            (x - bx).abs(),
            side(x - bx),
            (y - by).abs(),
            if y > by { "behind" } else { "in front of" }
        ),
    })
}

impl Scene {
    /// The grid of `volume`, which way its slices run, and its body's centre (voxels of
    /// soft tissue and denser, every fourth row and column).
    pub fn of(volume: &Volume) -> Self {
        let [nz, ny, nx] = volume.shape;
        let (mut sum, mut n) = ([0f64; 3], 0u64);
        for z in 0..nz {
            for y in (0..ny).step_by(4) {
                for x in (0..nx).step_by(4) {
                    if volume.data[(z * ny + y) * nx + x] > BODY_HU {
                        sum[0] += z as f64;
                        sum[1] += y as f64;
                        sum[2] += x as f64;
                        n += 1;
                    }
                }
            }
        }
        let centre = sum.map(|s| s / n.max(1) as f64);
        let normal = volume.geometry.direction[2];
        let axial = normal[2].abs() > 0.7;
        Self {
            shape: volume.shape,
            z_superior: axial.then_some(normal[2] > 0.0),
            scan_mm: axial.then_some(nz as f64 * volume.geometry.spacing[0]),
            body_mm: patient_mm(volume, centre),
        }
    }
}

/// The patient coordinates (mm) of the grid position `zyx` (fractional indices).
pub fn patient_mm(volume: &Volume, zyx: [f64; 3]) -> [f64; 3] {
    let g = &volume.geometry;
    let [row, column, normal] = g.direction;
    let [sz, sy, sx] = g.spacing;
    std::array::from_fn(|i| {
        g.origin[i] + zyx[2] * sx * row[i] + zyx[1] * sy * column[i] + zyx[0] * sz * normal[i]
    })
}

/// The share of label `value`'s voxels in its largest 6-connected part, counted within
/// its box.
pub fn largest_part(labels: &Grid<u8>, value: u8, bounds: Box3) -> f64 {
    let part = ops::crop(&labels.data, labels.shape, bounds);
    let mask = Grid {
        shape: part.shape,
        data: part.data.iter().map(|l| *l == value).collect(),
    };
    let all = mask.data.iter().filter(|v| **v).count();
    let largest = ops::largest_component(&mask)
        .data
        .iter()
        .filter(|v| **v)
        .count();
    largest as f64 / all.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cascade::manifest::Code;

    fn sct(value: &str) -> Code {
        Code {
            scheme: "SCT".into(),
            value: value.into(),
            meaning: String::new(),
        }
    }

    /// A label of SNOMED CT type `value`.
    fn organ(value: &str) -> Label {
        Label {
            value: 1,
            name: value.into(),
            category: sct("123037004"),
            kind: sct(value),
            modifier: None,
            region: None,
            region_modifier: None,
            color: [0; 3],
        }
    }

    const LIVER: &str = "10200004";
    const SPLEEN: &str = "78961009";
    const LEFT_KIDNEY: &str = "18639004";

    fn scene() -> Scene {
        Scene {
            shape: [100, 200, 200],
            z_superior: Some(true),
            scan_mm: Some(300.0),
            body_mm: [0.0, 0.0, 0.0],
        }
    }

    /// A whole liver on the patient's right, 1,500 ml, 100 HU, in one piece.
    fn liver() -> Facts {
        Facts {
            ml: 1_500.0,
            hu_mean: 100.0,
            bounds: Box3 {
                lo: [10, 20, 20],
                end: [60, 120, 100],
            },
            centre_mm: [-60.0, 0.0, 0.0],
            largest_part: 1.0,
            confidence: Some(Confidence {
                mean: 0.95,
                expected_dice: 0.9,
            }),
        }
    }

    fn codes(a: &Assessment) -> Vec<ReasonCode> {
        a.reasons.iter().map(|r| r.code).collect()
    }

    #[test]
    fn codes_are_named_as_the_summary_names_them() {
        for v in [Verdict::Ok, Verdict::Warn, Verdict::Fail] {
            assert_eq!(serde_json::to_value(v).unwrap(), v.as_str());
        }
        for c in [
            ReasonCode::Truncated,
            ReasonCode::VolumeImplausible,
            ReasonCode::AttenuationImplausible,
            ReasonCode::PositionImplausible,
            ReasonCode::Fragmented,
            ReasonCode::LowConfidence,
        ] {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }

    #[test]
    fn a_whole_plausible_organ_is_ok() {
        let a = assess(&organ(LIVER), &liver(), &scene());
        assert_eq!(a, Assessment::default());
        // An organ segnode has no reference for is only checked for cuts and parts.
        assert_eq!(assess(&organ("1"), &liver(), &scene()).verdict, Verdict::Ok);
    }

    #[test]
    fn an_organ_at_the_end_of_the_scan_range_is_truncated_and_its_volume_a_lower_bound() {
        let mut f = liver();
        f.bounds.end[0] = 100;
        f.ml = 300.0; // below the range: but only a part of the liver was scanned
        let a = assess(&organ(LIVER), &f, &scene());
        assert_eq!(codes(&a), [ReasonCode::Truncated]);
        assert_eq!(a.verdict, Verdict::Warn);
        assert!(a.volume_is_lower_bound());
        assert!(a.reasons[0].detail.contains("superior end"), "{a:?}");
        f.bounds.lo[0] = 0;
        let a = assess(&organ(LIVER), &f, &scene());
        assert!(
            a.reasons[0]
                .detail
                .contains("inferior end of the scan range and the superior end")
        );
        // In plane: the field of view.
        let mut f = liver();
        f.bounds.lo[2] = 0;
        let a = assess(&organ(LIVER), &f, &scene());
        assert!(a.reasons[0].detail.contains("field of view"), "{a:?}");
        // A truncated organ can still be too large.
        let mut f = liver();
        f.bounds.lo[0] = 0;
        f.ml = 9_000.0;
        let a = assess(&organ(LIVER), &f, &scene());
        assert_eq!(
            codes(&a),
            [ReasonCode::Truncated, ReasonCode::VolumeImplausible]
        );
        assert_eq!(a.verdict, Verdict::Fail);
        // A scan range shorter than the organ spans: cut, wherever the label ends.
        let short = Scene {
            scan_mm: Some(40.0),
            ..scene()
        };
        let mut f = liver();
        f.ml = 300.0;
        let a = assess(&organ(LIVER), &f, &short);
        assert_eq!(codes(&a), [ReasonCode::Truncated]);
        assert!(a.reasons[0].detail.contains("covers 40 mm"), "{a:?}");
    }

    #[test]
    fn a_whole_organ_of_implausible_volume_fails() {
        let mut f = liver();
        f.ml = 5.0;
        let a = assess(&organ(LIVER), &f, &scene());
        assert_eq!(codes(&a), [ReasonCode::VolumeImplausible]);
        assert_eq!(a.verdict, Verdict::Fail);
    }

    #[test]
    fn an_organ_of_fat_or_bone_fails_on_attenuation() {
        let mut f = liver();
        f.hu_mean = -90.0;
        assert_eq!(
            codes(&assess(&organ(LIVER), &f, &scene())),
            [ReasonCode::AttenuationImplausible]
        );
        f.hu_mean = 600.0;
        assert_eq!(assess(&organ(LIVER), &f, &scene()).verdict, Verdict::Fail);
    }

    #[test]
    fn a_spleen_on_the_right_or_a_kidney_in_front_is_out_of_place() {
        let mut spleen = liver();
        spleen.ml = 200.0;
        spleen.centre_mm = [-50.0, 0.0, 0.0];
        let a = assess(&organ(SPLEEN), &spleen, &scene());
        assert_eq!(codes(&a), [ReasonCode::PositionImplausible]);
        assert!(a.reasons[0].detail.contains("patient's right"), "{a:?}");
        spleen.centre_mm = [70.0, 20.0, 0.0];
        assert_eq!(
            assess(&organ(SPLEEN), &spleen, &scene()).verdict,
            Verdict::Ok
        );
        let mut kidney = spleen;
        kidney.ml = 150.0;
        kidney.centre_mm = [60.0, -40.0, 0.0];
        assert_eq!(
            codes(&assess(&organ(LEFT_KIDNEY), &kidney, &scene())),
            [ReasonCode::PositionImplausible]
        );
        kidney.centre_mm = [60.0, 30.0, 0.0];
        assert_eq!(
            assess(&organ(LEFT_KIDNEY), &kidney, &scene()).verdict,
            Verdict::Ok
        );
        // TotalSegmentator's coding: "Kidney" with a side modifier, the same checks.
        let side = |value: &str| Label {
            modifier: Some(sct(value)),
            ..organ("64033007")
        };
        assert_eq!(
            codes(&assess(
                &side(crate::cascade::manifest::RIGHT),
                &kidney,
                &scene()
            )),
            [ReasonCode::PositionImplausible]
        );
        assert_eq!(assess(&side(LEFT), &kidney, &scene()).verdict, Verdict::Ok);
        assert_eq!(
            assess(&organ("64033007"), &kidney, &scene()).verdict,
            Verdict::Ok
        );
    }

    #[test]
    fn an_organ_the_network_was_unsure_of_has_low_confidence() {
        let mut f = liver();
        f.confidence = Some(Confidence {
            mean: 0.7,
            expected_dice: 0.45,
        });
        let a = assess(&organ(LIVER), &f, &scene());
        assert_eq!(codes(&a), [ReasonCode::LowConfidence]);
        assert_eq!(a.verdict, Verdict::Warn);
        assert!(a.reasons[0].detail.contains("Dice of 0.45"), "{a:?}");
        // A label map without the network's output is not judged on it.
        f.confidence = None;
        assert_eq!(assess(&organ(LIVER), &f, &scene()).verdict, Verdict::Ok);
    }

    #[test]
    fn an_organ_in_pieces_is_fragmented() {
        let mut f = liver();
        f.largest_part = 0.6;
        let a = assess(&organ(LIVER), &f, &scene());
        assert_eq!(codes(&a), [ReasonCode::Fragmented]);
        assert_eq!(a.verdict, Verdict::Warn);
        // Counted on a label map: two parts of 3 and 1 voxels.
        let labels = Grid {
            shape: [1, 1, 6],
            data: vec![4, 4, 4, 0, 4, 0],
        };
        let b = Box3 {
            lo: [0, 0, 0],
            end: [1, 1, 5],
        };
        assert_eq!(largest_part(&labels, 4, b), 0.75);
    }
}
