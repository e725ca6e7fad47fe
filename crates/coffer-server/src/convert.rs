//! Conversions between the wire (`coffer.v1` messages) and the core's types. Requests are checked
//! here, field by field, before anything reaches the writer: a malformed request never costs a
//! commit and changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use coffer_core::limits::{
    AMOUNT_MINOR_UNITS_MAX, CONTENTS_LEN_MAX, EXECUTE_STEPS_MAX, IDEMPOTENCY_KEY_LEN_MAX,
    ITEM_QUANTITY_MAX, REASON_LEN_MAX,
};
use coffer_core::{
    AccountState, Amounts, Catalog, Contents, ExecuteStep, ItemKind, Name, StorePlatform,
    Transaction, TransactionKind, check_id,
};
use coffer_proto::v1 as pb;

use crate::error::BadField;

/// Collects every bad field of a request, so a developer sees all of them at once.
#[derive(Default)]
pub struct Checker {
    bad: Vec<BadField>,
}

impl Checker {
    /// Records a bad field.
    pub fn bad(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.bad.push(BadField::new(field, description));
    }

    /// An id (player, offer, item, reward, currency).
    pub fn id(&mut self, field: &str, value: &str) -> Name {
        self.id_in(|| field.to_owned(), value)
    }

    /// An id whose field name is built only for an error: entries of a list are checked on
    /// every purchase, and formatting their names showed in the handlers' instruction count.
    fn id_in(&mut self, field: impl FnOnce() -> String, value: &str) -> Name {
        if let Err(e) = check_id(value) {
            self.bad(field(), e.to_string());
        }
        Name::new(value)
    }

