//! `czctl namespace teleport NS...`.

use super::{check_namespace_name, client_options, is_dns_label, Globals};
use crate::cli::{ClusterArgs, TeleportArgs};
use crate::exit::{Code, Fatal};
use crate::teleport::launch::{launch, Launch, Launched};
use crate::teleport::{self, TeleportOptions};

/// `czctl namespace teleport NS...`: in the background (or reusing this job's session), in
/// the foreground, or as the background child itself.
pub(crate) async fn run(
    args: TeleportArgs,
    cluster: &ClusterArgs,
    globals: &Globals,
) -> Result<i32, Fatal> {
    let foreground = args.foreground;
    let timeout = args.timeout;
    let mut options = teleport_options(args, cluster)?;
    if let Some(session) = crate::detach::child_session() {
        options.session = Some(session);
        options.detached = true;
        return teleport::run(options).await;
    }
    let launched = launch(Launch {
        options,
        foreground,
        timeout,
        global_args: globals.args.clone(),
    })
    .await?;
    match launched.record() {
        Some(record) => {
            outln!("{}", record.id);
            Ok(0)
        }
        None => match launched {
            Launched::Ended(code) => Ok(code),
            _ => unreachable!("a launch without a background session ran in the foreground"),
        },
    }
}

/// The options of a teleport, checked: namespace names, the cluster domain, no namespace twice.
pub(crate) fn teleport_options(
    args: TeleportArgs,
    cluster: &ClusterArgs,
) -> Result<TeleportOptions, Fatal> {
    for ns in &args.namespaces {
        check_namespace_name(ns)?;
    }
    if !args.cluster_domain.split('.').all(is_dns_label) {
        return Err(Fatal::new(
            Code::Usage,
            format!(
                "--cluster-domain {} is not a DNS domain (dot-separated labels of lowercase letters, digits and '-')",
                crate::exit::shown(&args.cluster_domain)
            ),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = args.namespaces.iter().find(|ns| !seen.insert(*ns)) {
        return Err(Fatal::new(
            Code::Usage,
            format!("namespace {} is given twice", crate::exit::shown(dup)),
        ));
    }
    Ok(TeleportOptions {
        namespaces: args.namespaces,
        client: client_options(cluster),
        labels: args.selector,
        hosts_file: args.hosts_file,
        cluster_domain: args.cluster_domain,
        state_dir: crate::paths::state_dir(),
        registry_dir: crate::paths::registry_dir(),
        session: None,
        detached: false,
        command: None,
        on_ready: None,
        timeout: args.timeout,
    })
}
