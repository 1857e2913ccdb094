//! One connection end to end in memory: a loopback TCP client, `conn::serve`, and a test
//! transport whose pods are tasks on the far end of `tokio::io::duplex` pipes.

pub(crate) mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::conn::REPLAY_LIMIT;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_duplex_64_mib_echo_arrives_intact() {
    const TOTAL: u64 = 64 << 20;
    let transport = MemTransport::new([("a", echo())]);
    let target = web_target(&["a"]);
    let (client, task) = connect(&target, &transport).await;
    let (mut rx, mut tx) = client.into_split();
    // The writer never waits for the reader: a relay that blocks one direction on the other
    // deadlocks here once the pipes are full.
    let writer = tokio::spawn(async move {
        let mut chunk = vec![0u8; 100_000];
        let mut offset = 0;
        while offset < TOTAL {
            let n = chunk.len().min((TOTAL - offset) as usize);
            fill(&mut chunk[..n], offset);
            tx.write_all(&chunk[..n]).await.unwrap();
            offset += n as u64;
        }
        tx.shutdown().await.unwrap();
    });
    let reader = async {
        let mut buf = vec![0u8; 64 * 1024];
        let mut expected = vec![0u8; buf.len()];
        let mut offset = 0u64;
        loop {
            let n = rx.read(&mut buf).await.unwrap();
            if n == 0 {
                return offset;
            }
            fill(&mut expected[..n], offset);
            assert!(
                buf[..n] == expected[..n],
                "bytes differ near offset {offset}"
            );
            offset += n as u64;
        }
    };
    let read = timeout(LONG, reader).await.expect("the echo completes");
    assert_eq!(read, TOTAL);
    timeout(PATIENCE, writer).await.unwrap().unwrap();
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(target.stats.bytes_up.load(Ordering::Relaxed), TOTAL);
    assert_eq!(target.stats.bytes_down.load(Ordering::Relaxed), TOTAL);
    assert_eq!(target.stats.open.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_client_half_close_reaches_the_pod_and_the_answer_still_arrives() {
    // Before the pod has answered (phase 1): an HTTP/1.0-style request, then EOF.
    let transport = MemTransport::new([("a", read_all_then_report(b""))]);
    let target = web_target(&["a"]);
    let (mut client, task) = connect(&target, &transport).await;
    client.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"read 18 bytes");
    timeout(PATIENCE, task).await.unwrap().unwrap();

    // After the pod has answered (phase 2).
    let transport = MemTransport::new([("a", read_all_then_report(b"hello\n"))]);
    let target = web_target(&["a"]);
    let (mut client, task) = connect(&target, &transport).await;
    let mut greeting = [0u8; 6];
    timeout(PATIENCE, client.read_exact(&mut greeting))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&greeting, b"hello\n");
    client.write_all(b"bye").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"read 3 bytes");
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(target.stats.open.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_pod_half_close_reaches_the_client_which_can_still_send() {
    // With a first answer (phase 2), and with none at all (the pod's EOF ends phase 1).
    for banner in [&b"banner"[..], b""] {
        let (heard_tx, mut heard) = mpsc::unbounded_channel();
        let transport = MemTransport::new([("a", half_close_then_listen(banner, heard_tx))]);
        let target = web_target(&["a"]);
        let (mut client, task) = connect(&target, &transport).await;
        assert_eq!(
            read_to_end(&mut client).await,
            banner,
            "EOF after the banner"
        );
        client.write_all(b"still talking").await.unwrap();
        client.shutdown().await.unwrap();
        let heard = timeout(PATIENCE, heard.recv()).await.unwrap().unwrap();
        assert_eq!(heard, b"still talking");
        timeout(PATIENCE, task).await.unwrap().unwrap();
        assert_eq!(target.stats.bytes_up.load(Ordering::Relaxed), 13);
        assert_eq!(
            target.stats.bytes_down.load(Ordering::Relaxed),
            banner.len() as u64
        );
    }
}

#[tokio::test]
async fn a_refusing_pod_is_replaced_and_the_kept_bytes_and_eof_are_replayed() {
    let (refused_tx, mut refused) = mpsc::unbounded_channel();
    let transport = MemTransport::new([
        ("a", refuse_after_reading(None, refused_tx)),
        ("b", read_all_then_echo()),
    ]);
    let target = web_target(&["a", "b"]);
    let (mut client, task) = connect(&target, &transport).await;
    client.write_all(b"hello world").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"hello world");
    timeout(PATIENCE, task).await.unwrap().unwrap();
    // The first pod saw the request and its EOF before refusing.
    assert_eq!(refused.recv().await.unwrap(), b"hello world");
    assert_eq!(transport.opened(), ["a", "b"]);
    assert_eq!(target.stats.last_pod().as_deref(), Some("b"));
    // Replayed bytes count once.
    assert_eq!(target.stats.bytes_up.load(Ordering::Relaxed), 11);
    assert_eq!(target.stats.bytes_down.load(Ordering::Relaxed), 11);
}

