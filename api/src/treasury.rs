//! Treasury operations over HTTP (scope `treasury`): settlement windows of net rails (list, close,
//! settle, report as JSON or CSV), rebalancing suggestions, and reconciliation of an uploaded rail
//! report or bank statement against the ledger. Each is the same code `railyard treasury` and
//! `railyard reconcile` run; what moves money or resolves a saga is audited with the caller's key.

use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use railyard_config::Scope;
use railyard_treasury::reconcile::{self, ReconcileError};
use railyard_treasury::settlement::{self, SettlementError, WindowState};
use serde::Deserialize;
use serde_json::json;

use crate::{ApiState, Problem, authenticate, invalid, store_error, who};

/// The largest report or statement `POST /v1/treasury/reconcile` takes (larger ones go through
/// `railyard reconcile`, which reads files of up to `reports::REPORT_BYTES_MAX`).
pub const UPLOAD_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Reconciliation runs at once over HTTP; another gets 503 with Retry-After.
pub const RECONCILE_RUNS_MAX: usize = 1;
/// The longest horizon and outflow window `GET /v1/treasury/rebalance` projects (30 days).
pub const REBALANCE_HOURS_MAX: u32 = 720;

static RECONCILE_RUNS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(RECONCILE_RUNS_MAX);

fn settlement_error(error: SettlementError) -> Problem {
    match error {
        SettlementError::NoWindow(id) => Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no window {id}")),
        error @ (SettlementError::NotNet(_) | SettlementError::WrongState { .. }) => {
            Problem::new(StatusCode::CONFLICT, "Conflict", error.to_string())
        }
        error => store_error(error),
    }
}

#[derive(Deserialize)]
pub(crate) struct WindowsQuery {
    rail: Option<String>,
}

#[utoipa::path(get, path = "/v1/treasury/windows", tag = "treasury", params(("rail" = Option<String>, Query, description = "only this rail's windows")), responses((status = 200, description = "settlement windows of net rails, newest first", body = Object), (status = 422, description = "unknown rail", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `GET /v1/treasury/windows?rail=`: settlement windows (open, closed, settling, settled).
pub(crate) async fn windows(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<WindowsQuery>,
) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    if let Some(rail) = &query.rail
        && state.config.rail(rail).is_none()
    {
        return Err(invalid("rail", format!("no rail {rail}")));
    }
    let windows = settlement::windows(state.engine.store(), query.rail.as_deref()).await.map_err(settlement_error)?;
    Ok(Json(json!({ "windows": windows })).into_response())
}

#[utoipa::path(get, path = "/v1/treasury/windows/{id}", tag = "treasury", params(("id" = String, Path, description = "as listed, e.g. rtp-us:w3")), responses((status = 200, description = "the window and, once it settles, its report", body = Object), (status = 404, description = "no such window", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `GET /v1/treasury/windows/{id}`: one window, with its report once it is settling or settled.
pub(crate) async fn window(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let store = state.engine.store();
    let window = settlement::window(store, &id).await.map_err(settlement_error)?;
    let report = match window.state {
        WindowState::Settling | WindowState::Settled => {
            Some(settlement::report(store, &id).await.map_err(settlement_error)?)
        }
        WindowState::Open | WindowState::Closed => None,
    };
    Ok(Json(json!({ "window": window, "report": report })).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ReportQuery {
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/treasury/windows/{id}/report", tag = "treasury", params(("id" = String, Path), ("format" = Option<String>, Query, description = "json (default) or csv")), responses((status = 200, description = "the settlement report", body = Object), (status = 404, description = "no such window", body = crate::ProblemDoc), (status = 409, description = "the window has not settled", body = crate::ProblemDoc), (status = 422, description = "unknown format", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `GET /v1/treasury/windows/{id}/report?format=json|csv`: a settled (or settling) window's report:
/// net position per currency, totals per PSP, the postings.
pub(crate) async fn window_report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<ReportQuery>,
) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => return Err(invalid("format", format!("{other:?} is neither \"json\" nor \"csv\""))),
    };
    let store = state.engine.store();
    let window = settlement::window(store, &id).await.map_err(settlement_error)?;
    if matches!(window.state, WindowState::Open | WindowState::Closed) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!("window {id} is {}: it has no report until it settles", window.state.as_str()),
        ));
    }
    let report = settlement::report(store, &id).await.map_err(settlement_error)?;
    if csv {
        let disposition = format!("attachment; filename=\"{}.csv\"", id.replace(':', "-"));
        return Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()), (header::CONTENT_DISPOSITION, disposition)],
            settlement::report_csv(&report),
        )
            .into_response());
    }
    Ok(Json(report).into_response())
}

