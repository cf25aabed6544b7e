//! Process-level benchmarks: `railyard bench recovery` and `railyard bench memory` run
//! `railyard serve` (this same binary) as a child process on a database filled with payouts in
//! flight, and measure it from outside, the way an operator would: time to resume after kill -9,
//! resident memory per payout in flight. Each reports against a baseline measured in the same run
//! (the same server on a database with nothing in flight).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use railyard_store::{Store, StoreOptions};
use serde::Serialize;

/// How long a started server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the benchmarks look at the database or the process.
const POLL_EVERY: Duration = Duration::from_millis(2);

/// A scratch directory for one benchmark run, removed afterwards.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> anyhow::Result<Scratch> {
        let path = std::env::temp_dir().join(format!("railyard-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Scratch(path))
    }

    fn db(&self, name: &str) -> String {
        format!("sqlite:{}", self.0.join(format!("{name}.db")).display())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `railyard serve` child process; SIGKILLed when dropped.
struct Server {
    child: Child,
    address: String,
    /// From spawning the process to its printing the address it listens on.
    started_in: Duration,
}

impl Server {
    fn spawn(db: &str, config: &Path, log: &Path) -> anyhow::Result<Server> {
        let spawned = Instant::now();
        let mut child = Command::new(std::env::current_exe()?)
            .args(["serve", "--db", db, "--listen", "127.0.0.1:0", "--rate-limit", "1000000", "--config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::OpenOptions::new().create(true).append(true).open(log)?)
            .spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = sender.send(line);
            // Keep draining so the server never blocks on a full pipe.
            for _ in reader.lines() {}
        });
        let mut server = Server { child, address: String::new(), started_in: Duration::ZERO };
        let line = receiver
            .recv_timeout(START_TIMEOUT)
            .map_err(|_| anyhow::anyhow!("railyard serve did not start (see {})", log.display()))?;
        server.started_in = spawned.elapsed();
        server.address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .ok_or_else(|| anyhow::anyhow!("railyard serve did not start: {line:?} (see {})", log.display()))?
            .to_string();
        Ok(server)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no flush beyond what was committed.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Resident set size and its high-water mark, in KiB (Linux /proc).
    fn memory_kib(&self) -> anyhow::Result<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|value| value.parse::<u64>().ok())
                .ok_or_else(|| anyhow::anyhow!("/proc/{}/status has no {name}", self.pid()))
        };
        Ok((field("VmRSS:")?, field("VmHWM:")?))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration at `source`, rewritten into `scratch` for a benchmark server: relative paths
/// made absolute, the risk velocity limits raised (a run's payouts go to a handful of payees and
/// must not be refused for that), and with `faults` every sandbox rail given that fault plan.
fn bench_config(source: &Path, scratch: &Scratch, faults: Option<&Path>) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(source).map_err(|error| anyhow::anyhow!("{}: {error}", source.display()))?;
    let base = source.parent().unwrap_or(Path::new(".")).canonicalize()?;
    let mut out = String::with_capacity(text.len() + 1024);
    for line in text.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "sanctions_list" | "rates_file" | "sandbox_faults" => {
                let value = line.split_once('=').map(|(_, value)| value.trim().trim_matches('"')).unwrap_or("");
                let path = if Path::new(value).is_absolute() { PathBuf::from(value) } else { base.join(value) };
                out.push_str(&format!("{key} = {:?}\n", path.display().to_string()));
            }
            "psp_payouts_per_hour" | "corridor_payouts_per_hour" | "beneficiary_payouts_per_day" => {
                out.push_str(&format!("{key} = 1000000000\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
                if let (Some(faults), "[[rails]]") = (faults, line.trim()) {
                    out.push_str(&format!("sandbox_faults = {:?}\n", faults.display().to_string()));
                }
            }
        }
    }
    let path = scratch.0.join("treasury.toml");
    std::fs::write(&path, out)?;
    Ok(path)
}

/// Fills `db` with `payouts` accepted payouts (none run yet), encrypted with the vault keys the
/// server will read beside the database. Returns accepts per second.
async fn prefill(db: &str, config_path: &Path, payouts: usize) -> anyhow::Result<f64> {
    let config = crate::fx_cmd::load_config(config_path)?;
    let rates = crate::fx_cmd::reference_rates(&config, None)?;
    let fx = railyard_fx::FxBook::build(&config.fx_providers, rates)?;
    let (vault, _) = railyard_store::vault::keys_from_environment(&crate::serve_cmd::vault_file(db), true)?;
    railyard_saga::bench::prefill(db, Arc::new(config), Arc::new(fx), Arc::new(vault), payouts, 256)
        .await
        .map_err(|error| anyhow::anyhow!(error))
}

async fn scalar(store: &Store, sql: &'static str) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar::<_, i64>(sql).fetch_one(store.pool()).await?)
}

async fn leased_by(store: &Store, owner: &str) -> anyhow::Result<i64> {
    // A saga that ended just before the kill may keep its holder's name; it needs no takeover.
    Ok(sqlx::query_scalar::<_, i64>(
        "SELECT COUNT(*) FROM payouts WHERE lease_owner = $1 \
         AND state NOT IN ('completed', 'failed', 'cancelled', 'returned')",
    )
    .bind(owner)
    .fetch_one(store.pool())
    .await?)
}

const IN_FLIGHT: &str =
    "SELECT COUNT(*) FROM payouts WHERE state NOT IN ('completed', 'failed', 'cancelled', 'returned')";
/// The newest saga event (SQLite's rowid: reading it costs the same however many there are).
const LAST_EVENT: &str = "SELECT COALESCE(MAX(rowid), 0) FROM saga_events";

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

#[derive(Debug, Serialize)]
pub struct RecoveryReport {
    pub payouts: usize,
    /// Payouts not yet terminal when the server was killed.
    pub in_flight_at_kill: i64,
    /// Of those, sagas the killed server was running (their leases last 30 s).
    pub leased_by_killed_server: i64,
    /// Baseline: restart after kill -9 on a database with nothing in flight, spawn to listening.
    pub baseline_restart_ms: f64,
    /// The same with the payouts in flight.
    pub restart_ms: f64,
    /// restart_ms ÷ baseline_restart_ms.
    pub ratio: f64,
    /// From the kill to the first saga step the new server commits.
    pub kill_to_first_step_ms: f64,
    /// From the kill until every saga the killed server held is running again (its leases taken).
    pub kill_to_takeover_ms: f64,
    pub prefill_per_s: f64,
}

/// `railyard bench recovery`.
pub async fn recovery(config: &Path, payouts: usize, warm: Duration) -> anyhow::Result<RecoveryReport> {
    let scratch = Scratch::new("recovery")?;
    let config = bench_config(config, &scratch, None)?;
    let log = scratch.0.join("serve.log");

    // Baseline: the same kill and restart with nothing in flight.
    let empty = scratch.db("empty");
    prefill(&empty, &config, 0).await?;
    Server::spawn(&empty, &config, &log)?.kill();
    let baseline = Server::spawn(&empty, &config, &log)?;
    let baseline_restart = baseline.started_in;
    baseline.kill();

    let db = scratch.db("loaded");
    let prefill_per_s = prefill(&db, &config, payouts).await?;
    let observer = Store::open_existing(&db, &StoreOptions::default()).await?;
    let first = Server::spawn(&db, &config, &log)?;
    let owner = format!("serve-{}", first.pid());
    // Let it get going: sagas leased and moving.
    let warm_until = Instant::now() + warm;
    while Instant::now() < warm_until || leased_by(&observer, &owner).await? == 0 {
        anyhow::ensure!(
            Instant::now() < warm_until + START_TIMEOUT,
            "the server never ran a saga (see {})",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let killed = Instant::now();
    let in_flight_at_kill = scalar(&observer, IN_FLIGHT).await?;
    let leased = leased_by(&observer, &owner).await?;
    let last_event = scalar(&observer, LAST_EVENT).await?;
    let second = Server::spawn(&db, &config, &log)?;
    let restart = second.started_in;
    let mut first_step = None;
    let mut takeover = None;
    while first_step.is_none() || takeover.is_none() {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "within 120 s of the kill: first step {first_step:?}, takeover {takeover:?} ({} sagas still held; see {})",
            leased_by(&observer, &owner).await?,
            log.display()
        );
        if first_step.is_none() && scalar(&observer, LAST_EVENT).await? > last_event {
            first_step = Some(killed.elapsed());
        }
        if takeover.is_none() && leased_by(&observer, &owner).await? == 0 {
            takeover = Some(killed.elapsed());
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
    second.kill();
    observer.close().await;
    let (first_step, takeover) = (first_step.unwrap_or_default(), takeover.unwrap_or_default());
    Ok(RecoveryReport {
        payouts,
        in_flight_at_kill,
        leased_by_killed_server: leased,
        baseline_restart_ms: millis(baseline_restart),
        restart_ms: millis(restart),
        ratio: (restart.as_secs_f64() / baseline_restart.as_secs_f64().max(1e-9) * 100.0).round() / 100.0,
        kill_to_first_step_ms: millis(first_step),
        kill_to_takeover_ms: millis(takeover),
        prefill_per_s: prefill_per_s.round(),
    })
}

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    pub payouts: usize,
    /// Every rail answers after this long (sandbox fault plan): the payouts queue for it.
    pub rail_latency_ms: u64,
    /// How long each server ran before it was measured.
    pub seconds: u64,
    /// Baseline: the same server on a database with nothing in flight.
    pub baseline_rss_kib: u64,
    pub baseline_peak_kib: u64,
    pub rss_kib: u64,
    pub peak_kib: u64,
    /// Payouts not terminal when measured.
    pub in_flight: i64,
    /// Of those, waiting for a rail's answer.
    pub at_the_rail: i64,
    /// (rss − baseline_rss) ÷ in_flight.
    pub bytes_per_in_flight_payout: f64,
    /// The same with the peaks.
    pub peak_bytes_per_in_flight_payout: f64,
    pub prefill_per_s: f64,
}

/// `railyard bench memory`.
pub async fn memory(
    config: &Path,
    payouts: usize,
    rail_latency_ms: u64,
    run_for: Duration,
) -> anyhow::Result<MemoryReport> {
    let scratch = Scratch::new("memory")?;
    let faults = scratch.0.join("slow-rail.json");
    std::fs::write(&faults, format!(r#"{{"latency": {{"base_ms": {rail_latency_ms}, "jitter_ms": 0}}}}"#))?;
    let config = bench_config(config, &scratch, Some(&faults))?;
    let log = scratch.0.join("serve.log");

    let measure = |db: String| {
        let config = config.clone();
        let log = log.clone();
        async move {
            let server = Server::spawn(&db, &config, &log)?;
            tokio::time::sleep(run_for).await;
            let (rss, peak) = server.memory_kib()?;
            let observer = Store::open_existing(&db, &StoreOptions::default()).await?;
            let in_flight = scalar(&observer, IN_FLIGHT).await?;
            let at_the_rail = scalar(&observer, "SELECT COUNT(*) FROM payouts WHERE state = 'submitting'").await?;
            observer.close().await;
            server.kill();
            Ok::<_, anyhow::Error>((rss, peak, in_flight, at_the_rail))
        }
    };
    let empty = scratch.db("empty");
    prefill(&empty, &config, 0).await?;
    let (baseline_rss, baseline_peak, _, _) = measure(empty).await?;
    let db = scratch.db("loaded");
    let prefill_per_s = prefill(&db, &config, payouts).await?;
    let (rss, peak, in_flight, at_the_rail) = measure(db).await?;
    let per = |loaded: u64, base: u64| {
        let bytes = loaded.saturating_sub(base) as f64 * 1024.0 / in_flight.max(1) as f64;
        (bytes * 100.0).round() / 100.0
    };
    Ok(MemoryReport {
        payouts,
        rail_latency_ms,
        seconds: run_for.as_secs(),
        baseline_rss_kib: baseline_rss,
        baseline_peak_kib: baseline_peak,
        rss_kib: rss,
        peak_kib: peak,
        in_flight,
        at_the_rail,
        bytes_per_in_flight_payout: per(rss, baseline_rss),
        peak_bytes_per_in_flight_payout: per(peak, baseline_peak),
        prefill_per_s: prefill_per_s.round(),
    })
}
