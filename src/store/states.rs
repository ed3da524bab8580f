//! The states and kinds the store records: a job's state machine (pure and exhaustively
//! tested; every stage moves a job only through [`JobState::transition`]), a series'
//! state, a delivery's state, the kinds of result object and of audit event. Each is stored as its snake_case name and read
//! back as the enum, so no stage compares strings.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Eligible and waiting for a worker.
    Queued,
    /// A worker is processing it.
    Running,
    /// Processing finished with a result.
    Succeeded,
    /// Processing stopped with a reason a person can read.
    Failed,
    /// The series is not eligible (the reason says which rule).
    Ignored,
    /// A newer revision of the same series replaced it.
    Superseded,
    /// Its result reached every destination.
    Delivered,
    /// Processed, its result held until a person approves it (`[review] hold`).
    Review,
    /// A person rejected its result in review: nothing of it is ever delivered.
    Rejected,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a job cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: JobState,
    pub to: JobState,
}

impl JobState {
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Ignored,
        JobState::Superseded,
        JobState::Delivered,
        JobState::Review,
        JobState::Rejected,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Ignored => "ignored",
            JobState::Superseded => "superseded",
            JobState::Delivered => "delivered",
            JobState::Review => "review",
            JobState::Rejected => "rejected",
        }
    }

    /// Whether `self → to` is allowed. Running → queued is the resumption of a job
    /// interrupted by a crash; failed → queued is an operator's retry; succeeded →
    /// delivered when the result reached every destination (and back when an operator
    /// re-sends it); a result held for review is approved (succeeded) or rejected.
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Running | Superseded)
                | (Running, Succeeded | Failed | Queued | Review)
                | (Review, Succeeded | Rejected | Superseded)
                | (Failed, Queued | Superseded)
                | (Succeeded, Superseded | Delivered)
                | (Delivered, Superseded | Succeeded)
                | (Ignored, Superseded)
        )
    }

    pub fn transition(self, to: JobState) -> Result<JobState, IllegalTransition> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// States a newer revision of the series may supersede at once. A running job is
    /// left to finish; the newer job is queued beside it.
    pub fn supersedable(self) -> bool {
        self.can_become(JobState::Superseded)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the enum's.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

/// `FromStr` by the names of `ALL`, and storage as that name (see
/// [`super::stored_as_text`]).
macro_rules! named {
    ($($ty:ty),*) => {$(
        impl FromStr for $ty {
            type Err = UnknownName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <$ty>::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownName(s.to_string()))
            }
        }
        super::stored_as_text!($ty, |s: &str| s.parse::<$ty>());
    )*};
}

named!(
    JobState,
    DeliveryState,
    ResultObject,
    AuditKind,
    SeriesState,
    Priority,
    RequestState
);

/// Where a request for a study stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for a node to take it.
    Queued,
    /// Querying the source and retrieving the study's series.
    Retrieving,
    /// Retrieved; its series are being processed.
    Processing,
    /// Every series it covers has a finished job (or had one already).
    Done,
    /// It could not be carried out; the reason says why.
    Failed,
}

impl RequestState {
    pub const ALL: [RequestState; 5] = [
        RequestState::Queued,
        RequestState::Retrieving,
        RequestState::Processing,
        RequestState::Done,
        RequestState::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Queued => "queued",
            RequestState::Retrieving => "retrieving",
            RequestState::Processing => "processing",
            RequestState::Done => "done",
            RequestState::Failed => "failed",
        }
    }

    /// Whether nothing more happens to it.
    pub fn is_final(self) -> bool {
        matches!(self, RequestState::Done | RequestState::Failed)
    }
}

/// Which queued job a worker takes first: every `stat` job before any `routine` one,
/// then the oldest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    #[default]
    Routine,
    Stat,
}

impl Priority {
    pub const ALL: [Priority; 2] = [Priority::Routine, Priority::Stat];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Routine => "routine",
            Priority::Stat => "stat",
        }
    }
}

/// Where a series stands: instances still arriving, or none for the stable age.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SeriesState {
    /// An instance arrived within the stable age (or the series changed since its job).
    Receiving,
    /// No instance for the stable age: its revision has its job.
    Stable,
}

impl SeriesState {
    pub const ALL: [SeriesState; 2] = [SeriesState::Receiving, SeriesState::Stable];

    pub fn as_str(self) -> &'static str {
        match self {
            SeriesState::Receiving => "receiving",
            SeriesState::Stable => "stable",
        }
    }
}

/// Where one delivery of a job's result stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting for its next attempt.
    Pending,
    /// The destination acknowledged it.
    Delivered,
    /// Out of attempts, or refused for good.
    Failed,
    /// Its job's result waits for review: released (pending) when approved.
    Held,
}

impl DeliveryState {
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::Delivered,
        DeliveryState::Failed,
        DeliveryState::Held,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
            DeliveryState::Held => "held",
        }
    }
}

/// Which object of a job's result a delivery sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultObject {
    /// The DICOM Segmentation.
    Seg,
    /// The measurement report (Comprehensive 3D SR).
    Sr,
    /// The key images (Secondary Capture), one delivery per image.
    KeyImages,
    /// The HL7 ORU^R01 for the RIS (`[[hl7_destinations]]`).
    Hl7,
}

