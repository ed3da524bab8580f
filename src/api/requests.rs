//! `POST /api/requests` (ask for a study to be retrieved and processed), `GET
//! /api/requests` (the newest) and `GET /api/requests/{id}` (one, with its history and
//! the series it covers with their jobs).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState};
use crate::requests::{self, InvalidRequest};
use crate::store::{NewRequest, Priority, RequestId};

/// The body of `POST /api/requests`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    study_uid: Option<String>,
    accession_number: Option<String>,
    series_uid: Option<String>,
    source: Option<String>,
    priority: Option<String>,
    #[serde(default)]
    force: bool,
}

/// `POST /api/requests`: 202 with the request's id and state.
pub(super) async fn create(
    State(s): State<Arc<ApiState>>,
    body: axum::body::Bytes,
) -> ApiResult<(StatusCode, Json<serde_json::Value>)> {
    let body: Body =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
    let priority = match body.priority.as_deref() {
        None => Priority::Routine,
        Some(p) => requests::priority(p).map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    let new = NewRequest {
        study_uid: body.study_uid,
        accession_number: body.accession_number,
        series_uid: body.series_uid,
        source: body.source.unwrap_or_default(),
        priority,
        force: body.force,
    };
    match requests::submit(&s.config, &s.store, new).await? {
        Ok(id) => {
            s.request_wake.notify_one();
            Ok((
                StatusCode::ACCEPTED,
                Json(
                    serde_json::json!({ "id": id, "state": "queued", "url": format!("/api/requests/{id}") }),
                ),
            ))
        }
        Err(e @ InvalidRequest::UnknownSource(_)) => Err(ApiError::not_found(e.to_string())),
        Err(e) => Err(ApiError::bad_request(e.to_string())),
    }
}

/// `GET /api/requests`: the 100 newest.
pub(super) async fn list(State(s): State<Arc<ApiState>>) -> ApiResult<Json<serde_json::Value>> {
    let rows = s.store.requests(100).await?;
    Ok(Json(serde_json::json!({ "requests": rows })))
}

/// `GET /api/requests/{id}`: the request, its history and its series with their jobs.
pub(super) async fn show(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let id = id
        .parse::<i64>()
        .map(RequestId)
        .map_err(|_| ApiError::bad_request(format!("{id:?} is not a request id")))?;
    let row = s
        .store
        .request(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no request {id}")))?;
    let mut v = serde_json::to_value(&row).map_err(|e| ApiError::internal(e.to_string()))?;
    let series = s.store.request_series(id).await?;
    v["series"] = serde_json::to_value(&series).unwrap_or_default();
    v["jobs"] = series
        .iter()
        .filter_map(|r| r.job_id)
        .map(|j| serde_json::json!(j))
        .collect();
    v["history"] = serde_json::to_value(s.store.request_events(id).await?).unwrap_or_default();
    Ok(Json(v))
}