#[utoipa::path(post, path = "/v1/treasury/rails/{rail}/windows/close", tag = "treasury", params(("rail" = String, Path)), responses((status = 200, description = "the closed window (the next one is open); audited", body = Object), (status = 404, description = "no such rail", body = crate::ProblemDoc), (status = 409, description = "the rail settles gross", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/treasury/rails/{rail}/windows/close`: closes a net rail's open window now, at the
/// journal's head, and opens the next; audited (`settlement.close`).
pub(crate) async fn close_window(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(rail): Path<String>,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let config = state.snapshots.borrow().config.clone();
    if config.rail(&rail).is_none() {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no rail {rail}")));
    }
    let window = settlement::close(state.engine.store(), &config, &rail, &by).await.map_err(settlement_error)?;
    Ok(Json(window).into_response())
}

#[utoipa::path(post, path = "/v1/treasury/windows/{id}/settle", tag = "treasury", params(("id" = String, Path)), responses((status = 200, description = "settled (or already settled): the report; audited", body = Object), (status = 404, description = "no such window", body = crate::ProblemDoc), (status = 409, description = "the window is still open", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/treasury/windows/{id}/settle`: nets a closed window and posts one movement per
/// currency; audited (`settlement.settle`). Settling a settled window returns its report again.
pub(crate) async fn settle_window(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let report = settlement::settle(state.engine.store(), &id, &by).await.map_err(settlement_error)?;
    Ok(Json(report).into_response())
}

#[derive(Deserialize)]
pub(crate) struct RebalanceQuery {
    hours: Option<String>,
    window_hours: Option<String>,
}

fn hours(field: &str, text: Option<&str>) -> Result<u32, Problem> {
    let Some(text) = text else { return Ok(24) };
    match text.parse::<u32>() {
        Ok(hours) if (1..=REBALANCE_HOURS_MAX).contains(&hours) => Ok(hours),
        _ => Err(invalid(field, format!("{text:?}: a whole number of hours from 1 to {REBALANCE_HOURS_MAX}"))),
    }
}

#[utoipa::path(get, path = "/v1/treasury/rebalance", tag = "treasury", params(("hours" = Option<u32>, Query, description = "how far ahead every rail must stay above its low-water mark (default 24)"), ("window_hours" = Option<u32>, Query, description = "the recent span whose outflow is projected (default 24)")), responses((status = 200, description = "projections and suggested top-ups and transfers with their FX cost", body = Object), (status = 422, description = "invalid field", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `GET /v1/treasury/rebalance?hours=&window_hours=`: the same plan as
/// `railyard treasury rebalance --json`, priced with the FX book routing uses now.
pub(crate) async fn rebalance(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<RebalanceQuery>,
) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let horizon = hours("hours", query.hours.as_deref())?;
    let window = hours("window_hours", query.window_hours.as_deref())?;
    let (config, fx) = {
        let snapshot = state.snapshots.borrow();
        (snapshot.config.clone(), snapshot.fx.clone())
    };
    let plan = railyard_treasury::liquidity::rebalance(
        state.engine.store(),
        &config,
        &fx,
        Duration::from_secs(u64::from(horizon) * 3600),
        Duration::from_secs(u64::from(window) * 3600),
    )
    .await
    .map_err(store_error)?;
    Ok(Json(plan).into_response())
}

#[derive(Deserialize)]
pub(crate) struct ReconcileQuery {
    file: Option<String>,
    rail: Option<String>,
    dry_run: Option<String>,
    absence_grace_seconds: Option<String>,
}