    /// An idempotency key: 1 to 128 printable ASCII characters.
    pub fn idempotency_key(&mut self, value: &str) -> Name {
        if value.is_empty() {
            self.bad("idempotency_key", "must not be empty: choose a unique key per intended change and reuse it on retries");
        } else if value.len() > IDEMPOTENCY_KEY_LEN_MAX {
            self.bad(
                "idempotency_key",
                format!("must be at most {IDEMPOTENCY_KEY_LEN_MAX} bytes"),
            );
        } else if !value.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            self.bad(
                "idempotency_key",
                "may contain only printable ASCII characters",
            );
        }
        Name::new(value)
    }

    /// A store platform enum value; `UNSPECIFIED` and unknown numbers are refused.
    pub fn platform(&mut self, field: &str, value: i32) -> coffer_receipts::Platform {
        use coffer_receipts::Platform;
        match pb::StorePlatform::try_from(value) {
            Ok(pb::StorePlatform::Apple) => Platform::Apple,
            Ok(pb::StorePlatform::Google) => Platform::Google,
            Ok(pb::StorePlatform::Sandbox) => Platform::Sandbox,
            Ok(pb::StorePlatform::Unspecified) | Err(_) => {
                self.bad(
                    field,
                    "must be STORE_PLATFORM_APPLE, STORE_PLATFORM_GOOGLE or STORE_PLATFORM_SANDBOX",
                );
                Platform::Sandbox
            }
        }
    }

    /// A store payload: present and at most [`coffer_receipts::PAYLOAD_BYTES_MAX`] bytes.
    pub fn payload(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.bad(
                field,
                "must not be empty: send the receipt or notification the store gave you",
            );
        } else if value.len() > coffer_receipts::PAYLOAD_BYTES_MAX {
            self.bad(
                field,
                format!(
                    "must be at most {} bytes",
                    coffer_receipts::PAYLOAD_BYTES_MAX
                ),
            );
        }
    }

    /// Free text for the transaction's metadata.
    pub fn reason(&mut self, value: &str) -> Name {
        if value.len() > REASON_LEN_MAX {
            self.bad("reason", format!("must be at most {REASON_LEN_MAX} bytes"));
        }
        Name::new(value)
    }

    /// Amounts per currency: each positive and bounded, each currency once.
    pub fn amounts(&mut self, field: &str, money: &[pb::Money], allow_empty: bool) -> Amounts {
        let mut amounts = Amounts::new();
        if money.is_empty() && !allow_empty {
            self.bad(field, "needs at least one currency amount");
        }
        if money.len() > CONTENTS_LEN_MAX {
            self.bad(field, format!("at most {CONTENTS_LEN_MAX} entries"));
            return amounts;
        }
        for (index, entry) in money.iter().enumerate() {
            let currency = self.id_in(
                || format!("{field}[{index}].currency_id"),
                &entry.currency_id,
            );
            if entry.amount_minor_units <= 0 || entry.amount_minor_units > AMOUNT_MINOR_UNITS_MAX {
                self.bad(
                    format!("{field}[{index}].amount_minor_units"),
                    format!(
                        "must be between 1 and {AMOUNT_MINOR_UNITS_MAX}, got {}",
                        entry.amount_minor_units
                    ),
                );
            }
            if amounts.insert(currency, entry.amount_minor_units).is_some() {
                self.bad(
                    format!("{field}[{index}].currency_id"),
                    format!("currency {:?} appears twice", entry.currency_id),
                );
            }
        }
        amounts
    }

    /// A quantity of items: 1 to `ITEM_QUANTITY_MAX`.
    pub fn quantity(&mut self, field: &str, quantity: u64) -> u64 {
        if quantity == 0 || quantity > ITEM_QUANTITY_MAX {
            self.bad(
                field,
                format!("must be between 1 and {ITEM_QUANTITY_MAX}, got {quantity}"),
            );
        }
        quantity
    }

    /// Contents of a grant, revocation or transfer: not empty.
    pub fn contents(&mut self, field: &str, contents: Option<&pb::Contents>) -> Contents {
        let Some(contents) = contents else {
            self.bad(field, "is required");
            return Contents::default();
        };
        let mut checked = Contents {
            currencies: self.amounts(&format!("{field}.currencies"), &contents.currencies, true),
            items: BTreeMap::new(),
        };
        if contents.items.len() > CONTENTS_LEN_MAX {
            self.bad(
                format!("{field}.items"),
                format!("at most {CONTENTS_LEN_MAX} entries"),
            );
            return checked;
        }
        for (index, item) in contents.items.iter().enumerate() {
            let id = self.id_in(|| format!("{field}.items[{index}].item_id"), &item.item_id);
            let quantity =
                self.quantity(&format!("{field}.items[{index}].quantity"), item.quantity);
            if checked.items.insert(id, quantity).is_some() {
                self.bad(
                    format!("{field}.items[{index}].item_id"),
                    format!("item {:?} appears twice", item.item_id),
                );
            }
        }
        if contents.currencies.is_empty() && contents.items.is_empty() {
            self.bad(field, "needs at least one currency or item");
        }
        checked
    }

    /// Steps of an Execute.
    pub fn steps(&mut self, operations: &[pb::Operation]) -> Vec<ExecuteStep> {
        if operations.is_empty() || operations.len() > EXECUTE_STEPS_MAX {
            self.bad(
                "operations",
                format!("needs between 1 and {EXECUTE_STEPS_MAX} operations"),
            );
            return Vec::new();
        }
        let mut steps = Vec::with_capacity(operations.len());
        for (index, operation) in operations.iter().enumerate() {
            let field = format!("operations[{index}]");
            use pb::operation::Operation as Op;
            match &operation.operation {
                None => self.bad(&field, "one of grant, revoke or transfer is required"),
                Some(Op::Grant(grant)) => steps.push(ExecuteStep::Grant {
                    player_id: self.id_in(|| format!("{field}.grant.player_id"), &grant.player_id),
                    contents: self
                        .contents(&format!("{field}.grant.contents"), grant.contents.as_ref()),
                }),
                Some(Op::Revoke(revoke)) => steps.push(ExecuteStep::Revoke {
                    player_id: self
                        .id_in(|| format!("{field}.revoke.player_id"), &revoke.player_id),
                    contents: self.contents(
                        &format!("{field}.revoke.contents"),
                        revoke.contents.as_ref(),
                    ),
                }),
                Some(Op::Transfer(transfer)) => {
                    let from = self.id(
                        &format!("{field}.transfer.from_player_id"),
                        &transfer.from_player_id,
                    );
                    let to = self.id(
                        &format!("{field}.transfer.to_player_id"),
                        &transfer.to_player_id,
                    );
                    if from == to {
                        self.bad(
                            format!("{field}.transfer.to_player_id"),
                            "must differ from from_player_id",
                        );
                    }
                    steps.push(ExecuteStep::Transfer {
                        from_player_id: from,
                        to_player_id: to,
                        contents: self.contents(
                            &format!("{field}.transfer.contents"),
                            transfer.contents.as_ref(),
                        ),
                    });
                }
            }
        }
        steps
    }

    /// The collected problems, or `value` when there are none.
    pub fn finish<T>(self, value: T) -> Result<T, crate::error::ApiError> {
        if self.bad.is_empty() {
            Ok(value)
        } else {
            Err(crate::error::ApiError::InvalidArgument(self.bad))
        }
    }
}

