//! The four SCRAM messages of this protocol's profile of RFC 5802 section 7:
//! parsing (server side: client-first and client-final; client side:
//! server-first and server-final) and formatting.
//!
//! Messages are taken exactly as sent: nothing is trimmed, matching is
//! case-sensitive and base64 must be canonical. The server's checks run in the
//! spec's order ("Server checks"), and the first failing check decides the
//! [`ScramError`], which is the `e=` reply.

use super::keys::{decode_key, iterations_in_range, Key, SALT_LEN};
use crate::config::{SCRAM_C_NONCE_MAX_CHARS, SCRAM_NONCE_BYTES};
use crate::protocol::scram_error;
use crate::rules::Username;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use std::fmt;

/// Why the server refuses a message: the `e=` value of `__scram_final__:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramError {
    InvalidEncoding,
    ChannelBindingNotSupported,
    ExtensionsNotSupported,
    InvalidUsernameEncoding,
    ChannelBindingsDontMatch,
    InvalidProof,
    OtherError,
}

impl ScramError {
    /// The word after `e=`.
    pub fn code(self) -> &'static str {
        match self {
            ScramError::InvalidEncoding => scram_error::INVALID_ENCODING,
            ScramError::ChannelBindingNotSupported => scram_error::CHANNEL_BINDING_NOT_SUPPORTED,
            ScramError::ExtensionsNotSupported => scram_error::EXTENSIONS_NOT_SUPPORTED,
            ScramError::InvalidUsernameEncoding => scram_error::INVALID_USERNAME_ENCODING,
            ScramError::ChannelBindingsDontMatch => scram_error::CHANNEL_BINDINGS_DONT_MATCH,
            ScramError::InvalidProof => scram_error::INVALID_PROOF,
            ScramError::OtherError => scram_error::OTHER_ERROR,
        }
    }
}

impl fmt::Display for ScramError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// `printable = %x21-2B / %x2D-7E`: printable ASCII except `,`.
fn is_printable(b: u8) -> bool {
    matches!(b, 0x21..=0x2B | 0x2D..=0x7E)
}

fn is_printable_str(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_printable)
}

/// `extension = ALPHA "=" 1*value-char` (value-char: anything but `,` and NUL;
/// the fields are already split at `,`).
fn is_extension(field: &str) -> bool {
    let b = field.as_bytes();
    b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b'=' && !b[2..].contains(&0)
}

