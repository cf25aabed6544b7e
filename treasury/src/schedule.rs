//! Reconciliation inside `railyard serve`: rails that publish reports (the card network's
//! settlement file, the CBDC platform's block log, the instant networks' camt.054 debit
//! notifications) are read on a schedule, and escalated in-doubt
//! payouts are resolved from them without an operator.
//!
//! Every rail is read the same way, over its report endpoints (`GET /settlement?date=`,
//! `GET /camt.054?date=`, `GET /blocks?from=&max=`): through the in-process transport for the
//! sandbox rails `serve` runs itself, over HTTP for a rail with an `endpoint`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use railyard_config::{RailKind, TreasuryConfig};
use railyard_connector::transport::{Method, Transport};
use railyard_rails::Rails;
use railyard_saga::Engine;
use railyard_store::Store;

use crate::reconcile::{self, Settings};
use crate::reports::{self, Report};

/// How often `railyard serve` looks for escalated in-doubt payouts to reconcile.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// How long fetching one report (or one page of a block log) may take.
pub const REPORT_FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Pages of a CBDC block log one run reads at most ([`railyard_cbdc::rail::BLOCK_PAGE_MAX`]
/// blocks each): a log longer than this is reported unreadable rather than read without end.
pub const BLOCK_PAGES_MAX: usize = 10_000;

/// Produces a rail's current reports (read when a run needs them, not before).
pub type ReportFeed = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Vec<Report>> + Send>> + Send + Sync>;

/// Payouts in doubt that have used up their status inquiries: the ones reconciliation is for.
pub async fn escalated_in_doubt(store: &Store, inquiries_max: u32) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM payouts WHERE state = 'in_doubt' AND inquiries >= $1")
        .bind(i64::from(inquiries_max))
        .fetch_one(store.pool())
        .await
}

/// Runs forever: every `every`, if any payout is in doubt past its inquiries, reads every feed
/// and reconciles, resolving what the evidence decides.
pub async fn run(store: Store, engine: Arc<Engine>, feeds: Vec<ReportFeed>, every: Duration, settings: Settings) {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match escalated_in_doubt(&store, engine.settings().inquiries_max).await {
            Ok(0) => continue,
            Ok(count) => tracing::info!(count, "reconciling escalated in-doubt payouts"),
            Err(error) => {
                tracing::warn!("reconciliation: cannot count in-doubt payouts: {error}");
                continue;
            }
        }
        let mut reports: Vec<Report> = Vec::new();
        for feed in &feeds {
            reports.extend(feed().await);
        }
        match reconcile::reconcile(&store, Some(&engine), &reports, &settings).await {
            Ok(run) => {
                for record in &run.resolutions {
                    tracing::info!(payout_id = %record.payout_id, leg = %record.leg_key, result = ?record.result, error = ?record.error, "reconciliation resolved an in-doubt leg");
                }
                tracing::info!(
                    lines = run.summary.lines,
                    matched = run.summary.matched,
                    mismatches = run.summary.mismatches,
                    resolved = run.summary.resolved,
                    "reconciliation run"
                );
            }
            Err(error) => tracing::warn!("reconciliation failed: {error}"),
        }
    }
}

/// A feed per configured rail that publishes reports: each card network's settlement files
/// (today's, complete for its day; and tomorrow's so far, which proves executions but not
/// absences), the CBDC platform's block log from genesis, and each instant network's camt.054 for
/// yesterday and today (notifications prove executions, never absences). A sandbox rail run in
/// process is read through its in-process transport; a rail with an `endpoint` over HTTP.
pub fn feeds(config: &TreasuryConfig, rails: &Rails) -> Vec<ReportFeed> {
    let mut feeds: Vec<ReportFeed> = Vec::new();
    for rail in &config.rails {
        let id = rail.id.to_string();
        let transport = match &rail.endpoint {
            Some(endpoint) => Transport::http(endpoint),
            None => match rails.sandboxes.iter().find(|(sandbox, _)| *sandbox == id) {
                Some((_, sandbox)) => Transport::in_process(sandbox.service()),
                None => continue,
            },
        };
        let kind = rail.kind;
        let transport = Arc::new(transport);
        feeds.push(Arc::new(move || {
            let (id, transport) = (id.clone(), transport.clone());
            Box::pin(async move {
                match kind {
                    RailKind::Card => card_reports(&id, &transport).await,
                    RailKind::Instant => instant_reports(&id, &transport).await,
                    RailKind::Cbdc => cbdc_reports(&id, &transport).await,
                }
            })
        }));
    }
    feeds
}

