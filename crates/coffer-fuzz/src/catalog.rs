//! Catalog TOML: parsing and validation must refuse or accept, never panic, and what it accepts
//! must keep every rule the catalog promises the state machine.
//!
//! An input is a mode byte and the rest:
//! - raw: the rest is the TOML text itself (the checked-in seeds are readable catalogs);
//! - tree: the rest steers up to [`MUTATIONS_MAX`] edits of the demo catalog's TOML tree (values
//!   replaced with edge values, keys renamed, entries copied or removed, fields added), so most
//!   inputs parse and reach the validation rules;
//! - text: the rest steers splices of fragments (deep nesting, huge numbers, odd dates, unicode)
//!   into the demo catalog's text, for the TOML parser itself.

use std::collections::BTreeMap;

use arbitrary::{Result, Unstructured};
use coffer_core::limits::*;
use coffer_core::{Amounts, Catalog, Contents, ItemKind, Name, check_id};
use toml::{Table, Value};

/// The catalog every structured input starts from.
pub const DEMO_CATALOG_TOML: &str = include_str!("../../../assets/catalog.toml");

/// Most edits one tree or text input applies.
pub const MUTATIONS_MAX: usize = 16;

const MODE_RAW: u8 = 0;
const MODE_TREE: u8 = 1;

/// A catalog using every section, small enough to read in a seed.
pub const SMALL_CATALOG_TOML: &str = r#"version = 3
[currencies.coins]
decimals = 0
max_balance_minor_units = 1000
initial_balance_minor_units = 10
[items.potion]
kind = "stackable"
max_stack = 5
[items.boots]
kind = "upgradable"
level_prices = [{ coins = 5 }, { coins = 9 }]
[bundles.pack]
items = { potion = 2 }
[offers.pack]
price = { coins = 3 }
bundle = "pack"
currencies = { coins = 1 }
available_from = "2026-12-01T00:00:00.5+01:00"
[offers.free_potion]
items = { potion = 1 }
limit_per_player = 1
[rewards.daily]
currencies = { coins = 5 }
rate_limit = { count = 1, window_seconds = 86400 }
[store_products.sandbox.pack]
bundle = "pack"
"#;

/// Seed inputs: the two catalogs raw, and steering patterns for the tree and text modes.
pub fn seeds() -> Vec<(String, Vec<u8>)> {
    let raw = |text: &str| [&[MODE_RAW], text.as_bytes()].concat();
    let mut seeds = vec![
        ("raw-demo".to_owned(), raw(DEMO_CATALOG_TOML)),
        ("raw-small".to_owned(), raw(SMALL_CATALOG_TOML)),
    ];
    for (name, pattern) in crate::steering_patterns() {
        seeds.push((
            format!("tree-{name}"),
            [&[MODE_TREE], &pattern[..]].concat(),
        ));
        seeds.push((format!("text-{name}"), [&[2], &pattern[..]].concat()));
    }
    seeds
}

/// Runs one input and returns whether the catalog was accepted; panics only when a property
/// is broken.
pub fn run(data: &[u8]) -> bool {
    let Some((&mode, rest)) = data.split_first() else {
        return false;
    };
    let text = match mode % 3 {
        MODE_RAW => String::from_utf8_lossy(rest).into_owned(),
        MODE_TREE => match mutate_tree(&mut Unstructured::new(rest)) {
            Ok(text) => text,
            Err(_) => return false,
        },
        _ => mutate_text(&mut Unstructured::new(rest)),
    };
    check_text(&text).is_some()
}

/// Parses `text` and, when it is accepted, checks the catalog's invariants.
pub fn check_text(text: &str) -> Option<Catalog> {
    match Catalog::from_toml(text) {
        Ok(catalog) => {
            check_accepted(&catalog);
            Some(catalog)
        }
        Err(error) => {
            // The message reaches operators and ReplaceCatalog callers: it must render.
            assert!(!error.to_string().is_empty());
            None
        }
    }
}