impl ResultObject {
    pub const ALL: [ResultObject; 4] = [
        ResultObject::Seg,
        ResultObject::Sr,
        ResultObject::KeyImages,
        ResultObject::Hl7,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResultObject::Seg => "seg",
            ResultObject::Sr => "sr",
            ResultObject::KeyImages => "key_images",
            ResultObject::Hl7 => "hl7",
        }
    }
}

/// What an audit record says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    AssociationAccepted,
    AssociationRejected,
    InstanceIgnored,
    InstanceRefused,
    /// An instance re-sent with the same SOP Instance UID and new content.
    InstanceReplaced,
    InstanceUnacknowledgedDropped,
    JobQueued,
    JobIgnored,
    JobSuperseded,
    JobStarted,
    /// A job left running by a stop went back to the queue.
    JobRequeued,
    JobSucceeded,
    JobFailed,
    JobDelivered,
    /// A job's result held for review.
    JobHeld,
    JobApproved,
    JobRejected,
    DeliveryAttempt,
    OperatorRetry,
    SpoolPurged,
    WebhookSent,
    WebhookFailed,
    /// A request for a study changed state (queued, retrieving, processing, done, failed).
    RequestChanged,
}

impl AuditKind {
    pub const ALL: [AuditKind; 23] = [
        AuditKind::AssociationAccepted,
        AuditKind::AssociationRejected,
        AuditKind::InstanceIgnored,
        AuditKind::InstanceRefused,
        AuditKind::InstanceReplaced,
        AuditKind::InstanceUnacknowledgedDropped,
        AuditKind::JobQueued,
        AuditKind::JobIgnored,
        AuditKind::JobSuperseded,
        AuditKind::JobStarted,
        AuditKind::JobRequeued,
        AuditKind::JobSucceeded,
        AuditKind::JobFailed,
        AuditKind::JobDelivered,
        AuditKind::JobHeld,
        AuditKind::JobApproved,
        AuditKind::JobRejected,
        AuditKind::DeliveryAttempt,
        AuditKind::OperatorRetry,
        AuditKind::SpoolPurged,
        AuditKind::WebhookSent,
        AuditKind::WebhookFailed,
        AuditKind::RequestChanged,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::AssociationAccepted => "association_accepted",
            AuditKind::AssociationRejected => "association_rejected",
            AuditKind::InstanceIgnored => "instance_ignored",
            AuditKind::InstanceRefused => "instance_refused",
            AuditKind::InstanceReplaced => "instance_replaced",
            AuditKind::InstanceUnacknowledgedDropped => "instance_unacknowledged_dropped",
            AuditKind::JobQueued => "job_queued",
            AuditKind::JobIgnored => "job_ignored",
            AuditKind::JobSuperseded => "job_superseded",
            AuditKind::JobStarted => "job_started",
            AuditKind::JobRequeued => "job_requeued",
            AuditKind::JobSucceeded => "job_succeeded",
            AuditKind::JobFailed => "job_failed",
            AuditKind::JobDelivered => "job_delivered",
            AuditKind::JobHeld => "job_held",
            AuditKind::JobApproved => "job_approved",
            AuditKind::JobRejected => "job_rejected",
            AuditKind::DeliveryAttempt => "delivery_attempt",
            AuditKind::OperatorRetry => "operator_retry",
            AuditKind::SpoolPurged => "spool_purged",
            AuditKind::WebhookSent => "webhook_sent",
            AuditKind::WebhookFailed => "webhook_failed",
            AuditKind::RequestChanged => "request_changed",
        }
    }
}

impl fmt::Display for AuditKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::JobState::*;
    use super::*;

    #[test]
    fn legal_transitions_are_exactly_these() {
        let legal = [
            (Queued, Running),
            (Queued, Superseded),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Queued),
            (Running, Review),
            (Review, Succeeded),
            (Review, Rejected),
            (Review, Superseded),
            (Failed, Queued),
            (Failed, Superseded),
            (Succeeded, Superseded),
            (Succeeded, Delivered),
            (Delivered, Superseded),
            (Delivered, Succeeded),
            (Ignored, Superseded),
        ];
        for from in JobState::ALL {
            for to in JobState::ALL {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn superseded_and_rejected_are_terminal_and_running_is_not_supersedable() {
        assert!(JobState::ALL.iter().all(|s| !Superseded.can_become(*s)));
        assert!(JobState::ALL.iter().all(|s| !Rejected.can_become(*s)));
        assert!(!Running.supersedable());
        assert!(Queued.supersedable());
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("done".parse::<JobState>().is_err());
        for s in SeriesState::ALL {
            assert_eq!(s.as_str().parse::<SeriesState>().unwrap(), s);
        }
    }

    #[test]
    fn audit_kinds_round_trip_and_are_distinct() {
        let names: std::collections::HashSet<_> =
            AuditKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), AuditKind::ALL.len());
        for k in AuditKind::ALL {
            assert_eq!(k.as_str().parse::<AuditKind>().unwrap(), k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        for s in DeliveryState::ALL {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
