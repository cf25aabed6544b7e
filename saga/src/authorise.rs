//! Authorisation inside the saga: screening and risk scoring before any money is reserved, holds
//! for review or approval, the four-eyes decision, and the counters the rules read.
//!
//! An accepted payout (or one routed from a quote) is assessed once: the decision and every reason
//! are stored with it (`payouts.risk`) in the same transaction as the state it leads to: on to
//! routing, `screening` (a sanctions match), `awaiting_approval` (score or amount tier) or `failed`
//! (blocked). A held payout waits until an approver decides ([`Engine::decide`]) or the hold
//! expires (then it fails). The approver must be a different API key from the one that submitted
//! the payout; the decision is written to the hash-chained audit log with the state change.

use railyard_risk::{Assessment, Decision, Facts, Reason};
use railyard_store::{StepTransaction, audit, vault};
use sqlx::Row;

use crate::{Changes, Engine, EngineError, Payout, State, corrupt, outbox};

/// Held payouts one listing returns.
pub const HELD_PAGE_MAX: i64 = 200;
/// Longest note an approver may attach.
pub const NOTE_CHARS_MAX: usize = 500;

pub(crate) const MINUTE_MICROS: i64 = 60_000_000;
pub(crate) const HOUR_BUCKETS: i64 = 60;
pub(crate) const DAY_BUCKETS: i64 = 1_440;

/// What an approver decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    Reject,
}