fn mutate_tree(u: &mut Unstructured<'_>) -> Result<String> {
    let mut root: Table = toml::from_str(DEMO_CATALOG_TOML).expect("the demo catalog is TOML");
    // Few edits most of the time (each one may already refuse the catalog), many sometimes.
    let mut edits = 1;
    while edits < MUTATIONS_MAX && u.ratio(1, 2)? {
        edits += 1;
    }
    for _ in 0..edits {
        if u.is_empty() {
            break;
        }
        // The root stays a table: edit one of its entries, or add one.
        if root.is_empty() || u.ratio(1, 8)? {
            root.insert(interesting_key(u)?, interesting_value(u)?);
            continue;
        }
        let key = root
            .keys()
            .nth(u.choose_index(root.len())?)
            .cloned()
            .expect("index in range");
        if u.ratio(1, 4)? {
            edit_table(u, &mut root, &key)?;
        } else {
            edit(u, root.get_mut(&key).expect("key present"), 1)?;
        }
    }
    // A tree the writer cannot print is simply not an input.
    Ok(toml::to_string(&root).unwrap_or_default())
}

/// Walks down a random path and edits the value or table found there.
fn edit(u: &mut Unstructured<'_>, value: &mut Value, depth: usize) -> Result<()> {
    let descend = depth < 4 && u.ratio(3, 4)?;
    match value {
        Value::Table(table) if descend && !table.is_empty() => {
            let index = u.choose_index(table.len())?;
            let key = table.keys().nth(index).cloned().expect("index in range");
            if u.ratio(1, 3)? {
                return edit_table(u, table, &key);
            }
            edit(u, table.get_mut(&key).expect("key present"), depth + 1)
        }
        Value::Array(array) if descend && !array.is_empty() => {
            let index = u.choose_index(array.len())?;
            edit(u, &mut array[index], depth + 1)
        }
        Value::Table(table) if u.ratio(1, 2)? => {
            let key = interesting_key(u)?;
            table.insert(key, interesting_value(u)?);
            Ok(())
        }
        // Mostly keep the type, so the edit reaches the validation rules, not serde.
        Value::Integer(n) if u.ratio(4, 5)? => {
            *n = match u.int_in_range(0..=3u8)? {
                0 => n.saturating_add(1),
                1 => n.saturating_sub(1),
                2 => n.saturating_mul(1_000),
                _ => *u.choose(INTEGERS)?,
            };
            Ok(())
        }
        Value::String(text) if u.ratio(4, 5)? => {
            *text = (*u.choose(STRINGS)?).to_owned();
            Ok(())
        }
        _ => {
            *value = interesting_value(u)?;
            Ok(())
        }
    }
}

/// Removes, renames or copies the entry `key` of `table`.
fn edit_table(u: &mut Unstructured<'_>, table: &mut Table, key: &str) -> Result<()> {
    match u.int_in_range(0..=2u8)? {
        0 => {
            table.remove(key);
        }
        1 => {
            let entry = table.remove(key).expect("key present");
            table.insert(interesting_key(u)?, entry);
        }
        _ => {
            let entry = table[key].clone();
            let copies = u.int_in_range(1..=80usize)?;
            for copy in 0..copies {
                table.insert(format!("{key}_{copy}"), entry.clone());
            }
        }
    }
    Ok(())
}

const KEYS: &[&str] = &[
    "version",
    "name",
    "decimals",
    "max_balance_minor_units",
    "initial_balance_minor_units",
    "kind",
    "max_stack",
    "level_prices",
    "price",
    "bundle",
    "currencies",
    "items",
    "limit_per_player",
    "available_from",
    "available_until",
    "rate_limit",
    "count",
    "window_seconds",
    "store_products",
    "apple",
    "google",
    "sandbox",
    "steam",
    "coins",
    "gems",
    "credits",
    "potion",
    "sword",
    "speed_boots",
    "starter_pack",
    "daily_bonus",
    "",
    "system:shop",
    "a.b",
    "ünïcode",
    "\u{0}",
    "\u{202e}rtl",
    "🪙",
];

fn interesting_key(u: &mut Unstructured<'_>) -> Result<String> {
    Ok(match u.int_in_range(0..=4u8)? {
        0 => "k".repeat(u.int_in_range(ID_LEN_MAX - 1..=ID_LEN_MAX + 1)?),
        1 => u.arbitrary::<String>()?,
        2 => format!("new_{}", u.arbitrary::<u8>()?),
        _ => (*u.choose(KEYS)?).to_owned(),
    })
}

