//! SPDY/3.1 frames and their codec (big-endian).
//!
//! ```text
//! control: 1 | version:15 (3) | type:16 | flags:8 | length:24 | payload
//! data:    0 | stream-id:31          | flags:8 | length:24 | bytes
//! ```
//! SYN_STREAM, SYN_REPLY and HEADERS carry a compressed header block ([`crate::headers`]); the
//! codec owns the two zlib streams, so one codec serves exactly one connection.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::headers::{Compressor, Decompressor, Headers};
use crate::FrameError;

/// The protocol version in every control frame.
pub const VERSION: u16 = 3;
/// `FLAG_FIN` on data frames and on SYN_STREAM, SYN_REPLY and HEADERS.
pub const FLAG_FIN: u8 = 0x01;
/// `FLAG_UNIDIRECTIONAL` on SYN_STREAM.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// Largest payload a frame can declare (24-bit length).
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// RST_STREAM status codes (SPDY/3.1 section 2.4.2).
pub mod status {
    /// The peer broke the protocol on this stream.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// A frame for a stream that is not open.
    pub const INVALID_STREAM: u32 = 2;
    /// The stream was refused before any processing.
    pub const REFUSED_STREAM: u32 = 3;
    /// The stream is no longer needed.
    pub const CANCEL: u32 = 5;
    /// The endpoint failed on this stream.
    pub const INTERNAL_ERROR: u32 = 6;
    /// A second SYN_STREAM for an open stream.
    pub const STREAM_IN_USE: u32 = 8;
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Stream bytes; `fin` half-closes the sender's side.
    Data {
        /// Stream id.
        stream: u32,
        /// Last frame from this sender on the stream.
        fin: bool,
        /// Payload.
        data: Bytes,
    },
    /// Opens a stream.
    SynStream {
        /// New stream id (odd from clients, even from servers).
        stream: u32,
        /// Stream this one is associated with (0: none).
        associated: u32,
        /// 0 (highest) to 7.
        priority: u8,
        /// The opener sends nothing more.
        fin: bool,
        /// The receiver may not send on it.
        unidirectional: bool,
        /// Stream headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// Stream id.
        stream: u32,
        /// The replier sends nothing more.
        fin: bool,
        /// Reply headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// Stream id.
        stream: u32,
        /// One of [`status`].
        status: u32,
    },
    /// Connection settings: `(flags, id, value)`. Kubernetes' peers ignore them.
    Settings(Vec<(u8, u32, u32)>),
    /// Liveness probe; the receiver echoes ids the sender chose (odd from clients).
    Ping(u32),
    /// No new streams after `last_good`.
    GoAway {
        /// Last stream id the sender processed.
        last_good: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers on an open stream.
    Headers {
        /// Stream id.
        stream: u32,
        /// Half-closes the sender's side.
        fin: bool,
        /// Headers.
        headers: Headers,
    },
    /// Flow-control credit. Kubernetes' peers (moby/spdystream) neither send nor honour it.
    WindowUpdate {
        /// Stream id.
        stream: u32,
        /// Credit in bytes.
        delta: u32,
    },
    /// A control frame of a type SPDY/3.1 does not define; skipped.
    Unknown {
        /// Its type field.
        kind: u16,
    },
}

/// Frame encoder and decoder of one connection.
#[derive(Default)]
pub struct Codec {
    compressor: Compressor,
    decompressor: Decompressor,
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

impl Decoder for Codec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 8 {
            return Ok(None);
        }
        let length = (u32::from_be_bytes([0, src[5], src[6], src[7]])) as usize;
        if src.len() < 8 + length {
            src.reserve(8 + length - src.len());
            return Ok(None);
        }
        let first = src.get_u32();
        let flags = src.get_u8();
        src.advance(3);
        let mut payload = src.split_to(length).freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first & 0x7fff_ffff,
                fin: flags & FLAG_FIN != 0,
                data: payload,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = (first & 0xffff) as u16;
        let fin = flags & FLAG_FIN != 0;
        let frame = match kind {
            TYPE_SYN_STREAM => {
                need(&payload, 10)?;
                let stream = payload.get_u32() & 0x7fff_ffff;
                let associated = payload.get_u32() & 0x7fff_ffff;
                let priority = payload.get_u8() >> 5;
                payload.advance(1);
                Frame::SynStream {
                    stream: nonzero(stream)?,
                    associated,
                    priority,
                    fin,
                    unidirectional: flags & FLAG_UNIDIRECTIONAL != 0,
                    headers: self.decompressor.decompress(&payload)?,
                }
            }
            TYPE_SYN_REPLY | TYPE_HEADERS => {
                need(&payload, 4)?;
                let stream = nonzero(payload.get_u32() & 0x7fff_ffff)?;
                let headers = self.decompressor.decompress(&payload)?;
                if kind == TYPE_SYN_REPLY {
                    Frame::SynReply {
                        stream,
                        fin,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        fin,
                        headers,
                    }
                }
            }
            TYPE_RST_STREAM => {
                need(&payload, 8)?;
                Frame::RstStream {
                    stream: payload.get_u32() & 0x7fff_ffff,
                    status: payload.get_u32(),
                }
            }
            TYPE_SETTINGS => {
                need(&payload, 4)?;
                let count = payload.get_u32() as usize;
                if payload.len() < count.saturating_mul(8) {
                    return Err(FrameError::Truncated("SETTINGS"));
                }
                Frame::Settings(
                    (0..count)
                        .map(|_| {
                            let id = payload.get_u32();
                            ((id >> 24) as u8, id & 0xff_ffff, payload.get_u32())
                        })
                        .collect(),
                )
            }
            TYPE_PING => {
                need(&payload, 4)?;
                Frame::Ping(payload.get_u32())
            }
            TYPE_GOAWAY => {
                need(&payload, 4)?;
                let last_good = payload.get_u32() & 0x7fff_ffff;
                // SPDY/3 added the status; tolerate peers that omit it.
                let status = if payload.len() >= 4 {
                    payload.get_u32()
                } else {
                    0
                };
                Frame::GoAway { last_good, status }
            }
            TYPE_WINDOW_UPDATE => {
                need(&payload, 8)?;
                Frame::WindowUpdate {
                    stream: payload.get_u32() & 0x7fff_ffff,
                    delta: payload.get_u32() & 0x7fff_ffff,
                }
            }
            kind => Frame::Unknown { kind },
        };
        Ok(Some(frame))
    }
}

