//! Every bound the core enforces, in one place, so that transport and storage can quote them.

/// Largest amount of one currency in one posting, price or balance cap (10^15 minor units).
/// Kept well below `i64::MAX` so sums of a batch's postings cannot overflow before they are checked.
pub const AMOUNT_MINOR_UNITS_MAX: i64 = 1_000_000_000_000_000;
/// Largest item quantity in one movement or stack.
pub const ITEM_QUANTITY_MAX: u64 = 1_000_000_000;
/// Most decimals a currency may declare (minor units per major unit = 10^decimals).
pub const CURRENCY_DECIMALS_MAX: u8 = 18;
/// Longest identifier (currency, item, offer, reward, bundle, player) in bytes.
pub const ID_LEN_MAX: usize = 64;
/// Longest idempotency key in bytes.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
/// Longest free-text reason on an admin operation, in bytes.
pub const REASON_LEN_MAX: usize = 512;
/// Most entries in any one catalog section.
pub const CATALOG_SECTION_LEN_MAX: usize = 10_000;
/// Most levels an upgradable item may have.
pub const UPGRADE_LEVELS_MAX: usize = 1_000;
/// Most claims a reward's rate limit may allow per window (the claim history kept per player).
pub const REWARD_RATE_COUNT_MAX: u32 = 1_000;
/// Longest reward rate-limit window: 30 days.
pub const REWARD_WINDOW_SECONDS_MAX: u32 = 30 * 24 * 3600;
/// Most currencies, and most items, in one `Contents` or price (a bundle's included).
pub const CONTENTS_LEN_MAX: usize = 64;
/// Most steps in one `Execute`.
pub const EXECUTE_STEPS_MAX: usize = 256;
/// Most commands the state machine applies in one batch (one durable commit).
pub const BATCH_LEN_MAX: usize = 1_024;
/// How many load rounds a batch may need: commands (and the purchase key a store refund names),
/// then the transactions a reversal or refund names, then the accounts those transactions
/// touched.
pub const PREFETCH_ROUNDS_MAX: usize = 3;
