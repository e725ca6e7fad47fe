//! Prometheus metrics, served as text (format 0.0.4) at `GET /metrics` on their own HTTP port.
//!
//! Requests, their gRPC status and their rejection reason are counted once, by [`MetricsLayer`]
//! around every service, from the response itself: no handler knows about metrics. The writer
//! records each group commit; the stream counter keeps the subscriber gauge.
//!
//! Every label value comes from a bounded set: the method label is a known gRPC path or
//! `unknown`, the code a gRPC code name, the reason a stable rejection name the server itself
//! wrote. A client cannot grow the number of series by sending odd paths.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use http_body::Frame;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tonic::{Code, Status};
use tonic_types::StatusExt;

use crate::auth::policy::Method;
use crate::error::ERROR_DOMAIN;

/// Label value of a request whose path names no method the server serves.
pub const UNKNOWN_METHOD: &str = "unknown";

/// Paths served beside the `coffer.v1` services (health and reflection).
const OTHER_METHODS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Steps of the duration buckets within each decade. Finer than doubling, so a percentile read
/// off the buckets is within a factor 1.7 instead of 2, and round limits a service level is
/// stated in (1 ms, 10 ms, 100 ms) are bucket bounds: the share of requests within them is
/// exact.
const DURATION_BUCKET_STEPS: [f64; 6] = [1.0, 1.5, 2.0, 3.0, 5.0, 7.0];

/// Decades the duration buckets cover: 100 µs (10^-4 s) up to 7 s.
const DURATION_BUCKET_DECADES: std::ops::RangeInclusive<i32> = -4..=0;

/// Buckets of request and commit durations: 100 µs to 7 s, six per decade.
fn duration_buckets() -> impl Iterator<Item = f64> {
    DURATION_BUCKET_DECADES.flat_map(|decade| {
        // Rounded to the step's digits, so bounds print as 0.015, not 0.015000000000000001.
        DURATION_BUCKET_STEPS
            .into_iter()
            .map(move |step| format!("{step}e{decade}").parse().expect("a float literal"))
    })
}

