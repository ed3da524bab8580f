//! Jobs: one per (series, revision) that became stable. This module holds the job state
//! machine, pure and exhaustively tested; the store persists it and every stage moves a
//! job only through [`JobState::transition`].

pub mod pipeline;

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
}

pub const ALL_STATES: [JobState; 7] = [
    JobState::Queued,
    JobState::Running,
    JobState::Succeeded,
    JobState::Failed,
    JobState::Ignored,
    JobState::Superseded,
    JobState::Delivered,
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a job cannot go from {from} to {to}")]
pub struct IllegalTransition {
    pub from: JobState,
    pub to: JobState,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Ignored => "ignored",
            JobState::Superseded => "superseded",
            JobState::Delivered => "delivered",
        }
    }

    /// Whether `self → to` is allowed. Running → queued is the resumption of a job
    /// interrupted by a crash; failed → queued is an operator's retry; succeeded →
    /// delivered when the result reached every destination (and back when an operator
    /// re-sends it).
    pub fn can_become(self, to: JobState) -> bool {
        use JobState::*;
        matches!(
            (self, to),
            (Queued, Running | Superseded)
                | (Running, Succeeded | Failed | Queued)
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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown job state {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATES
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
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
            (Failed, Queued),
            (Failed, Superseded),
            (Succeeded, Superseded),
            (Succeeded, Delivered),
            (Delivered, Superseded),
            (Delivered, Succeeded),
            (Ignored, Superseded),
        ];
        for from in ALL_STATES {
            for to in ALL_STATES {
                let expected = legal.contains(&(from, to));
                assert_eq!(from.can_become(to), expected, "{from} -> {to}");
                assert_eq!(from.transition(to).is_ok(), expected, "{from} -> {to}");
            }
        }
    }

    #[test]
    fn superseded_is_terminal_and_running_is_not_supersedable() {
        assert!(ALL_STATES.iter().all(|s| !Superseded.can_become(*s)));
        assert!(!Running.supersedable());
        assert!(Queued.supersedable());
    }

    #[test]
    fn names_round_trip() {
        for s in ALL_STATES {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert!("done".parse::<JobState>().is_err());
    }
}