const INTEGERS: &[i64] = &[
    0,
    1,
    -1,
    2,
    5,
    18,
    19,
    99,
    100,
    255,
    256,
    1_000,
    1_001,
    86_400,
    2_592_000,
    2_592_001,
    1_000_000_000,
    1_000_000_001,
    AMOUNT_MINOR_UNITS_MAX - 1,
    AMOUNT_MINOR_UNITS_MAX,
    AMOUNT_MINOR_UNITS_MAX + 1,
    u32::MAX as i64,
    u32::MAX as i64 + 1,
    i64::MAX,
    i64::MIN,
    i64::MIN + 1,
];

const STRINGS: &[&str] = &[
    "",
    "stackable",
    "unique",
    "upgradable",
    "coins",
    "gems",
    "potion",
    "sword",
    "speed_boots",
    "starter_pack",
    "missing",
    "2026-12-01T00:00:00Z",
    "2027-01-01T00:00:00Z",
    "2026-12-01T00:00:00.000000001Z",
    "2026-12-01T00:00:00.0000005+00:00",
    "0000-01-01T00:00:00+23:59",
    "9999-12-31T23:59:59-23:59",
    "2016-12-31T23:59:60Z",
    "2026-02-30T00:00:00Z",
    "1969-12-31T23:59:59.9999Z",
    "not a date",
    "ünïcode 🪙 \u{202e}",
];

fn interesting_value(u: &mut Unstructured<'_>) -> Result<Value> {
    Ok(match u.int_in_range(0..=9u8)? {
        0 => Value::Integer(u.arbitrary()?),
        1 | 2 => Value::Integer(*u.choose(INTEGERS)?),
        3 => Value::String((*u.choose(STRINGS)?).to_owned()),
        4 => Value::String(u.arbitrary()?),
        5 => Value::Float(*u.choose(&[0.5, -0.0, f64::INFINITY, f64::NAN, 1e300])?),
        6 => Value::Boolean(u.arbitrary()?),
        7 => Value::Array(
            (0..u.int_in_range(0..=3usize)?)
                .map(|_| -> Result<Value> {
                    let mut entry = Table::new();
                    entry.insert(
                        (*u.choose(KEYS)?).to_owned(),
                        Value::Integer(*u.choose(INTEGERS)?),
                    );
                    Ok(Value::Table(entry))
                })
                .collect::<Result<_>>()?,
        ),
        8 => Value::Datetime(
            (*u.choose(&["2026-12-01T00:00:00Z", "1979-05-27", "07:32:00"])?)
                .parse()
                .expect("a TOML datetime"),
        ),
        _ => {
            let mut table = Table::new();
            for _ in 0..u.int_in_range(0..=3usize)? {
                table.insert(
                    (*u.choose(KEYS)?).to_owned(),
                    Value::Integer(*u.choose(INTEGERS)?),
                );
            }
            Value::Table(table)
        }
    })
}

/// A value for the right-hand side of a `key = value` line that the TOML parser, and then
/// serde, have to survive: deep nesting, out-of-range numbers, bad escapes, odd dates.
fn value_fragment(u: &mut Unstructured<'_>) -> Result<String> {
    let depth = u.int_in_range(1..=3_000usize)?;
    Ok(match u.int_in_range(0..=7u8)? {
        0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)),
        1 => format!("{}1{}", "{ a = ".repeat(depth), " }".repeat(depth)),
        2 => (*u.choose(&[
            "99999999999999999999999999",
            "-9223372036854775809",
            "1e400",
            "-0",
            "+1",
            "0x7fffffffffffffff",
            "0o777",
            "0b1",
            "1_000",
            "nan",
            "-inf",
            "true",
        ])?)
        .to_owned(),
        3 => (*u.choose(&[
            r#""\uD800""#,
            r#""\U0010FFFF \u0000""#,
            r#""ünïcode 🪙""#,
            "'''multi\nline'''",
            r#""""\n""""#,
            "\"unterminated",
        ])?)
        .to_owned(),
        4 => (*u.choose(&[
            "2026-12-01T00:00:00Z",
            "1979-05-27",
            "\"9999-12-31T23:59:59.999999999-23:59\"",
            "\"0000-01-01T00:00:00+23:59\"",
            "\"2026-12-01T00:00:00.123456789+14:00\"",
            "\"2016-12-31T23:59:60Z\"",
            "\"2026-12-01 00:00:00Z\"",
        ])?)
        .to_owned(),
        5 => format!("\"{}\"", "é".repeat(depth)),
        6 => (*u.choose(INTEGERS)?).to_string(),
        _ => u.arbitrary::<String>()?,
    })
}

