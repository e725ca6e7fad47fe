//! Receipts and store notifications: every entry point returns an error, never panics; a
//! genuine payload changed anywhere in its signed bytes never verifies; and a payload signed
//! with the right key but carrying hostile claims verifies only as what the claims say, for
//! this app, completed and not revoked.
//!
//! An input is a mode byte, a base byte and the rest:
//! - raw: the rest, as text, goes to every entry point of every platform at an arbitrary time;
//! - text: the rest steers up to [`MUTATIONS_MAX`] character edits of a genuine payload (App
//!   Store transaction and notification, Play receipt and voided purchase, sandbox receipt and
//!   refund), including splices from the other genuine payloads;
//! - claims: the rest edits the JSON claims of a genuine payload (edge values, removed and added
//!   fields), which is then signed again with the test keys, so it passes the signature and
//!   reaches the field checks;
//! - header: the rest edits an App Store JWS header (`alg`, `x5c`, `crit`) before signing.
//!
//! The keys and certificate chains are the ones `coffer-receipts`' own tests build
//! (`tests/common/mod.rs`, included below), generated once per process.

use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coffer_receipts::{
    ID_BYTES_MAX, Platform, QUANTITY_MAX, ReceiptError, SANDBOX_TOKEN_PREFIX, VerifiedNotification,
    VerifiedPurchase, Verifier,
};
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};

#[path = "../../coffer-receipts/tests/common/mod.rs"]
mod fixtures;

use fixtures::{BUNDLE_ID, NOW_UNIX_MS, PACKAGE_NAME};

/// Most edits one text or claims input applies.
pub const MUTATIONS_MAX: usize = 8;

/// What a genuine payload is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Receipt,
    Notification,
}

/// A genuine payload and the claims it was built from.
struct Genuine {
    platform: Platform,
    usage: Use,
    /// The signed claims; for an App Store notification, the notification's.
    claims: Value,
    /// The inner transaction's claims of an App Store notification.
    inner_claims: Option<Value>,
    /// Whether the payload is signed (Play voided purchases are trusted input, not signed).
    signed: bool,
    text: String,
}

struct Fixtures {
    verifier: Verifier,
    genuine: Vec<Genuine>,
    sandbox_key: ed25519_dalek::SigningKey,
}

fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let sandbox_key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let apple_claims = fixtures::apple_transaction();
        let mut refunded = fixtures::apple_transaction();
        refunded["revocationDate"] = json!(NOW_UNIX_MS - 10_000);
        refunded["revocationReason"] = json!(1);
        let notification_claims =
            fixtures::apple_notification("REFUND", &fixtures::apple_chain().sign(&refunded));
        let google_claims = fixtures::google_purchase_data();
        let voided = json!({
            "kind": "androidpublisher#voidedPurchase",
            "purchaseToken": "opaque-token-abcdefghijklmnopqrstuvwxyz.AO-J1Oy",
            "purchaseTimeMillis": (NOW_UNIX_MS - 60_000).to_string(),
            "voidedTimeMillis": (NOW_UNIX_MS - 1_000).to_string(),
            "orderId": "GPA.3312-4456-7788-99001",
            "voidedReason": 1
        });
        let rtdn = json!({
            "version": "1.0",
            "packageName": PACKAGE_NAME,
            "eventTimeMillis": (NOW_UNIX_MS - 2_000).to_string(),
            "voidedPurchaseNotification": {
                "purchaseToken": "opaque-token-abcdefghijklmnopqrstuvwxyz.AO-J1Oy",
                "orderId": "GPA.3312-4456-7788-99001"
            }
        });
        let sandbox_claims = json!({
            "type": "purchase",
            "transactionId": "sbx_1",
            "productId": "gems_500",
            "playerId": "player-42",
            "quantity": 1,
            "issuedAtUnixMs": NOW_UNIX_MS,
            "environment": "sandbox"
        });
        let sandbox_refund = json!({
            "type": "refund",
            "transactionId": "sbx_1",
            "issuedAtUnixMs": NOW_UNIX_MS,
            "environment": "sandbox"
        });
        let mut genuine = Vec::new();
        let mut add = |platform, usage, claims: Value, inner: Option<Value>, signed| {
            let text = sign(platform, usage, &claims, inner.as_ref(), &sandbox_key);
            genuine.push(Genuine {
                platform,
                usage,
                claims,
                inner_claims: inner,
                signed,
                text,
            });
        };
        add(Platform::Apple, Use::Receipt, apple_claims, None, true);
        add(
            Platform::Apple,
            Use::Notification,
            notification_claims,
            Some(refunded),
            true,
        );
        add(Platform::Google, Use::Receipt, google_claims, None, true);
        add(Platform::Google, Use::Notification, voided, None, false);
        add(Platform::Google, Use::Notification, rtdn, None, false);
        add(Platform::Sandbox, Use::Receipt, sandbox_claims, None, true);
        add(
            Platform::Sandbox,
            Use::Notification,
            sandbox_refund,
            None,
            true,
        );
        assert_eq!(genuine.len(), usize::from(GENUINE_PAYLOADS));
        let fixtures = Fixtures {
            verifier: fixtures::full_verifier(),
            genuine,
            sandbox_key,
        };
        // The models start from payloads that verify, or they would test nothing deep.
        for g in &fixtures.genuine {
            assert!(
                outcome(
                    &fixtures.verifier,
                    g.platform,
                    g.usage,
                    &g.text,
                    NOW_UNIX_MS
                )
                .is_ok(),
                "a genuine {:?} {:?} does not verify",
                g.platform,
                g.usage
            );
        }
        fixtures
    })
}

