//! Request checks: every `coffer.v1` request the server checks before it reaches the writer
//! becomes either a command that keeps every bound in [`coffer_core::limits`] or an
//! `INVALID_ARGUMENT` status that fits in gRPC trailers, never a panic.
//!
//! An input is a mode byte, a request-kind byte and the rest:
//! - wire: the rest is the protobuf encoding of the request, decoded as the server decodes it;
//! - model: the rest steers a generator that fills every field mostly from valid values and
//!   bound edges (ids of 64 and 65 bytes, 64 and 65 entries, amounts around 10^15), so many
//!   requests pass the checks and reach the limits assertions.

use arbitrary::{Result, Unstructured};
use coffer_core::limits::*;
use coffer_core::{Amounts, Contents, ExecuteStep, IdempotencyKey, Operation, check_id};
use coffer_proto::v1 as pb;
use coffer_server::error::{
    ApiError, FIELD_TEXT_BYTES_MAX, FIELD_VIOLATIONS_MAX, MESSAGE_BYTES_MAX,
};
use coffer_server::requests::{self, AdminRequest, PlayerRequest};
use prost::Message;
use tonic_types::StatusExt;

/// How many request kinds an input's second byte chooses from.
pub const REQUEST_KINDS: u8 = 14;

const MODE_WIRE: u8 = 0;

/// A request of any checked kind.
#[derive(Debug, Clone)]
pub enum AnyRequest {
    Purchase(pb::PurchaseRequest),
    Upgrade(pb::UpgradeRequest),
    Consume(pb::ConsumeRequest),
    ClaimReward(pb::ClaimRewardRequest),
    Grant(pb::GrantRequest),
    Revoke(pb::RevokeRequest),
    Reverse(pb::ReverseRequest),
    Execute(pb::ExecuteRequest),
    ListTransactions(pb::ListTransactionsRequest),
    RedeemReceipt(pb::RedeemReceiptRequest),
    StoreNotification(pb::ProcessStoreNotificationRequest),
    IssuePlayerToken(pb::IssuePlayerTokenRequest),
    GetWallet(pb::GetWalletRequest),
    Subscribe(pb::SubscribeRequest),
}

impl AnyRequest {
    /// The kind byte of this request and its protobuf encoding: a seed in wire mode.
    pub fn encode(&self) -> (u8, Vec<u8>) {
        match self {
            Self::Purchase(r) => (0, r.encode_to_vec()),
            Self::Upgrade(r) => (1, r.encode_to_vec()),
            Self::Consume(r) => (2, r.encode_to_vec()),
            Self::ClaimReward(r) => (3, r.encode_to_vec()),
            Self::Grant(r) => (4, r.encode_to_vec()),
            Self::Revoke(r) => (5, r.encode_to_vec()),
            Self::Reverse(r) => (6, r.encode_to_vec()),
            Self::Execute(r) => (7, r.encode_to_vec()),
            Self::ListTransactions(r) => (8, r.encode_to_vec()),
            Self::RedeemReceipt(r) => (9, r.encode_to_vec()),
            Self::StoreNotification(r) => (10, r.encode_to_vec()),
            Self::IssuePlayerToken(r) => (11, r.encode_to_vec()),
            Self::GetWallet(r) => (12, r.encode_to_vec()),
            Self::Subscribe(r) => (13, r.encode_to_vec()),
        }
    }

