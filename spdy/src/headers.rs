//! Header blocks: `u32 count`, then `u32 len, name, u32 len, value` pairs, compressed as one
//! zlib stream per direction primed with the SPDY/3 [dictionary](crate::dictionary), each block
//! ended with a sync flush so the peer can decode it on its own.

use bytes::{Buf, BufMut, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::dictionary::DICTIONARY;
use crate::FrameError;

/// Header name/value pairs in wire order. Names are lowercase on the wire; several values of
/// one name travel joined by NUL.
pub type Headers = Vec<(String, String)>;

/// The largest decompressed header block accepted (a guard against zlib bombs).
pub const MAX_BLOCK: usize = 256 * 1024;

/// The sending half: one zlib stream for every header block this side writes.
pub struct Compressor {
    zlib: Compress,
}

impl Default for Compressor {
    fn default() -> Self {
        let mut zlib = Compress::new(Compression::default(), true);
        // The dictionary is 1,423 bytes, far below zlib's limit: setting it cannot fail.
        zlib.set_dictionary(&DICTIONARY)
            .expect("the SPDY dictionary is a valid zlib dictionary");
        Compressor { zlib }
    }
}

impl Compressor {
    /// Appends the compressed block of `headers` to `out`.
    pub fn compress(&mut self, headers: &Headers, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut plain = BytesMut::new();
        plain.put_u32(len32(headers.len())?);
        for (name, value) in headers {
            let name = name.to_ascii_lowercase();
            plain.put_u32(len32(name.len())?);
            plain.put_slice(name.as_bytes());
            plain.put_u32(len32(value.len())?);
            plain.put_slice(value.as_bytes());
        }
        let mut compressed = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            let before = self.zlib.total_in();
            self.zlib
                .compress_vec(input, &mut compressed, FlushCompress::Sync)
                .map_err(|e| FrameError::Compression(e.to_string()))?;
            input = &input[(self.zlib.total_in() - before) as usize..];
            // Done when all input is in and the flush left room to spare (nothing pending).
            if input.is_empty() && compressed.len() < compressed.capacity() {
                out.put_slice(&compressed);
                return Ok(());
            }
            compressed.reserve(compressed.capacity().max(256));
        }
    }
}

/// The receiving half: one zlib stream for every header block the peer writes.
pub struct Decompressor {
    zlib: Decompress,
}

impl Default for Decompressor {
    fn default() -> Self {
        Decompressor {
            zlib: Decompress::new(true),
        }
    }
}

impl Decompressor {
    /// Decodes one compressed block (exactly the bytes of one frame's header block).
    pub fn decompress(&mut self, mut block: &[u8]) -> Result<Headers, FrameError> {
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        loop {
            let before_in = self.zlib.total_in();
            let before_out = plain.len();
            let result = self
                .zlib
                .decompress_vec(block, &mut plain, FlushDecompress::Sync);
            let consumed = (self.zlib.total_in() - before_in) as usize;
            block = &block[consumed..];
            let stuck =
                consumed == 0 && plain.len() == before_out && plain.len() < plain.capacity();
            match result {
                Ok(Status::StreamEnd) => break,
                Ok(_) if block.is_empty() && plain.len() < plain.capacity() => break,
                Ok(_) if stuck => {
                    return Err(FrameError::Compression(
                        "the header block does not decode".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.zlib
                        .set_dictionary(&DICTIONARY)
                        .map_err(|e| FrameError::Compression(e.to_string()))?;
                }
                Err(e) => return Err(FrameError::Compression(e.to_string())),
            }
            if plain.len() >= MAX_BLOCK {
                return Err(FrameError::HeadersTooLarge);
            }
            if plain.len() == plain.capacity() {
                plain.reserve(plain.capacity().max(256));
            }
        }
        parse_block(&plain)
    }
}

/// Parses an uncompressed header block.
fn parse_block(mut plain: &[u8]) -> Result<Headers, FrameError> {
    let count = take_u32(&mut plain)? as usize;
    // Each pair takes at least 8 bytes: a count larger than that is a lie.
    if count > plain.len() / 8 {
        return Err(FrameError::BadHeaderBlock("header count exceeds the block"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let name = take_text(&mut plain)?;
        let value = take_text(&mut plain)?;
        if name.is_empty() {
            return Err(FrameError::BadHeaderBlock("empty header name"));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

fn take_u32(plain: &mut &[u8]) -> Result<u32, FrameError> {
    if plain.len() < 4 {
        return Err(FrameError::BadHeaderBlock("truncated length"));
    }
    Ok(plain.get_u32())
}

fn take_text(plain: &mut &[u8]) -> Result<String, FrameError> {
    let len = take_u32(plain)? as usize;
    if plain.len() < len {
        return Err(FrameError::BadHeaderBlock("truncated string"));
    }
    let (text, rest) = plain.split_at(len);
    *plain = rest;
    String::from_utf8(text.to_vec()).map_err(|_| FrameError::BadHeaderBlock("not UTF-8"))
}

fn len32(len: usize) -> Result<u32, FrameError> {
    u32::try_from(len).map_err(|_| FrameError::HeadersTooLarge)
}

/// The value of header `name` (lowercase), if present.
pub fn get<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Headers {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn blocks_round_trip_on_one_stream_per_direction() {
        let mut tx = Compressor::default();
        let mut rx = Decompressor::default();
        let blocks = [
            pairs(&[
                ("streamType", "error"),
                ("port", "8080"),
                ("requestID", "0"),
            ]),
            pairs(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            pairs(&[]),
            pairs(&[("x", &"v".repeat(70_000))]),
        ];
        for block in &blocks {
            let mut wire = BytesMut::new();
            tx.compress(block, &mut wire).unwrap();
            let back = rx.decompress(&wire).unwrap();
            let lower: Headers = block
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), v.clone()))
                .collect();
            assert_eq!(back, lower);
        }
    }

    #[test]
    fn first_block_names_the_spdy_dictionary() {
        let mut wire = BytesMut::new();
        Compressor::default()
            .compress(&pairs(&[("port", "80")]), &mut wire)
            .unwrap();
        // zlib header with FDICT set, then the dictionary's Adler-32.
        assert_eq!(wire[0], 0x78);
        assert_ne!(wire[1] & 0x20, 0);
        assert_eq!(&wire[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        // A sync flush ends every block.
        assert_eq!(&wire[wire.len() - 4..], &[0, 0, 0xff, 0xff]);
    }

    #[test]
    fn garbage_and_lies_are_errors() {
        let mut rx = Decompressor::default();
        assert!(rx.decompress(b"not zlib at all").is_err());
        assert!(parse_block(&[0, 0, 0, 9]).is_err());
        assert!(parse_block(&[0, 0, 0, 1, 0, 0, 0, 5, b'a']).is_err());
    }
}
