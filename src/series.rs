//! Series tracking: what a received instance says about its series
//! ([`InstanceMeta::from_object`], PS3.3 C.7.3/C.7.6/C.8.2), when a series is complete (no instance
//! for the stable age, as Orthanc's StableAge), and whether it is eligible for
//! processing under the configured rules. The tracker loop carries on from the
//! database after a restart: its only state is the `series` table.

use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use tokio_util::sync::CancellationToken;

use crate::config::{Eligibility, StatRule};
use crate::dicom::functional::{self, text};
use crate::dicom::{Uid, UidError};
use crate::store::{
    InstanceMeta, InstanceRow, JobId, Priority, SeriesRow, Store, StoreError, now_ms,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetaError {
    #[error("{attribute} is missing or not a valid UID: {source}")]
    BadUid {
        attribute: &'static str,
        #[source]
        source: UidError,
    },
}

impl InstanceMeta {
    /// Reads the recorded attributes from a data set. The four identifying UIDs must be
    /// present and valid: a series without them cannot be tracked or referenced.
    pub fn from_object(obj: &InMemDicomObject) -> Result<Self, MetaError> {
        let uid = |tag, attribute| {
            Uid::parse(&text(obj, tag).unwrap_or_default())
                .map_err(|source| MetaError::BadUid { attribute, source })
        };
        Ok(Self {
            sop_class_uid: uid(tags::SOP_CLASS_UID, "SOP Class UID")?,
            sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOP Instance UID")?,
            study_uid: uid(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
            series_uid: uid(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
            patient_id: text(obj, tags::PATIENT_ID),
            accession_number: text(obj, tags::ACCESSION_NUMBER),
            modality: text(obj, tags::MODALITY).map(|m| m.to_uppercase()),
            series_description: text(obj, tags::SERIES_DESCRIPTION),
            image_type: text(obj, tags::IMAGE_TYPE),
            number_of_frames: functional::get(obj, tags::NUMBER_OF_FRAMES)
                .and_then(|e| e.to_int::<u32>().ok())
                .unwrap_or(1),
            slice_thickness_mm: functional::element(
                obj,
                0,
                tags::PIXEL_MEASURES_SEQUENCE,
                tags::SLICE_THICKNESS,
            )
            .and_then(|e| e.to_float64().ok()),
            orientation: functional::numbers(
                obj,
                0,
                tags::PLANE_ORIENTATION_SEQUENCE,
                tags::IMAGE_ORIENTATION_PATIENT,
            ),
        })
    }
}

/// Whether a stable series goes to processing.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Eligible,
    /// Not processed, for this reason.
    Ignored(String),
}

/// The angle in degrees between the slice normal of an Image Orientation (Patient)
/// and the patient's head-feet axis; `None` for a degenerate orientation.
pub fn axial_tilt_degrees(o: &[f64; 6]) -> Option<f64> {
    let n = [
        o[1] * o[5] - o[2] * o[4],
        o[2] * o[3] - o[0] * o[5],
        o[0] * o[4] - o[1] * o[3],
    ];
    let norm = (n[0] * n[0] + n[1] * n[1] + n[2] * n[2]).sqrt();
    (norm > 1e-6).then(|| (n[2].abs() / norm).clamp(0.0, 1.0).acos().to_degrees())
}

/// Applies the eligibility rules, in the order a person would check them.
pub fn decide(series: &SeriesRow, instances: &[InstanceRow], rules: &Eligibility) -> Decision {
    let ignored = |reason: String| Decision::Ignored(reason);
    let modality = series.modality.clone().unwrap_or_default();
    if !rules.modalities.contains(&modality) {
        return ignored(format!(
            "modality {:?} is not processed (configured: {})",
            modality,
            rules.modalities.join(", ")
        ));
    }
    if rules.exclude_localizers {
        if let Some(t) = instances
            .iter()
            .filter_map(|i| i.image_type.as_deref())
            .find(|t| t.to_uppercase().split('\\').any(|v| v == "LOCALIZER"))
        {
            return ignored(format!("series is a localizer (Image Type {t})"));
        }
    }
    let description = series.series_description.as_deref().unwrap_or("");
    if let Some(p) = rules
        .description_exclude
        .iter()
        .find(|p| p.is_match(description))
    {
        return ignored(format!(
            "series description matches exclude pattern {:?}",
            p.as_str()
        ));
    }
    if !rules.description_include.is_empty()
        && !rules
            .description_include
            .iter()
            .any(|p| p.is_match(description))
    {
        return ignored("series description matches no include pattern".to_string());
    }
    if rules.require_axial {
        let mut worst: Option<f64> = None;
        for i in instances {
            let tilt = i
                .orientation
                .as_deref()
                .and_then(parse_orientation)
                .and_then(|o| axial_tilt_degrees(&o));
            let Some(tilt) = tilt else {
                return ignored(
                    "an instance has no usable Image Orientation (Patient)".to_string(),
                );
            };
            worst = Some(worst.map_or(tilt, |w: f64| w.max(tilt)));
        }
        if let Some(w) = worst.filter(|w| *w > rules.max_axial_tilt_degrees) {
            return ignored(format!(
                "not axial: slice normal is {w:.1}° from the head-feet axis (limit {}°)",
                rules.max_axial_tilt_degrees
            ));
        }
    }
    let slices: i64 = instances.iter().map(|i| i.number_of_frames).sum();
    if slices < i64::from(rules.min_slices) {
        return ignored(format!(
            "only {slices} slices, at least {} needed",
            rules.min_slices
        ));
    }
    if let Some(t) = instances
        .iter()
        .filter_map(|i| i.slice_thickness_mm)
        .reduce(f64::max)
        .filter(|t| *t > rules.max_slice_thickness_mm)
    {
        return ignored(format!(
            "slice thickness {t} mm exceeds the limit of {} mm",
            rules.max_slice_thickness_mm
        ));
    }
    Decision::Eligible
}

fn parse_orientation(s: &str) -> Option<[f64; 6]> {
    let v: Vec<f64> = s
        .split('\\')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    v.try_into().ok()
}

/// Checks for stable series until cancelled: each one found gets its decision and, when
/// its revision has none yet, a job. Calls `on_job` with each new job's id.
pub async fn track(
    store: Store,
    stable_age: Duration,
    rules: Eligibility,
    stat: Vec<StatRule>,
    shutdown: CancellationToken,
    on_job: impl Fn(JobId),
) {
    let tick = (stable_age / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        match settle_due(&store, stable_age, &rules, &stat).await {
            Ok(jobs) => jobs.into_iter().for_each(&on_job),
            Err(e) => tracing::error!(error = %e, "series tracker could not read the database"),
        }
    }
}

/// One pass of the tracker; returns the ids of the jobs it created. A job is `stat`
/// when one of the `stat` rules matches its series, or a `stat` request asked for it.
pub async fn settle_due(
    store: &Store,
    stable_age: Duration,
    rules: &Eligibility,
    stat: &[StatRule],
) -> Result<Vec<JobId>, StoreError> {
    let cutoff = now_ms() - stable_age.as_millis() as i64;
    let mut created = Vec::new();
    for series in store.series_due(cutoff).await? {
        let instances = store.series_instances(series.id).await?;
        let decision = decide(&series, &instances, rules);
        let ignored = match &decision {
            Decision::Eligible => None,
            Decision::Ignored(reason) => Some(reason.as_str()),
        };
        let description = series.series_description.as_deref().unwrap_or_default();
        let priority = if stat
            .iter()
            .any(|r| r.matches(&series.calling_ae, description))
            || store.stat_requested(series.series_uid.as_str()).await?
        {
            Priority::Stat
        } else {
            Priority::Routine
        };
        let job = store
            .settle_series(&series, instances.len() as i64, ignored, priority)
            .await?;
        let span = tracing::info_span!("series", series_uid = %series.series_uid);
        let _enter = span.enter();
        match (&job, &decision) {
            (Some(id), Decision::Eligible) => tracing::info!(
                job_id = id.0,
                instances = instances.len(),
                priority = priority.as_str(),
                "series stable, job queued"
            ),
            (Some(id), Decision::Ignored(reason)) => {
                tracing::info!(job_id = id.0, %reason, "series stable, ignored")
            }
            (None, _) => tracing::debug!("series stable, unchanged or still changing: no new job"),
        }
        created.extend(job);
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn rules(extra: &str) -> Eligibility {
        let text = format!(
            "[node]\nae_title='A'\ndata_dir='/tmp'\n[dicom]\nlisten='127.0.0.1:1'\nallow_any_calling_ae=true\n[eligibility]\n{extra}"
        );
        crate::config::Config::from_toml(&text, &BTreeMap::new())
            .unwrap()
            .eligibility
    }

    fn series(modality: &str, description: &str) -> SeriesRow {
        SeriesRow {
            id: crate::store::SeriesId(1),
            series_uid: Uid::parse("1.2.3").unwrap(),
            study_uid: Uid::parse("1.2").unwrap(),
            patient_id: None,
            accession_number: None,
            modality: Some(modality.into()),
            series_description: Some(description.into()),
            calling_ae: "PACS".into(),
            revision: 1,
            last_received_ms: 0,
        }
    }

    fn slices(n: usize, orientation: &str, thickness: f64, image_type: &str) -> Vec<InstanceRow> {
        (0..n)
            .map(|_| InstanceRow {
                sop_class_uid: Uid::parse(crate::dicom::uid::CT_IMAGE_STORAGE).unwrap(),
                modality: Some("CT".into()),
                image_type: Some(image_type.into()),
                number_of_frames: 1,
                slice_thickness_mm: Some(thickness),
                orientation: Some(orientation.into()),
            })
            .collect()
    }

    const AXIAL: &str = "1\\0\\0\\0\\1\\0";
    const CORONAL: &str = "1\\0\\0\\0\\0\\-1";

    #[test]
    fn eligible_axial_ct() {
        let d = decide(
            &series("CT", "Abdomen"),
            &slices(20, AXIAL, 3.0, "ORIGINAL\\PRIMARY\\AXIAL"),
            &rules(""),
        );
        assert_eq!(d, Decision::Eligible);
    }

    #[test]
    fn each_rule_gives_its_reason() {
        let r = rules(
            "description_exclude = ['(?i)arterial']\nmin_slices = 10\nmax_slice_thickness_mm = 5",
        );
        let axial = slices(20, AXIAL, 3.0, "ORIGINAL\\PRIMARY\\AXIAL");
        let cases = [
            (decide(&series("MR", "x"), &axial, &r), "modality \"MR\""),
            (
                decide(
                    &series("CT", "x"),
                    &slices(20, AXIAL, 3.0, "ORIGINAL\\PRIMARY\\LOCALIZER"),
                    &r,
                ),
                "localizer",
            ),
            (
                decide(&series("CT", "Arterial phase"), &axial, &r),
                "exclude pattern",
            ),
            (
                decide(
                    &series("CT", "x"),
                    &slices(20, CORONAL, 3.0, "ORIGINAL"),
                    &r,
                ),
                "not axial: slice normal is 90.0°",
            ),
            (
                decide(&series("CT", "x"), &slices(5, AXIAL, 3.0, "ORIGINAL"), &r),
                "only 5 slices",
            ),
            (
                decide(&series("CT", "x"), &slices(20, AXIAL, 8.0, "ORIGINAL"), &r),
                "slice thickness 8 mm",
            ),
        ];
        for (decision, expected) in cases {
            match decision {
                Decision::Ignored(reason) => {
                    assert!(reason.contains(expected), "{reason:?} lacks {expected:?}")
                }
                Decision::Eligible => panic!("expected {expected:?} to refuse"),
            }
        }
    }

    #[test]
    fn include_patterns_restrict() {
        let r = rules("description_include = ['(?i)abdomen']");
        let axial = slices(20, AXIAL, 3.0, "ORIGINAL");
        assert_eq!(
            decide(&series("CT", "ABDOMEN 3mm"), &axial, &r),
            Decision::Eligible
        );
        assert!(matches!(
            decide(&series("CT", "Chest"), &axial, &r),
            Decision::Ignored(_)
        ));
    }

    #[test]
    fn tilt_of_common_orientations() {
        assert_eq!(axial_tilt_degrees(&[1., 0., 0., 0., 1., 0.]), Some(0.0));
        // Feet-first / flipped axial is still axial.
        assert_eq!(axial_tilt_degrees(&[-1., 0., 0., 0., 1., 0.]), Some(0.0));
        let c = 15f64.to_radians();
        let tilted = axial_tilt_degrees(&[1., 0., 0., 0., c.cos(), c.sin()]).unwrap();
        assert!((tilted - 15.0).abs() < 1e-9);
        assert_eq!(axial_tilt_degrees(&[0.; 6]), None);
    }
}
