//! `czctl doctor`: checks this machine and the cluster for what czctl needs.

use super::client_options;
use crate::cli::{ClusterArgs, DoctorArgs};
use crate::exit::Fatal;

/// Runs the checks and prints them.
pub(crate) async fn run(args: DoctorArgs, cluster: &ClusterArgs) -> Result<(), Fatal> {
    let options = doctor_options(&args, cluster)?;
    crate::doctor::command(&options, args.output).await
}

fn doctor_options(
    args: &DoctorArgs,
    cluster: &ClusterArgs,
) -> Result<crate::doctor::DoctorOptions, Fatal> {
    super::check_namespace_flag(args.namespace.as_deref())?;
    Ok(crate::doctor::DoctorOptions {
        client: client_options(cluster),
        namespace: args.namespace.clone(),
        hosts_file: args.hosts_file.clone(),
        registry_dir: crate::paths::registry_dir(),
    })
}
