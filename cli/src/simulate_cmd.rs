//! `railyard simulate`: drives a running Railyard through its HTTP API with a realistic mix and
//! reports throughput, latencies, route shares and outcomes.
//!
//! The client behaves as a careful PSP would: one Idempotency-Key per payout, some submissions
//! repeated with the same key, and a shed request (429 or 503) retried after its Retry-After, at
//! most [`RETRIES_MAX`] times.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

#[derive(Args)]
pub struct SimulateArgs {
    /// The Railyard to drive.
    #[arg(long, default_value = "http://127.0.0.1:8080", conflicts_with = "in_process")]
    target: String,
    /// Run Railyard inside this process instead (what `railyard serve` runs: demo configuration,
    /// in-process sandbox rails, a fresh SQLite database in a temporary directory, removed
    /// afterwards) and drive it over loopback HTTP.
    #[arg(long)]
    in_process: bool,
    /// API keys (psp scope), comma-separated: payouts go round-robin across these PSPs.
    /// Default: the demo's three PSPs.
    #[arg(long, default_value = "rk_demo_psp,rk_demo_psp_north,rk_demo_psp_south")]
    api_key: String,
    /// A sandbox fault plan (JSON, as for `railyard sandbox --faults`) applied to every rail of
    /// the target for the run, through `PUT /v1/sandbox/rails/{rail}/faults`; cleared afterwards.
    #[arg(long)]
    faults: Option<std::path::PathBuf>,
    /// Admin key for `--faults`.
    #[arg(long, default_value = "rk_demo_admin")]
    admin_key: String,
    /// Payouts to submit.
    #[arg(long, default_value_t = 200)]
    payouts: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: start submissions at this many per second whatever the answers (accept latency
    /// is then counted from each submission's scheduled start, or from when it left if that was
    /// earlier, so a slow answer that delays the next one is not hidden). Default: closed loop,
    /// as fast as --concurrency allows.
    #[arg(long)]
    rate: Option<f64>,
    /// Share of cross-currency payouts, per mille.
    #[arg(long, default_value_t = 500)]
    cross_currency_permille: u32,
    /// Share of submissions repeated with the same Idempotency-Key, per mille.
    #[arg(long, default_value_t = 50)]
    duplicate_permille: u32,
    /// Median payout amount in the source currency's major unit: amounts are log-normal around
    /// it (most payouts small, a long tail of large ones), between 1.00 and 10,000.00.
    #[arg(long, default_value_t = 200)]
    amount_median: u64,
    /// Spread of the amounts: the standard deviation of their natural logarithm, in thousandths
    /// (1000 = sigma 1.0: two thirds of payouts within a factor e of the median).
    #[arg(long, default_value_t = 1000)]
    amount_sigma_milli: u32,
    /// Seed for the mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How long to wait for every payout to come to rest.
    #[arg(long, default_value_t = 120)]
    settle_seconds: u64,
    #[arg(long)]
    json: bool,
}

/// `--in-process`: starts `railyard serve` on a fresh SQLite database inside this process, drives
/// it, stops it.
async fn in_process(args: SimulateArgs) -> anyhow::Result<Value> {
    let mut report = with_railyard(&[], |target, _db| {
        let mut args = args;
        args.target = target;
        simulate(args)
    })
    .await?;
    report["in_process"] = Value::Bool(true);
    Ok(report)
}

/// Runs `railyard serve` (demo configuration, in-process sandbox rails, a fresh SQLite database in
/// a temporary directory, removed afterwards) inside this process while `drive` runs against its
/// address (and the database's URL). `flags` are more of `railyard serve`'s flags.
async fn with_railyard<F, Fut>(flags: &[String], drive: F) -> anyhow::Result<Value>
where
    F: FnOnce(String, String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    use clap::Parser;
    #[derive(Parser)]
    struct Embedded {
        #[command(flatten)]
        serve: crate::serve_cmd::ServeArgs,
    }
    let directory = std::env::temp_dir().join(format!("railyard-simulate-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let db = format!("sqlite:{}", directory.join("railyard.db").display());
    let serve = Embedded::try_parse_from(
        ["serve", "--db", &db, "--listen", "127.0.0.1:0", "--rate-limit", "1000000"]
            .into_iter()
            .chain(flags.iter().map(String::as_str)),
    )?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (listening, address) = tokio::sync::oneshot::channel();
    // The server runs on a runtime of its own, as it would in a process of its own: the client's
    // tasks do not queue in its schedulers, only for the cores.
    let (done, server) = tokio::sync::oneshot::channel::<anyhow::Result<()>>();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("railyard-serve").build()?;
    std::thread::Builder::new().name("railyard-serve".into()).spawn(move || {
        let served = runtime.block_on(crate::serve_cmd::serve(
            serve.serve,
            async move {
                let _ = stopped.await;
            },
            Some(listening),
        ));
        let _ = done.send(served);
    })?;
    let address = match address.await {
        Ok(address) => address,
        Err(_) => {
            let _ = std::fs::remove_dir_all(&directory);
            return Err(match server.await {
                Ok(Err(error)) => error.context("starting Railyard in process"),
                _ => anyhow::anyhow!("Railyard did not start in process"),
            });
        }
    };
    let report = drive(format!("http://{address}"), db).await;
    let _ = stop.send(());
    let stopped = server.await;
    let _ = std::fs::remove_dir_all(&directory);
    let report = report?;
    stopped.map_err(|_| anyhow::anyhow!("Railyard in process ended without an answer"))??;
    Ok(report)
}

/// The baseline of `railyard bench http`: a bare HTTP server on loopback that reads the body,
/// parses it as JSON and answers 202, nothing else (what the client, loopback HTTP and the web
/// framework cost). Stops when `stop` fires.
async fn bare_server(stop: tokio::sync::oneshot::Receiver<()>) -> anyhow::Result<std::net::SocketAddr> {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    let app = axum::Router::new().route(
        "/v1/payouts",
        axum::routing::post(|body: axum::body::Bytes| async move {
            match serde_json::from_slice::<Value>(&body) {
                Ok(_) => (
                    StatusCode::ACCEPTED,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"id":"pay_baseline","status":"accepted"}"#,
                )
                    .into_response(),
                Err(_) => StatusCode::BAD_REQUEST.into_response(),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
    });
    Ok(address)
}

/// `railyard bench http`: accepted payouts per second over loopback HTTP, closed loop with
/// `concurrency` clients, against the bare server (baseline) driven the same way in the same run;
/// then accept latency in an open loop at half the rate Railyard reached (or at `open_rate`
/// payouts/s when given, to compare builds at one rate).
/// `railyard bench http`; the server runs up to `sagas_running` sagas at once, its settling threads
/// at nice `settle_nice`, its intake journal at `intake_journal` (beside its database if none).
pub async fn http_bench(
    payouts: usize,
    concurrency: usize,
    open_rate: Option<f64>,
    sagas_running: usize,
    settle_nice: i32,
    intake_journal: Option<&std::path::Path>,
) -> anyhow::Result<Value> {
    let plan = |target: String, seed: u64, rate: Option<f64>| SimulateArgs {
        target,
        in_process: false,
        api_key: "rk_demo_psp,rk_demo_psp_north,rk_demo_psp_south".into(),
        faults: None,
        admin_key: "rk_demo_admin".into(),
        payouts,
        concurrency,
        rate,
        cross_currency_permille: 500,
        duplicate_permille: 0,
        amount_median: 200,
        amount_sigma_milli: 1000,
        seed,
        settle_seconds: 0,
        json: true,
    };
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let bare = bare_server(stopped).await?;
    let baseline = simulate(plan(format!("http://{bare}"), 1, None)).await;
    let _ = stop.send(());
    let baseline = baseline?;
    let mut flags =
        vec!["--sagas-running".into(), sagas_running.to_string(), "--settle-nice".into(), settle_nice.to_string()];
    if let Some(path) = intake_journal {
        flags.extend(["--intake-journal".into(), path.display().to_string()]);
    }
    with_railyard(&flags, |target, db| async move {
        // Both runs settle what they submit: the demo's prefunded liquidity carries a few
        // thousand payouts, and a run whose payouts fail for want of it would measure accepts
        // beside a server that no longer settles anything.
        fund_rails(&target, DEMO_TREASURY_KEY, 2 * payouts).await?;
        fund_psps(&db, 2 * payouts).await?;
        let full = simulate(plan(target.clone(), 2, None)).await?;
        let rate = open_rate.unwrap_or(full["throughput_per_s"].as_f64().unwrap_or(0.0) / 2.0);
        anyhow::ensure!(rate > 0.0, "nothing was accepted at full load: {full}");
        // Half load is measured on a server that keeps up with it: the full-load run leaves a
        // backlog of payouts accepted faster than they settle, and accepts measured while that
        // backlog drains would be those of an overloaded server, whatever the rate.
        let drain_s = drained(&db, BACKLOG_DRAIN_MAX).await?;
        let full_outcomes = outcomes(&db).await?;
        let histogram_before = accept_histogram(&target).await?;
        let half = simulate(plan(target.clone(), 3, Some(rate))).await?;
        let accepted = half["accepted"].as_u64().unwrap_or(0);
        let server = server_accepts(&histogram_before, &counted(&target, &histogram_before, accepted).await?)?;
        drained(&db, BACKLOG_DRAIN_MAX).await?;
        let half_outcomes = outcomes(&db).await?;
        let per_s = |report: &Value| report["throughput_per_s"].as_f64().unwrap_or(0.0);
        let refused = |report: &Value| report["refused"].as_u64().unwrap_or(0);
        let accepting_s = payouts as f64 / per_s(&full).max(f64::MIN_POSITIVE);
        Ok(json!({
            "payouts": payouts,
            "concurrency": concurrency,
            "sagas_running": sagas_running,
            "settle_nice": settle_nice,
            "intake_journal": intake_journal.map(|path| path.display().to_string()),
            "accepted_per_s": per_s(&full),
            "baseline_per_s": per_s(&baseline),
            "ratio": ((per_s(&full) / per_s(&baseline).max(f64::MIN_POSITIVE)) * 100.0).round() / 100.0,
            "accept_p50_ms": full["accept_p50_ms"],
            "accept_p99_ms": full["accept_p99_ms"],
            "baseline_accept_p99_ms": baseline["accept_p99_ms"],
            "backlog_drain_s": (drain_s * 100.0).round() / 100.0,
            // What the server keeps up with: the closed loop's payouts over the time to accept
            // them and settle the backlog they left (a server that acknowledges from its journal
            // faster than it settles accepts bursts above this).
            "sustained_per_s": (payouts as f64 / (accepting_s + drain_s) * 10.0).round() / 10.0,
            "half_load_rate_per_s": (rate * 10.0).round() / 10.0,
            "half_load_accepted_per_s": per_s(&half),
            "half_load_accept_p50_ms": half["accept_p50_ms"],
            "half_load_accept_p95_ms": half["accept_p95_ms"],
            "half_load_accept_p99_ms": half["accept_p99_ms"],
            // How late the client released its submissions against their schedule: part of
            // the latencies above, and the client's, not the server's.
            "half_load_schedule_lag_p50_ms": half["schedule_lag_p50_ms"],
            "half_load_schedule_lag_p99_ms": half["schedule_lag_p99_ms"],
            // The same accepts as the server timed them (its `railyard_accept_latency_seconds`
            // histogram, from the request's arrival at the intake to its durable answer): what
            // an operator's monitoring shows, without the client sharing the two cores.
            "half_load_server_accepts": server.count,
            "half_load_server_accept_within_10ms": server.within_10ms,
            "half_load_server_accept_p99_ms_at_most": server.p99_at_most_ms,
            "refused": refused(&full) + refused(&half),
            // Payouts of each run by the state they came to rest in (the half-load run's counted
            // once it has settled too): a bench whose payouts fail measures a server that does
            // less than a real one.
            "full_load_outcomes": full_outcomes,
            "half_load_outcomes": half_outcomes
                .iter()
                .map(|(state, count)| (state.clone(), count - full_outcomes.get(state).copied().unwrap_or(0)))
                .collect::<BTreeMap<String, i64>>(),
        }))
    })
    .await
}

/// The server's accept latency histogram (`railyard_accept_latency_seconds` in `GET /metrics`):
/// each bucket's upper bound in seconds with its cumulative count, the last `+Inf`.
async fn accept_histogram(target: &str) -> anyhow::Result<Vec<(f64, u64)>> {
    const BUCKET: &str = "railyard_accept_latency_seconds_bucket{le=\"";
    let response = reqwest::get(format!("{target}/metrics")).await?;
    let status = response.status();
    let text = response.text().await?;
    anyhow::ensure!(status.is_success(), "GET /metrics: HTTP {status}: {text}");
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(BUCKET) else { continue };
        let (bound, count) = rest
            .split_once("\"} ")
            .with_context(|| format!("GET /metrics: a bucket line without its count: {line}"))?;
        let bound = if bound == "+Inf" { f64::INFINITY } else { bound.parse::<f64>()? };
        buckets.push((bound, count.trim().parse::<u64>()?));
    }
    anyhow::ensure!(
        buckets.last().is_some_and(|(bound, _)| bound.is_infinite()),
        "GET /metrics has no railyard_accept_latency_seconds histogram (is the monitor off?)"
    );
    Ok(buckets)
}

/// How long the reading after the half-load run waits for the server to have counted every
/// accept the client saw: the server's monitor counts them from its queue, after answering.
const SERVER_COUNT_WAIT: Duration = Duration::from_secs(2);

/// The server's accept histogram once it holds `accepted` more accepts than `before`, or as it
/// stands after [`SERVER_COUNT_WAIT`] (a monitor that dropped events under load never gets there).
async fn counted(target: &str, before: &[(f64, u64)], accepted: u64) -> anyhow::Result<Vec<(f64, u64)>> {
    let total = |reading: &[(f64, u64)]| reading.last().map_or(0, |(_, count)| *count);
    let deadline = Instant::now() + SERVER_COUNT_WAIT;
    loop {
        let after = accept_histogram(target).await?;
        if total(&after).saturating_sub(total(before)) >= accepted || Instant::now() >= deadline {
            return Ok(after);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Accepts the server timed between two readings of its histogram.
#[derive(Debug, PartialEq)]
struct ServerAccepts {
    count: u64,
    /// The share answered within 10 ms (issue 8's target for the p99), four decimals.
    within_10ms: f64,
    /// The smallest bucket bound under which 99 % of them were answered: the p99 is at most this
    /// (none when only the `+Inf` bucket holds 99 %).
    p99_at_most_ms: Option<f64>,
}

/// What the server timed between the readings `before` and `after` of [`accept_histogram`].
fn server_accepts(before: &[(f64, u64)], after: &[(f64, u64)]) -> anyhow::Result<ServerAccepts> {
    anyhow::ensure!(
        before.len() == after.len() && before.iter().zip(after).all(|(old, new)| old.0 == new.0),
        "the accept histogram's buckets changed between two readings"
    );
    let deltas: Vec<(f64, u64)> =
        before.iter().zip(after).map(|(old, new)| (new.0, new.1.saturating_sub(old.1))).collect();
    let count = deltas.last().map_or(0, |(_, count)| *count);
    anyhow::ensure!(count > 0, "the server timed no accept in the half-load run");
    let within_10ms = deltas
        .iter()
        .find(|(bound, _)| (bound - 0.01).abs() < 1e-9)
        .map(|(_, count)| *count)
        .context("the accept histogram has no 10 ms bucket")?;
    // 99 % of `count`, rounded up, in integers.
    let wanted = (count * 99).div_ceil(100);
    let p99_at_most_ms = deltas
        .iter()
        .find(|(bound, cumulative)| bound.is_finite() && *cumulative >= wanted)
        .map(|(bound, _)| (bound * 1000.0 * 100.0).round() / 100.0);
    Ok(ServerAccepts {
        count,
        within_10ms: (within_10ms as f64 / count as f64 * 10_000.0).round() / 10_000.0,
        p99_at_most_ms,
    })
}

/// The demo configuration's treasury key (`railyard serve` prints it).
const DEMO_TREASURY_KEY: &str = "rk_demo_treasury";

/// Tops up every prefunded position of the Railyard at `target` (`POST
/// /v1/treasury/rails/{rail}/liquidity`, as a treasurer would) by enough for `payouts` payouts of
/// the simulated mix: [`FUNDING_PER_PAYOUT`] major units each, several times the mix's mean.
async fn fund_rails(target: &str, treasury_key: &str, payouts: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let response = client
        .get(format!("{target}/v1/treasury/liquidity"))
        .header("Authorization", format!("Bearer {treasury_key}"))
        .send()
        .await?;
    let status = response.status();
    let body: Value = serde_json::from_slice(&response.bytes().await?).unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "GET /v1/treasury/liquidity: HTTP {status}: {body}");
    let amount = u64::try_from(payouts)?.checked_mul(FUNDING_PER_PAYOUT).context("funding overflows")?;
    let positions = body["positions"].as_array().context("GET /v1/treasury/liquidity: no positions")?;
    for (index, position) in positions.iter().enumerate() {
        let (Some(rail), Some(currency)) = (position["rail"].as_str(), position["currency"].as_str()) else {
            anyhow::bail!("GET /v1/treasury/liquidity: a position without rail or currency: {position}");
        };
        let response = client
            .post(format!("{target}/v1/treasury/rails/{rail}/liquidity"))
            .header("Authorization", format!("Bearer {treasury_key}"))
            .header("Content-Type", "application/json")
            .body(
                json!({
                    "amount": amount.to_string(),
                    "currency": currency,
                    "direction": "top_up",
                    "reference": format!("bench-http-{}-{index}", std::process::id()),
                })
                .to_string(),
            )
            .send()
            .await?;
        succeeded(response, format_args!("topping up {rail} {currency}")).await?;
    }
    Ok(())
}

/// `Ok` for a 2xx answer; otherwise an error naming `what`, the status and the body.
async fn succeeded(response: reqwest::Response, what: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let status = response.status();
    anyhow::ensure!(status.is_success(), "{what}: HTTP {status}: {}", response.text().await.unwrap_or_default());
    Ok(())
}

/// Books, in the database at `db`, [`FUNDING_PER_PAYOUT`] major units per payout `bench http`
/// will submit into every PSP balance there (each PSP sends several times what its share of the
/// mix needs).
async fn fund_psps(db: &str, payouts: usize) -> anyhow::Result<()> {
    let store = railyard_store::Store::open_existing(db, &railyard_store::StoreOptions::default()).await?;
    let accounts: Vec<(String, String)> =
        sqlx::query_as("SELECT id, currency FROM accounts WHERE kind = 'psp' ORDER BY id")
            .fetch_all(store.pool())
            .await?;
    anyhow::ensure!(!accounts.is_empty(), "{db}: no PSP balance to fund");
    let units = i64::try_from(u64::try_from(payouts)?.checked_mul(FUNDING_PER_PAYOUT).context("funding overflows")?)?;
    for (account, code) in accounts {
        let currency =
            railyard_core::Currency::from_code(&code).map_err(|error| anyhow::anyhow!("{account}: {error}"))?;
        let minor = 10_i64
            .checked_pow(currency.exponent())
            .and_then(|unit| unit.checked_mul(units))
            .context("funding overflows")?;
        let tenant = account
            .strip_prefix("psp:")
            .and_then(|rest| rest.strip_suffix(&format!(":{code}")))
            .with_context(|| format!("{account}: not a PSP balance"))?;
        let reference = format!("bench-http-{}-{code}", std::process::id());
        railyard_saga::fund_psp(&store, tenant, railyard_core::Money::from_minor(minor, currency), &reference).await?;
    }
    Ok(())
}

/// Major units of every currency a rail is funded with per payout `bench http` will submit: the
/// mix's amounts are log-normal around 200 with a mean near 330 (see [`Random::log_normal_minor`]).
const FUNDING_PER_PAYOUT: u64 = 1_000;

/// Payouts of the database at `db` per state.
async fn outcomes(db: &str) -> anyhow::Result<BTreeMap<String, i64>> {
    let store = railyard_store::Store::open_existing(db, &railyard_store::StoreOptions::default()).await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM payouts GROUP BY state").fetch_all(store.pool()).await?;
    Ok(rows.into_iter().collect())
}

/// How long `bench http` waits for the full-load run's backlog to settle before it measures half
/// load.
const BACKLOG_DRAIN_MAX: Duration = Duration::from_secs(600);

/// Waits until no payout of the database at `db` is on its way (every one terminal, in doubt
/// waiting on an inquiry, or held for a person), at most `max`. Returns the seconds it waited.
async fn drained(db: &str, max: Duration) -> anyhow::Result<f64> {
    let store = railyard_store::Store::open_existing(db, &railyard_store::StoreOptions::default()).await?;
    let started = Instant::now();
    loop {
        let moving: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM payouts WHERE state IN ('accepted', 'routed', 'reserved', 'quoted', 'submitting')",
        )
        .fetch_one(store.pool())
        .await?;
        if moving == 0 {
            return Ok(started.elapsed().as_secs_f64());
        }
        anyhow::ensure!(
            started.elapsed() < max,
            "{moving} payouts still moving {} s after the full-load run",
            max.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A corridor of the mix: source, destination, beneficiary country, IBAN.
const CORRIDORS: &[(&str, &str, &str, &str)] = &[
    ("EUR", "EUR", "DE", "DE89370400440532013000"),
    ("GBP", "GBP", "GB", "GB29NWBK60161331926819"),
    ("USD", "EUR", "DE", "DE89370400440532013000"),
    ("GBP", "EUR", "FR", "FR1420041010050500013M02606"),
    ("USD", "GBP", "GB", "GB29NWBK60161331926819"),
];

/// Retries of one request answered 429 or 503 before the client gives up on it.
pub const RETRIES_MAX: u32 = 8;
/// The longest Retry-After the client honours; a longer one is waited as this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(5);

struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic, good enough for a traffic mix.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A log-normal amount in minor units (two decimals) around `median_minor`, with the log's
    /// standard deviation `sigma_milli` / 1000, within [`AMOUNT_MIN_MINOR`, `AMOUNT_MAX_MINOR`].
    /// This generates test traffic; it is not money arithmetic: the float only shapes the
    /// distribution and the result is rounded to a whole number of minor units once.
    fn log_normal_minor(&mut self, median_minor: u64, sigma_milli: u32) -> u64 {
        // Irwin-Hall: twelve uniforms on [0, 1) less six are close to a standard normal (within ±6).
        let sum: u64 = (0..12).map(|_| self.below(1_000_000)).sum();
        let normal = sum as f64 / 1e6 - 6.0;
        let sigma = f64::from(sigma_milli) / 1e3;
        let minor = (median_minor as f64 * (sigma * normal).exp()).round();
        (minor.clamp(AMOUNT_MIN_MINOR as f64, AMOUNT_MAX_MINOR as f64)) as u64
    }
}

/// Smallest simulated amount: 1.00.
const AMOUNT_MIN_MINOR: u64 = 100;
/// Largest simulated amount: 10,000.00 (the demo balances carry thousands of these).
const AMOUNT_MAX_MINOR: u64 = 1_000_000;

fn percentile(sorted: &[Duration], per_mille: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * per_mille / 1000).min(sorted.len() - 1);
    (sorted[index].as_micros() as f64 / 10.0).round() / 100.0
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = if args.in_process {
        runtime.block_on(in_process(args.clone_args()))?
    } else {
        runtime.block_on(simulate(args.clone_args()))?
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{} payouts in {:.1} s: {:.1} accepted/s; accept p50/p95/p99 {} / {} / {} ms; completion p50/p95/p99 {} / {} / {} ms",
            report["payouts"],
            report["elapsed_s"].as_f64().unwrap_or(0.0),
            report["throughput_per_s"].as_f64().unwrap_or(0.0),
            report["accept_p50_ms"],
            report["accept_p95_ms"],
            report["accept_p99_ms"],
            report["completion_p50_ms"],
            report["completion_p95_ms"],
            report["completion_p99_ms"]
        );
        if !report["schedule_lag_p99_ms"].is_null() {
            println!(
                "open loop: submissions left late against their schedule by p50 {} ms, p99 {} ms",
                report["schedule_lag_p50_ms"], report["schedule_lag_p99_ms"]
            );
        }
        println!(
            "completed {}, failed {}, in_doubt {}, still moving {}",
            report["completed"], report["failed"], report["in_doubt"], report["unsettled"]
        );
        println!("duplicates submitted {}, answered as replays {}", report["duplicates"], report["replays"]);
        println!("route share: {}", report["route_share"]);
        if report["failures_by_reason"].as_object().is_some_and(|reasons| !reasons.is_empty()) {
            println!("failures by reason: {}", report["failures_by_reason"]);
        }
    }
    Ok(ExitCode::SUCCESS)
}

impl SimulateArgs {
    fn clone_args(&self) -> SimulateArgs {
        SimulateArgs {
            target: self.target.clone(),
            in_process: self.in_process,
            api_key: self.api_key.clone(),
            faults: self.faults.clone(),
            admin_key: self.admin_key.clone(),
            payouts: self.payouts,
            concurrency: self.concurrency,
            rate: self.rate,
            cross_currency_permille: self.cross_currency_permille,
            duplicate_permille: self.duplicate_permille,
            amount_median: self.amount_median,
            amount_sigma_milli: self.amount_sigma_milli,
            seed: self.seed,
            settle_seconds: self.settle_seconds,
            json: self.json,
        }
    }
}

async fn simulate(args: SimulateArgs) -> anyhow::Result<Value> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let target = args.target.trim_end_matches('/').to_string();
    let mut random = Random(args.seed.max(1));
    let keys: Vec<String> =
        args.api_key.split(',').map(str::trim).filter(|key| !key.is_empty()).map(str::to_string).collect();
    anyhow::ensure!(!keys.is_empty(), "--api-key: at least one key");
    // Build the whole mix first so it is the same for a given seed.
    let mut plan = Vec::with_capacity(args.payouts);
    for index in 0..args.payouts {
        let cross = random.below(1000) < u64::from(args.cross_currency_permille);
        let pool: Vec<_> = CORRIDORS.iter().filter(|(from, to, _, _)| (from != to) == cross).collect();
        let (from, to, country, iban) = pool[random.below(pool.len() as u64) as usize];
        let amount_minor = random.log_normal_minor(args.amount_median.saturating_mul(100), args.amount_sigma_milli);
        let amount = format!("{}.{:02}", amount_minor / 100, amount_minor % 100);
        let body = json!({
            "source_currency": from, "destination_currency": to, "amount": amount, "amount_type": "send",
            "beneficiary": { "name": "Simulated Payee", "account": iban, "country": country, "account_type": "iban" },
            "reference": format!("sim {index}"),
        });
        let duplicate = random.below(1000) < u64::from(args.duplicate_permille);
        let api_key = keys[index % keys.len()].clone();
        let corridor = format!("{from}>{to}");
        plan.push((format!("sim-{}-{index}", args.seed), body.to_string(), duplicate, api_key, corridor));
    }
    let rails = match &args.faults {
        Some(path) => apply_faults(&client, &target, &args.admin_key, path).await?,
        None => Vec::new(),
    };
    let progress = progress_bar(args.payouts as u64, "submitting", args.json);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let interval = match args.rate {
        Some(rate) if rate.is_finite() && rate > 0.0 => Some(Duration::from_secs_f64(1.0 / rate)),
        Some(rate) => anyhow::bail!("--rate {rate}: a positive number of payouts per second"),
        None => None,
    };
    // Open loop: how late each submission left this loop against its time (this process's share
    // of the cores), a part of every accept latency counted from that time which is the client's,
    // not the server's.
    let mut schedule_lags = Vec::new();
    for (index, (key, body, duplicate, api_key, corridor)) in plan.into_iter().enumerate() {
        // Open loop: each submission has its time, and its latency counts from it, or from when
        // it left if that was earlier. Tokio's timer fires on the first millisecond tick at or
        // after a deadline, so waiting for `at` itself released the median submission 0.9 ms
        // late, counted as the server's; waiting for the tick before it releases it within the
        // millisecond before (BENCHMARKS.md, "The client's own lateness").
        let start = match interval {
            Some(interval) => {
                let at = started + interval.saturating_mul(u32::try_from(index).unwrap_or(u32::MAX));
                tokio::time::sleep_until(at.checked_sub(TIMER_TICK).unwrap_or(at).into()).await;
                let left = Instant::now();
                schedule_lags.push(left.saturating_duration_since(at));
                Some(left.min(at))
            }
            None => None,
        };
        let permit = semaphore.clone().acquire_owned().await?;
        let client = client.clone();
        let url = format!("{target}/v1/payouts");
        let progress = progress.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut answers = Vec::new();
            for _ in 0..(1 + usize::from(duplicate)) {
                let mut answer = submit(&client, &url, &api_key, &key, &body).await;
                if let (Some(start), true) = (start, answers.is_empty()) {
                    answer.elapsed = answer.at.saturating_duration_since(start);
                }
                answers.push(answer);
            }
            progress.inc(1);
            (answers, api_key, corridor)
        });
    }
    let mut accept_latencies = Vec::new();
    // Payout id -> (accepted at, its PSP's key, corridor).
    let mut accepted: BTreeMap<String, (Instant, String, String)> = BTreeMap::new();
    let (mut duplicates, mut replays, mut refused, mut shed) = (0, 0, 0, 0);
    while let Some(result) = tasks.join_next().await {
        let (answers, api_key, corridor) = result?;
        duplicates += answers.len().saturating_sub(1);
        for answer in answers {
            shed += answer.shed;
            if answer.status == 202 {
                accept_latencies.push(answer.elapsed);
                replays += usize::from(answer.replay);
                if let Some(id) = answer.id {
                    accepted.entry(id).or_insert((answer.at, api_key.clone(), corridor.clone()));
                }
            } else {
                refused += 1;
            }
        }
    }
    let accept_elapsed = started.elapsed();
    progress.finish_and_clear();
    let settling = progress_bar(accepted.len() as u64, "settling", args.json);
    // Follow every payout to rest.
    let deadline = Instant::now() + Duration::from_secs(args.settle_seconds);
    let mut completion_latencies = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut route_share: BTreeMap<String, usize> = BTreeMap::new();
    let mut corridor_share: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending: Vec<(String, (Instant, String, String))> = accepted.into_iter().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (id, (accepted_at, api_key, corridor)) in pending {
            let response = client
                .get(format!("{target}/v1/payouts/{id}"))
                .header("Authorization", format!("Bearer {api_key}"))
                .send()
                .await;
            let Ok(response) = response else {
                still.push((id, (accepted_at, api_key, corridor)));
                continue;
            };
            let value: Value =
                serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
            let status = value["status"].as_str().unwrap_or("").to_string();
            // In doubt is a resting place only once status inquiries are used up (escalated to
            // reconciliation); before that the server is still asking the rail.
            let resting = matches!(status.as_str(), "completed" | "failed" | "cancelled" | "returned")
                || (status == "in_doubt"
                    && value["reason"].as_str().is_some_and(|reason| reason.starts_with("escalated")));
            if !resting {
                still.push((id, (accepted_at, api_key, corridor)));
                continue;
            }
            settling.inc(1);
            if status == "completed" {
                completion_latencies.push(accepted_at.elapsed());
                for leg in value["route"]["legs"].as_array().into_iter().flatten() {
                    if leg["kind"] == "rail" {
                        let rail = leg["rail"].as_str().unwrap_or("?").to_string();
                        *corridor_share.entry(corridor.clone()).or_default().entry(rail.clone()).or_default() += 1;
                        *route_share.entry(rail).or_default() += 1;
                    }
                }
            }
            if status == "failed" {
                // Group by the kind of reason, not the amounts in it.
                let text = value["reason"].as_str().unwrap_or("");
                let reason = text
                    .split([':', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9'])
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string();
                *reasons.entry(reason).or_default() += 1;
            }
            *outcomes.entry(status).or_default() += 1;
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    settling.finish_and_clear();
    if !rails.is_empty() {
        clear_faults(&client, &target, &args.admin_key, &rails).await;
    }
    accept_latencies.sort();
    completion_latencies.sort();
    schedule_lags.sort();
    let accepted_count = accept_latencies.len() - replays;
    let seconds = accept_elapsed.as_secs_f64().max(0.001);
    Ok(json!({
        "payouts": args.payouts,
        "accepted": accepted_count,
        "refused": refused,
        "shed_retried": shed,
        "duplicates": duplicates,
        "replays": replays,
        "elapsed_s": (seconds * 100.0).round() / 100.0,
        "throughput_per_s": ((accepted_count as f64 / seconds) * 10.0).round() / 10.0,
        "accept_p50_ms": percentile(&accept_latencies, 500),
        "accept_p95_ms": percentile(&accept_latencies, 950),
        "accept_p99_ms": percentile(&accept_latencies, 990),
        // With --rate only: how late the client released submissions against their schedule.
        "schedule_lag_p50_ms": (!schedule_lags.is_empty()).then(|| percentile(&schedule_lags, 500)),
        "schedule_lag_p99_ms": (!schedule_lags.is_empty()).then(|| percentile(&schedule_lags, 990)),
        "completion_p50_ms": percentile(&completion_latencies, 500),
        "completion_p95_ms": percentile(&completion_latencies, 950),
        "completion_p99_ms": percentile(&completion_latencies, 990),
        "completed": outcomes.get("completed").copied().unwrap_or(0),
        "failed": outcomes.get("failed").copied().unwrap_or(0),
        "in_doubt": outcomes.get("in_doubt").copied().unwrap_or(0),
        "unsettled": pending.len(),
        "route_share": route_share,
        "route_share_by_corridor": corridor_share,
        "faults": args.faults.as_ref().map(|path| path.display().to_string()),
        "failures_by_reason": reasons,
    }))
}

/// The granularity of tokio's timer: a sleep ends on the first tick at or after its deadline.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// One submission's final answer, after any retries of shed attempts.
struct Answer {
    status: u16,
    replay: bool,
    /// From the first attempt to the final answer.
    elapsed: Duration,
    id: Option<String>,
    at: Instant,
    /// Attempts answered 429/503 and retried.
    shed: usize,
}

/// Posts one payout; a 429 or 503 is retried after its Retry-After (at most [`RETRIES_MAX`]
/// times, each wait at most [`RETRY_AFTER_MAX`]) under the same Idempotency-Key.
async fn submit(client: &reqwest::Client, url: &str, api_key: &str, key: &str, body: &str) -> Answer {
    let sent = Instant::now();
    let mut shed = 0;
    loop {
        let response = client
            .post(url)
            .header("Authorization", format!("Bearer {api_key}"))
            .header("Idempotency-Key", key)
            .body(body.to_string())
            .send()
            .await;
        let Ok(response) = response else {
            return Answer { status: 0, replay: false, elapsed: sent.elapsed(), id: None, at: Instant::now(), shed };
        };
        let status = response.status().as_u16();
        if (status == 429 || status == 503) && shed < RETRIES_MAX as usize {
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.trim().parse::<u64>().ok())
                .map_or(Duration::from_millis(100), Duration::from_secs)
                .min(RETRY_AFTER_MAX);
            shed += 1;
            tokio::time::sleep(wait).await;
            continue;
        }
        let replay = response.headers().get("idempotent-replayed").is_some();
        let value: Value = serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
        return Answer {
            status,
            replay,
            elapsed: sent.elapsed(),
            id: value["id"].as_str().map(str::to_string),
            at: Instant::now(),
            shed,
        };
    }
}

/// A progress bar on standard error (hidden when it is not a terminal, or with `--json`).
fn progress_bar(length: u64, what: &'static str, quiet: bool) -> indicatif::ProgressBar {
    if quiet {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(length);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// Applies the fault plan in `path` to every rail of the target; returns the rails.
async fn apply_faults(
    client: &reqwest::Client,
    target: &str,
    admin_key: &str,
    path: &std::path::Path,
) -> anyhow::Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).map_err(|error| anyhow::anyhow!("--faults {}: {error}", path.display()))?;
    let plan: Value =
        serde_json::from_str(&text).map_err(|error| anyhow::anyhow!("--faults {}: {error}", path.display()))?;
    // The monitor publishes its first state within a tick of the server starting.
    let mut rails: Vec<String> = Vec::new();
    for _ in 0..50 {
        let state = client.get(format!("{target}/v1/monitor/state")).send().await?.bytes().await?;
        let state: Value = serde_json::from_slice(&state).unwrap_or(Value::Null);
        rails = state["rails"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|rail| rail["id"].as_str().map(str::to_string))
            .collect();
        if !rails.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(!rails.is_empty(), "--faults: the target reports no rails at /v1/monitor/state");
    for rail in &rails {
        let response = client
            .put(format!("{target}/v1/sandbox/rails/{rail}/faults"))
            .header("Authorization", format!("Bearer {admin_key}"))
            .body(json!({ "plan": plan }).to_string())
            .send()
            .await?;
        succeeded(response, format_args!("--faults on {rail}")).await?;
    }
    Ok(rails)
}

/// Puts every rail back to a plan without faults.
async fn clear_faults(client: &reqwest::Client, target: &str, admin_key: &str, rails: &[String]) {
    for rail in rails {
        let cleared = client
            .put(format!("{target}/v1/sandbox/rails/{rail}/faults"))
            .header("Authorization", format!("Bearer {admin_key}"))
            .body(json!({ "plan": {}, "outage": false }).to_string())
            .send()
            .await;
        if !cleared.is_ok_and(|response| response.status().is_success()) {
            eprintln!("warning: the fault plan on {rail} was not cleared");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_log_normal_around_the_median() {
        let mut random = Random(7);
        let mut amounts: Vec<u64> = (0..20_000).map(|_| random.log_normal_minor(20_000, 1000)).collect();
        amounts.sort_unstable();
        let median = amounts[amounts.len() / 2];
        assert!((18_000..=22_000).contains(&median), "median {median}");
        // Within a factor e of the median: about 68% for sigma 1.
        let within = amounts.iter().filter(|&&minor| (7_358..=54_366).contains(&minor)).count();
        let share = within * 1000 / amounts.len();
        assert!((650..=715).contains(&share), "{share} per mille within a factor e");
        assert!(amounts[0] >= AMOUNT_MIN_MINOR && *amounts.last().unwrap() <= AMOUNT_MAX_MINOR);
        // A long tail: the mean is well above the median (e^(sigma^2 / 2) = 1.65 for sigma 1).
        let mean = amounts.iter().sum::<u64>() / amounts.len() as u64;
        assert!(mean * 100 / median >= 150, "mean {mean}, median {median}");
    }

    /// The server's share within 10 ms and its p99 bound come from the histogram's growth
    /// between two readings, not from what it held before.
    #[test]
    fn server_accepts_are_read_from_the_histograms_growth() {
        let bounds = [0.001, 0.0025, 0.005, 0.01, 0.025, f64::INFINITY];
        let reading = |counts: [u64; 6]| bounds.iter().copied().zip(counts).collect::<Vec<_>>();
        // Before: 1,000 slow accepts of a full-load run. Between the readings: 1,000 more, 950
        // within 5 ms, 985 within 10 ms, 995 within 25 ms.
        let before = reading([0, 0, 0, 0, 0, 1_000]);
        let after = reading([100, 500, 950, 985, 995, 2_000]);
        let server = server_accepts(&before, &after).unwrap();
        assert_eq!(server, ServerAccepts { count: 1_000, within_10ms: 0.985, p99_at_most_ms: Some(25.0) });
        // 99 % within 10 ms: the bound is the 10 ms bucket.
        let server = server_accepts(&before, &reading([100, 500, 950, 990, 995, 2_000])).unwrap();
        assert_eq!(server.p99_at_most_ms, Some(10.0));
        // Only +Inf holds 99 %: no bound.
        let server = server_accepts(&before, &reading([0, 0, 0, 0, 900, 2_000])).unwrap();
        assert_eq!(server.p99_at_most_ms, None);
        assert_eq!(server.within_10ms, 0.0);
        // Nothing timed in between, or buckets that do not match, is an error.
        assert!(server_accepts(&before, &before).is_err());
        assert!(server_accepts(&before, &after[1..]).is_err());
    }
}
