//! DICOMweb on the API's listener, behind its token: STOW-RS intake (PS3.18 §10.5),
//! QIDO-RS (§10.6) and WADO-RS (§10.4) of what the node holds (source series still
//! retained, and every result object). Intake keeps each part as a C-STORE is kept
//! (`receive`); what is held comes from `store` and the spool files (`dicomweb`).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use dicom_object::InMemDicomObject;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, ApiState};
use crate::dicom::DimseStatus;
use crate::dicomweb::catalog::{self, Held, Series};
use crate::dicomweb::multipart::{self, Limits, MultipartError, Part, PartBody, Reader};
use crate::receive::Stowed;
use crate::store::HeldObject;

const DICOM_JSON: &str = "application/dicom+json";
/// Parts of one STOW-RS request being kept at once.
const PARTS_IN_FLIGHT: usize = 4;

pub(super) fn routes() -> Router<Arc<ApiState>> {
    Router::new()
        .route("/dicom-web/studies", get(studies).post(stow_any))
        .route(
            "/dicom-web/studies/{study}",
            get(retrieve_study).post(stow_study),
        )
        .route("/dicom-web/studies/{study}/metadata", get(study_metadata))
        .route("/dicom-web/studies/{study}/series", get(study_series))
        .route(
            "/dicom-web/studies/{study}/series/{series}",
            get(retrieve_series),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/metadata",
            get(series_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances",
            get(series_instances),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}",
            get(retrieve_instance),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/metadata",
            get(instance_metadata),
        )
        .route(
            "/dicom-web/studies/{study}/series/{series}/instances/{instance}/frames/{frames}",
            get(frames),
        )
}

/// The node's DICOMweb root as the client addressed it, for Retrieve URLs.
fn root(state: &ApiState, headers: &HeaderMap) -> String {
    let scheme = if state.config.http.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| state.config.http.listen.to_string(), str::to_string);
    format!("{scheme}://{host}/dicom-web")
}

fn dicom_json(value: Value) -> Response {
    ([(header::CONTENT_TYPE, DICOM_JSON)], value.to_string()).into_response()
}

fn to_json(object: &InMemDicomObject) -> ApiResult<Value> {
    let mut value =
        dicom_json::to_value(object).map_err(|e| ApiError::internal(format!("DICOM JSON: {e}")))?;
    decimal_strings_as_numbers(&mut value);
    Ok(value)
}

/// PS3.18 F.2.3: IS and DS values are JSON numbers (they are kept as the text they
/// were received as, which viewers would add up as strings); in sequences too.
fn decimal_strings_as_numbers(value: &mut Value) {
    let Some(elements) = value.as_object_mut() else {
        return;
    };
    for element in elements.values_mut() {
        let vr = element["vr"].as_str().unwrap_or_default().to_string();
        let Some(values) = element.get_mut("Value").and_then(Value::as_array_mut) else {
            continue;
        };
        for v in values.iter_mut() {
            match (vr.as_str(), v.as_str().map(str::trim)) {
                ("IS", Some(text)) => {
                    *v = text.parse::<i64>().map_or(Value::Null, Value::from);
                }
                ("DS", Some(text)) => {
                    *v = text.parse::<f64>().map_or(Value::Null, Value::from);
                }
                ("SQ", _) => decimal_strings_as_numbers(v),
                _ => {}
            }
        }
    }
}

// ---------------------------------------------------------------- STOW-RS

async fn stow_any(State(state): State<Arc<ApiState>>, request: Request) -> Response {
    stow(state, None, request).await
}

async fn stow_study(
    State(state): State<Arc<ApiState>>,
    Path(study): Path<String>,
    request: Request,
) -> Response {
    stow(state, Some(study), request).await
}

