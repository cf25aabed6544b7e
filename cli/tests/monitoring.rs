//! Monitoring end to end against `railyard serve` on loopback: `/metrics` parses as Prometheus
//! exposition format; a latency spike on a rail is detected, alerted, audited and steers routing
//! away until the rail recovers; the dashboard, driven in headless Chromium over WebDriver, loads
//! without console errors, shows a card per configured rail, moves while `railyard simulate`
//! runs, and shows an injected outage within seconds. The API docs page is driven the same way.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `railyard serve` on the demo configuration with a fast monitor tick; returns it and its base URL.
fn serve(name: &str, tick_ms: u32) -> (Process, String, std::path::PathBuf) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let path = std::env::temp_dir().join(format!("railyard_monitoring_{name}_{}.db", std::process::id()));
    let db = format!("sqlite:{}", path.display());
    let tick = tick_ms.to_string();
    let mut child = Command::new(env!("CARGO_BIN_EXE_railyard"))
        .args(["serve", "--db", &db, "--listen", "127.0.0.1:0", "--monitor-tick-ms", &tick, "--rate-limit", "5000"])
        .current_dir(root)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    let address = line.split("http://").nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    std::thread::spawn(move || for _ in reader.lines() {});
    (Process(child), format!("http://{address}"), path)
}

fn cleanup(path: &std::path::Path) {
    for suffix in ["", "-wal", "-shm", "-intake", "-intake-wal", "-intake-shm", ".keys"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

async fn request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut builder = client.request(method, url);
    if let Some(token) = token {
        builder = builder.header("Authorization", format!("Bearer {token}"));
    }
    if let Some(body) = body {
        builder = builder.header("Content-Type", "application/json").body(body.to_string());
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.bytes().await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into())))
}

/// Polls `probe` every 50 ms until it returns `Some`, for at most `limit`.
async fn until<T, F, Fut>(limit: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks the Prometheus text exposition format line by line: `# HELP`/`# TYPE` comments,
/// samples `name{label="value",...} number`, each sample's family typed, histogram buckets
/// cumulative and ending in `+Inf`. Returns the sample names.
fn parse_prometheus(text: &str) -> BTreeSet<String> {
    let mut typed = std::collections::BTreeMap::new();
    let mut names = BTreeSet::new();
    let mut last_bucket: Option<(String, f64)> = None;
    for (number, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let keyword = parts.next().unwrap();
            let name = parts.next().expect(&at);
            assert!(keyword == "HELP" || keyword == "TYPE", "{at}");
            if keyword == "TYPE" {
                let kind = parts.next().expect(&at);
                assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind), "{at}");
                typed.insert(name.to_string(), kind.to_string());
            }
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect(&at);
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            number => number.parse().unwrap_or_else(|_| panic!("{at}: value")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, Some(labels.strip_suffix('}').expect(&at))),
            None => (series, None),
        };
        assert!(
            !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
                && !name.starts_with(|c: char| c.is_ascii_digit()),
            "{at}: metric name"
        );
        let mut le = None;
        if let Some(labels) = labels {
            let mut rest = labels;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").expect(&at);
                assert!(key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{at}: label name {key}");
                // The value runs to the first unescaped quote.
                let mut end = None;
                let mut escaped = false;
                for (index, c) in after.char_indices() {
                    match (escaped, c) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, '"') => {
                            end = Some(index);
                            break;
                        }
                        _ => {}
                    }
                }
                let end = end.expect(&at);
                if key == "le" {
                    le = Some(after[..end].to_string());
                }
                rest = after[end + 1..].strip_prefix(',').unwrap_or(&after[end + 1..]);
            }
        }
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix).filter(|base| typed.get(*base).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        assert!(typed.contains_key(family), "{at}: no # TYPE for {family}");
        if name.ends_with("_bucket") {
            let le = le.expect(&at);
            let series_key = format!("{name}{{{}}}", labels.unwrap_or("").replace(&format!("le=\"{le}\""), ""));
            if let Some((previous_key, previous)) = &last_bucket
                && *previous_key == series_key
            {
                assert!(value >= *previous, "{at}: buckets must be cumulative");
            }
            last_bucket = Some((series_key, value));
        }
        names.insert(name.to_string());
    }
    names
}

