//! Opaque identifiers: 128 random bits from the host's CSPRNG, lower-case hex (32 chars).
//! Services prefix them by kind (`usr_`, `prd_`, `evt_` …) so a misplaced id is obvious in logs.

/// 32 hex chars of fresh randomness.
pub fn new_id() -> String {
    let bytes = random_bytes::<16>();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `N` bytes from the host's CSPRNG (`wasi:random` in a component, the OS natively).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the host provides randomness");
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_and_distinct() {
        let a = super::new_id();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, super::new_id());
    }
}