/// Who decides: the approver key (`tenant/key-id`) and which tenants' payouts it may decide.
#[derive(Debug, Clone)]
pub struct Approver {
    pub tenant: String,
    pub key: String,
    /// The operator's approvers decide for every tenant; a PSP's own approvers only for it.
    pub all_tenants: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DecideError {
    #[error("payout {0} not found")]
    NotFound(String),
    #[error("payout {id} is {state}, not waiting for a decision")]
    NotHeld { id: String, state: &'static str },
    #[error("the key that submitted payout {0} cannot decide it: a second person must")]
    OwnRequest(String),
    #[error("the hold on payout {0} has expired")]
    Expired(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<sqlx::Error> for DecideError {
    fn from(error: sqlx::Error) -> DecideError {
        DecideError::Engine(EngineError::Database(error))
    }
}

pub(crate) fn counter_scopes(payout: &Payout) -> [(String, i64); 4] {
    let request = &payout.request;
    let amount = request.amount.minor_units();
    let currency = request.amount.currency().code();
    let corridor = format!("{}-{}", request.source.code(), request.destination.code());
    [
        (format!("psp:{}", payout.tenant), 0),
        (format!("psp-amount:{}:{currency}", payout.tenant), amount),
        (format!("corridor:{corridor}:{currency}"), amount),
        (format!("beneficiary:{}", request.beneficiary.account), 0),
    ]
}

/// The counters the rules read, for the four scopes of [`counter_scopes`], in one statement:
/// per scope, payouts in the last hour, and payouts and amount in the last day.
async fn windows(
    tx: &mut StepTransaction,
    scopes: &[(String, i64); 4],
    bucket: i64,
) -> Result<[(u64, u64, i128); 4], sqlx::Error> {
    let rows = sqlx::query(
        "SELECT scope, CAST(COALESCE(SUM(CASE WHEN bucket >= $5 THEN count ELSE 0 END), 0) AS BIGINT), \
         CAST(COALESCE(SUM(count), 0) AS BIGINT), CAST(COALESCE(SUM(amount), 0) AS BIGINT) \
         FROM risk_counters WHERE scope IN ($1, $2, $3, $4) AND bucket >= $6 GROUP BY scope",
    )
    .bind(&scopes[0].0)
    .bind(&scopes[1].0)
    .bind(&scopes[2].0)
    .bind(&scopes[3].0)
    .bind(bucket - HOUR_BUCKETS + 1)
    .bind(bucket - DAY_BUCKETS + 1)
    .fetch_all(&mut **tx)
    .await?;
    let mut found = [(0, 0, 0); 4];
    for row in rows {
        let scope: String = row.try_get(0)?;
        let Some(index) = scopes.iter().position(|(known, _)| *known == scope) else { continue };
        let count = |column: usize| row.try_get::<i64, _>(column).map(|value| u64::try_from(value).unwrap_or(0));
        found[index] = (count(1)?, count(2)?, i128::from(row.try_get::<i64, _>(3)?));
    }
    Ok(found)
}

/// Screens the payout's beneficiary, and its originator when it names one.
fn screen_parties(
    list: &railyard_risk::SanctionsList,
    risk: &railyard_config::RiskConfig,
    payout: &Payout,
) -> Vec<railyard_risk::Screening> {
    let request = &payout.request;
    let mut parties = vec![("beneficiary", request.beneficiary.name.as_str())];
    if let Some(originator) = &request.originator {
        parties.push(("originator", originator.name.as_str()));
    }
    railyard_risk::screen(list, risk, &parties)
}

impl Engine {
    /// The payout's screening, when risk is configured and the list loaded.
    pub(crate) fn screen(&self, payout: &Payout) -> Option<Vec<railyard_risk::Screening>> {
        match (&self.config.risk, &self.sanctions) {
            (Some(risk), Ok(list)) => Some(screen_parties(list, risk, payout)),
            _ => None,
        }
    }

    /// Screens and scores `payout` and moves it on, holds it, or blocks it.
    pub(crate) async fn assess(&self, payout: &Payout) -> Result<(), EngineError> {
        let now = self.clock.now();
        let bucket = self.clock.now_micros() / MINUTE_MICROS;
        // Screening is CPU work: done before the write transaction, not while holding it.
        let request = &payout.request;
        let mut screened = self.screen(payout);
        let mut tx = self.store.begin_step().await?;
        let assessment = match (&self.config.risk, &self.sanctions) {
            (None, _) => railyard_risk::unconfigured(now),
            (Some(risk), Err(error)) => Assessment {
                decision: Decision::Review,
                score: 0,
                reasons: vec![Reason {
                    rule: "screening_unavailable".into(),
                    points: 0,
                    detail: format!("the sanctions list could not be loaded ({error}): held, not screened"),
                }],
                screening: Vec::new(),
                assessed_at: now,
                expires_at: Some(now + chrono::Duration::minutes(i64::from(risk.approval_expiry_minutes))),
            },
            (Some(risk), Ok(list)) => {
                let screening = screened.take().unwrap_or_else(|| screen_parties(list, risk, payout));
                let scopes = counter_scopes(payout);
                let [psp, psp_amount, corridor, beneficiary] = windows(&mut tx, &scopes, bucket).await?;
                let (psp_last_hour, psp_amount_today) = (psp.0, psp_amount.2);
                let (corridor_last_hour, corridor_amount_today) = (corridor.0, corridor.2);
                let beneficiary_today = beneficiary.1;
                // The PSP's history in this currency and whether this payout met the beneficiary first.
                let known = sqlx::query(
                    "SELECT (SELECT count FROM risk_history WHERE tenant = $1 AND currency = $2), \
                     (SELECT amount FROM risk_history WHERE tenant = $1 AND currency = $2), \
                     (SELECT first_payout FROM vault WHERE token = $3)",
                )
                .bind(&payout.tenant)
                .bind(request.amount.currency().code())
                .bind(&request.beneficiary.account)
                .fetch_one(&mut *tx)
                .await?;
                let history_count = u64::try_from(known.try_get::<Option<i64>, _>(0)?.unwrap_or(0)).unwrap_or(0);
                let history_sum = i128::from(known.try_get::<Option<i64>, _>(1)?.unwrap_or(0));
                let first: Option<String> = known.try_get(2)?;
                let facts = Facts {
                    amount: request.amount,
                    destination_country: request.beneficiary.country,
                    history_count,
                    history_sum,
                    psp_last_hour,
                    psp_amount_today,
                    corridor_last_hour,
                    corridor_amount_today,
                    beneficiary_today,
                    // A payout accepted before the vault existed has no row: not known as new.
                    new_beneficiary: first.as_deref() == Some(payout.id.as_str()),
                };
                railyard_risk::assess(risk, screening, &facts, now)
            }
        };
        if assessment.decision != Decision::Block && self.config.risk.is_some() {
            // Blocked payouts do not count against the limits they broke.
            let scopes = counter_scopes(payout);
            let mut upsert = sqlx::query(
                "INSERT INTO risk_counters (scope, bucket, count, amount) VALUES \
                 ($1, $5, 1, $6), ($2, $5, 1, $7), ($3, $5, 1, $8), ($4, $5, 1, $9) \
                 ON CONFLICT (scope, bucket) DO UPDATE SET count = risk_counters.count + 1, \
                 amount = risk_counters.amount + excluded.amount",
            );
            for (scope, _) in &scopes {
                upsert = upsert.bind(scope);
            }
            upsert = upsert.bind(bucket);
            for (_, amount) in &scopes {
                upsert = upsert.bind(*amount);
            }
            upsert.execute(&mut *tx).await?;
            sqlx::query("DELETE FROM risk_counters WHERE scope IN ($1, $2, $3, $4) AND bucket < $5")
                .bind(&scopes[0].0)
                .bind(&scopes[1].0)
                .bind(&scopes[2].0)
                .bind(&scopes[3].0)
                .bind(bucket - DAY_BUCKETS)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO risk_history (tenant, currency, count, amount) VALUES ($1, $2, 1, $3) \
                 ON CONFLICT (tenant, currency) DO UPDATE SET count = risk_history.count + 1, \
                 amount = risk_history.amount + excluded.amount",
            )
            .bind(&payout.tenant)
            .bind(payout.request.amount.currency().code())
            .bind(payout.request.amount.minor_units())
            .execute(&mut *tx)
            .await?;
        }
        // Recorded with the state it leads to, in the same UPDATE.
        let risk = serde_json::to_string(&assessment).map_err(corrupt)?;
        let summary = assessment.summary();
        let from = payout.state;
        let held = || Changes {
            reason: Some(summary.clone()),
            next_action_at: assessment.expires_at.map(|at| at.timestamp_micros()),
            risk: Some(risk.clone()),
            ..Changes::default()
        };
        match assessment.decision {
            Decision::Approve => {
                let changes = Changes { risk: Some(risk.clone()), ..Changes::default() };
                self.commit(tx, payout, from, from, changes, &format!("screened: {summary}")).await
            }
            Decision::Review => {
                outbox(&mut tx, payout, "payout.screening", &summary).await?;
                self.commit(tx, payout, from, State::Screening, held(), &format!("held for review: {summary}")).await
            }
            Decision::RequireApproval => {
                outbox(&mut tx, payout, "payout.awaiting_approval", &summary).await?;
                self.commit(
                    tx,
                    payout,
                    from,
                    State::AwaitingApproval,
                    held(),
                    &format!("waiting for approval: {summary}"),
                )
                .await
            }
            Decision::Block => {
                let changes = Changes { risk: Some(risk.clone()), ..Changes::default() };
                self.fail_as(tx, payout, from, State::Failed, format!("blocked by risk rules: {summary}"), changes)
                    .await
            }
        }
    }

    /// A hold nobody decided in time: the payout fails (nothing was reserved).
    pub(crate) async fn expire_hold(&self, payout: &Payout) -> Result<(), EngineError> {
        let tx = self.store.begin_step().await?;
        let minutes = self.config.risk.as_ref().map(|risk| risk.approval_expiry_minutes).unwrap_or_default();
        self.fail(
            tx,
            payout,
            payout.state,
            format!("{} expired: nobody decided within {minutes} minutes", payout.state.as_str()),
        )
        .await
    }

    /// An approver's decision on a held payout. Approving clears a screening match (recorded as a
    /// screening override) or a risk tier, and the payout goes on to routing; rejecting fails it.
    pub async fn decide(
        &self,
        id: &str,
        approver: &Approver,
        verdict: Verdict,
        note: &str,
    ) -> Result<Payout, DecideError> {
        let payout = match self.payout(id).await {
            Ok(payout) => payout,
            Err(EngineError::NotFound(_)) => return Err(DecideError::NotFound(id.into())),
            Err(error) => return Err(error.into()),
        };
        if !approver.all_tenants && payout.tenant != approver.tenant {
            return Err(DecideError::NotFound(id.into()));
        }
        if !matches!(payout.state, State::Screening | State::AwaitingApproval) {
            return Err(DecideError::NotHeld { id: id.into(), state: payout.state.as_str() });
        }
        if payout.request.submitted_by.as_deref() == Some(approver.key.as_str()) {
            return Err(DecideError::OwnRequest(id.into()));
        }
        if payout.next_action_at <= self.clock.now_micros() {
            return Err(DecideError::Expired(id.into()));
        }
        if !self.claim(id).await? {
            return Err(EngineError::Leased(id.into()).into());
        }
        let result = self.decide_claimed(id, approver, verdict, note).await;
        self.release(id).await?;
        result?;
        Ok(self.payout(id).await?)
    }

    async fn decide_claimed(
        &self,
        id: &str,
        approver: &Approver,
        verdict: Verdict,
        note: &str,
    ) -> Result<(), DecideError> {
        // Read again under the lease.
        let payout = self.payout(id).await?;
        if !matches!(payout.state, State::Screening | State::AwaitingApproval) {
            return Err(DecideError::NotHeld { id: id.into(), state: payout.state.as_str() });
        }
        let note: String = note.chars().take(NOTE_CHARS_MAX).collect();
        let mut tx = self.store.begin_urgent().await?;
        sqlx::query("UPDATE payouts SET decided_by = $1 WHERE id = $2")
            .bind(&approver.key)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let risk = payout.risk.as_ref().map(Assessment::summary).unwrap_or_default();
        let action = match (verdict, payout.state) {
            (Verdict::Approve, State::Screening) => "screening.override",
            (Verdict::Approve, _) => "payout.approve",
            (Verdict::Reject, _) => "payout.reject",
        };
        audit::append(&mut tx, &approver.key, action, &format!("{id} ({}): {note}; was {risk}", payout.tenant))
            .await
            .map_err(EngineError::from)?;
        match verdict {
            Verdict::Approve => {
                let to = if payout.route.is_some() { State::Routed } else { State::Accepted };
                let detail = format!("approved by {}: {note}", approver.key);
                self.commit(tx, &payout, payout.state, to, Changes::default(), &detail).await?;
            }
            Verdict::Reject => {
                self.fail(tx, &payout, payout.state, format!("rejected by {}: {note}", approver.key)).await?;
            }
        }
        // The decision is durable before the approver is answered.
        self.store.sync().await?;
        Ok(())
    }

    /// Payouts waiting for a decision, oldest first; `tenant` narrows to one tenant.
    pub async fn held(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<Payout>, EngineError> {
        let rows = sqlx::query(
            "SELECT id FROM payouts WHERE state IN ('screening', 'awaiting_approval') AND ($1 = '' OR tenant = $1) \
             ORDER BY created_at LIMIT $2",
        )
        .bind(tenant.unwrap_or(""))
        .bind(limit.clamp(1, HELD_PAGE_MAX))
        .fetch_all(self.store.pool())
        .await?;
        let mut held = Vec::with_capacity(rows.len());
        for row in &rows {
            held.push(self.payout(&row.try_get::<String, _>(0)?).await?);
        }
        Ok(held)
    }

    /// The account behind a stored beneficiary token (a payout from before the vault keeps its
    /// account as it was sent).
    pub(crate) async fn reveal_account(&self, stored: &str) -> Result<String, EngineError> {
        if !stored.starts_with("ben_") {
            return Ok(stored.to_string());
        }
        vault::reveal(&self.store, &self.vault, stored).await.map_err(|error| match error {
            vault::VaultError::Database(error) => EngineError::Database(error),
            other => EngineError::Corrupt(other.to_string()),
        })
    }
}
