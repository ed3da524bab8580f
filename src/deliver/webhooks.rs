//! Webhooks for worklists: every job state change in the audit trail (queued, ignored,
//! started, succeeded, failed, delivered) and every step of a request for a study is
//! POSTed as JSON to each configured URL
//! (http:// or https://, reqwest over rustls with the system's CAs and the hook's own),
//! signed with HMAC-SHA256 of the configured secret (header `X-Segnode-Signature:
//! sha256=<hex>`), retried with back-off, and the outcome audited. The sender follows
//! the audit trail with a persistent cursor, so events survive restarts.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use super::outbox::{backoff, unit_random};
use crate::config::Webhook;
use crate::jobs::summary::JobSummary;
use crate::store::{AuditEvent, AuditKind, AuditRow, Store};

/// The first retry's delay; each later one doubles, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(200);
const MAX_RETRY_DELAY: Duration = Duration::from_millis(12_800);

/// Audit events that are job state changes.
const JOB_EVENTS: &[AuditKind] = &[
    AuditKind::JobQueued,
    AuditKind::JobIgnored,
    AuditKind::JobStarted,
    AuditKind::JobSucceeded,
    AuditKind::JobFailed,
    AuditKind::JobDelivered,
    AuditKind::JobHeld,
    AuditKind::JobApproved,
    AuditKind::JobRejected,
    AuditKind::RequestChanged,
];

/// The signature header's value for `body`: `sha256=<hex HMAC-SHA256 with secret>`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

/// How long one delivery attempt may take, connection and TLS included.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// The HTTP(S) client for one webhook: the system's CA store plus the hook's own CA
/// file, a timeout per attempt, a few redirects followed.
pub fn client(hook: &Webhook) -> Result<reqwest::Client, String> {
    super::stow::http_client(hook.ca_file.as_deref(), ATTEMPT_TIMEOUT)
}

/// POSTs `body`; Ok when the receiver answers 2xx.
async fn post(client: &reqwest::Client, hook: &Webhook, body: &str) -> Result<u16, String> {
    let response = client
        .post(&hook.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(
            "X-Segnode-Signature",
            signature(hook.secret.as_bytes(), body.as_bytes()),
        )
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
    let code = response.status().as_u16();
    if response.status().is_success() {
        Ok(code)
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// The JSON event for a job state change, or a request's step (its audit detail: the
/// request's id, state, progress and reason).
async fn event_json(store: &Store, row: &AuditRow) -> serde_json::Value {
    if row.event == AuditKind::RequestChanged {
        let detail: serde_json::Value = serde_json::from_str(&row.detail).unwrap_or_default();
        return serde_json::json!({
            "event": row.event,
            "at": crate::store::format_ms(row.at_ms),
            "request_id": detail["request"],
            "state": detail["state"],
            "reason": detail["reason"],
            "progress": detail["progress"],
            "study_uid": row.study_uid,
            "accession_number": row.accession_number,
        });
    }
    let job = match row.job_id {
        Some(id) => store.job(id).await.ok().flatten(),
        None => None,
    };
    serde_json::json!({
        "event": row.event,
        "at": crate::store::format_ms(row.at_ms),
        "job_id": row.job_id,
        "study_uid": row.study_uid,
        "series_uid": row.series_uid,
        "accession_number": row.accession_number,
        "state": job.as_ref().map(|j| j.state),
        "reason": job.as_ref().and_then(|j| j.reason.clone()),
        "seg_sop_instance_uid": job.as_ref().and_then(|j| j.seg_sop_instance_uid.clone()),
        "summary": job.as_ref().and_then(JobSummary::of),
    })
}

/// Follows the audit trail and sends job events until `shutdown`.
pub async fn run(
    store: Store,
    hooks: Arc<Vec<Webhook>>,
    attempts: u32,
    shutdown: CancellationToken,
) {
    let clients: Vec<Option<reqwest::Client>> = hooks
        .iter()
        .map(|hook| {
            client(hook)
                .inspect_err(|e| tracing::error!(url = %hook.url, error = %e, "webhook disabled"))
                .ok()
        })
        .collect();
    loop {
        if let Err(e) = send_pending(&store, &hooks, &clients, attempts, &shutdown).await {
            tracing::error!(error = %e, "webhook sender cannot read the audit trail");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

async fn send_pending(
    store: &Store,
    hooks: &[Webhook],
    clients: &[Option<reqwest::Client>],
    attempts: u32,
    shutdown: &CancellationToken,
) -> Result<(), crate::store::StoreError> {
    // One node at a time sends (the one holding the cursor's lease).
    let Some(cursor) = store.claim_webhook_cursor().await? else {
        return Ok(());
    };
    for row in store.audit_after(cursor, 100).await? {
        if JOB_EVENTS.contains(&row.event) {
            let body = event_json(store, &row).await.to_string();
            for (hook, client) in hooks.iter().zip(clients) {
                let Some(client) = client else { continue };
                let mut outcome = Err(String::new());
                for attempt in 0..attempts {
                    outcome = post(client, hook, &body).await;
                    if outcome.is_ok() || shutdown.is_cancelled() {
                        break;
                    }
                    let delay = backoff(FIRST_RETRY_DELAY, MAX_RETRY_DELAY, attempt, unit_random());
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let (event, detail) = match &outcome {
                    Ok(code) => (
                        AuditKind::WebhookSent,
                        serde_json::json!({ "url": hook.url, "status": code, "for": row.event }),
                    ),
                    Err(e) => (
                        AuditKind::WebhookFailed,
                        serde_json::json!({ "url": hook.url, "error": e, "for": row.event }),
                    ),
                };
                if let Err(e) = &outcome {
                    tracing::warn!(url = %hook.url, error = %e, "webhook not delivered");
                }
                store
                    .audit(&AuditEvent {
                        study_uid: row.study_uid.as_deref(),
                        series_uid: row.series_uid.as_deref(),
                        job_id: row.job_id,
                        detail,
                        ..AuditEvent::of(event)
                    })
                    .await?;
            }
        }
        store.set_webhook_cursor(row.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_as_rfc_4231_test_case_2() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
