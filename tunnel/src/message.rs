//! The control messages of the protocol (see the [crate] docs): the hello line the laptop
//! sends, the agent's answer line, the one-byte signals on a parked connection, and the rules
//! for tokens.

use std::fmt;
use std::io;
use std::time::Duration;

use subtle::ConstantTimeEq;
use tokio::io::{
    AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt,
};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// What a hello line starts with, followed by the version: `CZTUN/1 TOKEN\n`.
pub const MAGIC: &str = "CZTUN/";
/// The longest hello or answer line accepted, newline included.
pub const MAX_LINE: usize = 512;
/// The longest token accepted.
pub const MAX_TOKEN: usize = 256;

/// A line or byte that is not what the protocol allows at that point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// The first line of a control connection is not `CZTUN/VERSION TOKEN`.
    #[error("malformed hello")]
    MalformedHello,
    /// The agent's answer is neither `OK KEEPALIVE_MS` nor `DENIED REASON` (the first 80
    /// characters of the line).
    #[error("not a tunnel agent's answer: {0:?}")]
    MalformedAnswer(String),
    /// A byte that is no [`Signal`].
    #[error("unknown signal byte {0:#04x}")]
    UnknownSignal(u8),
}

/// Whether a token is usable on the wire: 1 to [`MAX_TOKEN`] printable ASCII characters
/// without spaces.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.len() <= MAX_TOKEN && token.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether an offered token is the expected one, compared in time independent of where they
/// differ (only the lengths leak, and generated tokens all have the same length).
pub fn tokens_match(offered: &str, expected: &str) -> bool {
    offered.as_bytes().ct_eq(expected.as_bytes()).into()
}

/// The laptop's first line on a control connection: `CZTUN/VERSION TOKEN\n`.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// The protocol version the laptop speaks.
    pub version: u32,
    /// The token it presents.
    pub token: String,
}

impl fmt::Debug for Hello {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hello")
            .field("version", &self.version)
            .field("token", &"<redacted>")
            .finish()
    }
}

impl Hello {
    /// A hello of this build's [`VERSION`] presenting `token`.
    pub fn new(token: impl Into<String>) -> Self {
        Hello {
            version: VERSION,
            token: token.into(),
        }
    }

    /// The line on the wire, newline included.
    pub fn line(&self) -> String {
        format!("{MAGIC}{} {}\n", self.version, self.token)
    }

    /// Parses a hello line (with or without its newline). Any version parses, so the agent can
    /// name the one it speaks; the token must be [valid](valid_token).
    pub fn parse(line: &str) -> Result<Hello, ProtocolError> {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let line = line.strip_suffix('\r').unwrap_or(line);
        let (version, token) = line
            .strip_prefix(MAGIC)
            .and_then(|rest| rest.split_once(' '))
            .ok_or(ProtocolError::MalformedHello)?;
        let version = version
            .parse::<u32>()
            .map_err(|_| ProtocolError::MalformedHello)?;
        if !valid_token(token) {
            return Err(ProtocolError::MalformedHello);
        }
        Ok(Hello {
            version,
            token: token.to_string(),
        })
    }
}

/// The agent's answer to a hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `OK KEEPALIVE_MS`: parked; the agent pings every `keepalive` (at least 1 ms).
    Accepted {
        /// Time between the agent's pings.
        keepalive: Duration,
    },
    /// `DENIED REASON`: refused; the agent closes the connection.
    Denied {
        /// Why, for people (never the token).
        reason: String,
    },
}

impl Answer {
    /// The line on the wire, newline included (newlines in a reason become spaces).
    pub fn line(&self) -> String {
        match self {
            Answer::Accepted { keepalive } => format!("OK {}\n", keepalive.as_millis().max(1)),
            Answer::Denied { reason } => format!("DENIED {}\n", reason.replace(['\n', '\r'], " ")),
        }
    }

    /// Parses the agent's answer line.
    pub fn parse(line: &str) -> Result<Answer, ProtocolError> {
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(ms) = line.strip_prefix("OK ") {
            return match ms.parse::<u64>() {
                Ok(ms) if ms > 0 => Ok(Answer::Accepted {
                    keepalive: Duration::from_millis(ms),
                }),
                _ => Err(ProtocolError::MalformedAnswer(line.to_string())),
            };
        }
        if let Some(reason) = line.strip_prefix("DENIED") {
            return Ok(Answer::Denied {
                reason: reason.trim().to_string(),
            });
        }
        Err(ProtocolError::MalformedAnswer(
            line.chars().take(80).collect(),
        ))
    }
}

