//! The password policy (NIST SP 800-63B §5.1.1.2): a length floor and ceiling and a blocklist of
//! commonly used passwords, no composition rules.
//!
//! The blocklist is the 1,000 most common passwords of the SecLists "10 million passwords" list
//! (MIT licence; a few offensive entries dropped), compared lower-cased. Almost all of them are
//! shorter than the floor, so the check also catches the usual ways of stretching one to length:
//! a common password with digits or symbols before or after it (`dragon123456!`), the same word
//! repeated (`monkeymonkey`), one short unit repeated (`abcabcabcabc`) and runs of consecutive
//! characters (`123456789012`, `abcdefghijkl`).

/// Shortest accepted password, in characters.
pub const MIN_CHARS: usize = 12;
/// Longest accepted password, in characters: a bound on hashing work per request, far above
/// anything a password manager generates.
pub const MAX_CHARS: usize = 128;

const COMMON: &str = include_str!("common_passwords.txt");

/// A password that satisfies the policy. Never logged, never serialised.
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    /// Checks `raw` (not trimmed: spaces are legitimate password characters).
    pub fn parse(raw: &str) -> Result<Password, &'static str> {
        let chars = raw.chars().count();
        if chars < MIN_CHARS {
            return Err("must be at least 12 characters");
        }
        if chars > MAX_CHARS {
            return Err("must be at most 128 characters");
        }
        if is_guessable(raw) {
            return Err(
                "is too common or too predictable; choose a longer, less common passphrase",
            );
        }
        Ok(Password(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_common(candidate: &str) -> bool {
    !candidate.is_empty()
        && COMMON
            .lines()
            .any(|line| line.eq_ignore_ascii_case(candidate))
}

/// Whether `raw` is a blocklisted password, a decorated or repeated one, or a trivial pattern.
fn is_guessable(raw: &str) -> bool {
    let lower = raw.to_lowercase();
    let decoration = |c: char| !c.is_alphabetic();
    let core = lower.trim_matches(decoration);
    if is_common(&lower) || is_common(core) {
        return true;
    }
    let chars: Vec<char> = lower.chars().collect();
    // One unit repeated: "abcabcabcabc", "monkeymonkey" (the unit itself may be common or not).
    for unit in 1..=chars.len() / 2 {
        if chars.len().is_multiple_of(unit) && chars.chunks(unit).all(|c| c == &chars[..unit]) {
            return true;
        }
    }
    is_sequence(&chars)
}

/// Consecutive characters up or down: digits wrap around (`...7890123`), letters do not.
fn is_sequence(chars: &[char]) -> bool {
    let step = |a: char, b: char| -> Option<i32> {
        if a.is_ascii_digit() && b.is_ascii_digit() {
            let (a, b) = (a as i32 - '0' as i32, b as i32 - '0' as i32);
            match (b - a).rem_euclid(10) {
                1 => Some(1),
                9 => Some(-1),
                _ => None,
            }
        } else if a.is_ascii_lowercase() && b.is_ascii_lowercase() {
            match b as i32 - a as i32 {
                d @ (1 | -1) => Some(d),
                _ => None,
            }
        } else {
            None
        }
    };
    let Some(first) = chars.get(..2).and_then(|p| step(p[0], p[1])) else {
        return false;
    };
    chars.windows(2).all(|w| step(w[0], w[1]) == Some(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(
            Password::parse("short pass1").unwrap_err(),
            "must be at least 12 characters"
        );
        assert!(Password::parse("correct horse battery").is_ok());
        // 12 characters, 24 bytes.
        assert!(Password::parse("ééééééééééé1").is_ok());
        assert!(Password::parse(&"x1".repeat(64)).is_err(), "repeated");
        let long: String = (0..129)
            .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
            .collect();
        assert_eq!(
            Password::parse(&long).unwrap_err(),
            "must be at most 128 characters"
        );
        assert!(Password::parse(&long[..128]).is_ok());
    }

    #[test]
    fn common_passwords_are_refused_case_insensitively_and_decorated() {
        for bad in [
            "qwertyuiop12",
            "Password123456",
            "PASSWORD!!!!!!!!",
            "dragon123456!",
            "123456superman",
            "iloveyou2024!!",
            "monkeymonkey",
            "Starwars1977!",
        ] {
            assert!(Password::parse(bad).is_err(), "{bad}");
        }
        assert!(is_common("letmein"));
        assert!(is_common("LetMeIn"));
        assert!(!is_common(""));
    }

    #[test]
    fn trivial_patterns_are_refused() {
        for bad in [
            "aaaaaaaaaaaa",
            "abcabcabcabc",
            "123456789012",
            "987654321098",
            "abcdefghijklm",
            "zyxwvutsrqpo",
        ] {
            assert!(Password::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn reasonable_passphrases_pass() {
        for ok in [
            "purple-otter-climbs-42",
            "Tr0ub4dor&3xyz",
            "my dog likes rainy tuesdays",
            "x7#Kq!9zL2@v",
        ] {
            assert!(Password::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            format!("{:?}", Password::parse("purple-otter-climbs-42").unwrap()),
            "Password(<redacted>)"
        );
    }
}
