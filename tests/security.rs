//! Who may do what, over real gRPC: every RPC with every kind of caller, rate limits, stream
//! caps, hostile request messages, production start-up checks and TLS.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use coffer_client::{CofferClient, pb};
use coffer_server::auth::keys::generate;
use coffer_server::auth::policy::Method;
use coffer_server::{Config, Limits, Role, Security};
use tonic::Code;

const TOKEN_SECRET: &[u8] = b"a test secret that is long enough for HS256 tokens";

struct Keys {
    admin: String,
    game_server: String,
    support: String,
}

async fn start_production(
    limits: Limits,
) -> (coffer_server::RunningServer, Keys, tempfile::TempDir) {
    let (admin, admin_entry) = generate("ops", Role::Admin).unwrap();
    let (game_server, gs_entry) = generate("game", Role::GameServer).unwrap();
    let (support, support_entry) = generate("help", Role::Support).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::development("127.0.0.1:0".parse().unwrap(), dir.path());
    config.security = Security::Production {
        api_keys: vec![admin_entry, gs_entry, support_entry],
        token_secret: TOKEN_SECRET.to_vec(),
    };
    config.limits = limits;
    let server = coffer_server::start(config).await.unwrap();
    (
        server,
        Keys {
            admin,
            game_server,
            support,
        },
        dir,
    )
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
    iat: u64,
    iss: &'a str,
    aud: &'a str,
}

fn forge(player: &str, exp_offset_seconds: i64, secret: &[u8]) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = Claims {
        sub: player,
        exp: (now as i64 + exp_offset_seconds) as u64,
        iat: now,
        iss: "coffer",
        aud: "coffer-player",
    };
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