    /// Decodes `bytes` as a request of `kind`, as the server's codec would.
    pub fn decode(kind: u8, bytes: &[u8]) -> Option<AnyRequest> {
        Some(match kind % REQUEST_KINDS {
            0 => Self::Purchase(Message::decode(bytes).ok()?),
            1 => Self::Upgrade(Message::decode(bytes).ok()?),
            2 => Self::Consume(Message::decode(bytes).ok()?),
            3 => Self::ClaimReward(Message::decode(bytes).ok()?),
            4 => Self::Grant(Message::decode(bytes).ok()?),
            5 => Self::Revoke(Message::decode(bytes).ok()?),
            6 => Self::Reverse(Message::decode(bytes).ok()?),
            7 => Self::Execute(Message::decode(bytes).ok()?),
            8 => Self::ListTransactions(Message::decode(bytes).ok()?),
            9 => Self::RedeemReceipt(Message::decode(bytes).ok()?),
            10 => Self::StoreNotification(Message::decode(bytes).ok()?),
            11 => Self::IssuePlayerToken(Message::decode(bytes).ok()?),
            12 => Self::GetWallet(Message::decode(bytes).ok()?),
            _ => Self::Subscribe(Message::decode(bytes).ok()?),
        })
    }
}

/// One valid request of every kind: each passes its check.
pub fn valid_requests() -> Vec<AnyRequest> {
    let money = |currency: &str, amount| pb::Money {
        currency_id: currency.to_owned(),
        amount_minor_units: amount,
    };
    let contents = || {
        Some(pb::Contents {
            currencies: vec![money("coins", 10)],
            items: vec![pb::ItemQuantity {
                item_id: "potion".to_owned(),
                quantity: 2,
            }],
        })
    };
    use pb::operation::Operation as Op;
    vec![
        AnyRequest::Purchase(pb::PurchaseRequest {
            player_id: "alice".to_owned(),
            offer_id: "potion".to_owned(),
            expected_price: vec![money("coins", 10)],
            idempotency_key: "alice-potion-1".to_owned(),
        }),
        AnyRequest::Upgrade(pb::UpgradeRequest {
            player_id: "alice".to_owned(),
            item_id: "speed_boots".to_owned(),
            target_level: 2,
            expected_price: vec![money("coins", 120)],
            idempotency_key: "alice-boots-2".to_owned(),
        }),
        AnyRequest::Consume(pb::ConsumeRequest {
            player_id: "alice".to_owned(),
            item_id: "potion".to_owned(),
            quantity: 1,
            idempotency_key: "alice-drink-1".to_owned(),
        }),
        AnyRequest::ClaimReward(pb::ClaimRewardRequest {
            player_id: "alice".to_owned(),
            reward_id: "daily_bonus".to_owned(),
            idempotency_key: "alice-daily-1".to_owned(),
        }),
        AnyRequest::Grant(pb::GrantRequest {
            player_id: "alice".to_owned(),
            contents: contents(),
            reason: "support ticket 7".to_owned(),
            idempotency_key: "grant-7".to_owned(),
        }),
        AnyRequest::Revoke(pb::RevokeRequest {
            player_id: "alice".to_owned(),
            contents: contents(),
            reason: String::new(),
            idempotency_key: "revoke-7".to_owned(),
        }),
        AnyRequest::Reverse(pb::ReverseRequest {
            transaction_id: 2,
            reason: "mistake".to_owned(),
            idempotency_key: "reverse-2".to_owned(),
        }),
        AnyRequest::Execute(pb::ExecuteRequest {
            operations: vec![
                pb::Operation {
                    operation: Some(Op::Transfer(pb::TransferOperation {
                        from_player_id: "alice".to_owned(),
                        to_player_id: "bob".to_owned(),
                        contents: contents(),
                    })),
                },
                pb::Operation {
                    operation: Some(Op::Grant(pb::GrantOperation {
                        player_id: "bob".to_owned(),
                        contents: contents(),
                    })),
                },
            ],
            reason: "trade".to_owned(),
            idempotency_key: "trade-1".to_owned(),
        }),
        AnyRequest::ListTransactions(pb::ListTransactionsRequest {
            player_id: "alice".to_owned(),
            page_size: 10,
            page_token: "42".to_owned(),
        }),
        AnyRequest::RedeemReceipt(pb::RedeemReceiptRequest {
            player_id: "alice".to_owned(),
            platform: pb::StorePlatform::Sandbox.into(),
            payload: "coffer-sandbox-v1.e30.AAAA".to_owned(),
            idempotency_key: String::new(),
        }),
        AnyRequest::StoreNotification(pb::ProcessStoreNotificationRequest {
            platform: pb::StorePlatform::Google.into(),
            payload: "{}".to_owned(),
        }),
        AnyRequest::IssuePlayerToken(pb::IssuePlayerTokenRequest {
            player_id: "alice".to_owned(),
            ttl_seconds: 3600,
        }),
        AnyRequest::GetWallet(pb::GetWalletRequest {
            player_id: "alice".to_owned(),
        }),
        AnyRequest::Subscribe(pb::SubscribeRequest {
            player_id: "alice".to_owned(),
            from_version: 3,
        }),
    ]
}

