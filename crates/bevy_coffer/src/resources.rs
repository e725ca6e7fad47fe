//! The resources the plugin keeps in step with the server.

use std::collections::BTreeMap;

use bevy::prelude::Resource;
use coffer_client::pb;

/// The player's balances, one entry per currency, in integer minor units.
///
/// Filled from `GetWallet` when the plugin first connects, then kept live from the server's
/// `Subscribe` stream: every transaction that touches the player is applied in version order.
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct Wallet {
    /// The player this wallet belongs to.
    pub player_id: String,
    /// The number of transactions applied so far (the server's wallet version).
    pub version: u64,
    /// Balance of each currency in minor units (`decimals` in the [`Catalog`] says how to show it).
    pub balances: BTreeMap<String, i64>,
    /// Purchases made per offer, for offers with a per-player limit.
    pub offer_purchases: BTreeMap<String, u32>,
    synced: bool,
}

impl Wallet {
    /// An empty, not yet synced wallet of `player_id`.
    pub fn for_player(player_id: &str) -> Self {
        Wallet {
            player_id: player_id.to_owned(),
            ..Wallet::default()
        }
    }

    /// The balance of `currency_id` in minor units (0 for a currency the player never held).
    pub fn balance(&self, currency_id: &str) -> i64 {
        self.balances.get(currency_id).copied().unwrap_or(0)
    }

    /// How many times the player bought `offer_id`.
    pub fn purchases_of(&self, offer_id: &str) -> u32 {
        self.offer_purchases.get(offer_id).copied().unwrap_or(0)
    }

    /// True once the wallet holds the server's state (it stays true across reconnects).
    pub fn is_synced(&self) -> bool {
        self.synced
    }
}

/// What the player holds of one item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemStack {
    /// How many (1 for unique and upgradable items).
    pub quantity: u64,
    /// Level of an upgradable item (0 for items without levels).
    pub level: u32,
}

/// The player's items, kept live like the [`Wallet`].
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Items held, by catalog id. Items the player no longer holds are removed.
    pub items: BTreeMap<String, ItemStack>,
}

impl Inventory {
    /// How many of `item_id` the player holds.
    pub fn quantity(&self, item_id: &str) -> u64 {
        self.items.get(item_id).map(|s| s.quantity).unwrap_or(0)
    }

    /// The level of `item_id` (0 when not held or without levels).
    pub fn level(&self, item_id: &str) -> u32 {
        self.items.get(item_id).map(|s| s.level).unwrap_or(0)
    }
}

/// The catalog in force on the server: currencies, items, offers and rewards. Empty until the
/// plugin first connects; refreshed on every reconnect.
#[derive(Resource, Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// The catalog, once loaded.
    pub catalog: Option<pb::Catalog>,
}

impl Catalog {
    /// True once the catalog was loaded from the server.
    pub fn is_loaded(&self) -> bool {
        self.catalog.is_some()
    }

    /// The offer `offer_id`.
    pub fn offer(&self, offer_id: &str) -> Option<&pb::Offer> {
        self.catalog
            .as_ref()?
            .offers
            .iter()
            .find(|o| o.id == offer_id)
    }

    /// The item `item_id`.
    pub fn item(&self, item_id: &str) -> Option<&pb::Item> {
        self.catalog
            .as_ref()?
            .items
            .iter()
            .find(|i| i.id == item_id)
    }

    /// The currency `currency_id`.
    pub fn currency(&self, currency_id: &str) -> Option<&pb::Currency> {
        self.catalog
            .as_ref()?
            .currencies
            .iter()
            .find(|c| c.id == currency_id)
    }

    /// The reward `reward_id`.
    pub fn reward(&self, reward_id: &str) -> Option<&pb::Reward> {
        self.catalog
            .as_ref()?
            .rewards
            .iter()
            .find(|r| r.id == reward_id)
    }

    /// The real-money store product `product_id` of `platform` (what a redeemed receipt of it
    /// grants).
    pub fn store_product(
        &self,
        platform: pb::StorePlatform,
        product_id: &str,
    ) -> Option<&pb::StoreProduct> {
        self.catalog
            .as_ref()?
            .store_products
            .iter()
            .find(|p| p.platform == platform as i32 && p.product_id == product_id)
    }

