//! `czctl doctor`: checks whether czctl can work here, each check with pass/warn/fail and the
//! fix.
//!
//! Checks, in order: the kubeconfig and context load; the API server answers (and its
//! version); the rights czctl needs in the namespace (asked with SelfSubjectAccessReview); the
//! hosts file is writable (or sudo is available); czctl's loopback addresses can be bound and
//! connected to; the open-file limit; leftovers of ended runs (hosts blocks, registered
//! addresses). When the client cannot be built or the API server is not reachable, the checks
//! that need it are reported as skipped (warnings). Nothing is changed on the machine or in the
//! cluster.
//!
//! - [`check`](mod@check): the result type, text and JSON rendering, exit code (pure).
//! - `cluster`, `rights`: the Kubernetes checks.
//! - `local`, `stale`: the checks of this machine.

pub mod check;
mod cluster;
mod local;
mod rights;
mod stale;

use std::path::PathBuf;

pub use check::{exit_code, render_json, render_text, Check, Status};

use crate::cluster::client::ClientOptions;
use crate::exit::{Code, Fatal};

/// What `czctl doctor` examines.
#[derive(Debug, Clone)]
pub struct DoctorOptions {
    /// Client configuration.
    pub client: ClientOptions,
    /// The namespace whose rights are checked; the context's namespace (else `default`) when
    /// `None`.
    pub namespace: Option<String>,
    /// The hosts file czctl would edit.
    pub hosts_file: PathBuf,
    /// The address registry shared by all czctl runs.
    pub registry_dir: PathBuf,
}

/// Runs every check; never fails, failures are checks.
pub async fn run(options: &DoctorOptions) -> Vec<Check> {
    let mut checks = cluster::checks(&options.client, options.namespace.as_deref()).await;
    checks.push(local::hosts_file(&options.hosts_file).await);
    checks.push(local::loopback().await);
    checks.push(local::file_limit());
    checks.push(stale::hosts_blocks(
        &options.hosts_file,
        crate::session::process::is_alive,
    ));
    checks.push(stale::registrations(&options.registry_dir));
    checks
}

/// `czctl doctor`: runs the checks, prints the report on stdout (the table, or with `json` the
/// document of [`render_json`]), and fails with the first failed check's exit code. A reader
/// of stdout that goes away ends czctl quietly (see [`crate::output`]).
pub async fn command(options: &DoctorOptions, output: crate::cli::Output) -> Result<(), Fatal> {
    use crate::cli::Output;
    let checks = run(options).await;
    match output {
        Output::Json => crate::output::println(format!("{:#}", render_json(&checks))),
        Output::Yaml => {
            let text = serde_saphyr::to_string(&render_json(&checks))
                .map_err(|e| Fatal::new(Code::Failure, format!("cannot write YAML: {e}")))?;
            crate::output::print(text);
        }
        Output::Text => crate::output::print(render_text(&checks)),
    }
    let Some(code) = exit_code(&checks) else {
        return Ok(());
    };
    let failed: Vec<&Check> = checks.iter().filter(|c| c.status == Status::Fail).collect();
    let first = failed
        .first()
        .map(|c| format!(": {}: {}", c.name, c.detail))
        .unwrap_or_default();
    Err(Fatal::new(
        code,
        format!(
            "doctor: {} of {} checks failed{first}",
            failed.len(),
            checks.len()
        ),
    ))
}