/// Reads the parts one by one, keeping each as it is complete; answers with the Store
/// Instances Response (PS3.18 §10.5.3): 200 all stored, 202 some, 409 none because of
/// a conflict (another study), 503 none for the node's trouble, 400 none otherwise. A
/// body that cannot be read to its end (truncated, a wrong boundary, over the limit)
/// is an error response; the parts completed before it stay stored.
async fn stow(state: Arc<ApiState>, study: Option<String>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<super::Peer>>()
        .map_or_else(|| "http".to_string(), |c| c.0.0.to_string());
    let url = root(&state, request.headers());
    let headers = request.headers();
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return unsupported(format!(
                "Content-Encoding {:?} is not accepted: send the parts as they are",
                String::from_utf8_lossy(encoding.as_bytes())
            ));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let boundary = match multipart::related(content_type) {
        Ok((_, Some(kind))) if !kind.eq_ignore_ascii_case("application/dicom") => {
            return unsupported(format!(
                "multipart/related of type {kind:?}: only application/dicom parts are accepted"
            ));
        }
        Ok((boundary, _)) => boundary,
        Err(e) => return unsupported(e),
    };
    let http = &state.config.http;
    let limits = Limits {
        part_bytes: state.config.dicom.max_object_bytes,
        body_bytes: http.max_stow_bytes,
    };
    let mut reader = Reader::new(request.into_body().into_data_stream(), &boundary, limits);
    // Each part is kept by a task of its own while the next is read: the spool's fsync
    // and the database commit of one overlap the transfer of the next.
    let mut in_flight = std::collections::VecDeque::new();
    let mut stowed = Vec::new();
    let unreadable = loop {
        let part = match reader.next_part().await {
            Ok(Some(part)) => part,
            Ok(None) => break None,
            Err(e) => break Some(e),
        };
        let (state, peer, study) = (state.clone(), peer.clone(), study.clone());
        in_flight.push_back(tokio::spawn(async move {
            keep_part(&state, peer, part, study.as_deref()).await
        }));
        if in_flight.len() >= PARTS_IN_FLIGHT
            && let Some(oldest) = in_flight.pop_front()
        {
            stowed.push(joined(oldest.await));
        }
    };
    for task in in_flight {
        stowed.push(joined(task.await));
    }
    if let Some(e) = unreadable {
        return body_error(&e, &stowed);
    }
    let stored = stowed.iter().filter(|s| s.outcome.is_ok()).count();
    tracing::info!(parts = stowed.len(), stored, "STOW-RS request answered");
    let status = if stowed.is_empty() {
        StatusCode::BAD_REQUEST
    } else if stored == stowed.len() {
        StatusCode::OK
    } else if stored > 0 {
        StatusCode::ACCEPTED
    } else {
        let failures = || stowed.iter().filter_map(|s| s.outcome.as_ref().err());
        if failures().any(|f| f.other_study) {
            StatusCode::CONFLICT
        } else if failures().all(|f| f.retryable) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::BAD_REQUEST
        }
    };
    (
        status,
        dicom_json(store_response(&stowed, &url, study.as_deref())),
    )
        .into_response()
}

/// Keeps one part: a DICOM file as a C-STORE would be kept, anything else refused.
async fn keep_part(state: &ApiState, peer: String, part: Part, study: Option<&str>) -> Stowed {
    let calling_ae = state.config.http.stow_ae_title.as_str();
    let dicom = part.content_type.as_deref().is_none_or(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/dicom"))
    });
    match part.body {
        _ if !dicom => failed(
            DimseStatus::CANNOT_UNDERSTAND,
            format!(
                "a part of type {:?}, not application/dicom",
                part.content_type.unwrap_or_default()
            ),
        ),
        PartBody::Complete(bytes) => state.receiver.stow(calling_ae, peer, bytes, study).await,
        PartBody::TooLarge { head, .. } => {
            state.receiver.stow_too_large(calling_ae, peer, &head).await
        }
    }
}

/// A part's outcome from its task (one that panicked was not kept).
fn joined(result: Result<Stowed, tokio::task::JoinError>) -> Stowed {
    result.unwrap_or_else(|e| {
        tracing::error!(error = %e, "a STOW-RS part's task failed");
        failed(
            DimseStatus::OUT_OF_RESOURCES,
            "the node could not store the instance".into(),
        )
    })
}

fn failed(status: DimseStatus, message: String) -> Stowed {
    Stowed {
        sop_class: None,
        sop_instance: None,
        outcome: Err(crate::receive::StowFailure {
            reason: status.0,
            message,
            retryable: status.is_out_of_resources(),
            other_study: false,
        }),
    }
}

fn unsupported(message: String) -> Response {
    ApiError {
        status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code: "unsupported_media_type",
        message,
    }
    .into_response()
}

