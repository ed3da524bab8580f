//! Webhooks for worklists: every job state change in the audit trail (queued, ignored,
//! started, succeeded, failed, delivered) is POSTed as JSON to each configured URL,
//! signed with HMAC-SHA256 of the configured secret (header `X-Segnode-Signature:
//! sha256=<hex>`), retried with back-off, and the outcome audited. The sender follows
//! the audit trail with a persistent cursor, so events survive restarts.

use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::Webhook;
use crate::store::{AuditEvent, AuditRow, Store};

/// Audit events that are job state changes.
const JOB_EVENTS: &[&str] = &[
    "job_queued",
    "job_ignored",
    "job_started",
    "job_succeeded",
    "job_failed",
    "job_delivered",
];

/// HMAC-SHA256 (RFC 2104).
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    if key.len() > 64 {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `http://host:port/path` split up (plain HTTP on a trusted network or via a local
/// TLS proxy).
fn parse_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url:?}: only http:// URLs are supported"))?;
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse().map_err(|_| format!("{url:?}: bad port"))?,
        ),
        None => (authority.to_string(), 80),
    };
    Ok((host, port, path))
}

/// POSTs `body`; Ok when the receiver answers 2xx.
async fn post(hook: &Webhook, body: &[u8]) -> Result<u16, String> {
    let (host, port, path) = parse_url(&hook.url)?;
    let signature: String = hmac_sha256(hook.secret.as_bytes(), body)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let exchange = async {
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| e.to_string())?;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
             X-Segnode-Signature: sha256={signature}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream
            .write_all(head.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.write_all(body).await.map_err(|e| e.to_string())?;
        let mut response = Vec::new();
        stream
            .read_to_end(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        let status_line = String::from_utf8_lossy(&response);
        let code: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "no HTTP status in the response".to_string())?;
        Ok::<_, String>(code)
    };
    let code = tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "timed out".to_string())??;
    if (200..300).contains(&code) {
        Ok(code)
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// The JSON event for a job state change.
async fn event_json(store: &Store, row: &AuditRow) -> serde_json::Value {
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
        "state": job.as_ref().map(|j| j.state.clone()),
        "reason": job.as_ref().and_then(|j| j.reason.clone()),
        "seg_sop_instance_uid": job.as_ref().and_then(|j| j.seg_sop_instance_uid.clone()),
        "summary": job.as_ref().and_then(|j| j.summary.as_deref().and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())),
    })
}

/// Follows the audit trail and sends job events until `shutdown`.
pub async fn run(
    store: Store,
    hooks: Arc<Vec<Webhook>>,
    attempts: u32,
    shutdown: CancellationToken,
) {
    loop {
        if let Err(e) = send_pending(&store, &hooks, attempts, &shutdown).await {
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
    attempts: u32,
    shutdown: &CancellationToken,
) -> Result<(), crate::store::StoreError> {
    let cursor = store.webhook_cursor().await?;
    for row in store.audit_after(cursor, 100).await? {
        if JOB_EVENTS.contains(&row.event.as_str()) {
            let body = event_json(store, &row).await.to_string();
            for hook in hooks {
                let mut outcome = Err(String::new());
                for attempt in 0..attempts {
                    outcome = post(hook, body.as_bytes()).await;
                    if outcome.is_ok() || shutdown.is_cancelled() {
                        break;
                    }
                    let delay = Duration::from_millis(200u64 << attempt.min(6));
                    tokio::select! {
                        _ = shutdown.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                let (event, detail) = match &outcome {
                    Ok(code) => (
                        "webhook_sent",
                        serde_json::json!({ "url": hook.url, "status": code, "for": row.event }),
                    ),
                    Err(e) => (
                        "webhook_failed",
                        serde_json::json!({ "url": hook.url, "error": e, "for": row.event }),
                    ),
                };
                if let Err(e) = &outcome {
                    tracing::warn!(url = %hook.url, error = %e, "webhook not delivered");
                }
                store
                    .audit(&AuditEvent {
                        event,
                        study_uid: row.study_uid.as_deref(),
                        series_uid: row.series_uid.as_deref(),
                        job_id: row.job_id,
                        detail,
                        ..AuditEvent::default()
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
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:9000/hook").unwrap(),
            ("127.0.0.1".into(), 9000, "/hook".into())
        );
        assert_eq!(
            parse_url("http://example").unwrap(),
            ("example".into(), 80, "/".into())
        );
        assert!(parse_url("https://x/y").is_err());
    }
}