/// Seed inputs: every valid request in wire mode, and steering patterns in model mode.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for request in valid_requests() {
        let (kind, bytes) = request.encode();
        seeds.push((
            format!("wire-{kind:02}"),
            [&[MODE_WIRE, kind], &bytes[..]].concat(),
        ));
    }
    for kind in 0..REQUEST_KINDS {
        for (name, pattern) in crate::steering_patterns().into_iter().take(2) {
            seeds.push((
                format!("model-{kind:02}-{name}"),
                [&[1, kind], &pattern[..]].concat(),
            ));
        }
    }
    seeds
}

/// Runs one input and returns whether the request was accepted; panics only when a property
/// is broken.
pub fn run(data: &[u8]) -> bool {
    let [mode, kind, rest @ ..] = data else {
        return false;
    };
    let request = if mode % 2 == MODE_WIRE {
        AnyRequest::decode(*kind, rest)
    } else {
        generate(*kind, &mut Unstructured::new(rest)).ok()
    };
    request.is_some_and(|request| check(&request))
}

/// Checks one request the way its handler does; returns whether it was accepted.
pub fn check(request: &AnyRequest) -> bool {
    let result: std::result::Result<(), ApiError> = match request {
        AnyRequest::Purchase(r) => requests::purchase(r).map(|p| {
            check_player(&p, &r.player_id, &r.idempotency_key);
            let Operation::Purchase {
                offer_id,
                expected_price,
                ..
            } = &p.operation
            else {
                panic!("Purchase became {:?}", p.operation)
            };
            check_ok_id(offer_id);
            // Empty is allowed: a free offer (limited per player) quotes no price.
            check_amounts(expected_price);
        }),
        AnyRequest::Upgrade(r) => requests::upgrade(r).map(|p| {
            check_player(&p, &r.player_id, &r.idempotency_key);
            let Operation::Upgrade {
                item_id,
                target_level,
                expected_price,
                ..
            } = &p.operation
            else {
                panic!("Upgrade became {:?}", p.operation)
            };
            check_ok_id(item_id);
            assert!(*target_level >= 1);
            check_amounts(expected_price);
        }),
        AnyRequest::Consume(r) => requests::consume(r).map(|p| {
            check_player(&p, &r.player_id, &r.idempotency_key);
            let Operation::Consume {
                item_id, quantity, ..
            } = &p.operation
            else {
                panic!("Consume became {:?}", p.operation)
            };
            check_ok_id(item_id);
            assert!((1..=ITEM_QUANTITY_MAX).contains(quantity));
        }),
        AnyRequest::ClaimReward(r) => requests::claim_reward(r).map(|p| {
            check_player(&p, &r.player_id, &r.idempotency_key);
            let Operation::ClaimReward { reward_id, .. } = &p.operation else {
                panic!("ClaimReward became {:?}", p.operation)
            };
            check_ok_id(reward_id);
        }),
        AnyRequest::Grant(r) => requests::grant(r).map(|a| {
            check_admin(&a, &r.idempotency_key, &r.reason);
            let Operation::Grant {
                player_id,
                contents,
            } = &a.operation
            else {
                panic!("Grant became {:?}", a.operation)
            };
            assert_eq!(player_id, &r.player_id);
            check_ok_id(player_id);
            check_contents(contents);
        }),
        AnyRequest::Revoke(r) => requests::revoke(r).map(|a| {
            check_admin(&a, &r.idempotency_key, &r.reason);
            let Operation::Revoke {
                player_id,
                contents,
            } = &a.operation
            else {
                panic!("Revoke became {:?}", a.operation)
            };
            assert_eq!(player_id, &r.player_id);
            check_ok_id(player_id);
            check_contents(contents);
        }),
        AnyRequest::Reverse(r) => requests::reverse(r).map(|a| {
            check_admin(&a, &r.idempotency_key, &r.reason);
            assert_eq!(
                a.operation,
                Operation::Reverse {
                    transaction_id: r.transaction_id
                }
            );
            assert!(r.transaction_id >= 1);
        }),
        AnyRequest::Execute(r) => requests::execute(r).map(|a| {
            check_admin(&a, &r.idempotency_key, &r.reason);
            let Operation::Execute { steps } = &a.operation else {
                panic!("Execute became {:?}", a.operation)
            };
            assert!((1..=EXECUTE_STEPS_MAX).contains(&steps.len()));
            assert_eq!(steps.len(), r.operations.len(), "a step was dropped");
            for step in steps {
                match step {
                    ExecuteStep::Grant {
                        player_id,
                        contents,
                    }
                    | ExecuteStep::Revoke {
                        player_id,
                        contents,
                    } => {
                        check_ok_id(player_id);
                        check_contents(contents);
                    }
                    ExecuteStep::Transfer {
                        from_player_id,
                        to_player_id,
                        contents,
                    } => {
                        check_ok_id(from_player_id);
                        check_ok_id(to_player_id);
                        assert_ne!(from_player_id, to_player_id);
                        check_contents(contents);
                    }
                }
            }
        }),
        AnyRequest::ListTransactions(r) => requests::list_transactions(r).map(|page| {
            assert_eq!(page.player_id, r.player_id);
            check_ok_id(&page.player_id);
            assert!((1..=coffer_server::PAGE_SIZE_MAX).contains(&page.page_size));
            if r.page_token.is_empty() {
                assert_eq!(page.before_version, u64::MAX);
            } else {
                assert_eq!(r.page_token.parse::<u64>(), Ok(page.before_version));
            }
        }),
        AnyRequest::RedeemReceipt(r) => requests::redeem_receipt(r).map(|redemption| {
            assert_eq!(redemption.player_id, r.player_id);
            check_ok_id(&redemption.player_id);
            assert!((1..=coffer_receipts::PAYLOAD_BYTES_MAX).contains(&r.payload.len()));
            assert_eq!(platform_number(redemption.platform), r.platform);
            match &redemption.client_key {
                Some(key) => check_ok_key(key),
                None => assert!(r.idempotency_key.is_empty()),
            }
        }),
        AnyRequest::StoreNotification(r) => requests::store_notification(r).map(|platform| {
            assert!((1..=coffer_receipts::PAYLOAD_BYTES_MAX).contains(&r.payload.len()));
            assert_eq!(platform_number(platform), r.platform);
        }),
        AnyRequest::IssuePlayerToken(r) => {
            requests::issue_player_token(r).map(|(player_id, ttl_seconds)| {
                check_ok_id(&player_id);
                assert!(
                    (1..=coffer_server::auth::tokens::TOKEN_TTL_SECONDS_MAX).contains(&ttl_seconds)
                );
            })
        }
        AnyRequest::GetWallet(r) => requests::player_id(&r.player_id).map(|id| check_ok_id(&id)),
        AnyRequest::Subscribe(r) => requests::player_id(&r.player_id).map(|id| check_ok_id(&id)),
    };
    match result {
        Ok(()) => true,
        Err(error) => {
            check_refusal(error);
            false
        }
    }
}

