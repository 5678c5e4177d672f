//! `application/x-www-form-urlencoded` bodies, the request format of Stripe-like APIs.

/// Encodes `pairs` as a form body (RFC 3986 unreserved characters kept, everything else
/// percent-encoded, spaces as `%20`).
pub fn encode(pairs: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (key, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        push_encoded(&mut out, key);
        out.push('=');
        push_encoded(&mut out, value);
    }
    out
}

fn push_encoded(out: &mut String, text: &str) {
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn encodes_reserved_characters() {
        assert_eq!(
            super::encode(&[("card[number]", "tok_1"), ("name", "A B&C")]),
            "card%5Bnumber%5D=tok_1&name=A%20B%26C"
        );
    }
}