/// The payload a store would send for `claims`, signed with the test keys.
fn sign(
    platform: Platform,
    usage: Use,
    claims: &Value,
    inner: Option<&Value>,
    sandbox_key: &ed25519_dalek::SigningKey,
) -> String {
    match platform {
        Platform::Apple => {
            let chain = fixtures::apple_chain();
            let mut claims = claims.clone();
            if let Some(inner) = inner {
                claims["data"]["signedTransactionInfo"] = Value::String(chain.sign(inner));
            }
            chain.sign(&claims)
        }
        // Receipts are signed; voided purchases are plain JSON.
        Platform::Google => match usage {
            Use::Receipt => fixtures::google_key().receipt(&claims.to_string()),
            Use::Notification => claims.to_string(),
        },
        Platform::Sandbox => {
            let mut token = String::from(SANDBOX_TOKEN_PREFIX);
            token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
            let signature = sandbox_key.sign(token.as_bytes());
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(signature.to_bytes()));
            token
        }
    }
}

/// What a verifier says about a payload, receipt or notification alike.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Purchase(VerifiedPurchase),
    Notification(VerifiedNotification),
}

fn outcome(
    verifier: &Verifier,
    platform: Platform,
    usage: Use,
    payload: &str,
    now_unix_ms: i64,
) -> std::result::Result<Outcome, ReceiptError> {
    match usage {
        Use::Receipt => verifier
            .verify_receipt(platform, payload, now_unix_ms)
            .map(Outcome::Purchase),
        Use::Notification => verifier
            .verify_notification(platform, payload, now_unix_ms)
            .map(Outcome::Notification),
    }
}

const MODE_RAW: u8 = 0;
const MODE_TEXT: u8 = 1;
const MODE_CLAIMS: u8 = 2;

/// How many genuine payloads the base byte chooses from.
pub const GENUINE_PAYLOADS: u8 = 7;

/// Seed inputs: steering patterns for every mode and genuine payload. (Genuine App Store and
/// Play payloads are signed with keys generated at start, so they cannot be checked in; the
/// text and claims modes start from them instead.)
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, pattern) in crate::steering_patterns() {
        seeds.push((
            format!("raw-{name}"),
            [&[MODE_RAW, 0], &pattern[..]].concat(),
        ));
        seeds.push((format!("header-{name}"), [&[3, 0], &pattern[..]].concat()));
    }
    for base in 0..GENUINE_PAYLOADS {
        for (name, pattern) in crate::steering_patterns().into_iter().take(3) {
            seeds.push((
                format!("text-{base}-{name}"),
                [&[MODE_TEXT, base], &pattern[..]].concat(),
            ));
            seeds.push((
                format!("claims-{base}-{name}"),
                [&[MODE_CLAIMS, base], &pattern[..]].concat(),
            ));
        }
    }
    seeds
}

/// The genuine payload `base` chooses: its platform, whether it is signed, and its text.
pub fn genuine(base: u8) -> (Platform, bool, &'static str) {
    let genuine = &fixtures().genuine[usize::from(base) % fixtures().genuine.len()];
    (genuine.platform, genuine.signed, &genuine.text)
}