fn platform_number(platform: coffer_receipts::Platform) -> i32 {
    let wire = match platform {
        coffer_receipts::Platform::Apple => pb::StorePlatform::Apple,
        coffer_receipts::Platform::Google => pb::StorePlatform::Google,
        coffer_receipts::Platform::Sandbox => pb::StorePlatform::Sandbox,
    };
    wire.into()
}

fn check_ok_id(id: &str) {
    assert_eq!(check_id(id), Ok(()), "an accepted id {id:?}");
}

fn check_ok_key(key: &str) {
    assert!(
        (1..=IDEMPOTENCY_KEY_LEN_MAX).contains(&key.len()),
        "key length {}",
        key.len()
    );
    assert!(
        key.bytes().all(|b| (0x20..0x7f).contains(&b)),
        "key {key:?}"
    );
}

fn check_player(checked: &PlayerRequest, player_id: &str, key: &str) {
    assert_eq!(checked.player_id, player_id);
    check_ok_id(player_id);
    check_ok_key(key);
    assert_eq!(
        checked.idempotency_key,
        IdempotencyKey::player(player_id, key)
    );
    assert_eq!(
        checked.operation.players().collect::<Vec<_>>(),
        vec![player_id]
    );
}

fn check_admin(checked: &AdminRequest, key: &str, reason: &str) {
    check_ok_key(key);
    assert_eq!(checked.idempotency_key, IdempotencyKey::admin(key));
    assert_eq!(checked.reason, reason);
    assert!(reason.len() <= REASON_LEN_MAX);
}

