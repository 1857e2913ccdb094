//! The zlib dictionary of SPDY/3 header blocks (draft-mbelshe-httpbis-spdy-00, 2.6.10.1).
//!
//! Both directions of a connection compress their header blocks as one zlib stream primed with
//! this dictionary: the length-prefixed words below, then a run of plain text.

use std::sync::LazyLock;

/// Header names and values, each preceded by its length as a big-endian `u32`.
const WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// Plain text after the words, without length prefixes.
const TAIL: &str =
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417\
502504505203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 \
Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service \
UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, \
Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/xml,\
application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,deflate,sdch\
charset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The dictionary's bytes (1,423 of them).
pub static DICTIONARY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut bytes = Vec::with_capacity(1423);
    for word in WORDS {
        // Every word is a short literal above: its length fits a u32.
        bytes.extend_from_slice(&(word.len() as u32).to_be_bytes());
        bytes.extend_from_slice(word.as_bytes());
    }
    bytes.extend_from_slice(TAIL.as_bytes());
    bytes
});

#[cfg(test)]
mod tests {
    use super::DICTIONARY;

    /// Adler-32 as zlib computes it (RFC 1950), to compare with the DICTID peers expect.
    fn adler32(bytes: &[u8]) -> u32 {
        let (mut a, mut b) = (1u32, 0u32);
        for byte in bytes {
            a = (a + u32::from(*byte)) % 65521;
            b = (b + a) % 65521;
        }
        (b << 16) | a
    }

    #[test]
    fn matches_the_spec_length_and_checksum() {
        assert_eq!(DICTIONARY.len(), 1423);
        // The DICTID in every SPDY/3 header stream (Go's spdy framer writes the same).
        assert_eq!(adler32(&DICTIONARY), 0xe3c6_a7c2);
    }
}