/// `n=` value: `,` is written `=2C` and `=` is `=3D`.
pub fn escape_saslname(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// The name an escaped `saslname` stands for; `None` if a `=` is not followed
/// by `2C` or `3D`.
fn unescape_saslname(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix("2C") {
            out.push(',');
            rest = tail;
        } else if let Some(tail) = after.strip_prefix("3D") {
            out.push('=');
            rest = tail;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

/// A fresh nonce: [`SCRAM_NONCE_BYTES`] bytes from the OS CSPRNG in base64
/// (24 characters, all printable).
pub fn new_nonce() -> String {
    let mut bytes = [0u8; SCRAM_NONCE_BYTES];
    getrandom::fill(&mut bytes).expect("the operating system's random generator failed");
    B64.encode(bytes)
}

/// A client-first-message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst<'a> {
    /// `n,,` or `y,,`: what `c=` must be the base64 of.
    pub gs2_header: &'a str,
    pub username: Username,
    pub nonce: &'a str,
    /// client-first-bare, extensions included: the start of the AuthMessage.
    pub bare: &'a str,
}

/// Parses a client-first-message, checks 1 to 9 of the spec in order.
pub fn parse_client_first(msg: &str) -> Result<ClientFirst<'_>, ScramError> {
    let fields: Vec<&str> = msg.split(',').collect();
    if fields.len() < 4 {
        return Err(ScramError::InvalidEncoding);
    }
    let (flag, authzid, name_field, nonce_field) = (fields[0], fields[1], fields[2], fields[3]);
    if flag.starts_with("p=") {
        return Err(ScramError::ChannelBindingNotSupported);
    }
    if flag != "n" && flag != "y" {
        return Err(ScramError::InvalidEncoding);
    }
    if !authzid.is_empty() {
        return Err(match authzid.starts_with("a=") {
            true => ScramError::OtherError,
            false => ScramError::InvalidEncoding,
        });
    }
    if name_field.starts_with("m=") {
        return Err(ScramError::ExtensionsNotSupported);
    }
    let escaped = name_field
        .strip_prefix("n=")
        .ok_or(ScramError::InvalidEncoding)?;
    let name = unescape_saslname(escaped).ok_or(ScramError::InvalidUsernameEncoding)?;
    let username = Username::parse(&name).map_err(|_| ScramError::InvalidUsernameEncoding)?;
    let nonce = nonce_field
        .strip_prefix("r=")
        .filter(|n| is_printable_str(n) && n.len() <= SCRAM_C_NONCE_MAX_CHARS)
        .ok_or(ScramError::InvalidEncoding)?;
    if !fields[4..].iter().all(|f| is_extension(f)) {
        return Err(ScramError::InvalidEncoding);
    }
    let gs2_len = flag.len() + 1 + authzid.len() + 1;
    Ok(ClientFirst {
        gs2_header: &msg[..gs2_len],
        username,
        nonce,
        bare: &msg[gs2_len..],
    })
}

/// `n,,n=<name>,r=<c-nonce>`: what our clients send.
pub fn format_client_first(name: &str, c_nonce: &str) -> String {
    format!("n,,n={},r={c_nonce}", escape_saslname(name))
}

/// The gs2 header our clients send (no channel binding, no authzid).
pub const CLIENT_GS2_HEADER: &str = "n,,";

/// `r=<c-nonce><s-nonce>,s=<salt>,i=<iterations>`.
pub fn format_server_first(nonce: &str, salt: &[u8], iterations: u32) -> String {
    format!("r={nonce},s={},i={iterations}", B64.encode(salt))
}

/// A client-final-message the server accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFinal<'a> {
    /// Up to, not including, the last `,p=`: the end of the AuthMessage.
    pub without_proof: &'a str,
    pub proof: Key,
}

/// Parses a client-final-message, checks 11 to 13 of the spec in order.
pub fn parse_client_final<'a>(
    msg: &'a str,
    gs2_header: &str,
    nonce: &str,
) -> Result<ClientFinal<'a>, ScramError> {
    let fields: Vec<&str> = msg.split(',').collect();
    if fields.len() < 3 {
        return Err(ScramError::InvalidEncoding);
    }
    let last = fields[fields.len() - 1];
    let cbind = fields[0]
        .strip_prefix("c=")
        .and_then(|c| B64.decode(c).ok())
        .ok_or(ScramError::InvalidEncoding)?;
    let given_nonce = fields[1]
        .strip_prefix("r=")
        .filter(|r| is_printable_str(r))
        .ok_or(ScramError::InvalidEncoding)?;
    if !fields[2..fields.len() - 1].iter().all(|f| is_extension(f)) {
        return Err(ScramError::InvalidEncoding);
    }
    let proof = last
        .strip_prefix("p=")
        .and_then(decode_key)
        .ok_or(ScramError::InvalidEncoding)?;
    if cbind != gs2_header.as_bytes() {
        return Err(ScramError::ChannelBindingsDontMatch);
    }
    if given_nonce != nonce {
        return Err(ScramError::OtherError);
    }
    Ok(ClientFinal {
        without_proof: &msg[..msg.len() - last.len() - 1],
        proof,
    })
}

/// `c=<base64(gs2 header)>,r=<nonce>`: the client-final-message without proof.
pub fn format_client_final_without_proof(gs2_header: &str, nonce: &str) -> String {
    format!("c={},r={nonce}", B64.encode(gs2_header))
}