fn check_amounts(amounts: &Amounts) {
    assert!(amounts.len() <= CONTENTS_LEN_MAX);
    for (currency, amount) in amounts {
        check_ok_id(currency);
        assert!(
            (1..=AMOUNT_MINOR_UNITS_MAX).contains(amount),
            "amount {amount}"
        );
    }
}

fn check_contents(contents: &Contents) {
    assert!(!contents.is_empty());
    check_amounts(&contents.currencies);
    assert!(contents.items.len() <= CONTENTS_LEN_MAX);
    for (item, quantity) in &contents.items {
        check_ok_id(item);
        assert!(
            (1..=ITEM_QUANTITY_MAX).contains(quantity),
            "quantity {quantity}"
        );
    }
}

/// A refused request is INVALID_ARGUMENT naming at least one field, and its status fits.
fn check_refusal(error: ApiError) {
    let ApiError::InvalidArgument(fields) = &error else {
        panic!("a request check failed with {error:?}, not INVALID_ARGUMENT");
    };
    assert!(!fields.is_empty(), "refused without a reason");
    let status = tonic::Status::from(error);
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(
        status.message().len() <= MESSAGE_BYTES_MAX,
        "message of {} bytes",
        status.message().len()
    );
    let details = status.get_error_details();
    let bad_request = details.bad_request().expect("a BadRequest detail");
    assert!(!bad_request.field_violations.is_empty());
    assert!(bad_request.field_violations.len() <= FIELD_VIOLATIONS_MAX);
    for violation in &bad_request.field_violations {
        assert!(violation.field.len() <= FIELD_TEXT_BYTES_MAX);
        assert!(violation.description.len() <= FIELD_TEXT_BYTES_MAX);
    }
}

// ---- the generator: valid values most of the time, bound edges and junk the rest ----

const IDS: &[&str] = &[
    "alice",
    "bob",
    "coins",
    "gems",
    "credits",
    "potion",
    "sword",
    "speed_boots",
    "starter_pack",
    "daily_bonus",
    "a.b-c_d@e",
    "A",
];

const BAD_IDS: &[&str] = &[
    "",
    "system:shop",
    "a:b",
    "ünï",
    "a b",
    "\0",
    "éééééééééééééééééééééééééééééééééé",
];