impl Encoder<Frame> for Codec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::Data { stream, fin, data } => {
                let length = payload_len(data.len())?;
                dst.reserve(8 + data.len());
                dst.put_u32(stream & 0x7fff_ffff);
                dst.put_u32(u32::from(u8::from(fin)) << 24 | length);
                dst.put_slice(&data);
                Ok(())
            }
            Frame::SynStream {
                stream,
                associated,
                priority,
                fin,
                unidirectional,
                headers,
            } => {
                let mut body = BytesMut::new();
                body.put_u32(stream);
                body.put_u32(associated);
                body.put_u8((priority & 0x07) << 5);
                body.put_u8(0);
                self.compressor.compress(&headers, &mut body)?;
                let flags = u8::from(fin)
                    | if unidirectional {
                        FLAG_UNIDIRECTIONAL
                    } else {
                        0
                    };
                control(dst, TYPE_SYN_STREAM, flags, &body)
            }
            Frame::SynReply {
                stream,
                fin,
                headers,
            } => self.with_headers(dst, TYPE_SYN_REPLY, stream, fin, &headers),
            Frame::Headers {
                stream,
                fin,
                headers,
            } => self.with_headers(dst, TYPE_HEADERS, stream, fin, &headers),
            Frame::RstStream { stream, status } => {
                control(dst, TYPE_RST_STREAM, 0, &pair(stream, status))
            }
            Frame::Settings(entries) => {
                let mut body = BytesMut::new();
                body.put_u32(payload_len(entries.len())?);
                for (flags, id, value) in entries {
                    body.put_u32(u32::from(flags) << 24 | (id & 0xff_ffff));
                    body.put_u32(value);
                }
                control(dst, TYPE_SETTINGS, 0, &body)
            }
            Frame::Ping(id) => control(dst, TYPE_PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                control(dst, TYPE_GOAWAY, 0, &pair(last_good, status))
            }
            Frame::WindowUpdate { stream, delta } => {
                control(dst, TYPE_WINDOW_UPDATE, 0, &pair(stream, delta))
            }
            Frame::Unknown { kind } => Err(FrameError::Unencodable(kind)),
        }
    }
}

impl Codec {
    fn with_headers(
        &mut self,
        dst: &mut BytesMut,
        kind: u16,
        stream: u32,
        fin: bool,
        headers: &Headers,
    ) -> Result<(), FrameError> {
        let mut body = BytesMut::new();
        body.put_u32(stream);
        self.compressor.compress(headers, &mut body)?;
        control(dst, kind, u8::from(fin), &body)
    }
}

