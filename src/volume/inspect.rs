//! `segnode inspect`: what the node would make of DICOM files, without a model. The
//! files are grouped into series as the offline runner groups them; each series is
//! assembled into a volume (facts: shape, spacing, origin, direction, HU range) or
//! refused with the reason the node would record. A typed [`Inspection`] that the
//! command line prints as text or JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{HuRange, Scan, Tolerances, assemble, scan};

/// Why a series or a file was refused.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Refusal {
    pub code: &'static str,
    pub message: String,
}

/// A file that is no usable DICOM image, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

impl Skipped {
    /// The files [`scan`] left out.
    pub fn all(skipped: Vec<(PathBuf, String)>) -> Vec<Self> {
        skipped
            .into_iter()
            .map(|(p, reason)| Skipped {
                path: p.display().to_string(),
                reason,
            })
            .collect()
    }
}

/// What `inspect` found.
#[derive(Debug, Serialize)]
pub struct Inspection {
    pub series: Vec<SeriesInspection>,
    pub not_images: Vec<Skipped>,
}

/// One series: its files and its volume, or why it was refused.
#[derive(Debug, Serialize)]
pub struct SeriesInspection {
    pub series_uid: String,
    pub files: usize,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Outcome {
    Assembled(VolumeFacts),
    Refused { refusal: Refusal },
}

/// The facts of an assembled volume.
#[derive(Debug, Serialize)]
pub struct VolumeFacts {
    pub modality: Option<String>,
    pub series_description: Option<String>,
    /// (z, y, x) voxels.
    pub shape: [usize; 3],
    /// (z, y, x) in mm.
    pub spacing: [f64; 3],
    pub origin: [f64; 3],
    pub direction: [[f64; 3]; 3],
    pub hu: HuRange,
}

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error("--dump needs exactly one series, found {0}")]
    DumpNeedsOneSeries(usize),
    #[error("cannot write {path}")]
    Dump {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

impl Inspection {
    /// How many series were refused.
    pub fn refused(&self) -> usize {
        self.series
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Refused { .. }))
            .count()
    }
}

/// Inspects the files under `paths`; with `dump`, writes the one series' HU volume
/// there as raw little-endian float32 (z, y, x).
pub fn inspect(paths: &[PathBuf], dump: Option<&Path>) -> Result<Inspection, InspectError> {
    let Scan {
        series: groups,
        skipped,
    } = scan(paths);
    if dump.is_some() && groups.len() != 1 {
        return Err(InspectError::DumpNeedsOneSeries(groups.len()));
    }
    let mut series = Vec::with_capacity(groups.len());
    for (series_uid, files) in groups {
        let outcome = match assemble(&files, 2, &Tolerances::default()) {
            Ok(v) => {
                if let Some(path) = dump {
                    v.dump(path).map_err(|source| InspectError::Dump {
                        path: path.display().to_string(),
                        source,
                    })?;
                }
                Outcome::Assembled(VolumeFacts {
                    hu: v.hu_stats(),
                    modality: v.source.modality,
                    series_description: v.source.series_description,
                    shape: v.shape,
                    spacing: v.geometry.spacing,
                    origin: v.geometry.origin,
                    direction: v.geometry.direction,
                })
            }
            Err(e) => Outcome::Refused {
                refusal: Refusal {
                    code: e.code(),
                    message: e.to_string(),
                },
            },
        };
        series.push(SeriesInspection {
            series_uid,
            files: files.len(),
            outcome,
        });
    }
    Ok(Inspection {
        series,
        not_images: Skipped::all(skipped),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_are_no_dicom_are_listed_not_refused_as_series() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"not DICOM").unwrap();
        let found = inspect(&[dir.path().to_path_buf()], None).unwrap();
        assert!(found.series.is_empty());
        assert_eq!(found.refused(), 0);
        assert_eq!(found.not_images.len(), 1);
        assert!(found.not_images[0].path.ends_with("notes.txt"));
        assert!(matches!(
            inspect(&[dir.path().to_path_buf()], Some(&dir.path().join("v.f32"))),
            Err(InspectError::DumpNeedsOneSeries(0))
        ));
    }
}