/// Appends `,p=<proof>` to the client-final-message without proof.
pub fn format_client_final(without_proof: &str, proof: &Key) -> String {
    format!("{without_proof},p={}", B64.encode(proof))
}

/// `client-first-bare "," server-first "," client-final-without-proof`.
pub fn auth_message(client_first_bare: &str, server_first: &str, without_proof: &str) -> String {
    format!("{client_first_bare},{server_first},{without_proof}")
}

/// `v=<base64 ServerSignature>`.
pub fn format_server_final_ok(signature: &Key) -> String {
    format!("v={}", B64.encode(signature))
}

/// `e=<error>`.
pub fn format_server_final_error(error: ScramError) -> String {
    format!("e={}", error.code())
}

/// A server-first-message the client accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFirst<'a> {
    /// The whole nonce (`c-nonce s-nonce`), echoed in the client-final.
    pub nonce: &'a str,
    pub salt: [u8; SALT_LEN],
    pub iterations: u32,
}

/// Why a client refuses a server-first-message (it then closes the connection
/// without replying and exits with code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChallengeRefusal {
    Malformed(&'static str),
    MandatoryExtension,
    NonceMismatch,
    /// Fewer than 4096 iterations: a downgrade.
    TooFewIterations(String),
    /// More than 10,000,000: a client-side denial of service.
    TooManyIterations(String),
}

impl fmt::Display for ChallengeRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChallengeRefusal::Malformed(what) => write!(f, "malformed SCRAM challenge: {what}"),
            ChallengeRefusal::MandatoryExtension => {
                f.write_str("the server demands a SCRAM extension (m=) this client does not know")
            }
            ChallengeRefusal::NonceMismatch => f.write_str(
                "the server's nonce does not extend this client's nonce (possible replay or impostor)",
            ),
            ChallengeRefusal::TooFewIterations(i) => write!(
                f,
                "the server asks for {i} PBKDF2 iterations, below the minimum of 4096 (a downgrade): refused"
            ),
            ChallengeRefusal::TooManyIterations(i) => write!(
                f,
                "the server asks for {i} PBKDF2 iterations, above the maximum of 10000000 (it would tie up this machine): refused"
            ),
        }
    }
}

/// Checks a server-first-message as the client rules say: `r=` extends our
/// nonce, no `m=`, a 16-byte salt, 4096 <= i <= 10,000,000.
pub fn parse_server_first<'a>(
    msg: &'a str,
    c_nonce: &str,
) -> Result<ServerFirst<'a>, ChallengeRefusal> {
    use ChallengeRefusal::*;
    let fields: Vec<&str> = msg.split(',').collect();
    if fields[0].starts_with("m=") {
        return Err(MandatoryExtension);
    }
    if fields.len() < 3 {
        return Err(Malformed("expected r=, s= and i="));
    }
    let nonce = fields[0]
        .strip_prefix("r=")
        .ok_or(Malformed("r= is missing"))?;
    if !nonce.starts_with(c_nonce) || nonce.len() <= c_nonce.len() || !is_printable_str(nonce) {
        return Err(NonceMismatch);
    }
    let salt = fields[1]
        .strip_prefix("s=")
        .and_then(|s| B64.decode(s).ok())
        .and_then(|s| <[u8; SALT_LEN]>::try_from(s).ok())
        .ok_or(Malformed("s= is not base64 of 16 bytes"))?;
    let count = fields[2]
        .strip_prefix("i=")
        .filter(|i| {
            i.bytes().all(|b| b.is_ascii_digit()) && i.bytes().next().is_some_and(|b| b != b'0')
        })
        .ok_or(Malformed("i= is not a decimal number"))?;
    if !fields[3..].iter().all(|f| is_extension(f)) {
        return Err(Malformed("an extension is malformed"));
    }
    let shown: String = count.chars().take(24).collect();
    let iterations = match count.parse::<u64>() {
        Ok(i) if i < u64::from(crate::config::SCRAM_MIN_ITERATIONS) => {
            return Err(TooFewIterations(shown))
        }
        Ok(i) => u32::try_from(i)
            .ok()
            .filter(|i| iterations_in_range(*i))
            .ok_or(TooManyIterations(shown))?,
        Err(_) => return Err(TooManyIterations(shown)),
    };
    Ok(ServerFirst {
        nonce,
        salt,
        iterations,
    })
}