/// One report endpoint's body, or why there is none.
async fn fetch(transport: &Transport, target: &str) -> Result<Vec<u8>, String> {
    match transport.exchange(Method::Get, target, Vec::new(), REPORT_FETCH_TIMEOUT).await {
        Ok(answer) if answer.status == 200 => Ok(answer.body),
        Ok(answer) => Err(format!("HTTP {}: {}", answer.status, String::from_utf8_lossy(&answer.body))),
        Err(error) => Err(error.to_string()),
    }
}

/// Reads one fetched report, logging (not failing the run) what cannot be fetched or read.
fn read(rail: &str, name: &str, body: Result<Vec<u8>, String>) -> Option<Report> {
    let body = match body {
        Ok(body) => body,
        Err(error) => {
            tracing::warn!(rail, "reconciliation: cannot fetch {name}: {error}");
            return None;
        }
    };
    match reports::read(name, &body) {
        Ok(report) => Some(report),
        Err(error) => {
            tracing::warn!(rail, "reconciliation: {error}");
            None
        }
    }
}

async fn card_reports(id: &str, transport: &Transport) -> Vec<Report> {
    let today = chrono::Utc::now().date_naive();
    let mut found = Vec::new();
    for (date, complete) in [(Some(today), true), (today.succ_opt(), false)] {
        let Some(date) = date else { continue };
        let name = format!("{id}-settlement-{date}.csv");
        let body = fetch(transport, &format!("/settlement?date={date}")).await;
        if let Some(mut report) = read(id, &name, body) {
            if !complete {
                report.coverage = None;
            }
            found.push(report);
        }
    }
    found
}

async fn instant_reports(id: &str, transport: &Transport) -> Vec<Report> {
    let today = chrono::Utc::now().date_naive();
    let mut found = Vec::new();
    for date in [today.pred_opt(), Some(today)].into_iter().flatten() {
        let name = format!("{id}-camt054-{date}.xml");
        let body = fetch(transport, &format!("/camt.054?date={date}")).await;
        found.extend(read(id, &name, body));
    }
    found
}

/// The whole block log, page by page from genesis (the reader verifies its hash chain).
async fn cbdc_reports(id: &str, transport: &Transport) -> Vec<Report> {
    let page_max = railyard_cbdc::rail::BLOCK_PAGE_MAX;
    let mut blocks: Vec<serde_json::Value> = Vec::new();
    let name = format!("{id}-blocks.json");
    for _ in 0..BLOCK_PAGES_MAX {
        let body = match fetch(transport, &format!("/blocks?from={}&max={page_max}", blocks.len())).await {
            Ok(body) => body,
            Err(error) => {
                tracing::warn!(rail = id, "reconciliation: cannot fetch {name}: {error}");
                return Vec::new();
            }
        };
        let page: Vec<serde_json::Value> = match serde_json::from_slice(&body) {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(rail = id, "reconciliation: {name}: not a page of blocks: {error}");
                return Vec::new();
            }
        };
        let last = page.len() < page_max;
        blocks.extend(page);
        if last {
            let log = serde_json::to_vec(&blocks).unwrap_or_default();
            return read(id, &name, Ok(log)).into_iter().collect();
        }
    }
    tracing::warn!(rail = id, "reconciliation: {name}: longer than {BLOCK_PAGES_MAX} pages, not read");
    Vec::new()
}
