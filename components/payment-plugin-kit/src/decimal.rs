//! Integer minor units ⇄ the decimal strings wallet and crypto APIs use ("12.34"), by the
//! currency's ISO 4217 exponent. No floats anywhere.

/// Digits after the decimal point for `currency`.
pub fn exponent(currency: &str) -> u32 {
    match currency.to_ascii_uppercase().as_str() {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        _ => 2,
    }
}

pub fn to_decimal(minor: u64, currency: &str) -> String {
    let exp = exponent(currency);
    if exp == 0 {
        return minor.to_string();
    }
    let scale = 10u64.pow(exp);
    format!(
        "{}.{:0width$}",
        minor / scale,
        minor % scale,
        width = exp as usize
    )
}

/// Parses "12.34" (at most the currency's digits after the point) into minor units.
pub fn from_decimal(text: &str, currency: &str) -> Option<u64> {
    let exp = exponent(currency) as usize;
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, f),
        None => (text, ""),
    };
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || frac.len() > exp
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let scale = 10u64.checked_pow(exp as u32)?;
    let frac_value: u64 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<exp$}").parse().ok()?
    };
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(scale)?
        .checked_add(frac_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_by_exponent() {
        assert_eq!(to_decimal(1234, "EUR"), "12.34");
        assert_eq!(to_decimal(5, "USD"), "0.05");
        assert_eq!(to_decimal(500, "JPY"), "500");
        assert_eq!(to_decimal(1005, "KWD"), "1.005");
        assert_eq!(from_decimal("12.34", "EUR"), Some(1234));
        assert_eq!(from_decimal("12.3", "EUR"), Some(1230));
        assert_eq!(from_decimal("12", "EUR"), Some(1200));
        assert_eq!(from_decimal("12.345", "EUR"), None);
        assert_eq!(from_decimal("-1", "EUR"), None);
        assert_eq!(from_decimal("1e3", "EUR"), None);
        assert_eq!(from_decimal("500", "JPY"), Some(500));
    }
}