/// Writes a control frame header and its payload.
fn control(dst: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) -> Result<(), FrameError> {
    let length = payload_len(body.len())?;
    dst.reserve(8 + body.len());
    dst.put_u16(0x8000 | VERSION);
    dst.put_u16(kind);
    dst.put_u32(u32::from(flags) << 24 | length);
    dst.put_slice(body);
    Ok(())
}

fn pair(a: u32, b: u32) -> [u8; 8] {
    let mut out = [0u8; 8];
    out[..4].copy_from_slice(&a.to_be_bytes());
    out[4..].copy_from_slice(&b.to_be_bytes());
    out
}

fn payload_len(len: usize) -> Result<u32, FrameError> {
    if len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(len));
    }
    // Checked just above: at most 24 bits.
    Ok(len as u32)
}

fn need(payload: &Bytes, len: usize) -> Result<(), FrameError> {
    if payload.len() < len {
        return Err(FrameError::Truncated("control frame"));
    }
    Ok(())
}

fn nonzero(stream: u32) -> Result<u32, FrameError> {
    if stream == 0 {
        return Err(FrameError::ZeroStream);
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: Vec<Frame>) {
        let mut tx = Codec::default();
        let mut rx = Codec::default();
        let mut wire = BytesMut::new();
        for frame in &frames {
            tx.encode(frame.clone(), &mut wire).unwrap();
        }
        // Feed the bytes in awkward pieces, as a socket would.
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for piece in wire.chunks(7) {
            buf.extend_from_slice(piece);
            while let Some(frame) = rx.decode(&mut buf).unwrap() {
                decoded.push(frame);
            }
        }
        assert!(buf.is_empty());
        assert_eq!(decoded, frames);
    }

    fn headers(list: &[(&str, &str)]) -> Headers {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_frame_type_round_trips() {
        round_trip(vec![
            Frame::SynStream {
                stream: 1,
                associated: 0,
                priority: 0,
                fin: false,
                unidirectional: false,
                headers: headers(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                associated: 1,
                priority: 7,
                fin: true,
                unidirectional: true,
                headers: headers(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream: 1,
                fin: false,
                headers: vec![],
            },
            Frame::Data {
                stream: 3,
                fin: false,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::new(),
            },
            Frame::RstStream {
                stream: 5,
                status: status::CANCEL,
            },
            Frame::Settings(vec![(1, 7, 65536), (0, 4, 100)]),
            Frame::Ping(9),
            Frame::GoAway {
                last_good: 7,
                status: 0,
            },
            Frame::Headers {
                stream: 3,
                fin: true,
                headers: headers(&[("x", "y")]),
            },
            Frame::WindowUpdate {
                stream: 3,
                delta: 1 << 20,
            },
        ]);
    }

    #[test]
    fn exact_bytes_of_fixed_frames() {
        let mut codec = Codec::default();
        let mut wire = BytesMut::new();
        codec.encode(Frame::Ping(1), &mut wire).unwrap();
        assert_eq!(&wire[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        wire.clear();
        let data = Frame::Data {
            stream: 3,
            fin: true,
            data: Bytes::from_static(b"ab"),
        };
        codec.encode(data, &mut wire).unwrap();
        assert_eq!(&wire[..], &[0, 0, 0, 3, 1, 0, 0, 2, b'a', b'b']);
        wire.clear();
        let rst = Frame::RstStream {
            stream: 3,
            status: status::CANCEL,
        };
        codec.encode(rst, &mut wire).unwrap();
        assert_eq!(
            &wire[..],
            &[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]
        );
    }

    #[test]
    fn unknown_control_frames_are_skipped_and_bad_ones_refused() {
        let mut codec = Codec::default();
        let mut wire = BytesMut::from(&[0x80, 3, 0, 0x42, 0, 0, 0, 2, 9, 9][..]);
        assert_eq!(
            codec.decode(&mut wire).unwrap(),
            Some(Frame::Unknown { kind: 0x42 })
        );
        let mut v2 = BytesMut::from(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(matches!(codec.decode(&mut v2), Err(FrameError::Version(2))));
        let mut short = BytesMut::from(&[0x80, 3, 0, 3, 0, 0, 0, 2, 0, 1][..]);
        assert!(codec.decode(&mut short).is_err());
    }
}