const PAYOUT: &str = r#"{"source_currency":"USD","destination_currency":"EUR","amount":"250.00","amount_type":"send","beneficiary":{"name":"Jonas Weber","account":"DE89370400440532013000","country":"DE"}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_a_latency_spike_steers_routing_away_and_back() {
    let (server, base, path) = serve("anomaly", 100);
    let client = reqwest::Client::new();
    for index in 0..5 {
        let response = client
            .post(format!("{base}/v1/payouts"))
            .header("Authorization", "Bearer rk_demo_psp")
            .header("Idempotency-Key", format!("metrics-{index}"))
            .body(PAYOUT)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let metrics = until(Duration::from_secs(15), "completions in /metrics", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let text = client.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
            text.contains("railyard_payouts_total{status=\"completed\"").then_some(text)
        }
    })
    .await;
    let names = parse_prometheus(&metrics);
    for wanted in [
        "railyard_payouts_total",
        "railyard_accept_latency_seconds_bucket",
        "railyard_intake_commit_seconds_bucket",
        "railyard_completion_latency_seconds_bucket",
        "railyard_rail_leg_latency_seconds_count",
        "railyard_rail_available",
        "railyard_rail_fee_bps",
        "railyard_liquidity_available",
        "railyard_in_doubt_payouts",
        "railyard_mailbox_depth",
        "railyard_fx_reference_age_seconds",
    ] {
        assert!(names.contains(wanted), "{wanted} missing from /metrics:\n{metrics}");
    }

    // The EUR corridor's best route is the SEPA instant rail.
    let best = |client: reqwest::Client, base: String| async move {
        let (status, graph) =
            request(&client, "GET", &format!("{base}/v1/monitor/graph?from=EUR&to=EUR&amount=500"), None, None).await;
        assert_eq!(status, 200, "{graph}");
        graph["route"]["legs"]
            .as_array()
            .map(|legs| legs.iter().map(|leg| leg["rail"].as_str().unwrap().to_string()).collect::<Vec<_>>())
    };
    let rails = best(client.clone(), base.clone()).await.unwrap();
    assert_eq!(rails, ["sepa-inst"], "the usual route");
    // Let the detector learn the rail's usual probe latency (20 samples at 100 ms).
    tokio::time::sleep(Duration::from_secs(3)).await;

    // The rail slows down: every answer, probes included, takes 250 ms.
    let faults = format!("{base}/v1/sandbox/rails/sepa-inst/faults");
    let slow = json!({ "plan": { "seed": 1, "latency": { "base_ms": 250 } } });
    let (status, answer) = request(&client, "PUT", &faults, Some("rk_demo_admin"), Some(slow)).await;
    assert_eq!(status, 200, "{answer}");
    let spiked = Instant::now();
    let alert = until(Duration::from_secs(10), "a latency alert on sepa-inst", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            let (_, state) = request(&client, "GET", &format!("{base}/v1/monitor/state"), None, None).await;
            state["alerts"]
                .as_array()?
                .iter()
                .find(|alert| alert["kind"] == "latency" && alert["subject"] == "sepa-inst" && alert["active"] == true)
                .cloned()
        }
    })
    .await;
    assert!(alert["action"].as_str().unwrap_or("").contains("de-weighted"), "{alert}");
    let rails = until(Duration::from_secs(5), "routing away from sepa-inst", || {
        let (client, base) = (client.clone(), base.clone());
        async move { best(client, base).await.filter(|rails| !rails.contains(&"sepa-inst".to_string())) }
    })
    .await;
    eprintln!("detected and re-routed to {rails:?} {:?} after the spike began", spiked.elapsed());
    // The rail's card says why (the state of the tick after the routing actor applied it).
    until(Duration::from_secs(3), "the de-weight on the sepa-inst card", || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (_, state) = request(&client, "GET", &format!("{base}/v1/monitor/state"), None, None).await;
            let card = state["rails"].as_array()?.iter().find(|rail| rail["id"] == "sepa-inst")?.clone();
            (card["deweight"] == "0.5" && card["anomalous"] == true).then_some(())
        }
    })
    .await;

    // The rail recovers: the alert clears and the route comes back.
    let (status, _) =
        request(&client, "PUT", &faults, Some("rk_demo_admin"), Some(json!({ "plan": { "seed": 1 } }))).await;
    assert_eq!(status, 200);
    until(Duration::from_secs(10), "routing back to sepa-inst", || {
        let (client, base) = (client.clone(), base.clone());
        async move { best(client, base).await.filter(|rails| rails == &["sepa-inst"]) }
    })
    .await;
    // The route can come back first (latency back to usual outweighs the de-weight); the alert
    // clears once the detector has seen enough usual probes.
    until(Duration::from_secs(10), "the sepa-inst alert cleared", || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (_, state) = request(&client, "GET", &format!("{base}/v1/monitor/state"), None, None).await;
            let alert = state["alerts"].as_array()?.iter().find(|alert| alert["subject"] == "sepa-inst")?.clone();
            (alert["active"] == false).then_some(())
        }
    })
    .await;

    // Every step is in the audit log: the drill, the anomaly, both weight changes (the last ones
    // written as the clearing reaches the routing actor).
    let has_in = |audit: &Value, action: &str, needle: &str| {
        audit["entries"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|entry| entry["action"] == action && entry["change"].as_str().unwrap_or("").contains(needle))
    };
    let audit = until(Duration::from_secs(5), "the clearing in the audit log", || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (_, audit) =
                request(&client, "GET", &format!("{base}/v1/treasury/audit"), Some("rk_demo_treasury"), None).await;
            (has_in(&audit, "anomaly.cleared", "latency sepa-inst") && has_in(&audit, "rail.weight", "weight restored"))
                .then_some(audit)
        }
    })
    .await;
    let has = |action: &str, needle: &str| has_in(&audit, action, needle);
    assert!(has("sandbox.faults", "sepa-inst"), "{audit}");
    assert!(has("anomaly.raised", "latency sepa-inst"), "{audit}");
    assert!(has("rail.weight", "de-weighted"), "{audit}");
    assert!(has("rail.weight", "weight restored"), "{audit}");
    assert!(has("anomaly.cleared", "latency sepa-inst"), "{audit}");
    drop(server);
    cleanup(&path);
}