/// A whole line to insert: table headers, keys and bytes the parser must refuse or place.
fn line_fragment(u: &mut Unstructured<'_>) -> Result<String> {
    let depth = u.int_in_range(1..=500usize)?;
    Ok(match u.int_in_range(0..=4u8)? {
        0 => format!("[{}]", vec!["a"; depth].join(".")),
        1 => format!("[[{}]]", u.choose(KEYS)?),
        2 => format!("\"{}\" = 1", "é".repeat(depth)),
        3 => "\u{feff}\u{0}\r".to_owned(),
        _ => u.arbitrary::<String>()?,
    })
}

fn mutate_text(u: &mut Unstructured<'_>) -> String {
    let mut lines: Vec<String> = DEMO_CATALOG_TOML.lines().map(str::to_owned).collect();
    for _ in 0..MUTATIONS_MAX {
        let Ok(index) = u.choose_index(lines.len()) else {
            break;
        };
        let edited = match lines[index].split_once(" = ") {
            // Keep the key, so the value reaches the field it is for.
            Some((key, _)) if u.ratio(3, 4).unwrap_or(false) => {
                let key = key.to_owned();
                value_fragment(u).map(|value| lines[index] = format!("{key} = {value}"))
            }
            _ => line_fragment(u).map(|line| lines.insert(index, line)),
        };
        if edited.is_err() || u.is_empty() || u.ratio(1, 2).unwrap_or(true) {
            break;
        }
    }
    lines.join("\n")
}

fn check_amounts(catalog: &Catalog, amounts: &Amounts, what: &str) {
    assert!(
        amounts.len() <= CONTENTS_LEN_MAX,
        "{what}: too many currencies"
    );
    for (currency, amount) in amounts {
        assert!(
            catalog.currencies.contains_key(currency),
            "{what}: unknown {currency}"
        );
        assert!(
            (1..=AMOUNT_MINOR_UNITS_MAX).contains(amount),
            "{what}: amount {amount} of {currency}"
        );
    }
}

fn check_contents(catalog: &Catalog, contents: &Contents, what: &str) {
    assert!(!contents.is_empty(), "{what}: grants nothing");
    check_amounts(catalog, &contents.currencies, what);
    assert!(
        contents.items.len() <= CONTENTS_LEN_MAX,
        "{what}: too many items"
    );
    for (item_id, quantity) in &contents.items {
        let item = &catalog
            .items
            .get(item_id)
            .unwrap_or_else(|| panic!("{what}: unknown {item_id}"));
        assert!(
            (1..=item.quantity_max()).contains(quantity),
            "{what}: {quantity} of {item_id}"
        );
    }
}

/// What a bundle adds to a grant: every bundle entry at least as large in the grant.
fn check_includes(outer: &Contents, bundle: &Contents, what: &str) {
    for (currency, amount) in &bundle.currencies {
        assert!(
            outer.currencies.get(currency) >= Some(amount),
            "{what}: bundle {currency} missing"
        );
    }
    for (item, quantity) in &bundle.items {
        assert!(
            outer.items.get(item) >= Some(quantity),
            "{what}: bundle {item} missing"
        );
    }
}

