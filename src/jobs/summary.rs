//! The job summary: one typed record of what processing a series did (per-stage
//! timings, the volume, what the cascade did, the SEG, the measurement report's organs,
//! the key images), or where it stopped. [`process`](super::process) builds it, the
//! pipeline completes it, the store keeps it as JSON on the job, and every reader (API,
//! dashboard, CLI, webhooks) reads it back as this type: no reader indexes it by key.
//!
//! The JSON is the API's `summary` object: a field is left out when it does not apply
//! (a failed job has `failed_stage` and `retryable`, an interrupted one `starts`).
//! Where each result object lies is not part of it: that is the store's `results`
//! table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::cascade::CascadeSummary;
use crate::dicom::Uid;
use crate::quality::Verdict;
use crate::sr::Organ;
use crate::store::{JobRow, ResultRow, format_ms};
use crate::volume::HuRange;

/// The stages a job goes through, as timings and failures name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Volume,
    Cascade,
    Seg,
    Sr,
    KeyImages,
    /// Writing the result objects to the spool.
    Spool,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Volume => "volume",
            Stage::Cascade => "cascade",
            Stage::Seg => "seg",
            Stage::Sr => "sr",
            Stage::KeyImages => "key_images",
            Stage::Spool => "spool",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a job did, or where it stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// Milliseconds per stage.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timings_ms: BTreeMap<Stage, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<VolumeSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cascade: Option<CascadeSummary>,
    /// The BINARY SEG (the one every job records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seg: Option<SegSummary>,
    /// What the measurement report says of each organ, with how far it can be trusted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organs: Vec<Organ>,
    /// The worst of the organs' verdicts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qa_verdict: Option<Verdict>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_images: Vec<KeyImageSummary>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sr: Option<SrSummary>,
    /// The stage a failed job stopped in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_stage: Option<Stage>,
    /// Whether an operator's retry of a failed job may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retryable: Option<bool>,
    /// How many times the node stopped while processing an interrupted job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts: Option<i64>,
}

/// The assembled volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSummary {
    /// (z, y, x) voxels.
    pub shape: [usize; 3],
    pub spacing_mm: [f64; 3],
    pub origin_mm: [f64; 3],
    pub hu: HuRange,
}

/// The SEG a job made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegSummary {
    pub sop_instance_uid: Uid,
    pub series_instance_uid: Uid,
    pub sop_class_uid: String,
    pub frames: usize,
    pub bytes: usize,
}

/// The measurement report a job made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SrSummary {
    pub sop_instance_uid: Uid,
    pub series_instance_uid: Uid,
    pub bytes: usize,
}

/// One key image: its UID and the source slice (z index) it shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyImageSummary {
    pub sop_instance_uid: Uid,
    pub slice: usize,
}

/// A job as the API and `segnode jobs --json` show it: its row, when it was created,
/// its summary and its result objects.
#[derive(Debug, Serialize)]
pub struct JobView<'a> {
    #[serde(flatten)]
    pub job: &'a JobRow,
    pub created: String,
    pub summary: Option<JobSummary>,
    /// The objects of its result and their UIDs: the SEGs, the SR, the key images.
    pub objects: Vec<&'a ResultRow>,
}

impl<'a> JobView<'a> {
    /// `job` with its objects among `results` (those of other jobs are left out).
    pub fn of(job: &'a JobRow, results: &'a [ResultRow]) -> Self {
        Self {
            job,
            created: format_ms(job.created_ms),
            summary: JobSummary::of(job),
            objects: results.iter().filter(|r| r.job_id == job.id).collect(),
        }
    }
}

impl JobSummary {
    /// The summary of a failed job.
    pub fn failed(stage: Stage, retryable: bool) -> Self {
        Self {
            failed_stage: Some(stage),
            retryable: Some(retryable),
            ..Self::default()
        }
    }

    /// The summary of a job the node stopped in `starts` times.
    pub fn interrupted(starts: i64) -> Self {
        Self {
            starts: Some(starts),
            ..Self::default()
        }
    }

    /// A job's summary as the store keeps it; `None` when the job has none yet, or one
    /// this version cannot read (logged: it is the node's own record).
    pub fn of(job: &JobRow) -> Option<Self> {
        let text = job.summary.as_deref()?;
        serde_json::from_str(text)
            .inspect_err(|e| {
                tracing::warn!(job_id = job.id.0, error = %e, "the job's summary cannot be read");
            })
            .ok()
    }

    /// Records the time `stage` took since `started`.
    pub fn time(&mut self, stage: Stage, started: std::time::Instant) {
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.timings_ms.insert(stage, ms);
    }

    /// Why a job that succeeded delivers no segmentation: the cascade found nothing, or
    /// every organ it found failed its checks and was left out (the report says so).
    pub fn no_segmentation(&self) -> Option<&'static str> {
        if self.cascade.as_ref().is_some_and(|c| c.empty) {
            Some("no structures found")
        } else if !self.organs.is_empty() && self.organs.iter().all(|o| o.left_out) {
            Some("every organ failed its quality checks and was left out")
        } else {
            None
        }
    }

    /// The time every stage took together.
    pub fn total_ms(&self) -> u64 {
        self.timings_ms.values().sum()
    }

    /// The summary as the store keeps it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("a summary serialises")
    }

    /// Milliseconds per stage, as the store's `job_timings` keeps them.
    pub fn timings(&self) -> Vec<(&'static str, i64)> {
        self.timings_ms
            .iter()
            .map(|(stage, ms)| (stage.as_str(), i64::try_from(*ms).unwrap_or(i64::MAX)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_summary_is_todays_json_and_reads_back() {
        let s = JobSummary::failed(Stage::KeyImages, false);
        assert_eq!(
            s.to_json(),
            serde_json::json!({ "failed_stage": "key_images", "retryable": false })
        );
        let back: JobSummary = serde_json::from_value(s.to_json()).unwrap();
        assert_eq!(back, s);
        assert_eq!(
            JobSummary::interrupted(3).to_json(),
            serde_json::json!({ "starts": 3 })
        );
    }

    #[test]
    fn timings_are_keyed_by_stage_name_and_summed() {
        let mut s = JobSummary::default();
        s.timings_ms.insert(Stage::Volume, 5);
        s.timings_ms.insert(Stage::KeyImages, 7);
        assert_eq!(
            s.to_json(),
            serde_json::json!({ "timings_ms": { "volume": 5, "key_images": 7 } })
        );
        assert_eq!(s.total_ms(), 12);
        assert_eq!(s.timings(), [("volume", 5), ("key_images", 7)]);
    }

    /// Summaries written before the results table kept each key image's spool file:
    /// they still read.
    #[test]
    fn an_older_summary_with_key_image_files_reads() {
        let old = serde_json::json!({
            "timings_ms": { "volume": 1 },
            "key_images": [{ "sop_instance_uid": "2.25.7", "slice": 3, "file": "ab/cd" }],
        });
        let s: JobSummary = serde_json::from_value(old).unwrap();
        assert_eq!(s.key_images[0].slice, 3);
        assert_eq!(s.key_images[0].sop_instance_uid, "2.25.7");
    }
}