fn money(amounts: &Amounts) -> Vec<pb::Money> {
    amounts
        .iter()
        .map(|(currency, amount)| pb::Money {
            currency_id: currency.as_str().to_owned(),
            amount_minor_units: *amount,
        })
        .collect()
}

fn contents(contents: &Contents) -> pb::Contents {
    pb::Contents {
        currencies: money(&contents.currencies),
        items: contents
            .items
            .iter()
            .map(|(item, quantity)| pb::ItemQuantity {
                item_id: item.as_str().to_owned(),
                quantity: *quantity,
            })
            .collect(),
    }
}

/// The catalog as sent to clients.
pub fn catalog(catalog: &Catalog) -> pb::Catalog {
    pb::Catalog {
        version: catalog.version,
        currencies: catalog
            .currencies
            .values()
            .map(|c| pb::Currency {
                id: c.id.as_str().to_owned(),
                name: c.name.clone(),
                decimals: u32::from(c.decimals),
                max_balance_minor_units: c.max_balance_minor_units,
                initial_balance_minor_units: c.initial_balance_minor_units,
            })
            .collect(),
        items: catalog
            .items
            .values()
            .map(|item| {
                let (kind, levels) = match &item.kind {
                    ItemKind::Stackable { .. } => (pb::ItemKind::Stackable, Vec::new()),
                    ItemKind::Unique => (pb::ItemKind::Unique, Vec::new()),
                    ItemKind::Upgradable { levels } => (
                        pb::ItemKind::Upgradable,
                        levels
                            .iter()
                            .enumerate()
                            .map(|(i, price)| pb::UpgradeLevel {
                                level: i as u32 + 1,
                                price: money(price),
                            })
                            .collect(),
                    ),
                };
                pb::Item {
                    id: item.id.as_str().to_owned(),
                    name: item.name.clone(),
                    kind: kind.into(),
                    max_quantity: item.quantity_max(),
                    levels,
                }
            })
            .collect(),
        bundles: catalog
            .bundles
            .values()
            .map(|b| pb::Bundle {
                id: b.id.clone(),
                name: b.name.clone(),
                contents: Some(contents(&b.contents)),
            })
            .collect(),
        offers: catalog
            .offers
            .values()
            .map(|o| pb::Offer {
                id: o.id.as_str().to_owned(),
                name: o.name.clone(),
                price: money(&o.price),
                grants: Some(contents(&o.grants)),
                bundle_id: o.bundle.clone().unwrap_or_default(),
                limit_per_player: o.limit_per_player,
                available_from_unix_ms: o.available_from_unix_ms,
                available_until_unix_ms: o.available_until_unix_ms,
            })
            .collect(),
        rewards: catalog
            .rewards
            .values()
            .map(|r| pb::Reward {
                id: r.id.as_str().to_owned(),
                name: r.name.clone(),
                grants: Some(contents(&r.grants)),
                rate_limit_count: r.rate_limit_count,
                rate_limit_window_seconds: (r.rate_limit_window_ms / 1000) as u32,
            })
            .collect(),
        store_products: catalog
            .store_products
            .values()
            .flat_map(|products| products.values())
            .map(|p| pb::StoreProduct {
                platform: store_platform(p.platform).into(),
                product_id: p.product_id.clone(),
                name: p.name.clone(),
                grants: Some(contents(&p.grants)),
                bundle_id: p.bundle.clone().unwrap_or_default(),
            })
            .collect(),
    }
}