/// Why an agent refuses a hello; its text is the `DENIED` reason on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    /// Not a hello line (or too long, or not UTF-8).
    #[error("malformed hello")]
    Malformed,
    /// Another protocol version than [`VERSION`].
    #[error("unsupported protocol version {0}; this agent speaks {VERSION}")]
    Version(u32),
    /// The token is not the session's.
    #[error("invalid token")]
    Token,
}

impl Denial {
    /// The answer carrying this denial.
    pub fn answer(&self) -> Answer {
        Answer::Denied {
            reason: self.to_string(),
        }
    }
}

/// The one-byte signals on a parked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `P`, agent → laptop: are you there? (answered with [`Signal::Pong`]).
    Ping,
    /// `p`, laptop → agent: the answer to [`Signal::Ping`].
    Pong,
    /// `S`, agent → laptop: a client connected; reach your target.
    Start,
    /// `R`, laptop → agent after [`Signal::Start`]: the local target is connected; frames
    /// follow.
    Ready,
    /// `X`, laptop → agent after [`Signal::Start`]: the local target refused; the connection
    /// closes.
    Refused,
}

impl Signal {
    /// The byte on the wire.
    pub const fn byte(self) -> u8 {
        match self {
            Signal::Ping => b'P',
            Signal::Pong => b'p',
            Signal::Start => b'S',
            Signal::Ready => b'R',
            Signal::Refused => b'X',
        }
    }

    /// The signal a byte stands for.
    pub fn from_byte(byte: u8) -> Result<Signal, ProtocolError> {
        Ok(match byte {
            b'P' => Signal::Ping,
            b'p' => Signal::Pong,
            b'S' => Signal::Start,
            b'R' => Signal::Ready,
            b'X' => Signal::Refused,
            other => return Err(ProtocolError::UnknownSignal(other)),
        })
    }

    /// Reads one signal: the outer error is the connection's (EOF is `UnexpectedEof`), the
    /// inner one a byte that is no signal.
    pub async fn read<R: AsyncRead + Unpin>(
        reader: &mut R,
    ) -> io::Result<Result<Signal, ProtocolError>> {
        Ok(Signal::from_byte(reader.read_u8().await?))
    }

    /// Writes this signal and flushes it.
    pub async fn write<W: AsyncWrite + Unpin>(self, writer: &mut W) -> io::Result<()> {
        writer.write_all(&[self.byte()]).await?;
        writer.flush().await
    }
}

/// Writes a hello or answer line and flushes it.
pub async fn write_line<W: AsyncWrite + Unpin>(writer: &mut W, line: &str) -> io::Result<()> {
    writer.write_all(line.as_bytes()).await?;
    writer.flush().await
}

