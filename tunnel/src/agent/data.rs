//! A client on the data port: take a parked connection, start it, relay.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::pool::{Conn, Pool};
use crate::message::Signal;
use crate::relay::{relay, Counters, RelayEnd};

/// How a start signal was answered.
#[derive(Debug)]
enum Started {
    /// The laptop reached its target: relay.
    Ready,
    /// The laptop's target refused: close the client.
    Refused,
    /// The parked connection was dead: try another.
    Dead(String),
}

/// Sends the start signal on `conn` and reads the laptop's answer (pongs still in flight are
/// skipped).
async fn start(conn: &mut Conn, timeout: Duration) -> Started {
    let deadline = Instant::now() + timeout;
    match tokio::time::timeout_at(deadline, Signal::Start.write(conn)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Started::Dead(format!("sending the start signal: {e}")),
        Err(_) => return Started::Dead("the start signal could not be sent in time".into()),
    }
    loop {
        match tokio::time::timeout_at(deadline, Signal::read(conn)).await {
            Ok(Ok(Ok(Signal::Pong))) => continue,
            Ok(Ok(Ok(Signal::Ready))) => return Started::Ready,
            Ok(Ok(Ok(Signal::Refused))) => return Started::Refused,
            Ok(Ok(Ok(other))) => return Started::Dead(format!("unexpected answer {other:?}")),
            Ok(Ok(Err(e))) => return Started::Dead(format!("unexpected answer: {e}")),
            Ok(Err(e)) => return Started::Dead(format!("no answer to the start signal: {e}")),
            Err(_) => {
                return Started::Dead(format!("no answer to the start signal in {timeout:?}"))
            }
        }
    }
}

/// Serves one client of the data port.
pub(crate) async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    pool: &Pool,
    park_timeout: Duration,
    start_timeout: Duration,
) {
    let _ = client.set_nodelay(true);
    let deadline = Instant::now() + park_timeout;
    loop {
        let Some(mut conn) = pool.take(deadline).await else {
            warn!(%peer, "no tunnel connection from the laptop within {park_timeout:?}; closing the client");
            return;
        };
        match start(&mut conn, start_timeout).await {
            Started::Ready => {
                debug!(%peer, parked = pool.len(), "relaying a client to the laptop");
                if let RelayEnd::Aborted(reason) = relay(client, conn, Counters::NONE).await {
                    debug!(%peer, %reason, "relay aborted");
                }
                return;
            }
            Started::Refused => {
                info!(%peer, "the laptop's local target refused the connection; closing the client");
                return;
            }
            Started::Dead(reason) => {
                debug!(%peer, %reason, "a parked connection was dead; trying the next");
            }
        }
    }
}
