//! The agent over loopback TCP, with the laptop's side played byte by byte by the test.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::*;
use crate::frame::{Frame, FrameCodec};
use crate::message::{read_line, Answer, Signal};

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// Generous bound for anything that should happen "soon" on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(30);

fn config(token: &str) -> AgentConfig {
    AgentConfig {
        token: token.to_string(),
        keepalive: Duration::from_secs(15),
        park_timeout: Duration::from_secs(5),
        start_timeout: Duration::from_secs(10),
    }
}

/// Binds and spawns an agent on loopback.
async fn start_agent(config: AgentConfig) -> Running {
    Agent::bind(LOOPBACK, 0, 0, config)
        .await
        .expect("binding the agent")
        .spawn()
}

/// A control connection that said hello with `token` and read the agent's answer: once this
/// returns `Accepted`, the connection is in the agent's line.
async fn hello(agent: &Running, token: &str) -> (BufReader<TcpStream>, Answer) {
    let mut conn = BufReader::new(TcpStream::connect(agent.control).await.unwrap());
    conn.write_all(Hello::new(token).line().as_bytes())
        .await
        .unwrap();
    let line = tokio::time::timeout(PATIENCE, read_line(&mut conn))
        .await
        .expect("an answer in time")
        .unwrap()
        .expect("a whole answer line");
    (conn, Answer::parse(&line).unwrap())
}

async fn park(agent: &Running, token: &str) -> BufReader<TcpStream> {
    let (conn, answer) = hello(agent, token).await;
    assert!(matches!(answer, Answer::Accepted { .. }), "{answer:?}");
    conn
}

async fn next_signal(conn: &mut BufReader<TcpStream>) -> Signal {
    tokio::time::timeout(PATIENCE, Signal::read(conn))
        .await
        .expect("a signal in time")
        .unwrap()
        .unwrap()
}

/// Reads everything a client gets until the agent closes it; a reset counts as closed (the
/// agent does not read a request it cannot deliver, so its close may be a reset).
async fn read_until_closed(client: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    match tokio::time::timeout(PATIENCE, client.read_to_end(&mut got))
        .await
        .expect("the agent closes the client")
    {
        Ok(_) => got,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            got
        }
    }
}

#[tokio::test]
async fn malformed_and_foreign_hellos_are_denied_with_a_reason() {
    let agent = start_agent(config("tok")).await;
    for (hello, reason) in [
        ("GET / HTTP/1.1\r\n", "DENIED malformed hello\n"),
        (
            "CZTUN/2 tok\n",
            "DENIED unsupported protocol version 2; this agent speaks 1\n",
        ),
        ("CZTUN/1 tok2\n", "DENIED invalid token\n"),
        ("CZTUN/1 to\n", "DENIED invalid token\n"),
    ] {
        let mut conn = TcpStream::connect(agent.control).await.unwrap();
        conn.write_all(hello.as_bytes()).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(PATIENCE, conn.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answer, reason, "after {hello:?}");
    }
    agent.stop().await;
}

#[tokio::test]
async fn a_denied_token_never_reaches_a_client() {
    let agent = start_agent(AgentConfig {
        park_timeout: Duration::from_millis(300),
        ..config("right-token")
    })
    .await;
    let (mut denied, answer) = hello(&agent, "wrong-token").await;
    assert_eq!(
        answer,
        Answer::Denied {
            reason: "invalid token".into()
        }
    );
    let mut client = TcpStream::connect(agent.data).await.unwrap();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    assert_eq!(read_until_closed(&mut client).await, b"");
    let mut rest = Vec::new();
    denied.read_to_end(&mut rest).await.unwrap();
    assert!(
        rest.is_empty(),
        "a denied connection gets no signal: {rest:?}"
    );
    agent.stop().await;
}

#[tokio::test]
async fn a_client_is_closed_when_nothing_is_parked() {
    let agent = start_agent(AgentConfig {
        park_timeout: Duration::from_millis(300),
        ..config("tok")
    })
    .await;
    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(agent.data).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await, b"");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed before the park timeout"
    );
    agent.stop().await;
}

