//! The catalog: currencies, items, bundles, offers and rewards, loaded from TOML and validated.
//!
//! Every amount in the catalog is an integer number of minor units (`decimals` says how many minor
//! units make one major unit). Validation names the bad entry and field, e.g.
//! `offers.potion.price: unknown currency "gold"`.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use crate::ids::{CurrencyId, ItemId, OfferId, RewardId, StorePlatform, check_id};
use crate::limits::*;

/// An amount per currency, in minor units. Used for prices and currency grants.
pub type Amounts = BTreeMap<CurrencyId, i64>;

/// What a grant, bundle, offer or reward hands over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contents {
    /// Currency amounts in minor units, each > 0.
    pub currencies: Amounts,
    /// Item quantities, each > 0.
    pub items: BTreeMap<ItemId, u64>,
}

impl Contents {
    /// True when nothing would be handed over.
    pub fn is_empty(&self) -> bool {
        self.currencies.is_empty() && self.items.is_empty()
    }
}

/// A currency. Amounts are integers in minor units; `decimals` is for display only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Currency {
    pub id: CurrencyId,
    pub name: String,
    pub decimals: u8,
    /// No player balance may exceed this.
    pub max_balance_minor_units: Option<i64>,
    /// Granted from `system:grants` when a player first appears.
    pub initial_balance_minor_units: i64,
}

/// How an item is held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemKind {
    /// Held in quantities up to `max_stack`; can be consumed.
    Stackable { max_stack: u64 },
    /// Held at most once.
    Unique,
    /// Held at most once, at a level 1..=levels.len(); `levels[i]` is the price of reaching level i+1.
    Upgradable { levels: Vec<Amounts> },
}

/// An item definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: ItemId,
    pub name: String,
    pub kind: ItemKind,
}

impl Item {
    /// The most a player may hold.
    pub fn quantity_max(&self) -> u64 {
        match self.kind {
            ItemKind::Stackable { max_stack } => max_stack,
            ItemKind::Unique | ItemKind::Upgradable { .. } => 1,
        }
    }
}

/// A named set of currencies and items, sold by offers or granted by rewards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    pub id: String,
    pub name: String,
    pub contents: Contents,
}

/// Something a player can buy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offer {
    pub id: OfferId,
    pub name: String,
    /// Price in minor units per currency; the purchase request must quote it exactly.
    pub price: Amounts,
    /// The bundle the offer sells, if it sells one (its contents are already in `grants`).
    pub bundle: Option<String>,
    /// Everything a purchase hands over.
    pub grants: Contents,
    pub limit_per_player: Option<u32>,
    /// Unix milliseconds from which the offer can be bought (inclusive).
    pub available_from_unix_ms: Option<i64>,
    /// Unix milliseconds until which the offer can be bought (exclusive).
    pub available_until_unix_ms: Option<i64>,
}

/// A reward a player may claim, at most `rate_limit_count` times per sliding window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reward {
    pub id: RewardId,
    pub name: String,
    pub grants: Contents,
    pub rate_limit_count: u32,
    pub rate_limit_window_ms: i64,
}

/// What a real-money store product grants per unit bought (`[store_products.<platform>.<id>]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreProduct {
    pub platform: StorePlatform,
    /// The product id as configured in the store (App Store Connect, Play Console, sandbox).
    pub product_id: String,
    pub name: String,
    /// The bundle it grants, if any (its contents are already in `grants`).
    pub bundle: Option<String>,
    /// Everything one unit grants.
    pub grants: Contents,
}

/// A validated catalog. Build one with [`Catalog::from_toml`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Increases with every replacement; a replacement must carry a higher version.
    pub version: u64,
    pub currencies: BTreeMap<CurrencyId, Currency>,
    pub items: BTreeMap<ItemId, Item>,
    pub bundles: BTreeMap<String, Bundle>,
    pub offers: BTreeMap<OfferId, Offer>,
    pub rewards: BTreeMap<RewardId, Reward>,
    /// Real-money products per store, by store product id.
    #[serde(default)]
    pub store_products: BTreeMap<StorePlatform, BTreeMap<String, StoreProduct>>,
}

