//! Group commit for accepting payouts: concurrent requests share one transaction and one disk
//! flush, so durability does not cap throughput.
//!
//! Requests wait in a bounded queue ([`INTAKE_QUEUE_MAX`]); a full queue is refused at once
//! ([`IntakeError::Overloaded`], which the API answers with 429 and Retry-After) instead of
//! growing memory. One writer task takes whatever is queued, up to [`GROUP_MAX`], commits it in one
//! transaction, and answers each request only after the commit returned.
//!
//! On an SQLite file whose commits are flushed (the default) that transaction is the intake
//! journal's ([`railyard_store::journal`]), a file of its own with a writer of its own, so a PSP's
//! 202 does not wait for the saga groups that hold the database's one writer. A mover task then
//! brings each group into the database ([`Engine::move_intents`]: idempotency record, vault row,
//! payout, first event) and hands the payouts to the saga driver; the intake forgets them from the
//! journal in its next group. Its queue is bounded in payouts ([`MOVES_QUEUED_PAYOUTS_MAX`]): when
//! the database falls behind, the intake waits, its own queue fills and new requests get 429. On
//! PostgreSQL (many writers) and on other SQLite stores the group goes straight into the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use railyard_store::idempotency::{self, Claim};
use railyard_store::journal::{Appended, Intent, Journal, NewIntent};
use tokio::sync::{mpsc, oneshot};

use crate::driver::Driver;
use crate::{Accepted, Engine, EngineError, Payout, PayoutRequest, Plain, Run, State};