    /// The price of raising `item_id` to `level` (level 1 buys the item).
    pub fn level_price(&self, item_id: &str, level: u32) -> Option<&[pb::Money]> {
        self.item(item_id)?
            .levels
            .iter()
            .find(|l| l.level == level)
            .map(|l| l.price.as_slice())
    }

    /// The number of levels of an upgradable item (0 for other items).
    pub fn level_count(&self, item_id: &str) -> u32 {
        self.item(item_id)
            .map(|i| u32::try_from(i.levels.len()).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }

    /// `amount_minor_units` of `currency_id` for display, e.g. `"2.50"` for 250 minor units of a
    /// currency with 2 decimals. Integer arithmetic only.
    pub fn format_amount(&self, currency_id: &str, amount_minor_units: i64) -> String {
        let decimals = self.currency(currency_id).map(|c| c.decimals).unwrap_or(0);
        format_minor_units(amount_minor_units, decimals)
    }

    /// A price for display, e.g. `"600 Coins + 2 Gems"`.
    pub fn format_price(&self, price: &[pb::Money]) -> String {
        if price.is_empty() {
            return "free".to_owned();
        }
        price
            .iter()
            .map(|m| {
                let name = self
                    .currency(&m.currency_id)
                    .map(|c| c.name.as_str())
                    .unwrap_or(m.currency_id.as_str());
                format!(
                    "{} {name}",
                    self.format_amount(&m.currency_id, m.amount_minor_units)
                )
            })
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// Formats minor units with `decimals` digits after the point (at most 18).
pub fn format_minor_units(amount_minor_units: i64, decimals: u32) -> String {
    let decimals = decimals.min(18);
    if decimals == 0 {
        return amount_minor_units.to_string();
    }
    let scale = 10_u64.pow(decimals);
    let magnitude = amount_minor_units.unsigned_abs();
    let sign = if amount_minor_units < 0 { "-" } else { "" };
    format!(
        "{sign}{}.{:0width$}",
        magnitude / scale,
        magnitude % scale,
        width = decimals as usize
    )
}

/// Where the link to the server stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConnectionState {
    /// First connection in progress.
    #[default]
    Connecting,
    /// Catalog and wallet loaded and the change stream open: resources are live.
    Live,
    /// The link was lost (or never made); the plugin is trying again. Resources keep their
    /// last known values and requests are retried with their idempotency keys.
    Reconnecting,
    /// The plugin's settings are unusable (bad endpoint or token); nothing is sent.
    Failed,
}

/// The state of the link to the server, for HUDs ("connection lost, retrying…").
#[derive(Resource, Debug, Clone, Default, PartialEq, Eq)]
pub struct CofferConnection {
    /// Current state.
    pub state: ConnectionState,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// How many times the stream was re-established after being lost.
    pub reconnect_count: u32,
}

impl CofferConnection {
    /// True while the resources are live.
    pub fn is_live(&self) -> bool {
        self.state == ConnectionState::Live
    }
}

/// Applies one transaction of the player's stream (`version` is the player's version after it).
/// Returns false, changing nothing, when the wallet already holds that version.
pub(crate) fn apply_transaction(
    wallet: &mut Wallet,
    inventory: &mut Inventory,
    version: u64,
    transaction: &pb::Transaction,
) -> bool {
    if version <= wallet.version {
        return false;
    }
    let player = wallet.player_id.clone();
    if transaction.kind == pb::TransactionKind::Opening as i32 {
        // A wallet at version 0 shows the opening balances the server would grant; the opening
        // transaction is what posts them, so it applies to an empty wallet.
        for amount in wallet.balances.values_mut() {
            *amount = 0;
        }
    }
    for posting in transaction
        .postings
        .iter()
        .filter(|p| p.account_id == player)
    {
        let balance = wallet
            .balances
            .entry(posting.currency_id.clone())
            .or_insert(0);
        *balance = balance.saturating_add(posting.amount_minor_units);
    }
    for movement in transaction
        .item_movements
        .iter()
        .filter(|m| m.account_id == player)
    {
        let stack = inventory.items.entry(movement.item_id.clone()).or_default();
        stack.quantity = stack
            .quantity
            .saturating_add_signed(movement.quantity_delta);
        stack.level = movement.level_after;
        if stack.quantity == 0 {
            inventory.items.remove(&movement.item_id);
        }
    }
    if transaction.kind == pb::TransactionKind::Purchase as i32
        && !transaction.catalog_entry_id.is_empty()
    {
        let count = wallet
            .offer_purchases
            .entry(transaction.catalog_entry_id.clone())
            .or_insert(0);
        *count = count.saturating_add(1);
    }
    wallet.version = version;
    true
}

/// Replaces the wallet and inventory with a server snapshot, unless they are already newer.
pub(crate) fn apply_snapshot(
    wallet: &mut Wallet,
    inventory: &mut Inventory,
    snapshot: &pb::Wallet,
) -> bool {
    if wallet.synced && snapshot.version < wallet.version {
        return false;
    }
    wallet.version = snapshot.version;
    wallet.balances = snapshot
        .balances
        .iter()
        .map(|m| (m.currency_id.clone(), m.amount_minor_units))
        .collect();
    wallet.offer_purchases = snapshot
        .offer_purchases
        .iter()
        .map(|p| (p.offer_id.clone(), p.count))
        .collect();
    wallet.synced = true;
    inventory.items = snapshot
        .items
        .iter()
        .filter(|i| i.quantity > 0)
        .map(|i| {
            (
                i.item_id.clone(),
                ItemStack {
                    quantity: i.quantity,
                    level: i.level,
                },
            )
        })
        .collect();
    true
}

/// The player's version after `transaction`, when it touched the player.
pub(crate) fn version_after(transaction: &pb::Transaction, player_id: &str) -> Option<u64> {
    transaction
        .account_versions
        .iter()
        .find(|v| v.account_id == player_id)
        .map(|v| v.version)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posting(account: &str, currency: &str, amount: i64) -> pb::Posting {
        pb::Posting {
            account_id: account.to_owned(),
            currency_id: currency.to_owned(),
            amount_minor_units: amount,
        }
    }

    fn fresh_wallet() -> (Wallet, Inventory) {
        let mut wallet = Wallet::for_player("ada");
        let mut inventory = Inventory::default();
        let snapshot = pb::Wallet {
            player_id: "ada".to_owned(),
            version: 0,
            balances: coffer_client::money(&[("coins", 100), ("gems", 5)]),
            ..pb::Wallet::default()
        };
        assert!(apply_snapshot(&mut wallet, &mut inventory, &snapshot));
        (wallet, inventory)
    }

    #[test]
    fn opening_transaction_does_not_double_the_initial_balances() {
        let (mut wallet, mut inventory) = fresh_wallet();
        assert_eq!(wallet.balance("coins"), 100);
        let opening = pb::Transaction {
            kind: pb::TransactionKind::Opening as i32,
            postings: vec![
                posting("ada", "coins", 100),
                posting("system:grants", "coins", -100),
                posting("ada", "gems", 5),
            ],
            ..pb::Transaction::default()
        };
        assert!(apply_transaction(&mut wallet, &mut inventory, 1, &opening));
        assert_eq!(wallet.balance("coins"), 100);
        assert_eq!(wallet.balance("gems"), 5);
        assert_eq!(wallet.version, 1);
    }

    #[test]
    fn purchase_moves_money_and_items_and_repeats_are_ignored() {
        let (mut wallet, mut inventory) = fresh_wallet();
        wallet.version = 1;
        let purchase = pb::Transaction {
            kind: pb::TransactionKind::Purchase as i32,
            catalog_entry_id: "potion".to_owned(),
            postings: vec![
                posting("ada", "coins", -10),
                posting("system:shop", "coins", 10),
            ],
            item_movements: vec![pb::ItemMovement {
                account_id: "ada".to_owned(),
                item_id: "potion".to_owned(),
                quantity_delta: 1,
                level_before: 0,
                level_after: 0,
            }],
            ..pb::Transaction::default()
        };
        assert!(apply_transaction(&mut wallet, &mut inventory, 2, &purchase));
        assert!(!apply_transaction(
            &mut wallet,
            &mut inventory,
            2,
            &purchase
        ));
        assert_eq!(wallet.balance("coins"), 90);
        assert_eq!(inventory.quantity("potion"), 1);
        assert_eq!(wallet.purchases_of("potion"), 1);
    }

    #[test]
    fn amounts_format_with_integer_decimals() {
        assert_eq!(format_minor_units(250, 2), "2.50");
        assert_eq!(format_minor_units(-5, 2), "-0.05");
        assert_eq!(format_minor_units(42, 0), "42");
        assert_eq!(format_minor_units(i64::MIN, 2), "-92233720368547758.08");
    }
}