/// Whether `payload` verifies as the kind of payload (receipt or notification) `base` is.
pub fn verifies_as(base: u8, payload: &str) -> bool {
    let genuine = &fixtures().genuine[usize::from(base) % fixtures().genuine.len()];
    outcome(
        &fixtures().verifier,
        genuine.platform,
        genuine.usage,
        payload,
        NOW_UNIX_MS,
    )
    .is_ok()
}

/// Runs one input and returns whether some entry point verified it; panics only when a
/// property is broken.
pub fn run(data: &[u8]) -> bool {
    let [mode, base, rest @ ..] = data else {
        return false;
    };
    let fixtures = fixtures();
    let genuine = &fixtures.genuine[usize::from(*base) % fixtures.genuine.len()];
    let mut u = Unstructured::new(rest);
    match mode % 4 {
        MODE_RAW => {
            let now_unix_ms = u.arbitrary().unwrap_or(NOW_UNIX_MS);
            every_entry_point(&String::from_utf8_lossy(u.take_rest()), now_unix_ms)
        }
        MODE_TEXT => {
            let mutated = mutate_text(&mut u, &genuine.text);
            check_mutated(genuine, &mutated)
        }
        MODE_CLAIMS => {
            let Ok((claims, inner)) = mutate_claims(&mut u, genuine) else {
                return false;
            };
            let payload = sign(
                genuine.platform,
                genuine.usage,
                &claims,
                inner.as_ref(),
                &fixtures.sandbox_key,
            );
            every_entry_point(&payload, NOW_UNIX_MS);
            check_signed_claims(genuine, &claims, inner.as_ref(), &payload)
        }
        _ => {
            // Certificates' validity is checked at any time, not only at the fixtures' now.
            let now_unix_ms = match u.ratio(1, 4) {
                Ok(true) => u.arbitrary().unwrap_or(NOW_UNIX_MS),
                _ => NOW_UNIX_MS,
            };
            let Ok(payload) = mutate_header(&mut u) else {
                return false;
            };
            let verified = every_entry_point(&payload, now_unix_ms);
            let verifier = &fixtures.verifier;
            let apple = Platform::Apple;
            if let Ok(found) = outcome(verifier, apple, Use::Receipt, &payload, now_unix_ms) {
                // The claims are the genuine ones: whatever header verifies, it verifies them.
                let genuine = &fixtures.genuine[0].text;
                let expected = outcome(verifier, apple, Use::Receipt, genuine, NOW_UNIX_MS);
                assert_eq!(Ok(found), expected);
            }
            verified
        }
    }
}

/// Every entry point on every platform answers, and whatever verifies keeps its invariants.
/// Returns whether any entry point verified the payload.
pub fn every_entry_point(payload: &str, now_unix_ms: i64) -> bool {
    let verifier = &fixtures().verifier;
    let mut verified = false;
    for platform in Platform::ALL {
        if let Ok(purchase) = verifier.verify_receipt(platform, payload, now_unix_ms) {
            check_purchase(platform, &purchase);
            verified = true;
        }
        let notification = verifier.verify_notification(platform, payload, now_unix_ms);
        verified |= notification.is_ok();
        match notification {
            Ok(VerifiedNotification::Refund(refund)) => {
                assert_eq!(refund.platform, platform);
                check_store_id(&refund.store_transaction_id);
            }
            Ok(VerifiedNotification::Ignored { notification_type }) => {
                assert!(!notification_type.is_empty());
            }
            Err(error) => {
                // Errors reach clients as status messages and ErrorInfo reasons.
                assert!(!error.code().is_empty());
                let _ = error.to_string();
            }
        }
    }
    let _ = payload.parse::<Platform>();
    let _ = coffer_receipts::decode_key_base64url(payload);
    verified
}

fn check_store_id(id: &str) {
    assert!(!id.is_empty());
    assert!(id.len() <= ID_BYTES_MAX, "an id of {} bytes", id.len());
    assert!(
        !id.chars().any(char::is_control),
        "control characters in {id:?}"
    );
}

fn check_purchase(platform: Platform, purchase: &VerifiedPurchase) {
    assert_eq!(purchase.platform, platform);
    check_store_id(&purchase.store_transaction_id);
    check_store_id(&purchase.product_id);
    assert!((1..=QUANTITY_MAX).contains(&purchase.quantity));
    assert!(!purchase.environment.is_empty());
    for id in [
        &purchase.original_transaction_id,
        &purchase.player_hint,
        &purchase.currency_code,
    ]
    .into_iter()
    .flatten()
    {
        check_store_id(id);
    }
    if purchase.price_minor_units.is_some() {
        assert!(
            purchase.currency_code.is_some(),
            "a price without a currency"
        );
    }
}