/// A minimal WebDriver client (chromedriver speaks the W3C protocol over HTTP).
struct Browser {
    client: reqwest::Client,
    base: String,
    session: String,
    _driver: Process,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium; `None` (the test is skipped, saying so) when
    /// they are not installed and `RAILYARD_REQUIRE_BROWSER` is not `1`.
    async fn start() -> Option<Browser> {
        let chromium = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists());
        let driver_ok =
            Command::new("chromedriver").arg("--version").output().is_ok_and(|output| output.status.success());
        let (Some(chromium), true) = (chromium, driver_ok) else {
            if std::env::var("RAILYARD_REQUIRE_BROWSER").is_ok_and(|value| value == "1") {
                panic!("Chromium and chromedriver are required (RAILYARD_REQUIRE_BROWSER=1) but not installed");
            }
            eprintln!("SKIPPED: the dashboard test needs Debian's chromium and chromium-driver");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Process(driver);
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let capabilities = json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "binary": chromium, "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--window-size=1400,1200"] },
            "goog:loggingPrefs": { "browser": "ALL" },
        } } });
        let session = until(Duration::from_secs(20), "a chromedriver session", || {
            let (client, url, body) = (client.clone(), format!("{base}/session"), capabilities.clone());
            async move {
                let response = client.post(url).body(body.to_string()).send().await.ok()?;
                let value: Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
                value["value"]["sessionId"].as_str().map(str::to_owned)
            }
        })
        .await;
        Some(Browser { client, base, session, _driver: driver })
    }

    async fn command(&self, method: &str, path: &str, body: Value) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let (status, value) = request(&self.client, method, &url, None, (method != "GET").then_some(body)).await;
        assert_eq!(status, 200, "WebDriver {method} {path}: {value}");
        value["value"].clone()
    }

    async fn script(&self, source: &str) -> Value {
        self.command("POST", "/execute/sync", json!({ "script": source, "args": [] })).await
    }

    async fn console(&self) -> Vec<Value> {
        self.command("POST", "/se/log", json!({ "type": "browser" })).await.as_array().cloned().unwrap_or_default()
    }

    async fn close(self) {
        let url = format!("{}/session/{}", self.base, self.session);
        let _ = self.client.delete(url).send().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_runs_live_in_a_real_browser() {
    let Some(browser) = Browser::start().await else { return };
    let (server, base, path) = serve("dashboard", 250);
    browser.command("POST", "/url", json!({ "url": format!("{base}/") })).await;

    // Rail cards for every configured rail, once the stream is live.
    let demo = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/demo.toml")).unwrap();
    let configured: BTreeSet<String> = demo
        .split("[[rails]]")
        .skip(1)
        .filter_map(|block| {
            block.lines().find_map(|line| line.strip_prefix("id = \"")).map(|id| id.trim_end_matches('"').to_string())
        })
        .collect();
    assert!(configured.len() >= 5, "{configured:?}");
    let cards = until(Duration::from_secs(15), "rail cards", || {
        let browser = &browser;
        async move {
            let live = browser.script("return document.getElementById('conn').textContent").await;
            let cards =
                browser.script("return [...document.querySelectorAll('.rail-card')].map(c => c.dataset.rail)").await;
            (live == "live").then_some(cards)
        }
    })
    .await;
    let shown: BTreeSet<String> = cards.as_array().unwrap().iter().map(|id| id.as_str().unwrap().to_string()).collect();
    assert_eq!(shown, configured, "one card per configured rail");

    // Live figures move while the load simulator runs.
    let completed = || async {
        browser.script("return Number(document.getElementById('total-completed').textContent)").await.as_f64().unwrap()
    };
    let before = completed().await;
    let mut simulate = Process(
        Command::new(env!("CARGO_BIN_EXE_railyard"))
            .args(["simulate", "--target", &base, "--payouts", "150"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let after = until(Duration::from_secs(30), "the completed count to move", || async {
        let now = completed().await;
        (now >= before + 20.0).then_some(now)
    })
    .await;
    let share = until(Duration::from_secs(10), "route share", || async {
        let rows = browser.script("return document.querySelectorAll('#route-share .share').length").await;
        (rows.as_u64().unwrap_or(0) > 0).then_some(rows)
    })
    .await;
    eprintln!("completed {before} -> {after}; {share} corridors with route shares");
    let _ = simulate.0.wait();

    // The routing graph shows a best route for the selected corridor.
    let route = until(Duration::from_secs(10), "a best route in the graph", || async {
        let text = browser.script("return document.getElementById('graph-route').textContent").await;
        text.as_str().filter(|text| text.starts_with("best:")).map(str::to_owned)
    })
    .await;
    let highlighted =
        browser.script("return document.querySelectorAll('#graph line[stroke-width=\"4\"]').length").await;
    assert!(highlighted.as_u64().unwrap() >= 1, "{route}: no highlighted edge");

    // An injected outage shows on the rail's card within seconds.
    let (status, answer) = request(
        &reqwest::Client::new(),
        "PUT",
        &format!("{base}/v1/sandbox/rails/fps-uk/faults"),
        Some("rk_demo_admin"),
        Some(json!({ "outage": true })),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let injected = Instant::now();
    until(Duration::from_secs(5), "the outage on the fps-uk card", || async {
        let class = browser.script("return document.querySelector('.rail-card[data-rail=\"fps-uk\"]').className").await;
        class.as_str().is_some_and(|class| class.split(' ').any(|name| name == "down")).then_some(())
    })
    .await;
    eprintln!("outage shown after {:?}", injected.elapsed());

    // The state before the monitor's first tick (`{}`), and partial ones, render without errors
    // (a browser that connects early gets exactly that).
    let early = browser
        .script("try { render({}); render({ series: {} }); render({ series: { accepted: [1, 2] } }); return 'ok'; } catch (e) { return String(e); }")
        .await;
    assert_eq!(early, json!("ok"), "rendering an early state");

    let errors: Vec<Value> = browser.console().await.into_iter().filter(|entry| entry["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    drop(server);
    cleanup(&path);
}

/// The API docs page at `/docs`, in headless Chromium: every operation of `/openapi.json` is
/// listed with its request fields, and "Try it" sends a real quote and a real payout (with the
/// Idempotency-Key it fills in) to the server and shows the answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_docs_page_works_in_a_real_browser() {
    let Some(browser) = Browser::start().await else { return };
    let (server, base, path) = serve("docs", 1_000);
    let client = reqwest::Client::new();
    let (status, document) = request(&client, "GET", &format!("{base}/openapi.json"), None, None).await;
    assert_eq!(status, 200);
    let mut documented = BTreeSet::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert(format!("{method} {path}"));
        }
    }
    browser.command("POST", "/url", json!({ "url": format!("{base}/docs") })).await;
    until(Duration::from_secs(10), "the docs page to render", || async {
        let ready = browser.script("return document.body.dataset.ready || ''").await;
        ready.as_str().is_some_and(|ready| !ready.is_empty()).then_some(())
    })
    .await;
    let shown = browser
        .script("return [...document.querySelectorAll('.op')].map(op => op.dataset.method + ' ' + op.dataset.path)")
        .await;
    let shown: BTreeSet<String> = shown.as_array().unwrap().iter().map(|op| op.as_str().unwrap().to_string()).collect();
    assert_eq!(shown, documented, "the page lists exactly the documented operations");
    let links = browser.script("return document.querySelectorAll('#toc a').length").await;
    assert_eq!(links.as_u64().unwrap() as usize, documented.len());
    let quote_fields = browser
        .script(
            "return [...document.querySelector('.op[data-method=\"post\"][data-path=\"/v1/quotes\"] table.fields')\
             .querySelectorAll('td code')].map(c => c.textContent)",
        )
        .await;
    for field in ["source_currency", "destination_currency", "amount", "amount_type"] {
        assert!(quote_fields.to_string().contains(field), "{field} not listed: {quote_fields}");
    }

    // Try it: a quote, then a payout, with the demo PSP's key.
    let try_it = |method: &str, path: &str, body: &str| {
        format!(
            "document.getElementById('api-key').value = 'rk_demo_psp';\
             const op = document.querySelector('.op[data-method=\"{method}\"][data-path=\"{path}\"]');\
             op.querySelector('details.try').open = true;\
             op.querySelector('textarea.body').value = {body};\
             op.querySelector('button.send').click(); return true;",
            body = serde_json::to_string(body).unwrap()
        )
    };
    let answer = |method: &'static str, path: &'static str| {
        let browser = &browser;
        async move {
            let script = format!(
                "const op = document.querySelector('.op[data-method=\"{method}\"][data-path=\"{path}\"]');\
                 const status = op.querySelector('.result .status');\
                 return status ? [status.dataset.status, op.querySelector('.result pre').textContent] : null;"
            );
            let value = browser.script(&script).await;
            value.as_array().map(|pair| (pair[0].as_str().unwrap().to_string(), pair[1].as_str().unwrap().to_string()))
        }
    };
    let quote = r#"{"source_currency":"USD","destination_currency":"EUR","amount":"250.00","amount_type":"send","beneficiary_country":"DE"}"#;
    browser.script(&try_it("post", "/v1/quotes", quote)).await;
    let (status, text) = until(Duration::from_secs(10), "the quote's answer", || answer("post", "/v1/quotes")).await;
    assert_eq!(status, "200", "{text}");
    let quoted: Value = serde_json::from_str(&text).unwrap();
    assert!(quoted["routes"].as_array().is_some_and(|routes| !routes.is_empty()), "{quoted}");
    let payout = r#"{"source_currency":"USD","destination_currency":"EUR","amount":"250.00","amount_type":"send","beneficiary":{"name":"Jonas Weber","account":"DE89370400440532013000","country":"DE"},"reference":"docs page"}"#;
    browser.script(&try_it("post", "/v1/payouts", payout)).await;
    let (status, text) = until(Duration::from_secs(10), "the payout's answer", || answer("post", "/v1/payouts")).await;
    assert_eq!(status, "202", "{text}");
    let accepted: Value = serde_json::from_str(&text).unwrap();
    let id = accepted["id"].as_str().unwrap();
    let (status, stored) = request(&client, "GET", &format!("{base}/v1/payouts/{id}"), Some("rk_demo_psp"), None).await;
    assert_eq!(status, 200, "{stored}");
    assert_eq!(stored["reference"], "docs page", "{stored}");

    let errors: Vec<Value> = browser.console().await.into_iter().filter(|entry| entry["level"] == "SEVERE").collect();
    assert!(errors.is_empty(), "console errors: {errors:?}");
    browser.close().await;
    drop(server);
    cleanup(&path);
}
