//! How a connector reaches its rail: in process (a function call) or over HTTP on loopback. The
//! same connector code uses either; only the [`Transport`] value differs.
//!
//! A rail is a [`RailService`]: bytes in, bytes out, or no reply at all ([`Reply::Lost`]). Served
//! over HTTP by [`serve`], a lost reply holds the connection open until the client gives up, which
//! is what a lost reply looks like on a real network.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::net::TcpListener;

/// Largest request or reply body a rail exchange carries (an ISO 20022 message is a few KB; a
/// settlement file or an execution listing is larger, and is paged).
pub const BODY_BYTES_MAX: usize = 4 * 1024 * 1024;
/// How long the HTTP server holds a connection whose reply is lost before closing it. Longer than
/// any connector timeout, so the client always times out first.
pub const LOST_REPLY_HOLD: Duration = Duration::from_secs(120);

/// Calls on the wire to one rail over HTTP at once, per [`Transport`]; further calls wait their
/// turn before they are sent. As many as the connections kept open for reuse, so a burst (a
/// restart resuming hundreds of sagas, a group of legs) reuses warm connections instead of
/// opening hundreds. The wait for a turn is not part of a call's timeout: a call not yet sent
/// cannot have reached the rail, so waiting is safe, while a timeout that ran out in the queue
/// would send the connector to recall (camt.056) a payment that may be about to go out, and the
/// recall could reach the rail first. (In process there is no connection to share and the
/// number of sagas running bounds the calls.)
pub const HTTP_CALLS_IN_FLIGHT_MAX: usize = 64;
/// Health probes on the wire to one rail over HTTP at once, per [`Transport`], in a lane of their
/// own beside the calls' turns: a rail busy with a burst (every turn taken) is still probed at
/// once, and the probe's latency is the rail's, not our queue's. A rail actor probes one at a
/// time, so one is enough; a second waits for the first, which its timeout bounds.
pub const HTTP_PROBES_IN_FLIGHT_MAX: usize = 1;

/// A reply from a rail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Answer {
        status: u16,
        content_type: &'static str,
        body: Vec<u8>,
    },
    /// No reply ever comes.
    Lost,
}

impl Reply {
    pub fn json(status: u16, value: &impl serde::Serialize) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply::Answer { status, content_type: "application/json", body },
            Err(error) => Reply::text(500, &format!("cannot encode reply: {error}")),
        }
    }

    pub fn xml(status: u16, body: String) -> Reply {
        Reply::Answer { status, content_type: "application/xml", body: body.into_bytes() }
    }

    pub fn text(status: u16, text: &str) -> Reply {
        Reply::Answer { status, content_type: "text/plain; charset=utf-8", body: text.as_bytes().to_vec() }
    }
}

/// A rail reachable by messages. `target` is the path with its query (`/pacs.008`,
/// `/notifications?after=3&max=100`); `body` is empty for reads.
#[async_trait]
pub trait RailService: Send + Sync + 'static {
    async fn call(&self, method: Method, target: &str, body: Vec<u8>) -> Reply;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
}

/// Why an exchange produced no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No reply within the timeout. The request may have been acted on.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The connection broke after the request may have been sent.
    #[error("connection failed: {0}")]
    Connection(String),
    /// The rail could not be reached at all; nothing was sent.
    #[error("rail unreachable: {0}")]
    Unreachable(String),
    #[error("reply larger than {BODY_BYTES_MAX} bytes")]
    TooLarge,
}

impl TransportError {
    /// Whether the request certainly did not reach the rail.
    pub fn certainly_not_sent(&self) -> bool {
        matches!(self, TransportError::Unreachable(_))
    }
}

/// A reply as the connector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The way to a rail.
#[derive(Clone)]
pub enum Transport {
    InProcess(Arc<dyn RailService>),
    Http {
        base: String,
        client: reqwest::Client,
        /// [`HTTP_CALLS_IN_FLIGHT_MAX`] turns for calls.
        turns: Arc<tokio::sync::Semaphore>,
        /// [`HTTP_PROBES_IN_FLIGHT_MAX`] turns for health probes.
        probe_turns: Arc<tokio::sync::Semaphore>,
    },
}

/// Which turns an exchange over HTTP waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Call,
    Probe,
}

impl Transport {
    pub fn in_process(service: Arc<dyn RailService>) -> Transport {
        Transport::InProcess(service)
    }