/// Requests waiting for the writer. At ~1 KB each, 4 MB at most.
pub const INTAKE_QUEUE_MAX: usize = 4_096;
/// Most requests in one transaction: enough to amortise a flush, small enough that the first
/// request of a group does not wait long for the last.
pub const GROUP_MAX: usize = 256;
/// Payouts acknowledged in the journal and not yet moved into the database (queued for the mover
/// or in its hands): at most this many, ~4 MB. Counted in payouts, not groups: under load the
/// intake's groups are of a few payouts each (it answers as fast as the journal flushes), and a
/// bound of 16 groups left a few dozen payouts between a mover waiting for the database's writer
/// and a PSP waiting for its 202 (the intake stalled up to 40 ms; see BENCHMARKS.md).
pub const MOVES_QUEUED_PAYOUTS_MAX: usize = 4_096;
/// How long the mover waits before trying a group again after the database refused it.
pub const MOVE_RETRY_AFTER: Duration = Duration::from_millis(200);
/// How long the intake waits for a request before it forgets moved intents on its own.
const IDLE_FORGET_AFTER: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum IntakeError {
    #[error("the intake queue is full; retry later")]
    Overloaded,
    #[error("the intake writer stopped")]
    Stopped,

    #[error(transparent)]
    Engine(#[from] EngineError),
}

struct Request {
    tenant: String,
    key: String,
    payout: PayoutRequest,
    /// Prepared by the caller ([`Intake::accept_with_payout`] with a journal).
    prepared: Option<crate::Prepared>,
    /// The answer, with the payout as it now stands when it was accepted just now (so the
    /// caller need not read it back).
    reply: oneshot::Sender<(Answer, Option<Box<Payout>>)>,
}

/// The front door for payouts.
#[derive(Clone)]
pub struct Intake {
    sender: mpsc::Sender<Request>,
    /// With a journal: the engine that prepares each request (validation, sealing, fingerprint)
    /// on the caller's task, so the journal's writer does only the writing.
    preparer: Option<Arc<Engine>>,
    driver: Arc<std::sync::OnceLock<Driver>>,
    progress: Arc<Progress>,
}

/// Told how long each group's durable commit took: the journal's flushed append, or the
/// database's commit where there is no journal. What an accept waits for beside its place in the
/// queue; the server's monitor keeps it as a histogram, so an operator sees a slow disk as such.
pub type CommitObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Payouts acknowledged into the journal and moved into the database so far, whether what the
/// journal held at the start is counted yet, and who is told of each group's commit.
#[derive(Default)]
struct Progress {
    journaled: std::sync::atomic::AtomicU64,
    moved: std::sync::atomic::AtomicU64,
    /// The intents a previous run left in the journal are queued for the mover (and counted in
    /// `journaled`); at once where there is no journal.
    started: std::sync::atomic::AtomicBool,
    commits: std::sync::OnceLock<CommitObserver>,
}

impl Progress {
    fn committed(&self, elapsed: Duration) {
        if let Some(observer) = self.commits.get() {
            observer(elapsed);
        }
    }
}

type Answer = Result<Accepted, EngineError>;

impl Intake {
    /// Starts the writer task on the current runtime, with the default queue bound.
    pub fn start(engine: Arc<Engine>) -> Intake {
        Intake::start_with(engine, INTAKE_QUEUE_MAX)
    }

    /// Starts the writer task with a queue of `queue_max` requests (at least one).
    pub fn start_with(engine: Arc<Engine>, queue_max: usize) -> Intake {
        Intake::start_settling_on(engine, queue_max, None)
    }

    /// [`Intake::start_with`], moving what the journal acknowledged into the database on
    /// `settling` (by default the current runtime): the move is settling's work, and `railyard
    /// serve` runs it below the API's priority with the rest of it. The writer task, which
    /// answers the API, stays on the current runtime.
    pub fn start_settling_on(
        engine: Arc<Engine>,
        queue_max: usize,
        settling: Option<tokio::runtime::Handle>,
    ) -> Intake {
        let settling = settling.unwrap_or_else(tokio::runtime::Handle::current);
        let (sender, receiver) = mpsc::channel::<Request>(queue_max.max(1));
        let driver: Arc<std::sync::OnceLock<Driver>> = Arc::default();
        let kicks = driver.clone();
        let progress: Arc<Progress> = Arc::default();
        let counted = progress.clone();
        let preparer = engine.store().journal_path().map(|_| engine.clone());
        match engine.store().journal_path() {
            Some(path) => {
                tokio::spawn(async move {
                    let journal = match Journal::open(&path, railyard_store::Durability::Full, engine.store()).await {
                        Ok(journal) => journal,
                        Err(error) => {
                            let text = format!("the intake journal {} cannot be opened: {error}", path.display());
                            tracing::error!("{text}");
                            counted.started.store(true, std::sync::atomic::Ordering::SeqCst);
                            refuse_all(receiver, text).await;
                            return;
                        }
                    };
                    let _ = engine.journal.set(journal.clone());
                    let moved: Arc<Mutex<Vec<String>>> = Arc::default();
                    // Each queued group holds at least one payout's permit, so the channel
                    // never fills before the permits run out.
                    let (sender, queued) = mpsc::channel::<Move>(MOVES_QUEUED_PAYOUTS_MAX);
                    let moves =
                        Moves { sender, permits: Arc::new(tokio::sync::Semaphore::new(MOVES_QUEUED_PAYOUTS_MAX)) };
                    settling.spawn(mover(
                        engine.clone(),
                        journal.clone(),
                        queued,
                        moved.clone(),
                        kicks.clone(),
                        counted.clone(),
                    ));
                    // What a crash left acknowledged and unmoved goes first, in the order it came.
                    recover(&journal, &moves, &counted).await;
                    counted.started.store(true, std::sync::atomic::Ordering::SeqCst);
                    journaled(engine, journal, receiver, moves, moved, kicks, counted).await;
                });
            }
            None => {
                counted.started.store(true, std::sync::atomic::Ordering::SeqCst);
                tokio::spawn(direct(engine, receiver, kicks, counted));
            }
        }
        Intake { sender, driver, progress, preparer }
    }

    /// Waits until every payout acknowledged so far is in the database (moved from the journal),
    /// those a previous run left in the journal included, at most `within`; returns whether it is.
    pub async fn settled_within(&self, within: Duration) -> bool {
        use std::sync::atomic::Ordering;
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if self.progress.started.load(Ordering::SeqCst)
                && self.progress.moved.load(Ordering::SeqCst) >= self.progress.journaled.load(Ordering::SeqCst)
            {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Hands each newly accepted payout to `driver` as soon as its group is committed.
    pub fn with_driver(self, driver: Driver) -> Intake {
        let _ = self.driver.set(driver);
        self
    }

    /// Tells `observer` how long each group's durable commit takes from now on.
    pub fn with_commit_observer(self, observer: CommitObserver) -> Intake {
        let _ = self.progress.commits.set(observer);
        self
    }

    /// Requests waiting for the writer now.
    pub fn depth(&self) -> usize {
        self.sender.max_capacity().saturating_sub(self.sender.capacity())
    }

    /// Accepts a payout durably: returns once its group is committed.
    pub async fn accept(&self, tenant: &str, key: &str, payout: &PayoutRequest) -> Result<Accepted, IntakeError> {
        Ok(self.accept_with_payout(tenant, key, payout).await?.0)
    }

    /// [`Intake::accept`], with the payout as it stands when the intake knows it without a read
    /// (a payout accepted just now into the journal); `None` otherwise (read it with
    /// [`Engine::payout`]).
    pub async fn accept_with_payout(
        &self,
        tenant: &str,
        key: &str,
        payout: &PayoutRequest,
    ) -> Result<(Accepted, Option<Box<Payout>>), IntakeError> {
        let prepared = match &self.preparer {
            // Refused before it takes a place in the queue.
            Some(engine) => Some(engine.prepare(tenant, payout)?),
            None => None,
        };
        let (reply, answer) = oneshot::channel();
        let request = Request { tenant: tenant.into(), key: key.into(), payout: payout.clone(), prepared, reply };
        self.sender.try_send(request).map_err(|error| match error {
            mpsc::error::TrySendError::Full(_) => IntakeError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IntakeError::Stopped,
        })?;
        let (answer, payout) = answer.await.map_err(|_| IntakeError::Stopped)?;
        Ok((answer?, payout))
    }
}

/// Takes whatever is queued behind `first`, up to [`GROUP_MAX`].
fn gather(first: Request, receiver: &mut mpsc::Receiver<Request>) -> Vec<Request> {
    let mut group = Vec::with_capacity(GROUP_MAX);
    group.push(first);
    while group.len() < GROUP_MAX {
        match receiver.try_recv() {
            Ok(next) => group.push(next),
            Err(_) => break,
        }
    }
    group
}

/// Answers every request with `text` (the journal could not be opened: nothing can be accepted
/// durably, and accepting into the database beside a journal it cannot read would lose order).
async fn refuse_all(mut receiver: mpsc::Receiver<Request>, text: String) {
    while let Some(request) = receiver.recv().await {
        let _ = request.reply.send((Err(EngineError::Unavailable(text.clone())), None));
    }
}

/// Accepts each group straight into the database (PostgreSQL; SQLite in memory or unflushed).
async fn direct(
    engine: Arc<Engine>,
    mut receiver: mpsc::Receiver<Request>,
    kicks: Arc<std::sync::OnceLock<Driver>>,
    progress: Arc<Progress>,
) {
    while let Some(first) = receiver.recv().await {
        let mut group = gather(first, &mut receiver);
        let batch: Vec<(String, String, PayoutRequest)> =
            group.iter().map(|request| (request.tenant.clone(), request.key.clone(), request.payout.clone())).collect();
        let started = std::time::Instant::now();
        match engine.accept_batch(&batch).await {
            Ok(answers) => {
                progress.committed(started.elapsed());
                if let Some(driver) = kicks.get() {
                    for accepted in answers.iter().flatten().filter(|accepted| !accepted.replay) {
                        driver.kick(&accepted.payout_id);
                    }
                }
                for (request, answer) in group.drain(..).zip(answers) {
                    let _ = request.reply.send((answer, None));
                }
            }
            Err(error) => {
                let text = error.to_string();
                for request in group.drain(..) {
                    // Nothing of the group is acknowledged; a retry under the same
                    // Idempotency-Key is answered whether or not the group was kept.
                    let _ = request.reply.send((Err(EngineError::Unavailable(text.clone())), None));
                }
            }
        }
    }
}

/// Queues for the mover every intent the journal holds (a crash left them acknowledged and not
/// moved, or moved and not forgotten), oldest first.
async fn recover(journal: &Journal, moves: &Moves, progress: &Progress) {
    let mut after = 0;
    loop {
        let page = match journal.pending(after).await {
            Ok(page) => page,
            Err(error) => {
                tracing::error!("reading the intake journal failed, retrying: {error}");
                tokio::time::sleep(MOVE_RETRY_AFTER).await;
                continue;
            }
        };
        let Some(last) = page.last() else { return };
        after = last.seq;
        tracing::info!(intents = page.len(), "moving acknowledged payouts from the intake journal");
        if !queue_moves(moves, progress, page).await {
            return;
        }
    }
}

/// The writer of the journal: claims each group's keys, writes its intents, flushes, answers,
/// and queues the new intents for the mover.
async fn journaled(
    engine: Arc<Engine>,
    journal: Journal,
    mut receiver: mpsc::Receiver<Request>,
    moves: Moves,
    moved: Arc<Mutex<Vec<String>>>,
    kicks: Arc<std::sync::OnceLock<Driver>>,
    progress: Arc<Progress>,
) {
    let take_moved = || std::mem::take(&mut *moved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()));
    let give_back = |ids: Vec<String>| moved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(ids);
    loop {
        let first = match tokio::time::timeout(IDLE_FORGET_AFTER, receiver.recv()).await {
            Ok(Some(first)) => first,
            Ok(None) => return,
            Err(_) => {
                // Quiet: forget what was moved meanwhile, so the journal stays short.
                let ids = take_moved();
                if let Err(error) = journal.forget(&ids).await {
                    tracing::warn!("forgetting moved intents failed (kept for later): {error}");
                    give_back(ids);
                }
                continue;
            }
        };
        let mut group = gather(first, &mut receiver);
        let mut answers: Vec<Option<Answer>> = (0..group.len()).map(|_| None).collect();
        let mut payouts: Vec<Option<Box<Payout>>> = (0..group.len()).map(|_| None).collect();
        let mut plains: Vec<(usize, Plain)> = Vec::with_capacity(group.len());
        let mut quoted: Vec<usize> = Vec::new();
        for (index, request) in group.iter_mut().enumerate() {
            let prepared = match request.prepared.take() {
                Some(prepared) => Ok(prepared),
                None => engine.prepare(&request.tenant, &request.payout),
            };
            match prepared {
                Ok(Some(plain)) => plains.push((index, plain)),
                Ok(None) => quoted.push(index),
                Err(error) => answers[index] = Some(Err(error)),
            }
        }
        let mut failed = false;
        let started = std::time::Instant::now();
        let intents = match engine.journal_group(&journal, &group, &plains, &mut answers, &mut payouts).await {
            Ok(intents) => {
                if !plains.is_empty() {
                    progress.committed(started.elapsed());
                }
                intents
            }
            Err(error) => {
                failed = true;
                let text = error.to_string();
                for (index, _) in &plains {
                    // Nothing of the group is acknowledged; a retry under the same
                    // Idempotency-Key is answered whether or not the group was kept.
                    answers[*index] = Some(Err(EngineError::Unavailable(text.clone())));
                }
                Vec::new()
            }
        };
        // A request against a quote reads and uses its quote in the database: it is accepted
        // there, once the journal has been asked for its key (this task claims every key).
        for index in quoted {
            let request = &group[index];
            let answer = engine.accept_quoted(&journal, &request.tenant, &request.key, &request.payout).await;
            if let (Ok(accepted), Some(driver)) = (&answer, kicks.get())
                && !accepted.replay
            {
                driver.kick(&accepted.payout_id);
            }
            answers[index] = Some(answer);
        }
        for ((request, answer), payout) in group.into_iter().zip(answers).zip(payouts) {
            let answer = answer.unwrap_or_else(|| Err(crate::corrupt("a request of the group was not answered")));
            let _ = request.reply.send((answer, payout));
        }
        if failed {
            // The group's intents may have been written before the error (its insert commits on
            // its own): whatever the journal holds goes to the mover again, so none waits for the
            // next start (moving twice finds the first move).
            recover(&journal, &moves, &progress).await;
        }
        // Forgetting waits until a group's worth was moved (or the intake is quiet): a statement
        // of its own, after the answers, never in front of one.
        if moved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len() >= GROUP_MAX {
            let ids = take_moved();
            if let Err(error) = journal.forget(&ids).await {
                tracing::warn!("forgetting moved intents failed (kept for later): {error}");
                give_back(ids);
            }
        }
        if intents.is_empty() {
            continue;
        }
        if !queue_moves(&moves, &progress, intents).await {
            return;
        }
    }
}

/// Brings journal groups into the database, oldest first, several at a time when they queue;
/// tells the driver and the intake which payouts are now in the database.
async fn mover(
    engine: Arc<Engine>,
    journal: Journal,
    mut queued: mpsc::Receiver<Move>,
    moved: Arc<Mutex<Vec<String>>>,
    kicks: Arc<std::sync::OnceLock<Driver>>,
    progress: Arc<Progress>,
) {
    while let Some(Move { intents: mut batch, permit }) = queued.recv().await {
        // Given back once the batch is in the database (or left to the next start).
        let mut permits = vec![permit];
        while batch.len() < GROUP_MAX {
            match queued.try_recv() {
                Ok(more) => {
                    batch.extend(more.intents);
                    permits.push(more.permit);
                }
                Err(_) => break,
            }
        }
        // From here the scan leaves the batch's payouts to their kicks (see Driver::expect_kicks).
        let driver = kicks.get();
        if let Some(driver) = driver {
            driver.expect_kicks(batch.iter().map(|intent| intent.payout_id.as_str()));
        }
        let ids = loop {
            match engine.move_intents(&batch).await {
                Ok(ids) => break Some(ids),
                // Every move crashes (tests only): what the engine acknowledged stays in the
                // journal for the next start, as after a crash between the two commits.
                Err(EngineError::Crashed(_)) => break None,
                Err(error) => {
                    tracing::warn!(
                        intents = batch.len(),
                        "moving acknowledged payouts into the database failed, retrying: {error}"
                    );
                    tokio::time::sleep(MOVE_RETRY_AFTER).await;
                }
            }
        };
        if let Some(driver) = driver {
            let moved: std::collections::HashSet<&str> = ids.iter().flatten().map(String::as_str).collect();
            driver.forget_kicks(batch.iter().map(|intent| intent.payout_id.as_str()).filter(|id| !moved.contains(id)));
        }
        drop(permits);
        let Some(ids) = ids else { continue };
        if let Some(driver) = driver {
            // Their first pass plans them from these copies instead of reading them back.
            let moved: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
            engine.remember_fresh(
                batch
                    .iter()
                    .filter(|intent| moved.contains(intent.payout_id.as_str()))
                    .filter_map(|intent| intent_payout(intent.clone()).ok()),
            );
            for id in &ids {
                driver.kick(id);
            }
        }
        moved.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).extend(ids);
        // Counted as the batch, not the ids: an intent left in the journal (logged above) must not
        // keep `settled_within` waiting for ever.
        progress.moved.fetch_add(batch.len() as u64, std::sync::atomic::Ordering::SeqCst);
    }
    drop(journal);
}

impl Engine {
    /// Claims the keys of `plains` (requests of `group`) and writes their intents to `journal`
    /// (one flushed statement); fills `answers`
    /// and returns the new intents, for the mover. A key the database holds already is answered
    /// from there (a replay or a conflict), as [`idempotency::claim_many`] would.
    async fn journal_group(
        &self,
        journal: &Journal,
        group: &[Request],
        plains: &[(usize, Plain)],
        answers: &mut [Option<Answer>],
        payouts: &mut [Option<Box<Payout>>],
    ) -> Result<Vec<Intent>, EngineError> {
        if plains.is_empty() {
            return Ok(Vec::new());
        }
        fn new_intent<'a>(group: &'a [Request], (index, plain): &'a (usize, Plain)) -> NewIntent<'a> {
            NewIntent {
                tenant: &group[*index].tenant,
                key: &group[*index].key,
                request_hash: &plain.hash,
                payout_id: &plain.payout_id,
                request: &plain.json,
                submitted_by: plain.submitted_by.as_deref(),
                sealed: &plain.sealed,
            }
        }
        let accepted_at = self.clock.now_micros();
        // Nearly always every key is new: one statement checks the database's records and writes
        // the batch. Otherwise the keys are looked up in the database first (those it holds are
        // answered from there), then the rest claimed in the journal, which finds what the first
        // statement wrote as this batch's own.
        let all: Vec<NewIntent<'_>> = plains.iter().map(|item| new_intent(group, item)).collect();
        let (fresh, appended) = match journal.append_if_new(&all, accepted_at).await? {
            Some(appended) => (plains.iter().collect::<Vec<_>>(), appended),
            None => {
                let claims: Vec<idempotency::ClaimRequest<'_>> = plains
                    .iter()
                    .map(|(index, plain)| idempotency::ClaimRequest {
                        tenant: &group[*index].tenant,
                        key: &group[*index].key,
                        request_hash: &plain.hash,
                        resource_id: &plain.payout_id,
                    })
                    .collect();
                let mut connection = self.store.pool().acquire().await?;
                let known = idempotency::lookup_many(&mut connection, &claims).await?;
                drop(connection);
                let mut fresh: Vec<&(usize, Plain)> = Vec::with_capacity(plains.len());
                for (item, known) in plains.iter().zip(known) {
                    match known {
                        None => fresh.push(item),
                        Some(claim) => answers[item.0] = Some(answer_of(claim)),
                    }
                }
                let new: Vec<NewIntent<'_>> = fresh.iter().map(|item| new_intent(group, item)).collect();
                let appended = journal.append(&new, accepted_at).await?;
                (fresh, appended)
            }
        };
        let mut intents = Vec::with_capacity(fresh.len());
        for ((index, plain), appended) in fresh.into_iter().zip(appended) {
            answers[*index] = Some(match appended {
                Appended::New => {
                    let request = &group[*index];
                    let mut stored = request.payout.clone();
                    stored.beneficiary.account = plain.sealed.token.clone();
                    stored.account_masked = Some(plain.sealed.masked.clone());
                    stored.submitted_by = plain.submitted_by.clone();
                    payouts[*index] = Some(Box::new(accepted_payout(
                        &plain.payout_id,
                        &request.tenant,
                        &request.key,
                        stored,
                        accepted_at,
                    )));
                    intents.push(Intent {
                        seq: 0,
                        tenant: request.tenant.clone(),
                        key: request.key.clone(),
                        request_hash: plain.hash.clone(),
                        payout_id: plain.payout_id.clone(),
                        request: plain.json.clone(),
                        submitted_by: plain.submitted_by.clone(),
                        sealed: plain.sealed.clone(),
                        accepted_at,
                    });
                    Ok(Accepted { payout_id: plain.payout_id.clone(), replay: false })
                }
                Appended::Existing { payout_id, same_request: true } => Ok(Accepted { payout_id, replay: true }),
                Appended::Existing { payout_id, same_request: false } => Err(EngineError::Conflict(payout_id)),
            });
        }
        for accepted in answers.iter().flatten().flatten() {
            tracing::info!(payout_id = %accepted.payout_id, replay = accepted.replay, "accepted");
        }
        Ok(intents)
    }

    /// A request against a quote, beside a journal: its key answered from the journal if the
    /// journal holds it, otherwise accepted into the database as [`Engine::accept`] does.
    async fn accept_quoted(&self, journal: &Journal, tenant: &str, key: &str, request: &PayoutRequest) -> Answer {
        self.validate(tenant, request)?;
        if let Some(intent) = journal.by_key(tenant, key).await? {
            let mut stored = request.clone();
            stored.beneficiary.account = self.vault.token(tenant, &request.beneficiary.account);
            stored.account_masked = Some(railyard_store::vault::mask(&request.beneficiary.account));
            return if stored.fingerprint() == intent.request_hash {
                Ok(Accepted { payout_id: intent.payout_id, replay: true })
            } else {
                Err(EngineError::Conflict(intent.payout_id))
            };
        }
        self.accept(tenant, key, request).await
    }

    /// Moves acknowledged intents into the database in one transaction, made durable before it
    /// returns: each one's idempotency record, vault row, payout and first event, as
    /// [`Engine::accept_batch`] writes them, under the payout id and acceptance time the journal
    /// gave. Returns the payouts the database now holds (moved now or before: moving again
    /// finds the key claimed by the same payout). An intent whose key the database gives to
    /// another payout is logged and left in the journal; it cannot happen while one intake
    /// claims every key.
    pub async fn move_intents(&self, intents: &[Intent]) -> Result<Vec<String>, EngineError> {
        let plains: Vec<Plain> = intents
            .iter()
            .map(|intent| Plain {
                payout_id: intent.payout_id.clone(),
                json: intent.request.clone(),
                hash: intent.request_hash.clone(),
                sealed: intent.sealed.clone(),
                submitted_by: intent.submitted_by.clone(),
            })
            .collect();
        let run: Vec<Run<'_>> = intents
            .iter()
            .zip(&plains)
            .enumerate()
            .map(|(index, (intent, plain))| Run {
                index,
                tenant: &intent.tenant,
                key: &intent.key,
                plain,
                accepted_at: Some(intent.accepted_at),
            })
            .collect();
        let mut answers: Vec<Option<Answer>> = (0..intents.len()).map(|_| None).collect();
        let mut tx = self.store.begin_urgent().await?;
        self.accept_run(&mut tx, &run, &mut answers).await?;
        self.crash("move_intents", crate::Phase::BeforeCommit)?;
        tx.commit().await?;
        self.store.sync().await?;
        let mut moved = Vec::with_capacity(intents.len());
        for (intent, answer) in intents.iter().zip(answers) {
            match answer {
                Some(Ok(accepted)) if accepted.payout_id == intent.payout_id => moved.push(accepted.payout_id),
                other => tracing::error!(
                    payout_id = %intent.payout_id,
                    tenant = %intent.tenant,
                    key = %intent.key,
                    "an acknowledged payout's key is held by another payout in the database; left in the intake journal: {other:?}"
                ),
            }
        }
        Ok(moved)
    }
}

/// A payout as accepting it leaves it, before any step: `request` as stored (the account
/// tokenised).
pub(crate) fn accepted_payout(id: &str, tenant: &str, key: &str, request: PayoutRequest, accepted_at: i64) -> Payout {
    Payout {
        id: id.into(),
        tenant: tenant.into(),
        idempotency_key: key.into(),
        request,
        state: State::Accepted,
        attempt: 0,
        leg: 0,
        route: None,
        reservation: None,
        reason: None,
        inquiries: 0,
        next_action_at: accepted_at,
        created_at: accepted_at,
        risk: None,
        decided_by: None,
    }
}

/// The payout an intent still in the journal stands for: `accepted`.
pub(crate) fn intent_payout(intent: Intent) -> Result<Payout, EngineError> {
    let mut request: PayoutRequest = serde_json::from_str(&intent.request).map_err(crate::corrupt)?;
    request.submitted_by = intent.submitted_by;
    Ok(accepted_payout(&intent.payout_id, &intent.tenant, &intent.key, request, intent.accepted_at))
}

/// Counts `intents` as acknowledged and queues them for the mover; false once the mover is gone.
async fn queue_moves(moves: &Moves, progress: &Progress, intents: Vec<Intent>) -> bool {
    progress.journaled.fetch_add(intents.len() as u64, std::sync::atomic::Ordering::SeqCst);
    // A page or group is at most a few hundred intents; more than the bound could never be queued.
    let wanted = u32::try_from(intents.len().clamp(1, MOVES_QUEUED_PAYOUTS_MAX)).unwrap_or(u32::MAX);
    let Ok(permit) = moves.permits.clone().acquire_many_owned(wanted).await else { return false };
    moves.sender.send(Move { intents, permit }).await.is_ok()
}

/// Intents on their way to the mover, with their places under [`MOVES_QUEUED_PAYOUTS_MAX`].
struct Move {
    intents: Vec<Intent>,
    permit: tokio::sync::OwnedSemaphorePermit,
}

/// The mover's queue: a place per payout, taken before a group is queued.
#[derive(Clone)]
struct Moves {
    sender: mpsc::Sender<Move>,
    permits: Arc<tokio::sync::Semaphore>,
}

fn answer_of(claim: Claim) -> Answer {
    match claim {
        Claim::New => Err(crate::corrupt("a key looked up was reported new")),
        Claim::Replay(record) | Claim::InProgress(record) => {
            Ok(Accepted { payout_id: record.resource_id, replay: true })
        }
        Claim::Conflict(record) => Err(EngineError::Conflict(record.resource_id)),
    }
}
