//! The PROXY protocol (HAProxy's, v1 text and v2 binary): a load balancer in
//! front of the server tells it the client's real address.
//!
//! Only a peer inside one of the `--trusted-proxy` networks ([`TrustedProxies`],
//! [`Cidr`]) may do so, and from such a peer the header is mandatory: the first
//! bytes must be a well-formed header, else the connection is closed (and the
//! reason logged, rate-limited). From any other peer nothing is looked for: a
//! `PROXY ...` line is an ordinary reply (`Unrecognized type` at the menu) and
//! can never set an address.
//!
//! Where the header is read, and why the per-address slot is claimed there:
//! the accept loop never reads a byte (it must be back in `accept` within
//! microseconds, see `server.rs`), so for a trusted peer it claims only a
//! global session slot. The session thread reads the header with the login
//! timeout as its deadline ([`read_header`]), and only then claims the
//! per-address slot, for the real client address: claimed in the accept loop,
//! it would count every client behind the proxy as one address, and the proxy
//! would hit the per-address cap at once. The throttle, the logs and the cap
//! all see the address from the header.
//!
//! Parsing is bounded and never panics: a v1 header is at most
//! [`PROXY_V1_MAX_BYTES`] bytes with a strict grammar (one space between
//! fields, ports without leading zeros, addresses of the family named); a v2
//! header at most [`PROXY_V2_MAX_PAYLOAD`] bytes after its 16-byte prefix.
//! `UNKNOWN` (v1) and `LOCAL` or an unsupported family (v2), which a proxy
//! sends for its own health checks, keep the connection's own address, as the
//! specification asks.

use std::fmt;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::str::FromStr;
use std::time::Instant;

