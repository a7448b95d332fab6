//! The SCRAM key derivation, layered on the classic verifier.
//!
//! ```text
//! P               = hex(SHA-256(salt_hex || password))   the classic verifier
//! SaltedPassword  = PBKDF2-HMAC-SHA-256(P, salt, i, 32)
//! ClientKey       = HMAC(SaltedPassword, "Client Key")    StoredKey = SHA-256(ClientKey)
//! ServerKey       = HMAC(SaltedPassword, "Server Key")
//! ClientProof     = ClientKey XOR HMAC(StoredKey, AuthMessage)
//! ServerSignature = HMAC(ServerKey, AuthMessage)
//! ```
//!
//! The server keeps only StoredKey and ServerKey ([`ScramCredentials`]); the salted
//! password and ClientKey are password-equivalent and never leave the client.

use crate::config::{SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of every SCRAM-SHA-256 key, proof and signature.
pub const KEY_LEN: usize = 32;
/// Bytes of a salt (`USERS.salt` is their 32 lowercase hex digits).
pub const SALT_LEN: usize = 16;

/// A 32-byte key or MAC.
pub type Key = [u8; KEY_LEN];

/// Is `i` an iteration count this protocol accepts (4096 ..= 10,000,000)?
pub fn iterations_in_range(i: u32) -> bool {
    (SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(&i)
}

/// The 16 salt bytes of a `USERS.salt`, if it is exactly 32 lowercase hex digits.
pub fn salt_bytes(salt_hex: &str) -> Option<[u8; SALT_LEN]> {
    if !crate::crypto::is_token(salt_hex) {
        return None;
    }
    let mut out = [0u8; SALT_LEN];
    hex::decode_to_slice(salt_hex, &mut out).ok()?;
    Some(out)
}

/// `SaltedPassword = Hi(P, salt, i)`: PBKDF2-HMAC-SHA-256 with a 32-byte output.
pub fn salted_password(scram_password: &[u8], salt: &[u8], iterations: u32) -> Key {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(scram_password, salt, iterations, &mut out);
    out
}

/// HMAC-SHA-256(key, data).
pub fn hmac(key: &[u8], data: &[u8]) -> Key {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// SHA-256(data).
pub fn sha256(data: &[u8]) -> Key {
    Sha256::digest(data).into()
}

pub fn client_key(salted: &Key) -> Key {
    hmac(salted, b"Client Key")
}

pub fn server_key(salted: &Key) -> Key {
    hmac(salted, b"Server Key")
}

/// `a XOR b`: ClientProof from ClientKey and ClientSignature, and back.
pub fn xor(a: &Key, b: &Key) -> Key {
    let mut out = [0u8; KEY_LEN];
    for (o, (x, y)) in out.iter_mut().zip(a.iter().zip(b)) {
        *o = x ^ y;
    }
    out
}

/// Constant-time equality of two keys.
pub fn keys_equal(a: &Key, b: &Key) -> bool {
    a.ct_eq(b).into()
}

/// What the server stores per user (the `SCRAM_SHA_256` row but the login).
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    pub iterations: u32,
    pub stored_key: Key,
    pub server_key: Key,
}

impl std::fmt::Debug for ScramCredentials {
    // The keys are not printed: StoredKey + ServerKey let one impersonate the server.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ScramCredentials {{ iterations: {} }}", self.iterations)
    }
}

impl ScramCredentials {
    /// Derives the credentials from the classic verifier `P` and the salt. Costs
    /// PBKDF2 with `iterations` rounds.
    pub fn derive(scram_password: &str, salt: &[u8], iterations: u32) -> Self {
        let salted = salted_password(scram_password.as_bytes(), salt, iterations);
        ScramCredentials {
            iterations,
            stored_key: sha256(&client_key(&salted)),
            server_key: server_key(&salted),
        }
    }

    /// From a stored row; `None` if it is out of range or not 44-character base64
    /// of 32 bytes (a corrupt row is "no usable SCRAM row").
    pub fn from_row(iterations: i64, stored_key: &str, server_key: &str) -> Option<Self> {
        let iterations = u32::try_from(iterations).ok()?;
        if !iterations_in_range(iterations) {
            return None;
        }
        Some(ScramCredentials {
            iterations,
            stored_key: decode_key(stored_key)?,
            server_key: decode_key(server_key)?,
        })
    }

    /// base64(StoredKey), base64(ServerKey): the row's text columns.
    pub fn encoded_keys(&self) -> (String, String) {
        (B64.encode(self.stored_key), B64.encode(self.server_key))
    }

    /// Does `proof` prove knowledge of ClientKey for this AuthMessage? Always does
    /// the same work: one HMAC, one SHA-256 and a constant-time comparison.
    pub fn verify_proof(&self, auth_message: &str, proof: &Key) -> bool {
        let signature = hmac(&self.stored_key, auth_message.as_bytes());
        let claimed_client_key = xor(proof, &signature);
        keys_equal(&sha256(&claimed_client_key), &self.stored_key)
    }

    /// ServerSignature = HMAC(ServerKey, AuthMessage).
    pub fn server_signature(&self, auth_message: &str) -> Key {
        hmac(&self.server_key, auth_message.as_bytes())
    }
}

/// Canonical base64 of exactly 32 bytes.
pub fn decode_key(text: &str) -> Option<Key> {
    let bytes = B64.decode(text).ok()?;
    bytes.try_into().ok()
}

/// The client's side: keys derived from the user's password and the challenge.
/// Holds password-equivalent secrets: never printed (no `Debug`).
pub struct ClientKeys {
    client_key: Key,
    server_key: Key,
}

impl ClientKeys {
    /// `P` from the salt and the password as typed, then SaltedPassword, ClientKey
    /// and ServerKey.
    pub fn derive(password: &str, salt: &[u8; SALT_LEN], iterations: u32) -> Self {
        let p = crate::crypto::verifier(&hex::encode(salt), password);
        let salted = salted_password(p.as_bytes(), salt, iterations);
        ClientKeys {
            client_key: client_key(&salted),
            server_key: server_key(&salted),
        }
    }

    /// ClientProof for this AuthMessage.
    pub fn proof(&self, auth_message: &str) -> Key {
        let stored_key = sha256(&self.client_key);
        xor(
            &self.client_key,
            &hmac(&stored_key, auth_message.as_bytes()),
        )
    }

    /// Is `signature` the ServerSignature of this AuthMessage (constant time)?
    pub fn server_signature_matches(&self, auth_message: &str, signature: &Key) -> bool {
        keys_equal(&hmac(&self.server_key, auth_message.as_bytes()), signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(k: &[u8]) -> String {
        B64.encode(k)
    }

    // RFC 7677 section 3, raw password "pencil" (no pre-hash), with the
    // intermediate values of protocol-scram.md's vector (a).
    #[test]
    fn rfc7677_example_every_value() {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        let salted = salted_password(b"pencil", &salt, 4096);
        assert_eq!(b64(&salted), "xKSVEDI6tPlSysH6mUQZOeeOp01r6B3fcJbodRPcYV0=");
        let ck = client_key(&salted);
        assert_eq!(b64(&ck), "pg/JI9Z+hkSpLRa5btpe9GVrDHJcSEN0viVTVXaZbos=");
        let stored = sha256(&ck);
        assert_eq!(b64(&stored), "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=");
        let sk = server_key(&salted);
        assert_eq!(b64(&sk), "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=");
        let am = "n=user,r=rOprNGfwEbeRWgbNEkqO,\
                  r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,\
                  c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
        let proof = xor(&ck, &hmac(&stored, am.as_bytes()));
        assert_eq!(b64(&proof), "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=");
        let creds = ScramCredentials {
            iterations: 4096,
            stored_key: stored,
            server_key: sk,
        };
        assert!(creds.verify_proof(am, &proof));
        assert_eq!(
            b64(&creds.server_signature(am)),
            "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        );
    }

    const DEMO_AM: &str = "n=demo,r=Y2xpZW50LW5vbmNlLWRlbW8x,r=Y2xpZW50LW5vbmNlLWRlbW8xc2VydmVyLW5vbmNlLWRlbW8x,s=bV2jXselSX6bls6OiFYnRw==,i=4096,c=biws,r=Y2xpZW50LW5vbmNlLWRlbW8xc2VydmVyLW5vbmNlLWRlbW8x";

    // protocol-scram.md vector (b): v1's vector row, logging in with SCRAM.
    #[test]
    fn layered_vector_every_value() {
        let salt_hex = "6d5da35ec7a5497e9b96ce8e88562747";
        let salt = salt_bytes(salt_hex).unwrap();
        assert_eq!(b64(&salt), "bV2jXselSX6bls6OiFYnRw==");
        let p = crate::crypto::verifier(salt_hex, "Passw0rdDemo");
        assert_eq!(
            p,
            "4483ebe21806714fe0d4fd4fbc05d020ab13d36ade3e1510d7bb6a9580849029"
        );
        let salted = salted_password(p.as_bytes(), &salt, 4096);
        assert_eq!(
            hex::encode(salted),
            "3693b2fb8fff81d4af6dd87a8273c2579a289e9b555677db44e433200f0fa763"
        );
        assert_eq!(b64(&salted), "NpOy+4//gdSvbdh6gnPCV5oonptVVnfbROQzIA8Pp2M=");
        let ck = client_key(&salted);
        assert_eq!(
            hex::encode(ck),
            "d574c9d4a5025fc814c81a27002ab62af5eedde4ffae7da974d40df9c3d00f56"
        );
        assert_eq!(b64(&ck), "1XTJ1KUCX8gUyBonACq2KvXu3eT/rn2pdNQN+cPQD1Y=");
        let stored = sha256(&ck);
        assert_eq!(
            hex::encode(stored),
            "7b807b0b1edd49a8317cb3cae2f9103b0006239826cdba7e55bf0f4b57beda99"
        );
        let sk = server_key(&salted);
        assert_eq!(
            hex::encode(sk),
            "253105bd78c9e740677b346dc9d1475411e3b483e01366e1e5058bf69eb8c347"
        );
        let creds = ScramCredentials::derive(&p, &salt, 4096);
        assert_eq!(
            creds.encoded_keys(),
            (
                "e4B7Cx7dSagxfLPK4vkQOwAGI5gmzbp+Vb8PS1e+2pk=".to_string(),
                "JTEFvXjJ50BnezRtydFHVBHjtIPgE2bh5QWL9p64w0c=".to_string()
            )
        );
        assert_eq!(DEMO_AM.len(), 176);
        let sig = hmac(&stored, DEMO_AM.as_bytes());
        assert_eq!(
            hex::encode(sig),
            "f6625484b8b4b10f1ad0ecfc4ebf2b7d833a84a086ed277b06f3d10623cc94cc"
        );
        let client = ClientKeys::derive("Passw0rdDemo", &salt, 4096);
        let proof = client.proof(DEMO_AM);
        assert_eq!(
            hex::encode(proof),
            "23169d501db6eec70e18f6db4e959d5776d4594479435ad27227dcffe01c9b9a"
        );
        assert_eq!(b64(&proof), "IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o=");
        assert!(creds.verify_proof(DEMO_AM, &proof));
        let server_sig = creds.server_signature(DEMO_AM);
        assert_eq!(
            hex::encode(server_sig),
            "acb79e2d3cd25e1e653f0992b370148b49853b750e280bbc17ef61dd006fba7e"
        );
        assert_eq!(
            b64(&server_sig),
            "rLeeLTzSXh5lPwmSs3AUi0mFO3UOKAu8F+9h3QBvun4="
        );
        assert!(client.server_signature_matches(DEMO_AM, &server_sig));
        let mut forged = server_sig;
        forged[0] ^= 1;
        assert!(!client.server_signature_matches(DEMO_AM, &forged));
        // The wrong password of the vector.
        let wrong = ClientKeys::derive("Wrong9999Z", &salt, 4096).proof(DEMO_AM);
        assert_eq!(b64(&wrong), "muqz2B6gSutmw8HQF1awSS+vBjgfywFzs7zRfRUAHSM=");
        assert!(!creds.verify_proof(DEMO_AM, &wrong));
    }

    // protocol-scram.md vector (c): v1's non-ASCII row after migration.
    #[test]
    fn non_ascii_row_after_migration() {
        let salt_hex = "00112233445566778899aabbccddeeff";
        let salt = salt_bytes(salt_hex).unwrap();
        assert_eq!(b64(&salt), "ABEiM0RVZneImaq7zN3u/w==");
        let p = crate::crypto::verifier(salt_hex, "Pässwört9X");
        let (stored, server) = ScramCredentials::derive(&p, &salt, 4096).encoded_keys();
        assert_eq!(stored, "cw2D1j4aUta95Op0yn3Qjbc9g/89h7giVtDNO0hqNUg=");
        assert_eq!(server, "GT1rB19y1AC1yJP3URk+pGedIV8zv0rV1WFFyRXwCIo=");
    }

    #[test]
    fn rows_out_of_range_or_corrupt_are_unusable() {
        let k = "e4B7Cx7dSagxfLPK4vkQOwAGI5gmzbp+Vb8PS1e+2pk=";
        assert!(ScramCredentials::from_row(4096, k, k).is_some());
        assert!(ScramCredentials::from_row(10_000_000, k, k).is_some());
        assert!(ScramCredentials::from_row(4095, k, k).is_none());
        assert!(ScramCredentials::from_row(10_000_001, k, k).is_none());
        assert!(ScramCredentials::from_row(-1, k, k).is_none());
        assert!(ScramCredentials::from_row(1 << 40, k, k).is_none());
        assert!(ScramCredentials::from_row(4096, "e4B7", k).is_none());
        // Not canonical: the last character's unused bits are not zero.
        assert!(ScramCredentials::from_row(
            4096,
            k,
            "e4B7Cx7dSagxfLPK4vkQOwAGI5gmzbp+Vb8PS1e+2pl="
        )
        .is_none());
    }

    #[test]
    fn salt_must_be_lowercase_hex() {
        assert!(salt_bytes("6d5da35ec7a5497e9b96ce8e88562747").is_some());
        assert!(salt_bytes("6D5DA35EC7A5497E9B96CE8E88562747").is_none());
        assert!(salt_bytes("6d5d").is_none());
        assert!(salt_bytes("").is_none());
    }
}