#[tokio::test]
async fn a_pod_refusing_before_the_client_ends_is_replaced_too() {
    let (refused_tx, _refused) = mpsc::unbounded_channel();
    let transport = MemTransport::new([
        ("a", refuse_after_reading(Some(5), refused_tx)),
        ("b", echo()),
    ]);
    let target = web_target(&["a", "b"]);
    let (mut client, task) = connect(&target, &transport).await;
    client.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    timeout(PATIENCE, client.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"hello");
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"");
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(transport.opened(), ["a", "b"]);
}

#[tokio::test]
async fn when_every_pod_refuses_the_client_is_closed_and_the_reason_kept() {
    let (refused_tx, _refused) = mpsc::unbounded_channel();
    let transport = MemTransport::new([("a", refuse_after_reading(Some(2), refused_tx))]);
    let target = web_target(&["a"]);
    let (mut client, task) = connect(&target, &transport).await;
    client.write_all(b"hi").await.unwrap();
    let mut rest = Vec::new();
    let _ = timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(transport.opened(), ["a"]);
    let error = target.stats.last_error().unwrap();
    assert!(error.starts_with("no ready pod left"), "{error}");
    assert!(error.contains("connection refused"), "{error}");
    assert_eq!(target.stats.open.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn past_the_replay_limit_the_connection_stays_with_its_pod() {
    let (refused_tx, mut refused) = mpsc::unbounded_channel();
    let transport = MemTransport::new([
        ("a", refuse_after_reading(None, refused_tx)),
        ("b", read_all_then_echo()),
    ]);
    let target = web_target(&["a", "b"]);
    let (mut client, task) = connect(&target, &transport).await;
    let sent = vec![7u8; 3 * REPLAY_LIMIT];
    client.write_all(&sent).await.unwrap();
    client.shutdown().await.unwrap();
    // Too much was sent to replay it: the refusal ends the connection.
    let mut rest = Vec::new();
    let _ = timeout(PATIENCE, client.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(refused.recv().await.unwrap(), sent);
    assert_eq!(transport.opened(), ["a"]);
    assert_eq!(
        target.stats.bytes_up.load(Ordering::Relaxed),
        sent.len() as u64
    );
}

#[tokio::test]
async fn the_open_gauge_returns_to_zero_when_the_task_is_aborted() {
    // Aborted in phase 1 (the pod never answers), then in phase 2 (echoing).
    for answering in [false, true] {
        let pod = if answering { echo() } else { silent() };
        let transport = MemTransport::new([("a", pod)]);
        let target = web_target(&["a"]);
        let (mut client, task) = connect(&target, &transport).await;
        client.write_all(b"ping").await.unwrap();
        if answering {
            let mut pong = [0u8; 4];
            timeout(PATIENCE, client.read_exact(&mut pong))
                .await
                .unwrap()
                .unwrap();
        } else {
            wait_for(|| transport.opened().len() == 1).await;
        }
        assert_eq!(target.stats.open.load(Ordering::Relaxed), 1);
        task.abort();
        let ended = timeout(PATIENCE, task).await.unwrap();
        assert!(ended.unwrap_err().is_cancelled());
        assert_eq!(target.stats.open.load(Ordering::Relaxed), 0);
        assert_eq!(target.stats.total.load(Ordering::Relaxed), 1);
    }
}

#[tokio::test]
async fn byte_counters_are_exact_and_live() {
    let transport = MemTransport::new([("a", echo())]);
    let target = web_target(&["a"]);
    let (mut client, task) = connect(&target, &transport).await;
    let mut sent = 0u64;
    for size in [1000usize, 5000, 100_000] {
        client.write_all(&vec![1u8; size]).await.unwrap();
        let mut back = vec![0u8; size];
        timeout(PATIENCE, client.read_exact(&mut back))
            .await
            .unwrap()
            .unwrap();
        sent += size as u64;
        // Counted while the connection is open: what reached the client has passed the pod
        // stream both ways.
        assert_eq!(target.stats.bytes_up.load(Ordering::Relaxed), sent);
        assert_eq!(target.stats.bytes_down.load(Ordering::Relaxed), sent);
    }
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"");
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(target.stats.bytes_up.load(Ordering::Relaxed), sent);

    // More than the replay limit before any answer, then a larger answer after the EOF.
    let transport = MemTransport::new([("a", read_all_then_send(50_000))]);
    let target = web_target(&["a"]);
    let (mut client, task) = connect(&target, &transport).await;
    client.write_all(&vec![2u8; 100_000]).await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await.len(), 50_000);
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(target.stats.bytes_up.load(Ordering::Relaxed), 100_000);
    assert_eq!(target.stats.bytes_down.load(Ordering::Relaxed), 50_000);
}

#[tokio::test]
async fn over_a_transport_that_cannot_half_close_the_answer_arrives_then_the_linger_ends_it() {
    // The pod answers one line and waits for an EOF that never comes.
    let transport =
        MemTransport::new([("a", answer_line_and_wait())]).lingering(Duration::from_millis(300));
    let target = web_target(&["a"]);
    let (mut client, task) = connect(&target, &transport).await;
    client.write_all(b"question\n").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(read_to_end(&mut client).await, b"answer\n");
    timeout(PATIENCE, task).await.unwrap().unwrap();
    assert_eq!(target.stats.open.load(Ordering::Relaxed), 0);
}