fn id(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => "i".repeat(u.int_in_range(ID_LEN_MAX - 1..=ID_LEN_MAX + 1)?),
        1 => (*u.choose(BAD_IDS)?).to_owned(),
        2 => u.arbitrary()?,
        _ => (*u.choose(IDS)?).to_owned(),
    })
}

fn key(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => "k".repeat(u.int_in_range(IDEMPOTENCY_KEY_LEN_MAX - 1..=IDEMPOTENCY_KEY_LEN_MAX + 1)?),
        1 => (*u.choose(&["", " ", "~", "\x7f", "\t", "é", "key\n"])?).to_owned(),
        2 => u.arbitrary()?,
        _ => format!("key-{}", u.arbitrary::<u16>()?),
    })
}

fn reason(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => "r".repeat(u.int_in_range(REASON_LEN_MAX - 1..=REASON_LEN_MAX + 1)?),
        1 => "é".repeat(REASON_LEN_MAX / 2 + u.int_in_range(0..=1)?),
        2 => u.arbitrary()?,
        _ => String::new(),
    })
}

fn amount(u: &mut Unstructured<'_>) -> Result<i64> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => *u.choose(&[
            0,
            -1,
            i64::MIN,
            i64::MAX,
            AMOUNT_MINOR_UNITS_MAX,
            AMOUNT_MINOR_UNITS_MAX + 1,
        ])?,
        1 => u.arbitrary()?,
        _ => u.int_in_range(1..=1_000)?,
    })
}

fn quantity(u: &mut Unstructured<'_>) -> Result<u64> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => *u.choose(&[0, ITEM_QUANTITY_MAX, ITEM_QUANTITY_MAX + 1, u64::MAX])?,
        1 => u.arbitrary()?,
        _ => u.int_in_range(1..=99)?,
    })
}

/// A length: usually small, sometimes at or just past `bound`.
fn len(u: &mut Unstructured<'_>, bound: usize) -> Result<usize> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => u.int_in_range(bound..=bound + 1)?,
        1 => 0,
        _ => u.int_in_range(1..=3)?,
    })
}

fn money(u: &mut Unstructured<'_>) -> Result<Vec<pb::Money>> {
    let n = len(u, CONTENTS_LEN_MAX)?;
    (0..n)
        .map(|index| {
            Ok(pb::Money {
                // Long lists need distinct currencies to pass; short ones test duplicates.
                currency_id: if n > 3 { format!("c{index}") } else { id(u)? },
                amount_minor_units: amount(u)?,
            })
        })
        .collect()
}

fn contents(u: &mut Unstructured<'_>) -> Result<Option<pb::Contents>> {
    if u.ratio(1, 10)? {
        return Ok(None);
    }
    let n = len(u, CONTENTS_LEN_MAX)?;
    let items = (0..n)
        .map(|index| {
            Ok(pb::ItemQuantity {
                item_id: if n > 3 { format!("i{index}") } else { id(u)? },
                quantity: quantity(u)?,
            })
        })
        .collect::<Result<_>>()?;
    Ok(Some(pb::Contents {
        currencies: money(u)?,
        items,
    }))
}

fn platform(u: &mut Unstructured<'_>) -> Result<i32> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => u.arbitrary()?,
        _ => u.int_in_range(0..=3)?,
    })
}

fn payload(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => "p".repeat(u.int_in_range(
            coffer_receipts::PAYLOAD_BYTES_MAX..=coffer_receipts::PAYLOAD_BYTES_MAX + 1,
        )?),
        1 => String::new(),
        _ => u.arbitrary()?,
    })
}

