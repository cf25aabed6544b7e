//! Sagas in groups: the steps of many payouts in one transaction.
//!
//! A saga run alone ([`Engine::run`]) commits every step on its own: screening, routing, the
//! reservation, the FX lock and the rail leg's intent are five transactions of a few statements
//! each, and the completion two more. Through sqlx's SQLite worker every statement costs tens of
//! microseconds however little it does, so a payout spends milliseconds of the one writer's time.
//! [`Engine::run_group`] takes up to [`GROUP_SAGAS_MAX`] payouts that are all at the start and
//! moves them together:
//!
//! 1. Outside any transaction: read them, screen them, route them.
//! 2. One transaction ("group_submit"): claim their leases; read the risk counters once and
//!    assess the payouts one after another against them, as if each had committed before the
//!    next; reserve each PSP amount and each rail leg's liquidity with [`ledger::append_groups`];
//!    write every payout's new state, its events and the counters. Each payout ends `submitting`
//!    with its intent durable (the store is synced) before any rail is called, exactly as alone.
//!    On PostgreSQL the rows are written first and the ledger last, under a savepoint; should a
//!    member not book, the transaction goes back to it ("group_submit_rebook") and books first.
//! 3. The rail calls, concurrently, each with its own idempotency key.
//! 4. One transaction ("group_complete") for the legs that executed, taken as they come back:
//!    post the leg and the reservation, book the conversions, queue the webhook, complete.
//!
//! A payout for which no route exists (no rail serves it, or none has the liquidity for it) is
//! failed in the same transaction, after its assessment, with the single path's trail: risk
//! recorded, `screened: ...`, `no route: ...`, the `payout.failed` webhook. Alone, each such payout
//! took three transactions and a flush; a backlog of them (a rail run dry) drained at ~100/s.
//!
//! Whatever else is not the common case leaves the group at the point where it stops being one and
//! runs alone from there, with the same code as always: a payout held or blocked by risk, with a
//! route of more than one rail leg, short of balance or liquidity, a rail answer
//! other than executed. The durable states, events and ledger entries a grouped payout leaves are
//! the ones it would have left alone (the tests compare them), so recovery, reconciliation and
//! `verify` see no difference. A crash anywhere leaves each payout in a state the ordinary engine
//! resumes: before the first commit nothing happened; after it the payout is `submitting` and is
//! asked about at the rail before anything else.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use futures_util::StreamExt;
use railyard_risk::{Assessment, Decision, Facts};
use railyard_store::ledger::{self, GroupEntry, GroupEntryKind};
use railyard_store::{StepTransaction, bulk, usage};
use sqlx::{AssertSqlSafe, Row};

use crate::authorise::{DAY_BUCKETS, HOUR_BUCKETS, MINUTE_MICROS, counter_scopes};
use crate::{
    Engine, EngineError, LegOutcome, PAYOUT_COLUMNS, Payout, PayoutMoved, Phase, State, StoredRoute, clearing_account,
    corrupt, fx_account, leg_outcome, nostro_account, payout_from_row, psp_account,
};

/// Payouts one group takes at most.
pub const GROUP_SAGAS_MAX: usize = 256;
/// How long the completion of a group waits for one more rail answer before it commits what it
/// has: rails that answer together complete together; a slow one does not hold up the others.
const ANSWERS_GATHER: std::time::Duration = std::time::Duration::from_millis(2);

/// How a group moves its payouts' rows in one statement: from which state, what it sets
/// (`v.column2` ... are a row's values after its payout id, `$2` ... the statement's parameters)
/// and the types of a row's values (the id first).
struct PayoutsUpdate {
    from: State,
    set: &'static str,
    types: &'static [&'static str],
    /// The rows were claimed in this transaction by [`Engine::claim_many`]. That claim only reads
    /// (and on PostgreSQL locks) them, the lease's conditions checked, no lease written, so this statement
    /// does not ask for the lease again: it writes it (`set` names the owner, the parameter after
    /// `types`' row values and the statement's others).
    claimed_here: bool,
}

/// A member's intent, reserved and assessed (rows: id, leg, route, reservation, risk; `$2` now,
/// `$3` the lease's end, `$4` its owner): the single path's `accepted` → `submitting`.
const ACCEPTED_TO_SUBMITTING: PayoutsUpdate = PayoutsUpdate {
    from: State::Accepted,
    set: "state = 'submitting', leg = v.column2, route = v.column3, reservation = v.column4, risk = v.column5, \
          reason = NULL, inquiries = 0, next_action_at = $2, in_doubt_since = NULL, lease_owner = $4, \
          lease_until = $3, updated_at = $2",
    types: &["TEXT", "BIGINT", "TEXT", "TEXT", "TEXT"],
    claimed_here: true,
};

/// A payout no route exists for (rows: id, reason, risk; `$2` now), its lease let go.
const UNROUTABLE_TO_FAILED: PayoutsUpdate = PayoutsUpdate {
    from: State::Accepted,
    set: "state = 'failed', reason = v.column2, risk = v.column3, inquiries = 0, next_action_at = $2, \
          in_doubt_since = NULL, lease_owner = NULL, lease_until = 0, updated_at = $2",
    types: &["TEXT", "TEXT", "TEXT"],
    claimed_here: true,
};

/// A payout whose one rail leg executed (rows: id, legs passed, route with the execution; `$2`
/// now), its lease let go.
const SUBMITTING_TO_COMPLETED: PayoutsUpdate = PayoutsUpdate {
    from: State::Submitting,
    set: "state = 'completed', leg = v.column2, route = v.column3, reason = NULL, inquiries = 0, \
          next_action_at = $2, in_doubt_since = NULL, lease_owner = NULL, lease_until = 0, updated_at = $2",
    types: &["TEXT", "BIGINT", "TEXT"],
    claimed_here: false,
};

/// One payout of a group, from routing on.
struct Member {
    payout: Payout,
    screening: Option<Vec<railyard_risk::Screening>>,
    route: StoredRoute,
    /// The route as the payout's row stores it (serialised before the group takes the writer).
    route_json: String,
    /// The index of the route's one rail leg (the last leg).
    rail: usize,
    assessment: Option<Assessment>,
}

/// A payout at the very start for which no route exists now: approved by risk, it fails in the
/// group's transaction exactly as the single path's `route` step fails it.
struct Unroutable {
    payout: Payout,
    screening: Option<Vec<railyard_risk::Screening>>,
    /// Why routing found nothing (the single path's "no route: ..." reason without its prefix).
    reason: String,
    assessment: Option<Assessment>,
}

/// What the group makes of a payout it can take.
enum Planned {
    Member(Member),
    Unroutable(Unroutable),
}

/// What `group_submit` leaves: payouts now `submitting`; payouts at rest, with their state (those
/// it failed for want of a route, and those it found at rest already); and those that run alone
/// (with `Some(error)` for those another engine holds).
struct SubmitSplit {
    submitted: Vec<Submitted>,
    resting: Vec<(String, State)>,
    alone: Vec<(String, Option<EngineError>)>,
}

/// A payout the group brought to `submitting`, on its way to the rail.
struct Submitted {
    /// The payout as it now stands (`submitting`, routed, reserved, assessed).
    payout: Payout,
    route: StoredRoute,
    rail: usize,
}