/// The bytes a payload's signature covers, as the verifier reads them.
fn signed_bytes(platform: Platform, payload: &str) -> Option<Vec<u8>> {
    match platform {
        Platform::Apple => {
            let payload = payload.trim();
            let jws = if payload.starts_with('{') {
                serde_json::from_str::<Value>(payload).ok()?["signedPayload"]
                    .as_str()?
                    .to_owned()
            } else {
                payload.to_owned()
            };
            let (input, _) = jws.rsplit_once('.')?;
            Some(input.as_bytes().to_vec())
        }
        Platform::Google => {
            let envelope: Value = serde_json::from_str(payload).ok()?;
            Some(envelope.get("purchaseData")?.as_str()?.as_bytes().to_vec())
        }
        Platform::Sandbox => {
            let body = payload.trim().strip_prefix(SANDBOX_TOKEN_PREFIX)?;
            let (claims, _) = body.split_once('.')?;
            Some(format!("{SANDBOX_TOKEN_PREFIX}{claims}").into_bytes())
        }
    }
}

/// A genuine payload changed in its text verifies only if its signed bytes are unchanged, and
/// then as exactly the genuine purchase or refund.
fn check_mutated(genuine: &Genuine, mutated: &str) -> bool {
    every_entry_point(mutated, NOW_UNIX_MS);
    let verifier = &fixtures().verifier;
    let Ok(found) = outcome(
        verifier,
        genuine.platform,
        genuine.usage,
        mutated,
        NOW_UNIX_MS,
    ) else {
        return false;
    };
    let original = outcome(
        verifier,
        genuine.platform,
        genuine.usage,
        &genuine.text,
        NOW_UNIX_MS,
    );
    if genuine.signed {
        assert_eq!(
            signed_bytes(genuine.platform, mutated),
            signed_bytes(genuine.platform, &genuine.text),
            "a payload changed in its signed bytes verified: {mutated:?}"
        );
        assert_eq!(
            Ok(found),
            original,
            "the same signed bytes verified differently"
        );
    }
    true
}

/// A payload signed with the right key verifies only as what its claims say.
fn check_signed_claims(
    genuine: &Genuine,
    claims: &Value,
    inner: Option<&Value>,
    payload: &str,
) -> bool {
    let verifier = &fixtures().verifier;
    let result = outcome(
        verifier,
        genuine.platform,
        genuine.usage,
        payload,
        NOW_UNIX_MS,
    );
    let Ok(found) = result else { return false };
    let str_of = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_owned);
    match (genuine.platform, found) {
        (Platform::Apple, Outcome::Purchase(p)) => {
            assert_eq!(str_of(claims, "bundleId").as_deref(), Some(BUNDLE_ID));
            assert_eq!(str_of(claims, "environment").as_deref(), Some("Production"));
            assert!(
                claims.get("revocationDate").is_none_or(Value::is_null),
                "a revoked transaction verified"
            );
            assert_eq!(
                Some(p.store_transaction_id),
                str_of(claims, "transactionId")
            );
            assert_eq!(Some(p.product_id), str_of(claims, "productId"));
        }
        (Platform::Apple, Outcome::Notification(VerifiedNotification::Refund(refund))) => {
            let inner = inner.expect("a notification has an inner transaction");
            assert_eq!(
                str_of(&claims["data"], "bundleId").as_deref(),
                Some(BUNDLE_ID)
            );
            assert_eq!(str_of(inner, "bundleId").as_deref(), Some(BUNDLE_ID));
            assert_eq!(
                Some(refund.store_transaction_id),
                str_of(inner, "transactionId")
            );
            assert!(matches!(
                str_of(claims, "notificationType").as_deref(),
                Some("REFUND" | "REVOKE")
            ));
        }
        (Platform::Google, Outcome::Purchase(p)) => {
            assert_eq!(str_of(claims, "packageName").as_deref(), Some(PACKAGE_NAME));
            let state = claims.get("purchaseState");
            assert!(
                state.is_none_or(|s| s.is_null() || s.as_i64() == Some(0)),
                "purchaseState {state:?}"
            );
            let order = str_of(claims, "orderId").filter(|o| !o.is_empty());
            assert_eq!(
                Some(p.store_transaction_id),
                order.or_else(|| str_of(claims, "purchaseToken"))
            );
        }
        (Platform::Sandbox, Outcome::Purchase(p)) => {
            assert_eq!(str_of(claims, "type").as_deref(), Some("purchase"));
            assert_eq!(str_of(claims, "environment").as_deref(), Some("sandbox"));
            assert_eq!(
                Some(p.store_transaction_id),
                str_of(claims, "transactionId")
            );
            assert_eq!(p.player_hint, str_of(claims, "playerId"));
        }
        (Platform::Sandbox, Outcome::Notification(VerifiedNotification::Refund(refund))) => {
            assert!(matches!(
                str_of(claims, "type").as_deref(),
                Some("refund" | "revoke")
            ));
            assert_eq!(
                Some(refund.store_transaction_id),
                str_of(claims, "transactionId")
            );
        }
        // Ignored notifications, and Play voided purchases (trusted input, not signed).
        (_, Outcome::Notification(_)) => {}
    }
    true
}