/// What the server's last SCRAM line says, as the client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerFinal {
    /// `v=` with a well-formed 32-byte signature (still to be checked).
    Signature(Key),
    /// `e=<error>`.
    Error(String),
    /// Neither: treated as a wrong signature.
    Malformed,
}

pub fn parse_server_final(msg: &str) -> ServerFinal {
    if let Some(e) = msg.strip_prefix("e=") {
        return ServerFinal::Error(e.to_string());
    }
    match msg.strip_prefix("v=").and_then(decode_key) {
        Some(sig) => ServerFinal::Signature(sig),
        None => ServerFinal::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ScramError::*;

    fn first(msg: &str) -> Result<String, ScramError> {
        parse_client_first(msg).map(|f| f.username.to_string())
    }

    #[test]
    fn client_first_accepts_the_spec_forms() {
        let f = parse_client_first("n,,n=demo,r=Y2xpZW50LW5vbmNlLWRlbW8x").unwrap();
        assert_eq!(f.gs2_header, "n,,");
        assert_eq!(f.username.as_str(), "demo");
        assert_eq!(f.nonce, "Y2xpZW50LW5vbmNlLWRlbW8x");
        assert_eq!(f.bare, "n=demo,r=Y2xpZW50LW5vbmNlLWRlbW8x");
        let y = parse_client_first("y,,n=demo,r=abc,x=ext,Z=more").unwrap();
        assert_eq!(y.gs2_header, "y,,");
        assert_eq!(y.bare, "n=demo,r=abc,x=ext,Z=more");
        let long_nonce = "x".repeat(255);
        assert!(parse_client_first(&format!("n,,n=a,r={long_nonce}")).is_ok());
    }

    #[test]
    fn client_first_checks_in_the_spec_order() {
        // Row 1.
        assert_eq!(first(""), Err(InvalidEncoding));
        assert_eq!(first("n,,n=demo"), Err(InvalidEncoding));
        assert_eq!(first("p=tls-unique,,n=demo"), Err(InvalidEncoding));
        // Row 2 before 3 and later rows.
        assert_eq!(
            first("p=tls-unique,,n=demo,r=x"),
            Err(ChannelBindingNotSupported)
        );
        assert_eq!(first("p=x,a=b,m=q,r=x"), Err(ChannelBindingNotSupported));
        // Row 3.
        for flag in ["N", " n", "x", "n ", "", "yy"] {
            assert_eq!(
                first(&format!("{flag},,n=demo,r=x")),
                Err(InvalidEncoding),
                "{flag:?}"
            );
        }
        // Row 4.
        assert_eq!(first("n,a=admin,n=demo,r=x"), Err(OtherError));
        assert_eq!(first("n,b=admin,n=demo,r=x"), Err(InvalidEncoding));
        assert_eq!(first("n,a=admin,m=x,r=x"), Err(OtherError));
        // Row 5, 6.
        assert_eq!(first("n,,m=ext,n=demo,r=x"), Err(ExtensionsNotSupported));
        assert_eq!(first("n,,r=x,n=demo"), Err(InvalidEncoding));
        assert_eq!(first("n,,N=demo,r=x"), Err(InvalidEncoding));
        // Row 7.
        for name in [
            "",
            "a=2c",
            "a=",
            "a=41",
            "bad name",
            "a__b",
            &"a".repeat(33),
            "Ä",
            "a=2Cb",
            "a=3Db",
        ] {
            assert_eq!(
                first(&format!("n,,n={name},r=x")),
                Err(InvalidUsernameEncoding),
                "{name:?}"
            );
        }
        // Row 7 before 8.
        assert_eq!(first("n,,n=,r="), Err(InvalidUsernameEncoding));
        // Row 8.
        for r in [
            "r=",
            "x=abc",
            "R=abc",
            "r=a b",
            "r=\u{e9}",
            &format!("r={}", "x".repeat(256)),
        ] {
            assert_eq!(
                first(&format!("n,,n=demo,{r}")),
                Err(InvalidEncoding),
                "{r:?}"
            );
        }
        // Row 9.
        for ext in ["", "x", "x=", "1=a", "xy=a", "=a", "x=a\0"] {
            assert_eq!(
                first(&format!("n,,n=demo,r=abc,{ext}")),
                Err(InvalidEncoding),
                "{ext:?}"
            );
        }
    }

    #[test]
    fn saslname_escapes_round_trip() {
        assert_eq!(escape_saslname("a,b=c"), "a=2Cb=3Dc");
        assert_eq!(unescape_saslname("a=2Cb=3Dc").as_deref(), Some("a,b=c"));
        assert_eq!(unescape_saslname("a=2c"), None);
        assert_eq!(unescape_saslname("a="), None);
        assert_eq!(unescape_saslname("=3").as_deref(), None);
        assert_eq!(format_client_first("demo", "abc"), "n,,n=demo,r=abc");
    }

    const NONCE: &str = "Y2xpZW50LW5vbmNlLWRlbW8xc2VydmVyLW5vbmNlLWRlbW8x";
    const PROOF: &str = "IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o=";

    fn fin(msg: &str) -> Result<String, ScramError> {
        parse_client_final(msg, "n,,", NONCE).map(|f| f.without_proof.to_string())
    }

    #[test]
    fn client_final_accepts_the_vector_and_extensions() {
        let msg = format!("c=biws,r={NONCE},p={PROOF}");
        let f = parse_client_final(&msg, "n,,", NONCE).unwrap();
        assert_eq!(f.without_proof, format!("c=biws,r={NONCE}"));
        assert_eq!(B64.encode(f.proof), PROOF);
        assert_eq!(
            fin(&format!("c=biws,r={NONCE},x=1,p={PROOF}")),
            Ok(format!("c=biws,r={NONCE},x=1"))
        );
        let y = format!("c=eSws,r={NONCE},p={PROOF}");
        assert!(parse_client_final(&y, "y,,", NONCE).is_ok());
    }

    #[test]
    fn client_final_checks_in_the_spec_order() {
        // Row 11.
        for msg in [
            String::new(),
            format!("c=biws,r={NONCE}"),
            format!("r={NONCE},c=biws,p={PROOF}"),
            format!("c=biws,p={PROOF},r={NONCE}"),
            format!("c=bi,r={NONCE},p={PROOF}"),
            format!("c=biws,r=,p={PROOF}"),
            format!("c=biws,r={NONCE} ,p={PROOF}"),
            format!("c=biws,r={NONCE},p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5p="),
            format!("c=biws,r={NONCE},p=IxadUB227scOGPbbTpWdV3bUWUR5Q1rScifc/+Acm5o"),
            format!("c=biws,r={NONCE},p=AAAA"),
            format!("c=biws,r={NONCE},1=x,p={PROOF}"),
            format!("c=biws,r={NONCE},p={PROOF},"),
            format!(" c=biws,r={NONCE},p={PROOF}"),
        ] {
            assert_eq!(fin(&msg), Err(InvalidEncoding), "{msg:?}");
        }
        // Row 12 (before 13).
        assert_eq!(
            fin(&format!("c=eSws,r={NONCE},p={PROOF}")),
            Err(ChannelBindingsDontMatch)
        );
        assert_eq!(
            fin(&format!("c=eSws,r=other,p={PROOF}")),
            Err(ChannelBindingsDontMatch)
        );
        assert_eq!(
            fin(&format!("c=,r={NONCE},p={PROOF}")),
            Err(ChannelBindingsDontMatch)
        );
        // Row 13.
        assert_eq!(
            fin(&format!("c=biws,r={NONCE}x,p={PROOF}")),
            Err(OtherError)
        );
        assert_eq!(fin(&format!("c=biws,r=Y2xp,p={PROOF}")), Err(OtherError));
    }

    #[test]
    fn server_first_is_checked_by_the_client() {
        let c = "Y2xpZW50LW5vbmNlLWRlbW8x";
        let ok = format!("r={NONCE},s=bV2jXselSX6bls6OiFYnRw==,i=4096");
        let f = parse_server_first(&ok, c).unwrap();
        assert_eq!((f.nonce, f.iterations), (NONCE, 4096));
        assert_eq!(hex::encode(f.salt), "6d5da35ec7a5497e9b96ce8e88562747");
        assert_eq!(format_server_first(NONCE, &f.salt, 4096), ok);
        let s = "s=bV2jXselSX6bls6OiFYnRw==";
        let refused = |m: &str| parse_server_first(m, c).unwrap_err();
        assert!(matches!(
            refused(&format!("r={NONCE},{s},i=4095")),
            ChallengeRefusal::TooFewIterations(_)
        ));
        assert!(matches!(
            refused(&format!("r={NONCE},{s},i=10000001")),
            ChallengeRefusal::TooManyIterations(_)
        ));
        assert!(matches!(
            refused(&format!("r={NONCE},{s},i=99999999999999999999999")),
            ChallengeRefusal::TooManyIterations(_)
        ));
        assert!(parse_server_first(&format!("r={NONCE},{s},i=10000000"), c).is_ok());
        assert_eq!(
            refused(&format!("m=x,r={NONCE},{s},i=4096")),
            ChallengeRefusal::MandatoryExtension
        );
        assert_eq!(
            refused(&format!("r={c},{s},i=4096")),
            ChallengeRefusal::NonceMismatch
        );
        assert_eq!(
            refused(&format!("r=X{NONCE},{s},i=4096")),
            ChallengeRefusal::NonceMismatch
        );
        assert!(matches!(
            refused(&format!("r={NONCE},s=AAAA,i=4096")),
            ChallengeRefusal::Malformed(_)
        ));
        assert!(matches!(
            refused(&format!("r={NONCE},{s},i=04096")),
            ChallengeRefusal::Malformed(_)
        ));
        assert!(matches!(
            refused(&format!("r={NONCE},{s},i=-1")),
            ChallengeRefusal::Malformed(_)
        ));
        assert!(matches!(refused(""), ChallengeRefusal::Malformed(_)));
    }

    #[test]
    fn server_final_forms() {
        assert_eq!(
            parse_server_final("e=invalid-proof"),
            ServerFinal::Error("invalid-proof".into())
        );
        assert!(matches!(
            parse_server_final("v=rLeeLTzSXh5lPwmSs3AUi0mFO3UOKAu8F+9h3QBvun4="),
            ServerFinal::Signature(_)
        ));
        assert_eq!(parse_server_final("v=abc"), ServerFinal::Malformed);
        assert_eq!(parse_server_final(""), ServerFinal::Malformed);
        assert_eq!(format_server_final_error(InvalidProof), "e=invalid-proof");
    }

    #[test]
    fn the_longest_server_line_stays_under_400_bytes() {
        // Ours: a 24-character s-nonce. The spec's bound: one of 64.
        let c_nonce = "x".repeat(SCRAM_C_NONCE_MAX_CHARS);
        for (s_nonce, want) in [(new_nonce(), 339), ("y".repeat(64), 379)] {
            let first = format_server_first(
                &format!("{c_nonce}{s_nonce}"),
                &[0xff; SALT_LEN],
                10_000_000,
            );
            assert_eq!(format!("__scram_challenge__:{first}").len(), want);
        }
    }

    #[test]
    fn nonces_are_24_printable_characters() {
        let a = new_nonce();
        assert_eq!(a.len(), 24);
        assert!(is_printable_str(&a));
        assert_ne!(a, new_nonce());
    }
}