/// The longest v1 header line, CRLF included (the
/// specification's own bound).
pub const PROXY_V1_MAX_BYTES: usize = 107;
/// The longest v2 payload (addresses and TLVs) accepted after
/// the 16-byte prefix; the addresses take at most 216, a proxy's usual TLVs a
/// few dozen more.
pub const PROXY_V2_MAX_PAYLOAD: usize = 1024;

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `::1/128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address, host bits cleared.
    net: IpAddr,
    prefix: u8,
}

/// A `--trusted-proxy` value that is not a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadCidr(String);

impl fmt::Display for BadCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not an address or network (e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8)",
            self.0
        )
    }
}

impl std::error::Error for BadCidr {}

impl Cidr {
    /// The network of `addr` with `prefix` bits (host bits cleared).
    pub fn new(addr: IpAddr, prefix: u8) -> Option<Cidr> {
        match canonical(addr) {
            IpAddr::V4(v4) if prefix <= 32 => {
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Some(Cidr {
                    net: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    prefix,
                })
            }
            IpAddr::V6(v6) if prefix <= 128 => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Some(Cidr {
                    net: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix,
                })
            }
            _ => None,
        }
    }

    /// Whether `ip` is inside (an IPv4-mapped IPv6 address counts as its IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Cidr::new(ip, self.prefix) == Some(*self)
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl FromStr for Cidr {
    type Err = BadCidr;

    /// `ADDRESS/PREFIX`, or a bare address (the one host).
    fn from_str(s: &str) -> Result<Cidr, BadCidr> {
        let bad = || BadCidr(s.to_string());
        let text = s.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => {
                // Decimal digits only: no sign, no spaces, no leading zeros.
                if prefix.is_empty()
                    || prefix.len() > 3
                    || !prefix.bytes().all(|b| b.is_ascii_digit())
                    || (prefix.len() > 1 && prefix.starts_with('0'))
                {
                    return Err(bad());
                }
                (addr, Some(prefix.parse::<u8>().map_err(|_| bad())?))
            }
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let prefix = prefix.unwrap_or(match canonical(addr) {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        });
        Cidr::new(addr, prefix).ok_or_else(bad)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

/// The networks whose peers must, and alone may, send a PROXY header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(networks: Vec<Cidr>) -> Self {
        TrustedProxies(networks)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a well-formed header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The client's address and port, as the proxy saw them.
    Client(SocketAddr),
    /// The proxy speaks for itself (v1 `UNKNOWN`, v2 `LOCAL` or an unsupported
    /// family): keep the connection's own address.
    Local,
}

/// Why a trusted peer's connection is closed.
#[derive(Debug, PartialEq, Eq)]
pub enum ProxyError {
    /// The first bytes are no PROXY header (v1 or v2 signature).
    Absent,
    /// A header, but broken (what is wrong with it).
    Malformed(&'static str),
    /// The peer closed before a whole header.
    Closed,
    /// No whole header before the deadline.
    TimedOut,
    /// The socket failed (the error's text).
    Io(String),
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::Absent => write!(f, "no PROXY header from a trusted proxy"),
            ProxyError::Malformed(why) => write!(f, "malformed PROXY header: {why}"),
            ProxyError::Closed => write!(f, "closed before a whole PROXY header"),
            ProxyError::TimedOut => write!(f, "no whole PROXY header in time"),
            ProxyError::Io(e) => write!(f, "reading the PROXY header: {e}"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
const V1_PREFIX: &[u8] = b"PROXY ";

/// Parses one v1 line, `\r\n` included (at most [`PROXY_V1_MAX_BYTES`]).
pub fn parse_v1(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    use ProxyError::Malformed;
    if line.len() > PROXY_V1_MAX_BYTES {
        return Err(Malformed("longer than 107 bytes"));
    }
    let body = line
        .strip_suffix(b"\r\n")
        .ok_or(Malformed("not ended by CRLF"))?;
    let body = body.strip_prefix(V1_PREFIX).ok_or(ProxyError::Absent)?;
    let body = std::str::from_utf8(body).map_err(|_| Malformed("not ASCII"))?;
    if !body.is_ascii() || body.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(Malformed("not ASCII"));
    }
    if body == "UNKNOWN" || body.starts_with("UNKNOWN ") {
        return Ok(ProxyHeader::Local);
    }
    let fields: Vec<&str> = body.split(' ').collect();
    let [family, src, dst, sport, dport] = fields[..] else {
        return Err(Malformed("not PROTOCOL SRC DST SPORT DPORT"));
    };
    let src: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| Malformed("bad IPv4 source"))?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| Malformed("bad IPv6 source"))?),
        _ => return Err(Malformed("protocol not TCP4, TCP6 or UNKNOWN")),
    };
    let dst_ok = match family {
        "TCP4" => dst.parse::<Ipv4Addr>().is_ok(),
        _ => dst.parse::<Ipv6Addr>().is_ok(),
    };
    if !dst_ok {
        return Err(Malformed("bad destination address"));
    }
    let sport = parse_port(sport).ok_or(Malformed("bad source port"))?;
    parse_port(dport).ok_or(Malformed("bad destination port"))?;
    Ok(ProxyHeader::Client(SocketAddr::new(src, sport)))
}

/// A decimal port, 0 to 65535, without sign or leading zeros.
fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if s.len() > 1 && s.starts_with('0') {
        return None;
    }
    s.parse().ok()
}

/// Parses a v2 header's fixed part (the 16 bytes after which `len` more
/// follow): the version and command byte, the family, the length.
fn parse_v2_prefix(prefix: &[u8; 16]) -> Result<usize, ProxyError> {
    if prefix[..12] != V2_SIGNATURE {
        return Err(ProxyError::Absent);
    }
    if prefix[12] >> 4 != 2 {
        return Err(ProxyError::Malformed("v2 signature with another version"));
    }
    if prefix[12] & 0x0f > 1 {
        return Err(ProxyError::Malformed("v2 command neither LOCAL nor PROXY"));
    }
    let len = usize::from(u16::from_be_bytes([prefix[14], prefix[15]]));
    if len > PROXY_V2_MAX_PAYLOAD {
        return Err(ProxyError::Malformed("v2 header too long"));
    }
    Ok(len)
}

/// Parses a whole v2 header (16-byte prefix and its payload).
pub fn parse_v2(header: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let prefix: &[u8; 16] = header
        .get(..16)
        .and_then(|p| p.try_into().ok())
        .ok_or(ProxyError::Malformed("v2 header shorter than 16 bytes"))?;
    let len = parse_v2_prefix(prefix)?;
    let payload = &header[16..];
    if payload.len() != len {
        return Err(ProxyError::Malformed("v2 length differs from the payload"));
    }
    if prefix[12] & 0x0f == 0 {
        return Ok(ProxyHeader::Local);
    }
    match prefix[13] {
        // TCP over IPv4: src addr, dst addr, src port, dst port.
        0x11 => {
            let a = payload
                .get(..12)
                .ok_or(ProxyError::Malformed("v2 IPv4 addresses cut short"))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Ok(ProxyHeader::Client(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6.
        0x21 => {
            let a = payload
                .get(..36)
                .ok_or(ProxyError::Malformed("v2 IPv6 addresses cut short"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(ProxyHeader::Client(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        // UNSPEC, UDP, UNIX: the specification says to keep the real address.
        _ => Ok(ProxyHeader::Local),
    }
}

/// Reads one header (v1 or v2) from the start of `sock`, by `deadline`,
/// consuming exactly its bytes and no more, so the session reads what follows.
/// The socket's receive timeout is left cleared.
pub fn read_header(sock: &TcpStream, deadline: Instant) -> Result<ProxyHeader, ProxyError> {
    let result = read_header_inner(sock, deadline);
    let _ = sock.set_read_timeout(None);
    result
}

fn read_header_inner(sock: &TcpStream, deadline: Instant) -> Result<ProxyHeader, ProxyError> {
    let mut reader = DeadlineReader { sock, deadline };
    let mut first = [0u8; 1];
    reader.peek(&mut first)?;
    match first[0] {
        b'P' => parse_v1(&read_v1_line(&mut reader)?),
        b'\r' => {
            let mut header = vec![0u8; 16];
            reader.read_exact(&mut header)?;
            let prefix: [u8; 16] = header[..16].try_into().expect("16 bytes");
            let len = parse_v2_prefix(&prefix)?;
            header.resize(16 + len, 0);
            reader.read_exact(&mut header[16..])?;
            parse_v2(&header)
        }
        _ => Err(ProxyError::Absent),
    }
}

/// The v1 line, up to and including its LF, and not a byte more (what
/// follows is the session's). Peeks at what has arrived and consumes up to
/// the LF, or all of it when there is no LF yet (it is all header then):
/// usually one peek and one read, not a read per byte.
fn read_v1_line(reader: &mut DeadlineReader<'_>) -> Result<Vec<u8>, ProxyError> {
    let mut line = Vec::with_capacity(PROXY_V1_MAX_BYTES);
    let mut buf = [0u8; PROXY_V1_MAX_BYTES];
    loop {
        let room = PROXY_V1_MAX_BYTES - line.len();
        if room == 0 {
            return Err(if line.starts_with(V1_PREFIX) {
                ProxyError::Malformed("longer than 107 bytes")
            } else {
                ProxyError::Absent
            });
        }
        let seen = reader.peek(&mut buf[..room])?;
        let (take, done) = match buf[..seen].iter().position(|&b| b == b'\n') {
            Some(lf) => (lf + 1, true),
            None => (seen, false),
        };
        reader.read_exact(&mut buf[..take])?;
        line.extend_from_slice(&buf[..take]);
        let checked = line.len().min(V1_PREFIX.len());
        if line[..checked] != V1_PREFIX[..checked] {
            return Err(ProxyError::Absent);
        }
        if done {
            return Ok(line);
        }
    }
}

/// Reads from a socket, each read bounded by the time left to a deadline.
struct DeadlineReader<'a> {
    sock: &'a TcpStream,
    deadline: Instant,
}

impl DeadlineReader<'_> {
    /// Arms the socket's receive timeout with the time left.
    fn arm(&self) -> Result<(), ProxyError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ProxyError::TimedOut);
        }
        self.sock
            .set_read_timeout(Some(left))
            .map_err(|e| ProxyError::Io(e.to_string()))
    }

    /// At least one byte that has arrived, left unread; `Closed` at the end.
    fn peek(&self, buf: &mut [u8]) -> Result<usize, ProxyError> {
        loop {
            self.arm()?;
            match self.sock.peek(buf) {
                Ok(0) => return Err(ProxyError::Closed),
                Ok(n) => return Ok(n),
                Err(e) => match classify(e) {
                    Some(err) => return Err(err),
                    None => continue,
                },
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ProxyError> {
        let mut filled = 0;
        while filled < buf.len() {
            self.arm()?;
            match (&mut &*self.sock).read(&mut buf[filled..]) {
                Ok(0) => return Err(ProxyError::Closed),
                Ok(n) => filled += n,
                Err(e) => {
                    if let Some(err) = classify(e) {
                        return Err(err);
                    }
                }
            }
        }
        Ok(())
    }
}

/// A failed read as the error to return, or `None` to try again (interrupted).
fn classify(e: io::Error) -> Option<ProxyError> {
    match e.kind() {
        io::ErrorKind::Interrupted => None,
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Some(ProxyError::TimedOut),
        _ => Some(ProxyError::Io(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: [u8; 4], port: u16) -> ProxyHeader {
        ProxyHeader::Client(SocketAddr::new(IpAddr::from(a), port))
    }

    #[test]
    fn cidrs_parse_and_match() {
        let net: Cidr = "10.1.2.3/8".parse().unwrap();
        assert_eq!(net.to_string(), "10.0.0.0/8");
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.0.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains("127.0.0.2".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        let v6: Cidr = "fd00::1/8".parse().unwrap();
        assert_eq!(v6.to_string(), "fd00::/8");
        assert!(v6.contains("fdff::9".parse().unwrap()));
        assert!(!v6.contains("fe00::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        let mapped: Cidr = "::ffff:192.168.0.0/16".parse().unwrap();
        assert_eq!(mapped.to_string(), "192.168.0.0/16");
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/08",
            "10.0.0.0/+8",
            "10.0.0/8",
            "host/8",
            "10.0.0.0/8/8",
            "/8",
            "10.0.0.0 /8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn v1_headers_parse() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7886\r\n"),
            Ok(v4([192, 0, 2, 7], 56324))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::7 ::1 0 65535\r\n"),
            Ok(ProxyHeader::Client("[2001:db8::7]:0".parse().unwrap()))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(ProxyHeader::Local));
        assert_eq!(
            parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"),
            Ok(ProxyHeader::Local)
        );
        // The longest legal line is 107 bytes.
        let longest = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
        assert_eq!(longest.len(), PROXY_V1_MAX_BYTES);
        assert_eq!(parse_v1(longest), Ok(ProxyHeader::Local));
        let tcp6 = &[b"PROXY TCP6".as_slice(), &longest[13..]].concat();
        assert!(matches!(parse_v1(tcp6), Ok(ProxyHeader::Client(_))));
    }

    #[test]
    fn v1_grammar_is_strict() {
        for bad in [
            &b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7886\n"[..],
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7886",
            b"PROXY TCP4  192.0.2.7 10.0.0.1 56324 7886\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7886 \r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 056324 7886\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 65536 7886\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 +1 7886\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 \r\n",
            b"PROXY TCP4 2001:db8::7 10.0.0.1 1 2\r\n",
            b"PROXY TCP6 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 ::1 1 2\r\n",
            b"PROXY TCP4 192.0.2.07 10.0.0.1 1 2\r\n",
            b"PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY tcp4 192.0.2.7 10.0.0.1 1 2\r\n",
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1 2\r\r\n",
            b"PROXY TCP4 192.0.2.7\t10.0.0.1 1 2\r\n",
            b"PROXY \xff\r\n",
            b"PROXY \r\n",
        ] {
            assert!(
                matches!(parse_v1(bad), Err(ProxyError::Malformed(_))),
                "{:?} -> {:?}",
                String::from_utf8_lossy(bad),
                parse_v1(bad)
            );
        }
        assert_eq!(parse_v1(b"GET / HTTP/1.0\r\n"), Err(ProxyError::Absent));
        assert_eq!(
            parse_v1(b"proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"),
            Err(ProxyError::Absent)
        );
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'a'; 100], b"\r\n"].concat();
        assert!(matches!(parse_v1(&long), Err(ProxyError::Malformed(_))));
    }

    fn v2(cmd: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        h.extend_from_slice(payload);
        h
    }

    #[test]
    fn v2_headers_parse() {
        let ipv4 = [192, 0, 2, 7, 10, 0, 0, 1, 0xdc, 0x04, 0x1e, 0xce];
        assert_eq!(
            parse_v2(&v2(1, 0x11, &ipv4)),
            Ok(v4([192, 0, 2, 7], 0xdc04))
        );
        // TLVs after the addresses are skipped.
        let with_tlv = [&ipv4[..], &[0x04, 0x00, 0x01, 0x00]].concat();
        assert_eq!(
            parse_v2(&v2(1, 0x11, &with_tlv)),
            Ok(v4([192, 0, 2, 7], 0xdc04))
        );
        let mut ipv6 = [0u8; 36];
        ipv6[0] = 0x20;
        ipv6[1] = 0x01;
        ipv6[15] = 7;
        ipv6[32] = 1;
        assert_eq!(
            parse_v2(&v2(1, 0x21, &ipv6)),
            Ok(ProxyHeader::Client("[2001::7]:256".parse().unwrap()))
        );
        assert_eq!(parse_v2(&v2(0, 0x00, &[])), Ok(ProxyHeader::Local));
        assert_eq!(parse_v2(&v2(0, 0x11, &ipv4)), Ok(ProxyHeader::Local));
        assert_eq!(parse_v2(&v2(1, 0x31, &[0; 216])), Ok(ProxyHeader::Local));
    }

    #[test]
    fn v2_errors_are_values() {
        let ipv4 = [192, 0, 2, 7, 10, 0, 0, 1, 0, 1, 0, 2];
        assert!(matches!(
            parse_v2(&v2(1, 0x11, &ipv4[..11])),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_v2(&v2(1, 0x21, &ipv4)),
            Err(ProxyError::Malformed(_))
        ));
        assert!(matches!(
            parse_v2(&v2(2, 0x11, &ipv4)),
            Err(ProxyError::Malformed(_))
        ));
        let mut wrong_version = v2(1, 0x11, &ipv4);
        wrong_version[12] = 0x11;
        assert!(matches!(
            parse_v2(&wrong_version),
            Err(ProxyError::Malformed(_))
        ));
        let mut wrong_len = v2(1, 0x11, &ipv4);
        wrong_len[15] = 13;
        assert!(matches!(
            parse_v2(&wrong_len),
            Err(ProxyError::Malformed(_))
        ));
        let huge = v2(1, 0x11, &vec![0; PROXY_V2_MAX_PAYLOAD + 1]);
        assert!(matches!(parse_v2(&huge), Err(ProxyError::Malformed(_))));
        assert!(matches!(
            parse_v2(&[0x0d; 5]),
            Err(ProxyError::Malformed(_))
        ));
        assert_eq!(parse_v2(&[0u8; 16]), Err(ProxyError::Absent));
    }

    /// Property-style: any bytes, any cut of a valid header, any single byte
    /// flipped in one: an answer, never a panic, and never a client address
    /// from a line that differs from the grammar's.
    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let valid = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 7886\r\n";
        for cut in 0..valid.len() {
            assert!(parse_v1(&valid[..cut]).is_err(), "cut at {cut}");
        }
        for _ in 0..20_000 {
            let mut line = valid.to_vec();
            let at = (next() % line.len() as u64) as usize;
            let byte = (next() & 0xff) as u8;
            line[at] = byte;
            if let Ok(ProxyHeader::Client(addr)) = parse_v1(&line) {
                // Only digit-for-digit changes can still parse.
                let text = String::from_utf8(line.clone()).unwrap();
                assert!(text.contains(&addr.ip().to_string()), "{text:?}");
            }
            let len = (next() % 120) as usize;
            let noise: Vec<u8> = (0..len).map(|_| (next() & 0xff) as u8).collect();
            let _ = parse_v1(&noise);
            let _ = parse_v2(&noise);
            let mut v2_noise = V2_SIGNATURE.to_vec();
            v2_noise.extend_from_slice(&noise);
            let _ = parse_v2(&v2_noise);
        }
    }
}