fn request_duration_histogram() -> Histogram {
    Histogram::new(duration_buckets())
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RejectionLabels {
    method: String,
    reason: String,
}

/// The server's metrics. One per running server, so several servers in one process (tests)
/// each count only their own traffic.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
    rejections: Family<RejectionLabels, Counter>,
    batch_commands: Histogram,
    commit_duration: Histogram,
    commit_failures: Counter,
    subscribers: Gauge,
    journal_records_pending: Gauge,
    frozen_generations: Gauge,
    last_checkpoint: Gauge<f64, std::sync::atomic::AtomicU64>,
    generation_age_limit: Gauge<f64, std::sync::atomic::AtomicU64>,
    sorted_runs: Gauge,
    merge_pending: Gauge,
    /// Moved up to the store's totals at each scrape; the lock keeps two scrapes from both
    /// adding the same difference.
    store_counters: std::sync::Mutex<StoreCounters>,
    /// Read at each scrape; weak, so a scrape never keeps a stopped server's store open.
    store: std::sync::RwLock<Option<std::sync::Weak<dyn coffer_store::Store>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the `coffer_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("coffer");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "gRPC requests answered, by method and gRPC status code",
            requests.clone(),
        );
        let request_duration: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(request_duration_histogram);
        registry.register_with_unit(
            "request_duration",
            "Time from receiving a gRPC request to sending its status, by method",
            Unit::Seconds,
            request_duration.clone(),
        );
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "rejections",
            "Requests refused with a stable reason (google.rpc.ErrorInfo in domain coffer.v1), by method and reason",
            rejections.clone(),
        );
        let batch_len_max = coffer_core::limits::BATCH_LEN_MAX as f64;
        // 1, 2, 4 … up to the largest batch the writer forms.
        let bucket_count = batch_len_max.log2().ceil() as u16 + 1;
        let batch_commands = Histogram::new(exponential_buckets(1.0, 2.0, bucket_count));
        registry.register(
            "batch_commands",
            "Commands per group commit",
            batch_commands.clone(),
        );
        let commit_duration = Histogram::new(duration_buckets());
        registry.register_with_unit(
            "commit_duration",
            "Time to load, apply and durably commit one batch (failed commits included)",
            Unit::Seconds,
            commit_duration.clone(),
        );
        let commit_failures = Counter::default();
        registry.register(
            "commit_failures",
            "Batches whose commit failed (nothing of them was committed)",
            commit_failures.clone(),
        );
        let subscribers = Gauge::default();
        registry.register("subscribers", "Open Subscribe streams", subscribers.clone());
        let journal_records_pending = Gauge::default();
        registry.register(
            "journal_records_pending",
            "Committed batches not yet checkpointed into the indexed tables (embedded redb store)",
            journal_records_pending.clone(),
        );
        let frozen_generations = Gauge::default();
        registry.register(
            "checkpoint_frozen_generations",
            "Generations waiting for their checkpoint; the writer waits when this reaches its bound",
            frozen_generations.clone(),
        );
        let last_checkpoint = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "checkpoint_last_duration",
            "How long the last checkpoint took (embedded redb store)",
            Unit::Seconds,
            last_checkpoint.clone(),
        );
        let generation_age_limit = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "checkpoint_generation_age_limit",
            "Age at which the open generation is frozen for its checkpoint: the checkpoint interval, stretched while checkpoints rewrite many pages per change (embedded redb store)",
            Unit::Seconds,
            generation_age_limit.clone(),
        );
        let sorted_runs = Gauge::default();
        registry.register(
            "checkpoint_sorted_runs",
            "Runs of history and idempotency rows written by checkpoints and not yet merged into the main tables (embedded redb store)",
            sorted_runs.clone(),
        );
        let merge_pending = Gauge::default();
        registry.register(
            "checkpoint_merge_pending",
            "1 while a merge of runs into the main tables is under way or due (embedded redb store)",
            merge_pending.clone(),
        );
        let checkpoint_busy = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "checkpoint_busy",
            "Time the checkpointer spent writing checkpoints and merging runs, the one in progress included (embedded redb store); its rate is the checkpointer's utilisation",
            Unit::Seconds,
            checkpoint_busy.clone(),
        );
        let ledger_written = Counter::default();
        registry.register_with_unit(
            "ledger_written",
            "Bytes of pages written to the ledger file (checkpoints, catalog saves, imports; embedded redb store); per purchase, what checkpoints cost the disk",
            Unit::Bytes,
            ledger_written.clone(),
        );
        Metrics {
            registry,
            requests,
            request_duration,
            rejections,
            batch_commands,
            commit_duration,
            commit_failures,
            subscribers,
            journal_records_pending,
            frozen_generations,
            last_checkpoint,
            generation_age_limit,
            sorted_runs,
            merge_pending,
            store_counters: std::sync::Mutex::new(StoreCounters {
                checkpoint_busy,
                ledger_written,
            }),
            store: std::sync::RwLock::new(None),
        }
    }

    /// Reports `store`'s checkpoint lag at every scrape, while the store lives.
    pub fn watch_store(&self, store: &Arc<dyn coffer_store::Store>) {
        *self.store.write().expect("metrics store lock poisoned") = Some(Arc::downgrade(store));
    }

    /// The gauge of open Subscribe streams, for the stream counter to move.
    pub fn subscribers(&self) -> Gauge {
        self.subscribers.clone()
    }

    /// Records one group commit of `batch_len` commands.
    pub fn record_commit(&self, batch_len: usize, elapsed: Duration, committed: bool) {
        self.batch_commands.observe(batch_len as f64);
        self.commit_duration.observe(elapsed.as_secs_f64());
        if !committed {
            self.commit_failures.inc();
        }
    }

    /// Records a request answered with `code`; `status` carries the details of an error.
    fn record_request(
        &self,
        method: String,
        code: Code,
        status: Option<&Status>,
        elapsed: Duration,
    ) {
        if let Some(reason) = status.and_then(rejection_reason) {
            self.rejections
                .get_or_create(&RejectionLabels {
                    method: method.clone(),
                    reason,
                })
                .inc();
        }
        self.request_duration
            .get_or_create(&MethodLabels {
                method: method.clone(),
            })
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                method,
                code: code_name(code),
            })
            .inc();
    }

    /// Everything, in the Prometheus text format.
    pub fn encode(&self) -> String {
        let status = self
            .store
            .read()
            .expect("metrics store lock poisoned")
            .as_ref()
            .and_then(std::sync::Weak::upgrade)
            .and_then(|store| store.checkpoint_status());
        if let Some(status) = status {
            self.journal_records_pending
                .set(i64::try_from(status.journal_records_pending).unwrap_or(i64::MAX));
            self.frozen_generations
                .set(i64::try_from(status.frozen_generations).unwrap_or(i64::MAX));
            self.last_checkpoint
                .set(status.last_checkpoint_ms as f64 / 1000.0);
            self.generation_age_limit
                .set(status.generation_age_limit_ms as f64 / 1000.0);
            self.sorted_runs
                .set(i64::try_from(status.sorted_runs).unwrap_or(i64::MAX));
            self.merge_pending.set(i64::from(status.merge_pending));
            let counters = self.store_counters.lock().expect("store counters poisoned");
            let behind_s = status.checkpoint_busy_us_total as f64 / 1_000_000.0
                - counters.checkpoint_busy.get();
            if behind_s > 0.0 {
                counters.checkpoint_busy.inc_by(behind_s);
            }
            let behind_bytes = status
                .ledger_written_bytes_total
                .saturating_sub(counters.ledger_written.get());
            counters.ledger_written.inc_by(behind_bytes);
        }
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

/// Counters that follow totals the store keeps.
struct StoreCounters {
    checkpoint_busy: Counter<f64, std::sync::atomic::AtomicU64>,
    ledger_written: Counter,
}

/// The stable reason of a refusal: the `ErrorInfo.reason` of our own domain, if any.
fn rejection_reason(status: &Status) -> Option<String> {
    if status.code() == Code::Ok || status.details().is_empty() {
        return None;
    }
    let info = status.get_details_error_info()?;
    (info.domain == ERROR_DOMAIN && !info.reason.is_empty()).then_some(info.reason)
}

/// The canonical name of a gRPC code, as in the gRPC specification.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The method label of a request path: the path without its leading `/` when the server serves
/// it, [`UNKNOWN_METHOD`] otherwise.
pub fn method_label(path: &str) -> String {
    if Method::from_path(path).is_some() || OTHER_METHODS.contains(&path) {
        path.trim_start_matches('/').to_owned()
    } else {
        UNKNOWN_METHOD.to_owned()
    }
}

/// The gRPC status in `headers` (a trailers-only response, or the trailers of a response),
/// without trusting anything in them to be well-formed.
fn status_in(headers: &http::HeaderMap) -> Option<Status> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    if code == Code::Ok {
        return Some(Status::new(code, ""));
    }
    // tonic writes the details unpadded; accept either.
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    );
    let details = headers
        .get("grpc-status-details-bin")
        .and_then(|value| engine.decode(value.as_bytes()).ok())
        .unwrap_or_default();
    Some(Status::with_details(code, "", details.into()))
}

/// Counts and times every request that passes through it. Put it outermost, so requests the
/// authentication layer refuses are counted too.
#[derive(Clone)]
pub struct MetricsLayer {
    metrics: Arc<Metrics>,
}

impl MetricsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        MetricsLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// The service [`MetricsLayer`] wraps around the router.
#[derive(Clone)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

/// A request being answered: recorded exactly once, when its status is known.
struct InFlight {
    metrics: Arc<Metrics>,
    method: String,
    started: Instant,
}

impl InFlight {
    fn finish(self, code: Code, status: Option<&Status>) {
        self.metrics
            .record_request(self.method, code, status, self.started.elapsed());
    }
}

type Answer<E> = Result<http::Response<tonic::body::Body>, E>;

impl<S, B> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Answer<S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let in_flight = InFlight {
            metrics: Arc::clone(&self.metrics),
            method: method_label(request.uri().path()),
            started: Instant::now(),
        };
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // An error before the first message comes trailers-only: the status is in the
            // headers. Otherwise (every success, and a stream that fails later) it comes in
            // the trailers, after the body.
            if let Some(status) = status_in(response.headers()) {
                in_flight.finish(status.code(), Some(&status));
                return Ok(response);
            }
            let (parts, body) = response.into_parts();
            let body = StatusWatch {
                inner: body,
                in_flight: Some(in_flight),
            };
            Ok(http::Response::from_parts(
                parts,
                tonic::body::Body::new(body),
            ))
        })
    }
}

/// A response body that records its request when the trailers pass, or when it is dropped
/// before them (the client went away: CANCELLED).
struct StatusWatch {
    inner: tonic::body::Body,
    in_flight: Option<InFlight>,
}

impl http_body::Body for StatusWatch {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(in_flight) = self.in_flight.take()
                {
                    match status_in(trailers) {
                        Some(status) => in_flight.finish(status.code(), Some(&status)),
                        // Trailers without a status break the protocol; clients see UNKNOWN.
                        None => in_flight.finish(Code::Unknown, None),
                    }
                }
            }
            Poll::Ready(Some(Err(status))) => {
                if let Some(in_flight) = self.in_flight.take() {
                    in_flight.finish(status.code(), Some(status));
                }
            }
            Poll::Ready(None) => {
                if let Some(in_flight) = self.in_flight.take() {
                    in_flight.finish(Code::Unknown, None);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for StatusWatch {
    fn drop(&mut self) {
        if let Some(in_flight) = self.in_flight.take() {
            in_flight.finish(Code::Cancelled, None);
        }
    }
}

/// Longest wait for open scrapes when the server stops, before they are cut.
pub const SHUTDOWN_WAIT_MS: u64 = 1_000;

/// Serves `GET /metrics` on `listener` until `stopping` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let router = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        http::header::CONTENT_TYPE,
                        prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
                    )],
                    metrics.encode(),
                )
            }
        }),
    );
    let served = axum::serve(listener, router).with_graceful_shutdown(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    if let Err(error) = served.await {
        tracing::error!(%error, "the metrics endpoint stopped");
    }
}

/// Binds the metrics address (port 0 picks a free port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local_addr = listener.local_addr()?;
    Ok((listener, local_addr))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;
    use coffer_core::{Rejection, RejectionCode};

    #[test]
    fn only_served_paths_get_their_own_method_label() {
        assert_eq!(
            method_label("/coffer.v1.WalletService/Purchase"),
            "coffer.v1.WalletService/Purchase"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        for odd in [
            "/coffer.v1.WalletService/Steal",
            "/coffer.v1.AdminService/Purchase",
            "/x",
            "",
        ] {
            assert_eq!(method_label(odd), UNKNOWN_METHOD, "{odd:?}");
        }
    }

    #[test]
    fn duration_buckets_rise_six_per_decade_and_have_round_limits_as_bounds() {
        let bounds: Vec<f64> = duration_buckets().collect();
        assert_eq!(bounds.len(), 30);
        assert_eq!(bounds.first(), Some(&0.000_1));
        assert_eq!(bounds.last(), Some(&7.0));
        assert!(
            bounds.windows(2).all(|pair| pair[0] < pair[1]),
            "{bounds:?}"
        );
        for limit in [0.001, 0.01, 0.1, 1.0] {
            assert!(bounds.contains(&limit), "{limit} is a bound");
        }
        // As a scraper reads them: short decimals, not binary float noise.
        let histogram = Histogram::new(duration_buckets());
        histogram.observe(0.012);
        let mut registry = Registry::default();
        registry.register("d", "durations", histogram);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("d_bucket{le=\"0.01\"} 0"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.015\"} 1"), "{text}");
        assert!(text.contains("d_bucket{le=\"0.0003\"} 0"), "{text}");
    }

    #[test]
    fn a_trailers_only_rejection_yields_its_code_and_reason() {
        let rejection = Rejection {
            code: RejectionCode::InsufficientFunds,
            message: "short by 60 coins".to_owned(),
            retry_after_ms: None,
        };
        let response: http::Response<tonic::body::Body> =
            Status::from(ApiError::Rejected(rejection)).into_http();
        let status = status_in(response.headers()).expect("grpc-status is in the headers");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            rejection_reason(&status).as_deref(),
            Some("INSUFFICIENT_FUNDS")
        );
        assert_eq!(code_name(status.code()), "FAILED_PRECONDITION");
    }

    #[test]
    fn errors_without_a_coffer_reason_count_as_requests_only() {
        let response: http::Response<tonic::body::Body> =
            Status::from(ApiError::Unauthenticated("no credentials".to_owned())).into_http();
        let status = status_in(response.headers()).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(rejection_reason(&status), None);

        let mut headers = http::HeaderMap::new();
        headers.insert("grpc-status", http::HeaderValue::from_static("9"));
        headers.insert(
            "grpc-status-details-bin",
            http::HeaderValue::from_static("not base64 !"),
        );
        let status = status_in(&headers).expect("a status, even with broken details");
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(rejection_reason(&status), None);
        assert!(status_in(&http::HeaderMap::new()).is_none());
    }

    #[test]
    fn commits_are_recorded_in_the_exposition() {
        let metrics = Metrics::new();
        metrics.record_commit(64, Duration::from_millis(2), true);
        metrics.record_commit(3, Duration::from_millis(1), false);
        let text = metrics.encode();
        for line in [
            "coffer_batch_commands_count 2",
            "coffer_batch_commands_sum 67.0",
            "coffer_batch_commands_bucket{le=\"2\"} 0",
            "coffer_batch_commands_bucket{le=\"4\"} 1",
            "coffer_batch_commands_bucket{le=\"64\"} 2",
            "coffer_batch_commands_bucket{le=\"1024\"} 2",
            "coffer_commit_duration_seconds_count 2",
            "coffer_commit_failures_total 1",
            "coffer_subscribers 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in\n{text}"
            );
        }
    }
}