/// Every rule an accepted catalog promises, checked on the parsed value.
pub fn check_accepted(catalog: &Catalog) {
    assert!(!catalog.currencies.is_empty());
    for (id, currency) in &catalog.currencies {
        assert_eq!(&currency.id, id);
        assert!(check_id(id).is_ok(), "currency id {id:?}");
        assert!(currency.decimals <= CURRENCY_DECIMALS_MAX);
        let cap = catalog.balance_cap(id);
        assert!(
            (1..=AMOUNT_MINOR_UNITS_MAX).contains(&cap),
            "{id}: cap {cap}"
        );
        assert!((0..=cap).contains(&currency.initial_balance_minor_units));
    }
    for (id, item) in &catalog.items {
        assert_eq!(&item.id, id);
        assert!(check_id(id).is_ok(), "item id {id:?}");
        match &item.kind {
            ItemKind::Stackable { max_stack } => {
                assert!((1..=ITEM_QUANTITY_MAX).contains(max_stack))
            }
            ItemKind::Unique => {}
            ItemKind::Upgradable { levels } => {
                assert!((1..=UPGRADE_LEVELS_MAX).contains(&levels.len()));
                for price in levels {
                    assert!(!price.is_empty(), "{id}: a free level");
                    check_amounts(catalog, price, id);
                }
            }
        }
    }
    for (id, bundle) in &catalog.bundles {
        assert_eq!(&bundle.id, id);
        assert!(check_id(id).is_ok(), "bundle id {id:?}");
        check_contents(catalog, &bundle.contents, id);
    }
    for (id, offer) in &catalog.offers {
        assert_eq!(&offer.id, id);
        assert!(check_id(id).is_ok(), "offer id {id:?}");
        check_amounts(catalog, &offer.price, id);
        check_contents(catalog, &offer.grants, id);
        assert!(
            !offer.price.is_empty() || offer.limit_per_player.is_some(),
            "{id}: free, no limit"
        );
        assert_ne!(offer.limit_per_player, Some(0));
        if let (Some(from), Some(until)) =
            (offer.available_from_unix_ms, offer.available_until_unix_ms)
        {
            assert!(from < until, "{id}: empty window");
        }
        if let Some(bundle) = &offer.bundle {
            check_includes(&offer.grants, &catalog.bundles[bundle].contents, id);
        }
    }
    for (id, reward) in &catalog.rewards {
        assert_eq!(&reward.id, id);
        assert!(check_id(id).is_ok(), "reward id {id:?}");
        check_contents(catalog, &reward.grants, id);
        assert!((1..=REWARD_RATE_COUNT_MAX).contains(&reward.rate_limit_count));
        let window_ms_max = i64::from(REWARD_WINDOW_SECONDS_MAX) * 1000;
        assert!((1000..=window_ms_max).contains(&reward.rate_limit_window_ms));
        assert_eq!(reward.rate_limit_window_ms % 1000, 0);
    }
    for (platform, products) in &catalog.store_products {
        assert!(products.len() <= CATALOG_SECTION_LEN_MAX);
        for (id, product) in products {
            assert_eq!((&product.product_id, product.platform), (id, *platform));
            assert!(check_id(id).is_ok(), "product id {id:?}");
            check_contents(catalog, &product.grants, id);
            if let Some(bundle) = &product.bundle {
                check_includes(&product.grants, &catalog.bundles[bundle].contents, id);
            }
        }
    }

    // A catalog cannot replace itself, but its next version can.
    assert!(catalog.check_replacement(catalog).is_err());
    if catalog.version < u64::MAX {
        let mut next = catalog.clone();
        next.version += 1;
        assert_eq!(catalog.check_replacement(&next), Ok(()));
    }

    // What clients are sent describes the same catalog.
    let wire = coffer_server::convert::catalog(catalog);
    assert_eq!(wire.offers.len(), catalog.offers.len());
    assert_eq!(wire.rewards.len(), catalog.rewards.len());
    for (wire_reward, reward) in wire.rewards.iter().zip(catalog.rewards.values()) {
        assert_eq!(
            i64::from(wire_reward.rate_limit_window_seconds) * 1000,
            reward.rate_limit_window_ms
        );
    }

    // Re-validates: written back as TOML, it loads as the same catalog.
    if let Some(text) = render(catalog) {
        let again = Catalog::from_toml(&text).unwrap_or_else(|e| {
            panic!("an accepted catalog, written back, is refused: {e}\n{text}")
        });
        assert_eq!(
            &again, catalog,
            "written back, the catalog changed:\n{text}"
        );
    }
}

fn amounts_table(amounts: &BTreeMap<Name, i64>) -> Value {
    Value::Table(
        amounts
            .iter()
            .map(|(k, v)| (k.to_string(), Value::Integer(*v)))
            .collect(),
    )
}

/// The part of `grants` a bundle does not already give, as `currencies` and `items` fields.
fn own_contents(table: &mut Table, grants: &Contents, bundle: Option<&Contents>) {
    let empty = Contents::default();
    let bundle = bundle.unwrap_or(&empty);
    let currencies: BTreeMap<Name, i64> = grants
        .currencies
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v - bundle.currencies.get(k).copied().unwrap_or(0),
            )
        })
        .filter(|(_, v)| *v != 0)
        .collect();
    let items: BTreeMap<Name, i64> = grants
        .items
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - bundle.items.get(k).copied().unwrap_or(0)) as i64,
            )
        })
        .filter(|(_, v)| *v != 0)
        .collect();
    table.insert("currencies".into(), amounts_table(&currencies));
    table.insert("items".into(), amounts_table(&items));
}

