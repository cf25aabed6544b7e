//! `railyard bench ...`: benchmarks that report ratios against a baseline measured in the same run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;
use railyard_routes::bench::{self, BenchGraph};

use crate::fx_cmd::load_config;
use crate::route_cmd::build_demo_router;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Route solving against plain petgraph Dijkstra on the same frozen graph and queries.
    ///
    /// Build with --release for meaningful figures.
    Route {
        /// demo (config/demo.toml), synthetic-1k (~1k nodes, 20k edges) or synthetic-20k (~20k nodes,
        /// 100k edges).
        #[arg(long, default_value = "synthetic-1k")]
        graph: String,
        /// Number of (source, destination, amount) queries.
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Seed for the graph and the queries.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Treasury configuration for --graph demo.
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Durable payout accepts per second: raw batched writes (baseline), one commit per accept,
    /// and group commit, each on a fresh database in the same run.
    Store {
        /// A directory for fresh SQLite files, or a PostgreSQL URL (a fresh schema per variant).
        #[arg(long, default_value = "target/bench-store")]
        db: String,
        #[arg(long, default_value_t = 5_000)]
        payouts: usize,
        /// Concurrent clients.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Durable payouts per second end to end, in process: accepted through the group-commit
    /// intake, screened, routed, reserved, quoted, sent on the in-process sandbox rails (no
    /// injected latency), posted and completed; against the raw bound, the same rows written by
    /// plain batched inserts into a fresh database in the same run.
    E2e {
        /// sqlite (WAL, synchronous=FULL), sqlite-normal (synchronous=NORMAL) or postgres.
        #[arg(long, default_value = "sqlite")]
        store: String,
        /// A directory for the fresh SQLite files, or the PostgreSQL URL (a fresh schema each).
        #[arg(long)]
        db: Option<String>,
        #[arg(long, default_value_t = 20_000)]
        payouts: usize,
        /// Concurrent clients, each submitting a payout and waiting for it to come to rest.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
        /// Sagas running at once, as `railyard serve --sagas-running` (1 to 4096).
        #[arg(long, default_value_t = railyard_saga::driver::SAGAS_RUNNING_MAX, value_parser = crate::serve_cmd::parse_sagas_running)]
        sagas_running: usize,
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Recovery after kill -9: fills a fresh SQLite database with payouts, starts `railyard serve`
    /// on it, SIGKILLs it mid-flight, restarts it and times how long until sagas resume and until
    /// every saga the killed server held runs again; against the same restart with nothing in
    /// flight, in the same run.
    Recovery {
        /// Payouts in flight.
        #[arg(long, default_value_t = 100_000)]
        payouts: usize,
        /// How long the first server runs before it is killed (seconds).
        #[arg(long, default_value_t = 3)]
        warm_seconds: u64,
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Accepted payouts per second over loopback HTTP (`railyard serve` in process, fresh SQLite,
    /// demo configuration), closed loop, against a bare HTTP server that only parses the body
    /// and answers 202, driven by the same client in the same run; then accept latency in an
    /// open loop at half the rate reached.
    Http {
        #[arg(long, default_value_t = 20_000)]
        payouts: usize,
        /// Requests in flight at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// The open loop's rate in payouts/s instead of half the closed loop's (to compare
        /// builds at one rate); the `half_load_*` keys then report that rate.
        #[arg(long)]
        rate: Option<f64>,
        /// Sagas the server runs at once, as `railyard serve --sagas-running` (1 to 4096).
        #[arg(long, default_value_t = railyard_saga::driver::SAGAS_RUNNING_MAX, value_parser = crate::serve_cmd::parse_sagas_running)]
        sagas_running: usize,
        /// The nice value added to the server's settling threads, as `railyard serve
        /// --settle-nice` (0 to 19, default 10; 0 runs settling at the API's priority).
        #[arg(long, default_value_t = crate::serve_cmd::SETTLE_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
        settle_nice: i32,
        /// Where the server's intake journal lives, as `railyard serve --intake-journal` (a file
        /// that must not exist yet; removed afterwards). Default: beside the fresh database.
        #[arg(long, value_name = "PATH")]
        intake_journal: Option<std::path::PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Memory per payout in flight: `railyard serve` on a database holding `--payouts` accepted
    /// payouts, every sandbox rail slowed to `--rail-latency-ms`, its resident memory after
    /// `--seconds`; against the same server on a database with none, in the same run.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        payouts: usize,
        #[arg(long, default_value_t = 8_000)]
        rail_latency_ms: u64,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Outage detection: how long after a sandbox rail goes down the routing actor publishes a
    /// snapshot without it, over `--trials` outages at different phases of the probe schedule;
    /// against a bare task polling the rail's outage switch at the same period, same run.
    Outage {
        #[arg(long, default_value_t = 100)]
        trials: usize,
        #[arg(long, default_value = "sepa-inst")]
        rail: String,
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Actor overhead: one-way messages and round trips through a ractor actor behind our bounded
    /// mailbox, against a raw bounded tokio channel and task, in the same run.
    Actors {
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 100_000)]
        round_trips: usize,
        #[arg(long)]
        json: bool,
    },
    /// What one statement and one row cost on the store's write path (fresh SQLite file, the
    /// saga steps' connection, inside a write transaction): a statement's round trip, a one-row
    /// insert and multi-row inserts, against a round trip to a bare thread in the same run.
    Statements {
        /// A directory for the fresh SQLite file.
        #[arg(long, default_value = "target/bench-statements")]
        db: String,
        /// Statements per figure.
        #[arg(long, default_value_t = 5_000)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
    /// Sanctions screening time per name with the bigram index, against scoring every listed name
    /// (baseline), on a synthetic list; and whether the index holds every edited listed name the
    /// scan holds.
    Screening {
        /// Entries in the synthetic list.
        #[arg(long, default_value_t = 10_000)]
        entries: usize,
        /// Names screened (half edited listed names, half unrelated).
        #[arg(long, default_value_t = 2_000)]
        queries: usize,
        /// Similarity that holds a payout.
        #[arg(long, default_value_t = 0.9)]
        threshold: f64,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long)]
        json: bool,
    },
}

fn warn_if_debug(json: bool) {
    if cfg!(debug_assertions) && !json {
        eprintln!("warning: this is a debug build; run with --release for figures worth quoting");
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    // Benchmarks are quiet unless asked: RUST_LOG (for example `sqlx::query=debug`, which times
    // every statement) logs to stderr.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_default_env() {
        let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    }
    match command {
        BenchCommand::Recovery { payouts, warm_seconds, config, json } => {
            warn_if_debug(json);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(crate::bench_process::recovery(
                &config,
                payouts,
                std::time::Duration::from_secs(warm_seconds),
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} payouts in flight at the kill, {} of them held by the killed server",
                    report.in_flight_at_kill, report.leased_by_killed_server
                );
                println!(
                    "restart to listening  {:>8.1} ms   (nothing in flight: {:.1} ms, ratio {:.2})",
                    report.restart_ms, report.baseline_restart_ms, report.ratio
                );
                println!("kill to first step    {:>8.1} ms", report.kill_to_first_step_ms);
                println!(
                    "kill to takeover      {:>8.1} ms   (every saga the killed server held)",
                    report.kill_to_takeover_ms
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Http { payouts, concurrency, rate, sagas_running, settle_nice, intake_journal, json } => {
            warn_if_debug(json);
            if let Some(rate) = rate {
                anyhow::ensure!(
                    rate.is_finite() && rate > 0.0,
                    "--rate: must be a positive number of payouts per second"
                );
            }
            if let Some(path) = &intake_journal {
                anyhow::ensure!(
                    !path.exists(),
                    "--intake-journal: {} exists; name a file that does not",
                    path.display()
                );
            }
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(crate::simulate_cmd::http_bench(
                payouts,
                concurrency,
                rate,
                sagas_running,
                settle_nice,
                intake_journal.as_deref(),
            ));
            if let Some(path) = &intake_journal {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            let report = report?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} payouts per run, {} requests in flight", report["payouts"], report["concurrency"]);
                println!(
                    "railyard    {:>9} accepted/s   accept p50 {} ms   p99 {} ms",
                    report["accepted_per_s"], report["accept_p50_ms"], report["accept_p99_ms"]
                );
                println!(
                    "bare server {:>9} accepted/s   accept p99 {} ms   ratio {}",
                    report["baseline_per_s"], report["baseline_accept_p99_ms"], report["ratio"]
                );
                println!(
                    "half load   {:>9} per s offered, accept p50 {} ms   p95 {} ms   p99 {} ms",
                    report["half_load_rate_per_s"],
                    report["half_load_accept_p50_ms"],
                    report["half_load_accept_p95_ms"],
                    report["half_load_accept_p99_ms"]
                );
                println!(
                    "half load, the client's own lateness against its schedule: p50 {} ms   p99 {} ms",
                    report["half_load_schedule_lag_p50_ms"], report["half_load_schedule_lag_p99_ms"]
                );
                println!(
                    "half load, as the server timed it: {} accepts, {} within 10 ms, p99 at most {} ms",
                    report["half_load_server_accepts"],
                    report["half_load_server_accept_within_10ms"],
                    report["half_load_server_accept_p99_ms_at_most"]
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Memory { payouts, rail_latency_ms, seconds, config, json } => {
            warn_if_debug(json);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime.block_on(crate::bench_process::memory(
                &config,
                payouts,
                rail_latency_ms,
                std::time::Duration::from_secs(seconds),
            ))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} payouts in flight ({} at a rail answering after {} ms), measured after {} s",
                    report.in_flight, report.at_the_rail, report.rail_latency_ms, report.seconds
                );
                println!(
                    "resident  {:>9} KiB   peak {:>9} KiB   (nothing in flight: {} / {} KiB)",
                    report.rss_kib, report.peak_kib, report.baseline_rss_kib, report.baseline_peak_kib
                );
                println!(
                    "per payout in flight  {:.1} bytes   (peak {:.1} bytes)",
                    report.bytes_per_in_flight_payout, report.peak_bytes_per_in_flight_payout
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Outage { trials, rail, config, json } => {
            warn_if_debug(json);
            let config = load_config(&config)?;
            let rates = crate::fx_cmd::reference_rates(&config, None)?;
            let fx = railyard_fx::FxBook::build(&config.fx_providers, rates.clone())?;
            let rails = railyard_rails::build(&config, &rates)?;
            let Some((_, sandbox)) = rails.sandboxes.iter().find(|(id, _)| *id == rail) else {
                anyhow::bail!("--rail {rail}: not an in-process sandbox rail of the configuration");
            };
            let sandbox = sandbox.sandbox();
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime
                .block_on(railyard_actors::bench::outage(
                    std::sync::Arc::new(config),
                    std::sync::Arc::new(fx),
                    rails.registry.clone(),
                    sandbox,
                    &rail,
                    trials.max(1),
                ))
                .map_err(|error| anyhow::anyhow!(error))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} outages of {} (probes every {} ms)", report.trials, report.rail, report.probe_every_ms);
                println!(
                    "routing stops using it   p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms (target {} ms)",
                    report.ours_p50_ms, report.ours_p99_ms, report.ours_max_ms, report.target_ms
                );
                println!(
                    "bare poller (baseline)   p50 {:>6.1} ms   p99 {:>6.1} ms   max {:>6.1} ms   ratio p50 {:.2}",
                    report.baseline_p50_ms, report.baseline_p99_ms, report.baseline_max_ms, report.ratio_p50
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Actors { messages, round_trips, json } => {
            warn_if_debug(json);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime
                .block_on(railyard_actors::bench::run(messages, round_trips))
                .map_err(|error| anyhow::anyhow!(error))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} one-way messages, {} round trips", report.messages, report.round_trips);
                println!(
                    "one-way     actor {:>8.1} ns   tokio channel {:>8.1} ns   ratio {:.2}",
                    report.actor_one_way_ns, report.channel_one_way_ns, report.ratio_one_way
                );
                println!(
                    "round trip  actor {:>8.1} ns   tokio channel {:>8.1} ns   ratio {:.2}",
                    report.actor_round_trip_ns, report.channel_round_trip_ns, report.ratio_round_trip
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Screening { entries, queries, threshold, seed, json } => {
            warn_if_debug(json);
            let figures = railyard_risk::bench::run(entries, queries, threshold, seed);
            if json {
                println!("{}", serde_json::to_string_pretty(&figures)?);
            } else {
                println!(
                    "{} entries ({} names), {} queries, threshold {}",
                    figures.entries, figures.names_indexed, figures.queries, figures.threshold
                );
                println!("baseline (score every name) {:>10.1} us per name", figures.exhaustive_us_per_name);
                println!(
                    "bigram index                {:>10.1} us per name   {:.1}x faster",
                    figures.indexed_us_per_name, figures.speedup
                );
                println!(
                    "edited listed names held: index {} / scan {} of {}; unrelated names held: index {} / scan {}",
                    figures.listed_held_indexed,
                    figures.listed_held_exhaustive,
                    figures.listed_queries,
                    figures.unrelated_held_indexed,
                    figures.unrelated_held_exhaustive
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Statements { db, rounds, json } => {
            warn_if_debug(json);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime
                .block_on(railyard_saga::bench::statements(&db, rounds))
                .map_err(|error| anyhow::anyhow!(error))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("round trip to a bare thread      {:>9.1} µs", report.thread_round_trip_us);
                println!("statement round trip (SELECT 1)  {:>9.1} µs", report.statement_round_trip_us);
                println!("one-row insert                   {:>9.1} µs", report.insert_1_row_us);
                for figure in &report.insert_multi {
                    println!(
                        "{:>3}-row insert                   {:>9.1} µs   ({:.2} µs per row)",
                        figure.rows_per_statement, figure.statement_us, figure.row_us
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::E2e { store, db, payouts, concurrency, sagas_running, config, json } => {
            use railyard_saga::bench::E2eStore;
            let kind = match store.as_str() {
                "sqlite" => E2eStore::Sqlite,
                "sqlite-normal" => E2eStore::SqliteNormal,
                "postgres" => E2eStore::Postgres,
                other => anyhow::bail!("--store {other:?}: expected sqlite, sqlite-normal or postgres"),
            };
            let db = db.unwrap_or_else(|| match kind {
                E2eStore::Postgres => "postgres://postgres@127.0.0.1:5432/test".into(),
                _ => "target/bench-e2e".into(),
            });
            if (kind == E2eStore::Postgres) != (db.starts_with("postgres://") || db.starts_with("postgresql://")) {
                anyhow::bail!("--db {db:?} does not fit --store {store}");
            }
            let mut config = load_config(&config)?;
            // The run measures the engine, not the demo's limits: no payout may be held or refused
            // for running out of prefunded liquidity or for velocity.
            for liquidity in &mut config.liquidity {
                liquidity.prefunded = railyard_core::Money::from_minor(i64::MAX / 4, liquidity.prefunded.currency());
            }
            if let Some(risk) = &mut config.risk {
                risk.limits.beneficiary_payouts_per_day = u64::MAX;
                risk.limits.psp_payouts_per_hour = u64::MAX;
                risk.limits.corridor_payouts_per_hour = u64::MAX;
            }
            let rates = crate::fx_cmd::reference_rates(&config, None)?;
            let fx = railyard_fx::FxBook::build(&config.fx_providers, rates.clone())?;
            let rails = railyard_rails::build(&config, &rates)?;
            warn_if_debug(json);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime
                .block_on(railyard_saga::bench::e2e(
                    &db,
                    kind,
                    std::sync::Arc::new(config),
                    std::sync::Arc::new(fx),
                    rails.registry,
                    railyard_saga::bench::E2eLoad { payouts, concurrency, sagas_running },
                ))
                .map_err(|error| anyhow::anyhow!(error))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} payouts, {} concurrent clients, {} sagas at once, {}: {} completed, {} failed, {} not terminal",
                    report.payouts,
                    report.concurrency,
                    report.sagas_running,
                    report.store,
                    report.completed,
                    report.failed,
                    report.not_terminal
                );
                println!(
                    "end to end            {:>10.0} payouts/s   p50 {:.1} ms   p99 {:.1} ms",
                    report.payouts_per_s, report.p50_ms, report.p99_ms
                );
                println!(
                    "raw bound             {:>10.0} payouts/s   ({} rows, {:.1} per payout)",
                    report.raw_bound_per_s, report.rows_inserted, report.rows_per_payout
                );
                println!("ratio                 {:>10.2}", report.ratio);
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Store { db, payouts, concurrency, config, json } => {
            let config = load_config(&config)?;
            let fx = railyard_fx::FxBook::build(&config.fx_providers, crate::fx_cmd::reference_rates(&config, None)?)?;
            warn_if_debug(json);
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            let report = runtime
                .block_on(railyard_saga::bench::run(
                    &db,
                    std::sync::Arc::new(config),
                    std::sync::Arc::new(fx),
                    payouts,
                    concurrency,
                ))
                .map_err(|error| anyhow::anyhow!(error))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!("{} payouts, {} concurrent clients, {}", report.payouts, report.concurrency, report.database);
                println!("baseline (raw batched writes) {:>10.0} /s", report.baseline_per_s);
                println!(
                    "one commit per accept         {:>10.0} /s   ratio {:.2}",
                    report.single_per_s, report.ratio_single
                );
                println!(
                    "group commit                  {:>10.0} /s   ratio {:.2}",
                    report.group_per_s, report.ratio_group
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Route { graph, queries, seed, config, json } => {
            let which = BenchGraph::parse(&graph).ok_or_else(|| {
                anyhow::anyhow!("--graph: expected demo, synthetic-1k or synthetic-20k, got {graph:?}")
            })?;
            let demo = if which == BenchGraph::Demo {
                // Build time covers the FX book and the graph, not reading the file.
                let config = load_config(&config)?;
                let started = std::time::Instant::now();
                let router = build_demo_router(&config)?;
                Some((router, started.elapsed()))
            } else {
                None
            };
            warn_if_debug(json);
            let report = bench::run(which, demo, queries, seed)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "graph {}: {} nodes, {} edges, built in {} ms",
                    report.graph, report.nodes, report.edges, report.build_ms
                );
                println!("{} queries (seed {}), {} with a route", report.queries, report.seed, report.reachable);
                println!("solver   p50 {:>10} µs   p99 {:>10} µs", report.solver_p50_us, report.solver_p99_us);
                println!(
                    "dijkstra p50 {:>10} µs   p99 {:>10} µs   (petgraph, costs frozen at EUR 1,000)",
                    report.baseline_p50_us, report.baseline_p99_us
                );
                println!("ratio p50 {}", report.ratio_p50);
                println!(
                    "split    p50 {:>10} µs   over {} queries that needed a split",
                    report.split_p50_us, report.split_queries
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
