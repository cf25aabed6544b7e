//! kill -9 soak, CI-sized: `railyard serve` on SQLite and on PostgreSQL with SEPA Instant served
//! by a separate `railyard sandbox instant` process (so the rail's execution ledger outlives the
//! server), a client submitting payouts concurrently, SIGKILL at random intervals, restart, and at
//! the end: every acknowledged payout exists and is terminal or in doubt with a reason, no rail
//! execution is duplicated or unaccounted for, and `railyard verify` passes.
//!
//! Sized by the environment for longer runs (`scripts/soak.sh` sets these):
//! `RAILYARD_SOAK_KILLS` (default 4), `RAILYARD_SOAK_INTERVAL_MS` (`low-high`, default
//! `1000-3000`), `RAILYARD_SOAK_PAYOUTS` (stop submitting after this many acknowledged, spread
//! evenly over the rounds between kills; default no cap), `RAILYARD_SOAK_DB` (`sqlite` or `postgres`: run only that one).

#[path = "../../store/tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use railyard_connector::IdempotencyKey;
use railyard_connector::sandbox::{HttpControl, SandboxControl};
use serde_json::Value;

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(args: &[&str]) -> (Process, String) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(args)
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(std::env::temp_dir().join(format!("railyard_soak_{}.log", std::process::id())))
                .map(Stdio::from)
                .unwrap_or(Stdio::null()),
        )
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let address = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    std::thread::spawn(move || for _ in reader.lines() {});
    (Process(child), address)
}

/// The run's size, from the environment.
struct Size {
    kills: usize,
    interval_ms: (u64, u64),
    payouts: Option<usize>,
}

fn size() -> Size {
    let number = |name: &str| {
        std::env::var(name).ok().map(|value| value.trim().parse::<u64>().unwrap_or_else(|_| panic!("{name}={value:?}")))
    };
    let interval_ms = std::env::var("RAILYARD_SOAK_INTERVAL_MS")
        .ok()
        .map(|value| {
            let (low, high) =
                value.split_once('-').unwrap_or_else(|| panic!("RAILYARD_SOAK_INTERVAL_MS={value:?}: low-high"));
            (low.trim().parse().unwrap(), high.trim().parse().unwrap())
        })
        .unwrap_or((1_000, 3_000));
    assert!(interval_ms.0 <= interval_ms.1 && interval_ms.0 > 0, "RAILYARD_SOAK_INTERVAL_MS");
    Size {
        kills: number("RAILYARD_SOAK_KILLS").map_or(4, |kills| kills as usize),
        interval_ms,
        payouts: number("RAILYARD_SOAK_PAYOUTS").map(|payouts| payouts as usize),
    }
}