fn body_error(e: &MultipartError, stowed: &[Stowed]) -> Response {
    let status = match e {
        MultipartError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    let stored = stowed.iter().filter(|s| s.outcome.is_ok()).count();
    tracing::warn!(error = %e, stored, "STOW-RS body unreadable");
    ApiError {
        status,
        code: "bad_body",
        message: format!(
            "{e}; {stored} instance(s) of the parts before it were stored, the rest were not"
        ),
    }
    .into_response()
}

/// The Store Instances Response Module (PS3.18 Table 10.5.3-3) in DICOM JSON.
fn store_response(stowed: &[Stowed], url: &str, study: Option<&str>) -> Value {
    let uid = |tag: &str, value: &Option<String>| {
        value
            .as_ref()
            .map(|v| (tag.to_string(), json!({"vr": "UI", "Value": [v]})))
    };
    let mut referenced = Vec::new();
    let mut failed = Vec::new();
    for s in stowed {
        let mut item: serde_json::Map<String, Value> = [
            uid("00081150", &s.sop_class),
            uid("00081155", &s.sop_instance),
        ]
        .into_iter()
        .flatten()
        .collect();
        match &s.outcome {
            Ok(kept) => {
                if let (Some((study, series)), Some(instance)) = (kept, &s.sop_instance) {
                    item.insert(
                        "00081190".into(),
                        json!({"vr": "UR", "Value": [format!(
                            "{url}/studies/{study}/series/{series}/instances/{instance}"
                        )]}),
                    );
                }
                referenced.push(Value::Object(item));
            }
            Err(f) => {
                item.insert("00081197".into(), json!({"vr": "US", "Value": [f.reason]}));
                item.insert("00090010".into(), json!({"vr": "LO", "Value": ["SEGNODE"]}));
                item.insert("00091001".into(), json!({"vr": "LT", "Value": [f.message]}));
                failed.push(Value::Object(item));
            }
        }
    }
    let mut response = serde_json::Map::new();
    if let Some(study) = study {
        response.insert(
            "00081190".into(),
            json!({"vr": "UR", "Value": [format!("{url}/studies/{study}")]}),
        );
    }
    let sequence = |items: Vec<Value>| {
        if items.is_empty() {
            json!({"vr": "SQ"})
        } else {
            json!({"vr": "SQ", "Value": items})
        }
    };
    response.insert("00081198".into(), sequence(failed));
    response.insert("00081199".into(), sequence(referenced));
    Value::Object(response)
}

// ---------------------------------------------------------------- QIDO-RS

/// The series of one study's held objects `rows` (blocking file reads).
async fn series_of(state: &ApiState, rows: Vec<HeldObject>) -> ApiResult<Vec<Series>> {
    let spool = state.receiver.spool.clone();
    tokio::task::spawn_blocking(move || catalog::series(|f| spool.path(f), rows))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// The series of one study.
async fn held_series(state: &ApiState, study: &str) -> ApiResult<Vec<Series>> {
    series_of(state, state.store.held_objects(Some(study)).await?).await
}

/// Every object of `series` of the study (all of its series: `None`), read.
async fn read_objects(state: &ApiState, study: &str, series: Option<&str>) -> ApiResult<Vec<Held>> {
    let mut wanted = held_series(state, study).await?;
    if let Some(uid) = series {
        wanted.retain(|s| s.uid == uid);
        if wanted.is_empty() {
            return Err(ApiError::not_found(format!(
                "no series {uid} in study {study}"
            )));
        }
    }
    let spool = state.receiver.spool.clone();
    tokio::task::spawn_blocking(move || {
        wanted
            .iter()
            .flat_map(|s| catalog::instances(|f| spool.path(f), s))
            .collect()
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))
}

/// Applies the query keys and paging to `objects`.
fn answer(objects: Vec<InMemDicomObject>, params: &Params) -> ApiResult<Response> {
    let keys = catalog::query_keys(params).map_err(ApiError::bad_request)?;
    let offset = super::int_param(params, "offset", 0, i64::MAX)? as usize;
    let limit = super::int_param(params, "limit", 1000, 100_000)? as usize;
    let matched = objects
        .iter()
        .filter(|o| catalog::matches(o, &keys))
        .skip(offset)
        .take(limit)
        .map(to_json)
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(dicom_json(Value::Array(matched)))
}

type Params = BTreeMap<String, String>;

async fn studies(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let url = root(&state, &headers);
    // One study asked for by its UID is read alone.
    let only = params
        .get("StudyInstanceUID")
        .or_else(|| params.get("0020000D"))
        .filter(|v| !v.contains(['\\', ',', '*', '?']));
    let mut by_study: BTreeMap<String, Vec<HeldObject>> = BTreeMap::new();
    for row in state.store.held_objects(only.map(String::as_str)).await? {
        by_study.entry(row.study_uid.clone()).or_default().push(row);
    }
    let mut objects = Vec::new();
    for (study, rows) in by_study {
        let series = series_of(&state, rows).await?;
        if let Some(o) = catalog::study_attributes(&series, &format!("{url}/studies/{study}")) {
            objects.push(o);
        }
    }
    answer(objects, &params)
}

async fn study_series(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path(study): Path<String>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let url = root(&state, &headers);
    let objects = held_series(&state, &study)
        .await?
        .iter()
        .map(|s| catalog::series_attributes(s, &format!("{url}/studies/{study}/series/{}", s.uid)))
        .collect();
    answer(objects, &params)
}

async fn series_instances(
    State(state): State<Arc<ApiState>>,
    headers: HeaderMap,
    Path((study, series)): Path<(String, String)>,
    Query(params): Query<Params>,
) -> ApiResult<Response> {
    let url = root(&state, &headers);
    let objects = read_objects(&state, &study, Some(&series))
        .await?
        .iter()
        .map(|h| {
            let at = format!(
                "{url}/studies/{study}/series/{series}/instances/{}",
                h.sop_instance
            );
            catalog::instance_attributes(h, &at)
        })
        .collect();
    answer(objects, &params)
}

// ---------------------------------------------------------------- WADO-RS

/// An instance's metadata: every attribute but the pixel data, which is served as
/// frames.
fn metadata(held: &[Held]) -> ApiResult<Response> {
    let all = held
        .iter()
        .map(|h| to_json(&h.object))
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(dicom_json(Value::Array(all)))
}

async fn study_metadata(
    State(state): State<Arc<ApiState>>,
    Path(study): Path<String>,
) -> ApiResult<Response> {
    metadata(&read_objects(&state, &study, None).await?)
}

async fn series_metadata(
    State(state): State<Arc<ApiState>>,
    Path((study, series)): Path<(String, String)>,
) -> ApiResult<Response> {
    metadata(&read_objects(&state, &study, Some(&series)).await?)
}

/// One held object, found by its SOP Instance UID: only its own file is read.
async fn instance(state: &ApiState, study: &str, series: &str, instance: &str) -> ApiResult<Held> {
    let missing = || ApiError::not_found(format!("no instance {instance} in series {series}"));
    let row = state
        .store
        .held_objects(Some(study))
        .await?
        .into_iter()
        .find(|o| o.sop_instance_uid == instance)
        .ok_or_else(missing)?;
    let spool = state.receiver.spool.clone();
    tokio::task::spawn_blocking(move || Held::read_row(|f| spool.path(f), &row))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .filter(|h| h.series == series)
        .ok_or_else(missing)
}

async fn instance_metadata(
    State(state): State<Arc<ApiState>>,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    metadata(&[instance(&state, &study, &series, &sop).await?])
}

/// The Part 10 files of `held` as one multipart/related body, streamed file by file.
fn part10_body(held: Vec<Held>) -> Response {
    let boundary = multipart::boundary();
    let files: Vec<std::path::PathBuf> = held.into_iter().map(|h| h.file).collect();
    let count = files.len();
    let head_boundary = boundary.clone();
    let stream =
        futures_util::stream::iter(files.into_iter().enumerate()).then(move |(i, path)| {
            let boundary = head_boundary.clone();
            async move {
                let bytes = tokio::fs::read(&path).await?;
                let last = i + 1 == count;
                Ok::<_, std::io::Error>(multipart::part(
                    &boundary,
                    "application/dicom",
                    &bytes,
                    last,
                ))
            }
        });
    use futures_util::StreamExt as _;
    let content_type =
        format!("multipart/related; type=\"application/dicom\"; boundary={boundary}");
    let mut response = Response::new(Body::from_stream(stream));
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    response
}

async fn retrieve_study(
    State(state): State<Arc<ApiState>>,
    Path(study): Path<String>,
) -> ApiResult<Response> {
    let all = read_objects(&state, &study, None).await?;
    if all.is_empty() {
        return Err(ApiError::not_found(format!("no study {study}")));
    }
    Ok(part10_body(all))
}

async fn retrieve_series(
    State(state): State<Arc<ApiState>>,
    Path((study, series)): Path<(String, String)>,
) -> ApiResult<Response> {
    Ok(part10_body(
        read_objects(&state, &study, Some(&series)).await?,
    ))
}

async fn retrieve_instance(
    State(state): State<Arc<ApiState>>,
    Path((study, series, sop)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    Ok(part10_body(vec![
        instance(&state, &study, &series, &sop).await?,
    ]))
}

/// Frames (1-based, comma-separated), each a part of the transfer syntax it is held
/// in: native pixel data as is, an encapsulated frame as its compressed bytes.
async fn frames(
    State(state): State<Arc<ApiState>>,
    Path((study, series, sop, list)): Path<(String, String, String, String)>,
) -> ApiResult<Response> {
    let numbers = list
        .split(',')
        .map(|n| n.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| ApiError::bad_request(format!("frames {list:?}: not a list of numbers")))?;
    let held = instance(&state, &study, &series, &sop).await?;
    let (frames, syntax) =
        tokio::task::spawn_blocking(move || catalog::frames(&held.file, &numbers))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(|e| ApiError::not_found(format!("{e:#}")))?;
    let boundary = multipart::boundary();
    let kind = format!("application/octet-stream; transfer-syntax={syntax}");
    let count = frames.len();
    let body: Vec<u8> = frames
        .iter()
        .enumerate()
        .flat_map(|(i, bytes)| multipart::part(&boundary, &kind, bytes, i + 1 == count))
        .collect();
    let content_type =
        format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}");
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}