/// Reads one line of at most [`MAX_LINE`] bytes, newline included. `Ok(None)` when the line is
/// too long, ends without a newline, or is not UTF-8; `UnexpectedEof` when the peer closed
/// before sending a byte (a TCP readiness probe, or a peer that went away).
pub async fn read_line<R: AsyncBufRead + Unpin>(reader: &mut R) -> io::Result<Option<String>> {
    let mut buf = Vec::new();
    (&mut *reader)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if buf.is_empty() {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trip() {
        let hello = Hello::new("abc-DEF_123");
        assert_eq!(hello.line(), "CZTUN/1 abc-DEF_123\n");
        assert_eq!(Hello::parse(&hello.line()), Ok(hello));
        assert_eq!(
            Hello::parse("CZTUN/7 tok\r\n"),
            Ok(Hello {
                version: 7,
                token: "tok".into()
            })
        );
    }

    #[test]
    fn malformed_hellos_are_refused() {
        for line in [
            "",
            "\n",
            "GET / HTTP/1.1\r\n",
            "CZTUN/ tok\n",
            "CZTUN/x tok\n",
            "CZTUN/-1 tok\n",
            "CZTUN/1\n",
            "CZTUN/1 \n",
            "CZTUN/1 a b\n",
            "CZTUN/1 a\tb\n",
            "cztun/1 tok\n",
        ] {
            assert_eq!(
                Hello::parse(line),
                Err(ProtocolError::MalformedHello),
                "{line:?}"
            );
        }
        let long = format!("CZTUN/1 {}\n", "a".repeat(MAX_TOKEN + 1));
        assert_eq!(Hello::parse(&long), Err(ProtocolError::MalformedHello));
    }

    #[test]
    fn a_hello_never_shows_its_token_in_debug_output() {
        let shown = format!("{:?}", Hello::new("s3cr3t-token"));
        assert!(!shown.contains("s3cr3t"), "{shown}");
    }

    #[test]
    fn answers_round_trip_and_malformed_ones_are_refused() {
        let accepted = Answer::Accepted {
            keepalive: Duration::from_secs(15),
        };
        assert_eq!(accepted.line(), "OK 15000\n");
        assert_eq!(Answer::parse(&accepted.line()), Ok(accepted));
        let denied = Denial::Token.answer();
        assert_eq!(denied.line(), "DENIED invalid token\n");
        assert_eq!(
            Answer::parse(&denied.line()),
            Ok(Answer::Denied {
                reason: "invalid token".into()
            })
        );
        let multiline = Answer::Denied {
            reason: "a\nb".into(),
        };
        assert_eq!(multiline.line(), "DENIED a b\n");
        for line in ["OK 0\n", "OK\n", "OK -5\n", "HTTP/1.1 400\n", ""] {
            assert!(
                matches!(Answer::parse(line), Err(ProtocolError::MalformedAnswer(_))),
                "{line:?}"
            );
        }
        let long = "x".repeat(300);
        match Answer::parse(&long) {
            Err(ProtocolError::MalformedAnswer(shown)) => assert_eq!(shown.len(), 80),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn denial_reasons_are_the_wire_texts() {
        assert_eq!(Denial::Malformed.to_string(), "malformed hello");
        assert_eq!(
            Denial::Version(2).to_string(),
            "unsupported protocol version 2; this agent speaks 1"
        );
        assert_eq!(Denial::Token.to_string(), "invalid token");
    }

    #[test]
    fn signals_round_trip_and_unknown_bytes_are_errors() {
        for signal in [
            Signal::Ping,
            Signal::Pong,
            Signal::Start,
            Signal::Ready,
            Signal::Refused,
        ] {
            assert_eq!(Signal::from_byte(signal.byte()), Ok(signal));
        }
        assert_eq!(
            b"PpSRX".map(|b| Signal::from_byte(b).unwrap().byte()),
            *b"PpSRX"
        );
        assert_eq!(
            Signal::from_byte(b'Q'),
            Err(ProtocolError::UnknownSignal(b'Q'))
        );
    }

    #[test]
    fn token_rules_and_comparison() {
        assert!(tokens_match("secret", "secret"));
        assert!(!tokens_match("secret", "secreT"));
        assert!(!tokens_match("secret", "secret1"));
        assert!(!tokens_match("", "x"));
        assert!(valid_token("abc_-XYZ09"));
        assert!(valid_token(&"a".repeat(MAX_TOKEN)));
        assert!(!valid_token(&"a".repeat(MAX_TOKEN + 1)));
        assert!(!valid_token(""));
        assert!(!valid_token("a b"));
        assert!(!valid_token("a\nb"));
        assert!(!valid_token("é"));
    }

    #[tokio::test]
    async fn lines_are_bounded() {
        let mut reader = tokio::io::BufReader::new(&b"OK 15000\nrest"[..]);
        assert_eq!(
            read_line(&mut reader).await.unwrap().as_deref(),
            Some("OK 15000\n")
        );
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        let err = read_line(&mut reader).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let long = vec![b'a'; MAX_LINE * 2];
        let mut reader = tokio::io::BufReader::new(&long[..]);
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
        let mut reader = tokio::io::BufReader::new(&b"\xff\xfe\n"[..]);
        assert_eq!(read_line(&mut reader).await.unwrap(), None);
    }

    #[tokio::test]
    async fn signals_travel_as_single_bytes() {
        let (mut a, mut b) = tokio::io::duplex(16);
        Signal::Start.write(&mut a).await.unwrap();
        a.write_all(b"?").await.unwrap();
        drop(a);
        assert_eq!(Signal::read(&mut b).await.unwrap(), Ok(Signal::Start));
        assert_eq!(
            Signal::read(&mut b).await.unwrap(),
            Err(ProtocolError::UnknownSignal(b'?'))
        );
        let eof = Signal::read(&mut b).await.unwrap_err();
        assert_eq!(eof.kind(), io::ErrorKind::UnexpectedEof);
    }
}