/// Calls `method` as `client` on behalf of `player`, with a request that is valid when allowed.
async fn call(
    client: &CofferClient,
    method: Method,
    player: &str,
    serial: usize,
) -> Result<(), tonic::Status> {
    let mut wallet = client.wallet_raw();
    let mut admin = client.admin_raw();
    let key = format!("matrix-{serial}");
    let money = |currency: &str, amount| {
        vec![pb::Money {
            currency_id: currency.into(),
            amount_minor_units: amount,
        }]
    };
    let contents = Some(pb::Contents {
        currencies: money("credits", 1),
        items: vec![],
    });
    match method {
        Method::GetCatalog => wallet.get_catalog(pb::GetCatalogRequest {}).await.map(drop),
        Method::GetWallet => wallet
            .get_wallet(pb::GetWalletRequest {
                player_id: player.into(),
            })
            .await
            .map(drop),
        Method::Purchase => wallet
            .purchase(pb::PurchaseRequest {
                player_id: player.into(),
                offer_id: "potion".into(),
                expected_price: money("coins", 10),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::Upgrade => wallet
            .upgrade(pb::UpgradeRequest {
                player_id: player.into(),
                item_id: "speed_boots".into(),
                target_level: 1,
                expected_price: money("coins", 50),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::Consume => wallet
            .consume(pb::ConsumeRequest {
                player_id: player.into(),
                item_id: "potion".into(),
                quantity: 1,
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::ClaimReward => wallet
            .claim_reward(pb::ClaimRewardRequest {
                player_id: player.into(),
                reward_id: "coin_pickup".into(),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::ListTransactions => wallet
            .list_transactions(pb::ListTransactionsRequest {
                player_id: player.into(),
                page_size: 5,
                page_token: String::new(),
            })
            .await
            .map(drop),
        Method::Subscribe => wallet
            .subscribe(pb::SubscribeRequest {
                player_id: player.into(),
                from_version: 0,
            })
            .await
            .map(drop),
        Method::Grant => admin
            .grant(pb::GrantRequest {
                player_id: player.into(),
                contents,
                reason: "matrix".into(),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::Revoke => admin
            .revoke(pb::RevokeRequest {
                player_id: player.into(),
                contents,
                reason: "matrix".into(),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::Reverse => admin
            .reverse(pb::ReverseRequest {
                transaction_id: 1,
                reason: "matrix".into(),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::Execute => {
            let grant = pb::GrantOperation {
                player_id: player.into(),
                contents,
            };
            let operations = vec![pb::Operation {
                operation: Some(pb::operation::Operation::Grant(grant)),
            }];
            admin
                .execute(pb::ExecuteRequest {
                    operations,
                    reason: "matrix".into(),
                    idempotency_key: key,
                })
                .await
                .map(drop)
        }
        Method::GetTransaction => admin
            .get_transaction(pb::GetTransactionRequest { transaction_id: 1 })
            .await
            .map(drop),
        Method::GetCatalogSource => admin
            .get_catalog_source(pb::GetCatalogSourceRequest {})
            .await
            .map(drop),
        Method::ReplaceCatalog => {
            let source = coffer_server::DEMO_CATALOG_TOML
                .replace("version = 1", &format!("version = {}", serial + 2));
            admin
                .replace_catalog(pb::ReplaceCatalogRequest {
                    catalog_toml: source,
                })
                .await
                .map(drop)
        }
        Method::VerifyLedger => admin
            .verify_ledger(pb::VerifyLedgerRequest {})
            .await
            .map(drop),
        Method::IssuePlayerToken => admin
            .issue_player_token(pb::IssuePlayerTokenRequest {
                player_id: player.into(),
                ttl_seconds: 60,
            })
            .await
            .map(drop),
        // Allowed callers get past authorization to verification, which refuses the payload.
        Method::RedeemReceipt => wallet
            .redeem_receipt(pb::RedeemReceiptRequest {
                player_id: player.into(),
                platform: pb::StorePlatform::Sandbox.into(),
                payload: "not-a-receipt".into(),
                idempotency_key: key,
            })
            .await
            .map(drop),
        Method::ProcessStoreNotification => admin
            .process_store_notification(pb::ProcessStoreNotificationRequest {
                platform: pb::StorePlatform::Sandbox.into(),
                payload: "not-a-notification".into(),
            })
            .await
            .map(drop),
        Method::IssueSandboxReceipt => admin
            .issue_sandbox_receipt(pb::IssueSandboxReceiptRequest {
                player_id: player.into(),
                product_id: "gems_100".into(),
                quantity: 1,
                refund_transaction_id: String::new(),
            })
            .await
            .map(drop),
        // A refusal comes before the first message; an allowed export is read to its end.
        Method::ExportLedger => {
            let mut stream = admin
                .export_ledger(pb::ExportLedgerRequest {})
                .await?
                .into_inner();
            let mut summary = None;
            while let Some(message) = stream.message().await? {
                summary = summary.or(message.summary);
            }
            assert!(summary.is_some(), "an allowed export ends with its summary");
            Ok(())
        }
    }
}

/// Everything a denied call must leave untouched.
async fn snapshot(admin: &mut CofferClient) -> (u64, pb::Wallet, pb::Wallet, u64) {
    let ledger = admin.verify_ledger().await.unwrap();
    assert!(ledger.clean, "{:?}", ledger.violations);
    let catalog = admin.catalog().await.unwrap().version;
    (
        ledger.transactions_checked,
        admin.wallet("alice").await.unwrap(),
        admin.wallet("bob").await.unwrap(),
        catalog,
    )
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    Allowed,
    Denied(Code),
}

#[tokio::test]
async fn every_rpc_with_every_kind_of_caller() {
    let (server, keys, _dir) = start_production(Limits::default()).await;
    let endpoint = format!("http://{}", server.local_addr);
    let anonymous = CofferClient::connect(endpoint).await.unwrap();
    let mut admin = anonymous.with_token(&keys.admin).unwrap();
    let alice_token = admin.issue_player_token("alice", 600).await.unwrap();
    // Rewrite the payload to claim another player, keeping alice's signature.
    let tampered = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let parts: Vec<&str> = alice_token.split('.').collect();
        let payload = String::from_utf8(engine.decode(parts[1]).unwrap()).unwrap();
        assert!(payload.contains("\"sub\":\"alice\""), "{payload}");
        let forged = engine.encode(payload.replace("\"sub\":\"alice\"", "\"sub\":\"bob\""));
        format!("{}.{forged}.{}", parts[0], parts[2])
    };
    let wrong_key = keys.admin.replace("ck.ops.", "ck.ops.0");

    let unauthenticated = Expect::Denied(Code::Unauthenticated);
    let denied = Expect::Denied(Code::PermissionDenied);
    let player_scoped = |m: Method| m.is_player_scoped();
    type Rule = Box<dyn Fn(Method) -> Expect>;
    let callers: Vec<(&str, CofferClient, &str, Rule)> = vec![
        (
            "no credentials",
            anonymous.clone(),
            "alice",
            Box::new(move |_| unauthenticated),
        ),
        (
            "malformed",
            anonymous.with_token("not-a-credential").unwrap(),
            "alice",
            Box::new(move |_| unauthenticated),
        ),
        (
            "expired token",
            anonymous
                .with_token(&forge("alice", -5, TOKEN_SECRET))
                .unwrap(),
            "alice",
            Box::new(move |_| unauthenticated),
        ),
        (
            "token signed with another key",
            anonymous
                .with_token(&forge(
                    "alice",
                    600,
                    b"another secret, also long enough to sign",
                ))
                .unwrap(),
            "alice",
            Box::new(move |_| unauthenticated),
        ),
        (
            "tampered token",
            anonymous.with_token(&tampered).unwrap(),
            "alice",
            Box::new(move |_| unauthenticated),
        ),
        (
            "wrong API key",
            anonymous.with_token(&wrong_key).unwrap(),
            "alice",
            Box::new(move |_| unauthenticated),
        ),
        (
            "player alice on alice",
            anonymous.with_token(&alice_token).unwrap(),
            "alice",
            Box::new(move |m| {
                if m == Method::GetCatalog || player_scoped(m) {
                    Expect::Allowed
                } else {
                    denied
                }
            }),
        ),
        (
            "player alice on bob",
            anonymous.with_token(&alice_token).unwrap(),
            "bob",
            Box::new(move |m| {
                if m == Method::GetCatalog {
                    Expect::Allowed
                } else {
                    denied
                }
            }),
        ),
        (
            "admin key",
            anonymous.with_token(&keys.admin).unwrap(),
            "bob",
            Box::new(|_| Expect::Allowed),
        ),
        (
            "game-server key",
            anonymous.with_token(&keys.game_server).unwrap(),
            "bob",
            Box::new(move |m| {
                if matches!(
                    m,
                    Method::Reverse
                        | Method::ReplaceCatalog
                        | Method::VerifyLedger
                        | Method::ExportLedger
                ) {
                    denied
                } else {
                    Expect::Allowed
                }
            }),
        ),
        (
            "support key",
            anonymous.with_token(&keys.support).unwrap(),
            "alice",
            Box::new(move |m| {
                use Method::*;
                if matches!(
                    m,
                    GetCatalog
                        | GetWallet
                        | ListTransactions
                        | Subscribe
                        | GetTransaction
                        | GetCatalogSource
                ) {
                    Expect::Allowed
                } else {
                    denied
                }
            }),
        ),
    ];

    let mut serial = 0;
    let mut checked = 0;
    for (name, client, player, rule) in &callers {
        for method in Method::ALL {
            serial += 1;
            let expected = rule(method);
            let before = snapshot(&mut admin).await;
            let result = call(client, method, player, serial).await;
            match (expected, &result) {
                (Expect::Allowed, Ok(())) => {}
                (Expect::Allowed, Err(status)) => assert!(
                    !matches!(
                        status.code(),
                        Code::Unauthenticated | Code::PermissionDenied
                    ),
                    "{name} should be allowed {method:?}, got {status:?}"
                ),
                (Expect::Denied(code), Err(status)) => {
                    assert_eq!(
                        status.code(),
                        code,
                        "{name} calling {method:?}: {}",
                        status.message()
                    );
                    assert_eq!(
                        snapshot(&mut admin).await,
                        before,
                        "{name} calling {method:?} was denied but changed something"
                    );
                }
                (Expect::Denied(code), Ok(())) => {
                    panic!("{name} calling {method:?} should get {code:?}, but it was allowed")
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 11 * Method::ALL.len());
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn mutations_record_their_caller() {
    let (server, keys, _dir) = start_production(Limits::default()).await;
    let client = CofferClient::connect(format!("http://{}", server.local_addr))
        .await
        .unwrap();
    let mut game = client.with_token(&keys.game_server).unwrap();
    let token = game.issue_player_token("alice", 60).await.unwrap();
    let mut alice = client.with_token(&token).unwrap();
    let bought = alice
        .purchase("alice", "potion", &[("coins", 10)], "p")
        .await
        .unwrap();
    assert_eq!(bought.metadata["caller"], "player:alice");
    let granted = game
        .grant(
            "alice",
            pb::Contents {
                currencies: coffer_client::money(&[("gems", 1)]),
                items: vec![],
            },
            "",
            "g",
        )
        .await
        .unwrap();
    assert_eq!(granted.metadata["caller"], "key:game");
}

#[tokio::test]
async fn rate_limits_answer_resource_exhausted_with_retry_info() {
    let limits = Limits {
        player_requests_per_second: 1,
        player_burst: 3,
        key_requests_per_second: 1,
        key_burst: 5,
        ..Limits::default()
    };
    let (server, keys, _dir) = start_production(limits).await;
    let client = CofferClient::connect(format!("http://{}", server.local_addr))
        .await
        .unwrap();
    let mut support = client.with_token(&keys.support).unwrap();
    let mut admin = client.with_token(&keys.admin).unwrap();
    let token = admin.issue_player_token("alice", 60).await.unwrap();
    let mut alice = client.with_token(&token).unwrap();
    for _ in 0..3 {
        alice.wallet("alice").await.unwrap();
    }
    let limited = alice.wallet("alice").await.unwrap_err();
    assert_eq!(limited.code(), Code::ResourceExhausted);
    let coffer_client::ClientError::Rejected { retry_after_ms, .. } = limited else {
        panic!("expected details: {limited:?}")
    };
    let retry = retry_after_ms.expect("retry_after_ms");
    assert!(retry > 0 && retry <= 1_000, "retry after {retry} ms");
    // Another player and another key are not affected by alice's limit.
    let bob_token = admin.issue_player_token("bob", 60).await.unwrap();
    client
        .with_token(&bob_token)
        .unwrap()
        .wallet("bob")
        .await
        .unwrap();
    for _ in 0..5 {
        support.wallet("alice").await.unwrap();
    }
    assert_eq!(
        support.wallet("alice").await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    tokio::time::sleep(Duration::from_millis(retry as u64 + 50)).await;
    alice
        .wallet("alice")
        .await
        .expect("allowed again after the advertised wait");
}

#[tokio::test]
async fn open_streams_per_player_are_capped() {
    let limits = Limits {
        streams_per_player_max: 2,
        ..Limits::default()
    };
    let (server, keys, _dir) = start_production(limits).await;
    let client = CofferClient::connect(format!("http://{}", server.local_addr))
        .await
        .unwrap();
    let mut admin = client.with_token(&keys.admin).unwrap();
    let first = admin.subscribe("alice", 0).await.unwrap();
    let _second = admin.subscribe("alice", 0).await.unwrap();
    assert_eq!(
        admin.subscribe("alice", 0).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    admin
        .subscribe("bob", 0)
        .await
        .expect("bob has his own allowance");
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match admin.subscribe("alice", 0).await {
            Ok(_) => break,
            Err(e)
                if e.code() == Code::ResourceExhausted
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("a closed stream's slot was not released: {e}"),
        }
    }
}

#[tokio::test]
async fn production_mode_refuses_to_start_without_keys_or_secret() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::development("127.0.0.1:0".parse().unwrap(), dir.path());
    config.security = Security::Production {
        api_keys: vec![],
        token_secret: TOKEN_SECRET.to_vec(),
    };
    let error = coffer_server::start(config.clone())
        .await
        .err()
        .expect("no keys: no start");
    assert!(
        error
            .to_string()
            .contains("at least one [[security.api_keys]]"),
        "{error}"
    );
    let (_, entry) = generate("ops", Role::Admin).unwrap();
    config.security = Security::Production {
        api_keys: vec![entry],
        token_secret: b"short".to_vec(),
    };
    let error = coffer_server::start(config)
        .await
        .err()
        .expect("short secret: no start");
    assert!(error.to_string().contains("token_secret_hex"), "{error}");
}

#[tokio::test]
async fn tls_serves_encrypted_grpc_when_configured() {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, certified.cert.pem()).unwrap();
    std::fs::write(&key_file, certified.signing_key.serialize_pem()).unwrap();
    let mut config = Config::development("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
    config.tls = Some(coffer_server::TlsFiles {
        cert_file,
        key_file,
    });
    let server = coffer_server::start(config).await.unwrap();
    let key = server.development_admin_key.clone().unwrap();

    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            certified.cert.pem(),
        ))
        .domain_name("localhost");
    let channel = tonic::transport::Endpoint::from_shared(format!(
        "https://localhost:{}",
        server.local_addr.port()
    ))
    .unwrap()
    .tls_config(tls)
    .unwrap()
    .connect()
    .await
    .unwrap();
    let mut client = CofferClient::from_channel(channel)
        .with_token(&key)
        .unwrap();
    assert_eq!(
        coffer_client::balance(&client.wallet("alice").await.unwrap(), "coins"),
        100
    );

    let mut plaintext = CofferClient::connect(format!("http://{}", server.local_addr))
        .await
        .unwrap()
        .with_token(&key)
        .unwrap();
    assert!(
        plaintext.wallet("alice").await.is_err(),
        "plaintext gRPC must not be served on a TLS port"
    );
}