const CHARS: &[char] = &[
    '.', '=', ' ', '\n', '+', '/', '-', '_', 'A', 'a', '0', '\0', 'é', '"', '\\', '{', '}', ',',
    '\u{feff}', '\u{3000}',
];

fn char_at_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

fn mutate_text(u: &mut Unstructured<'_>, text: &str) -> String {
    let mut text = text.to_owned();
    let others = &fixtures().genuine;
    for _ in 0..u.int_in_range(1..=MUTATIONS_MAX).unwrap_or(1) {
        let Ok(op) = u.int_in_range(0..=6u8) else {
            break;
        };
        let at = char_at_boundary(&text, u.choose_index(text.len() + 1).unwrap_or(0));
        let end = char_at_boundary(&text, at + u.int_in_range(1..=64usize).unwrap_or(1));
        match op {
            0 => {
                let c = u.choose(CHARS).copied().unwrap_or('.');
                text.replace_range(at..end.max(at), &c.to_string());
                if end == at {
                    text.insert(at, c);
                }
            }
            1 => text.insert(at, u.choose(CHARS).copied().unwrap_or('.')),
            2 => text.replace_range(at..end, ""),
            3 => {
                let piece = text[at..end].to_owned();
                text.insert_str(at, &piece);
            }
            4 => text.truncate(at),
            5 => {
                // A splice from another genuine payload: mixes signatures and segments.
                let other = &others[u.choose_index(others.len()).unwrap_or(0)].text;
                let from = char_at_boundary(other, u.choose_index(other.len() + 1).unwrap_or(0));
                let to = char_at_boundary(other, from + u.int_in_range(1..=400usize).unwrap_or(1));
                text.insert_str(at, &other[from..to]);
            }
            _ => {
                // Swap two dot-separated segments (e.g. header and payload).
                let mut parts: Vec<&str> = text.split('.').collect();
                if parts.len() >= 2 {
                    let i = u.choose_index(parts.len()).unwrap_or(0);
                    let j = u.choose_index(parts.len()).unwrap_or(0);
                    parts.swap(i, j);
                }
                text = parts.join(".");
            }
        }
        if u.is_empty() {
            break;
        }
    }
    text
}

const FIELDS: &[&str] = &[
    "transactionId",
    "originalTransactionId",
    "bundleId",
    "productId",
    "productIds",
    "purchaseDate",
    "quantity",
    "price",
    "currency",
    "environment",
    "revocationDate",
    "revocationReason",
    "appAccountToken",
    "orderId",
    "packageName",
    "purchaseTime",
    "purchaseState",
    "purchaseToken",
    "obfuscatedAccountId",
    "type",
    "playerId",
    "issuedAtUnixMs",
    "priceMinorUnits",
    "notificationType",
    "signedDate",
    "data",
    "voidedTimeMillis",
    "eventTimeMillis",
    "voidedPurchaseNotification",
    "voidedReason",
];