/// A player's wallet. `state` is `None` for a player who never transacted: they are shown the
/// initial balances they will be granted on their first change, at version 0.
pub fn wallet(player_id: &str, state: Option<&AccountState>, catalog: &Catalog) -> pb::Wallet {
    let balance = |currency: &str| match state {
        Some(state) => state.balance(currency),
        None => catalog
            .currencies
            .get(currency)
            .map(|c| c.initial_balance_minor_units)
            .unwrap_or(0),
    };
    let mut currencies: BTreeSet<&str> = catalog.currencies.keys().map(|id| id.as_str()).collect();
    if let Some(state) = state {
        currencies.extend(state.balances.keys().map(|id| id.as_str()));
    }
    pb::Wallet {
        player_id: player_id.to_owned(),
        version: state.map(|s| s.version).unwrap_or(0),
        balances: currencies
            .into_iter()
            .map(|c| pb::Money {
                currency_id: c.to_owned(),
                amount_minor_units: balance(c),
            })
            .collect(),
        items: state
            .map(|s| {
                s.items
                    .iter()
                    .map(|(item, h)| pb::InventoryItem {
                        item_id: item.as_str().to_owned(),
                        quantity: h.quantity,
                        level: h.level,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        offer_purchases: state
            .map(|s| {
                s.offer_purchases
                    .iter()
                    .map(|(offer, count)| pb::OfferPurchaseCount {
                        offer_id: offer.as_str().to_owned(),
                        count: *count,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// A store platform on the wire.
pub fn store_platform(platform: StorePlatform) -> pb::StorePlatform {
    match platform {
        StorePlatform::Apple => pb::StorePlatform::Apple,
        StorePlatform::Google => pb::StorePlatform::Google,
        StorePlatform::Sandbox => pb::StorePlatform::Sandbox,
    }
}

/// A ledger transaction on the wire.
pub fn transaction(transaction: &Transaction) -> pb::Transaction {
    let (kind, catalog_entry_id, level, reverses) = match &transaction.kind {
        TransactionKind::Opening => (pb::TransactionKind::Opening, String::new(), 0, 0),
        TransactionKind::Purchase { offer_id } => (
            pb::TransactionKind::Purchase,
            offer_id.as_str().to_owned(),
            0,
            0,
        ),
        TransactionKind::Upgrade { item_id, level } => (
            pb::TransactionKind::Upgrade,
            item_id.as_str().to_owned(),
            *level,
            0,
        ),
        TransactionKind::Consume { item_id } => (
            pb::TransactionKind::Consume,
            item_id.as_str().to_owned(),
            0,
            0,
        ),
        TransactionKind::RewardClaim { reward_id } => (
            pb::TransactionKind::RewardClaim,
            reward_id.as_str().to_owned(),
            0,
            0,
        ),
        TransactionKind::Grant => (pb::TransactionKind::Grant, String::new(), 0, 0),
        TransactionKind::Revoke => (pb::TransactionKind::Revoke, String::new(), 0, 0),
        TransactionKind::Execute => (pb::TransactionKind::Execute, String::new(), 0, 0),
        TransactionKind::Reversal { reverses } => {
            (pb::TransactionKind::Reversal, String::new(), 0, *reverses)
        }
        TransactionKind::StoreRedemption { product_id, .. } => (
            pb::TransactionKind::StoreRedemption,
            product_id.clone(),
            0,
            0,
        ),
        TransactionKind::StoreRefund { reverses, .. } => (
            pb::TransactionKind::StoreRefund,
            String::new(),
            0,
            *reverses,
        ),
    };
    pb::Transaction {
        id: transaction.id,
        kind: kind.into(),
        created_at_unix_ms: transaction.created_at_unix_ms,
        postings: transaction
            .postings
            .iter()
            .map(|p| pb::Posting {
                account_id: p.account.as_str().to_owned(),
                currency_id: p.currency.as_str().to_owned(),
                amount_minor_units: p.amount_minor_units,
            })
            .collect(),
        item_movements: transaction
            .item_movements
            .iter()
            .map(|m| pb::ItemMovement {
                account_id: m.account.as_str().to_owned(),
                item_id: m.item.as_str().to_owned(),
                quantity_delta: m.quantity_delta,
                level_before: m.level_before,
                level_after: m.level_after,
            })
            .collect(),
        account_versions: transaction
            .account_versions
            .iter()
            .map(|(account, version)| pb::AccountVersion {
                account_id: account.as_str().to_owned(),
                version: *version,
            })
            .collect(),
        catalog_entry_id,
        level,
        reverses_transaction_id: reverses,
        metadata: transaction
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.as_str().to_owned()))
            .collect(),
    }
}
