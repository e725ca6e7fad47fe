//! The Prometheus endpoint over real sockets: a server with metrics on port 0, purchases and
//! refusals over real gRPC, then `GET /metrics` over a raw TCP connection. The counters must
//! show exactly those calls.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use coffer_client::CofferClient;
use coffer_server::{Config, RunningServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PURCHASE: &str = "coffer.v1.WalletService/Purchase";
const GET_WALLET: &str = "coffer.v1.WalletService/GetWallet";
const SUBSCRIBE: &str = "coffer.v1.WalletService/Subscribe";

/// One scrape: every sample, keyed by metric name and its labels.
struct Scrape {
    samples: BTreeMap<(String, BTreeMap<String, String>), f64>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let (series, value) = line.rsplit_once(' ').expect("a sample is `series value`");
            let value: f64 = value.parse().expect("a numeric sample value");
            let (name, labels) = match series.split_once('{') {
                None => (series.to_owned(), BTreeMap::new()),
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("labels end with }");
                    // Our label values never contain `,` or `"`, so a plain split is exact.
                    let labels = body
                        .split(',')
                        .map(|pair| {
                            let (key, quoted) = pair.split_once('=').expect("label is k=\"v\"");
                            (key.to_owned(), quoted.trim_matches('"').to_owned())
                        })
                        .collect();
                    (name.to_owned(), labels)
                }
            };
            assert!(
                samples.insert((name, labels), value).is_none(),
                "duplicate series in: {line}"
            );
        }
        Scrape { samples }
    }

    /// The value of `name{labels}`, 0 when the series does not exist yet.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.samples
            .get(&(name.to_owned(), labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// Every series of `name`.
    fn series(&self, name: &str) -> Vec<(&BTreeMap<String, String>, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, labels), value)| (labels, *value))
            .collect()
    }
}

/// `GET /metrics` over a plain TCP connection; returns the head and the body.
async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics port accepts");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response has a head and a body");
    (head.to_owned(), body.to_owned())
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (head, body) = get(addr, "/metrics").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Scrape::parse(&body)
}

