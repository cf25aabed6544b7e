//! `railyard simulate`: drives a running Railyard through its HTTP API with a realistic mix and
//! reports throughput, latencies, route shares and outcomes.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::{Value, json};

#[derive(Args)]
pub struct SimulateArgs {
    /// The Railyard to drive.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// API key (psp scope); default: the demo PSP's.
    #[arg(long, default_value = "rk_demo_psp")]
    api_key: String,
    /// Payouts to submit.
    #[arg(long, default_value_t = 200)]
    payouts: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Share of cross-currency payouts, per mille.
    #[arg(long, default_value_t = 500)]
    cross_currency_permille: u32,
    /// Share of submissions repeated with the same Idempotency-Key, per mille.
    #[arg(long, default_value_t = 50)]
    duplicate_permille: u32,
    /// Seed for the mix.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// How long to wait for every payout to come to rest.
    #[arg(long, default_value_t = 120)]
    settle_seconds: u64,
    #[arg(long)]
    json: bool,
}

/// A corridor of the mix: source, destination, beneficiary country, IBAN.
const CORRIDORS: &[(&str, &str, &str, &str)] = &[
    ("EUR", "EUR", "DE", "DE89370400440532013000"),
    ("GBP", "GBP", "GB", "GB29NWBK60161331926819"),
    ("USD", "EUR", "DE", "DE89370400440532013000"),
    ("GBP", "EUR", "FR", "FR1420041010050500013M02606"),
    ("USD", "GBP", "GB", "GB29NWBK60161331926819"),
];

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
}

fn percentile(sorted: &[Duration], per_mille: usize) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = (sorted.len() * per_mille / 1000).min(sorted.len() - 1);
    (sorted[index].as_micros() as f64 / 10.0).round() / 100.0
}

pub fn run(args: SimulateArgs) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(simulate(args.clone_args()))?;
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
            api_key: self.api_key.clone(),
            payouts: self.payouts,
            concurrency: self.concurrency,
            cross_currency_permille: self.cross_currency_permille,
            duplicate_permille: self.duplicate_permille,
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
    // Build the whole mix first so it is the same for a given seed.
    let mut plan = Vec::with_capacity(args.payouts);
    for index in 0..args.payouts {
        let cross = random.below(1000) < u64::from(args.cross_currency_permille);
        let pool: Vec<_> = CORRIDORS.iter().filter(|(from, to, _, _)| (from != to) == cross).collect();
        let (from, to, country, iban) = pool[random.below(pool.len() as u64) as usize];
        // Log-uniform amounts between 10 and 10,000 with two decimals.
        let decade = 10_u64.pow(1 + random.below(3) as u32);
        let amount_minor = decade * (100 + random.below(900)) / 100 * 100 + random.below(100);
        let amount = format!("{}.{:02}", amount_minor / 100, amount_minor % 100);
        let body = json!({
            "source_currency": from, "destination_currency": to, "amount": amount, "amount_type": "send",
            "beneficiary": { "name": "Simulated Payee", "account": iban, "country": country, "account_type": "iban" },
            "reference": format!("sim {index}"),
        });
        let duplicate = random.below(1000) < u64::from(args.duplicate_permille);
        plan.push((format!("sim-{}-{index}", args.seed), body.to_string(), duplicate));
    }
    let semaphore = Arc::new(tokio::sync::Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (key, body, duplicate) in plan {
        let permit = semaphore.clone().acquire_owned().await?;
        let client = client.clone();
        let url = format!("{target}/v1/payouts");
        let api_key = args.api_key.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut answers = Vec::new();
            for _ in 0..(1 + usize::from(duplicate)) {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("Authorization", format!("Bearer {api_key}"))
                    .header("Idempotency-Key", &key)
                    .body(body.clone())
                    .send()
                    .await;
                let elapsed = sent.elapsed();
                match response {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let replay = response.headers().get("idempotent-replayed").is_some();
                        let value: Value =
                            serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
                        answers.push((
                            status,
                            replay,
                            elapsed,
                            value["id"].as_str().map(str::to_string),
                            Instant::now(),
                        ));
                    }
                    Err(_) => answers.push((0, false, elapsed, None, Instant::now())),
                }
            }
            answers
        });
    }
    let mut accept_latencies = Vec::new();
    let mut accepted: BTreeMap<String, Instant> = BTreeMap::new();
    let (mut duplicates, mut replays, mut refused) = (0, 0, 0);
    while let Some(result) = tasks.join_next().await {
        let answers = result?;
        duplicates += answers.len().saturating_sub(1);
        for (status, replay, elapsed, id, at) in answers {
            if status == 202 {
                accept_latencies.push(elapsed);
                replays += usize::from(replay);
                if let Some(id) = id {
                    accepted.entry(id).or_insert(at);
                }
            } else {
                refused += 1;
            }
        }
    }
    let accept_elapsed = started.elapsed();
    // Follow every payout to rest.
    let deadline = Instant::now() + Duration::from_secs(args.settle_seconds);
    let mut completion_latencies = Vec::new();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let mut route_share: BTreeMap<String, usize> = BTreeMap::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut pending: Vec<(String, Instant)> = accepted.into_iter().collect();
    while !pending.is_empty() && Instant::now() < deadline {
        let mut still = Vec::new();
        for (id, accepted_at) in pending {
            let response = client
                .get(format!("{target}/v1/payouts/{id}"))
                .header("Authorization", format!("Bearer {}", args.api_key))
                .send()
                .await;
            let Ok(response) = response else {
                still.push((id, accepted_at));
                continue;
            };
            let value: Value =
                serde_json::from_slice(&response.bytes().await.unwrap_or_default()).unwrap_or(Value::Null);
            let status = value["status"].as_str().unwrap_or("").to_string();
            let resting = matches!(status.as_str(), "completed" | "failed" | "cancelled")
                || (status == "in_doubt" && value["reason"].is_string());
            if !resting {
                still.push((id, accepted_at));
                continue;
            }
            if status == "completed" {
                completion_latencies.push(accepted_at.elapsed());
                for leg in value["route"]["legs"].as_array().into_iter().flatten() {
                    if leg["kind"] == "rail" {
                        *route_share.entry(leg["rail"].as_str().unwrap_or("?").to_string()).or_default() += 1;
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
    accept_latencies.sort();
    completion_latencies.sort();
    let accepted_count = accept_latencies.len() - replays;
    let seconds = accept_elapsed.as_secs_f64().max(0.001);
    Ok(json!({
        "payouts": args.payouts,
        "accepted": accepted_count,
        "refused": refused,
        "duplicates": duplicates,
        "replays": replays,
        "elapsed_s": (seconds * 100.0).round() / 100.0,
        "throughput_per_s": ((accepted_count as f64 / seconds) * 10.0).round() / 10.0,
        "accept_p50_ms": percentile(&accept_latencies, 500),
        "accept_p95_ms": percentile(&accept_latencies, 950),
        "accept_p99_ms": percentile(&accept_latencies, 990),
        "completion_p50_ms": percentile(&completion_latencies, 500),
        "completion_p95_ms": percentile(&completion_latencies, 950),
        "completion_p99_ms": percentile(&completion_latencies, 990),
        "completed": outcomes.get("completed").copied().unwrap_or(0),
        "failed": outcomes.get("failed").copied().unwrap_or(0),
        "in_doubt": outcomes.get("in_doubt").copied().unwrap_or(0),
        "unsettled": pending.len(),
        "route_share": route_share,
        "failures_by_reason": reasons,
    }))
}
