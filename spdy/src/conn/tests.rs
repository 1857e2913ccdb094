//! The multiplexer over an in-memory pipe: both roles are this crate.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::portforward::stream_headers;

fn pair(config: Config) -> (Connection, Connection, Incoming) {
    let (a, b) = tokio::io::duplex(256 * 1024);
    let (client, _refused) = Connection::new(a, Role::Client, config.clone());
    let (server, incoming) = Connection::new(b, Role::Server, config);
    (client, server, incoming)
}

/// Accepts streams forever and echoes each until its EOF, then half-closes it.
fn echo_server(mut incoming: Incoming) {
    tokio::spawn(async move {
        while let Some(mut stream) = incoming.accept().await {
            tokio::spawn(async move {
                stream.reply(vec![], false).await.unwrap();
                let (mut rx, mut tx) = tokio::io::split(stream);
                let _ = tokio::io::copy(&mut rx, &mut tx).await;
                let _ = tx.shutdown().await;
            });
        }
    });
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_duplex_bulk_on_two_streams_with_half_close() {
    let (client, _server, incoming) = pair(Config::default());
    echo_server(incoming);
    let mut tasks = Vec::new();
    for seed in 0..2u8 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let stream = client
                .open(stream_headers("data", 80, u64::from(seed)), false)
                .await
                .unwrap();
            stream.wait_reply().await.unwrap();
            let sent = pattern(16 << 20, seed);
            let (mut rx, mut tx) = tokio::io::split(stream);
            let writer = {
                let sent = sent.clone();
                tokio::spawn(async move {
                    tx.write_all(&sent).await.unwrap();
                    tx.shutdown().await.unwrap();
                    tx
                })
            };
            let mut back = Vec::new();
            rx.read_to_end(&mut back).await.unwrap();
            let _tx = writer.await.unwrap();
            assert!(back == sent, "echo of stream {seed} differs");
        }));
    }
    for task in tasks {
        within("duplex echo", task).await.unwrap();
    }
    // Both streams finished both ways: nothing is left open.
    within("stream cleanup", async {
        while client.active_streams() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn headers_reach_the_server_and_fin_on_syn_half_closes() {
    let (client, _server, mut incoming) = pair(Config::default());
    let error = client
        .open(stream_headers("error", 8080, 7), true)
        .await
        .unwrap();
    let mut accepted = within("accept", incoming.accept()).await.unwrap();
    assert_eq!(
        crate::headers::get(accepted.headers(), "streamtype"),
        Some("error")
    );
    assert_eq!(
        crate::headers::get(accepted.headers(), "requestid"),
        Some("7")
    );
    accepted.reply(vec![], false).await.unwrap();
    // The opener sent FIN with SYN_STREAM: the server reads EOF at once.
    let mut nothing = Vec::new();
    accepted.read_to_end(&mut nothing).await.unwrap();
    assert!(nothing.is_empty());
    accepted
        .write_all(b"error forwarding port 8080")
        .await
        .unwrap();
    accepted.shutdown().await.unwrap();
    let mut error = error;
    error.wait_reply().await.unwrap();
    let mut text = String::new();
    within("error text", error.read_to_string(&mut text))
        .await
        .unwrap();
    assert_eq!(text, "error forwarding port 8080");
}

#[tokio::test]
async fn a_reset_stream_fails_while_its_neighbour_works() {
    let (client, _server, mut incoming) = pair(Config::default());
    let mut doomed = client
        .open(stream_headers("data", 1, 0), false)
        .await
        .unwrap();
    let mut fine = client
        .open(stream_headers("data", 2, 1), false)
        .await
        .unwrap();
    let first = incoming.accept().await.unwrap();
    let mut second = incoming.accept().await.unwrap();
    first.reset(status::CANCEL, "test");
    second.reply(vec![], false).await.unwrap();
    let mut buf = [0u8; 1];
    let err = within("reset read", doomed.read(&mut buf))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(doomed.write_all(b"x").await.is_err());
    fine.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    second.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"ping");
    second.write_all(b"pong").await.unwrap();
    fine.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong");
}

#[tokio::test]
async fn a_stream_nobody_reads_is_reset_and_the_others_move_on() {
    let config = Config {
        stream_queue_bytes: 64 * 1024,
        stall_timeout: Duration::from_millis(300),
        ..Config::default()
    };
    let (client, _server, mut incoming) = pair(config);
    let _stuck = client
        .open(stream_headers("data", 1, 0), false)
        .await
        .unwrap();
    let mut lively = client
        .open(stream_headers("data", 2, 1), false)
        .await
        .unwrap();
    let mut stuck_peer = incoming.accept().await.unwrap();
    let mut lively_peer = incoming.accept().await.unwrap();
    // The server floods the stream whose client never reads, then talks on the other one.
    let flood = tokio::spawn(async move {
        let chunk = vec![7u8; 32 * 1024];
        // Until the reset arrives (bounded, so a missing reset fails instead of looping).
        for _ in 0..100_000 {
            stuck_peer.write_all(&chunk).await?;
        }
        Ok::<(), io::Error>(())
    });
    lively_peer.write_all(b"still here").await.unwrap();
    let mut got = [0u8; 10];
    within("the other stream", lively.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(&got, b"still here");
    // The flooding side learns of the reset (RST_STREAM CANCEL).
    assert!(within("flood", flood).await.unwrap().is_err());
}

#[tokio::test]
async fn losing_the_transport_fails_streams_and_new_opens() {
    let (a, b) = tokio::io::duplex(64 * 1024);
    let (client, _refused) = Connection::new(a, Role::Client, Config::default());
    let mut stream = client
        .open(stream_headers("data", 1, 0), false)
        .await
        .unwrap();
    drop(b);
    let mut buf = [0u8; 1];
    let err = within("read", stream.read(&mut buf)).await.unwrap_err();
    assert!(err.to_string().contains("connection lost"), "{err}");
    within("closed", client.closed()).await;
    assert!(client
        .open(stream_headers("data", 1, 1), false)
        .await
        .is_err());
    assert!(client.close_reason().is_some());
}

#[tokio::test]
async fn pings_are_answered_and_a_silent_peer_is_declared_dead() {
    let keepalive = Config {
        keepalive: Some(Duration::from_millis(50)),
        ..Config::default()
    };
    // A live server answers: the connection survives many intervals.
    let (client, _server, _incoming) = pair(keepalive.clone());
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!client.is_closed(), "{:?}", client.close_reason());
    // A peer that never answers: the connection ends with a reason.
    let (a, _silent) = tokio::io::duplex(64 * 1024);
    let (lonely, _refused) = Connection::new(a, Role::Client, keepalive);
    within("keepalive", lonely.closed()).await;
    assert!(lonely.close_reason().unwrap().contains("PING"));
}

#[tokio::test]
async fn dropping_every_handle_sends_goaway_and_closes() {
    let (client, server, _incoming) = pair(Config::default());
    drop(client);
    within("server sees the end", server.closed()).await;
}

#[tokio::test]
async fn a_stream_dropped_right_after_its_fin_still_delivers_everything() {
    let (client, _server, mut incoming) = pair(Config::default());
    let data = pattern(1 << 20, 3);
    let mut stream = client
        .open(stream_headers("data", 1, 0), false)
        .await
        .unwrap();
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    // The peer has not finished its side: dropping resets the stream, but only after the data
    // and the FIN queued before it.
    drop(stream);
    let mut accepted = within("accept", incoming.accept()).await.unwrap();
    accepted.reply(vec![], false).await.unwrap();
    let mut got = Vec::new();
    within("read", accepted.read_to_end(&mut got))
        .await
        .unwrap();
    assert!(got == data, "{} of {} bytes", got.len(), data.len());
    // Writing back fails: the opener reset the stream.
    within("reset seen", async {
        while accepted.write_all(b"late").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The kubelet writes its error text and then resets the error stream: the text is read
/// first, then the reset.
#[tokio::test]
async fn what_came_before_a_reset_is_still_read() {
    let (client, _server, mut incoming) = pair(Config::default());
    let mut error = client
        .open(stream_headers("error", 1, 0), false)
        .await
        .unwrap();
    error.shutdown().await.unwrap();
    let mut server_side = incoming.accept().await.unwrap();
    server_side.reply(vec![], false).await.unwrap();
    server_side
        .write_all(b"error forwarding port 1")
        .await
        .unwrap();
    server_side.flush().await.unwrap();
    server_side.reset(status::CANCEL, "after the text");
    let mut text = Vec::new();
    let result = within("read to the reset", error.read_to_end(&mut text)).await;
    assert_eq!(text, b"error forwarding port 1");
    assert_eq!(result.unwrap_err().kind(), io::ErrorKind::ConnectionReset);
}