fn edge_value(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=13u8)? {
        0 => Value::Null,
        1 => json!(""),
        2 => json!("x".repeat(u.int_in_range(ID_BYTES_MAX..=ID_BYTES_MAX + 1)?)),
        3 => json!("bell\u{7}"),
        4 => json!(*u.choose(&[
            i64::MIN,
            i64::MAX,
            -1,
            0,
            1,
            10,
            1_000,
            1_001,
            u32::MAX as i64 + 1
        ])?),
        5 => json!(u.arbitrary::<i64>()?),
        6 => json!(1.5),
        7 => json!(true),
        8 => json!({"nested": [1, {"deeper": null}]}),
        9 => json!(["gems_500", "gems_100"]),
        10 => json!(*u.choose(&[
            "Production",
            "Sandbox",
            "Xcode",
            "sandbox",
            "purchase",
            "refund",
            "revoke",
            "REFUND",
            "REVOKE",
            "DID_RENEW",
            "TEST",
            "USD",
            "JPY",
            "KWD",
            "CLF",
            BUNDLE_ID,
            "com.example.other",
            "0",
            "1750000000000"
        ])?),
        11 => json!(u.arbitrary::<String>()?),
        12 => json!((u.arbitrary::<i64>()?).to_string()),
        _ => json!(*u.choose(&[12_990i64, 12_995, i64::MAX, -12_990])?),
    })
}

fn mutate_object(u: &mut Unstructured<'_>, claims: &mut Value) -> Result<()> {
    let Some(object) = claims.as_object_mut() else {
        return Ok(());
    };
    match u.int_in_range(0..=3u8)? {
        0 if !object.is_empty() => {
            let key = object
                .keys()
                .nth(u.choose_index(object.len())?)
                .cloned()
                .expect("in range");
            object.remove(&key);
        }
        1 if !object.is_empty() => {
            let key = object
                .keys()
                .nth(u.choose_index(object.len())?)
                .cloned()
                .expect("in range");
            object.insert(key, edge_value(u)?);
        }
        _ => {
            object.insert((*u.choose(FIELDS)?).to_owned(), edge_value(u)?);
        }
    }
    Ok(())
}

fn mutate_claims(u: &mut Unstructured<'_>, genuine: &Genuine) -> Result<(Value, Option<Value>)> {
    let mut claims = genuine.claims.clone();
    let mut inner = genuine.inner_claims.clone();
    for _ in 0..u.int_in_range(1..=MUTATIONS_MAX)? {
        match (u.int_in_range(0..=2u8)?, inner.as_mut()) {
            (0, Some(inner)) => mutate_object(u, inner)?,
            (1, _) if claims.get("data").is_some_and(Value::is_object) => {
                mutate_object(u, &mut claims["data"])?
            }
            _ => mutate_object(u, &mut claims)?,
        }
    }
    if inner.is_some() && !claims.get("data").is_some_and(Value::is_object) {
        // The notification lost its data: there is nothing to put the inner transaction in.
        inner = None;
    }
    Ok((claims, inner))
}

fn mutate_header(u: &mut Unstructured<'_>) -> Result<String> {
    let chain = fixtures::apple_chain();
    let mut x5c: Vec<Value> = chain.x5c().into_iter().map(Value::String).collect();
    let mut header = json!({"alg": "ES256"});
    for _ in 0..u.int_in_range(1..=MUTATIONS_MAX)? {
        match u.int_in_range(0..=6u8)? {
            0 if !x5c.is_empty() => {
                x5c.remove(u.choose_index(x5c.len())?);
            }
            1 if !x5c.is_empty() => {
                let i = u.choose_index(x5c.len())?;
                x5c.insert(i, x5c[i].clone());
            }
            2 if x5c.len() >= 2 => {
                let (i, j) = (u.choose_index(x5c.len())?, u.choose_index(x5c.len())?);
                x5c.swap(i, j);
            }
            3 if !x5c.is_empty() => {
                // A certificate cut short or with a byte changed: DER and chain parsing.
                let i = u.choose_index(x5c.len())?;
                let mut der = STANDARD
                    .decode(x5c[i].as_str().unwrap_or_default())
                    .unwrap_or_default();
                if !der.is_empty() {
                    let at = u.choose_index(der.len())?;
                    if u.arbitrary()? {
                        der.truncate(at);
                    } else {
                        der[at] ^= u.int_in_range(1..=255u8)?;
                    }
                }
                x5c[i] = Value::String(STANDARD.encode(der));
            }
            4 => {
                header["alg"] =
                    json!(*u.choose(&["ES256", "none", "HS256", "ES384", "", "es256"])?);
            }
            5 => header["crit"] = json!(["b64"]),
            _ => x5c.push(edge_value(u)?),
        }
    }
    header["x5c"] = Value::Array(x5c);
    Ok(chain.sign_with_header(&header, &fixtures::apple_transaction()))
}