/// What happened to each payout of a group: the state its pass ended in, or why it did not run.
pub type GroupResults = Vec<(String, Result<State, EngineError>)>;

/// Scopes of the risk counters whose day-old buckets were removed in minute `bucket`.
#[derive(Default)]
pub(crate) struct Pruned {
    bucket: i64,
    scopes: std::collections::HashSet<String>,
}

/// Scopes remembered as pruned in one minute; past it the memory starts again (a scope pruned
/// twice in a minute costs a statement, nothing else).
const PRUNED_SCOPES_MAX: usize = 65_536;

impl Pruned {
    /// Those of `scopes` not pruned yet in minute `bucket`, now remembered as pruned.
    fn not_yet<'a>(&mut self, bucket: i64, scopes: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
        if self.bucket != bucket || self.scopes.len() > PRUNED_SCOPES_MAX {
            self.bucket = bucket;
            self.scopes.clear();
        }
        scopes.filter(|scope| self.scopes.insert((*scope).to_string())).collect()
    }
}

/// One event row: payout, state, detail.
pub(crate) type EventRow = (String, State, String);

impl Engine {
    /// Runs the sagas `ids` as far as they go now, the common ones together (see the module
    /// documentation), the others alone. Returns, per saga, the state its pass ended in.
    pub async fn run_group(&self, ids: &[String]) -> GroupResults {
        self.run_group_in_turn(ids, None).await
    }

