//! The secrets of the protocol: salts, nonces, verifiers and challenge responses.
//!
//! ```text
//! verifier = hex(SHA-256(ascii(salt)  || utf8(password)))   stored in USERS.password
//! response = hex(SHA-256(ascii(nonce) || ascii(verifier)))  sent by the client at login
//! ```
//!
//! Salts and nonces are 16 bytes from the operating system's CSPRNG, written as 32
//! lowercase hex digits. Responses are compared in constant time. Unknown usernames
//! get a *stable* fake salt, HMAC-SHA256(server secret, username), so the challenge
//! does not tell an attacker which names exist.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Hex digits in a salt or a nonce (16 random bytes).
pub const TOKEN_HEX_LEN: usize = 32;

/// 16 bytes from the OS CSPRNG as 32 lowercase hex digits.
///
/// Panics only if the operating system cannot give randomness at all, in which
/// case no safe answer exists; the panic ends one session, not the server.
pub fn random_token() -> String {
    let mut bytes = [0u8; TOKEN_HEX_LEN / 2];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    hex::encode(bytes)
}

/// A fresh salt for a new or changed password.
pub fn new_salt() -> String {
    random_token()
}

/// A fresh one-time challenge for a login or re-authentication.
pub fn new_nonce() -> String {
    random_token()
}

/// `hex(SHA-256(salt || password))`: what `USERS.password` holds.
pub fn verifier(salt: &str, password: &str) -> String {
    sha256_hex(salt.as_bytes(), password.as_bytes())
}

/// `hex(SHA-256(nonce || verifier))`: the client's answer to a challenge.
pub fn response(nonce: &str, verifier: &str) -> String {
    sha256_hex(nonce.as_bytes(), verifier.as_bytes())
}

fn sha256_hex(a: &[u8], b: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(a);
    h.update(b);
    hex::encode(h.finalize())
}

/// Constant-time equality of two responses (or any two secrets of equal length).
/// A length difference is not secret: every valid response is 64 hex digits.
pub fn secrets_equal(expected: &str, given: &str) -> bool {
    expected.as_bytes().ct_eq(given.as_bytes()).into()
}

/// Keyed, stable stand-ins for users that do not exist.
///
/// The key is the server secret kept in the database, so the fake salt of a name
/// is the same on every try and across restarts, like a real user's salt.
#[derive(Clone)]
pub struct FakeCredentials {
    key: Vec<u8>,
}

impl FakeCredentials {
    pub fn new(secret: &[u8]) -> Self {
        FakeCredentials {
            key: secret.to_vec(),
        }
    }

    /// First 32 hex digits of HMAC-SHA256(secret, username), as the protocol says.
    pub fn salt(&self, username: &str) -> String {
        let mut hex = self.mac(b"", username);
        hex.truncate(TOKEN_HEX_LEN);
        hex
    }

    /// A verifier no password is known for, so a fake login costs the same
    /// hashing and comparison as a real one and always fails.
    pub fn verifier(&self, username: &str) -> String {
        self.mac(b"verifier:", username)
    }

    fn mac(&self, label: &[u8], username: &str) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(label);
        mac.update(username.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }
}

/// True for exactly 32 lowercase hex digits (the form of salts and nonces).
pub fn is_token(s: &str) -> bool {
    s.len() == TOKEN_HEX_LEN && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vectors of docs/PROTOCOL.md.
    #[test]
    fn protocol_test_vector() {
        let v = verifier("6d5da35ec7a5497e9b96ce8e88562747", "Passw0rdDemo");
        assert_eq!(
            v,
            "4483ebe21806714fe0d4fd4fbc05d020ab13d36ade3e1510d7bb6a9580849029"
        );
        assert_eq!(
            response("9f1c2b7e44d0a3b58e6f7a1c0d2e3f41", &v),
            "0fcc62b2f3faa9b521b798dd47a8ae5060962cdb845bbb6f3b68a438b3a6baf6"
        );
    }

    #[test]
    fn non_ascii_test_vector() {
        assert_eq!(
            verifier("00112233445566778899aabbccddeeff", "Pässwört9X"),
            "e3bc9e94b23a0c8dfb7501d461d994480daf2e4e6866e36b0a23a3069288d207"
        );
    }

    #[test]
    fn tokens_are_fresh_lowercase_hex() {
        let a = random_token();
        let b = random_token();
        assert!(is_token(&a) && is_token(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn a_million_nonces_have_no_duplicate() {
        let mut seen = std::collections::HashSet::with_capacity(1_000_000);
        for _ in 0..1_000_000 {
            assert!(seen.insert(new_nonce()), "duplicate nonce");
        }
    }

    #[test]
    fn fake_salt_is_stable_per_name_and_key() {
        let f = FakeCredentials::new(b"secret one");
        assert_eq!(f.salt("alice"), f.salt("alice"));
        assert!(is_token(&f.salt("alice")));
        assert_ne!(f.salt("alice"), f.salt("bob"));
        assert_ne!(
            f.salt("alice"),
            FakeCredentials::new(b"secret two").salt("alice")
        );
        assert_ne!(f.verifier("alice"), f.verifier("bob"));
        assert_eq!(f.verifier("alice").len(), 64);
    }

    #[test]
    fn secrets_equal_compares_whole_strings() {
        assert!(secrets_equal("abc", "abc"));
        assert!(!secrets_equal("abc", "abd"));
        assert!(!secrets_equal("abc", "abcd"));
        assert!(!secrets_equal("", "a"));
    }
}
