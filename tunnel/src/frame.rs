//! The frames a started tunnel connection carries both ways: a 4-byte big-endian length, then
//! that many bytes (at most [`MAX_FRAME`]); a zero length ends the direction.
//!
//! [`FrameCodec`] implements tokio-util's `Decoder` and `Encoder`, so a connection becomes a
//! `Stream`/`Sink` of [`Frame`]s with `FramedRead`/`FramedWrite`. It is written out rather
//! than layered on `LengthDelimitedCodec` because the zero-length frame means something here
//! (the end of a direction, not an empty payload) and an oversized frame should say how big it
//! was.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The largest frame payload accepted.
pub const MAX_FRAME: usize = 64 * 1024;
/// The length prefix.
const HEADER: usize = 4;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Payload bytes (1 to [`MAX_FRAME`]).
    Data(Bytes),
    /// The sender's plain side reached EOF: this direction has ended (a zero length on the
    /// wire).
    End,
}

/// A frame that cannot be sent or was received broken.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// A length above [`MAX_FRAME`].
    #[error("frame of {len} bytes exceeds {MAX_FRAME}")]
    TooLong {
        /// The length that was announced or offered.
        len: usize,
    },
    /// An empty [`Frame::Data`] would be an end frame on the wire.
    #[error("an empty data frame cannot be sent (a zero length ends the direction)")]
    EmptyData,
    /// The connection ended in the middle of a frame.
    #[error("the tunnel closed inside a frame ({buffered} bytes of it arrived)")]
    Truncated {
        /// Bytes of the unfinished frame (header included) that arrived.
        buffered: usize,
    },
    /// Reading or writing the connection failed.
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// The frame codec (stateless: a partial frame stays in the read buffer until it is whole).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(header) = src.get(..HEADER) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(header.try_into().expect("four bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLong { len });
        }
        if src.len() < HEADER + len {
            src.reserve(HEADER + len - src.len());
            return Ok(None);
        }
        src.advance(HEADER);
        if len == 0 {
            return Ok(Some(Frame::End));
        }
        Ok(Some(Frame::Data(src.split_to(len).freeze())))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => Err(FrameError::Truncated {
                buffered: src.len(),
            }),
        }
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        match frame {
            Frame::End => dst.put_u32(0),
            Frame::Data(data) if data.is_empty() => return Err(FrameError::EmptyData),
            Frame::Data(data) if data.len() > MAX_FRAME => {
                return Err(FrameError::TooLong { len: data.len() })
            }
            Frame::Data(data) => {
                dst.reserve(HEADER + data.len());
                dst.put_u32(data.len() as u32);
                dst.extend_from_slice(&data);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::{FramedRead, FramedWrite};

    use super::*;

    fn encoded(frames: &[Frame]) -> BytesMut {
        let mut out = BytesMut::new();
        for frame in frames {
            FrameCodec.encode(frame.clone(), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn the_wire_format_is_a_big_endian_length_then_the_bytes() {
        let wire = encoded(&[Frame::Data(Bytes::from_static(b"hi")), Frame::End]);
        assert_eq!(&wire[..], b"\x00\x00\x00\x02hi\x00\x00\x00\x00");
    }

    #[test]
    fn frames_decode_from_pieces() {
        let wire = encoded(&[
            Frame::Data(Bytes::from_static(b"hello")),
            Frame::Data(Bytes::from(vec![7u8; MAX_FRAME])),
            Frame::End,
        ]);
        let mut codec = FrameCodec;
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        // One byte at a time: partial headers and payloads wait for the rest.
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(frame) = codec.decode(&mut buf).unwrap() {
                got.push(frame);
            }
        }
        assert_eq!(
            got,
            vec![
                Frame::Data(Bytes::from_static(b"hello")),
                Frame::Data(Bytes::from(vec![7u8; MAX_FRAME])),
                Frame::End,
            ]
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn an_oversized_frame_is_refused_on_both_sides() {
        let mut buf = BytesMut::from(&((MAX_FRAME as u32 + 1).to_be_bytes())[..]);
        match FrameCodec.decode(&mut buf) {
            Err(FrameError::TooLong { len }) => assert_eq!(len, MAX_FRAME + 1),
            other => panic!("{other:?}"),
        }
        let mut buf = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        let err = FrameCodec.decode(&mut buf).unwrap_err();
        assert_eq!(err.to_string(), "frame of 4294967295 bytes exceeds 65536");
        let big = Frame::Data(Bytes::from(vec![0u8; MAX_FRAME + 1]));
        assert!(matches!(
            FrameCodec.encode(big, &mut BytesMut::new()),
            Err(FrameError::TooLong { .. })
        ));
    }

    #[test]
    fn an_empty_data_frame_cannot_be_sent() {
        let mut out = BytesMut::new();
        assert!(matches!(
            FrameCodec.encode(Frame::Data(Bytes::new()), &mut out),
            Err(FrameError::EmptyData)
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn eof_inside_a_frame_is_an_error_and_between_frames_is_not() {
        let mut buf = BytesMut::from(&b"\x00\x00\x00\x05abc"[..]);
        assert!(matches!(
            FrameCodec.decode_eof(&mut buf),
            Err(FrameError::Truncated { buffered: 7 })
        ));
        let mut buf = BytesMut::from(&b"\x00\x00"[..]);
        assert!(matches!(
            FrameCodec.decode_eof(&mut buf),
            Err(FrameError::Truncated { buffered: 2 })
        ));
        let mut buf = BytesMut::new();
        assert!(FrameCodec.decode_eof(&mut buf).unwrap().is_none());
    }

    #[tokio::test]
    async fn framed_streams_carry_data_and_the_end_frame() {
        let (a, b) = tokio::io::duplex(64);
        let mut sink = FramedWrite::new(a, FrameCodec);
        let mut stream = FramedRead::new(b, FrameCodec);
        let payload = Bytes::from((0..10_000u32).map(|i| i as u8).collect::<Vec<_>>());
        let send = async {
            sink.send(Frame::Data(payload.clone())).await.unwrap();
            sink.send(Frame::End).await.unwrap();
            drop(sink);
        };
        let receive = async {
            let mut frames = Vec::new();
            while let Some(frame) = stream.next().await {
                frames.push(frame.unwrap());
            }
            frames
        };
        let ((), frames) = tokio::join!(send, receive);
        assert_eq!(frames, vec![Frame::Data(payload), Frame::End]);
    }
}