fn operation(u: &mut Unstructured<'_>) -> Result<pb::Operation> {
    use pb::operation::Operation as Op;
    let operation = match u.int_in_range(0..=3u8)? {
        0 => None,
        1 => Some(Op::Grant(pb::GrantOperation {
            player_id: id(u)?,
            contents: contents(u)?,
        })),
        2 => Some(Op::Revoke(pb::RevokeOperation {
            player_id: id(u)?,
            contents: contents(u)?,
        })),
        _ => Some(Op::Transfer(pb::TransferOperation {
            from_player_id: id(u)?,
            to_player_id: id(u)?,
            contents: contents(u)?,
        })),
    };
    Ok(pb::Operation { operation })
}

/// A request of `kind` with every field chosen by `u`.
pub fn generate(kind: u8, u: &mut Unstructured<'_>) -> Result<AnyRequest> {
    Ok(match kind % REQUEST_KINDS {
        0 => AnyRequest::Purchase(pb::PurchaseRequest {
            player_id: id(u)?,
            offer_id: id(u)?,
            expected_price: money(u)?,
            idempotency_key: key(u)?,
        }),
        1 => AnyRequest::Upgrade(pb::UpgradeRequest {
            player_id: id(u)?,
            item_id: id(u)?,
            target_level: *u.choose(&[0, 1, 2, 5, 6, u32::MAX])?,
            expected_price: money(u)?,
            idempotency_key: key(u)?,
        }),
        2 => AnyRequest::Consume(pb::ConsumeRequest {
            player_id: id(u)?,
            item_id: id(u)?,
            quantity: quantity(u)?,
            idempotency_key: key(u)?,
        }),
        3 => AnyRequest::ClaimReward(pb::ClaimRewardRequest {
            player_id: id(u)?,
            reward_id: id(u)?,
            idempotency_key: key(u)?,
        }),
        4 => AnyRequest::Grant(pb::GrantRequest {
            player_id: id(u)?,
            contents: contents(u)?,
            reason: reason(u)?,
            idempotency_key: key(u)?,
        }),
        5 => AnyRequest::Revoke(pb::RevokeRequest {
            player_id: id(u)?,
            contents: contents(u)?,
            reason: reason(u)?,
            idempotency_key: key(u)?,
        }),
        6 => AnyRequest::Reverse(pb::ReverseRequest {
            transaction_id: *u.choose(&[0, 1, 2, u64::MAX])?,
            reason: reason(u)?,
            idempotency_key: key(u)?,
        }),
        7 => AnyRequest::Execute(pb::ExecuteRequest {
            operations: (0..len(u, EXECUTE_STEPS_MAX)?)
                .map(|_| operation(u))
                .collect::<Result<_>>()?,
            reason: reason(u)?,
            idempotency_key: key(u)?,
        }),
        8 => AnyRequest::ListTransactions(pb::ListTransactionsRequest {
            player_id: id(u)?,
            page_size: *u.choose(&[0, 1, 500, 501, u32::MAX])?,
            page_token: (*u.choose(&[
                "",
                "1",
                "42",
                "+7",
                "007",
                "-1",
                " 1",
                "18446744073709551615",
                "18446744073709551616",
                "x",
            ])?)
            .to_owned(),
        }),
        9 => AnyRequest::RedeemReceipt(pb::RedeemReceiptRequest {
            player_id: id(u)?,
            platform: platform(u)?,
            payload: payload(u)?,
            idempotency_key: if u.arbitrary()? {
                String::new()
            } else {
                key(u)?
            },
        }),
        10 => AnyRequest::StoreNotification(pb::ProcessStoreNotificationRequest {
            platform: platform(u)?,
            payload: payload(u)?,
        }),
        11 => AnyRequest::IssuePlayerToken(pb::IssuePlayerTokenRequest {
            player_id: id(u)?,
            ttl_seconds: *u.choose(&[0, 1, 3600, 86_400, 86_401, u32::MAX])?,
        }),
        12 => AnyRequest::GetWallet(pb::GetWalletRequest { player_id: id(u)? }),
        _ => AnyRequest::Subscribe(pb::SubscribeRequest {
            player_id: id(u)?,
            from_version: u.arbitrary()?,
        }),
    })
}
