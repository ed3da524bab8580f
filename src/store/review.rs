//! Review before delivery: a person's decision on a job whose result is held (state
//! `review`, its deliveries `held`): approved, the deliveries go to the outbox; rejected,
//! they are removed so that nothing of it is ever sent. Each decision is audited with
//! who took it and why.

use super::audit::append_audit;
use super::states::IllegalTransition;
use super::{AuditKind, JobId, JobState, Store, StoreError, now_ms};

/// A person's decision on a result held for review: who, and why.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReviewDecision {
    /// The reviewer's name, as given (the API's token identifies no person).
    #[serde(default)]
    pub reviewer: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
}

impl Store {
    /// A person approves a result held for review (review → succeeded): its held
    /// deliveries are released to the outbox; audited with the decision. Returns the
    /// deliveries released.
    pub async fn approve_job(
        &self,
        id: JobId,
        decision: &ReviewDecision,
    ) -> Result<u64, StoreError> {
        self.decide(id, JobState::Succeeded, decision).await
    }

    /// A person rejects a result held for review (review → rejected): its held
    /// deliveries are removed, so that nothing of it is ever sent; audited with the
    /// decision. Returns the deliveries removed.
    pub async fn reject_job(
        &self,
        id: JobId,
        decision: &ReviewDecision,
    ) -> Result<u64, StoreError> {
        self.decide(id, JobState::Rejected, decision).await
    }

    async fn decide(
        &self,
        id: JobId,
        to: JobState,
        decision: &ReviewDecision,
    ) -> Result<u64, StoreError> {
        let now = now_ms();
        let (mut tx, job, state) = self.job_to_change(id).await?;
        if state != JobState::Review {
            return Err(IllegalTransition { from: state, to }.into());
        }
        let next = state.transition(to)?;
        sqlx::query(
            "UPDATE jobs SET state = $1, updated_ms = $2 WHERE id = $3 AND state = 'review'",
        )
        .bind(next)
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let (event, deliveries) = if next == JobState::Succeeded {
            let released = sqlx::query(
                "UPDATE deliveries SET state = 'pending', next_attempt_ms = $1, updated_ms = $1
                 WHERE job_id = $2 AND state = 'held'",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            (AuditKind::JobApproved, released)
        } else {
            let removed =
                sqlx::query("DELETE FROM deliveries WHERE job_id = $1 AND state = 'held'")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            (AuditKind::JobRejected, removed)
        };
        let detail = serde_json::json!({
            "reviewer": decision.reviewer,
            "comment": decision.comment,
            "deliveries": deliveries,
        });
        append_audit(&mut tx, &self.node.node_id, &job.event(event, detail)).await?;
        tx.commit().await?;
        Ok(deliveries)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::queued_job;
    use super::super::{DeliveryState, JobOutcome, JobQuery, NewDelivery, NewResult, ResultObject};
    use super::*;
    use crate::dicom::{SegType, Uid};
    use crate::quality::Verdict;

    /// A job of a new store whose result is held for review, with one held delivery.
    async fn held_job() -> (crate::store::testing::TestStore, JobId) {
        let store = crate::store::testing::store().await;
        queued_job(&store, 2, "PACS").await;
        let job = store.claim_next_job().await.unwrap().unwrap();
        let seg = NewResult {
            kind: ResultObject::Seg,
            variant: Some(SegType::Binary),
            sop_instance_uid: Uid::parse("2.25.1").unwrap(),
            file: "seg-file".into(),
        };
        let review = JobOutcome {
            instance_count: Some(2),
            qa_verdict: Some(Verdict::Warn),
            ..super::super::testing::outcome(JobState::Review, vec![seg])
        };
        let delivery = NewDelivery {
            destination: "pacs".into(),
            sop_instance_uid: review.results[0].sop_instance_uid.clone(),
            fallback: None,
        };
        store.finish_job(&job, &review, &[delivery]).await.unwrap();
        assert_eq!(
            store.job(job.id).await.unwrap().unwrap().state,
            JobState::Review
        );
        let d = store.job_deliveries(job.id).await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].state, DeliveryState::Held);
        assert!(store.claim_due_deliveries(10).await.unwrap().is_empty());
        (store, job.id)
    }

    /// A result held for review is not delivered until approved; rejected, it never is;
    /// either decision only once, audited with who and why; the jobs needing review are
    /// found by their state or verdict.
    #[tokio::test]
    async fn a_held_result_waits_for_approval_and_a_rejected_one_is_never_delivered() {
        let needs_review = JobQuery {
            needs_review: true,
            limit: 10,
            ..JobQuery::default()
        };
        let decision = ReviewDecision {
            reviewer: Some("Dr Reviewer".into()),
            comment: Some("liver checked".into()),
        };
        let (approving, approved) = held_job().await;
        assert_eq!(approving.jobs(&needs_review).await.unwrap().len(), 1);
        assert_eq!(approving.approve_job(approved, &decision).await.unwrap(), 1);
        let row = approving.job(approved).await.unwrap().unwrap();
        assert_eq!(
            (row.state, row.qa_verdict),
            (JobState::Succeeded, Some(Verdict::Warn))
        );
        let due = approving.claim_due_deliveries(10).await.unwrap();
        assert_eq!(due.iter().map(|d| d.job_id).collect::<Vec<_>>(), [approved]);
        // Warned of, no longer held: still among the jobs to look at.
        assert_eq!(approving.jobs(&needs_review).await.unwrap().len(), 1);

        let (rejecting, rejected) = held_job().await;
        assert_eq!(rejecting.reject_job(rejected, &decision).await.unwrap(), 1);
        assert_eq!(
            rejecting.job(rejected).await.unwrap().unwrap().state,
            JobState::Rejected
        );
        assert!(rejecting.job_deliveries(rejected).await.unwrap().is_empty());
        assert!(rejecting.claim_due_deliveries(10).await.unwrap().is_empty());
        assert!(rejecting.jobs(&needs_review).await.unwrap().is_empty());

        // A decision is taken once, and only on a job in review; each is audited.
        for (store, id, kind) in [
            (&approving, approved, AuditKind::JobApproved),
            (&rejecting, rejected, AuditKind::JobRejected),
        ] {
            assert!(matches!(
                store.approve_job(id, &decision).await,
                Err(StoreError::Transition(_))
            ));
            assert!(matches!(
                store.reject_job(id, &decision).await,
                Err(StoreError::Transition(_))
            ));
            let audit = store.audit_rows(None).await.unwrap();
            assert!(audit.iter().any(|r| r.event == AuditKind::JobHeld));
            let row = audit.iter().find(|r| r.event == kind).unwrap();
            assert_eq!(row.job_id, Some(id));
            assert!(row.detail.contains("Dr Reviewer") && row.detail.contains("liver checked"));
        }
    }
}