    /// A rail served by [`serve`] at `address` (for example `127.0.0.1:7001`).
    pub fn http(address: &str) -> Transport {
        let base = if address.starts_with("http://") { address.to_string() } else { format!("http://{address}") };
        // Connection pooling keeps loopback exchanges cheap; the per-request timeout is set on each call.
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(HTTP_CALLS_IN_FLIGHT_MAX + HTTP_PROBES_IN_FLIGHT_MAX)
            .build()
            .unwrap_or_default();
        Transport::Http {
            base: base.trim_end_matches('/').to_string(),
            client,
            turns: Arc::new(tokio::sync::Semaphore::new(HTTP_CALLS_IN_FLIGHT_MAX)),
            probe_turns: Arc::new(tokio::sync::Semaphore::new(HTTP_PROBES_IN_FLIGHT_MAX)),
        }
    }

    /// Sends one message and waits at most `timeout` for the reply. Over HTTP the call first
    /// waits for its turn ([`HTTP_CALLS_IN_FLIGHT_MAX`]), outside `timeout`.
    pub async fn exchange(
        &self,
        method: Method,
        target: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        self.exchange_in(Lane::Call, method, target, body, timeout).await
    }

    /// A health probe: a read of `target` in the probes' lane ([`HTTP_PROBES_IN_FLIGHT_MAX`]), so
    /// it never queues behind calls that took every turn.
    pub async fn probe(&self, target: &str, timeout: Duration) -> Result<Answer, TransportError> {
        self.exchange_in(Lane::Probe, Method::Get, target, Vec::new(), timeout).await
    }

    async fn exchange_in(
        &self,
        lane: Lane,
        method: Method,
        target: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        match self {
            Transport::InProcess(service) => {
                // The rail runs on its own task, as it would on its own machine: a client that
                // gives up does not stop the rail from finishing what it started.
                let service = Arc::clone(service);
                let target = target.to_string();
                let handle = tokio::spawn(async move { service.call(method, &target, body).await });
                let call = async {
                    match handle.await {
                        Ok(Reply::Answer { status, body, .. }) => Ok(Answer { status, body }),
                        // A lost reply never arrives: wait for the timeout like a network client would.
                        Ok(Reply::Lost) => std::future::pending().await,
                        Err(error) => Err(TransportError::Connection(format!("the rail task failed: {error}"))),
                    }
                };
                tokio::time::timeout(timeout, call).await.map_err(|_| TransportError::Timeout(timeout))?
            }
            Transport::Http { base, client, turns, probe_turns } => {
                let turns = match lane {
                    Lane::Call => turns,
                    Lane::Probe => probe_turns,
                };
                // Never closed, so this only waits; the timeout starts once the call has its turn.
                let _turn =
                    turns.acquire().await.map_err(|_| TransportError::Unreachable("the transport is closed".into()))?;
                let url = format!("{base}{target}");
                let request = match method {
                    Method::Get => client.get(&url),
                    Method::Post => client.post(&url).body(body),
                };
                let response = request.timeout(timeout).send().await.map_err(|error| classify(&error, timeout))?;
                let status = response.status().as_u16();
                if response.content_length().is_some_and(|length| length > BODY_BYTES_MAX as u64) {
                    return Err(TransportError::TooLarge);
                }
                let bytes = response.bytes().await.map_err(|error| classify(&error, timeout))?;
                if bytes.len() > BODY_BYTES_MAX {
                    return Err(TransportError::TooLarge);
                }
                Ok(Answer { status, body: bytes.to_vec() })
            }
        }
    }
}

fn classify(error: &reqwest::Error, timeout: Duration) -> TransportError {
    if error.is_timeout() {
        TransportError::Timeout(timeout)
    } else if error.is_connect() {
        TransportError::Unreachable(error.to_string())
    } else {
        TransportError::Connection(error.to_string())
    }
}

