//! QIDO-RS and WADO-RS as client (PS3.18 §10.6 and §10.4) for DICOMweb sources: the
//! studies with an accession number, the series of a study, and a series' instances
//! read part by part from the multipart answer (the same bounded reader as STOW-RS
//! intake), each handed on as the Part 10 file it is.

use std::pin::Pin;

use futures_util::Stream;
use serde_json::Value;

use super::stow::authorized;
use crate::config::WebTarget;
use crate::dicomweb::multipart::{self, Limits, PartBody, Reader};

/// A series a QIDO-RS query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundSeries {
    pub series_uid: String,
    pub modality: Option<String>,
    pub instances: Option<u32>,
}

/// Why a DICOMweb exchange failed: the service refused (HTTP status, or no answer), or
/// its answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("{url} answered HTTP {status}")]
    Refused { url: String, status: u16 },
    #[error("cannot reach {url}: {error}")]
    Unreachable { url: String, error: String },
    #[error("{url}: {error}")]
    Unreadable { url: String, error: String },
}

/// Keeps one instance: its Part 10 file; the answer is whether it was kept.
pub trait KeepFile: Sync {
    fn keep_file<'a>(
        &'a self,
        file: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// What a series' retrieve brought: instances kept, and those that were not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fetched {
    pub kept: u32,
    pub failed: u32,
}

/// A DICOMweb source: its service and an HTTP client for it.
pub struct WebSource<'a> {
    pub client: reqwest::Client,
    pub target: &'a WebTarget,
}

impl WebSource<'_> {
    /// GET `path` under the service's root; a 204 or 404 is `None` (nothing matches).
    async fn get(&self, path: &str, accept: &str) -> Result<Option<reqwest::Response>, WebError> {
        let url = format!("{}{path}", self.target.url);
        let request = authorized(
            self.client
                .get(&url)
                .header(reqwest::header::ACCEPT, accept),
            &self.target.auth,
        );
        let response = request.send().await.map_err(|e| WebError::Unreachable {
            url: url.clone(),
            error: format!("{:#}", anyhow::Error::from(e)),
        })?;
        match response.status().as_u16() {
            204 | 404 => Ok(None),
            200..=299 => Ok(Some(response)),
            status => Err(WebError::Refused { url, status }),
        }
    }

    /// A QIDO-RS answer: an array of DICOM JSON objects (none when nothing matches).
    async fn query(&self, path: &str) -> Result<Vec<Value>, WebError> {
        let Some(response) = self.get(path, "application/dicom+json").await? else {
            return Ok(Vec::new());
        };
        let url = response.url().to_string();
        let text = response.text().await.map_err(|e| WebError::Unreadable {
            url: url.clone(),
            error: e.to_string(),
        })?;
        if text.trim().is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_str(&text).map_err(|e| WebError::Unreadable {
            url,
            error: format!("not a DICOM JSON array: {e}"),
        })
    }

    /// The Study Instance UIDs of the studies with `accession`.
    pub async fn studies(&self, accession: &str) -> Result<Vec<String>, WebError> {
        let path = format!(
            "/studies?AccessionNumber={}&includefield=0020000D",
            url::form_urlencoded::byte_serialize(accession.as_bytes()).collect::<String>()
        );
        Ok(self
            .query(&path)
            .await?
            .iter()
            .filter_map(|o| text(o, "0020000D"))
            .collect())
    }

    /// The series of `study` (only `series` when given).
    pub async fn series(
        &self,
        study: &str,
        series: Option<&str>,
    ) -> Result<Vec<FoundSeries>, WebError> {
        let mut path =
            format!("/studies/{study}/series?includefield=00080060&includefield=00201209");
        if let Some(uid) = series {
            path.push_str(&format!("&SeriesInstanceUID={uid}"));
        }
        Ok(self
            .query(&path)
            .await?
            .iter()
            .filter_map(|o| {
                Some(FoundSeries {
                    series_uid: text(o, "0020000E")?,
                    modality: text(o, "00080060"),
                    instances: o["00201209"]["Value"][0]
                        .as_u64()
                        .or_else(|| text(o, "00201209")?.parse().ok())
                        .and_then(|n| u32::try_from(n).ok()),
                })
            })
            .collect())
    }

    /// Retrieves a series with WADO-RS, as stored (any transfer syntax), and hands each
    /// instance (at most `max_object` bytes) to `keeper`.
    pub async fn retrieve(
        &self,
        study: &str,
        series: &str,
        max_object: u64,
        keeper: &dyn KeepFile,
    ) -> Result<Fetched, WebError> {
        let path = format!("/studies/{study}/series/{series}");
        let accept = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
        let Some(response) = self.get(&path, accept).await? else {
            return Ok(Fetched::default());
        };
        let url = response.url().to_string();
        let unreadable = |error: String| WebError::Unreadable {
            url: url.clone(),
            error,
        };
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (boundary, _) = multipart::related(&content_type).map_err(unreadable)?;
        let limits = Limits {
            part_bytes: max_object,
            body_bytes: u64::MAX,
        };
        let mut reader = Reader::new(chunks(response), &boundary, limits);
        let mut fetched = Fetched::default();
        while let Some(part) = reader
            .next_part()
            .await
            .map_err(|e| unreadable(e.to_string()))?
        {
            let kept = match part.body {
                PartBody::Complete(file) => keeper.keep_file(file).await,
                PartBody::TooLarge { size, .. } => {
                    Err(format!("an instance of {size} bytes, over the limit"))
                }
            };
            match kept {
                Ok(()) => fetched.kept += 1,
                Err(e) => {
                    tracing::warn!(error = %e, "an instance from the source was not kept");
                    fetched.failed += 1;
                }
            }
        }
        Ok(fetched)
    }
}

/// A response's body as a stream of chunks.
fn chunks(
    response: reqwest::Response,
) -> Pin<Box<dyn Stream<Item = Result<axum::body::Bytes, reqwest::Error>> + Send>> {
    Box::pin(futures_util::stream::unfold(response, |mut r| async move {
        match r.chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), r)),
            Ok(None) => None,
            Err(e) => Some((Err(e), r)),
        }
    }))
}

/// The first value of `tag` in a DICOM JSON object, as text.
fn text(o: &Value, tag: &str) -> Option<String> {
    match &o[tag]["Value"][0] {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dicom_json_text_is_read_and_blank_is_none() {
        let o = serde_json::json!({
            "0020000E": { "vr": "UI", "Value": ["1.2.3"] },
            "00080060": { "vr": "CS", "Value": [" "] },
            "00201209": { "vr": "IS" }
        });
        assert_eq!(text(&o, "0020000E").as_deref(), Some("1.2.3"));
        assert_eq!(text(&o, "00080060"), None);
        assert_eq!(text(&o, "00201209"), None);
    }
}
