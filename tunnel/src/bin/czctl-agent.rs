//! `czctl-agent`: the in-cluster end of czctl's tunnel, the only program of the agent image
//! (`ghcr.io/czctl/czctl-agent:VERSION`). czctl's intercept runs it in a Deployment per session
//! with the token in `$CZCTL_TUNNEL_TOKEN` and the pod's address in `$POD_IP`; it stops on
//! SIGTERM or SIGINT. Logs go to stderr (`RUST_LOG`, default `info`).

use std::ffi::OsString;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use cztunnel::agent::{self, Options};
use tokio_util::sync::CancellationToken;
use tracing::info;

const USAGE: &str = "\
Usage: czctl-agent [OPTIONS]

The in-cluster end of czctl's tunnel. Reads the session token from CZCTL_TUNNEL_TOKEN and
binds POD_IP (all IPv4 addresses when unset).

Options:
      --control-port PORT       where the laptop parks connections [default: 7000]
      --data-port PORT          where the router's connections arrive [default: 7001]
      --park-timeout SECONDS    how long a connection waits for a parked laptop connection
                                [default: 5]
      --keepalive SECONDS       seconds between keepalives on parked connections, at least 1
                                [default: 15]
  -h, --help                    print this help
  -V, --version                 print the version";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
enum Command {
    Run(Options),
    Help,
    Version,
}

fn number<T: FromStr>(parser: &mut lexopt::Parser, flag: &str) -> Result<T, String> {
    let value = parser
        .value()
        .map_err(|e| e.to_string())?
        .into_string()
        .map_err(|v| format!("{flag}: {v:?} is not a number"))?;
    value
        .parse()
        .map_err(|_| format!("{flag}: {value:?} is not a valid number"))
}

/// Parses the arguments after the program name.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    use lexopt::Arg::{Long, Short};
    let mut options = Options::default();
    let mut parser = lexopt::Parser::from_args(args);
    while let Some(arg) = parser.next().map_err(|e| e.to_string())? {
        match arg {
            Long("control-port") => options.control_port = number(&mut parser, "--control-port")?,
            Long("data-port") => options.data_port = number(&mut parser, "--data-port")?,
            Long("park-timeout") => {
                options.park_timeout = Duration::from_secs(number(&mut parser, "--park-timeout")?)
            }
            Long("keepalive") => {
                let seconds: u64 = number(&mut parser, "--keepalive")?;
                if seconds == 0 {
                    return Err("--keepalive: must be at least 1 second".into());
                }
                options.keepalive = Duration::from_secs(seconds);
            }
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            other => return Err(other.unexpected().to_string()),
        }
    }
    Ok(Command::Run(options))
}

/// Cancels `stop` at SIGTERM (what the kubelet sends) or SIGINT.
fn cancel_on_signal(stop: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!("tunnel agent stopping");
        stop.cancel();
    });
    Ok(())
}

fn main() -> ExitCode {
    let options = match parse(std::env::args_os().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Version) => {
            println!("czctl-agent {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("czctl-agent: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = match tracing_subscriber::filter::Targets::from_str(&filter) {
        Ok(filter) => filter,
        Err(e) => {
            eprintln!("czctl-agent: RUST_LOG={filter:?}: {e}");
            return ExitCode::from(2);
        }
    };
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(filter)
        .init();
    // One thread: the agent relays a developer's requests, and its pod asks for 10m of CPU.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("czctl-agent: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let stop = CancellationToken::new();
        cancel_on_signal(stop.clone()).map_err(|e| format!("installing signal handlers: {e}"))?;
        agent::run(&options, stop).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("czctl-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Command, String> {
        parse(list.iter().map(OsString::from))
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        assert_eq!(args(&[]), Ok(Command::Run(Options::default())));
        let defaults = Options::default();
        assert_eq!(defaults.control_port, 7000);
        assert_eq!(defaults.data_port, 7001);
        assert_eq!(defaults.park_timeout, Duration::from_secs(5));
        assert_eq!(defaults.keepalive, Duration::from_secs(15));
    }

    #[test]
    fn flags_set_options_in_both_spellings() {
        assert_eq!(
            args(&[
                "--control-port",
                "9000",
                "--data-port=9001",
                "--park-timeout",
                "2",
                "--keepalive=3"
            ]),
            Ok(Command::Run(Options {
                control_port: 9000,
                data_port: 9001,
                park_timeout: Duration::from_secs(2),
                keepalive: Duration::from_secs(3),
            }))
        );
        assert_eq!(args(&["--help"]), Ok(Command::Help));
        assert_eq!(args(&["-V"]), Ok(Command::Version));
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let keepalive = args(&["--keepalive", "0"]).unwrap_err();
        assert!(keepalive.contains("--keepalive"), "{keepalive}");
        let port = args(&["--control-port", "70000"]).unwrap_err();
        assert!(port.contains("--control-port"), "{port}");
        let missing = args(&["--data-port"]).unwrap_err();
        assert!(missing.contains("--data-port"), "{missing}");
        assert!(args(&["agent", "tunnel"]).is_err());
        assert!(args(&["--bogus"]).is_err());
    }
}