/// Parked connections are claimed in the order their `OK`s were sent; a refusal closes the
/// client; a ready connection carries frames both ways with half-closes.
#[tokio::test]
async fn parked_connections_are_claimed_in_order_and_carry_frames() {
    let agent = start_agent(config("tok")).await;
    let mut first = park(&agent, "tok").await;
    let mut second = park(&agent, "tok").await;

    let mut refused_client = TcpStream::connect(agent.data).await.unwrap();
    assert_eq!(next_signal(&mut first).await, Signal::Start);
    Signal::Refused.write(&mut first).await.unwrap();
    assert_eq!(read_until_closed(&mut refused_client).await, b"");

    let mut client = TcpStream::connect(agent.data).await.unwrap();
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    assert_eq!(next_signal(&mut second).await, Signal::Start);
    Signal::Ready.write(&mut second).await.unwrap();
    let (rx, tx) = tokio::io::split(second);
    let mut frames_in = FramedRead::new(rx, FrameCodec);
    let mut frames_out = FramedWrite::new(tx, FrameCodec);
    let mut request = Vec::new();
    // Data frames until the end frame (the client's half-close).
    while let Frame::Data(data) = frames_in.next().await.unwrap().unwrap() {
        request.extend_from_slice(&data);
    }
    assert_eq!(request, b"request");
    frames_out
        .send(Frame::Data(Bytes::from_static(b"answer")))
        .await
        .unwrap();
    frames_out.send(Frame::End).await.unwrap();
    assert_eq!(read_until_closed(&mut client).await, b"answer");
    agent.stop().await;
}

#[tokio::test]
async fn a_dead_parked_connection_is_skipped() {
    let agent = start_agent(AgentConfig {
        start_timeout: Duration::from_millis(300),
        ..config("tok")
    })
    .await;
    let mut silent = park(&agent, "tok").await;
    let mut alive = park(&agent, "tok").await;
    let mut client = TcpStream::connect(agent.data).await.unwrap();
    // The first in line gets the start signal and never answers; the next one is started.
    assert_eq!(next_signal(&mut silent).await, Signal::Start);
    assert_eq!(next_signal(&mut alive).await, Signal::Start);
    Signal::Ready.write(&mut alive).await.unwrap();
    let mut frames_out = FramedWrite::new(alive, FrameCodec);
    frames_out
        .send(Frame::Data(Bytes::from_static(b"from the laptop")))
        .await
        .unwrap();
    frames_out.send(Frame::End).await.unwrap();
    let mut got = vec![0u8; b"from the laptop".len()];
    tokio::time::timeout(PATIENCE, client.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, b"from the laptop");
    agent.stop().await;
}

#[tokio::test]
async fn parked_connections_that_miss_keepalives_are_dropped() {
    let agent = start_agent(AgentConfig {
        keepalive: Duration::from_millis(100),
        ..config("tok")
    })
    .await;
    let (mut silent, answer) = hello(&agent, "tok").await;
    assert_eq!(
        answer,
        Answer::Accepted {
            keepalive: Duration::from_millis(100)
        }
    );
    // Pings arrive; unanswered, the agent closes the connection.
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, silent.read_to_end(&mut rest))
        .await
        .expect("the agent closes a silent parked connection")
        .unwrap();
    assert!(!rest.is_empty() && rest.iter().all(|b| *b == Signal::Ping.byte()));
    agent.stop().await;
}

#[tokio::test]
async fn stopping_the_agent_closes_parked_connections() {
    let agent = start_agent(config("tok")).await;
    let mut parked = park(&agent, "tok").await;
    agent.stop().await;
    let mut rest = Vec::new();
    tokio::time::timeout(PATIENCE, parked.read_to_end(&mut rest))
        .await
        .expect("closed at stop")
        .unwrap();
    assert!(rest.is_empty());
}

#[test]
fn the_agent_requires_a_token_and_never_echoes_it() {
    let missing = token_from(None).unwrap_err().to_string();
    assert!(missing.contains("CZCTL_TUNNEL_TOKEN"), "{missing}");
    assert!(token_from(Some(String::new())).is_err());
    let bad = token_from(Some("secret with spaces".into()))
        .unwrap_err()
        .to_string();
    assert!(!bad.contains("secret"), "{bad}");
    assert_eq!(token_from(Some("abc".into())).unwrap(), "abc");
}

#[test]
fn the_agent_binds_the_pod_ip_when_set() {
    assert_eq!(
        bind_ip_from(None).unwrap(),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    );
    assert_eq!(
        bind_ip_from(Some("".into())).unwrap(),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    );
    assert_eq!(
        bind_ip_from(Some("127.3.0.7".into())).unwrap(),
        "127.3.0.7".parse::<IpAddr>().unwrap()
    );
    assert!(bind_ip_from(Some("pod".into())).is_err());
}

#[tokio::test]
async fn an_unusable_token_or_a_taken_port_is_a_setup_error() {
    assert!(matches!(
        Agent::bind(LOOPBACK, 0, 0, config("two words")).await,
        Err(SetupError::UnusableToken)
    ));
    let taken = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let port = taken.local_addr().unwrap().port();
    match Agent::bind(LOOPBACK, 0, port, config("tok")).await {
        Err(e @ SetupError::Bind { port: "data", .. }) => {
            assert!(e.to_string().contains(&port.to_string()), "{e}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("bound a taken port"),
    }
}
