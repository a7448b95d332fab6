//! SCRAM-SHA-256 (RFC 5802 messages, RFC 7677 hash), as `../shared/protocol-scram.md`
//! profiles it: what the server and the client both use.
//!
//! - [`message`]: parsing and formatting of the four messages; every malformed
//!   input is a [`ScramError`] (the `e=` reply), never a panic.
//! - [`keys`]: the key derivation on the classic verifier (the SCRAM password is
//!   `P = hex(SHA-256(salt_hex || password))`), proofs and signatures, and the
//!   stored credentials (`StoredKey`, `ServerKey`; never the salted password).
//! - [`migrate`]: the offline upgrade of an existing database (`migrate-scram`).

pub mod keys;
pub mod message;
pub mod migrate;

pub use keys::{ScramCredentials, KEY_LEN, SALT_LEN};
pub use message::ScramError;
