//! The dashboard: server-rendered HTML on the API's listener for the people who run the
//! node and the radiologists who ask "has my study been processed?". Jobs (state, age,
//! timings, organ volumes, deliveries; filtered by state, date and accession), a job's
//! page with its key images and audit timeline, an audit search with CSV export, and
//! the node's health. No JavaScript needed (pages refresh themselves); where it runs, a
//! few lines refresh the content in place. No external resources (the hospital network
//! has no internet). Under `/ui/` (`/` redirects there); same token as the API, sent as
//! a bearer token or once through the login form, after which it lives in a cookie. Patient names are not shown unless configured.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::{
    ApiError, ApiResult, ApiState, Params, check_known, existing_job, stored_count, time_param,
};
use crate::jobs::summary::JobSummary;
use crate::sr::Organ;
use crate::store::{
    AUDIT_FIELDS, AuditFilter, AuditRow, DeliveryState, JobQuery, JobRow, JobState, Priority,
    RequestRow, ResultObject, ResultRow, ReviewDecision, format_ms, now_ms,
};

/// The cookie that carries the token in a browser.
pub const COOKIE: &str = "segnode_token";
/// How often a page refreshes itself.
const REFRESH_SECONDS: u32 = 10;

/// Escapes text for HTML.
fn esc(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A whole page: navigation, the content in `<main>`, self-refresh.
fn page(title: &str, main: &str) -> Response {
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · segnode</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<noscript><meta http-equiv="refresh" content="{REFRESH_SECONDS}"></noscript>
<style>
body{{font-family:system-ui,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}}
nav{{background:#1f3b57;padding:.6em 1em}} nav a{{color:#fff;margin-right:1.2em;text-decoration:none;font-weight:600}}
main{{padding:1em}} table{{border-collapse:collapse;background:#fff;margin:.5em 0 1.2em}}
th,td{{border:1px solid #d0d5db;padding:.3em .6em;text-align:left;vertical-align:top}} th{{background:#e9edf1}}
.state{{font-weight:600}} .qa{{font-size:85%;padding:0 .3em;border-radius:3px}} .qa.ok{{background:#dff3e4}} .qa.warn{{background:#fff1cc}} .qa.fail{{background:#fbdcdc}} .qa.left-out{{background:#e4e7eb}} .stat{{font-size:85%;padding:0 .3em;border-radius:3px;background:#fbdcdc;color:#b00020;font-weight:600}} .failed{{color:#b00020}} .delivered,.succeeded{{color:#1b7f3b}} .queued,.running,.review{{color:#8a5a00}} .rejected{{color:#5f6b76;text-decoration:line-through}}
#review{{background:#fff8e1;border:1px solid #e0c060;padding:.6em 1em}} #review input[name=comment]{{width:30em}}
form{{margin:.5em 0 1em}} img.key{{max-width:512px;margin:.3em;border:1px solid #999}} .note{{color:#555}}
</style></head>
<body><nav><a href="/ui/">Jobs</a><a href="/ui/audit">Audit</a><a href="/ui/health">Health</a></nav>
<main id="main"><h1>{title}</h1>
{main}</main>
<script>
setInterval(function(){{var f=document.getElementById("review");
if(f&&(f.contains(document.activeElement)||[].some.call(f.querySelectorAll("input"),function(e){{return e.value}})))return;
fetch(location.href,{{credentials:"same-origin"}}).then(function(r){{return r.text()}}).then(function(t){{
var d=new DOMParser().parseFromString(t,"text/html").getElementById("main");if(d){{document.getElementById("main").innerHTML=d.innerHTML}}}})}},{REFRESH_SECONDS}000);
</script></body></html>"#,
        title = esc(title),
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// The answer to a browser without the token: 401 and a form to give it, which goes
/// on to `next`.
pub fn login_page(next: &str) -> Response {
    let mut response = page(
        "Sign in",
        &format!(
            r#"<p>The dashboard needs the node's API token.</p>
<form action="/ui/login" method="post"><label>Token <input type="password" name="token"></label>
<input type="hidden" name="next" value="{}"><button>Sign in</button></form>"#,
            esc(next)
        ),
    );
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}

/// The login form's answer (`POST /ui/login`, fields `token` and `next`), or the same as
/// `GET /ui/login?token=…[&next=/ui/…]` for a link: with the right token, sets it as a
/// cookie (HttpOnly, SameSite=Strict) and goes on to `next`.
pub async fn login_form(state: State<Arc<ApiState>>, Form(p): Form<Params>) -> Response {
    login(state, Query(p)).await
}

/// `GET /ui/login?token=…[&next=/ui/…]`: see [`login_form`]; `next` is a page of the
/// dashboard or the viewer.
pub async fn login(State(s): State<Arc<ApiState>>, Query(p): Query<Params>) -> Response {
    let next = p
        .get("next")
        .filter(|n| (n.starts_with("/ui/") || n.starts_with("/viewer/")) && !n.contains("//"))
        .map_or("/ui/", String::as_str);
    match (&s.token, p.get("token")) {
        (Some(token), Some(given)) if given == token => {
            let cookie = format!("{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict");
            ([(header::SET_COOKIE, cookie)], Redirect::to(next)).into_response()
        }
        (None, _) => Redirect::to(next).into_response(),
        _ => login_page(next),
    }
}

/// The token a browser sent in its cookie.
pub fn cookie_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(COOKIE)?.strip_prefix('='))
}

/// A job's state, and its worst organ verdict once assessed.
fn state_cell(j: &JobRow) -> String {
    let state = j.state;
    let verdict = j.qa_verdict.map_or(String::new(), |v| {
        format!(r#" <span class="qa job {v}" title="worst organ verdict">{v}</span>"#)
    });
    let stat = match j.priority {
        Priority::Stat => {
            r#" <span class="stat" title="processed before routine work">stat</span>"#
        }
        Priority::Routine => "",
    };
    format!(r#"<span class="state {state}">{state}</span>{stat}{verdict}"#)
}

/// Organ volumes of a job, one per line, with each organ's verdict; a truncated
/// organ's volume reads "≥" (a lower bound).
fn organs(summary: &JobSummary) -> String {
    summary
        .organs
        .iter()
        .map(|o| {
            format!(
                "{} {}{:.1}&nbsp;ml {}",
                esc(&o.name),
                lower_bound_mark(o),
                o.ml,
                organ_badges(o)
            )
        })
        .collect::<Vec<_>>()
        .join("<br>")
}

/// A job's organs: volume (a lower bound when truncated), attenuation, verdict and
/// reasons.
fn organs_table(summary: &JobSummary) -> String {
    let mut html = String::new();
    if summary.organs.is_empty() {
        return html;
    }
    html.push_str("<h2>Organs</h2><table id=\"organs\"><tr><th>Organ</th><th>Volume (ml)</th><th>Mean HU</th><th>Min HU</th><th>Max HU</th><th>Check</th></tr>");
    for o in &summary.organs {
        let reasons: Vec<String> = o.qa.reasons.iter().map(|r| esc(&r.detail)).collect();
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}{:.1}</td><td>{:.1}</td><td>{:.0}</td><td>{:.0}</td><td>{} {}</td></tr>",
            esc(&o.name),
            lower_bound_mark(o),
            o.ml,
            o.hu_mean,
            o.hu_min,
            o.hu_max,
            organ_badges(o),
            reasons.join("; "),
        );
    }
    html.push_str("</table>");
    html
}

/// "≥" before the volume of an organ the scan range or field of view cut (a lower
/// bound).
fn lower_bound_mark(o: &Organ) -> &'static str {
    if o.qa.volume_is_lower_bound() {
        "≥"
    } else {
        ""
    }
}

/// An organ's verdict as a badge, and "left out" when it was not delivered.
fn organ_badges(o: &Organ) -> String {
    let v = o.qa.verdict;
    let left_out = if o.left_out {
        r#" <span class="qa left-out" title="failed its checks: not in the SEG, the report's measurements or the key images">left out</span>"#
    } else {
        ""
    };
    format!(r#"<span class="qa {v}">{v}</span>{left_out}"#)
}

fn age(ms: i64) -> String {
    let s = (now_ms() - ms).max(0) / 1000;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

/// Whether the jobs page lists only the jobs that need review.
fn needs_review(p: &Params) -> bool {
    p.get("needs_review").is_some_and(|v| v == "true")
}

/// `POST /ui/jobs/{id}/review` (fields `decision` = approve | reject, `reviewer`,
/// `comment`): the job page's review form; back to the job page.
pub async fn review(
    State(s): State<Arc<ApiState>>,
    Path(id): Path<String>,
    Form(p): Form<Params>,
) -> ApiResult<Response> {
    let (id, _) = existing_job(&s, &id).await?;
    let field = |k: &str| p.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
    let decision = ReviewDecision {
        reviewer: field("reviewer").map(str::to_string),
        comment: field("comment").map(str::to_string),
    };
    if decision.reviewer.is_none() {
        return Err(ApiError::bad_request("a review names its reviewer"));
    }
    match field("decision") {
        Some("approve") => s.store.approve_job(id, &decision).await?,
        Some("reject") => s.store.reject_job(id, &decision).await?,
        _ => return Err(ApiError::bad_request("decision: approve or reject")),
    };
    Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response())
}

/// `/ui/`: jobs, newest first, with filters.
pub async fn jobs(State(s): State<Arc<ApiState>>, Query(p): Query<Params>) -> ApiResult<Response> {
    check_known(&p, &["state", "since", "accession", "needs_review"])?;
    let non_empty = |k: &str| p.get(k).filter(|v| !v.is_empty());
    let state = non_empty("state")
        .map(|v| {
            v.parse::<JobState>()
                .map_err(|_| ApiError::bad_request(format!("{v:?} is not a job state")))
        })
        .transpose()?;
    let since = match non_empty("since") {
        Some(_) => time_param(&p, "since")?,
        None => None,
    };
    let rows = s
        .store
        .jobs(&JobQuery {
            state,
            since_ms: since,
            accession_number: non_empty("accession").cloned(),
            needs_review: needs_review(&p),
            limit: 200,
            ..JobQuery::default()
        })
        .await?;
    let mut html = String::from(
        r#"<form method="get"><label>State <select name="state"><option value="">any</option>"#,
    );
    for st in JobState::ALL {
        let selected = if state == Some(st) { " selected" } else { "" };
        let _ = write!(html, r#"<option{selected}>{st}</option>"#);
    }
    let _ = write!(
        html,
        r#"</select></label> <label>Since <input name="since" type="date" value="{}"></label>
<label>Accession <input name="accession" value="{}"></label>
<label><input type="checkbox" name="needs_review" value="true"{}> Needs review</label> <button>Filter</button></form>
<table id="jobs"><tr><th>Job</th><th>State</th><th>Age</th><th>Patient ID</th><th>Accession</th><th>Series</th><th>From</th><th>Organs</th><th>Time</th><th>Deliveries</th></tr>"#,
        esc(non_empty("since").map_or("", String::as_str)),
        esc(non_empty("accession").map_or("", String::as_str)),
        if needs_review(&p) { " checked" } else { "" },
    );
    let states = match (rows.last(), rows.first()) {
        (Some(first), Some(last)) => s.store.delivery_states(first.id, last.id).await?,
        _ => Vec::new(),
    };
    for j in &rows {
        let summary = JobSummary::of(j).unwrap_or_default();
        let count = |st: DeliveryState| {
            states
                .iter()
                .filter(|(id, state, _)| *id == j.id && *state == st)
                .map(|(_, _, n)| *n)
                .sum::<i64>()
        };
        let all = count(DeliveryState::Pending)
            + count(DeliveryState::Delivered)
            + count(DeliveryState::Failed);
        let delivered = match all {
            0 => "—".to_string(),
            n => format!(
                "{}/{n} delivered{}",
                count(DeliveryState::Delivered),
                match count(DeliveryState::Failed) {
                    0 => String::new(),
                    f => format!(", <span class=\"failed\">{f} failed</span>"),
                }
            ),
        };
        let total = match summary.total_ms() {
            0 => String::new(),
            ms => format!("{:.1} s", ms as f64 / 1000.0),
        };
        let _ = write!(
            html,
            r#"<tr class="job" data-job="{id}"><td><a href="/ui/jobs/{id}">{id}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{total}</td><td>{delivered}</td></tr>"#,
            state_cell(j),
            age(j.created_ms),
            esc(j.patient_id.as_deref().unwrap_or("")),
            esc(j.accession_number.as_deref().unwrap_or("")),
            esc(j
                .series_description
                .as_deref()
                .unwrap_or(j.series_uid.as_str())),
            esc(&j.calling_ae),
            organs(&summary),
            id = j.id,
        );
    }
    html.push_str("</table>");
    if rows.is_empty() {
        html.push_str(r#"<p class="note">No job matches.</p>"#);
    }
    html.push_str(&requests_table(&s.store.requests(20).await?));
    Ok(page("Jobs", &html))
}

/// The newest requests for studies: what was asked for, where they stand.
fn requests_table(rows: &[RequestRow]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        r#"<h2>Requests</h2><table id="requests"><tr><th>Request</th><th>State</th><th>Age</th><th>Study or accession</th><th>Source</th><th>Retrieved</th><th>Reason</th></tr>"#,
    );
    for r in rows {
        let progress: serde_json::Value = serde_json::from_str(&r.progress).unwrap_or_default();
        let retrieved = match progress["instances_expected"].as_u64() {
            Some(expected) => format!(
                "{} of {expected}{}",
                progress["completed"].as_u64().unwrap_or(0),
                match progress["failed"].as_u64() {
                    Some(f) if f > 0 => format!(", <span class=\"failed\">{f} failed</span>"),
                    _ => String::new(),
                }
            ),
            None => "—".into(),
        };
        let stat = if r.priority == Priority::Stat {
            r#" <span class="stat" title="processed before routine work">stat</span>"#
        } else {
            ""
        };
        let _ = write!(
            html,
            r#"<tr class="request" data-request="{id}"><td><a href="/api/requests/{id}">{id}</a></td><td>{}{stat}</td><td>{}</td><td>{}</td><td>{}</td><td>{retrieved}</td><td>{}</td></tr>"#,
            r.state.as_str(),
            age(r.created_ms),
            esc(r
                .study_uid
                .as_deref()
                .or(r.accession_number.as_deref())
                .unwrap_or("")),
            esc(&r.source),
            esc(r.reason.as_deref().unwrap_or("")),
            id = r.id,
        );
    }
    html.push_str("</table>");
    html
}

fn timeline(rows: &[AuditRow]) -> String {
    let mut html =
        String::from("<table id=\"timeline\"><tr><th>When</th><th>Event</th><th>Detail</th></tr>");
    for r in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            format_ms(r.at_ms),
            r.event,
            esc(&r.detail)
        );
    }
    html.push_str("</table>");
    html
}

/// `/ui/jobs/{id}`: one job, its organs, key images, deliveries and timeline.
pub async fn job(State(s): State<Arc<ApiState>>, Path(id): Path<String>) -> ApiResult<Response> {
    let (id, j) = existing_job(&s, &id).await?;
    let summary = JobSummary::of(&j).unwrap_or_default();
    let results = s.store.job_results(id).await?;
    let mut html = String::new();
    let patient_name = if s.config.http.dashboard_patient_names {
        patient_name(&s, &results).map_or(String::new(), |n| {
            format!("<tr><th>Patient name</th><td>{}</td></tr>", esc(&n))
        })
    } else {
        String::new()
    };
    let _ = write!(
        html,
        r#"<table id="job"><tr><th>State</th><td>{}</td></tr>{patient_name}<tr><th>Patient ID</th><td>{}</td></tr><tr><th>Accession</th><td>{}</td></tr>
<tr><th>Series</th><td>{}<br><small>{}</small></td></tr><tr><th>From</th><td>{}</td></tr><tr><th>Instances</th><td>{}</td></tr>
<tr><th>Created</th><td>{}</td></tr><tr><th>Reason</th><td>{}</td></tr><tr><th>SEG</th><td>{}</td></tr><tr><th>SR</th><td>{}</td></tr></table>"#,
        state_cell(&j),
        esc(j.patient_id.as_deref().unwrap_or("")),
        esc(j.accession_number.as_deref().unwrap_or("")),
        esc(j.series_description.as_deref().unwrap_or("")),
        j.series_uid,
        esc(&j.calling_ae),
        j.instance_count,
        format_ms(j.created_ms),
        esc(j.reason.as_deref().unwrap_or("")),
        summary.seg.as_ref().map_or(String::new(), |seg| format!(
            r#"{} <a id="viewer" href="{}">open in the viewer</a>"#,
            seg.sop_instance_uid,
            esc(&super::viewer::study_link(
                j.study_uid.as_str(),
                Some(seg.series_instance_uid.as_str())
            ))
        )),
        summary
            .sr
            .as_ref()
            .map_or(String::new(), |sr| sr.sop_instance_uid.to_string()),
    );
    if j.state == JobState::Review {
        let _ = write!(
            html,
            r#"<form id="review" method="post" action="/ui/jobs/{id}/review"><h2>Review</h2>
<p>This result is held: nothing of it is delivered until it is approved. Rejected, it is never delivered.</p>
<label>Reviewer <input name="reviewer" required></label> <label>Comment <input name="comment"></label>
<button name="decision" value="approve" id="approve">Approve and deliver</button> <button name="decision" value="reject" id="reject">Reject</button></form>"#
        );
    }
    html.push_str(&organs_table(&summary));
    let keys = key_image_files(&results).count();
    if keys > 0 {
        html.push_str(
            "<h2>Key images</h2><p class=\"note\">Research result, not for diagnosis.</p>",
        );
        for n in 1..=keys {
            let _ = write!(
                html,
                r#"<img class="key" src="/ui/jobs/{id}/key/{n}" alt="key image {n}" width="512">"#
            );
        }
    }
    if !summary.timings_ms.is_empty() {
        html.push_str("<h2>Timings</h2><table id=\"timings\"><tr>");
        for stage in summary.timings_ms.keys() {
            let _ = write!(html, "<th>{stage}</th>");
        }
        html.push_str("</tr><tr>");
        for ms in summary.timings_ms.values() {
            let _ = write!(html, "<td>{ms}&nbsp;ms</td>");
        }
        html.push_str("</tr></table>");
    }
    let deliveries = s.store.job_deliveries(id).await?;
    html.push_str("<h2>Deliveries</h2><table id=\"deliveries\"><tr><th>Destination</th><th>Object</th><th>State</th><th>Attempts</th><th>Last status / error</th></tr>");
    for d in &deliveries {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{:?}</td><td>{:?}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.destination),
            d.object,
            d.state,
            d.attempts,
            esc(d
                .last_error
                .as_deref()
                .or(d.last_status.as_deref())
                .unwrap_or(""))
        );
    }
    html.push_str("</table><h2>Timeline</h2>");
    let rows = s
        .store
        .audit_query(&crate::store::AuditFilter {
            job_id: Some(id),
            ..Default::default()
        })
        .await?;
    html.push_str(&timeline(&rows));
    Ok(page(&format!("Job {id}"), &html))
}

/// The spool files of a job's key images, in order.
fn key_image_files(results: &[ResultRow]) -> impl Iterator<Item = &str> {
    results
        .iter()
        .filter(|r| r.kind == ResultObject::KeyImages)
        .map(|r| r.file.as_str())
}

/// The Patient's Name in the job's SEG, while the spool keeps it.
fn patient_name(s: &ApiState, results: &[ResultRow]) -> Option<String> {
    let file = &results.iter().find(|r| r.kind == ResultObject::Seg)?.file;
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(s.config.spool_dir().join(file))
        .ok()?;
    obj.element(dicom_dictionary_std::tags::PATIENT_NAME)
        .ok()?
        .to_str()
        .ok()
        .map(|n| n.trim().replace('^', " "))
}

/// `/ui/jobs/{id}/key/{n}`: key image `n` (from 1) as PNG.
pub async fn key_image(
    State(s): State<Arc<ApiState>>,
    Path((id, n)): Path<(String, usize)>,
) -> ApiResult<Response> {
    let (id, _) = existing_job(&s, &id).await?;
    let results = s.store.job_results(id).await?;
    let file = key_image_files(&results)
        .nth(n.saturating_sub(1))
        .map(String::from)
        .ok_or_else(|| ApiError::not_found(format!("job {id} has no key image {n}")))?;
    let path = s.config.spool_dir().join(file);
    let png = tokio::task::spawn_blocking(move || key_image_png(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(|| {
            ApiError::not_found(format!("key image {n} of job {id} is no longer kept"))
        })?;
    Ok(([(header::CONTENT_TYPE, "image/png")], png).into_response())
}

/// A key image's RGB pixels as PNG.
fn key_image_png(path: &std::path::Path) -> Option<Vec<u8>> {
    use dicom_dictionary_std::tags;
    let obj = dicom_object::open_file(path).ok()?;
    let int = |tag| obj.element(tag).ok()?.to_int::<u32>().ok();
    let (rows, columns) = (int(tags::ROWS)?, int(tags::COLUMNS)?);
    let pixels = obj.element(tags::PIXEL_DATA).ok()?.to_bytes().ok()?;
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, columns, rows);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().ok()?;
    writer
        .write_image_data(pixels.get(..(rows * columns * 3) as usize)?)
        .ok()?;
    writer.finish().ok()?;
    Some(out)
}

/// `/ui/audit`: the audit search, with its CSV export.
pub async fn audit(State(s): State<Arc<ApiState>>, Query(p): Query<Params>) -> ApiResult<Response> {
    let fields = AUDIT_FIELDS;
    check_known(&p, &fields)?;
    let given: Params = p.into_iter().filter(|(_, v)| !v.is_empty()).collect();
    let mut filter = AuditFilter::from_params(&given).map_err(ApiError::bad_request)?;
    filter.limit = Some(500);
    let rows = s.store.audit_query(&filter).await?;
    let mut html = String::from(r#"<form method="get">"#);
    for f in fields {
        let _ = write!(
            html,
            r#"<label>{f} <input name="{f}" value="{}"></label> "#,
            esc(given.get(f).map_or("", String::as_str))
        );
    }
    let query: String = given
        .iter()
        .map(|(k, v)| format!("&{}={}", k, percent(v)))
        .collect();
    let _ = write!(
        html,
        r#"<button>Search</button></form><p><a id="csv" href="/api/audit?format=csv{query}">Export CSV</a> · {} records (at most 500 shown)</p>"#,
        rows.len()
    );
    html.push_str(&timeline(&rows));
    Ok(page("Audit", &html))
}

/// Percent-encodes a query value.
fn percent(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `/ui/health`: model, ONNX Runtime, disk, queue, what `segnode check` finds of the
/// spool and the database, and the destinations.
pub async fn health(State(s): State<Arc<ApiState>>) -> ApiResult<Response> {
    let counts = s.store.counts().await?;
    let jobs_in = |state: JobState| stored_count(&counts, "jobs", state.as_str());
    let free = crate::spool::free_bytes(&s.config.spool_dir())
        .map(|b| format!("{} MiB free", b / (1024 * 1024)))
        .unwrap_or_else(|e| format!("unknown: {e}"));
    let model = &s.model;
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<table id="health"><tr><th>Model</th><td>{}</td></tr><tr><th>ONNX Runtime</th><td>{}</td></tr>
<tr><th>Spool disk</th><td>{}</td></tr><tr><th>Queue</th><td>{} queued, {} running</td></tr></table>
<h2>Destinations</h2><table id="destinations"><tr><th>Destination</th><th>Last delivery</th><th>State</th><th>When</th><th>Status / error</th></tr>"#,
        model
            .as_ref()
            .map_or("none configured".into(), |m| esc(&format!(
                "{} {}",
                m.model, m.model_version
            ))),
        model
            .as_ref()
            .map_or(String::new(), |m| esc(&m.onnxruntime_library)),
        esc(&free),
        jobs_in(JobState::Queued),
        jobs_in(JobState::Running),
    );
    let outcomes = s.store.destination_outcomes().await?;
    for d in &s.config.destinations {
        let last = outcomes.iter().find(|o| o.destination == d.name);
        let _ = write!(
            html,
            "<tr><td>{} ({})</td>{}</tr>",
            esc(&d.name),
            esc(&d.address()),
            match last {
                Some(o) => format!(
                    "<td>job {} {:?}</td><td>{:?}</td><td>{}</td><td>{}</td>",
                    o.job_id,
                    o.object,
                    o.state,
                    format_ms(o.updated_ms),
                    esc(o
                        .last_error
                        .as_deref()
                        .or(o.last_status.as_deref())
                        .unwrap_or(""))
                ),
                None => "<td colspan=\"4\">none yet</td>".into(),
            }
        );
    }
    html.push_str("</table>");
    html.push_str(&check_html(&s).await);
    Ok(page("Health", &html))
}

/// The checks `segnode check` runs on a node's spool, database and settings.
async fn check_html(s: &ApiState) -> String {
    let config = &s.config;
    let report = match crate::spool::Spool::open(&config.spool_dir(), &config.membership.node_id) {
        Ok(spool) => crate::check::node_checks(config, &s.store, &spool).await,
        Err(e) => {
            let mut report = crate::check::CheckReport::default();
            report.problem(format!("spool {}: {e}", config.spool_dir().display()));
            report
        }
    };
    let mut html =
        String::from("<h2>Checks</h2><table id=\"checks\"><tr><th>What</th><th>Found</th></tr>");
    for f in &report.findings {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            esc(&f.subject),
            esc(&f.text)
        );
    }
    for p in &report.problems {
        let _ = write!(
            html,
            "<tr class=\"failed\"><td>problem</td><td>{}</td></tr>",
            esc(p)
        );
    }
    for i in &report.insecure {
        let _ = write!(html, "<tr><td>insecure</td><td>{}</td></tr>", esc(i));
    }
    html.push_str("</table>");
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_the_cookie_found() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            "a=1; segnode_token=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_token(&h), Some("abc"));
        assert_eq!(percent("a b/ü"), "a%20b%2F%C3%BC");
    }
}
