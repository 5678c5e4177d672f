//! Spin's identifier grammar (spin-reference §1.1). Component ids end up in host names
//! (`<id>.spin.internal`), log file names and SpinKube resources, so an id Spin would reject must
//! be rejected here too, otherwise an app that runs on Bazaar would fail on real Spin.
//!
//! Rule: the id is non-empty and split on a delimiter (`-` kebab, `_` snake) into words; no word is
//! empty; each word starts with an ASCII letter and continues with ASCII letters/digits; within a
//! word all letters share one case (lower-snake ids: lowercase only). Using the *other* delimiter
//! gets its own message because that is by far the most common mistake (`my_component`).

use anyhow::{Result, bail};

/// Validates a component id (kebab-case, words all-lowercase or all-UPPERCASE).
pub fn validate_kebab_id(id: &str) -> Result<()> {
    validate_id(id, '-', false)
}

/// Validates an application/component variable name (lower_snake_case).
pub fn validate_lower_snake_id(id: &str) -> Result<()> {
    validate_id(id, '_', true)
}

/// Validates a key-value store or SQLite database label: Spin accepts either a kebab-case id or a
/// snake_case id (words all-lowercase or all-UPPERCASE) there.
pub fn validate_store_label(label: &str) -> Result<()> {
    if validate_id(label, '-', false).is_ok() || validate_id(label, '_', false).is_ok() {
        return Ok(());
    }
    // Report the more relevant of the two failures: snake if the label uses `_`, else kebab.
    let delim = if label.contains('_') { '_' } else { '-' };
    validate_id(label, delim, false)
        .map_err(|e| anyhow::anyhow!("{e} (labels must be kebab-case or snake_case)"))
}

fn validate_id(id: &str, delim: char, lower_only: bool) -> Result<()> {
    if id.is_empty() {
        bail!("an id must not be empty");
    }
    let wrong = if delim == '-' { '_' } else { '-' };
    if id.contains(wrong) {
        bail!("`{id}`: words must be separated with `{delim}`, not `{wrong}`");
    }
    for word in id.split(delim) {
        if word.is_empty() {
            bail!(
                "`{id}`: `{delim}`-separated words must not be empty (leading, trailing or doubled `{delim}`)"
            );
        }
        let first = word.chars().next().unwrap_or_default();
        if !first.is_ascii_alphabetic() {
            bail!(
                "`{id}`: each `{delim}`-separated word must start with an ASCII letter, `{word}` starts with `{first}`"
            );
        }
        if let Some(bad) = word.chars().find(|c| !c.is_ascii_alphanumeric()) {
            bail!("`{id}`: words may only contain ASCII letters and digits, found `{bad}`");
        }
        let upper = first.is_ascii_uppercase();
        if word
            .chars()
            .any(|c| c.is_ascii_alphabetic() && c.is_ascii_uppercase() != upper)
        {
            bail!(
                "`{id}`: word `{word}` mixes upper and lower case (a word must be all lowercase or all UPPERCASE)"
            );
        }
        if lower_only && upper {
            bail!("`{id}`: must be all lowercase");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(r: Result<()>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn kebab_accepts_spin_examples() {
        for ok in ["cart", "cart-v2", "my-API", "API", "a-b-c", "x1y2"] {
            validate_kebab_id(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn kebab_rejections_have_specific_messages() {
        assert!(err(validate_kebab_id("cart-2")).contains("must start with an ASCII letter, `2`"));
        assert!(err(validate_kebab_id("Cart_x")).contains("separated with `-`, not `_`"));
        assert!(err(validate_kebab_id("-a")).contains("must not be empty"));
        assert!(err(validate_kebab_id("a--b")).contains("must not be empty"));
        assert!(err(validate_kebab_id("a-")).contains("must not be empty"));
        assert!(err(validate_kebab_id("Cart")).contains("word `Cart` mixes upper and lower case"));
        assert!(err(validate_kebab_id("caRT-x")).contains("mixes"));
        assert!(err(validate_kebab_id("a.b")).contains("found `.`"));
        assert!(err(validate_kebab_id("")).contains("empty"));
    }

    #[test]
    fn snake_rules() {
        validate_lower_snake_id("api_host_2x").unwrap_err(); // `2x` starts with a digit
        validate_lower_snake_id("api_host").unwrap();
        validate_lower_snake_id("v2_key").unwrap();
        assert!(err(validate_lower_snake_id("api-host")).contains("separated with `_`, not `-`"));
        assert!(err(validate_lower_snake_id("API_HOST")).contains("must be all lowercase"));
        assert!(err(validate_lower_snake_id("_x")).contains("must not be empty"));
    }

    #[test]
    fn labels_take_kebab_or_snake() {
        for ok in ["default", "my-store", "my_store", "MY_STORE", "MY-store"] {
            validate_store_label(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["my store", "my-_store", "1st", "my--store", ""] {
            assert!(
                validate_store_label(bad).is_err(),
                "{bad} should be rejected"
            );
        }
    }
}