fn rfc3339(unix_ms: i64) -> Option<Value> {
    let at =
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_ms) * 1_000_000).ok()?;
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(Value::String(text))
}

/// The catalog as TOML, or `None` when a time cannot be written in RFC 3339 at UTC (a window
/// given with an offset may start before year 0).
pub fn render(catalog: &Catalog) -> Option<String> {
    let mut root = Table::new();
    root.insert(
        "version".into(),
        Value::Integer(i64::try_from(catalog.version).ok()?),
    );
    let mut currencies = Table::new();
    for (id, c) in &catalog.currencies {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(c.name.clone()));
        t.insert("decimals".into(), Value::Integer(i64::from(c.decimals)));
        if let Some(max) = c.max_balance_minor_units {
            t.insert("max_balance_minor_units".into(), Value::Integer(max));
        }
        t.insert(
            "initial_balance_minor_units".into(),
            Value::Integer(c.initial_balance_minor_units),
        );
        currencies.insert(id.to_string(), Value::Table(t));
    }
    root.insert("currencies".into(), Value::Table(currencies));
    let mut items = Table::new();
    for (id, item) in &catalog.items {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(item.name.clone()));
        let kind = match &item.kind {
            ItemKind::Stackable { max_stack } => {
                t.insert("max_stack".into(), Value::Integer(*max_stack as i64));
                "stackable"
            }
            ItemKind::Unique => "unique",
            ItemKind::Upgradable { levels } => {
                t.insert(
                    "level_prices".into(),
                    Value::Array(levels.iter().map(amounts_table).collect()),
                );
                "upgradable"
            }
        };
        t.insert("kind".into(), Value::String(kind.into()));
        items.insert(id.to_string(), Value::Table(t));
    }
    root.insert("items".into(), Value::Table(items));
    let mut bundles = Table::new();
    for (id, b) in &catalog.bundles {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(b.name.clone()));
        own_contents(&mut t, &b.contents, None);
        bundles.insert(id.clone(), Value::Table(t));
    }
    root.insert("bundles".into(), Value::Table(bundles));
    let mut offers = Table::new();
    for (id, o) in &catalog.offers {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(o.name.clone()));
        t.insert("price".into(), amounts_table(&o.price));
        let bundle = o.bundle.as_ref().map(|b| &catalog.bundles[b].contents);
        if let Some(b) = &o.bundle {
            t.insert("bundle".into(), Value::String(b.clone()));
        }
        own_contents(&mut t, &o.grants, bundle);
        if let Some(limit) = o.limit_per_player {
            t.insert("limit_per_player".into(), Value::Integer(i64::from(limit)));
        }
        if let Some(from) = o.available_from_unix_ms {
            t.insert("available_from".into(), rfc3339(from)?);
        }
        if let Some(until) = o.available_until_unix_ms {
            t.insert("available_until".into(), rfc3339(until)?);
        }
        offers.insert(id.to_string(), Value::Table(t));
    }
    root.insert("offers".into(), Value::Table(offers));
    let mut rewards = Table::new();
    for (id, r) in &catalog.rewards {
        let mut t = Table::new();
        t.insert("name".into(), Value::String(r.name.clone()));
        own_contents(&mut t, &r.grants, None);
        let mut limit = Table::new();
        limit.insert(
            "count".into(),
            Value::Integer(i64::from(r.rate_limit_count)),
        );
        limit.insert(
            "window_seconds".into(),
            Value::Integer(r.rate_limit_window_ms / 1000),
        );
        t.insert("rate_limit".into(), Value::Table(limit));
        rewards.insert(id.to_string(), Value::Table(t));
    }
    root.insert("rewards".into(), Value::Table(rewards));
    let mut platforms = Table::new();
    for (platform, products) in &catalog.store_products {
        let mut by_id = Table::new();
        for (id, p) in products {
            let mut t = Table::new();
            t.insert("name".into(), Value::String(p.name.clone()));
            let bundle = p.bundle.as_ref().map(|b| &catalog.bundles[b].contents);
            if let Some(b) = &p.bundle {
                t.insert("bundle".into(), Value::String(b.clone()));
            }
            own_contents(&mut t, &p.grants, bundle);
            by_id.insert(id.clone(), Value::Table(t));
        }
        platforms.insert(platform.name().to_owned(), Value::Table(by_id));
    }
    root.insert("store_products".into(), Value::Table(platforms));
    Some(toml::to_string(&root).expect("a catalog prints as TOML"))
}