/// Why a catalog was refused. `path` names the entry and field, e.g. `offers.potion.price`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The text is not TOML of the catalog's shape (unknown field, wrong type, syntax).
    #[error("catalog is not valid TOML of the expected shape: {0}")]
    Syntax(String),
    /// A value is out of range or refers to something that does not exist.
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> CatalogError {
    CatalogError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    version: u64,
    #[serde(default)]
    currencies: BTreeMap<String, RawCurrency>,
    #[serde(default)]
    items: BTreeMap<String, RawItem>,
    #[serde(default)]
    bundles: BTreeMap<String, RawContents>,
    #[serde(default)]
    offers: BTreeMap<String, RawOffer>,
    #[serde(default)]
    rewards: BTreeMap<String, RawReward>,
    /// Platform name, then store product id.
    #[serde(default)]
    store_products: BTreeMap<String, BTreeMap<String, RawStoreProduct>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStoreProduct {
    name: Option<String>,
    bundle: Option<String>,
    #[serde(default)]
    currencies: BTreeMap<String, i64>,
    #[serde(default)]
    items: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCurrency {
    name: Option<String>,
    decimals: u8,
    max_balance_minor_units: Option<i64>,
    #[serde(default)]
    initial_balance_minor_units: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
enum RawItemKind {
    Stackable,
    Unique,
    Upgradable,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    name: Option<String>,
    kind: RawItemKind,
    max_stack: Option<u64>,
    level_prices: Option<Vec<BTreeMap<String, i64>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContents {
    name: Option<String>,
    #[serde(default)]
    currencies: BTreeMap<String, i64>,
    #[serde(default)]
    items: BTreeMap<String, u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOffer {
    name: Option<String>,
    #[serde(default)]
    price: BTreeMap<String, i64>,
    bundle: Option<String>,
    #[serde(default)]
    currencies: BTreeMap<String, i64>,
    #[serde(default)]
    items: BTreeMap<String, u64>,
    limit_per_player: Option<u32>,
    available_from: Option<String>,
    available_until: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    count: u32,
    window_seconds: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReward {
    name: Option<String>,
    bundle: Option<String>,
    #[serde(default)]
    currencies: BTreeMap<String, i64>,
    #[serde(default)]
    items: BTreeMap<String, u64>,
    rate_limit: RawRateLimit,
}

impl Catalog {
    /// Parses and validates a catalog written in TOML (see `assets/catalog.toml`).
    pub fn from_toml(text: &str) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog =
            toml::from_str(text).map_err(|e| CatalogError::Syntax(e.to_string()))?;
        Catalog::from_raw(raw)
    }

    fn from_raw(raw: RawCatalog) -> Result<Catalog, CatalogError> {
        check_section_len("currencies", raw.currencies.len())?;
        check_section_len("items", raw.items.len())?;
        check_section_len("bundles", raw.bundles.len())?;
        check_section_len("offers", raw.offers.len())?;
        check_section_len("rewards", raw.rewards.len())?;
        if raw.currencies.is_empty() {
            return Err(invalid(
                "currencies",
                "a catalog needs at least one currency",
            ));
        }

        let mut catalog = Catalog {
            version: raw.version,
            currencies: BTreeMap::new(),
            items: BTreeMap::new(),
            bundles: BTreeMap::new(),
            offers: BTreeMap::new(),
            rewards: BTreeMap::new(),
            store_products: BTreeMap::new(),
        };

        for (id, c) in raw.currencies {
            let id = CurrencyId::from(id);
            let path = format!("currencies.{id}");
            check_catalog_id(&path, &id)?;
            if c.decimals > CURRENCY_DECIMALS_MAX {
                return Err(invalid(
                    format!("{path}.decimals"),
                    format!("must be at most {CURRENCY_DECIMALS_MAX}"),
                ));
            }
            if let Some(max) = c.max_balance_minor_units {
                check_amount(&format!("{path}.max_balance_minor_units"), max)?;
            }
            let cap = c.max_balance_minor_units.unwrap_or(AMOUNT_MINOR_UNITS_MAX);
            if c.initial_balance_minor_units < 0 || c.initial_balance_minor_units > cap {
                return Err(invalid(
                    format!("{path}.initial_balance_minor_units"),
                    format!("must be between 0 and the balance cap {cap}"),
                ));
            }
            catalog.currencies.insert(
                id.clone(),
                Currency {
                    name: c.name.unwrap_or_else(|| id.to_string()),
                    id,
                    decimals: c.decimals,
                    max_balance_minor_units: c.max_balance_minor_units,
                    initial_balance_minor_units: c.initial_balance_minor_units,
                },
            );
        }

        for (id, i) in raw.items {
            let id = ItemId::from(id);
            let path = format!("items.{id}");
            check_catalog_id(&path, &id)?;
            let kind = match i.kind {
                RawItemKind::Stackable => {
                    if i.level_prices.is_some() {
                        return Err(invalid(
                            format!("{path}.level_prices"),
                            "only upgradable items have level prices",
                        ));
                    }
                    let max_stack = i.max_stack.ok_or_else(|| {
                        invalid(
                            format!("{path}.max_stack"),
                            "stackable items need a max_stack",
                        )
                    })?;
                    if max_stack == 0 || max_stack > ITEM_QUANTITY_MAX {
                        return Err(invalid(
                            format!("{path}.max_stack"),
                            format!("must be between 1 and {ITEM_QUANTITY_MAX}"),
                        ));
                    }
                    ItemKind::Stackable { max_stack }
                }
                RawItemKind::Unique => {
                    if i.max_stack.is_some() || i.level_prices.is_some() {
                        return Err(invalid(
                            &path,
                            "unique items take neither max_stack nor level_prices",
                        ));
                    }
                    ItemKind::Unique
                }
                RawItemKind::Upgradable => {
                    if i.max_stack.is_some() {
                        return Err(invalid(
                            format!("{path}.max_stack"),
                            "upgradable items are held once",
                        ));
                    }
                    let raw_levels = i.level_prices.unwrap_or_default();
                    if raw_levels.is_empty() || raw_levels.len() > UPGRADE_LEVELS_MAX {
                        return Err(invalid(
                            format!("{path}.level_prices"),
                            format!("needs between 1 and {UPGRADE_LEVELS_MAX} levels"),
                        ));
                    }
                    let mut levels = Vec::with_capacity(raw_levels.len());
                    for (index, price) in raw_levels.into_iter().enumerate() {
                        let level_path = format!("{path}.level_prices[{index}]");
                        levels.push(catalog.check_amounts(&level_path, price, true)?);
                    }
                    ItemKind::Upgradable { levels }
                }
            };
            catalog.items.insert(
                id.clone(),
                Item {
                    name: i.name.unwrap_or_else(|| id.to_string()),
                    id,
                    kind,
                },
            );
        }

        for (id, b) in raw.bundles {
            let path = format!("bundles.{id}");
            check_catalog_id(&path, &id)?;
            let contents = catalog.check_contents(&path, None, b.currencies, b.items)?;
            if contents.is_empty() {
                return Err(invalid(
                    &path,
                    "a bundle must hold at least one currency or item",
                ));
            }
            catalog.bundles.insert(
                id.clone(),
                Bundle {
                    name: b.name.unwrap_or_else(|| id.clone()),
                    id,
                    contents,
                },
            );
        }

        for (id, o) in raw.offers {
            let id = OfferId::from(id);
            let path = format!("offers.{id}");
            check_catalog_id(&path, &id)?;
            let price = catalog.check_amounts(&format!("{path}.price"), o.price, false)?;
            let grants =
                catalog.check_contents(&path, o.bundle.as_deref(), o.currencies, o.items)?;
            if grants.is_empty() {
                return Err(invalid(
                    &path,
                    "an offer must sell a bundle, currencies or items",
                ));
            }
            if price.is_empty() && o.limit_per_player.is_none() {
                return Err(invalid(
                    format!("{path}.price"),
                    "a free offer needs a limit_per_player, or players could claim it without end",
                ));
            }
            if o.limit_per_player == Some(0) {
                return Err(invalid(
                    format!("{path}.limit_per_player"),
                    "must be at least 1",
                ));
            }
            let from = parse_time(&format!("{path}.available_from"), o.available_from)?;
            let until = parse_time(&format!("{path}.available_until"), o.available_until)?;
            if let (Some(f), Some(u)) = (from, until)
                && f >= u
            {
                return Err(invalid(
                    format!("{path}.available_until"),
                    "must be later than available_from",
                ));
            }
            catalog.offers.insert(
                id.clone(),
                Offer {
                    name: o.name.unwrap_or_else(|| id.to_string()),
                    id,
                    price,
                    bundle: o.bundle,
                    grants,
                    limit_per_player: o.limit_per_player,
                    available_from_unix_ms: from,
                    available_until_unix_ms: until,
                },
            );
        }

        for (id, r) in raw.rewards {
            let id = RewardId::from(id);
            let path = format!("rewards.{id}");
            check_catalog_id(&path, &id)?;
            let grants =
                catalog.check_contents(&path, r.bundle.as_deref(), r.currencies, r.items)?;
            if grants.is_empty() {
                return Err(invalid(&path, "a reward must grant currencies or items"));
            }
            let limit = r.rate_limit;
            if limit.count == 0 || limit.count > REWARD_RATE_COUNT_MAX {
                return Err(invalid(
                    format!("{path}.rate_limit.count"),
                    format!("must be between 1 and {REWARD_RATE_COUNT_MAX}"),
                ));
            }
            if limit.window_seconds == 0 || limit.window_seconds > REWARD_WINDOW_SECONDS_MAX {
                return Err(invalid(
                    format!("{path}.rate_limit.window_seconds"),
                    format!("must be between 1 and {REWARD_WINDOW_SECONDS_MAX}"),
                ));
            }
            catalog.rewards.insert(
                id.clone(),
                Reward {
                    name: r.name.unwrap_or_else(|| id.to_string()),
                    id,
                    grants,
                    rate_limit_count: limit.count,
                    rate_limit_window_ms: i64::from(limit.window_seconds) * 1000,
                },
            );
        }

        for (platform_name, products) in raw.store_products {
            let path = format!("store_products.{platform_name}");
            let platform = StorePlatform::from_name(&platform_name).ok_or_else(|| {
                invalid(
                    &path,
                    "unknown store platform; expected apple, google or sandbox",
                )
            })?;
            check_section_len(&path, products.len())?;
            for (product_id, p) in products {
                let path = format!("{path}.{product_id}");
                check_catalog_id(&path, &product_id)?;
                let grants =
                    catalog.check_contents(&path, p.bundle.as_deref(), p.currencies, p.items)?;
                if grants.is_empty() {
                    return Err(invalid(
                        &path,
                        "a store product must grant a bundle, currencies or items",
                    ));
                }
                catalog.store_products.entry(platform).or_default().insert(
                    product_id.clone(),
                    StoreProduct {
                        platform,
                        name: p.name.unwrap_or_else(|| product_id.clone()),
                        product_id,
                        bundle: p.bundle,
                        grants,
                    },
                );
            }
        }

        Ok(catalog)
    }

    /// The product a store sells under `product_id`, if the catalog has it.
    pub fn store_product(
        &self,
        platform: StorePlatform,
        product_id: &str,
    ) -> Option<&StoreProduct> {
        self.store_products.get(&platform)?.get(product_id)
    }

    /// Checks that `next` may replace `self`: a higher version, and every currency kept with the
    /// same decimals (balances already held in it must keep their meaning).
    pub fn check_replacement(&self, next: &Catalog) -> Result<(), CatalogError> {
        if next.version <= self.version {
            return Err(invalid(
                "version",
                format!(
                    "must be greater than the current version {}, got {}",
                    self.version, next.version
                ),
            ));
        }
        for (id, currency) in &self.currencies {
            match next.currencies.get(id) {
                None => {
                    return Err(invalid(
                        format!("currencies.{id}"),
                        "an existing currency cannot be removed",
                    ));
                }
                Some(c) if c.decimals != currency.decimals => {
                    return Err(invalid(
                        format!("currencies.{id}.decimals"),
                        format!("cannot change from {} to {}", currency.decimals, c.decimals),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The balance cap of a currency (the global amount bound when the catalog sets none).
    pub fn balance_cap(&self, currency: &str) -> i64 {
        self.currencies
            .get(currency)
            .and_then(|c| c.max_balance_minor_units)
            .unwrap_or(AMOUNT_MINOR_UNITS_MAX)
    }

    fn check_amounts(
        &self,
        path: &str,
        raw: BTreeMap<String, i64>,
        require_non_empty: bool,
    ) -> Result<Amounts, CatalogError> {
        if require_non_empty && raw.is_empty() {
            return Err(invalid(path, "needs at least one currency amount"));
        }
        if raw.len() > CONTENTS_LEN_MAX {
            return Err(invalid(
                path,
                format!("at most {CONTENTS_LEN_MAX} currencies"),
            ));
        }
        for (currency, amount) in &raw {
            if !self.currencies.contains_key(currency.as_str()) {
                return Err(invalid(path, format!("unknown currency {currency:?}")));
            }
            check_amount(&format!("{path}.{currency}"), *amount)?;
        }
        Ok(raw.into_iter().map(|(c, a)| (c.into(), a)).collect())
    }

    fn check_contents(
        &self,
        path: &str,
        bundle: Option<&str>,
        currencies: BTreeMap<String, i64>,
        items: BTreeMap<String, u64>,
    ) -> Result<Contents, CatalogError> {
        let mut contents = Contents {
            currencies: self.check_amounts(&format!("{path}.currencies"), currencies, false)?,
            items: BTreeMap::new(),
        };
        if items.len() > CONTENTS_LEN_MAX {
            return Err(invalid(
                format!("{path}.items"),
                format!("at most {CONTENTS_LEN_MAX} items"),
            ));
        }
        for (item_id, quantity) in items {
            let item = self.items.get(item_id.as_str()).ok_or_else(|| {
                invalid(format!("{path}.items"), format!("unknown item {item_id:?}"))
            })?;
            if quantity == 0 || quantity > item.quantity_max() {
                return Err(invalid(
                    format!("{path}.items.{item_id}"),
                    format!("quantity must be between 1 and {}", item.quantity_max()),
                ));
            }
            contents.items.insert(item_id.into(), quantity);
        }
        if let Some(bundle_id) = bundle {
            let bundle = self.bundles.get(bundle_id).ok_or_else(|| {
                invalid(
                    format!("{path}.bundle"),
                    format!("unknown bundle {bundle_id:?}"),
                )
            })?;
            for (currency, amount) in &bundle.contents.currencies {
                let sum = contents.currencies.entry(currency.clone()).or_insert(0);
                *sum += amount;
                check_amount(&format!("{path}.currencies.{currency}"), *sum)?;
            }
            for (item_id, quantity) in &bundle.contents.items {
                let sum = contents.items.entry(item_id.clone()).or_insert(0);
                *sum += quantity;
                if *sum > self.items[item_id].quantity_max() {
                    return Err(invalid(
                        format!("{path}.items.{item_id}"),
                        "with the bundle, more than a player may hold",
                    ));
                }
            }
            // Each side was bounded on its own; together they may not be.
            if contents.currencies.len() > CONTENTS_LEN_MAX
                || contents.items.len() > CONTENTS_LEN_MAX
            {
                return Err(invalid(
                    format!("{path}.bundle"),
                    format!(
                        "with the bundle, more than {CONTENTS_LEN_MAX} currencies or {CONTENTS_LEN_MAX} items"
                    ),
                ));
            }
        }
        Ok(contents)
    }
}

fn check_section_len(section: &str, len: usize) -> Result<(), CatalogError> {
    if len > CATALOG_SECTION_LEN_MAX {
        return Err(invalid(
            section,
            format!("at most {CATALOG_SECTION_LEN_MAX} entries, got {len}"),
        ));
    }
    Ok(())
}

fn check_catalog_id(path: &str, id: &str) -> Result<(), CatalogError> {
    check_id(id).map_err(|e| invalid(path, format!("bad id: {e}")))
}

fn check_amount(path: &str, amount: i64) -> Result<(), CatalogError> {
    if amount <= 0 || amount > AMOUNT_MINOR_UNITS_MAX {
        return Err(invalid(
            path,
            format!(
                "amount must be between 1 and {AMOUNT_MINOR_UNITS_MAX} minor units, got {amount}"
            ),
        ));
    }
    Ok(())
}

fn parse_time(path: &str, value: Option<String>) -> Result<Option<i64>, CatalogError> {
    let Some(text) = value else { return Ok(None) };
    let parsed = time::OffsetDateTime::parse(&text, &time::format_description::well_known::Rfc3339)
        .map_err(|e| invalid(path, format!("not an RFC 3339 time ({e}): {text:?}")))?;
    let unix_ms = parsed.unix_timestamp_nanos() / 1_000_000;
    Ok(Some(
        i64::try_from(unix_ms).map_err(|_| invalid(path, "out of range"))?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        version = 1
        [currencies.coins]
        decimals = 0
        max_balance_minor_units = 1000
        initial_balance_minor_units = 10
        [items.potion]
        kind = "stackable"
        max_stack = 5
        [offers.potion]
        price = { coins = 3 }
        items = { potion = 1 }
    "#;

    #[test]
    fn minimal_catalog_loads() {
        let catalog = Catalog::from_toml(MINIMAL).unwrap();
        assert_eq!(catalog.version, 1);
        assert_eq!(catalog.offers["potion"].price["coins"], 3);
        assert_eq!(catalog.balance_cap("coins"), 1000);
    }

    #[test]
    fn unknown_currency_in_price_names_the_offer_and_field() {
        let text = MINIMAL.replace("price = { coins = 3 }", "price = { gold = 3 }");
        let err = Catalog::from_toml(&text).unwrap_err();
        assert_eq!(
            err.to_string(),
            "offers.potion.price: unknown currency \"gold\""
        );
    }

    #[test]
    fn unknown_field_is_a_syntax_error_naming_the_field() {
        let text = MINIMAL.replace("decimals = 0", "decimals = 0\ncolour = \"gold\"");
        let err = Catalog::from_toml(&text).unwrap_err();
        assert!(
            matches!(err, CatalogError::Syntax(ref m) if m.contains("colour")),
            "{err}"
        );
    }

    #[test]
    fn initial_balance_above_cap_is_refused() {
        let text = MINIMAL.replace(
            "initial_balance_minor_units = 10",
            "initial_balance_minor_units = 2000",
        );
        let err = Catalog::from_toml(&text).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("currencies.coins.initial_balance_minor_units"),
            "{err}"
        );
    }

    #[test]
    fn free_offer_without_limit_is_refused() {
        let text = MINIMAL.replace("price = { coins = 3 }", "");
        let err = Catalog::from_toml(&text).unwrap_err();
        assert!(err.to_string().starts_with("offers.potion.price"), "{err}");
    }

    #[test]
    fn replacement_must_raise_version_and_keep_currencies() {
        let current = Catalog::from_toml(MINIMAL).unwrap();
        let same = Catalog::from_toml(MINIMAL).unwrap();
        assert!(current.check_replacement(&same).is_err());
        let next = Catalog::from_toml(&MINIMAL.replace("version = 1", "version = 2")).unwrap();
        assert!(current.check_replacement(&next).is_ok());
        let changed = MINIMAL
            .replace("version = 1", "version = 2")
            .replace("decimals = 0", "decimals = 2");
        let changed = Catalog::from_toml(&changed).unwrap();
        assert_eq!(
            current.check_replacement(&changed).unwrap_err().to_string(),
            "currencies.coins.decimals: cannot change from 0 to 2"
        );
    }

    #[test]
    fn store_products_grant_bundles_and_name_bad_entries() {
        let text = format!(
            "{MINIMAL}\n[bundles.pack]\ncurrencies = {{ coins = 5 }}\n\
             [store_products.sandbox.coins_10]\ncurrencies = {{ coins = 10 }}\n\
             [store_products.apple.\"com.example.pack\"]\nbundle = \"pack\"\n"
        );
        let catalog = Catalog::from_toml(&text).unwrap();
        let product = catalog
            .store_product(StorePlatform::Sandbox, "coins_10")
            .unwrap();
        assert_eq!(product.grants.currencies["coins"], 10);
        let pack = catalog
            .store_product(StorePlatform::Apple, "com.example.pack")
            .unwrap();
        assert_eq!(pack.grants.currencies["coins"], 5);
        assert!(
            catalog
                .store_product(StorePlatform::Google, "coins_10")
                .is_none()
        );

        let bad = format!("{MINIMAL}\n[store_products.steam.x]\ncurrencies = {{ coins = 1 }}\n");
        let err = Catalog::from_toml(&bad).unwrap_err().to_string();
        assert!(err.starts_with("store_products.steam:"), "{err}");
        let bad = format!("{MINIMAL}\n[store_products.google.x]\ncurrencies = {{ gold = 1 }}\n");
        let err = Catalog::from_toml(&bad).unwrap_err().to_string();
        assert!(
            err.starts_with("store_products.google.x.currencies"),
            "{err}"
        );
        let bad = format!("{MINIMAL}\n[store_products.google.x]\nname = \"Nothing\"\n");
        let err = Catalog::from_toml(&bad).unwrap_err().to_string();
        assert!(err.starts_with("store_products.google.x:"), "{err}");
    }

    #[test]
    fn a_bundle_cannot_push_a_grant_past_the_contents_bound() {
        let currency_count = CONTENTS_LEN_MAX + 1;
        let mut text = String::from("version = 1\n");
        for index in 0..currency_count {
            text.push_str(&format!("[currencies.c{index}]\ndecimals = 0\n"));
        }
        let own: Vec<String> = (0..CONTENTS_LEN_MAX).map(|i| format!("c{i} = 1")).collect();
        text.push_str(&format!(
            "[bundles.extra]\ncurrencies = {{ c{CONTENTS_LEN_MAX} = 1 }}\n\
             [offers.everything]\nprice = {{ c0 = 1 }}\nbundle = \"extra\"\n\
             currencies = {{ {} }}\n",
            own.join(", ")
        ));
        let err = Catalog::from_toml(&text).unwrap_err().to_string();
        assert!(err.starts_with("offers.everything.bundle:"), "{err}");
        // One own currency fewer and the merged grant is exactly at the bound.
        let at_bound = text.replace(&format!(", c{} = 1", CONTENTS_LEN_MAX - 1), "");
        let catalog = Catalog::from_toml(&at_bound).unwrap();
        assert_eq!(
            catalog.offers["everything"].grants.currencies.len(),
            CONTENTS_LEN_MAX
        );
    }

    #[test]
    fn demo_catalog_is_valid() {
        let text = include_str!("../../../assets/catalog.toml");
        Catalog::from_toml(text).unwrap();
    }
}
