//! The tunnel wire protocol, shared by both ends (see the module docs of [`super`] for the
//! description): the hello line, the one-byte control signals, the token check, and the framed
//! relay used once a connection carries traffic.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// What a hello line starts with, followed by the version: `CZTUN/1 TOKEN\n`.
pub const MAGIC: &str = "CZTUN/";
/// The longest hello or answer line accepted, newline included.
pub const MAX_LINE: usize = 512;

/// Agent → laptop on a parked connection: are you there? (answered with [`PONG`]).
pub const PING: u8 = b'P';
/// Agent → laptop on a parked connection: a client connected; reach your target.
pub const START: u8 = b'S';
/// Laptop → agent on a parked connection: the answer to [`PING`].
pub const PONG: u8 = b'p';
/// Laptop → agent after [`START`]: the local target is connected; frames follow.
pub const READY: u8 = b'R';
/// Laptop → agent after [`START`]: the local target refused; the connection closes.
pub const REFUSED: u8 = b'X';

/// Payload bytes read per frame; frames never carry more than [`MAX_FRAME`].
const CHUNK: usize = 32 * 1024;
/// The largest frame payload accepted.
pub const MAX_FRAME: usize = 64 * 1024;

/// The hello line a laptop sends.
pub fn hello_line(token: &str) -> String {
    format!("{MAGIC}{VERSION} {token}\n")
}

/// The agent's answer accepting a hello: keepalive pings come every `keepalive`.
pub fn accept_line(keepalive: Duration) -> String {
    format!("OK {}\n", keepalive.as_millis())
}

/// The agent's answer refusing a hello, with a reason (never containing the token).
pub fn deny_line(reason: &str) -> String {
    format!("DENIED {}\n", reason.replace('\n', " "))
}

/// A parsed hello line.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello<'a> {
    /// Well-formed: the version and the offered token.
    Offer {
        /// The protocol version the laptop speaks.
        version: u32,
        /// The token it presents.
        token: &'a str,
    },
    /// Not a hello line at all.
    Malformed,
}

/// Parses a hello line (with or without its newline).
pub fn parse_hello(line: &str) -> Hello<'_> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let Some(rest) = line.strip_prefix(MAGIC) else {
        return Hello::Malformed;
    };
    let Some((version, token)) = rest.split_once(' ') else {
        return Hello::Malformed;
    };
    match version.parse::<u32>() {
        Ok(version) if !token.is_empty() && !token.contains(' ') => Hello::Offer { version, token },
        _ => Hello::Malformed,
    }
}

/// The agent's answer, as the laptop reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Accepted; the agent pings every this often.
    Accepted(Duration),
    /// Refused, with the agent's reason.
    Denied(String),
    /// Not an answer this build understands.
    Malformed(String),
}

/// Parses the agent's answer line.
pub fn parse_answer(line: &str) -> Answer {
    let line = line.trim_end_matches(['\n', '\r']);
    if let Some(ms) = line.strip_prefix("OK ") {
        return match ms.parse::<u64>() {
            Ok(ms) if ms > 0 => Answer::Accepted(Duration::from_millis(ms)),
            _ => Answer::Malformed(line.to_string()),
        };
    }
    if let Some(reason) = line.strip_prefix("DENIED") {
        return Answer::Denied(reason.trim().to_string());
    }
    Answer::Malformed(line.chars().take(80).collect())
}

/// Whether a token is usable on the wire: non-empty printable ASCII without spaces.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= 256 && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Compares two secrets in time independent of where they differ (only their lengths leak,
/// and the generated tokens all have the same length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| acc | std::hint::black_box(x ^ y));
    std::hint::black_box(diff) == 0
}

/// Reads one line of at most [`MAX_LINE`] bytes. `None` at EOF before a newline or when the
/// line is too long or not UTF-8.
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if buf.is_empty() {
        // Closed before sending anything: a TCP readiness probe, or a peer that went away.
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "closed before sending a line",
        ));
    }
    if buf.last() != Some(&b'\n') {
        return Ok(None);
    }
    Ok(String::from_utf8(buf).ok())
}