fn wanted(database: &str) -> bool {
    std::env::var("RAILYARD_SOAK_DB").map_or(true, |only| only == database)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_soak() {
    if !wanted("sqlite") {
        return;
    }
    let directory = std::env::temp_dir().join(format!("railyard_soak_{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    let db = format!("sqlite:{}", directory.join("railyard.db").display());
    soak(&db, &directory).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_dash_nine_soak_postgres() {
    if !wanted("postgres") {
        return;
    }
    // A fresh schema (dropped at the end); SKIPPED without PostgreSQL unless it is required.
    let Some(database) = common::postgres().await else { return };
    database.store.pool().close().await;
    let directory = std::env::temp_dir().join(format!("railyard_soak_pg_{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    soak(&database.url, &directory).await;
}

/// The demo configuration with room on SEPA Instant for any soak: its 2.5 million EUR of prefunded
/// liquidity (ours, and the sandbox rail's settlement balance) is spent by an uncapped release run
/// in ~125,000 payouts (and its 20 million EUR daily cap in ~1,000,000), after which every payout
/// fails (no route, or AM04 from the rail) and the soak no longer tests a payout that executes.
fn roomy_sepa(config: &str) -> String {
    let liquidity = "prefunded = \"2500000.00\"\nlow_water = \"250000.00\"\nhigh_water = \"6000000.00\"\n";
    let rail = config.find("id = \"sepa-inst\"").expect("the demo has SEPA Instant");
    let block = &config[rail..];
    let block = &block[..block[1..].find("\nid = ").map_or(block.len(), |end| end + 1)];
    let cap = block.find("daily_cap = \"20000000.00\"").map(|at| rail + at);
    assert!(
        config.contains(liquidity) && cap.is_some(),
        "the demo's SEPA Instant liquidity or daily cap changed: update the soak"
    );
    let (before, after) = config.split_at(cap.unwrap_or_default());
    let roomy = format!("{before}{}", after.replacen("20000000.00", "100000000000.00", 1));
    roomy.replacen(
        liquidity,
        "prefunded = \"500000000.00\"\nlow_water = \"250000.00\"\nhigh_water = \"600000000.00\"\n",
        1,
    )
}

async fn soak(db: &str, directory: &std::path::Path) {
    let Size { kills, interval_ms, payouts } = size();
    // The rail, in its own process, losing some replies so that Unknown outcomes happen too.
    let faults = directory.join("faults.json");
    std::fs::write(&faults, r#"{"seed": 11, "reply_lost_permille": 30, "latency": {"base_ms": 2, "jitter_ms": 8}}"#)
        .unwrap();
    // Both processes read the demo configuration with room on SEPA Instant: the rail's settlement
    // balance (AM04 when short) as much as our prefunded account.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let demo = std::fs::read_to_string(format!("{root}/config/demo.toml")).unwrap();
    let roomy = roomy_sepa(&demo)
        .replace("sanctions_list = \"sanctions.csv\"", &format!("sanctions_list = \"{root}/config/sanctions.csv\""));
    let rail_config = directory.join("rail.toml");
    std::fs::write(&rail_config, &roomy).unwrap();
    let (_rail, rail_address) = spawn(&[
        "sandbox",
        "instant",
        "--listen",
        "127.0.0.1:0",
        "--config",
        rail_config.to_str().unwrap(),
        "--rail",
        "sepa-inst",
        "--faults",
        faults.to_str().unwrap(),
    ]);
    let config = roomy
        .replacen("id = \"sepa-inst\"\n", &format!("id = \"sepa-inst\"\nendpoint = \"http://{rail_address}\"\n"), 1)
        .replace("timeout_ms = 10000", "timeout_ms = 1000");
    let config_path = directory.join("treasury.toml");
    std::fs::write(&config_path, &config).unwrap();
    let serve_args = [
        "serve",
        "--db",
        db,
        "--listen",
        "127.0.0.1:0",
        "--config",
        config_path.to_str().unwrap(),
        "--rate-limit",
        "100000",
    ];

    // This configuration is not the demo: fund the PSP through the database before the first start.
    {
        let store = railyard_store::Store::open(db, &railyard_store::StoreOptions::default()).await.unwrap();
        let config = Arc::new(railyard_config::load(&config_path).unwrap());
        let rates = railyard_fx::RateHistory::bundled_daily().latest();
        let fx = Arc::new(railyard_fx::FxBook::build(&config.fx_providers, rates).unwrap());
        let settings = railyard_saga::EngineSettings::new(
            "setup",
            Duration::from_secs(1),
            Duration::from_millis(100),
            8,
            3,
            railyard_core::Decimal::from(50),
        );
        let engine = railyard_saga::Engine::new(
            store.clone(),
            config,
            fx,
            railyard_connector::Registry::new(),
            settings,
            std::sync::Arc::new(railyard_store::vault::VaultKeys::generate()),
        );
        engine.ensure_accounts().await.unwrap();
        let eur = railyard_core::Currency::from_code("EUR").unwrap();
        engine.fund_psp("demo-psp", railyard_core::Money::from_minor(100_000_000_000, eur), "soak").await.unwrap();
        store.pool().close().await;
    }

    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    // Ground truth: Idempotency-Key → acknowledged payout id.
    let acknowledged: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let mut next_key = 0_usize;
    let mut rng = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..=kills {
        let (serve, address) = spawn(&serve_args);
        let deadline = if round == kills {
            Instant::now() + Duration::from_millis(500)
        } else {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            Instant::now() + Duration::from_millis(interval_ms.0 + rng % (interval_ms.1 - interval_ms.0 + 1))
        };
        // A capped run spreads its payouts over the rounds, so that every kill lands under load.
        let round_cap = payouts.map(|cap| cap.div_ceil(kills + 1).saturating_mul(round + 1).min(cap));
        let mut tasks = tokio::task::JoinSet::new();
        while Instant::now() < deadline {
            if round_cap.is_some_and(|cap| acknowledged.lock().unwrap().len() >= cap) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            for _ in 0..8 {
                let key = format!("soak-{next_key}");
                next_key += 1;
                let client = client.clone();
                let address = address.clone();
                let acknowledged = acknowledged.clone();
                tasks.spawn(async move {
                    let body = format!(
                        r#"{{"source_currency":"EUR","destination_currency":"EUR","amount":"{}.00","amount_type":"send","beneficiary":{{"name":"Jonas Weber","account":"DE89370400440532013000","country":"DE","account_type":"iban"}}}}"#,
                        10 + key.len()
                    );
                    let response = client
                        .post(format!("http://{address}/v1/payouts"))
                        .header("Authorization", "Bearer rk_demo_psp")
                        .header("Idempotency-Key", &key)
                        .body(body)
                        .send()
                        .await;
                    if let Ok(response) = response
                        && response.status().as_u16() == 202
                        && let Ok(bytes) = response.bytes().await
                        && let Ok(value) = serde_json::from_slice::<Value>(&bytes)
                    {
                        acknowledged.lock().unwrap().insert(key, value["id"].as_str().unwrap().to_string());
                    }
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if round < kills {
            // SIGKILL mid-flight: no shutdown, no flush beyond what was committed.
            drop(serve);
            while tasks.join_next().await.is_some() {}
        } else {
            while tasks.join_next().await.is_some() {}
            // Let every acknowledged payout come to rest.
            let ids: Vec<String> = acknowledged.lock().unwrap().values().cloned().collect();
            let started = Instant::now();
            for id in &ids {
                loop {
                    let response = client
                        .get(format!("http://{address}/v1/payouts/{id}"))
                        .header("Authorization", "Bearer rk_demo_psp")
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(response.status().as_u16(), 200, "acknowledged payout {id} is lost");
                    let value: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
                    let status = value["status"].as_str().unwrap().to_string();
                    if ["completed", "failed", "cancelled"].contains(&status.as_str())
                        || (status == "in_doubt" && value["reason"].is_string())
                    {
                        break;
                    }
                    // Two minutes, or longer for a long run's backlog (a debug build on a busy
                    // 2-core machine settles a few hundred payouts a second).
                    let limit = Duration::from_secs(120.max(ids.len() as u64 / 20));
                    assert!(started.elapsed() < limit, "{id} still {status}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            eprintln!("{} acknowledged payouts came to rest in {:?}", ids.len(), started.elapsed());
            let pid = serve.0.id().to_string();
            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
            drop(serve);
        }
    }

    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(acknowledged.len() > 50, "only {} payouts acknowledged", acknowledged.len());
    // Join the rail's execution ledger to our payouts.
    let executions = HttpControl::new(&rail_address).executions().await.unwrap();
    let mut per_payout: BTreeMap<String, usize> = BTreeMap::new();
    let mut unaccounted = 0;
    let store = railyard_store::Store::open(db, &railyard_store::StoreOptions::default()).await.unwrap();
    let payouts: Vec<(String, String)> =
        sqlx::query_as::<_, (String, String)>("SELECT id, state FROM payouts").fetch_all(store.pool()).await.unwrap();
    let keys: BTreeMap<String, String> = payouts
        .iter()
        .flat_map(|(id, _)| {
            (0..3).map(move |attempt| {
                let key = IdempotencyKey::new(format!("{id}:a{attempt}-leg0")).unwrap();
                (railyard_rail_instant::iso20022::uetr_for(key.as_str()), id.clone())
            })
        })
        .collect();
    for record in &executions {
        match keys.get(record.key.as_str()) {
            Some(id) => *per_payout.entry(id.clone()).or_default() += 1,
            None => unaccounted += 1,
        }
    }
    assert_eq!(unaccounted, 0, "executions the rail performed for no payout of ours");
    let states: BTreeMap<String, String> = payouts.into_iter().collect();
    for (id, count) in &per_payout {
        assert_eq!(*count, 1, "{id} executed {count} times");
        let state = &states[id];
        assert!(state == "completed" || state == "in_doubt", "{id} executed but is {state}");
    }
    for id in acknowledged.values() {
        assert!(states.contains_key(id), "acknowledged {id} is not in the database");
        if states[id] == "completed" {
            assert_eq!(per_payout.get(id).copied().unwrap_or(0), 1, "{id} completed without a rail execution");
        }
    }
    // Nothing here has a reason to fail (the PSP and the rail have room, the rail rejects nothing,
    // a lost reply is asked about): a failed payout is a fault of ours, or a soak that has stopped
    // testing what it should.
    let failed: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT id, reason FROM payouts WHERE state = 'failed' ORDER BY id LIMIT 5")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert!(failed.is_empty(), "payouts failed, for example: {failed:?}");
    store.pool().close().await;
    let verify = Command::new(env!("CARGO_BIN_EXE_railyard")).args(["verify", "--db", db]).output().unwrap();
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
    eprintln!(
        "soak on {}: {} acknowledged, {} executions, {kills} kills, states {:?}",
        db.split(':').next().unwrap_or(""),
        acknowledged.len(),
        executions.len(),
        states.values().fold(BTreeMap::<&str, usize>::new(), |mut counts, state| {
            *counts.entry(state.as_str()).or_default() += 1;
            counts
        })
    );
    let _ = std::fs::remove_dir_all(directory);
}