#[utoipa::path(post, path = "/v1/treasury/reconcile", tag = "treasury", request_body(content = String, description = "the report or statement as it came: camt.052/053/054 or pacs.002 XML, a card settlement CSV, a CBDC block log JSON", content_type = "application/octet-stream"), params(("file" = String, Query, description = "the file's name (its extension tells CSV from XML and JSON)"), ("rail" = Option<String>, Query, description = "the rail a complete statement is about"), ("dry_run" = Option<bool>, Query, description = "report only: resolve no in-doubt payout"), ("absence_grace_seconds" = Option<u64>, Query, description = "a leg submitted this close to a complete report's end may still execute after it (default 600)")), responses((status = 200, description = "matched, unmatched on each side, mismatches, and in-doubt payouts resolved from the evidence; audited", body = Object), (status = 413, description = "larger than 16 MiB", body = crate::ProblemDoc), (status = 422, description = "unreadable report or invalid field", body = crate::ProblemDoc), (status = 503, description = "another reconciliation is running, Retry-After", body = crate::ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/treasury/reconcile?file=NAME[&rail=][&dry_run=true]`: reconciles one uploaded report
/// with the ledger, exactly as `railyard reconcile FILE --json`, and (unless `dry_run`) resolves
/// in-doubt payouts from its evidence; the server's saga driver carries them on. The run is
/// audited (`reconcile.run`) with its file, counts and resolutions.
pub(crate) async fn reconcile_report(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ReconcileQuery>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let file = query.file.as_deref().map(str::trim).unwrap_or_default();
    if file.is_empty() || file.len() > 255 || file.chars().any(|character| character.is_control() || character == '/') {
        return Err(invalid("file", "the report's file name, 1 to 255 characters without '/'"));
    }
    let config = state.snapshots.borrow().config.clone();
    if let Some(rail) = &query.rail
        && config.rail(rail).is_none()
    {
        return Err(invalid("rail", format!("no rail {rail}")));
    }
    let dry_run = match query.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(invalid("dry_run", format!("{other:?} is neither true nor false"))),
    };
    let absence_grace = match query.absence_grace_seconds.as_deref() {
        None => Duration::from_secs(600),
        Some(text) => Duration::from_secs(
            text.parse::<u64>()
                .ok()
                .filter(|seconds| *seconds <= 7 * 86_400)
                .ok_or_else(|| invalid("absence_grace_seconds", format!("{text:?}: whole seconds up to 604800")))?,
        ),
    };
    let report = railyard_treasury::reports::read(file, &body).map_err(|error| {
        Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Unreadable report", error.to_string()).field("body")
    })?;
    let Ok(_running) = RECONCILE_RUNS.try_acquire() else {
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Busy",
            "another reconciliation is running; try again shortly",
        );
        problem.retry_after = Some(5);
        return Err(problem);
    };
    let settings = reconcile::Settings {
        absence_grace,
        rail: query.rail.clone(),
        rails: config.rails.iter().map(|rail| (rail.id.to_string(), rail.kind)).collect(),
        resolve: !dry_run,
        // The server's saga driver carries resolved sagas on.
        drive_on: false,
        ..reconcile::Settings::default()
    };
    let run = reconcile::reconcile(state.engine.store(), Some(&state.engine), &[report], &settings).await.map_err(
        |error| match error {
            error @ ReconcileError::TooManyLegs => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Too much to compare", error.to_string()).field("body")
            }
            error => store_error(error),
        },
    )?;
    let summary = &run.summary;
    let resolved: Vec<String> = run
        .resolutions
        .iter()
        .filter(|resolution| resolution.result.is_some())
        .map(|resolution| format!("{} {:?}", resolution.payout_id, resolution.evidence))
        .collect();
    let detail = format!(
        "{file}{}: {} lines, {} matched, {} unmatched in the report, {} unmatched in the ledger, {} mismatches; resolved [{}]",
        if dry_run { " (dry run)" } else { "" },
        summary.lines,
        summary.matched,
        summary.unmatched_report,
        summary.unmatched_ledger,
        summary.mismatches,
        resolved.join(", ")
    );
    state.engine.store().audit(&by, "reconcile.run", &detail).await.map_err(store_error)?;
    Ok(Json(json!({ "clean": run.clean(), "reconciliation": run })).into_response())
}