/// Serves `service` over HTTP on `listener` until `shutdown` completes.
pub async fn serve(
    service: Arc<dyn RailService>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().fallback(move |request: Request| {
        let service = Arc::clone(&service);
        async move { handle(service, request).await }
    });
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

async fn handle(service: Arc<dyn RailService>, request: Request) -> Response {
    let method = match request.method().as_str() {
        "GET" => Method::Get,
        "POST" | "PUT" => Method::Post,
        other => return (StatusCode::METHOD_NOT_ALLOWED, format!("method {other} not allowed")).into_response(),
    };
    let target = request.uri().path_and_query().map(|target| target.as_str().to_string()).unwrap_or_default();
    let body = match to_bytes(request.into_body(), BODY_BYTES_MAX).await {
        Ok(body) => body.to_vec(),
        Err(_) => {
            return (StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {BODY_BYTES_MAX} bytes")).into_response();
        }
    };
    // Run the rail on its own task: hyper drops this handler when the client disconnects, and a
    // rail must finish what it started whether or not anyone waits for the answer.
    let call = tokio::spawn(async move { service.call(method, &target, body).await });
    let reply = match call.await {
        Ok(reply) => reply,
        Err(error) => return (StatusCode::INTERNAL_SERVER_ERROR, format!("rail task failed: {error}")).into_response(),
    };
    match reply {
        Reply::Answer { status, content_type, body } => {
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            response
        }
        Reply::Lost => {
            tokio::time::sleep(LOST_REPLY_HOLD).await;
            StatusCode::GATEWAY_TIMEOUT.into_response()
        }
    }
}

/// Binds `address` and serves `service` in a background task; returns the bound address (useful
/// with port 0) and a handle that stops the server when dropped or triggered.
pub async fn spawn_server(service: Arc<dyn RailService>, address: &str) -> std::io::Result<Server> {
    let listener = TcpListener::bind(address).await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = serve(service, listener, async move {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(Server { address: local, stop: Some(stop), task })
}

/// A rail served in the background.
pub struct Server {
    pub address: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Stops accepting connections. Connections held for a lost reply are aborted.
    pub fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Splits `/path?a=1&b=2` into the path and its query pairs (no percent-decoding: our queries carry
/// only keys and numbers, which never need it).
pub fn split_target(target: &str) -> (&str, Vec<(&str, &str)>) {
    match target.split_once('?') {
        None => (target, Vec::new()),
        Some((path, query)) => {
            let pairs = query
                .split('&')
                .filter(|pair| !pair.is_empty())
                .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
                .collect();
            (path, pairs)
        }
    }
}

/// The outcome of a submission exchange, for rails that answer 200/202 with a body `read` turns
/// into a status, 400 for a request they could not read, and anything else for trouble.
///
/// Unreachable (nothing sent) is a before-send rejection; a timeout or a broken connection is
/// Unknown; so is an answer saying the rail still holds the payment.
pub fn submission_outcome(
    result: Result<Answer, TransportError>,
    read: impl Fn(&[u8]) -> crate::Status,
) -> crate::Outcome {
    use crate::{Outcome, ReasonCode, Rejection, Status, Unknown, UnknownCause};
    match result {
        Ok(answer) if matches!(answer.status, 200 | 202) => match read(&answer.body) {
            Status::Executed(execution) => Outcome::Executed(execution),
            Status::Rejected(rejection) => Outcome::Rejected(rejection),
            Status::Pending => Outcome::Unknown(Unknown::new(UnknownCause::Pending, "the rail has not finished")),
            Status::NotFound => Outcome::Unknown(Unknown::new(UnknownCause::Unreadable, "the rail answered not found")),
            Status::Unknown(unknown) => Outcome::Unknown(unknown),
        },
        Ok(answer) if answer.status == 400 => Outcome::Rejected(Rejection::by_rail(
            ReasonCode::FormatError,
            "400",
            String::from_utf8_lossy(&answer.body).into_owned(),
        )),
        Ok(answer) => Outcome::Unknown(Unknown::new(
            UnknownCause::Transport,
            format!("HTTP {}: {}", answer.status, String::from_utf8_lossy(&answer.body)),
        )),
        Err(TransportError::Unreachable(detail)) => Outcome::Rejected(Rejection {
            code: ReasonCode::RailUnavailable,
            rail_code: String::new(),
            detail: format!("rail unreachable, nothing sent: {detail}"),
            before_send: true,
        }),
        Err(TransportError::Timeout(waited)) => {
            Outcome::Unknown(Unknown::new(UnknownCause::Timeout, format!("no answer within {waited:?}")))
        }
        Err(error) => Outcome::Unknown(Unknown::new(UnknownCause::Transport, error.to_string())),
    }
}

/// The answer to a status inquiry: 404 is not found, 200/202 a body `read` understands.
pub fn inquiry_status(result: Result<Answer, TransportError>, read: impl Fn(&[u8]) -> crate::Status) -> crate::Status {
    use crate::{Status, Unknown, UnknownCause};
    match result {
        Ok(answer) if answer.status == 404 => Status::NotFound,
        Ok(answer) if matches!(answer.status, 200 | 202) => read(&answer.body),
        Ok(answer) => Status::Unknown(Unknown::new(UnknownCause::Transport, format!("HTTP {}", answer.status))),
        Err(TransportError::Timeout(_)) => Status::Unknown(Unknown::new(UnknownCause::Timeout, "no answer")),
        Err(error) => Status::Unknown(Unknown::new(UnknownCause::Transport, error.to_string())),
    }
}

/// Probes a JSON health endpoint answering `{"available": bool, ...}`.
pub async fn probe_json_health(transport: &Transport, path: &str, timeout: Duration) -> crate::Health {
    let started = std::time::Instant::now();
    let answer = transport.probe(path, timeout).await;
    let latency_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (available, detail) = match answer {
        Ok(answer) if answer.status == 200 => {
            match serde_json::from_slice::<serde_json::Value>(&answer.body)
                .ok()
                .and_then(|value| value["available"].as_bool())
            {
                Some(true) => (true, "rail available".to_string()),
                Some(false) => (false, "rail reports an outage".to_string()),
                None => (false, "unreadable health answer".to_string()),
            }
        }
        Ok(answer) => (false, format!("HTTP {}", answer.status)),
        Err(error) => (false, error.to_string()),
    };
    crate::Health { available, latency_ms, detail, checked_at: chrono::Utc::now() }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A rail that takes `hold` to answer a call (a health probe at once) and counts the calls it
    /// is working on at once.
    struct Slow {
        hold: Duration,
        now: AtomicUsize,
        most: AtomicUsize,
    }

    #[async_trait]
    impl RailService for Slow {
        async fn call(&self, _method: Method, target: &str, _body: Vec<u8>) -> Reply {
            if target == "/health" {
                return Reply::json(200, &serde_json::json!({ "available": true }));
            }
            let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.hold).await;
            self.now.fetch_sub(1, Ordering::SeqCst);
            Reply::text(200, "ok")
        }
    }

    impl Slow {
        /// Serves a `Slow` rail on loopback; the transport to it and the server task.
        async fn serve(hold: Duration) -> (Arc<Slow>, Arc<Transport>, tokio::task::JoinHandle<std::io::Result<()>>) {
            let rail = Arc::new(Slow { hold, now: AtomicUsize::new(0), most: AtomicUsize::new(0) });
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let server = tokio::spawn(serve(rail.clone(), listener, std::future::pending()));
            (rail, Arc::new(Transport::http(&address.to_string())), server)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_over_http_waits_its_turn_outside_the_timeout() {
        let hold = Duration::from_millis(200);
        let (rail, transport, server) = Slow::serve(hold).await;
        // Four turns' worth of calls, each with a timeout that one turn fits in and four do not:
        // were the wait for a turn counted, the last calls would time out.
        let turns = 4;
        let timeout = Duration::from_millis(500);
        assert!(hold * turns > timeout);
        let calls: Vec<_> = (0..turns as usize * HTTP_CALLS_IN_FLIGHT_MAX)
            .map(|_| {
                let transport = transport.clone();
                tokio::spawn(async move { transport.exchange(Method::Post, "/pay", b"{}".to_vec(), timeout).await })
            })
            .collect();
        let started = std::time::Instant::now();
        for call in calls {
            let answer = call.await.unwrap().expect("a call that waited for its turn is answered, not timed out");
            assert_eq!(answer.status, 200);
        }
        let most = rail.most.load(Ordering::SeqCst);
        assert!(most <= HTTP_CALLS_IN_FLIGHT_MAX, "{most} calls reached the rail at once");
        assert!(most >= HTTP_CALLS_IN_FLIGHT_MAX / 2, "the calls did not overlap: {most} at most");
        assert!(started.elapsed() >= hold * turns, "{:?}", started.elapsed());
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_probe_does_not_queue_behind_calls_that_took_every_turn() {
        let hold = Duration::from_secs(3);
        let (rail, transport, server) = Slow::serve(hold).await;
        // Every turn taken, and as many calls again waiting for one.
        let calls: Vec<_> = (0..2 * HTTP_CALLS_IN_FLIGHT_MAX)
            .map(|_| {
                let transport = transport.clone();
                tokio::spawn(async move {
                    transport.exchange(Method::Post, "/pay", b"{}".to_vec(), Duration::from_secs(10)).await
                })
            })
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while rail.now.load(Ordering::SeqCst) < HTTP_CALLS_IN_FLIGHT_MAX {
            assert!(std::time::Instant::now() < deadline, "the calls never took every turn");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A call now waits a whole `hold` for a turn; a probe answers within its own timeout.
        let started = std::time::Instant::now();
        let health = probe_json_health(&transport, "/health", Duration::from_millis(500)).await;
        assert!(health.available, "{}", health.detail);
        assert!(started.elapsed() < hold / 2, "the probe waited {:?}", started.elapsed());
        assert_eq!(rail.now.load(Ordering::SeqCst), HTTP_CALLS_IN_FLIGHT_MAX, "the calls still hold every turn");
        for call in calls {
            call.abort();
        }
        server.abort();
    }
}
