//! What an intercept leaves in the cluster, and closing it from any czctl run: a stale local
//! session's route (for `session close`, through [`crate::session::manage::Leftovers`]), and
//! with `service intercept SVC --close` every route of this machine plus any whose heartbeat
//! expired.

use kube::Client;

use super::close::{remove_route, Closed};
use super::heartbeat;
use super::names;
use super::setup::{close_fatal, store_error};
use super::store::RecordStore;
use crate::cluster::client::{self, ClientOptions};
use crate::exit::{Code, Fatal};
use crate::session::manage::{close_live, judged, Listed, Places};
use crate::session::record::{InterceptRef, Record, SessionState};

async fn connect(options: &ClientOptions) -> Result<Client, Fatal> {
    client::connect(options)
        .await
        .map(|c| c.client)
        .map_err(|e| Fatal::new(Code::Config, e.to_string()))
}

fn describe(session: &str, what: &str, closed: &Closed) -> String {
    let done = super::describe_closed(what, closed);
    format!("session {session}: {done}")
}

/// Removes the route a dead session left in the cluster, then its record; a failure says how
/// to discard the session when its cluster is gone.
pub async fn clean(places: &Places, record: &Record, force: bool) -> Result<String, Fatal> {
    clean_stale(places, record, force).await.map_err(|e| {
        Fatal::new(
            e.code,
            format!(
                "session {}: {}\nIf its cluster or kubeconfig is gone, discard it on this machine: czctl session close {} --forget",
                record.id, e.message, record.id
            ),
        )
    })
}

/// `--forget`: removes the session's record only, and says what stays in the cluster and
/// how to remove it later.
pub fn forget(places: &Places, record: &Record) -> String {
    record.remove(&places.state_dir);
    let Some(ic) = &record.intercept else {
        return format!("session {}: forgotten on this machine", record.id);
    };
    format!(
        "session {}: forgotten on this machine; left in namespace {} of context {}: its route on \
         service {} (header {}), tunnel agent and heartbeat Lease. Once the heartbeat expires, \
         `czctl service intercept {} -n {} --close` removes them from any machine; or by hand: \
         kubectl -n {} delete deployment,service,secret,lease,networkpolicy -l {}={}",
        record.id,
        ic.namespace,
        record.context,
        ic.service,
        ic.header,
        ic.service,
        ic.namespace,
        ic.namespace,
        names::TUNNEL_LABEL,
        record.id
    )
}

/// Removes the route a dead session left in the cluster, then its record.
async fn clean_stale(places: &Places, record: &Record, force: bool) -> Result<String, Fatal> {
    let Some(ic) = &record.intercept else {
        return Ok(String::new());
    };
    let client = connect(&options_of(record, ic)).await?;
    let store = RecordStore::new(client.clone(), &ic.namespace, ic.backend);
    let closed = remove_route(
        &client,
        &store,
        &ic.namespace,
        &ic.service,
        &record.id,
        force,
    )
    .await
    .map_err(close_fatal)?;
    record.remove(&places.state_dir);
    let what = format!("service {}/{}", ic.namespace, ic.service);
    Ok(format!(
        "{} (it was stale: {})",
        describe(&record.id, &what, &closed),
        record.liveness().describe(record.pid)
    ))
}

fn options_of(record: &Record, ic: &InterceptRef) -> ClientOptions {
    ClientOptions {
        kubeconfig: ic.kubeconfig.clone(),
        context: Some(record.context.clone()),
        impersonate: crate::cluster::client::Impersonate::from_args(&ic.impersonate),
    }
}

/// `service intercept SVC --close`: this machine's intercepts of the Service (live ones are
/// asked to close, stale ones cleaned) and every route whose heartbeat expired.
pub async fn close_intercepts(
    places: &Places,
    options: &ClientOptions,
    namespace: Option<&str>,
    service: &str,
    force: bool,
) -> Result<Vec<String>, Fatal> {
    let client = connect(options).await?;
    let ns = namespace.map_or_else(|| client.default_namespace().to_string(), str::to_string);
    let what = format!("service {ns}/{service}");
    let mut said = Vec::new();
    let (records, invalid) = judged(places)?;
    for bad in &invalid {
        eprintln!("czctl: {}", bad.message());
    }
    for (record, liveness) in records {
        let Some(ic) = &record.intercept else {
            continue;
        };
        if ic.namespace != ns || ic.service != service {
            continue;
        }
        if !liveness.is_stale() {
            said.push(close_live(&record).await);
        }
        // Only a record whose process is over is cleaned up from here.
        if Record::path(&places.state_dir, &record.id).exists() && record.liveness().is_stale() {
            said.push(clean_stale(places, &record, force).await?);
        }
    }
    if let Some((store, stored)) =
        RecordStore::find(client.clone(), &ns, &names::record(&ns, service))
            .await
            .map_err(|e| store_error("reading the session record", e))?
    {
        let mut sessions: Vec<String> = Vec::new();
        for route in &stored.body.routes {
            if heartbeat::expired(&client, &ns, &route.lease).await == Some(true) {
                sessions.push(route.session.clone());
            }
        }
        if stored.body.routes.is_empty() {
            // A close that stopped half-way (for example refused without --force).
            sessions.push(String::new());
        }
        for session in sessions {
            let closed = remove_route(&client, &store, &ns, service, &session, force)
                .await
                .map_err(close_fatal)?;
            said.push(if session.is_empty() {
                format!(
                    "finished an interrupted close: {}",
                    super::describe_closed(&what, &closed)
                )
            } else {
                describe(&session, &what, &closed) + " (its heartbeat had expired)"
            });
        }
    }
    if said.is_empty() {
        said.push(format!("no intercepts of {what} to close"));
    }
    Ok(said)
}

/// Marks live intercept sessions whose heartbeat Lease expired (a suspended laptop, a lost
/// network) as stale, asking the cluster with a short timeout; unreachable clusters leave the
/// mark as it is.
pub async fn mark_expired(sessions: &mut [Listed]) {
    for listed in sessions
        .iter_mut()
        .filter(|l| !l.stale && l.record.state == SessionState::Ready)
    {
        let Some(ic) = listed.record.intercept.clone() else {
            continue;
        };
        let check = async {
            let client = connect(&options_of(&listed.record, &ic)).await.ok()?;
            let lease = names::session_part(&ic.service, &listed.record.id);
            heartbeat::expired(&client, &ic.namespace, &lease).await
        };
        let expired = tokio::time::timeout(std::time::Duration::from_secs(3), check).await;
        if let Ok(Some(true)) = expired {
            listed.stale = true;
        }
    }
}
