//! Reconciliation inside `railyard serve`: rails that publish reports (the card network's
//! settlement file, the CBDC platform's block log, the instant networks' camt.054 debit
//! notifications) are read on a schedule, and escalated in-doubt
//! payouts are resolved from them without an operator.

use std::sync::Arc;
use std::time::Duration;

use railyard_rails::SandboxRail;
use railyard_saga::Engine;
use railyard_store::Store;

use crate::reconcile::{self, Settings};
use crate::reports::{self, Report};

/// How often `railyard serve` looks for escalated in-doubt payouts to reconcile.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);

/// Produces a rail's current reports (read when a run needs them, not before).
pub type ReportFeed = Arc<dyn Fn() -> Vec<Report> + Send + Sync>;

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
        let reports: Vec<Report> = feeds.iter().flat_map(|feed| feed()).collect();
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

/// Feeds for the sandbox rails run in process: each card network's settlement files (today's,
/// complete for yesterday; and tomorrow's so far, which proves executions but not absences), the
/// CBDC platform's block log, and each instant network's camt.054 for yesterday and today.
pub fn sandbox_feeds(sandboxes: &[(String, SandboxRail)]) -> Vec<ReportFeed> {
    let mut feeds: Vec<ReportFeed> = Vec::new();
    for (id, sandbox) in sandboxes {
        let id = id.clone();
        match sandbox {
            SandboxRail::Card(card) => {
                let card = card.clone();
                feeds.push(Arc::new(move || {
                    let today = chrono::Utc::now().date_naive();
                    let mut found = Vec::new();
                    for (date, complete) in [(Some(today), true), (today.succ_opt(), false)] {
                        let Some(date) = date else { continue };
                        let name = format!("{id}-settlement-{date}.csv");
                        match reports::read(&name, card.settlement_file(date).as_bytes()) {
                            Ok(mut report) => {
                                if !complete {
                                    report.coverage = None;
                                }
                                found.push(report);
                            }
                            Err(error) => tracing::warn!("reconciliation: {error}"),
                        }
                    }
                    found
                }));
            }
            SandboxRail::Cbdc(cbdc) => {
                let cbdc = cbdc.clone();
                feeds.push(Arc::new(move || {
                    let log = match serde_json::to_vec(&cbdc.blocks()) {
                        Ok(log) => log,
                        Err(error) => {
                            tracing::warn!("reconciliation: {id} block log: {error}");
                            return Vec::new();
                        }
                    };
                    match reports::read(&format!("{id}-blocks.json"), &log) {
                        Ok(report) => vec![report],
                        Err(error) => {
                            tracing::warn!("reconciliation: {error}");
                            Vec::new()
                        }
                    }
                }));
            }
            // The instant networks' camt.054 debit notifications, yesterday's and today's: they
            // prove executions (never absences: a notification is not a complete statement).
            SandboxRail::Instant(instant) => {
                let instant = instant.clone();
                feeds.push(Arc::new(move || {
                    let today = chrono::Utc::now().date_naive();
                    let mut found = Vec::new();
                    for date in [today.pred_opt(), Some(today)].into_iter().flatten() {
                        let name = format!("{id}-camt054-{date}.xml");
                        match reports::read(&name, instant.debit_notification(date).as_bytes()) {
                            Ok(report) => found.push(report),
                            Err(error) => tracing::warn!("reconciliation: {error}"),
                        }
                    }
                    found
                }));
            }
        }
    }
    feeds
}
