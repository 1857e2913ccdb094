//! Per-session tunnel tokens (and the ngrok route's secret): 32 random bytes from the
//! operating system, base64url without padding (43 characters of `A-Z a-z 0-9 - _`).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Random bytes in a token.
pub const BYTES: usize = 32;

/// A fresh random token, URL-safe, with 256 bits of entropy.
///
/// # Panics
/// When the operating system's random source fails: a token without entropy must never be
/// used.
pub fn generate() -> String {
    let mut bytes = [0u8; BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random source for a tunnel token");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_distinct_and_url_safe() {
        let a = generate();
        let b = generate();
        assert_eq!(a.len(), 43);
        assert_ne!(a, b);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert!(cztunnel::valid_token(&a));
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).unwrap().len(), BYTES);
    }
}
