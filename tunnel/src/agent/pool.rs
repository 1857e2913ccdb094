//! The agent's parked connections: each is owned by a task that answers keepalives until a
//! client claims it; clients wait in line for one.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::message::{write_line, Answer, Signal};

/// A laptop connection as the agent holds it (buffered: bytes after a signal stay readable).
pub(crate) type Conn = BufReader<TcpStream>;

/// Where a claimed connection is handed over.
type Claim = oneshot::Sender<Conn>;

/// One parked connection, seen from the line: a way to ask its task for the connection.
struct Parked {
    claim: oneshot::Sender<Claim>,
}

/// The line of parked connections.
#[derive(Default)]
pub(crate) struct Pool {
    queue: Mutex<VecDeque<Parked>>,
    arrived: Notify,
}

impl Pool {
    /// Parked connections whose task is still alive (an estimate for logs).
    pub(crate) fn len(&self) -> usize {
        self.lock().iter().filter(|p| !p.claim.is_closed()).count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Parked>> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, parked: Parked) {
        let mut queue = self.lock();
        queue.retain(|p| !p.claim.is_closed());
        queue.push_back(parked);
        drop(queue);
        self.arrived.notify_one();
    }

    /// Takes the oldest live parked connection, waiting for one until `deadline`.
    pub(crate) async fn take(&self, deadline: Instant) -> Option<Conn> {
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            loop {
                let next = self.lock().pop_front();
                let Some(parked) = next else { break };
                let (tx, rx) = oneshot::channel();
                if parked.claim.send(tx).is_err() {
                    continue; // its task ended: the connection closed or missed a ping
                }
                if let Ok(conn) = rx.await {
                    return Some(conn);
                }
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                return None;
            }
        }
    }

    /// Puts `conn` in line, then accepts its hello (`OK`, so a laptop that read the answer
    /// knows its connection is in line), then keeps it alive (pings every `keepalive`) until
    /// a client claims it, it dies, or `stop`. A claim that arrives while the answer is being
    /// written waits for it.
    pub(crate) async fn park(
        &self,
        mut conn: Conn,
        keepalive: Duration,
        answer_timeout: Duration,
        stop: &CancellationToken,
    ) {
        let (claim_tx, mut claim_rx) = oneshot::channel::<Claim>();
        self.push(Parked { claim: claim_tx });
        let answer = Answer::Accepted { keepalive }.line();
        let accepted = tokio::select! {
            sent = tokio::time::timeout(answer_timeout, write_line(&mut conn, &answer)) => matches!(sent, Ok(Ok(()))),
            _ = stop.cancelled() => return,
        };
        if !accepted {
            debug!("the accept answer could not be sent");
            return;
        }
        debug!("tunnel connection parked");
        let mut ticks = tokio::time::interval_at(Instant::now() + keepalive, keepalive);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut awaiting_pong = false;
        loop {
            tokio::select! {
                claim = &mut claim_rx => {
                    if let Ok(handover) = claim {
                        let _ = handover.send(conn);
                    }
                    return;
                }
                signal = Signal::read(&mut conn) => match signal {
                    Ok(Ok(Signal::Pong)) => awaiting_pong = false,
                    Ok(other) => {
                        debug!(?other, "unexpected byte on a parked connection; closing it");
                        return;
                    }
                    Err(_) => {
                        debug!("a parked connection closed");
                        return;
                    }
                },
                _ = ticks.tick() => {
                    if awaiting_pong {
                        debug!("a parked connection missed its keepalive; closing it");
                        return;
                    }
                    if !matches!(tokio::time::timeout(keepalive, Signal::Ping.write(&mut conn)).await, Ok(Ok(()))) {
                        debug!("a keepalive could not be sent; closing the parked connection");
                        return;
                    }
                    awaiting_pong = true;
                }
                _ = stop.cancelled() => return,
            }
        }
    }
}