/// Scrapes until `done` holds (an effect that follows a closed stream asynchronously), at most
/// a few seconds.
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..100 {
        let scrape = scrape(addr).await;
        if done(&scrape) {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    scrape(addr).await
}

async fn start(data_dir: &std::path::Path) -> RunningServer {
    let mut config = Config::development("127.0.0.1:0".parse().unwrap(), data_dir);
    config.metrics_addr = Some("127.0.0.1:0".parse().unwrap());
    // No checkpoint during the test, so the journal lag counts every batch.
    config.redb.checkpoint_interval_ms = 3_600_000;
    coffer_server::start(config).await.expect("server starts")
}

#[tokio::test]
async fn metrics_count_requests_rejections_and_commits_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path()).await;
    let metrics_addr = server.metrics_addr.expect("metrics are served");
    assert_ne!(metrics_addr.port(), 0, "the real port is reported");

    let before = scrape(metrics_addr).await;
    assert!(before.series("coffer_requests_total").is_empty());
    assert_eq!(before.value("coffer_batch_commands_count", &[]), 0.0);
    assert_eq!(before.value("coffer_subscribers", &[]), 0.0);

    let endpoint = format!("http://{}", server.local_addr);
    let anonymous = CofferClient::connect(endpoint).await.unwrap();
    let mut admin = anonymous
        .with_token(server.development_admin_key.as_ref().unwrap())
        .unwrap();

    // alice opens with 100 coins: three potions at 10 succeed.
    for n in 0..3 {
        admin
            .purchase("alice", "potion", &[("coins", 10)], &format!("potion-{n}"))
            .await
            .expect("alice can afford a potion");
    }
    // 70 coins left: the 150-coin sword is refused by the ledger.
    let short = admin
        .purchase("alice", "sword", &[("coins", 150)], "sword-1")
        .await
        .unwrap_err();
    assert_eq!(short.reason().as_deref(), Some("INSUFFICIENT_FUNDS"));
    // A stale price is refused with another reason, same code.
    let stale = admin
        .purchase("alice", "potion", &[("coins", 9)], "potion-stale")
        .await
        .unwrap_err();
    assert_eq!(stale.reason().as_deref(), Some("PRICE_CHANGED"));
    // Refused by the authentication layer: counted, but not a ledger rejection.
    let mut nobody = anonymous.clone();
    let refused = nobody.wallet("alice").await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let after = scrape(metrics_addr).await;
    let requests = |method, code| {
        after.value(
            "coffer_requests_total",
            &[("method", method), ("code", code)],
        )
    };
    assert_eq!(requests(PURCHASE, "OK"), 3.0);
    assert_eq!(requests(PURCHASE, "FAILED_PRECONDITION"), 2.0);
    assert_eq!(requests(GET_WALLET, "UNAUTHENTICATED"), 1.0);
    assert_eq!(
        after.series("coffer_requests_total").len(),
        3,
        "no other method or code was counted"
    );

    let rejections = |reason| {
        after.value(
            "coffer_rejections_total",
            &[("method", PURCHASE), ("reason", reason)],
        )
    };
    assert_eq!(rejections("INSUFFICIENT_FUNDS"), 1.0);
    assert_eq!(rejections("PRICE_CHANGED"), 1.0);
    assert_eq!(after.series("coffer_rejections_total").len(), 2);

    let purchase = [("method", PURCHASE)];
    assert_eq!(
        after.value("coffer_request_duration_seconds_count", &purchase),
        5.0
    );
    assert!(after.value("coffer_request_duration_seconds_sum", &purchase) > 0.0);
    let all_purchases = [("method", PURCHASE), ("le", "+Inf")];
    assert_eq!(
        after.value("coffer_request_duration_seconds_bucket", &all_purchases),
        5.0
    );

    // Five purchases went through the writer (a refusal is decided in the ledger too); the
    // unauthenticated call never reached it. How they were grouped into batches depends on
    // timing, their total does not.
    let batches = after.value("coffer_batch_commands_count", &[]);
    assert!((1.0..=5.0).contains(&batches), "{batches} batches");
    assert_eq!(after.value("coffer_batch_commands_sum", &[]), 5.0);
    assert_eq!(
        after.value("coffer_commit_duration_seconds_count", &[]),
        batches
    );
    assert!(after.value("coffer_commit_duration_seconds_sum", &[]) > 0.0);
    assert_eq!(after.value("coffer_commit_failures_total", &[]), 0.0);
    // Each of those batches stored outcomes, so each left one journal record, none of them
    // checkpointed yet.
    assert_eq!(after.value("coffer_journal_records_pending", &[]), batches);
    assert_eq!(
        after.value("coffer_checkpoint_frozen_generations", &[]),
        0.0
    );
    assert_eq!(
        after.series("coffer_checkpoint_busy_seconds_total"),
        [(&BTreeMap::new(), 0.0)],
        "no checkpoint has run, however long the checkpointer waited"
    );
    assert_eq!(after.value("coffer_checkpoint_sorted_runs", &[]), 0.0);
    // The verifier folds every batch into the ledger file first: the checkpointer's work shows.
    assert!(admin.verify_ledger().await.unwrap().clean);
    let checkpointed = scrape(metrics_addr).await;
    assert_eq!(
        checkpointed.value("coffer_journal_records_pending", &[]),
        0.0
    );
    assert!(checkpointed.value("coffer_checkpoint_busy_seconds_total", &[]) > 0.0);
    // That one checkpoint wrote its history and idempotency rows as one run; no merge is due.
    assert_eq!(
        checkpointed.value("coffer_checkpoint_sorted_runs", &[]),
        1.0
    );
    assert_eq!(
        checkpointed.value("coffer_checkpoint_merge_pending", &[]),
        0.0
    );

    // A Subscribe stream is counted while open; when the client drops it, the gauge falls back
    // and the request is recorded as CANCELLED (its status never reached the client).
    let mut stream = admin.subscribe("alice", 0).await.unwrap();
    let first = stream.message().await.unwrap().expect("alice's history");
    assert!(first.transaction.is_some());
    let open = scrape(metrics_addr).await;
    assert_eq!(open.value("coffer_subscribers", &[]), 1.0);
    drop(stream);
    let closed = scrape_until(metrics_addr, |s| {
        s.value("coffer_subscribers", &[]) == 0.0
            && s.value(
                "coffer_requests_total",
                &[("method", SUBSCRIBE), ("code", "CANCELLED")],
            ) == 1.0
    })
    .await;
    assert_eq!(closed.value("coffer_subscribers", &[]), 0.0);
    assert_eq!(
        closed.value(
            "coffer_requests_total",
            &[("method", SUBSCRIBE), ("code", "CANCELLED")]
        ),
        1.0
    );

    // Only /metrics is served there.
    let (head, _) = get(metrics_addr, "/other").await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");

    server.shutdown().await.expect("clean shutdown");
    assert!(
        tokio::net::TcpStream::connect(metrics_addr).await.is_err(),
        "the metrics port closes with the server"
    );
}

#[tokio::test]
async fn without_an_address_no_metrics_port_is_opened() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::development("127.0.0.1:0".parse().unwrap(), dir.path());
    assert_eq!(config.metrics_addr, None);
    let server = coffer_server::start(config).await.expect("server starts");
    assert_eq!(server.metrics_addr, None);
    server.shutdown().await.expect("clean shutdown");
}
