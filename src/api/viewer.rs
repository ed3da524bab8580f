//! The web viewer (OHIF's prebuilt application, installed by `scripts/install-viewer`)
//! served under `/viewer/`, behind the API's token like the dashboard: its files from
//! `[http] viewer_dir`, `index.html` for the application's own routes. It reads the
//! node's DICOMweb service on the same origin, so the dashboard's session cookie goes
//! with every request.

use std::path::{Component, Path as FsPath, PathBuf};
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{ApiError, ApiResult, ApiState};

/// `/viewer/viewer?…` for a study, with `series` (a SEG's) in the first viewport, where
/// OHIF draws it over the images it references.
pub fn study_link(study: &str, series: Option<&str>) -> String {
    let mut link = format!("/viewer/viewer?StudyInstanceUIDs={study}");
    if let Some(series) = series {
        link.push_str(&format!("&initialSeriesInstanceUID={series}"));
    }
    link
}

pub async fn root() -> Redirect {
    Redirect::permanent("/viewer/")
}

pub async fn index(State(s): State<Arc<ApiState>>) -> ApiResult<Response> {
    file(&s, "index.html").await
}

pub async fn asset(
    State(s): State<Arc<ApiState>>,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    file(&s, &path).await
}

/// A file of the viewer; a path without an extension is one of the application's
/// routes (`viewer`, `segmentation`, …): its `index.html`.
async fn file(s: &ApiState, path: &str) -> ApiResult<Response> {
    let dir = &s.config.http.viewer_dir;
    if !dir.join("index.html").is_file() {
        return Err(ApiError::not_found(format!(
            "the viewer is not installed in {}: run scripts/install-viewer",
            dir.display()
        )));
    }
    let Some(relative) = safe(path) else {
        return Err(ApiError::not_found(format!("no viewer file {path:?}")));
    };
    let route = relative.extension().is_none();
    let target = if route {
        PathBuf::from("index.html")
    } else {
        relative
    };
    let bytes = tokio::fs::read(dir.join(&target))
        .await
        .map_err(|_| ApiError::not_found(format!("no viewer file {path:?}")))?;
    let cache = if route || target.ends_with("index.html") || target.ends_with("app-config.js") {
        "no-cache"
    } else {
        "max-age=86400"
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type(&target)),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    )
        .into_response())
}

/// `path` as a relative path of normal components only (no `..`, no root).
fn safe(path: &str) -> Option<PathBuf> {
    let path = FsPath::new(path);
    path.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| path.to_path_buf())
}

fn content_type(path: &FsPath) -> &'static str {
    match path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
    {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "wasm" => "application/wasm",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "txt" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_paths_inside_the_viewer_are_served() {
        assert_eq!(safe("app.bundle.js"), Some(PathBuf::from("app.bundle.js")));
        assert_eq!(safe("assets/x.png"), Some(PathBuf::from("assets/x.png")));
        assert_eq!(safe("../secret"), None);
        assert_eq!(safe("/etc/passwd"), None);
        assert_eq!(safe("a/./b"), Some(PathBuf::from("a/b")));
        assert_eq!(content_type(FsPath::new("x.wasm")), "application/wasm");
    }
}
