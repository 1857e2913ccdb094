//! `czctl service intercept SVC`, and `--close`.

use std::path::PathBuf;

use super::{check_namespace_flag, client_options, places};
use crate::cli::{ClusterArgs, InterceptArgs};
use crate::detach::Background;
use crate::exit::{Code, Fatal};

/// `czctl service intercept SVC`: start one (in the background, or the foreground), or
/// `--close`.
pub(crate) async fn run(args: InterceptArgs, cluster: &ClusterArgs) -> Result<i32, Fatal> {
    use crate::cli::TunnelKind;
    use crate::intercept::{spec, InterceptOptions, TunnelChoice};
    check_namespace_flag(args.namespace.as_deref())?;
    let usage = |e: spec::SpecError| Fatal::new(Code::Usage, e.to_string());
    let header = spec::parse_header(args.header.as_deref()).map_err(usage)?;
    let local = spec::local_target(args.local_port, args.local_url.as_deref()).map_err(usage)?;
    let client = client_options(cluster);
    let state_dir = crate::paths::state_dir();
    let tunnel = match args.tunnel {
        TunnelKind::Ngrok if !args.close => {
            let token = std::env::var(crate::tunnel::ngrok::TOKEN_ENV).ok();
            let authtoken = crate::tunnel::ngrok::check_token(token)
                .map_err(|e| Fatal::new(Code::Config, e.to_string()))?;
            TunnelChoice::Ngrok { authtoken }
        }
        _ => TunnelChoice::Cluster {
            agent_image: args.agent_image.clone(),
        },
    };
    if args.close {
        let places = places(PathBuf::from("/etc/hosts"));
        let said = crate::intercept::leftovers::close_intercepts(
            &places,
            &client,
            args.namespace.as_deref(),
            &args.service,
            args.force,
        )
        .await?;
        for line in said {
            outln!("{line}");
        }
        return Ok(0);
    }
    let mut options = InterceptOptions {
        client,
        namespace: args.namespace.clone(),
        service: args.service.clone(),
        header,
        local,
        port: args.port,
        router_image: args.router_image.clone(),
        tunnel,
        state_dir,
        session: None,
        detached: false,
        timeout: args.timeout,
    };
    match crate::detach::child_session() {
        Some(session) => {
            options.session = Some(session);
            options.detached = true;
        }
        None if !args.foreground => {
            let background = Background {
                session: crate::session::runtime::new_id("ic"),
                state_dir: options.state_dir.clone(),
                hosts_file: None,
                args: crate::detach::own_args(),
                // The child's own --timeout fires first and cleans up; this is the backstop.
                timeout: args.timeout + std::time::Duration::from_secs(30),
            };
            // The child writes its own record once it knows the cluster.
            crate::detach::start(&background, |_| Ok(())).await?;
            outln!("{}", background.session);
            return Ok(0);
        }
        None => {}
    }
    crate::intercept::run(options).await
}
