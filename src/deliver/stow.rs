//! The STOW-RS client (PS3.18 §10.5) for DICOMweb destinations: one result object per
//! request, `multipart/related; type="application/dicom"`, and the Store Instances
//! Response read for that instance. The answer is classified as a C-STORE response
//! is, so the outbox retries and records both alike: the instance referenced is
//! success (with a warning reason, a warning); failed, its Failure Reason (a DIMSE
//! status, A7xx retried); a server that is busy or down (408, 429, 5xx) is out of
//! resources; any other refusal (401, 403, 404, 413, 415) is not retried.

use std::time::Duration;

use serde_json::Value;

use super::{OutgoingFile, ScuError};
use crate::config::{WebAuth, WebTarget};
use crate::dicom::DimseStatus;
use crate::dicomweb::multipart;

/// The HTTP(S) client for one DICOMweb destination or webhook: the system's CA store
/// plus `ca_file`, a timeout per request, a few redirects followed.
pub fn http_client(
    ca_file: Option<&std::path::Path>,
    timeout: Duration,
) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!("segnode/", env!("CARGO_PKG_VERSION")));
    if let Some(ca) = ca_file {
        let pem = std::fs::read(ca).map_err(|e| format!("cannot read {}: {e}", ca.display()))?;
        let certificate =
            reqwest::Certificate::from_pem(&pem).map_err(|e| format!("{}: {e}", ca.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder.build().map_err(|e| e.to_string())
}

/// A request to a DICOMweb service with its credentials.
pub(super) fn authorized(
    request: reqwest::RequestBuilder,
    auth: &WebAuth,
) -> reqwest::RequestBuilder {
    match auth {
        WebAuth::None => request,
        WebAuth::Bearer(token) => request.bearer_auth(token),
        WebAuth::Basic { username, password } => request.basic_auth(username, Some(password)),
    }
}

/// Sends `file` to `target`; the status it is answered with, as a C-STORE's, and the
/// server's words.
pub async fn store(
    client: &reqwest::Client,
    target: &WebTarget,
    file: &OutgoingFile,
) -> Result<(DimseStatus, Option<String>), ScuError> {
    let boundary = multipart::boundary();
    let body = multipart::part(&boundary, "application/dicom", &file.bytes, true);
    let url = format!("{}/studies", target.url);
    let mut request = client
        .post(&url)
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"),
        )
        .header(reqwest::header::ACCEPT, "application/dicom+json")
        .body(body);
    request = authorized(request, &target.auth);
    let response = request.send().await.map_err(|e| ScuError::Http {
        url: url.clone(),
        error: format!("{:#}", anyhow::Error::from(e)),
    })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    let answer: Option<Value> = serde_json::from_str(&text).ok();
    Ok(classify(
        status.as_u16(),
        answer.as_ref(),
        &file.sop_instance,
        &text,
    ))
}

/// What an answer says about instance `sop`.
fn classify(
    http: u16,
    answer: Option<&Value>,
    sop: &str,
    text: &str,
) -> (DimseStatus, Option<String>) {
    let item_of = |tag: &str| {
        answer?[tag]["Value"]
            .as_array()?
            .iter()
            .find(|item| item["00081155"]["Value"][0].as_str() == Some(sop))
            .cloned()
    };
    let number = |item: &Value, tag: &str| item[tag]["Value"][0].as_u64().map(|n| n as u16);
    if (200..300).contains(&http)
        && let Some(item) = item_of("00081199")
    {
        return match number(&item, "00081196") {
            Some(warning) => (
                DimseStatus(0xB000),
                Some(format!("HTTP {http}, warning reason {warning:#06x}")),
            ),
            None => (DimseStatus::SUCCESS, None),
        };
    }
    if let Some(item) = item_of("00081198") {
        let reason = number(&item, "00081197").unwrap_or(DimseStatus::CANNOT_UNDERSTAND.0);
        return (
            DimseStatus(reason),
            Some(format!("HTTP {http}, failure reason {reason:#06x}")),
        );
    }
    let excerpt: String = text.chars().take(200).collect();
    let status = match http {
        408 | 429 | 500..=599 => DimseStatus::OUT_OF_RESOURCES,
        _ => DimseStatus::CANNOT_UNDERSTAND,
    };
    let said = if (200..300).contains(&http) {
        "the answer does not name the instance"
    } else {
        "refused"
    };
    (status, Some(format!("HTTP {http}, {said}: {excerpt}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn answer(referenced: &[&str], failed: &[(&str, u16)]) -> Value {
        json!({
            "00081199": {"vr": "SQ", "Value": referenced.iter().map(|s| json!({"00081155": {"vr": "UI", "Value": [s]}})).collect::<Vec<_>>()},
            "00081198": {"vr": "SQ", "Value": failed.iter().map(|(s, r)| json!({"00081155": {"vr": "UI", "Value": [s]}, "00081197": {"vr": "US", "Value": [r]}})).collect::<Vec<_>>()},
        })
    }

    #[test]
    fn the_answer_is_read_for_the_instance_sent() {
        let ok = answer(&["1.2.3"], &[]);
        assert_eq!(
            classify(200, Some(&ok), "1.2.3", "").0,
            DimseStatus::SUCCESS
        );
        let failed = answer(&["1.2.4"], &[("1.2.3", 0xA700)]);
        let (status, comment) = classify(202, Some(&failed), "1.2.3", "");
        assert!(status.is_out_of_resources());
        assert!(comment.unwrap().contains("0xa700"));
        let conflict = answer(&[], &[("1.2.3", 0x0122)]);
        assert_eq!(
            classify(409, Some(&conflict), "1.2.3", "").0,
            DimseStatus::SOP_CLASS_NOT_SUPPORTED
        );
        // A 200 that does not name the instance is no proof it was stored.
        assert_eq!(
            classify(200, Some(&ok), "9.9", "").0,
            DimseStatus::CANNOT_UNDERSTAND
        );
        assert!(classify(503, None, "1.2.3", "busy").0.is_out_of_resources());
        assert!(classify(429, None, "1.2.3", "").0.is_out_of_resources());
        let (status, comment) = classify(401, None, "1.2.3", "no token");
        assert_eq!(status, DimseStatus::CANNOT_UNDERSTAND);
        assert!(comment.unwrap().contains("HTTP 401, refused: no token"));
    }
}