/// Byte counters for a relay: bytes written to the plain side and read from it.
#[derive(Clone, Copy)]
pub struct Counters<'a> {
    /// Bytes that came out of the tunnel and were written to the plain side.
    pub from_tunnel: Option<&'a AtomicU64>,
    /// Bytes read from the plain side and sent into the tunnel.
    pub into_tunnel: Option<&'a AtomicU64>,
}

impl Counters<'_> {
    /// No counting.
    pub const NONE: Counters<'static> = Counters {
        from_tunnel: None,
        into_tunnel: None,
    };
}

fn add(counter: Option<&AtomicU64>, n: usize) {
    if let Some(counter) = counter {
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// How a relay ended.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayEnd {
    /// Both directions ended with an orderly EOF.
    Clean,
    /// The tunnel broke (closed without an end frame, a read error, a malformed frame) or the
    /// plain side failed while reading; both sides are dropped.
    Aborted(String),
}

/// Copies between a plain byte stream (`plain`: the client on the agent, the local target on
/// the laptop) and a tunnel connection that carries frames (`tunnel`).
///
/// Each direction ends on its own: plain EOF → an end frame is sent; an end frame → the plain
/// side is shut down for writing. So half-closes pass through even where the transport cannot
/// half-close. If the plain side stops accepting bytes, the rest of that direction is read and
/// discarded so the other direction can still finish.
pub async fn relay<P, T>(plain: P, tunnel: T, counters: Counters<'_>) -> RelayEnd
where
    P: AsyncRead + AsyncWrite,
    T: AsyncBufRead + AsyncWrite,
{
    let (mut plain_rx, mut plain_tx) = tokio::io::split(plain);
    let (mut tunnel_rx, mut tunnel_tx) = tokio::io::split(tunnel);
    let up = async {
        let mut buf = vec![0u8; 4 + CHUNK];
        loop {
            let n = match plain_rx.read(&mut buf[4..]).await {
                Ok(n) => n,
                Err(e) => return Err(format!("reading the plain side: {e}")),
            };
            buf[..4].copy_from_slice(&(n as u32).to_be_bytes());
            let sent = async {
                tunnel_tx.write_all(&buf[..4 + n]).await?;
                tunnel_tx.flush().await
            };
            if let Err(e) = sent.await {
                return Err(format!("writing to the tunnel: {e}"));
            }
            if n == 0 {
                return Ok(());
            }
            add(counters.into_tunnel, n);
        }
    };
    let down = async {
        let mut plain_open = true;
        let mut buf = vec![0u8; MAX_FRAME];
        loop {
            let mut header = [0u8; 4];
            if let Err(e) = tunnel_rx.read_exact(&mut header).await {
                return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                    "the tunnel closed without an end frame".to_string()
                } else {
                    format!("reading from the tunnel: {e}")
                });
            }
            let len = u32::from_be_bytes(header) as usize;
            if len > MAX_FRAME {
                return Err(format!("frame of {len} bytes exceeds {MAX_FRAME}"));
            }
            if len == 0 {
                if plain_open {
                    let _ = plain_tx.shutdown().await;
                }
                return Ok(());
            }
            if let Err(e) = tunnel_rx.read_exact(&mut buf[..len]).await {
                return Err(format!("reading from the tunnel: {e}"));
            }
            if plain_open {
                if plain_tx.write_all(&buf[..len]).await.is_ok() {
                    add(counters.from_tunnel, len);
                } else {
                    plain_open = false;
                }
            }
        }
    };
    match tokio::try_join!(up, down) {
        Ok(_) => RelayEnd::Clean,
        Err(reason) => RelayEnd::Aborted(reason),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip() {
        let line = hello_line("abc-DEF_123");
        assert_eq!(line, "CZTUN/1 abc-DEF_123\n");
        assert_eq!(
            parse_hello(&line),
            Hello::Offer {
                version: 1,
                token: "abc-DEF_123"
            }
        );
        assert_eq!(
            parse_hello("CZTUN/7 tok"),
            Hello::Offer {
                version: 7,
                token: "tok"
            }
        );
    }

    #[test]
    fn malformed_hellos() {
        for line in [
            "",
            "\n",
            "GET / HTTP/1.1\r\n",
            "CZTUN/ tok\n",
            "CZTUN/x tok\n",
            "CZTUN/1\n",
            "CZTUN/1 \n",
            "CZTUN/1 a b\n",
        ] {
            assert_eq!(parse_hello(line), Hello::Malformed, "{line:?}");
        }
    }

    #[test]
    fn answers() {
        assert_eq!(
            parse_answer(&accept_line(Duration::from_secs(15))),
            Answer::Accepted(Duration::from_secs(15))
        );
        assert_eq!(
            parse_answer(&deny_line("invalid token")),
            Answer::Denied("invalid token".into())
        );
        assert!(matches!(parse_answer("OK 0\n"), Answer::Malformed(_)));
        assert!(matches!(
            parse_answer("HTTP/1.1 400\n"),
            Answer::Malformed(_)
        ));
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret1"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(valid_token("abc_-XYZ09"));
        assert!(!valid_token(""));
        assert!(!valid_token("a b"));
        assert!(!valid_token("a\nb"));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut reader = tokio::io::BufReader::new(&b"OK 15000\nrest"[..]);
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("OK 15000\n")
        );
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        let long = vec![b'a'; MAX_LINE * 2];
        let mut reader = tokio::io::BufReader::new(&long[..]);
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
    }

    /// Both relay ends over in-memory pipes: bytes arrive exactly and half-closes pass.
    #[tokio::test]
    async fn relay_passes_bytes_and_half_closes() {
        let (tunnel_a, tunnel_b) = tokio::io::duplex(1024);
        let (plain_a, mut client) = tokio::io::duplex(1024);
        let (plain_b, mut server) = tokio::io::duplex(1024);
        let a = tokio::spawn(relay(
            plain_a,
            tokio::io::BufReader::new(tunnel_a),
            Counters::NONE,
        ));
        let up = AtomicU64::new(0);
        let down = AtomicU64::new(0);
        let b = async {
            relay(
                plain_b,
                tokio::io::BufReader::new(tunnel_b),
                Counters {
                    from_tunnel: Some(&down),
                    into_tunnel: Some(&up),
                },
            )
            .await
        };
        let request: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let response: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let client_side = async {
            client.write_all(&request).await.unwrap();
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            client.read_to_end(&mut got).await.unwrap();
            got
        };
        let server_side = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            server.write_all(&response).await.unwrap();
            server.shutdown().await.unwrap();
            got
        };
        let (end_b, got_response, got_request) = tokio::join!(b, client_side, server_side);
        assert_eq!(end_b, RelayEnd::Clean);
        assert_eq!(a.await.unwrap(), RelayEnd::Clean);
        assert!(got_request == request, "request bytes differ");
        assert!(got_response == response, "response bytes differ");
        assert_eq!(down.load(Ordering::Relaxed), request.len() as u64);
        assert_eq!(up.load(Ordering::Relaxed), response.len() as u64);
    }

    #[tokio::test]
    async fn relay_aborts_when_the_tunnel_breaks() {
        let (tunnel_a, tunnel_b) = tokio::io::duplex(1024);
        let (plain, _client) = tokio::io::duplex(1024);
        drop(tunnel_b);
        let end = relay(plain, tokio::io::BufReader::new(tunnel_a), Counters::NONE).await;
        assert!(matches!(end, RelayEnd::Aborted(_)), "{end:?}");
    }
}
