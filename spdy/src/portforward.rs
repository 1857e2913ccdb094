//! What Kubernetes puts on the wire for `pods/portforward` over SPDY.
//!
//! Per forwarded TCP connection the client opens two streams with the same `requestid`: an
//! error stream (which it half-closes at once) and a data stream. The server answers each with
//! SYN_REPLY, relays the data stream to the pod port, writes the kubelet's error text on the
//! error stream if forwarding fails, and FINs both.

/// WebSocket subprotocol of SPDY tunnelled in binary WebSocket messages (kubectl >= 1.31).
pub const WEBSOCKET_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// `Upgrade:` value of the HTTP/1.1 SPDY upgrade.
pub const UPGRADE: &str = "SPDY/3.1";
/// `X-Stream-Protocol-Version:` of the HTTP/1.1 SPDY upgrade.
pub const STREAM_PROTOCOL: &str = "portforward.k8s.io";
/// Header of the stream protocol version, on the upgrade request and its 101 answer.
pub const STREAM_PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// Stream header: `error` or `data`.
pub const STREAM_TYPE: &str = "streamtype";
/// Stream header: the pod port.
pub const PORT: &str = "port";
/// Stream header: pairs the error and data stream of one forwarded connection.
pub const REQUEST_ID: &str = "requestid";
/// [`STREAM_TYPE`] of the error stream.
pub const TYPE_ERROR: &str = "error";
/// [`STREAM_TYPE`] of the data stream.
pub const TYPE_DATA: &str = "data";

/// The headers of one stream of the pair.
pub fn stream_headers(kind: &str, port: u16, request_id: u64) -> crate::Headers {
    vec![
        (STREAM_TYPE.to_string(), kind.to_string()),
        (PORT.to_string(), port.to_string()),
        (REQUEST_ID.to_string(), request_id.to_string()),
    ]
}
