//! Converting Apple's milliunit prices into the currency's minor unit.

/// ISO 4217 currencies whose minor unit is the unit itself (no decimals).
const CURRENCIES_EXPONENT_0: [&str; 17] = [
    "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "UYI", "VND",
    "VUV", "XAF", "XOF", "XPF",
];
/// ISO 4217 currencies with three decimals.
const CURRENCIES_EXPONENT_3: [&str; 7] = ["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
/// ISO 4217 currencies with four decimals.
const CURRENCIES_EXPONENT_4: [&str; 2] = ["CLF", "UYW"];

/// Number of decimals of the currency's minor unit (ISO 4217); 2 for any code not listed.
pub(crate) fn currency_exponent(currency_code: &str) -> u32 {
    if CURRENCIES_EXPONENT_0.contains(&currency_code) {
        0
    } else if CURRENCIES_EXPONENT_3.contains(&currency_code) {
        3
    } else if CURRENCIES_EXPONENT_4.contains(&currency_code) {
        4
    } else {
        2
    }
}

/// `price_milliunits` (thousandths of the unit) in the currency's minor unit, or `None` when it
/// does not convert exactly: a ledger must never book a rounded amount as the store's price.
pub(crate) fn milliunits_to_minor_units(price_milliunits: i64, currency_code: &str) -> Option<i64> {
    let exponent = currency_exponent(currency_code);
    if exponent >= 3 {
        price_milliunits.checked_mul(10_i64.pow(exponent - 3))
    } else {
        let divisor = 10_i64.pow(3 - exponent);
        (price_milliunits % divisor == 0).then_some(price_milliunits / divisor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usd_milliunits_become_cents() {
        assert_eq!(milliunits_to_minor_units(12_990, "USD"), Some(1_299));
    }

    #[test]
    fn jpy_milliunits_become_yen() {
        assert_eq!(milliunits_to_minor_units(120_000, "JPY"), Some(120));
    }

    #[test]
    fn kwd_milliunits_are_fils() {
        assert_eq!(milliunits_to_minor_units(1_250, "KWD"), Some(1_250));
    }

    #[test]
    fn inexact_conversion_is_none() {
        assert_eq!(milliunits_to_minor_units(12_995, "USD"), None);
        assert_eq!(milliunits_to_minor_units(i64::MAX, "CLF"), None);
    }
}
