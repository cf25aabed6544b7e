//! Railyard's HTTP API (axum): PSP payouts and quotes, treasury and admin endpoints, webhooks, the
//! monitoring dashboard, and the OpenAPI document every documented route comes from.
//!
//! Payouts are durable before a 2xx (the group-commit intake); reads are tenant-isolated. Errors
//! are `application/problem+json` naming the field; bodies are bounded; a full intake or a spent
//! per-key rate answers 429 with Retry-After; a store or routing actor that is down answers 503.

pub mod keys;
mod treasury;
pub mod webhooks;

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ractor::ActorRef;
use railyard_actors::change::{
    ChangeError, ChangeErrorKind, FeeFields, KILL_SWITCH_PREFIX, LimitsFields, SpreadFields, TreasuryChange,
    WeightsFields, fee_json,
};
use railyard_actors::routing::{AppliedChange, RoutingMsg, Snapshot};
use railyard_config::{Scope, TreasuryConfig};
use railyard_connector::Beneficiary;
use railyard_core::{Country, Currency, Money, Sign};
use railyard_routes::{Mode, RouteRequest};
use railyard_saga::intake::{Intake, IntakeError};
use railyard_saga::{AmountMode, Engine, EngineError, Payout, PayoutRequest, State as SagaState};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;

/// Items in one `POST /v1/payouts/batch`.
pub const BATCH_ITEMS_MAX: usize = 100;
/// Payouts in one page of `GET /v1/payouts`.
pub const PAGE_SIZE_MAX: i64 = 200;

/// Largest request body accepted.
pub const BODY_BYTES_MAX: usize = 512 * 1024;
/// Longest Idempotency-Key accepted.
pub const IDEMPOTENCY_KEY_LENGTH_MAX: usize = 128;
/// Seconds a client is told to wait when the intake is full.
pub const RETRY_AFTER_SECONDS: u32 = 1;
/// Dashboard event streams open at once; more are refused with 503.
pub const STREAMS_MAX: usize = 64;

#[derive(Clone)]
pub struct ApiState {
    pub config: Arc<TreasuryConfig>,
    pub engine: Arc<Engine>,
    pub intake: Intake,
    /// The routing actor (treasury changes, kill switches) and its snapshots (quotes, rail state).
    pub routing: ActorRef<RoutingMsg>,
    pub snapshots: watch::Receiver<Arc<Snapshot>>,
    pub limiter: Arc<RateLimiter>,
    /// The API keys in force (configuration and store), see [`keys`].
    pub keys: Arc<keys::KeyRing>,
    /// Metrics, the dashboard's state and anomaly detection (absent in tools that run without it).
    pub monitor: Option<railyard_monitor::Monitor>,
    /// Dashboard streams open now, bounded by [`STREAMS_MAX`].
    pub streams: Arc<std::sync::atomic::AtomicUsize>,
    /// The in-process sandbox rails (empty when every rail is remote), for sandbox onboarding.
    pub sandboxes: Arc<Vec<(String, railyard_rails::SandboxRail)>>,
}

/// Requests per second each API key may make, with a burst allowance.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    /// 100 requests per second with bursts of 200, per key.
    pub const DEFAULT: RateLimit = RateLimit { per_second: 100, burst: 200 };
}

/// A token bucket per API key. Only known keys get a bucket, so the map is bounded by the
/// configuration's keys and [`railyard_store::keys::KEYS_PER_TENANT_MAX`] per tenant.
pub struct RateLimiter {
    limit: RateLimit,
    buckets: std::sync::Mutex<std::collections::HashMap<[u8; 32], (u64, std::time::Instant)>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter { limit, buckets: std::sync::Mutex::default() }
    }

    /// Takes a token for `key`; `Err(seconds)` to wait when the bucket is empty. Tokens are kept in
    /// thousandths so refills need no fractions.
    fn take(&self, key: [u8; 32]) -> Result<(), u32> {
        let capacity = u64::from(self.limit.burst.max(1)) * 1_000;
        let now = std::time::Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (tokens, last) = buckets.entry(key).or_insert((capacity, now));
        let elapsed_ms = u64::try_from(now.duration_since(*last).as_millis()).unwrap_or(u64::MAX);
        *tokens = tokens.saturating_add(elapsed_ms.saturating_mul(u64::from(self.limit.per_second))).min(capacity);
        *last = now;
        if *tokens >= 1_000 {
            *tokens -= 1_000;
            Ok(())
        } else {
            let per_second = u64::from(self.limit.per_second.max(1));
            let wait_ms = (1_000 - *tokens).div_ceil(per_second);
            Err(u32::try_from(wait_ms.div_ceil(1_000)).unwrap_or(u32::MAX).max(1))
        }
    }
}

/// An RFC 9457 problem, as documented.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct ProblemDoc {
    r#type: String,
    title: String,
    status: u16,
    detail: String,
    /// The request field at fault, when one is.
    field: Option<String>,
}

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "Railyard API", description = "Cross-border payouts: quotes, payouts, webhooks, treasury."),
    components(schemas(ProblemDoc)),
    modifiers(&BearerAuth)
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)));
    }
}

/// Every documented route, registered and documented in one place so the two cannot drift.
fn documented() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa::OpenApi;
    use utoipa_axum::router::UtoipaMethodRouterExt;
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(create_payout, list_payouts))
        .routes(routes!(create_batch))
        .routes(routes!(get_payout))
        .routes(routes!(balances))
        .routes(routes!(quote))
        .routes(routes!(treasury_rails))
        .routes(routes!(kill_switch))
        .routes(routes!(set_fee))
        .routes(routes!(set_limits))
        .routes(routes!(set_weights))
        .routes(routes!(treasury_fx))
        .routes(routes!(set_provider_spread))
        .routes(routes!(set_rail_spread))
        .routes(routes!(audit))
        .routes(routes!(liquidity))
        .routes(routes!(move_liquidity))
        .routes(routes!(treasury::windows))
        .routes(routes!(treasury::window))
        .routes(routes!(treasury::window_report))
        .routes(routes!(treasury::close_window))
        .routes(routes!(treasury::settle_window))
        .routes(routes!(treasury::rebalance))
        .routes(routes!(treasury::reconcile_report).layer(DefaultBodyLimit::max(treasury::UPLOAD_BYTES_MAX)))
        .routes(routes!(webhook_secret))
        .routes(routes!(webhook_deliveries))
        .routes(routes!(redeliver))
        .routes(routes!(cancel_payout))
        .routes(routes!(approvals))
        .routes(routes!(approve_payout))
        .routes(routes!(reject_payout))
        .routes(routes!(audit_verify))
        .routes(routes!(create_key, list_keys))
        .routes(routes!(revoke_key))
        .routes(routes!(sandbox_card))
        .routes(routes!(sandbox_wallet))
        .routes(routes!(sandbox_faults))
}

/// The OpenAPI document of every route [`router`] serves.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

pub fn router(state: ApiState) -> axum::Router {
    let (routes, document) = documented().split_for_parts();
    let document = Arc::new(document.to_pretty_json().unwrap_or_default());
    routes
        .route("/healthz", get(|| async { Json(json!({ "status": "ok" })) }))
        .route(
            "/openapi.json",
            get(move || {
                let document = document.clone();
                async move { ([(header::CONTENT_TYPE, "application/json")], document.as_str().to_owned()) }
            }),
        )
        .route("/docs", get(|| async { axum::response::Html(DOCS_PAGE) }))
        .route("/", get(|| async { axum::response::Html(DASHBOARD_PAGE) }))
        .route("/metrics", get(metrics))
        .route("/v1/monitor/state", get(monitor_state))
        .route("/v1/monitor/stream", get(monitor_stream))
        .route("/v1/monitor/graph", get(monitor_graph))
        .layer(DefaultBodyLimit::max(BODY_BYTES_MAX))
        .with_state(state)
}

/// A self-contained docs page (no assets fetched from anywhere) that reads `/openapi.json`.
const DOCS_PAGE: &str = include_str!("docs.html");
/// The live dashboard: one self-contained page (no assets fetched from anywhere) that reads
/// `/v1/monitor/stream` and `/v1/monitor/graph`.
const DASHBOARD_PAGE: &str = include_str!("dashboard.html");

/// An RFC 9457 problem.
pub struct Problem {
    status: StatusCode,
    title: &'static str,
    detail: String,
    field: Option<String>,
    retry_after: Option<u32>,
}

impl Problem {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> Problem {
        Problem { status, title, detail: detail.into(), field: None, retry_after: None }
    }