    /// [`Engine::run_group`] holding `turn` until the group's submit transaction has committed
    /// (or failed): a driver that forms the next group only with a turn in hand lets payouts
    /// accepted meanwhile gather into it instead of each intake group becoming a submit group of
    /// its own (see [`crate::driver::SUBMITS_FORMING_MAX`]).
    pub async fn run_group_in_turn(
        &self,
        ids: &[String],
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> GroupResults {
        let mut results: GroupResults = Vec::with_capacity(ids.len());
        let SubmitSplit { submitted, resting, alone } = match self.group_submit(ids, turn).await {
            Ok(split) => split,
            Err(error @ EngineError::Crashed(_)) => {
                return ids.iter().map(|id| (id.clone(), Err(clone_crash(&error)))).collect();
            }
            Err(error) => {
                // Nothing of the group was kept: every saga runs alone instead.
                tracing::warn!("a group of {} sagas failed, running them one by one: {error}", ids.len());
                SubmitSplit {
                    submitted: Vec::new(),
                    resting: Vec::new(),
                    alone: ids.iter().map(|id| (id.clone(), None)).collect(),
                }
            }
        };
        results.extend(resting.into_iter().map(|(id, state)| (id, Ok(state))));
        let (grouped, crashed) = self.group_rails(submitted).await;
        results.extend(grouped);
        if let Some(error) = crashed {
            // The engine stopped: every saga of the group without an answer yet was cut off.
            let answered: BTreeSet<String> = results.iter().map(|(id, _)| id.clone()).collect();
            results.extend(
                ids.iter().filter(|id| !answered.contains(*id)).map(|id| (id.clone(), Err(clone_crash(&error)))),
            );
            return results;
        }
        // The rest alone, each on its own claim (already ours for those the group claimed).
        let singles = futures_util::stream::iter(alone)
            .map(|(id, leased)| async move {
                if let Some(error) = leased {
                    return (id, Err(error));
                }
                let state = self.run(&id).await;
                (id, state)
            })
            .buffer_unordered(if self.ordered_groups() { 1 } else { GROUP_SAGAS_MAX })
            .collect::<Vec<_>>()
            .await;
        results.extend(singles);
        results
    }

    /// Steps 1 and 2: the payouts that reached `submitting` together, those failed for want of a
    /// route, and the ids that run alone.
    async fn group_submit(
        &self,
        ids: &[String],
        turn: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Result<SubmitSplit, EngineError> {
        let mut alone: Vec<(String, Option<EngineError>)> = Vec::new();
        let mut resting = Vec::new();
        let mut planned = Vec::new();
        // The members the intake has just moved are kept as it wrote them (see
        // `Engine::remember_fresh`); the others are read.
        let mut found = self.take_fresh(ids);
        if found.len() < ids.len() {
            let missing: Vec<String> = ids.iter().filter(|id| !found.contains_key(*id)).cloned().collect();
            found.extend(self.payouts_by_id(&missing).await?);
        }
        for id in ids {
            let Some(payout) = found.get(id) else {
                alone.push((id.clone(), None));
                continue;
            };
            // Done before this pass (a second start of a saga that ran meanwhile): nothing to
            // do, and no claim and read on the writer to find that out alone.
            if payout.state.terminal() {
                resting.push((id.clone(), payout.state));
                continue;
            }
            match self.plan(payout.clone()) {
                Some(plan) => planned.push(plan),
                None => alone.push((id.clone(), None)),
            }
        }
        let split = |submitted, failed: Vec<(String, State)>, alone, mut resting: Vec<(String, State)>| {
            resting.extend(failed);
            SubmitSplit { submitted, resting, alone }
        };
        if planned.is_empty() {
            return Ok(split(Vec::new(), Vec::new(), alone, resting));
        }
        let now = self.clock.now();
        let now_micros = now.timestamp_micros();
        let mut tx = self.store.begin_step().await?;
        let subject_ids: Vec<&str> = planned.iter().map(|plan| planned_payout(plan).id.as_str()).collect();
        let claimed = self.claim_many(&mut tx, &subject_ids).await?;
        planned.retain(|plan| {
            let id = &planned_payout(plan).id;
            let ours = claimed.contains(id);
            if !ours {
                alone.push((id.clone(), Some(EngineError::Leased(id.clone()))));
            }
            ours
        });
        // Risk, in order: a payout the rules do not approve at once runs alone (and is assessed
        // there again, with its own hold, block or review).
        let subjects: Vec<(&Payout, &Option<Vec<railyard_risk::Screening>>)> = planned
            .iter()
            .map(|plan| match plan {
                Planned::Member(member) => (&member.payout, &member.screening),
                Planned::Unroutable(unroutable) => (&unroutable.payout, &unroutable.screening),
            })
            .collect();
        let assessments = self.assess_members(&mut tx, &subjects, now).await?;
        let mut approved = Vec::with_capacity(planned.len());
        let mut unroutable = Vec::new();
        for (plan, assessment) in planned.into_iter().zip(assessments) {
            if assessment.decision != Decision::Approve {
                alone.push((planned_payout(&plan).id.clone(), None));
                continue;
            }
            match plan {
                Planned::Member(mut member) => {
                    member.assessment = Some(assessment);
                    approved.push(member);
                }
                Planned::Unroutable(mut failing) => {
                    failing.assessment = Some(assessment);
                    unroutable.push(failing);
                }
            }
        }
        // Each rail's daily cap, for the group's legs on it together: where they would pass it,
        // they run alone (each then takes its share, or re-routes, as always).
        let today = usage::day_of(now);
        let mut per_rail: BTreeMap<(String, railyard_core::Currency), i64> = BTreeMap::new();
        for member in &approved {
            let leg = &member.route.legs[member.rail];
            *per_rail.entry((leg.operator.clone(), leg.send.currency())).or_default() += leg.send.minor_units();
        }
        let takes: Vec<(&str, railyard_core::Money, Option<railyard_core::Money>)> = per_rail
            .iter()
            .map(|((rail, currency), minor)| {
                (
                    rail.as_str(),
                    railyard_core::Money::from_minor(*minor, *currency),
                    self.routing.daily_cap(rail, *currency),
                )
            })
            .collect();
        let groups: Vec<Vec<GroupEntry>> = approved.iter().map(|member| self.submit_entries(member)).collect();
        // On PostgreSQL the journal head's row lock, which the rail caps and the ledger take and
        // every ledger writer waits for, is held from its taking to the commit: the members' rows
        // (payouts and events) are written first, as if each one books, and the caps and the
        // ledger come last (the risk counters stay after them: moving them too did not pay). Should
        // one not book (over a cap, short of balance: rare), the transaction goes back to before
        // those rows and takes the order below, which decides who books before writing.
        let mut booked_early = None;
        if self.store.dialect() == railyard_store::Dialect::Postgres && !approved.is_empty() {
            sqlx::query("SAVEPOINT members").execute(&mut *tx).await?;
            let written = self.write_submitting(&mut tx, &approved, now_micros).await?;
            let events: Vec<EventRow> = written.iter().flat_map(|(events, _)| events.iter().cloned()).collect();
            insert_events(&mut tx, &events, railyard_store::now_micros()).await?;
            let taken = usage::take_many(&mut tx, &takes, today).await?;
            let booked = taken.iter().all(|taken| *taken)
                && ledger::append_groups(&mut tx, &groups).await?.iter().all(Result::is_ok);
            if booked {
                sqlx::query("RELEASE SAVEPOINT members").execute(&mut *tx).await?;
                booked_early = Some(written);
            } else {
                sqlx::query("ROLLBACK TO SAVEPOINT members").execute(&mut *tx).await?;
                // A crash point of its own: the tests see which order a group took, and that a
                // crash after the rows were undone leaves nothing behind.
                self.crash("group_submit_rebook", Phase::BeforeCommit)?;
            }
        }
        let (members, written) = match booked_early {
            Some(written) => (approved, Some(written)),
            None => {
                let members = self.book_members(&mut tx, approved, &takes, groups, today, &mut alone).await?;
                if members.is_empty() && unroutable.is_empty() {
                    // Nothing moved (the caps of those that run alone were given back).
                    tx.commit().await?;
                    return Ok(split(Vec::new(), Vec::new(), alone, resting));
                }
                (members, None)
            }
        };
        let counted: Vec<&Payout> = members
            .iter()
            .map(|member| &member.payout)
            .chain(unroutable.iter().map(|failing| &failing.payout))
            .collect();
        self.write_counters(&mut tx, &counted, now_micros).await?;
        let mut events: Vec<EventRow> = Vec::new();
        let written = match written {
            Some(written) => written,
            None => {
                let written = self.write_submitting(&mut tx, &members, now_micros).await?;
                events.extend(written.iter().flat_map(|(row_events, _)| row_events.iter().cloned()));
                written
            }
        };
        let submitted: Vec<(Member, Payout)> =
            members.into_iter().zip(written).map(|(member, (_, payout))| (member, payout)).collect();
        let failed = self.write_unroutable(&mut tx, &unroutable, now_micros).await?;
        events.extend(failed.iter().flat_map(|(row_events, _)| row_events.iter().cloned()));
        insert_events(&mut tx, &events, railyard_store::now_micros()).await?;
        self.crash("group_submit", Phase::BeforeCommit)?;
        tx.commit().await?;
        // The next group may form now; this one's flush below does not need the writer.
        drop(turn);
        self.tell_submitted(&submitted);
        for (row_events, payout) in &failed {
            let mut from = State::Accepted;
            for (_, to, detail) in row_events {
                self.moved(&PayoutMoved { payout, from, to: *to, route: None, detail });
                from = *to;
            }
        }
        self.crash("group_submit", Phase::AfterCommit)?;
        // Nothing reaches a rail before its intent is durable, nor is anyone told of a failure.
        self.store.sync().await?;
        let submitted = submitted
            .into_iter()
            .map(|(member, payout)| Submitted { payout, route: member.route, rail: member.rail })
            .collect();
        let failed = failed.into_iter().map(|(_, payout)| (payout.id, State::Failed)).collect();
        Ok(split(submitted, failed, alone, resting))
    }

    /// Takes the rail caps of `approved` and books their money, whole or not at all each, in the
    /// order that decides before anything is written: a member over a rail's cap, or whose
    /// reservation the ledger refuses (short of balance or liquidity; its share of the cap goes
    /// back), is put in `alone`, where it fails or re-routes as it always does. Returns the
    /// members that booked.
    async fn book_members(
        &self,
        tx: &mut StepTransaction,
        approved: Vec<Member>,
        takes: &[(&str, railyard_core::Money, Option<railyard_core::Money>)],
        groups: Vec<Vec<GroupEntry>>,
        today: i64,
        alone: &mut Vec<(String, Option<EngineError>)>,
    ) -> Result<Vec<Member>, EngineError> {
        let taken = usage::take_many(tx, takes, today).await?;
        let over_cap: BTreeSet<(String, railyard_core::Currency)> = takes
            .iter()
            .zip(taken)
            .filter(|(_, taken)| !taken)
            .map(|((rail, total, _), _)| (rail.to_string(), total.currency()))
            .collect();
        let mut within = Vec::with_capacity(approved.len());
        let mut within_groups = Vec::with_capacity(approved.len());
        for (member, group) in approved.into_iter().zip(groups) {
            let leg = &member.route.legs[member.rail];
            if over_cap.contains(&(leg.operator.clone(), leg.send.currency())) {
                alone.push((member.payout.id.clone(), None));
            } else {
                within.push(member);
                within_groups.push(group);
            }
        }
        let booked = ledger::append_groups(tx, &within_groups).await?;
        let mut members = Vec::with_capacity(within.len());
        for (member, result) in within.into_iter().zip(booked) {
            if result.is_ok() {
                members.push(member);
                continue;
            }
            let leg = &member.route.legs[member.rail];
            usage::give_back(tx, &leg.operator, leg.send, today).await?;
            alone.push((member.payout.id.clone(), None));
        }
        Ok(members)
    }

    /// Fails payouts routing found nothing for: the single path's assessment (risk recorded,
    /// `screened: ...`) and its `route` step's failure (`no route: ...`, the `payout.failed`
    /// webhook, the lease let go), in one statement per table. Returns each one's events and
    /// its payout as it now stands.
    async fn write_unroutable(
        &self,
        tx: &mut StepTransaction,
        failing: &[Unroutable],
        now_micros: i64,
    ) -> Result<Vec<(Vec<EventRow>, Payout)>, EngineError> {
        if failing.is_empty() {
            return Ok(Vec::new());
        }
        let mut rows = Vec::with_capacity(failing.len());
        let mut written = Vec::with_capacity(failing.len());
        for unroutable in failing {
            let payout = &unroutable.payout;
            let assessment =
                unroutable.assessment.as_ref().ok_or_else(|| corrupt("a grouped payout without assessment"))?;
            let reason = format!("no route: {}", unroutable.reason);
            rows.push((payout.id.clone(), reason.clone(), serde_json::to_string(assessment).map_err(corrupt)?));
            let events = vec![
                (payout.id.clone(), State::Accepted, format!("screened: {}", assessment.summary())),
                (payout.id.clone(), State::Failed, reason.clone()),
            ];
            let mut now = payout.clone();
            now.state = State::Failed;
            now.reason = Some(reason);
            now.risk = Some(assessment.clone());
            now.inquiries = 0;
            now.next_action_at = now_micros;
            written.push((events, now));
        }
        self.update_payouts(
            tx,
            &UNROUTABLE_TO_FAILED,
            &rows,
            &[now_micros.into()],
            failing.iter().map(|unroutable| &unroutable.payout),
        )
        .await?;
        let webhooks: Vec<(&Payout, &'static str, String)> = written
            .iter()
            .map(|(_, payout)| (payout, "payout.failed", payout.reason.clone().unwrap_or_default()))
            .collect();
        insert_outbox(tx, &outbox_rows(&webhooks), railyard_store::now_micros()).await?;
        Ok(written)
    }

    /// Moves the payouts of `rows` (one row each, `expected` in the same order) as `update` says,
    /// each only while it is still in `update.from` and leased by this engine; `params` start with
    /// now (`$2`). A payout whose row was not updated (its state or lease moved) fails the whole
    /// transaction as `Leased`.
    async fn update_payouts<'p, T: bulk::Row>(
        &self,
        tx: &mut StepTransaction,
        update: &PayoutsUpdate,
        rows: &[T],
        params: &[bulk::Param<'_>],
        expected: impl Iterator<Item = &'p Payout>,
    ) -> Result<(), EngineError> {
        let dialect = self.store.dialect();
        let owner = params.len() + 2;
        // Rows this transaction claimed, their lease's conditions checked under its lock, are ours
        // until it ends; elsewhere the lease written earlier says so.
        let lease = if update.claimed_here && dialect == railyard_store::Dialect::Postgres {
            format!("${owner}::TEXT IS NOT NULL")
        } else if update.claimed_here {
            format!("${owner} IS NOT NULL")
        } else {
            format!("{} = ${owner}", bulk::unindexed(dialect, "payouts.lease_owner"))
        };
        let template = format!(
            "UPDATE payouts SET {} FROM ({{rows}}) AS v WHERE payouts.id = v.column1 AND {} = '{}' AND {lease}",
            update.set,
            bulk::unindexed(dialect, "payouts.state"),
            update.from.as_str(),
        );
        let mut bound = params.to_vec();
        bound.push(bulk::Param::Text(&self.settings.owner));
        // No row back per payout (each would be a hand-off from SQLite's worker thread): the
        // count says whether every one moved.
        if bulk::execute(tx, &template, update.types, rows, &bound).await? == rows.len() as u64 {
            return Ok(());
        }
        // One did not: name it (the rows this statement moved carry its time).
        let expected: Vec<&Payout> = expected.collect();
        let now = params.first().copied().ok_or_else(|| corrupt("update_payouts without its time"))?;
        let mut moved: BTreeSet<String> = BTreeSet::new();
        for chunk in expected.chunks(bulk::IN_MAX) {
            let ids = bulk::padded(&chunk.iter().map(|payout| payout.id.as_str()).collect::<Vec<_>>());
            let statement = AssertSqlSafe(format!(
                "SELECT id FROM payouts WHERE updated_at = $1 AND id IN ({})",
                bulk::placeholders(2, ids.len())
            ));
            let mut query = sqlx::query(statement);
            query = match now {
                bulk::Param::Int(now) => query.bind(now),
                _ => return Err(corrupt("update_payouts: its first parameter is not a time")),
            };
            for id in ids {
                query = query.bind(id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                moved.insert(row.try_get::<String, _>(0)?);
            }
        }
        let stuck = expected.iter().find(|payout| !moved.contains(&payout.id)).or(expected.first());
        Err(EngineError::Leased(stuck.map(|payout| payout.id.clone()).unwrap_or_default()))
    }

    /// Reads `ids` in one query (what is missing is left out).
    async fn payouts_by_id(&self, ids: &[String]) -> Result<HashMap<String, Payout>, EngineError> {
        let mut found = HashMap::with_capacity(ids.len());
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        for chunk in ids.chunks(bulk::IN_MAX) {
            let chunk = bulk::padded(chunk);
            let statement = AssertSqlSafe(format!(
                "SELECT {PAYOUT_COLUMNS} FROM payouts WHERE id IN ({})",
                bulk::placeholders(1, chunk.len())
            ));
            let mut query = sqlx::query(statement);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(self.store.pool()).await? {
                let payout = payout_from_row(&row)?;
                found.insert(payout.id.clone(), payout);
            }
        }
        Ok(found)
    }

    /// A payout the group can take: at the very start (accepted, unassessed, not from a quote,
    /// first attempt), screened, routed on a route whose one rail leg is the last, that rail up.
    /// Or one that fails for want of a route, in the group too.
    fn plan(&self, payout: Payout) -> Option<Planned> {
        let fresh = payout.state == State::Accepted
            && payout.risk.is_none()
            && payout.route.is_none()
            && payout.reservation.is_none()
            && payout.attempt == 0
            && payout.request.quote_id.is_none();
        // A list that failed to load holds every payout for review: that is the single path's.
        if !fresh || (self.config.risk.is_some() && self.sanctions.is_err()) {
            return None;
        }
        let screening = self.screen(&payout);
        let route = match self.find_route(&payout.request, &[]) {
            Ok(route) => route,
            Err(reason) => {
                return Some(Planned::Unroutable(Unroutable { payout, screening, reason, assessment: None }));
            }
        };
        let rail = route.legs.len().checked_sub(1)?;
        let shape = route.legs[rail].kind == "rail" && route.legs[..rail].iter().all(|leg| leg.kind == "fx");
        if !shape || !self.routing.rail_available(&route.legs[rail].operator) {
            return None;
        }
        let route_json = serde_json::to_string(&route).ok()?;
        Some(Planned::Member(Member { payout, screening, route, route_json, rail, assessment: None }))
    }

    /// Takes the leases of the payouts `ids` that are still where they were read, in one statement.
    ///
    /// The statement only reads the rows whose lease is free (on PostgreSQL it locks them: `FOR
    /// UPDATE` waits for and re-checks a row another transaction is changing, as an `UPDATE`
    /// would; SQLite's transaction holds the one write lock already): the group's move to
    /// `submitting` or `failed` in the same transaction writes the lease
    /// ([`PayoutsUpdate::claimed_here`]). A payout row is ~1.5 KB; an `UPDATE` here wrote a whole
    /// new version of it to the table and its WAL only for the next statement to write another. A
    /// claimed payout the group leaves to run alone holds no lease when the transaction ends and
    /// is claimed again, as every payout alone is.
    async fn claim_many(&self, tx: &mut StepTransaction, ids: &[&str]) -> Result<BTreeSet<String>, EngineError> {
        let now = self.clock.now_micros();
        let mut claimed = BTreeSet::new();
        let postgres = self.store.dialect() == railyard_store::Dialect::Postgres;
        for chunk in ids.chunks(bulk::IN_MAX) {
            let chunk = bulk::padded(chunk);
            // Still at the start, and its lease free or ours (`$1` the owner, `$2` the time).
            let free = "state = 'accepted' AND risk IS NULL AND route IS NULL \
                 AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until < $2 \
                 OR EXISTS (SELECT 1 FROM engines e WHERE e.owner = payouts.lease_owner AND e.alive_until < $2))";
            let ids = bulk::placeholders(3, chunk.len());
            // SQLite has no row locks, and needs none: its transaction holds the database's one
            // write lock from `BEGIN IMMEDIATE`, so no other writer can move these rows before the
            // commit. The ids come back as one row (a row each would be a hand-off each from
            // SQLite's worker thread); payout ids hold no space.
            let statement = if postgres {
                format!("SELECT id FROM payouts WHERE id IN ({ids}) AND {free} FOR UPDATE")
            } else {
                format!("SELECT group_concat(id, ' ') FROM payouts WHERE id IN ({ids}) AND {free}")
            };
            let mut query = sqlx::query(AssertSqlSafe(statement)).bind(&self.settings.owner).bind(now);
            for id in &chunk {
                query = query.bind(*id);
            }
            for row in query.fetch_all(&mut **tx).await? {
                if postgres {
                    claimed.insert(row.try_get::<String, _>(0)?);
                } else if let Some(ids) = row.try_get::<Option<String>, _>(0)? {
                    claimed.extend(ids.split(' ').map(str::to_string));
                }
            }
        }
        Ok(claimed)
    }

    /// Each member's assessment, in order, each against the counters as the approved members
    /// before it leave them (what committing them one by one would give).
    async fn assess_members(
        &self,
        tx: &mut StepTransaction,
        members: &[(&Payout, &Option<Vec<railyard_risk::Screening>>)],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<Assessment>, EngineError> {
        let Some(risk) = &self.config.risk else {
            return Ok(members.iter().map(|_| railyard_risk::unconfigured(now)).collect());
        };
        let bucket = now.timestamp_micros() / MINUTE_MICROS;
        let scopes: Vec<[(String, i64); 4]> = members.iter().map(|(payout, _)| counter_scopes(payout)).collect();
        // In one read: per scope, payouts in the last hour, payouts and amount in the last day;
        // each tenant's history per currency; which payout met each beneficiary account first.
        let mut tallies: HashMap<String, (u64, u64, i128)> = HashMap::new();
        let mut history: HashMap<(String, String), (u64, i128)> = HashMap::new();
        let mut first: HashMap<String, String> = HashMap::new();
        let distinct: BTreeSet<&str> = scopes.iter().flatten().map(|(scope, _)| scope.as_str()).collect();
        let tenants: BTreeSet<&str> = members.iter().map(|(payout, _)| payout.tenant.as_str()).collect();
        let tokens: BTreeSet<&str> =
            members.iter().map(|(payout, _)| payout.request.beneficiary.account.as_str()).collect();
        let keys: Vec<(&str, &str)> = distinct
            .iter()
            .map(|scope| ("s", *scope))
            .chain(tenants.iter().map(|tenant| ("t", *tenant)))
            .chain(tokens.iter().map(|token| ("b", *token)))
            .collect();
        let dialect = self.store.dialect();
        let template = format!(
            "WITH v AS ({{rows}}), s AS (SELECT column2 AS column1 FROM v WHERE column1 = 's'), \
             t AS (SELECT column2 AS column1 FROM v WHERE column1 = 't'), \
             b AS (SELECT column2 AS column1 FROM v WHERE column1 = 'b') \
             SELECT 's', scope, CAST(COALESCE(SUM(CASE WHEN bucket >= $2 THEN count ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(count), 0) AS BIGINT), CAST(COALESCE(SUM(amount), 0) AS BIGINT), CAST(NULL AS TEXT) \
             FROM risk_counters WHERE bucket >= $3 AND scope {} GROUP BY scope \
             UNION ALL SELECT 't', tenant, count, amount, CAST(0 AS BIGINT), currency FROM risk_history \
             WHERE tenant {} \
             UNION ALL SELECT 'b', token, CAST(0 AS BIGINT), CAST(0 AS BIGINT), CAST(0 AS BIGINT), first_payout \
             FROM vault WHERE token {}",
            bulk::in_rows(dialect, "s"),
            bulk::in_rows(dialect, "t"),
            bulk::in_rows(dialect, "b"),
        );
        let rows = bulk::fetch_all(
            tx,
            &template,
            &["TEXT", "TEXT"],
            &keys,
            &[(bucket - HOUR_BUCKETS + 1).into(), (bucket - DAY_BUCKETS + 1).into()],
        )
        .await?;
        let count = |row: &sqlx::any::AnyRow, column: usize| {
            row.try_get::<i64, _>(column).map(|value| u64::try_from(value).unwrap_or(0))
        };
        for row in rows {
            let key: String = row.try_get(1)?;
            match row.try_get::<String, _>(0)?.as_str() {
                "s" => {
                    tallies.insert(key, (count(&row, 2)?, count(&row, 3)?, i128::from(row.try_get::<i64, _>(4)?)));
                }
                "t" => {
                    let currency: String = row.try_get(5)?;
                    history.insert((key, currency), (count(&row, 2)?, i128::from(row.try_get::<i64, _>(3)?)));
                }
                _ => {
                    if let Some(payout) = row.try_get::<Option<String>, _>(5)? {
                        first.insert(key, payout);
                    }
                }
            }
        }
        let mut assessments = Vec::with_capacity(members.len());
        for ((payout, screening), scopes) in members.iter().zip(&scopes) {
            let request = &payout.request;
            let tally = |index: usize| tallies.get(&scopes[index].0).copied().unwrap_or_default();
            let key = (payout.tenant.clone(), request.amount.currency().code().to_string());
            let (history_count, history_sum) = history.get(&key).copied().unwrap_or_default();
            let facts = Facts {
                amount: request.amount,
                destination_country: request.beneficiary.country,
                history_count,
                history_sum,
                psp_last_hour: tally(0).0,
                psp_amount_today: tally(1).2,
                corridor_last_hour: tally(2).0,
                corridor_amount_today: tally(2).2,
                beneficiary_today: tally(3).1,
                new_beneficiary: first.get(&request.beneficiary.account) == Some(&payout.id),
            };
            let assessment = railyard_risk::assess(risk, (*screening).clone().unwrap_or_default(), &facts, now);
            if assessment.decision == Decision::Approve {
                for (scope, amount) in scopes {
                    let entry = tallies.entry(scope.clone()).or_default();
                    *entry = (entry.0 + 1, entry.1 + 1, entry.2 + i128::from(*amount));
                }
                let entry = history.entry(key).or_default();
                *entry = (entry.0 + 1, entry.1 + i128::from(request.amount.minor_units()));
            }
            assessments.push(assessment);
        }
        Ok(assessments)
    }

    /// A member's reservation of the PSP's amount and its rail leg's liquidity (the single path's
    /// `reserve` and `next_leg`).
    fn submit_entries(&self, member: &Member) -> Vec<GroupEntry> {
        let payout = &member.payout;
        let route = &member.route;
        let leg = &route.legs[member.rail];
        vec![
            GroupEntry {
                id: format!("{}:a{}:reserve", payout.id, payout.attempt),
                debit: psp_account(&payout.tenant, route.send.currency()),
                credit: clearing_account(route.send.currency()),
                amount: route.send,
                kind: GroupEntryKind::Pending,
                payout_id: Some(payout.id.clone()),
                note: "reserve the payout amount".into(),
            },
            GroupEntry {
                id: self.leg_key(payout, member.rail),
                debit: clearing_account(leg.send.currency()),
                credit: nostro_account(&leg.operator, leg.send.currency()),
                amount: leg.send,
                kind: GroupEntryKind::Pending,
                payout_id: Some(payout.id.clone()),
                note: format!("liquidity for leg {} on {}", member.rail, leg.operator),
            },
        ]
    }

    /// The payouts' risk counters and history, summed per scope and per tenant and currency.
    async fn write_counters(
        &self,
        tx: &mut StepTransaction,
        payouts: &[&Payout],
        now_micros: i64,
    ) -> Result<(), EngineError> {
        if self.config.risk.is_none() {
            return Ok(());
        }
        let bucket = now_micros / MINUTE_MICROS;
        let mut counters: BTreeMap<String, (i64, i64)> = BTreeMap::new();
        let mut history: BTreeMap<(String, String), (i64, i64)> = BTreeMap::new();
        for payout in payouts {
            for (scope, amount) in counter_scopes(payout) {
                let entry = counters.entry(scope).or_default();
                *entry = (entry.0 + 1, entry.1 + amount);
            }
            let request = &payout.request;
            let key = (payout.tenant.clone(), request.amount.currency().code().to_string());
            let entry = history.entry(key).or_default();
            *entry = (entry.0 + 1, entry.1 + request.amount.minor_units());
        }
        let counters: Vec<_> = counters.into_iter().collect();
        let values: Vec<(&str, i64, i64)> =
            counters.iter().map(|(scope, (count, amount))| (scope.as_str(), *count, *amount)).collect();
        bulk::execute(
            tx,
            "INSERT INTO risk_counters (scope, bucket, count, amount) \
             SELECT v.column1, $2, v.column2, v.column3 FROM ({rows}) AS v WHERE true \
             ON CONFLICT (scope, bucket) DO UPDATE SET count = risk_counters.count + excluded.count, \
             amount = risk_counters.amount + excluded.amount",
            &["TEXT", "BIGINT", "BIGINT"],
            &values,
            &[bucket.into()],
        )
        .await?;
        // Buckets older than a day go, for the scopes just counted, once a minute each (a bucket is
        // a minute: none ages out between two groups of one minute, and the counts read filter by
        // age anyway).
        let scopes: Vec<&str> = {
            let mut pruned = self.pruned.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            pruned.not_yet(bucket, counters.iter().map(|(scope, _)| scope.as_str()))
        };
        for chunk in scopes.chunks(bulk::IN_MAX) {
            let chunk = bulk::padded(chunk);
            let statement = AssertSqlSafe(format!(
                "DELETE FROM risk_counters WHERE bucket < $1 AND scope IN ({})",
                bulk::placeholders(2, chunk.len())
            ));
            let mut query = sqlx::query(statement).bind(bucket - DAY_BUCKETS);
            for scope in chunk {
                query = query.bind(scope);
            }
            query.execute(&mut **tx).await?;
        }
        let history: Vec<_> = history.into_iter().collect();
        let values: Vec<(&str, &str, i64, i64)> = history
            .iter()
            .map(|((tenant, currency), (count, amount))| (tenant.as_str(), currency.as_str(), *count, *amount))
            .collect();
        bulk::execute(
            tx,
            "INSERT INTO risk_history (tenant, currency, count, amount) {rows} \
             ON CONFLICT (tenant, currency) DO UPDATE SET count = risk_history.count + excluded.count, \
             amount = risk_history.amount + excluded.amount",
            &["TEXT", "TEXT", "BIGINT", "BIGINT"],
            &values,
            &[],
        )
        .await?;
        Ok(())
    }

    /// Moves the members to `submitting` (the single path's state, route, reservation and risk
    /// columns) in a few `UPDATE ... FROM (VALUES ...)` statements; a member whose row is no
    /// longer ours (state or lease moved) fails the group as `Leased`. Returns each member's
    /// events and its payout as it now stands, in order.
    async fn write_submitting(
        &self,
        tx: &mut StepTransaction,
        members: &[Member],
        now_micros: i64,
    ) -> Result<Vec<(Vec<EventRow>, Payout)>, EngineError> {
        // Per member: id, leg, route, reservation, risk.
        let mut rows = Vec::with_capacity(members.len());
        let mut written = Vec::with_capacity(members.len());
        for member in members {
            let payout = &member.payout;
            let route = &member.route;
            let assessment =
                member.assessment.as_ref().ok_or_else(|| corrupt("a grouped payout without assessment"))?;
            let reservation = format!("{}:a{}:reserve", payout.id, payout.attempt);
            let rail = i64::try_from(member.rail).map_err(corrupt)?;
            rows.push((
                payout.id.clone(),
                rail,
                member.route_json.clone(),
                reservation.clone(),
                serde_json::to_string(assessment).map_err(corrupt)?,
            ));
            let events = submit_events(payout, route, member.rail, assessment);
            let mut now = payout.clone();
            now.state = State::Submitting;
            now.leg = rail;
            now.route = Some(route.clone());
            now.reservation = Some(reservation);
            now.risk = Some(assessment.clone());
            now.reason = None;
            now.inquiries = 0;
            now.next_action_at = now_micros;
            written.push((events, now));
        }
        self.update_payouts(
            tx,
            &ACCEPTED_TO_SUBMITTING,
            &rows,
            &[now_micros.into(), self.lease_until().into()],
            members.iter().map(|member| &member.payout),
        )
        .await?;
        Ok(written)
    }

    /// Tells the observer (and the log) each change a grouped payout made on its way to
    /// `submitting`, as the single path does step by step.
    fn tell_submitted(&self, submitted: &[(Member, Payout)]) {
        for (member, _) in submitted {
            let Some(assessment) = &member.assessment else { continue };
            let events = submit_events(&member.payout, &member.route, member.rail, assessment);
            let mut from = State::Accepted;
            for (index, (_, to, detail)) in events.iter().enumerate() {
                let route = (index > 0).then_some(&member.route);
                self.moved(&PayoutMoved { payout: &member.payout, from, to: *to, route, detail });
                from = *to;
            }
        }
    }

    /// One committed change of a grouped payout: to the observer, and to the log in the payout's
    /// span.
    fn moved(&self, moved: &PayoutMoved<'_>) {
        if let Some(observer) = &self.observer {
            observer.payout_moved(moved);
        }
        let span = tracing::info_span!("payout", payout_id = %moved.payout.id, engine = %self.settings.owner);
        span.in_scope(|| {
            tracing::info!(from = moved.from.as_str(), to = moved.to.as_str(), grouped = true, "{}", moved.detail)
        });
    }

    /// Step 3 and 4: every member's rail call at once; those that executed are completed in
    /// groups as their answers come back, the others go on alone from their answer. Returns the
    /// results and the crash, if a crash hook stopped the engine.
    async fn group_rails(&self, submitted: Vec<Submitted>) -> (GroupResults, Option<EngineError>) {
        let mut results: GroupResults = Vec::with_capacity(submitted.len());
        // Every call starts on a task of its own before any answer is waited for: a call needs
        // nothing from this task (its account is read for all at once first), so handling one
        // answer never holds up another call, nor a connection another call took.
        let tokens: Vec<&str> = submitted
            .iter()
            .map(|member| member.payout.request.beneficiary.account.as_str())
            .filter(|account| account.starts_with("ben_"))
            .collect();
        let revealed = match railyard_store::vault::reveal_many(&self.store, &self.vault, &tokens).await {
            Ok(revealed) => revealed,
            Err(error) => {
                tracing::warn!("reading {} beneficiary accounts failed: {error}", tokens.len());
                HashMap::new()
            }
        };
        let mut calls = futures_util::stream::FuturesUnordered::new();
        for (order, member) in submitted.into_iter().enumerate() {
            let started = std::time::Instant::now();
            let stored = &member.payout.request.beneficiary.account;
            let account = match stored.starts_with("ben_") {
                true => revealed.get(stored).and_then(|account| account.as_ref().ok()).cloned(),
                false => Some(stored.clone()),
            };
            let leg = account.map(|account| self.leg_for(&member.payout, &member.route, member.rail, Some(account)));
            let call = match leg {
                Some(Ok(leg)) => self.spawn_submit(&member.route, member.rail, leg),
                _ => Err(LegOutcome::Unknown("cannot build the leg".into())),
            };
            calls.push(async move {
                let outcome = match call {
                    Ok(call) => leg_outcome(call.await),
                    Err(refused) => refused,
                };
                (order, member, outcome, started.elapsed())
            });
        }
        let ordered = self.ordered_groups();
        let mut crashed = None;
        while let Some(first) = calls.next().await {
            // Whatever else answers meanwhile completes in the same transaction: answers that come
            // within ANSWERS_GATHER of each other share one commit and one flush.
            let mut answered = vec![first];
            if ordered {
                while let Some(next) = calls.next().await {
                    answered.push(next);
                }
                answered.sort_by_key(|(order, ..)| *order);
            }
            while let Ok(Some(next)) = tokio::time::timeout(ANSWERS_GATHER, calls.next()).await {
                answered.push(next);
            }
            let mut executed = Vec::new();
            let mut other = Vec::new();
            for (_, member, outcome, elapsed) in answered {
                let operator = &member.route.legs[member.rail].operator;
                if let Some(observer) = &self.observer {
                    match &outcome {
                        LegOutcome::Executed(_) => observer.leg_outcome(operator, true, elapsed),
                        LegOutcome::Rejected(rejection) if !rejection.before_send => {
                            observer.leg_outcome(operator, false, elapsed)
                        }
                        _ => {}
                    }
                }
                if let Err(error) = self.crash("rail_call", Phase::AfterRailCall) {
                    crashed = Some(error);
                    break;
                }
                match outcome {
                    LegOutcome::Executed(execution) => executed.push((member, execution)),
                    outcome => other.push((member, outcome)),
                }
            }
            if crashed.is_some() {
                break;
            }
            if !executed.is_empty() {
                match self.group_complete(&executed).await {
                    Ok(()) => results
                        .extend(executed.iter().map(|(member, _)| (member.payout.id.clone(), Ok(State::Completed)))),
                    Err(error @ EngineError::Crashed(_)) => {
                        crashed = Some(error);
                        break;
                    }
                    Err(error) => {
                        // Nothing of the completion was kept: each goes on alone from its answer.
                        tracing::warn!(
                            "completing {} grouped payouts failed, one by one instead: {error}",
                            executed.len()
                        );
                        other.extend(
                            executed.into_iter().map(|(member, execution)| (member, LegOutcome::Executed(execution))),
                        );
                    }
                }
            }
            for (member, outcome) in other {
                let id = member.payout.id.clone();
                let result = match self.apply_outcome(&member.payout, &member.route, member.rail, outcome).await {
                    Ok(()) => self.run(&id).await,
                    Err(error) => Err(error),
                };
                if matches!(result, Err(EngineError::Crashed(_))) {
                    crashed = result.err();
                    break;
                }
                results.push((id, result));
            }
            if crashed.is_some() {
                break;
            }
        }
        (results, crashed)
    }

    /// Completes payouts whose one rail leg executed, in one transaction: the single path's
    /// `apply_outcome` (executed) and `complete`.
    async fn group_complete(&self, executed: &[(Submitted, railyard_connector::Execution)]) -> Result<(), EngineError> {
        let now_micros = self.clock.now_micros();
        // Everything the transaction writes is prepared before it takes the one writer.
        let mut groups = Vec::with_capacity(executed.len());
        for (member, _) in executed {
            groups.push(self.complete_entries(member)?);
        }
        let mut events: Vec<EventRow> = Vec::with_capacity(executed.len() * 2);
        let mut webhooks = Vec::with_capacity(executed.len());
        let mut finished = Vec::with_capacity(executed.len());
        // Per payout: id, legs passed, route.
        let mut rows: Vec<(String, i64, String)> = Vec::with_capacity(executed.len());
        for (member, execution) in executed {
            let payout = &member.payout;
            let mut route = member.route.clone();
            let operator = route.legs[member.rail].operator.clone();
            route.legs[member.rail].execution = Some(execution.clone());
            let delivered = route
                .legs
                .iter()
                .rev()
                .find_map(|leg| leg.execution.as_ref().map(|execution| execution.receive))
                .unwrap_or(route.receive);
            let legs = i64::try_from(route.legs.len()).map_err(corrupt)?;
            rows.push((payout.id.clone(), legs, serde_json::to_string(&route).map_err(corrupt)?));
            let executed_detail = format!("leg {} executed on {operator}: {}", member.rail, execution.reference);
            let completed_detail = format!("completed: delivered {delivered}");
            events.push((payout.id.clone(), State::Quoted, executed_detail.clone()));
            events.push((payout.id.clone(), State::Completed, completed_detail.clone()));
            webhooks.push((payout, "payout.completed", format!("delivered {delivered}")));
            finished.push((member, route, executed_detail, completed_detail));
        }
        // Event and outbox times are the wall clock's, as the single path's.
        let written_at = railyard_store::now_micros();
        let outbox = outbox_rows(&webhooks);
        let mut tx = self.store.begin_step().await?;
        // Each completed payout's row: state, legs passed, the route with its execution; a row no
        // longer ours (state or lease moved) fails the completion as `Leased`.
        self.update_payouts(
            &mut tx,
            &SUBMITTING_TO_COMPLETED,
            &rows,
            &[now_micros.into()],
            executed.iter().map(|(member, _)| &member.payout),
        )
        .await?;
        insert_events(&mut tx, &events, written_at).await?;
        insert_outbox(&mut tx, &outbox, written_at).await?;
        // The ledger last: on PostgreSQL the journal head's row lock, which every ledger writer
        // waits for, is held only from here to the commit.
        let booked = ledger::append_groups(&mut tx, &groups).await?;
        if let Some(Err(error)) = booked.into_iter().find(Result::is_err) {
            // A completion the ledger refuses is not the common case: leave it all to the single
            // path (this transaction is rolled back).
            return Err(error.into());
        }
        self.crash("group_complete", Phase::BeforeCommit)?;
        tx.commit().await?;
        for (member, route, executed_detail, completed_detail) in &finished {
            let payout = &member.payout;
            let route = Some(route);
            self.moved(&PayoutMoved {
                payout,
                from: State::Submitting,
                to: State::Quoted,
                route,
                detail: executed_detail,
            });
            self.moved(&PayoutMoved {
                payout,
                from: State::Quoted,
                to: State::Completed,
                route,
                detail: completed_detail,
            });
        }
        self.crash("group_complete", Phase::AfterCommit)?;
        // The pass is over: what it did is durable before anyone is told.
        self.store.sync().await?;
        Ok(())
    }

    /// A completion's ledger entries: the leg's liquidity posted, the reservation posted, each
    /// conversion booked with its provider (the single path's `apply_outcome` and `complete`).
    fn complete_entries(&self, member: &Submitted) -> Result<Vec<GroupEntry>, EngineError> {
        let payout = &member.payout;
        let route = &member.route;
        let leg = &route.legs[member.rail];
        let leg_key = self.leg_key(payout, member.rail);
        let reservation = payout.reservation.clone().ok_or_else(|| corrupt("completing without a reservation"))?;
        let mut entries = vec![
            GroupEntry {
                id: format!("{leg_key}:post"),
                debit: clearing_account(leg.send.currency()),
                credit: nostro_account(&leg.operator, leg.send.currency()),
                amount: leg.send,
                kind: GroupEntryKind::PostPending { pending_id: leg_key.clone() },
                payout_id: Some(payout.id.clone()),
                note: String::new(),
            },
            GroupEntry {
                id: format!("{reservation}:post"),
                debit: psp_account(&payout.tenant, route.send.currency()),
                credit: clearing_account(route.send.currency()),
                amount: route.send,
                kind: GroupEntryKind::PostPending { pending_id: reservation.clone() },
                payout_id: Some(payout.id.clone()),
                note: String::new(),
            },
        ];
        for (index, leg) in route.legs.iter().enumerate().filter(|(_, leg)| leg.kind != "rail") {
            let provider = &leg.operator;
            for (suffix, debit, credit, amount) in [
                ("give", clearing_account(leg.from), fx_account(provider, leg.from), leg.send),
                ("take", fx_account(provider, leg.to), clearing_account(leg.to), leg.receive),
            ] {
                entries.push(GroupEntry {
                    id: format!("{}:a{}-leg{index}:fx-{suffix}", payout.id, payout.attempt),
                    debit,
                    credit,
                    amount,
                    kind: GroupEntryKind::Posted,
                    payout_id: Some(payout.id.clone()),
                    note: format!("conversion by {provider}"),
                });
            }
        }
        Ok(entries)
    }
}

/// The events the single path writes from `accepted` to `submitting`, with the states they name.
fn submit_events(payout: &Payout, route: &StoredRoute, rail: usize, assessment: &Assessment) -> Vec<EventRow> {
    let id = &payout.id;
    let mut events = vec![
        (id.clone(), State::Accepted, format!("screened: {}", assessment.summary())),
        (
            id.clone(),
            State::Routed,
            format!("route via {}", route.legs.iter().map(|leg| leg.operator.as_str()).collect::<Vec<_>>().join(" → ")),
        ),
        (id.clone(), State::Reserved, format!("reserved {}", route.send)),
        (
            id.clone(),
            State::Quoted,
            match route.quotes_expire_at {
                Some(expiry) => format!("FX rates locked until {expiry}"),
                None => "no conversion".into(),
            },
        ),
    ];
    for (index, leg) in route.legs[..rail].iter().enumerate() {
        events.push((id.clone(), State::Quoted, format!("leg {index}: {} conversion", leg.operator)));
    }
    let leg = &route.legs[rail];
    events.push((id.clone(), State::Submitting, format!("submitting leg {rail} to {}", leg.operator)));
    events
}

/// The events, in multi-row inserts, a payout's consecutive events packed into one row (its last
/// state and detail, the ones before in `earlier`: see [`crate::payout_events`]). A payout's
/// events get consecutive microseconds, a packed row as many as it holds, so that reading them by
/// time keeps their order.
pub(crate) async fn insert_events(
    tx: &mut StepTransaction,
    events: &[EventRow],
    now_micros: i64,
) -> Result<(), sqlx::Error> {
    // Per packed row: its events, a run of one payout's consecutive events.
    let mut runs: Vec<&[EventRow]> = Vec::new();
    let mut start = 0;
    for index in 1..=events.len() {
        if index == events.len() || events[index].0 != events[start].0 {
            runs.push(&events[start..index]);
            start = index;
        }
    }
    let mut offsets: HashMap<&str, i64> = HashMap::new();
    let mut rows: Vec<(&str, i64, &'static str, &str, Option<String>)> = Vec::with_capacity(runs.len());
    for run in runs {
        let Some(((id, state, detail), earlier)) = run.split_last() else { continue };
        let offset = offsets.entry(id.as_str()).or_insert(0);
        // The row's time is its first state's; its last state's is `at` + the states before it.
        let at = now_micros + *offset;
        *offset += i64::try_from(run.len()).unwrap_or(i64::MAX);
        let earlier = (!earlier.is_empty()).then(|| {
            let pairs: Vec<(&str, &str)> =
                earlier.iter().map(|(_, state, detail)| (state.as_str(), detail.as_str())).collect();
            serde_json::to_string(&pairs).unwrap_or_else(|_| unreachable!("strings serialise"))
        });
        rows.push((id.as_str(), at, state.as_str(), detail.as_str(), earlier));
    }
    bulk::execute(
        tx,
        "INSERT INTO saga_events (payout_id, at, state, detail, earlier) {rows}",
        &["TEXT", "BIGINT", "TEXT", "TEXT", "TEXT"],
        &rows,
        &[],
    )
    .await?;
    Ok(())
}

/// Outbox rows for webhooks (the single path's `outbox`), from each payout's event and detail:
/// payout, event, body, tenant.
fn outbox_rows<'a>(webhooks: &[(&'a Payout, &'static str, String)]) -> Vec<(&'a str, &'static str, String, &'a str)> {
    let occurred_at = chrono::Utc::now().to_rfc3339();
    webhooks
        .iter()
        .map(|(payout, event, detail)| {
            let body = serde_json::json!({
                "event": event,
                "payout_id": payout.id,
                "status": event.strip_prefix("payout.").unwrap_or(event),
                "detail": detail,
                "occurred_at": occurred_at,
            });
            (payout.id.as_str(), *event, body.to_string(), payout.tenant.as_str())
        })
        .collect()
}

/// Writes [`outbox_rows`], each once per payout and event.
async fn insert_outbox(
    tx: &mut StepTransaction,
    rows: &[(&str, &'static str, String, &str)],
    now_micros: i64,
) -> Result<(), sqlx::Error> {
    bulk::execute(
        tx,
        "INSERT INTO outbox (payout_id, event, body, created_at, tenant) \
         SELECT v.column1, v.column2, v.column3, $2, v.column4 FROM ({rows}) AS v \
         WHERE true ON CONFLICT (payout_id, event) DO NOTHING",
        &["TEXT", "TEXT", "TEXT", "TEXT"],
        rows,
        &[now_micros.into()],
    )
    .await?;
    Ok(())
}

/// The payout a plan is about.
fn planned_payout(plan: &Planned) -> &Payout {
    match plan {
        Planned::Member(member) => &member.payout,
        Planned::Unroutable(unroutable) => &unroutable.payout,
    }
}

/// A crash is reported for every saga it stopped.
fn clone_crash(error: &EngineError) -> EngineError {
    match error {
        EngineError::Crashed(point) => EngineError::Crashed(*point),
        other => EngineError::Invalid(other.to_string()),
    }
}
