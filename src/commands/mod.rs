//! One file per command, as cargo's `commands/`: each turns its parsed arguments into the
//! options of the module that does the work, runs it, and prints the outcome. What several
//! commands share lives here: the checks of names given on the command line, the client
//! options, where sessions live, and printing data.
//!
//! Exit codes are chosen here, at the edge, from the errors the modules return.

use std::ffi::OsString;
use std::path::PathBuf;

use crate::cli::{Cli, ClusterArgs, LogFormat, Output};
use crate::cluster::client::ClientOptions;
use crate::exit::{Code, Fatal};
use crate::session::manage::Places;

/// One-shot output on stdout: a reader that goes away (`| head`) ends czctl quietly.
macro_rules! outln {
    ($($arg:tt)*) => { crate::output::println(format!($($arg)*)) };
}

/// [`outln!`] without the newline.
macro_rules! out {
    ($($arg:tt)*) => { crate::output::print(format!($($arg)*)) };
}

pub(crate) mod doctor;
pub(crate) mod namespace_teleport;
pub(crate) mod service_intercept;
pub(crate) mod session_close;
pub(crate) mod session_list;
pub(crate) mod status;
pub(crate) mod workload_teleport;

/// The global flags a background child repeats.
pub(crate) struct Globals {
    args: Vec<OsString>,
}

impl Globals {
    pub(crate) fn of(cli: &Cli) -> Globals {
        let mut args: Vec<OsString> = Vec::new();
        if cli.verbose > 0 {
            args.push(format!("-{}", "v".repeat(usize::from(cli.verbose))).into());
        }
        if cli.log_format == LogFormat::Json {
            args.extend(["--log-format".into(), "json".into()]);
        }
        Globals { args }
    }
}

pub(crate) fn client_options(cluster: &ClusterArgs) -> ClientOptions {
    ClientOptions {
        kubeconfig: cluster.kubeconfig.clone(),
        context: cluster.context.clone(),
        impersonate: crate::cluster::client::Impersonate {
            user: cluster.as_user.clone(),
            groups: cluster.as_groups.clone(),
            uid: cluster.as_uid.clone(),
        },
    }
}

/// Refuses a namespace name the API server would refuse, before anything is done.
pub(crate) fn check_namespace_name(ns: &str) -> Result<(), Fatal> {
    if is_dns_label(ns) {
        return Ok(());
    }
    Err(Fatal::new(
        Code::Usage,
        format!(
            "{} is not a namespace name (lowercase letters, digits and '-', at most 63)",
            crate::exit::shown(ns)
        ),
    ))
}

/// [`check_namespace_name`] of an optional `-n`.
pub(crate) fn check_namespace_flag(namespace: Option<&str>) -> Result<(), Fatal> {
    namespace.map_or(Ok(()), check_namespace_name)
}

pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub(crate) fn places(hosts_file: PathBuf) -> Places {
    Places {
        state_dir: crate::paths::state_dir(),
        registry_dir: crate::paths::registry_dir(),
        hosts_file,
    }
}

/// Prints data as JSON or YAML on stdout.
fn print_data(output: Output, value: &serde_json::Value) -> Result<(), Fatal> {
    match output {
        Output::Yaml => {
            let text = serde_saphyr::to_string(value)
                .map_err(|e| Fatal::new(Code::Failure, format!("cannot write YAML: {e}")))?;
            out!("{text}");
        }
        _ => outln!("{value}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names() {
        assert!(is_dns_label("demo-1"));
        assert!(!is_dns_label("Demo"));
        assert!(!is_dns_label("-a"));
        assert!(!is_dns_label(""));
        assert!(check_namespace_flag(None).is_ok());
        assert_eq!(check_namespace_name("A").unwrap_err().code, Code::Usage);
    }
}