    fn field(mut self, field: &str) -> Problem {
        self.field = Some(field.into());
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({ "type": "about:blank", "title": self.title, "status": self.status.as_u16(), "detail": self.detail });
        if let Some(field) = &self.field {
            body["field"] = Value::String(field.clone());
        }
        let mut response = (self.status, body.to_string()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if let Some(seconds) = self.retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// Who is calling: the tenant, the key's name as the audit log and approvals record it
/// (`tenant/key-id`), and whether the tenant is the operator (it holds a treasury or admin key).
struct Caller {
    tenant: String,
    key: String,
    operator: bool,
}

/// The tenant an API key belongs to, if the key carries `scope`. Compares hashes in constant time.
fn authenticate(state: &ApiState, headers: &HeaderMap, scope: Scope) -> Result<String, Problem> {
    authenticate_caller(state, headers, scope).map(|caller| caller.tenant)
}

fn authenticate_caller(state: &ApiState, headers: &HeaderMap, scope: Scope) -> Result<Caller, Problem> {
    let unauthorized =
        || Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "send Authorization: Bearer <api key>");
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or_else(unauthorized)?;
    let digest = railyard_store::keys::digest(token);
    let Some(key) = state.keys.find(&digest) else {
        return Err(unauthorized());
    };
    if !key.active() {
        return Err(Problem::new(StatusCode::UNAUTHORIZED, "Unauthorized", "this API key has been revoked"));
    }
    if let Err(seconds) = state.limiter.take(digest) {
        if let Some(monitor) = &state.monitor {
            monitor.shed();
        }
        let mut problem =
            Problem::new(StatusCode::TOO_MANY_REQUESTS, "Too many requests", "this API key is over its rate limit");
        problem.retry_after = Some(seconds);
        return Err(problem);
    }
    if !key.scopes.contains(&scope) {
        return Err(Problem::new(StatusCode::FORBIDDEN, "Forbidden", format!("this key lacks the {scope:?} scope")));
    }
    let operator = state.keys.operator(&key.tenant);
    Ok(Caller { key: format!("{}/{}", key.tenant, key.id), tenant: key.tenant, operator })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct BeneficiaryBody {
    name: String,
    account: String,
    country: String,
    /// `iban` or `account` (instant rails), `card_token` (card networks), `wallet` (CBDC).
    #[serde(default)]
    account_type: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PayoutBody {
    source_currency: String,
    destination_currency: String,
    amount: String,
    amount_type: String,
    beneficiary: BeneficiaryBody,
    #[serde(default)]
    reference: String,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    /// Pay against this quote: its route and locked rates (the corridor and amount must match it).
    #[serde(default)]
    quote_id: Option<String>,
    /// The PSP's customer paying, screened like the beneficiary.
    #[serde(default)]
    originator: Option<OriginatorBody>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct OriginatorBody {
    name: String,
    #[serde(default)]
    country: Option<String>,
}

fn invalid(field: &str, detail: impl Into<String>) -> Problem {
    Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request", detail).field(field)
}

/// Reads a JSON body; a syntax or type error is a 400 naming the line and column.
fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Problem> {
    serde_json::from_slice(body).map_err(|error| {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "Malformed JSON",
            format!("line {}, column {}: {error}", error.line(), error.column()),
        )
    })
}

fn parse_payout(body: &[u8]) -> Result<PayoutRequest, Problem> {
    let body: PayoutBody = json_body(body)?;
    let source =
        Currency::from_code(&body.source_currency).map_err(|error| invalid("source_currency", error.to_string()))?;
    let destination = Currency::from_code(&body.destination_currency)
        .map_err(|error| invalid("destination_currency", error.to_string()))?;
    let mode = match body.amount_type.as_str() {
        "send" => AmountMode::Send,
        "deliver" => AmountMode::Deliver,
        other => return Err(invalid("amount_type", format!("expected \"send\" or \"deliver\", got {other:?}"))),
    };
    let amount_currency = if mode == AmountMode::Send { source } else { destination };
    let amount = Money::parse(&body.amount, amount_currency, Sign::Positive)
        .map_err(|error| invalid("amount", error.to_string()))?;
    let country = Country::from_code(&body.beneficiary.country)
        .map_err(|error| invalid("beneficiary.country", error.to_string()))?;
    if body.beneficiary.name.trim().is_empty() || body.beneficiary.name.len() > 140 {
        return Err(invalid("beneficiary.name", "1 to 140 characters"));
    }
    if body.beneficiary.account.trim().is_empty() || body.beneficiary.account.len() > 64 {
        return Err(invalid("beneficiary.account", "1 to 64 characters"));
    }
    let rail_kind = match body.beneficiary.account_type.as_deref() {
        None => None,
        Some("iban" | "account") => Some(railyard_config::RailKind::Instant),
        Some("card_token") => Some(railyard_config::RailKind::Card),
        Some("wallet") => Some(railyard_config::RailKind::Cbdc),
        Some(other) => {
            return Err(invalid(
                "beneficiary.account_type",
                format!("expected iban, account, card_token or wallet, got {other:?}"),
            ));
        }
    };
    if body.reference.len() > 140 {
        return Err(invalid("reference", "at most 140 characters"));
    }
    if body.metadata.as_ref().is_some_and(|metadata| metadata.to_string().len() > 4_096) {
        return Err(invalid("metadata", "at most 4096 bytes of JSON"));
    }
    let originator = match body.originator {
        None => None,
        Some(originator) => {
            if originator.name.trim().is_empty() || originator.name.len() > 140 {
                return Err(invalid("originator.name", "1 to 140 characters"));
            }
            let country = originator
                .country
                .as_deref()
                .map(Country::from_code)
                .transpose()
                .map_err(|error| invalid("originator.country", error.to_string()))?;
            Some(railyard_saga::Originator { name: originator.name, country })
        }
    };
    Ok(PayoutRequest {
        source,
        destination,
        amount,
        mode,
        beneficiary: Beneficiary { name: body.beneficiary.name, account: body.beneficiary.account, country },
        remittance: body.reference,
        rail_kind,
        quote_id: body.quote_id,
        originator,
        account_masked: None,
        submitted_by: None,
    })
}

/// The rail kind an account type is credited on.
fn account_kind(account_type: Option<&str>) -> Result<Option<railyard_config::RailKind>, Problem> {
    Ok(match account_type {
        None => None,
        Some("iban" | "account") => Some(railyard_config::RailKind::Instant),
        Some("card_token") => Some(railyard_config::RailKind::Card),
        Some("wallet") => Some(railyard_config::RailKind::Cbdc),
        Some(other) => {
            return Err(invalid(
                "account_type",
                format!("expected iban, account, card_token or wallet, got {other:?}"),
            ));
        }
    })
}

fn status_name(state: SagaState) -> &'static str {
    match state {
        SagaState::Accepted => "received",
        SagaState::Routed => "routed",
        SagaState::Reserved => "reserved",
        SagaState::Quoted => "fx_locked",
        SagaState::Submitting => "submitted",
        SagaState::InDoubt => "in_doubt",
        SagaState::Completed => "completed",
        SagaState::Failed => "failed",
        SagaState::Cancelled => "cancelled",
        SagaState::Screening => "screening",
        SagaState::AwaitingApproval => "awaiting_approval",
        SagaState::Returned => "returned",
    }
}

/// Masks all but the last four characters of an account number.
pub fn mask(account: &str) -> String {
    let count = account.chars().count();
    account.chars().enumerate().map(|(index, character)| if index + 4 < count { '•' } else { character }).collect()
}

fn payout_json(payout: &Payout) -> Value {
    let request = &payout.request;
    json!({
        "id": payout.id,
        "status": status_name(payout.state),
        "source_currency": request.source.code(),
        "destination_currency": request.destination.code(),
        "amount": request.amount.amount_text(),
        "amount_type": if request.mode == AmountMode::Send { "send" } else { "deliver" },
        "beneficiary": {
            "name": request.beneficiary.name,
            // Only the masked form ever leaves: the account itself is in the vault.
            "account": request.account_masked.clone().unwrap_or_else(|| mask(&request.beneficiary.account)),
            "country": request.beneficiary.country.code(),
        },
        "originator": request.originator.as_ref().map(|originator| json!({
            "name": originator.name,
            "country": originator.country.map(|country| country.code().to_string()),
        })),
        "risk": payout.risk.as_ref().map(|risk| json!({
            "decision": risk.decision.as_str(),
            "score": risk.score,
            "reasons": risk.reasons,
            "screening": risk.screening,
            "assessed_at": risk.assessed_at.to_rfc3339(),
            "expires_at": risk.expires_at.map(|at| at.to_rfc3339()),
        })),
        "decided_by": payout.decided_by,
        "reference": request.remittance,
        "route": payout.route.as_ref().map(|route| json!({
            "send": route.send.amount_text(),
            "receive": route.receive.amount_text(),
            "legs": route.legs.iter().map(|leg| json!({
                "rail": leg.operator,
                "kind": leg.kind,
                "from": leg.from.code(),
                "to": leg.to.code(),
                "send": leg.send.amount_text(),
                "receive": leg.receive.amount_text(),
                "fee": leg.fee.amount_text(),
                "rate": leg.rate.map(|rate| rate.to_string()),
                "reference": leg.execution.as_ref().map(|execution| execution.reference.clone()),
            })).collect::<Vec<_>>(),
        })),
        "reason": payout.reason,
        "created_at": chrono::DateTime::from_timestamp_micros(payout.created_at).map(|at| at.to_rfc3339()),
    })
}

#[utoipa::path(post, path = "/v1/payouts", tag = "payouts", request_body = PayoutBody, params(("Idempotency-Key" = String, Header, description = "required; same key and body replay the first answer")), responses((status = 202, description = "accepted, durable", body = Object), (status = 409, description = "key reused with another body", body = ProblemDoc), (status = 422, description = "invalid field", body = ProblemDoc), (status = 429, description = "rate limit or intake full, Retry-After", body = ProblemDoc)), security(("bearer" = [])))]
async fn create_payout(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    let caller = authenticate_caller(&state, &headers, Scope::Psp)?;
    let tenant = caller.tenant;
    let key = headers
        .get("idempotency-key")
        .and_then(|value| value.to_str().ok())
        .map(str::trim)
        .filter(|key| !key.is_empty())
        .ok_or_else(|| {
            Problem::new(StatusCode::BAD_REQUEST, "Idempotency-Key required", "send an Idempotency-Key header")
                .field("Idempotency-Key")
        })?;
    if key.len() > IDEMPOTENCY_KEY_LENGTH_MAX {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key too long",
            format!("at most {IDEMPOTENCY_KEY_LENGTH_MAX} characters"),
        )
        .field("Idempotency-Key"));
    }
    let mut request = parse_payout(&body)?;
    request.submitted_by = Some(caller.key);
    let (accepted, known) = match timed_accept(&state, &tenant, key, &request).await {
        Ok(answer) => answer,
        Err(IntakeError::Overloaded) => {
            if let Some(monitor) = &state.monitor {
                monitor.shed();
            }
            // 429, as the per-key rate limit: the caller should slow down and retry after the
            // delay; 503 is kept for a server that cannot serve at all (store or routing down).
            let mut problem =
                Problem::new(StatusCode::TOO_MANY_REQUESTS, "Overloaded", "the payout intake is full; retry shortly");
            problem.retry_after = Some(RETRY_AFTER_SECONDS);
            return Err(problem);
        }
        Err(IntakeError::Engine(EngineError::Conflict(existing))) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "Idempotency-Key reused",
                format!("this key was used for payout {existing} with a different request"),
            ));
        }
        Err(IntakeError::Engine(EngineError::Invalid(detail))) => return Err(invalid("body", detail)),
        Err(error) => {
            // The store did not commit (locked past its busy timeout, or down): nothing is stored
            // and the same request, with the same key, may be sent again.
            let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", error.to_string());
            problem.retry_after = Some(RETRY_AFTER_SECONDS);
            return Err(problem);
        }
    };
    let payout = accepted_payout(&state, &accepted, known)
        .await
        .map_err(|error| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store error", error.to_string()))?;
    let mut response = (StatusCode::ACCEPTED, Json(payout_json(&payout))).into_response();
    if accepted.replay {
        response.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

#[utoipa::path(get, path = "/v1/payouts/{id}", tag = "payouts", params(("id" = String, Path)), responses((status = 200, description = "the payout, with its history: every status it entered, when and why", body = Object), (status = 404, description = "no such payout for this tenant", body = ProblemDoc)), security(("bearer" = [])))]
async fn get_payout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let not_found = || Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no payout {id}"));
    let payout = state.engine.payout(&id).await.map_err(|_| not_found())?;
    // A state is shown once it is durable (saga steps share their flushes; see Store::sync).
    state.engine.store().sync().await.map_err(store_error)?;
    // Another tenant's payout does not exist as far as this caller can tell.
    if payout.tenant != tenant {
        return Err(not_found());
    }
    // Every transition, timestamped: steps that commit together (a group) still each show.
    let history = state
        .engine
        .history(&id)
        .await
        .map_err(|error| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store error", error.to_string()))?;
    let mut body = payout_json(&payout);
    body["history"] = history
        .iter()
        .map(|entry| json!({ "status": status_name(entry.state), "at": entry.at.to_rfc3339(), "detail": entry.detail }))
        .collect();
    Ok(Json(body).into_response())
}

#[utoipa::path(get, path = "/v1/balances", tag = "payouts", responses((status = 200, description = "balances per currency", body = Object)), security(("bearer" = [])))]
async fn balances(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let all = railyard_store::ledger::balances(state.engine.store().pool())
        .await
        .map_err(|error| Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store error", error.to_string()))?;
    let prefix = format!("psp:{tenant}:");
    let mine: Vec<Value> = all
        .iter()
        .filter(|balance| balance.id.starts_with(&prefix))
        .map(|balance| json!({ "currency": balance.currency.code(), "posted": balance.posted().amount_text(), "available": balance.available().amount_text() }))
        .collect();
    Ok(Json(json!({ "balances": mine })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct QuoteBody {
    source_currency: String,
    destination_currency: String,
    amount: String,
    amount_type: String,
    #[serde(default)]
    beneficiary_country: Option<String>,
    /// The beneficiary's account type (`iban`, `account`, `card_token`, `wallet`), when known.
    #[serde(default)]
    account_type: Option<String>,
}

#[utoipa::path(post, path = "/v1/quotes", tag = "quotes", request_body = QuoteBody, responses((status = 200, description = "routes with per-leg breakdown and expiry", body = Object), (status = 422, description = "invalid field or no route", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/quotes`: the best route and up to two alternatives on the live routing snapshot, with
/// per-leg breakdown and the time until which its FX rates hold.
async fn quote(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let body: QuoteBody = json_body(&body)?;
    let source =
        Currency::from_code(&body.source_currency).map_err(|error| invalid("source_currency", error.to_string()))?;
    let destination = Currency::from_code(&body.destination_currency)
        .map_err(|error| invalid("destination_currency", error.to_string()))?;
    let mode = match body.amount_type.as_str() {
        "send" => Mode::Send,
        "deliver" => Mode::Deliver,
        other => return Err(invalid("amount_type", format!("expected \"send\" or \"deliver\", got {other:?}"))),
    };
    let amount_currency = if mode == Mode::Send { source } else { destination };
    let amount = Money::parse(&body.amount, amount_currency, Sign::Positive)
        .map_err(|error| invalid("amount", error.to_string()))?;
    let country = match &body.beneficiary_country {
        Some(country) => {
            Some(Country::from_code(country).map_err(|error| invalid("beneficiary_country", error.to_string()))?)
        }
        None => None,
    };
    let rail_kind = account_kind(body.account_type.as_deref()).map_err(|problem| problem.field("account_type"))?;
    // Alternatives from the live snapshot, for the PSP to compare.
    let snapshot = state.snapshots.borrow().clone();
    let mut request = RouteRequest::payout(source, destination, amount, mode, chrono::Utc::now());
    request.alternatives = 2;
    request.country = country;
    let set = snapshot
        .router
        .route(&request)
        .map_err(|error| Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "No route", error.to_string()))?;
    // The best route for this kind of account, kept so that a payout can follow it.
    let payout = PayoutRequest {
        source,
        destination,
        amount,
        mode: if mode == Mode::Send { AmountMode::Send } else { AmountMode::Deliver },
        beneficiary: Beneficiary {
            name: String::new(),
            account: String::new(),
            country: country.unwrap_or_else(|| Country::from_code("US").unwrap_or_else(|_| unreachable!("US exists"))),
        },
        remittance: String::new(),
        rail_kind,
        quote_id: None,
        originator: None,
        account_masked: None,
        submitted_by: None,
    };
    let stored = state.engine.quote(&tenant, &payout, country).await.map_err(|error| match error {
        EngineError::Invalid(detail) => Problem::new(StatusCode::UNPROCESSABLE_ENTITY, "No route", detail),
        other => store_error(other),
    })?;
    Ok(Json(json!({
        "quote_id": stored.id,
        "expires_at": stored.expires_at.to_rfc3339(),
        "send": stored.route.send.amount_text(),
        "receive": stored.route.receive.amount_text(),
        "legs": stored.route.legs.iter().map(|leg| json!({
            "rail": leg.operator, "kind": leg.kind, "from": leg.from.code(), "to": leg.to.code(),
            "send": leg.send.amount_text(), "receive": leg.receive.amount_text(), "fee": leg.fee.amount_text(),
            "rate": leg.rate.map(|rate| rate.to_string()),
        })).collect::<Vec<_>>(),
        "routes": set.routes.iter().map(railyard_routes::route_json).collect::<Vec<_>>(),
        "exact": set.exact,
        "snapshot_version": snapshot.version,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/v1/treasury/rails", tag = "treasury", responses((status = 200, description = "live rail state", body = Object)), security(("bearer" = [])))]
/// `GET /v1/treasury/rails`: every rail's live state as routing sees it.
async fn treasury_rails(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let snapshot = state.snapshots.borrow().clone();
    let rails: Vec<Value> = snapshot
        .config
        .rails
        .iter()
        .map(|rail| {
            let live = snapshot.live.get(rail.id.as_str());
            json!({
                "rail": rail.id.as_str(),
                "kind": rail.kind,
                "available": live.and_then(|live| live.available),
                "latency_ms": live.and_then(|live| live.latency_ms),
                "success_probability": live.and_then(|live| live.success_probability).map(|value| value.to_string()),
                "kill_switch": snapshot.killed.contains(rail.id.as_str()),
                "fees": rail.fees.iter().map(|(currency, fee)| (currency.code().to_string(), fee_json(fee))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    Ok(Json(json!({ "snapshot_version": snapshot.version, "rails": rails })).into_response())
}

/// The caller's name for the audit log: `tenant/key-id`.
fn who(state: &ApiState, headers: &HeaderMap, scope: Scope) -> Result<String, Problem> {
    authenticate_caller(state, headers, scope).map(|caller| caller.key)
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KillSwitchBody {
    engaged: bool,
}

#[utoipa::path(post, path = "/v1/treasury/rails/{rail}/kill-switch", tag = "treasury", request_body = KillSwitchBody, params(("rail" = String, Path)), responses((status = 200, description = "applied", body = Object), (status = 404, description = "no such rail", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/treasury/rails/{rail}/kill-switch` (scope admin): take a rail out of routing or put it back.
async fn kill_switch(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(rail): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Admin)?;
    let body: KillSwitchBody = serde_json::from_slice(&body).map_err(|error| invalid("engaged", error.to_string()))?;
    if state.config.rail(&rail).is_none() {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no rail {rail}")));
    }
    // Durable first: an applied switch is never missing from the audit log.
    let detail = format!("{rail}: {}", if body.engaged { "engaged" } else { "released" });
    // Kept while engaged, so a restart does not silently put the rail back into routing.
    let key = format!("{KILL_SWITCH_PREFIX}{rail}");
    let value = body.engaged.then_some(r#"{"engaged":true}"#);
    railyard_store::settings::record(state.engine.store(), &by, "rail.kill_switch", &detail, &key, value)
        .await
        .map_err(store_error)?;
    state.routing.send_message(RoutingMsg::KillSwitch { rail: rail.clone(), engaged: body.engaged, by }).map_err(
        |_| Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Routing unavailable", "the routing actor is not running"),
    )?;
    Ok(Json(json!({ "rail": rail, "kill_switch": body.engaged })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FeeBody {
    fixed: String,
    bps: String,
    #[serde(default)]
    min: Option<String>,
    #[serde(default)]
    max: Option<String>,
}

/// Applies a treasury change through the routing actor, which validates it, records it with its
/// audit entry in one transaction (so it outlives restarts) and publishes it; a refusal changes
/// nothing and is itself audited.
async fn apply_change(state: &ApiState, by: String, change: TreasuryChange) -> Result<AppliedChange, Problem> {
    let answer = ractor::call!(state.routing, |reply| RoutingMsg::Apply { change, by, reply }).map_err(|_| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Routing unavailable", "the routing actor is not running")
    })?;
    answer.map_err(change_problem)
}

fn change_problem(error: ChangeError) -> Problem {
    match error.kind {
        ChangeErrorKind::NotFound => Problem::new(StatusCode::NOT_FOUND, "Not found", error.reason),
        ChangeErrorKind::Invalid => invalid(&error.field, error.reason),
        ChangeErrorKind::Unavailable => {
            let mut problem = Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Store unavailable", error.reason);
            problem.retry_after = Some(1);
            problem
        }
    }
}

#[utoipa::path(put, path = "/v1/treasury/rails/{rail}/fees/{currency}", tag = "treasury", request_body = FeeBody, params(("rail" = String, Path), ("currency" = String, Path)), responses((status = 200, description = "applied live, audited, kept across restarts", body = Object), (status = 404, description = "no such rail", body = ProblemDoc), (status = 422, description = "invalid field", body = ProblemDoc)), security(("bearer" = [])))]
/// `PUT /v1/treasury/rails/{rail}/fees/{currency}` (scope treasury): a new fee schedule, applied
/// live to routing and audited with before and after.
async fn set_fee(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((rail, code)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let body: FeeBody = json_body(&body)?;
    let fields = FeeFields { fixed: body.fixed, bps: body.bps, min: body.min, max: body.max };
    let change = TreasuryChange::fee(&rail, &code, &fields).map_err(change_problem)?;
    let applied = apply_change(&state, by, change).await?;
    Ok(Json(json!({ "rail": rail, "currency": code.to_ascii_uppercase(), "before": applied.before, "after": applied.after, "snapshot_version": applied.version })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LimitsBody {
    min: String,
    max: String,
    #[serde(default)]
    daily_cap: Option<String>,
}

#[utoipa::path(put, path = "/v1/treasury/rails/{rail}/limits/{currency}", tag = "treasury", request_body = LimitsBody, params(("rail" = String, Path), ("currency" = String, Path)), responses((status = 200, description = "applied live, audited, kept across restarts", body = Object), (status = 404, description = "no such rail", body = ProblemDoc), (status = 422, description = "invalid field", body = ProblemDoc)), security(("bearer" = [])))]
/// `PUT /v1/treasury/rails/{rail}/limits/{currency}` (scope treasury): per-payment bounds and the
/// daily cap, applied live to routing and audited with before and after.
async fn set_limits(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((rail, code)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let body: LimitsBody = json_body(&body)?;
    let fields = LimitsFields { min: body.min, max: body.max, daily_cap: body.daily_cap };
    let change = TreasuryChange::limits(&rail, &code, &fields).map_err(change_problem)?;
    let applied = apply_change(&state, by, change).await?;
    Ok(Json(json!({ "rail": rail, "currency": code.to_ascii_uppercase(), "before": applied.before, "after": applied.after, "snapshot_version": applied.version })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WeightsBody {
    /// Multiplier on a route's money cost.
    cost_weight: String,
    /// Reference-currency units one second of expected latency is worth.
    latency_weight_per_second: String,
    /// Reference-currency units one unit of risk (-ln of the success probability) is worth.
    risk_weight: String,
}

#[utoipa::path(put, path = "/v1/treasury/routing/weights", tag = "treasury", request_body = WeightsBody, params(), responses((status = 200, description = "applied live, audited, kept across restarts", body = Object), (status = 422, description = "invalid field", body = ProblemDoc)), security(("bearer" = [])))]
/// `PUT /v1/treasury/routing/weights` (scope treasury): the routing objective's weights, applied
/// live and audited with before and after.
async fn set_weights(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let body: WeightsBody = json_body(&body)?;
    let fields = WeightsFields {
        cost_weight: body.cost_weight,
        latency_weight_per_second: body.latency_weight_per_second,
        risk_weight: body.risk_weight,
    };
    let change = TreasuryChange::weights(&fields).map_err(change_problem)?;
    let applied = apply_change(&state, by, change).await?;
    Ok(Json(json!({ "before": applied.before, "after": applied.after, "snapshot_version": applied.version }))
        .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SpreadBody {
    /// Basis points off the mid rate, at least 0 and below 10000, at most two decimals.
    spread_bps: String,
    /// "EUR/BRL": one pair's spread (both directions). Absent: the provider's default spread.
    #[serde(default)]
    pair: Option<String>,
}

#[utoipa::path(put, path = "/v1/treasury/fx/providers/{provider}/spread", tag = "treasury", request_body = SpreadBody, params(("provider" = String, Path)), responses((status = 200, description = "applied live, audited, kept across restarts", body = Object), (status = 404, description = "no such provider", body = ProblemDoc), (status = 422, description = "invalid field", body = ProblemDoc)), security(("bearer" = [])))]
/// `PUT /v1/treasury/fx/providers/{provider}/spread` (scope treasury): an FX provider's default
/// spread, or one pair's; the FX book routing quotes from is rebuilt with it at once.
async fn set_provider_spread(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(provider): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let body: SpreadBody = json_body(&body)?;
    let change =
        TreasuryChange::provider_spread(&provider, &SpreadFields { spread_bps: body.spread_bps, pair: body.pair })
            .map_err(change_problem)?;
    let applied = apply_change(&state, by, change).await?;
    Ok(Json(json!({ "provider": provider, "before": applied.before, "after": applied.after, "snapshot_version": applied.version })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct RailSpreadBody {
    /// Basis points off the mid rate for the rail's in-network conversions.
    spread_bps: String,
}

#[utoipa::path(put, path = "/v1/treasury/rails/{rail}/fx-spread", tag = "treasury", request_body = RailSpreadBody, params(("rail" = String, Path)), responses((status = 200, description = "applied live, audited, kept across restarts", body = Object), (status = 404, description = "no such rail", body = ProblemDoc), (status = 422, description = "invalid field", body = ProblemDoc)), security(("bearer" = [])))]
/// `PUT /v1/treasury/rails/{rail}/fx-spread` (scope treasury): the spread of a rail's in-network
/// conversions (card networks, CBDC bridges).
async fn set_rail_spread(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(rail): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let body: RailSpreadBody = json_body(&body)?;
    let change = TreasuryChange::rail_fx_spread(&rail, &SpreadFields { spread_bps: body.spread_bps, pair: None })
        .map_err(change_problem)?;
    let applied = apply_change(&state, by, change).await?;
    Ok(Json(
        json!({ "rail": rail, "before": applied.before, "after": applied.after, "snapshot_version": applied.version }),
    )
    .into_response())
}

#[utoipa::path(get, path = "/v1/treasury/fx", tag = "treasury", responses((status = 200, description = "FX providers, spreads and the rates routing quotes in force", body = Object)), security(("bearer" = [])))]
/// `GET /v1/treasury/fx` (scope treasury): each provider's spreads and the conversions routing
/// quotes from (mid, rate, spread per direction), each rail's in-network spread, the reference
/// rates' date, and the settings changed at run time (laid over the configuration file).
async fn treasury_fx(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let snapshot = state.snapshots.borrow().clone();
    let providers: Vec<Value> = snapshot
        .config
        .fx_providers
        .iter()
        .map(|provider| {
            let conversions: Vec<Value> = snapshot
                .fx
                .conversions()
                .iter()
                .filter(|conversion| conversion.provider == provider.id)
                .map(|conversion| {
                    json!({
                        "pair": format!("{}/{}", conversion.base, conversion.quote),
                        "mid": conversion.mid.value().to_string(),
                        "rate": conversion.rate.value().to_string(),
                        "spread_bps": conversion.spread_bps.to_string(),
                    })
                })
                .collect();
            json!({
                "provider": provider.id.as_str(),
                "name": provider.name,
                "spread_bps": provider.spread_bps.to_string(),
                "pair_spreads": provider.pair_spreads.iter().map(|(pair, bps)| (pair.to_string(), Value::String(bps.to_string()))).collect::<serde_json::Map<_, _>>(),
                "quote_ttl_seconds": provider.quote_ttl_seconds,
                "conversions": conversions,
            })
        })
        .collect();
    let rails: Vec<Value> = snapshot
        .config
        .rails
        .iter()
        .filter_map(|rail| {
            let fx = rail.fx.as_ref()?;
            Some(json!({
                "rail": rail.id.as_str(),
                "spread_bps": fx.spread_bps.to_string(),
                "pairs": fx.pairs.iter().map(|pair| pair.to_string()).collect::<Vec<_>>(),
            }))
        })
        .collect();
    let settings = railyard_store::settings::list(state.engine.store()).await.map_err(store_error)?;
    let changed: Vec<Value> = settings
        .iter()
        .map(|setting| {
            json!({
                "key": setting.key,
                "value": serde_json::from_str::<Value>(&setting.value).unwrap_or(Value::Null),
                "changed_at": chrono::DateTime::from_timestamp_micros(setting.changed_at).map(|at| at.to_rfc3339()),
                "changed_by": setting.changed_by,
            })
        })
        .collect();
    Ok(Json(json!({
        "reference_date": snapshot.fx.reference().date().to_string(),
        "providers": providers,
        "rails": rails,
        "changed_settings": changed,
        "snapshot_version": snapshot.version,
    }))
    .into_response())
}

#[utoipa::path(get, path = "/v1/treasury/audit", tag = "treasury", responses((status = 200, description = "who changed what, when", body = Object)), security(("bearer" = [])))]
/// `GET /v1/treasury/audit`: who changed what, when (newest first, from the store).
async fn audit(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let entries = state.engine.store().audit_log(railyard_store::AUDIT_PAGE_MAX).await.map_err(store_error)?;
    let entries: Vec<Value> = entries
        .iter()
        .map(|entry| {
            json!({
                "sequence": entry.sequence,
                "at": chrono::DateTime::from_timestamp_micros(entry.at).map(|at| at.to_rfc3339()),
                "by": entry.actor,
                "action": entry.action,
                "change": entry.detail,
                "hash": entry.hash,
            })
        })
        .collect();
    Ok(Json(json!({ "entries": entries })).into_response())
}

#[utoipa::path(get, path = "/v1/treasury/liquidity", tag = "treasury", responses((status = 200, description = "every rail's prefunded position per currency, and the open water-mark alerts", body = Object)), security(("bearer" = [])))]
/// `GET /v1/treasury/liquidity` (scope treasury): positions (prefunded, reserved, available, marks,
/// level) from the ledger, and the open low/high-water alerts.
async fn liquidity(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Treasury)?;
    let config = state.snapshots.borrow().config.clone();
    let store = state.engine.store();
    let positions = railyard_treasury::liquidity::positions(store, &config).await.map_err(store_error)?;
    let alerts = railyard_treasury::liquidity::open_alerts(store).await.map_err(store_error)?;
    Ok(Json(json!({ "positions": positions, "alerts": alerts })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LiquidityBody {
    /// A positive decimal string in `currency`.
    amount: String,
    currency: String,
    /// `top_up` (from the house's bank to the rail) or `sweep` (back to the bank).
    direction: String,
    /// The bank transfer's reference: a movement is booked once per reference.
    reference: String,
}

#[utoipa::path(post, path = "/v1/treasury/rails/{rail}/liquidity", tag = "treasury", request_body = LiquidityBody, params(("rail" = String, Path)), responses((status = 201, description = "booked, audited; the new position", body = Object), (status = 404, description = "no such rail", body = ProblemDoc), (status = 409, description = "this reference was booked already", body = ProblemDoc), (status = 422, description = "invalid field, or a sweep beyond what is available", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/treasury/rails/{rail}/liquidity` (scope treasury): books a top-up of a rail's
/// prefunded account, or a sweep back to the bank, and audits it.
async fn move_liquidity(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(rail): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Treasury)?;
    let body: LiquidityBody = json_body(&body)?;
    let currency = Currency::from_code(&body.currency).map_err(|error| invalid("currency", error.to_string()))?;
    let amount =
        Money::parse(&body.amount, currency, Sign::Positive).map_err(|error| invalid("amount", error.to_string()))?;
    let withdraw = match body.direction.as_str() {
        "top_up" => false,
        "sweep" => true,
        other => return Err(invalid("direction", format!("{other:?} is neither \"top_up\" nor \"sweep\""))),
    };
    let reference = body.reference.trim();
    if reference.is_empty() || reference.len() > 128 || reference.chars().any(char::is_control) {
        return Err(invalid("reference", "1 to 128 printable characters"));
    }
    let config = state.snapshots.borrow().config.clone();
    let Some(configured) = config.rails.iter().find(|candidate| candidate.id.as_str() == rail) else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no rail {rail}")));
    };
    if !configured.currencies.contains(&currency) {
        return Err(invalid("currency", format!("{rail} does not carry {currency}")));
    }
    match state.engine.move_rail_liquidity(&rail, amount, withdraw, reference, &by).await {
        Ok(()) => {}
        Err(railyard_saga::EngineError::Ledger(railyard_store::ledger::LedgerError::Duplicate(_))) => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "Already booked",
                format!("reference {reference:?} was booked already for {rail}"),
            ));
        }
        Err(railyard_saga::EngineError::Ledger(railyard_store::ledger::LedgerError::Overdraft(_))) => {
            return Err(invalid("amount", format!("{rail} has less than {amount} available to sweep")));
        }
        Err(error) => return Err(store_error(error)),
    }
    // The sandbox network receives the bank transfer as well, in process or at its `endpoint`,
    // or its own books would refuse payouts (AM04, 51) the ledger funds. A network that cannot
    // follow (a sweep of funds it has paid out since it started, or one out of reach) is reported;
    // the booking stands, as the bank's would.
    let followed = match (state.sandboxes.iter().find(|(id, _)| *id == rail), &configured.endpoint) {
        (Some((_, sandbox)), _) => Some(sandbox.move_house_funds(amount, withdraw)),
        (None, Some(endpoint)) => Some(railyard_rails::move_remote_house_funds(endpoint, amount, withdraw).await),
        (None, None) => None,
    };
    let sandbox = match followed {
        None => Value::Null,
        Some(Ok(holds)) => json!({ "moved": true, "holds": holds }),
        Some(Err(reason)) => {
            tracing::warn!(rail = %rail, "the sandbox network did not follow the {}: {reason}", body.direction);
            json!({ "moved": false, "reason": reason })
        }
    };
    let positions =
        railyard_treasury::liquidity::positions(state.engine.store(), &config).await.map_err(store_error)?;
    let position = positions.into_iter().find(|position| position.rail == rail && position.currency == currency);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "rail": rail, "direction": body.direction, "amount": amount, "reference": reference, "position": position, "sandbox": sandbox })),
    )
        .into_response())
}

fn store_error(error: impl std::fmt::Display) -> Problem {
    Problem::new(StatusCode::INTERNAL_SERVER_ERROR, "Store error", error.to_string())
}

#[utoipa::path(get, path = "/v1/webhooks/secret", tag = "webhooks", responses((status = 200, description = "the signing secret", body = Object)), security(("bearer" = [])))]
/// `GET /v1/webhooks/secret`: the tenant's signing secret (see the `webhooks` module for the scheme).
async fn webhook_secret(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let secret = webhooks::secret_for(state.engine.store(), &tenant).await.map_err(store_error)?;
    Ok(Json(json!({ "secret": secret, "header": "Railyard-Signature", "scheme": "t=<unix>,v1=hex(HMAC-SHA256(secret, t + \".\" + body))" })).into_response())
}

#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks", responses((status = 200, description = "delivery log", body = Object)), security(("bearer" = [])))]
/// `GET /v1/webhooks/deliveries`: the tenant's last delivery attempts.
async fn webhook_deliveries(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let rows = sqlx::query(
        "SELECT d.payout_id, d.event, d.attempt, d.at, d.status, d.error FROM webhook_deliveries d \
         JOIN outbox o ON o.payout_id = d.payout_id AND o.event = d.event WHERE o.tenant = $1 ORDER BY d.at DESC LIMIT 100",
    )
    .bind(&tenant)
    .fetch_all(state.engine.store().pool())
    .await
    .map_err(store_error)?;
    let mut deliveries = Vec::new();
    for row in rows {
        use sqlx::Row;
        deliveries.push(json!({
            "payout_id": row.try_get::<String, _>(0).map_err(store_error)?,
            "event": row.try_get::<String, _>(1).map_err(store_error)?,
            "attempt": row.try_get::<i64, _>(2).map_err(store_error)?,
            "at": chrono::DateTime::from_timestamp_micros(row.try_get::<i64, _>(3).map_err(store_error)?).map(|at| at.to_rfc3339()),
            "status": row.try_get::<Option<i64>, _>(4).map_err(store_error)?,
            "error": row.try_get::<Option<String>, _>(5).map_err(store_error)?,
        }));
    }
    Ok(Json(json!({ "deliveries": deliveries })).into_response())
}

#[utoipa::path(post, path = "/v1/payouts/{id}/redeliver", tag = "webhooks", params(("id" = String, Path)), responses((status = 200, description = "events queued again", body = Object), (status = 404, description = "no events", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/payouts/{id}/redeliver`: queue the payout's webhook events again.
async fn redeliver(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let events = webhooks::redeliver(state.engine.store(), &tenant, &id).await.map_err(store_error)?;
    if events == 0 {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no webhook events for payout {id}")));
    }
    Ok(Json(json!({ "payout_id": id, "events_queued": events })).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    created_after: Option<String>,
    cursor: Option<String>,
    limit: Option<i64>,
}

fn parse_status(text: &str) -> Option<SagaState> {
    Some(match text {
        "received" => SagaState::Accepted,
        "routed" => SagaState::Routed,
        "reserved" => SagaState::Reserved,
        "fx_locked" => SagaState::Quoted,
        "submitted" => SagaState::Submitting,
        "in_doubt" => SagaState::InDoubt,
        "completed" => SagaState::Completed,
        "failed" => SagaState::Failed,
        "cancelled" => SagaState::Cancelled,
        "screening" => SagaState::Screening,
        "awaiting_approval" => SagaState::AwaitingApproval,
        "returned" => SagaState::Returned,
        _ => return None,
    })
}

#[utoipa::path(get, path = "/v1/payouts", tag = "payouts", params(("status" = Option<String>, Query), ("created_after" = Option<String>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<i64>, Query)), responses((status = 200, description = "a page of payouts and next_cursor", body = Object)), security(("bearer" = [])))]
/// `GET /v1/payouts?status=&created_after=&cursor=&limit=`: the tenant's payouts, oldest first;
/// `next_cursor` continues the listing.
async fn list_payouts(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(text) => Some(parse_status(text).ok_or_else(|| invalid("status", format!("unknown status {text:?}")))?),
    };
    let created_after = match query.created_after.as_deref() {
        None => None,
        Some(text) => Some(
            chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|error| invalid("created_after", format!("expected RFC 3339: {error}")))?
                .timestamp_micros(),
        ),
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=PAGE_SIZE_MAX).contains(&limit) {
        return Err(invalid("limit", format!("between 1 and {PAGE_SIZE_MAX}")));
    }
    let payouts =
        state.engine.list(&tenant, status, created_after, query.cursor.as_deref(), limit).await.map_err(store_error)?;
    state.engine.store().sync().await.map_err(store_error)?;
    let next_cursor = if payouts.len() as i64 == limit { payouts.last().map(|payout| payout.id.clone()) } else { None };
    Ok(Json(json!({ "payouts": payouts.iter().map(payout_json).collect::<Vec<_>>(), "next_cursor": next_cursor }))
        .into_response())
}

#[utoipa::path(post, path = "/v1/payouts/batch", tag = "payouts", request_body = Object, responses((status = 207, description = "one result per item", body = Object)), security(("bearer" = [])))]
/// `POST /v1/payouts/batch`: `{"items":[{"idempotency_key": ..., <payout fields>}, ...]}`, at most
/// [`BATCH_ITEMS_MAX`]; one result per item, in order, each as `POST /v1/payouts` would answer it.
async fn create_batch(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    let caller = authenticate_caller(&state, &headers, Scope::Psp)?;
    let tenant = caller.tenant.clone();
    let body: Value = json_body(&body)?;
    let items = body.get("items").and_then(Value::as_array).ok_or_else(|| invalid("items", "an array of payouts"))?;
    if items.is_empty() || items.len() > BATCH_ITEMS_MAX {
        return Err(invalid("items", format!("between 1 and {BATCH_ITEMS_MAX} items")));
    }
    let mut pending = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let mut item = item.clone();
        let key = item
            .as_object_mut()
            .and_then(|object| object.remove("idempotency_key"))
            .and_then(|key| key.as_str().map(str::to_string))
            .filter(|key| !key.is_empty() && key.len() <= IDEMPOTENCY_KEY_LENGTH_MAX);
        let parsed = match key {
            None => Err(invalid(&format!("items[{index}].idempotency_key"), "required, 1 to 128 characters")),
            Some(key) => parse_payout(item.to_string().as_bytes()).map(|mut request| {
                request.submitted_by = Some(caller.key.clone());
                (key, request)
            }),
        };
        pending.push(parsed);
    }
    let mut results = Vec::with_capacity(pending.len());
    for parsed in pending {
        let result = match parsed {
            Err(problem) => {
                json!({ "status": problem.status.as_u16(), "error": { "title": problem.title, "detail": problem.detail, "field": problem.field } })
            }
            Ok((key, request)) => match timed_accept(&state, &tenant, &key, &request).await {
                Ok((accepted, known)) => match accepted_payout(&state, &accepted, known).await {
                    Ok(payout) => json!({ "status": 202, "replay": accepted.replay, "payout": payout_json(&payout) }),
                    Err(error) => json!({ "status": 500, "error": { "detail": error.to_string() } }),
                },
                Err(IntakeError::Engine(EngineError::Conflict(existing))) => {
                    json!({ "status": 409, "error": { "detail": format!("key used for payout {existing} with a different request") } })
                }
                Err(IntakeError::Overloaded) => {
                    if let Some(monitor) = &state.monitor {
                        monitor.shed();
                    }
                    json!({ "status": 429, "error": { "detail": "intake full; retry this item" } })
                }
                Err(error) => json!({ "status": 422, "error": { "detail": error.to_string() } }),
            },
        };
        results.push(result);
    }
    Ok((StatusCode::MULTI_STATUS, Json(json!({ "results": results }))).into_response())
}

#[utoipa::path(post, path = "/v1/payouts/{id}/cancel", tag = "payouts", params(("id" = String, Path)), responses((status = 200, description = "cancelled", body = Object), (status = 409, description = "a rail leg was already sent", body = ProblemDoc), (status = 404, description = "no such payout for this tenant", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/payouts/{id}/cancel`: cancels a payout that no rail has received yet.
async fn cancel_payout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    let tenant = authenticate(&state, &headers, Scope::Psp)?;
    match state.engine.cancel(&tenant, &id).await {
        Ok(payout) => Ok(Json(payout_json(&payout)).into_response()),
        Err(EngineError::NotFound(_)) => {
            Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no payout {id}")))
        }
        Err(EngineError::TooLate(detail)) => Err(Problem::new(StatusCode::CONFLICT, "Too late to cancel", detail)),
        Err(EngineError::Leased(_)) => {
            let mut problem =
                Problem::new(StatusCode::CONFLICT, "Payout busy", "the payout is being processed; try again");
            problem.retry_after = Some(1);
            Err(problem)
        }
        Err(error) => Err(store_error(error)),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CardBody {
    pan: String,
    /// MM/YY
    expiry: String,
}

#[utoipa::path(post, path = "/v1/sandbox/cards", tag = "sandbox", request_body = CardBody, responses((status = 200, description = "the card's token, to use as a card_token beneficiary account", body = Object), (status = 422, description = "invalid card", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/sandbox/cards`: tokenises a test card with every sandbox card network.
async fn sandbox_card(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Psp)?;
    let body: CardBody = serde_json::from_slice(&body).map_err(|error| invalid("body", error.to_string()))?;
    let mut info = None;
    for (_, sandbox) in state.sandboxes.iter() {
        if let railyard_rails::SandboxRail::Card(card) = sandbox {
            info = Some(card.tokenise(&body.pan, &body.expiry).map_err(|error| invalid("pan", error))?);
        }
    }
    let info = info.ok_or_else(|| {
        Problem::new(StatusCode::NOT_FOUND, "No sandbox card network", "no card rail runs in this process")
    })?;
    Ok(Json(json!({ "token": info.token, "last4": info.last4, "currency": info.currency.code(), "country": info.country.code(), "scheme": info.scheme })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct WalletBody {
    wallet: String,
    currency: String,
}

#[utoipa::path(post, path = "/v1/sandbox/wallets", tag = "sandbox", request_body = WalletBody, responses((status = 200, description = "the wallet, to use as a wallet beneficiary account", body = Object), (status = 422, description = "invalid wallet", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/sandbox/wallets`: opens a beneficiary wallet on every sandbox CBDC platform carrying the currency.
async fn sandbox_wallet(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Psp)?;
    let body: WalletBody = serde_json::from_slice(&body).map_err(|error| invalid("body", error.to_string()))?;
    let currency = Currency::from_code(&body.currency).map_err(|error| invalid("currency", error.to_string()))?;
    let mut opened = Vec::new();
    for (rail, sandbox) in state.sandboxes.iter() {
        if let railyard_rails::SandboxRail::Cbdc(platform) = sandbox
            && state.config.rail(rail).is_some_and(|config| config.currencies.contains(&currency))
        {
            match platform.open_wallet(&body.wallet, currency) {
                Ok(()) | Err(railyard_cbdc::ledger::LedgerError::WalletExists(_)) => opened.push(rail.clone()),
                Err(error) => return Err(invalid("wallet", error.to_string())),
            }
        }
    }
    if opened.is_empty() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            "No sandbox CBDC platform",
            format!("no CBDC rail carries {currency} here"),
        ));
    }
    Ok(Json(json!({ "wallet": body.wallet, "currency": currency.code(), "rails": opened })).into_response())
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    /// Why: kept with the payout and in the audit log (at most 500 characters).
    #[serde(default)]
    note: String,
}

#[utoipa::path(get, path = "/v1/approvals", tag = "approvals", responses((status = 200, description = "payouts held for screening review or approval, oldest first, with their risk assessment", body = Object)), security(("bearer" = [])))]
/// `GET /v1/approvals` (scope approver): payouts waiting for a decision, with the reasons.
async fn approvals(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    let caller = authenticate_caller(&state, &headers, Scope::Approver)?;
    let tenant = (!caller.operator).then_some(caller.tenant.as_str());
    let held = state.engine.held(tenant, railyard_saga::authorise::HELD_PAGE_MAX).await.map_err(store_error)?;
    let items: Vec<Value> = held
        .iter()
        .map(|payout| {
            let mut item = payout_json(payout);
            item["tenant"] = json!(payout.tenant);
            item["submitted_by"] = json!(payout.request.submitted_by);
            item
        })
        .collect();
    Ok(Json(json!({ "items": items })).into_response())
}

async fn decide(
    state: &ApiState,
    headers: &HeaderMap,
    id: &str,
    body: &[u8],
    verdict: railyard_saga::authorise::Verdict,
) -> Result<Response, Problem> {
    use railyard_saga::authorise::{Approver, DecideError, NOTE_CHARS_MAX};
    let caller = authenticate_caller(state, headers, Scope::Approver)?;
    let body: DecisionBody = if body.is_empty() { DecisionBody::default() } else { json_body(body)? };
    if body.note.chars().count() > NOTE_CHARS_MAX {
        return Err(invalid("note", format!("at most {NOTE_CHARS_MAX} characters")));
    }
    if verdict == railyard_saga::authorise::Verdict::Reject && body.note.trim().is_empty() {
        return Err(invalid("note", "say why the payout is rejected"));
    }
    let approver = Approver { tenant: caller.tenant, key: caller.key, all_tenants: caller.operator };
    match state.engine.decide(id, &approver, verdict, body.note.trim()).await {
        Ok(payout) => Ok(Json(payout_json(&payout)).into_response()),
        Err(DecideError::NotFound(_)) => {
            Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no payout {id}")))
        }
        Err(error @ DecideError::OwnRequest(_)) => {
            Err(Problem::new(StatusCode::FORBIDDEN, "Four eyes", error.to_string()))
        }
        Err(error @ (DecideError::NotHeld { .. } | DecideError::Expired(_))) => {
            Err(Problem::new(StatusCode::CONFLICT, "Not waiting for a decision", error.to_string()))
        }
        Err(DecideError::Engine(EngineError::Leased(_))) => {
            let mut problem =
                Problem::new(StatusCode::CONFLICT, "Busy", "the payout is being moved right now; try again");
            problem.retry_after = Some(RETRY_AFTER_SECONDS);
            Err(problem)
        }
        Err(DecideError::Engine(error)) => Err(store_error(error)),
    }
}

#[utoipa::path(post, path = "/v1/payouts/{id}/approve", tag = "approvals", request_body = DecisionBody, params(("id" = String, Path)), responses((status = 200, description = "approved (a screening match cleared, recorded as an override): the payout goes on to routing", body = Object), (status = 403, description = "the key that submitted the payout cannot approve it", body = ProblemDoc), (status = 404, description = "no such payout for this approver", body = ProblemDoc), (status = 409, description = "not waiting for a decision, or the hold expired", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/payouts/{id}/approve` (scope approver, a different key from the submitter's).
async fn approve_payout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    decide(&state, &headers, &id, &body, railyard_saga::authorise::Verdict::Approve).await
}

#[utoipa::path(post, path = "/v1/payouts/{id}/reject", tag = "approvals", request_body = DecisionBody, params(("id" = String, Path)), responses((status = 200, description = "rejected: the payout fails with the note as its reason", body = Object), (status = 403, description = "the key that submitted the payout cannot decide it", body = ProblemDoc), (status = 404, description = "no such payout for this approver", body = ProblemDoc), (status = 409, description = "not waiting for a decision, or the hold expired", body = ProblemDoc), (status = 422, description = "a note is required", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/payouts/{id}/reject` (scope approver): a note saying why is required.
async fn reject_payout(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    decide(&state, &headers, &id, &body, railyard_saga::authorise::Verdict::Reject).await
}

#[utoipa::path(get, path = "/v1/audit/verify", tag = "treasury", responses((status = 200, description = "the audit chain recomputed: entries, head, problems (none when intact)", body = Object)), security(("bearer" = [])))]
/// `GET /v1/audit/verify` (scope admin): recomputes the hash-chained audit log.
async fn audit_verify(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Admin)?;
    let report = railyard_store::audit::verify(state.engine.store()).await.map_err(store_error)?;
    Ok(Json(json!({ "intact": report.intact(), "report": report })).into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct KeyBody {
    /// The tenant the key acts for (one of the configuration's tenants).
    tenant: String,
    /// The key's name: lower-case letters, digits and '-', unique within the tenant.
    id: String,
    /// Any of `psp`, `treasury`, `admin`, `approver`.
    scopes: Vec<String>,
}

fn key_json(key: &keys::KeyEntry) -> Value {
    let at = |micros: Option<i64>| micros.and_then(chrono::DateTime::from_timestamp_micros).map(|at| at.to_rfc3339());
    json!({
        "tenant": key.tenant,
        "id": key.id,
        "scopes": key.scopes.iter().map(|scope| scope.name()).collect::<Vec<_>>(),
        "origin": key.origin.name(),
        "active": key.active(),
        "created_at": at(key.created_at),
        "created_by": key.created_by,
        "revoked_at": at(key.revoked_at),
        "revoked_by": key.revoked_by,
    })
}

fn key_error(error: railyard_store::keys::KeyError) -> Problem {
    use railyard_store::keys::KeyError;
    match error {
        KeyError::Exists { .. } => Problem::new(StatusCode::CONFLICT, "Key exists", error.to_string()).field("id"),
        KeyError::AlreadyRevoked { .. } => Problem::new(StatusCode::CONFLICT, "Already revoked", error.to_string()),
        KeyError::NotFound { .. } => Problem::new(StatusCode::NOT_FOUND, "Not found", error.to_string()),
        KeyError::TooMany(_) => Problem::new(StatusCode::CONFLICT, "Too many keys", error.to_string()).field("tenant"),
        KeyError::Database(error) => store_error(error),
    }
}

async fn reload_keys(state: &ApiState) -> Result<(), Problem> {
    state.keys.reload(state.engine.store(), &state.config).await.map_err(store_error)
}

#[utoipa::path(post, path = "/v1/admin/keys", tag = "admin", request_body = KeyBody, responses((status = 201, description = "created: `secret` is shown this once and never stored (only its SHA-256 is); audited as key.create", body = Object), (status = 409, description = "the tenant already has a key with this id", body = ProblemDoc), (status = 422, description = "unknown tenant, invalid id or scope", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/admin/keys` (scope admin): a new API key for a tenant; the answer holds its secret.
async fn create_key(State(state): State<ApiState>, headers: HeaderMap, body: Bytes) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Admin)?;
    let body: KeyBody = json_body(&body)?;
    let Some(tenant) = state.config.tenants.iter().find(|tenant| tenant.id.as_str() == body.tenant) else {
        return Err(invalid("tenant", format!("no tenant {:?} in the configuration", body.tenant)));
    };
    let id = railyard_config::Identifier::new(&body.id).map_err(|reason| invalid("id", reason))?;
    if tenant.keys.iter().any(|key| key.id == id) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Key exists",
            format!("tenant {} lists a key {id:?} in the configuration", tenant.id.as_str()),
        )
        .field("id"));
    }
    let mut scopes = Vec::new();
    for name in &body.scopes {
        match Scope::parse(name) {
            Some(scope) if !scopes.contains(&scope) => scopes.push(scope),
            Some(_) => return Err(invalid("scopes", format!("{name:?} is listed twice"))),
            None => return Err(invalid("scopes", format!("{name:?} is not one of psp, treasury, admin, approver"))),
        }
    }
    if scopes.is_empty() {
        return Err(invalid("scopes", "give at least one scope"));
    }
    let secret = railyard_store::keys::new_secret();
    let names: Vec<&str> = scopes.iter().map(|scope| scope.name()).collect();
    let stored = railyard_store::keys::create(
        state.engine.store(),
        tenant.id.as_str(),
        id.as_str(),
        &railyard_store::keys::digest(&secret),
        &names,
        &by,
    )
    .await
    .map_err(key_error)?;
    reload_keys(&state).await?;
    let mut answer = key_json(&keys::KeyEntry {
        tenant: stored.tenant,
        id: stored.id,
        sha256: stored.sha256,
        scopes,
        origin: stored.origin,
        created_at: Some(stored.created_at),
        created_by: Some(stored.created_by),
        revoked_at: None,
        revoked_by: None,
    });
    answer["secret"] = json!(secret);
    let mut response = (StatusCode::CREATED, Json(answer)).into_response();
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

#[utoipa::path(get, path = "/v1/admin/keys", tag = "admin", responses((status = 200, description = "every key, from the configuration and created here, active and revoked; never a secret", body = Object)), security(("bearer" = [])))]
/// `GET /v1/admin/keys` (scope admin): the keys and their state.
async fn list_keys(State(state): State<ApiState>, headers: HeaderMap) -> Result<Response, Problem> {
    authenticate(&state, &headers, Scope::Admin)?;
    let keys: Vec<Value> = state.keys.entries().iter().map(key_json).collect();
    Ok(Json(json!({ "keys": keys })).into_response())
}

#[utoipa::path(post, path = "/v1/admin/keys/{tenant}/{id}/revoke", tag = "admin", params(("tenant" = String, Path), ("id" = String, Path)), responses((status = 200, description = "revoked at once on this instance (others within seconds); audited as key.revoke", body = Object), (status = 404, description = "no such key", body = ProblemDoc), (status = 409, description = "already revoked, or the last active admin key", body = ProblemDoc)), security(("bearer" = [])))]
/// `POST /v1/admin/keys/{tenant}/{id}/revoke` (scope admin): the key stops working.
async fn revoke_key(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Admin)?;
    let entries = state.keys.entries();
    let Some(target) = entries.iter().find(|key| key.tenant == tenant && key.id == id) else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("tenant {tenant} has no key {id}")));
    };
    let admins = entries.iter().filter(|key| key.active() && key.scopes.contains(&Scope::Admin)).count();
    if target.active() && target.scopes.contains(&Scope::Admin) && admins <= 1 {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "Last admin key",
            "revoking the only active admin key would leave nobody able to manage keys; create another first",
        ));
    }
    let names: Vec<&str> = target.scopes.iter().map(|scope| scope.name()).collect();
    let config_key = (target.origin == railyard_store::keys::Origin::Config).then_some((&target.sha256, &names[..]));
    railyard_store::keys::revoke(state.engine.store(), &tenant, &id, config_key, &by).await.map_err(key_error)?;
    reload_keys(&state).await?;
    let revoked = state.keys.entries().iter().find(|key| key.tenant == tenant && key.id == id).map(key_json);
    Ok(Json(revoked.unwrap_or(Value::Null)).into_response())
}

fn monitor_of(state: &ApiState) -> Result<&railyard_monitor::Monitor, Problem> {
    state.monitor.as_ref().ok_or_else(|| {
        Problem::new(StatusCode::SERVICE_UNAVAILABLE, "Monitoring off", "this server runs without the monitor")
    })
}

/// `GET /metrics`: Prometheus text exposition format. Like the dashboard, it carries figures and
/// rail names, never payout or beneficiary data; expose it only where operators can reach it.
async fn metrics(State(state): State<ApiState>) -> Result<Response, Problem> {
    let monitor = monitor_of(&state)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], monitor.render_metrics()).into_response())
}

/// `GET /v1/monitor/state`: the dashboard's current state as one JSON document.
async fn monitor_state(State(state): State<ApiState>) -> Result<Response, Problem> {
    let status = monitor_of(&state)?.status().borrow().clone();
    Ok(([(header::CONTENT_TYPE, "application/json")], status.as_str().to_owned()).into_response())
}

/// Counts an open dashboard stream until dropped.
struct StreamSlot(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// `GET /v1/monitor/stream`: server-sent events, one `status` event per monitor tick (the first at
/// once). A slow reader skips states rather than queueing them.
async fn monitor_stream(State(state): State<ApiState>) -> Result<Response, Problem> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    let mut receiver = monitor_of(&state)?.status();
    if state.streams.fetch_add(1, std::sync::atomic::Ordering::AcqRel) >= STREAMS_MAX {
        state.streams.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        let mut problem = Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many dashboards",
            format!("at most {STREAMS_MAX} dashboard streams are served at once"),
        );
        problem.retry_after = Some(5);
        return Err(problem);
    }
    let slot = StreamSlot(state.streams.clone());
    receiver.mark_changed();
    let stream = futures_util::stream::unfold((receiver, slot), |(mut receiver, slot)| async move {
        receiver.changed().await.ok()?;
        let status = receiver.borrow_and_update().clone();
        Some((
            Ok::<_, std::convert::Infallible>(Event::default().event("status").data(status.as_str())),
            (receiver, slot),
        ))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()).into_response())
}

#[derive(Deserialize)]
struct GraphQuery {
    from: String,
    to: String,
    #[serde(default)]
    amount: Option<String>,
}

/// `GET /v1/monitor/graph?from=USD&to=EUR&amount=1000`: the routing graph around a corridor (its
/// currencies and those of the best route) and the current best route on the live snapshot.
async fn monitor_graph(State(state): State<ApiState>, Query(query): Query<GraphQuery>) -> Result<Response, Problem> {
    let currency = |field: &str, code: &str| {
        Currency::from_code(code.trim()).map_err(|_| invalid(field, format!("{code:?} is not an ISO 4217 currency")))
    };
    let from = currency("from", &query.from)?;
    let to = currency("to", &query.to)?;
    let amount_text = query.amount.unwrap_or_else(|| "1000".into());
    let amount =
        Money::parse(&amount_text, from, Sign::Positive).map_err(|error| invalid("amount", error.to_string()))?;
    let snapshot = state.snapshots.borrow().clone();
    let request = RouteRequest::payout(from, to, amount, Mode::Send, chrono::Utc::now());
    let (route, error) = match snapshot.router.route(&request) {
        Ok(set) => (
            set.routes.first().map(|best| {
                let mut route = railyard_routes::route_json(best);
                if let Some(legs) = route["legs"].as_array_mut() {
                    for (json, leg) in legs.iter_mut().zip(&best.legs) {
                        json["from_node"] = json!(leg.from_node);
                        json["to_node"] = json!(leg.to_node);
                    }
                }
                route
            }),
            None,
        ),
        Err(error) => (None, Some(error.to_string())),
    };
    let graph = snapshot.router.graph();
    let mut wanted: Vec<Currency> = vec![from, to];
    if let Some(route) = &route
        && let Some(legs) = route["legs"].as_array()
    {
        for leg in legs {
            for side in ["from", "to"] {
                if let Some(code) = leg[side].as_str()
                    && let Ok(currency) = Currency::from_code(code)
                    && !wanted.contains(&currency)
                {
                    wanted.push(currency);
                }
            }
        }
    }
    let mut nodes: Vec<String> = Vec::new();
    let mut edges = Vec::new();
    for edge in graph.edges() {
        let (head, tail) = (graph.node_key(edge.from), graph.node_key(edge.to));
        if !wanted.contains(&head.currency) || !wanted.contains(&tail.currency) {
            continue;
        }
        for key in [head, tail] {
            let name = key.to_string();
            if !nodes.contains(&name) {
                nodes.push(name);
            }
        }
        let operator = graph.operator(edge.operator);
        edges.push(json!({ "from": head.to_string(), "to": tail.to_string(), "operator": operator.id }));
    }
    edges.dedup();
    let nodes: Vec<Value> = nodes
        .iter()
        .map(|name| {
            let (currency, location) = name.split_once('@').unwrap_or((name, ""));
            json!({ "id": name, "currency": currency, "location": location })
        })
        .collect();
    Ok(Json(json!({
        "snapshot_version": snapshot.version,
        "corridor": format!("{}-{}", from.code(), to.code()),
        "amount": amount.amount_text(),
        "nodes": nodes,
        "edges": edges,
        "route": route,
        "error": error,
    }))
    .into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    /// Switch a run-time outage on or off.
    #[serde(default)]
    outage: Option<bool>,
    /// A whole fault plan (seed, latency, rejects, reply_lost_permille, ...); replaces the current one.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    plan: Option<Value>,
}

#[utoipa::path(put, path = "/v1/sandbox/rails/{rail}/faults", tag = "sandbox", request_body = FaultsBody, params(("rail" = String, Path)), responses((status = 200, description = "applied to the in-process sandbox rail", body = Object), (status = 404, description = "no in-process sandbox rail of that id", body = ProblemDoc), (status = 422, description = "invalid plan", body = ProblemDoc)), security(("bearer" = [])))]
/// `PUT /v1/sandbox/rails/{rail}/faults` (scope admin): fault injection on an in-process sandbox
/// rail, for drills and demos: an outage, slow answers, rejects, lost replies. Audited.
async fn sandbox_faults(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(rail): Path<String>,
    body: Bytes,
) -> Result<Response, Problem> {
    let by = who(&state, &headers, Scope::Admin)?;
    let body: FaultsBody = json_body(&body)?;
    let Some((_, sandbox)) = state.sandboxes.iter().find(|(id, _)| *id == rail) else {
        return Err(Problem::new(StatusCode::NOT_FOUND, "Not found", format!("no in-process sandbox rail {rail}")));
    };
    let plan = match body.plan {
        Some(plan) => Some(
            serde_json::from_value::<railyard_connector::faults::FaultPlan>(plan)
                .map_err(|error| invalid("plan", error.to_string()))?,
        ),
        None => None,
    };
    if let Some(plan) = &plan {
        plan.validate().map_err(|error| invalid("plan", error.to_string()))?;
    }
    let detail = format!(
        "{rail}: {}{}",
        body.outage.map(|outage| format!("outage {outage}; ")).unwrap_or_default(),
        plan.as_ref().map(|plan| serde_json::to_string(plan).unwrap_or_default()).unwrap_or_default()
    );
    state.engine.store().audit(&by, "sandbox.faults", &detail).await.map_err(store_error)?;
    let sandbox = sandbox.sandbox();
    if let Some(plan) = plan {
        sandbox.faults.set_plan(plan).map_err(|error| invalid("plan", error.to_string()))?;
    }
    if let Some(outage) = body.outage {
        sandbox.set_outage(outage);
    }
    Ok(Json(json!({ "rail": rail, "outage": body.outage, "applied": true })).into_response())
}

/// Accepts through the intake and tells the monitor how long a new payout took to be durable.
async fn timed_accept(
    state: &ApiState,
    tenant: &str,
    key: &str,
    request: &PayoutRequest,
) -> Result<(railyard_saga::Accepted, Option<Box<Payout>>), IntakeError> {
    let started = std::time::Instant::now();
    let answer = state.intake.accept_with_payout(tenant, key, request).await;
    if let (Ok((accepted, _)), Some(monitor)) = (&answer, &state.monitor)
        && !accepted.replay
    {
        monitor.accepted(started.elapsed());
    }
    answer
}

/// The payout an accept answered for: as the intake handed it back (accepted just now), or read.
async fn accepted_payout(
    state: &ApiState,
    accepted: &railyard_saga::Accepted,
    payout: Option<Box<Payout>>,
) -> Result<Payout, EngineError> {
    match payout {
        Some(payout) => Ok(*payout),
        None => state.engine.payout(&accepted.payout_id).await,
    }
}
