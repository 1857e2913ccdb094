//! The `czctl` binary: parse arguments, set up logging, hand over to the library.
//!
//! SIGPIPE stays ignored (Rust's default): sockets must report `EPIPE`, not kill czctl. Output
//! on stdout goes through [`czctl::output`], which ends czctl quietly when its reader goes
//! away; messages on stderr never panic when stderr is closed.

use std::io::Write;

use clap::Parser;

/// Writes a message line to stderr; a closed stderr is ignored (nobody is left to tell).
fn say(message: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{message}");
}

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == czctl::hosts::helper::ARG) {
        // The privileged hosts-file helper: no async runtime, no Kubernetes client.
        let result = czctl::hosts::helper::parse_args(&args[2..])
            .and_then(|(file, state_dir)| czctl::hosts::helper::run(&file, &state_dir));
        return match result {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(fatal) => {
                say(format_args!("czctl hosts-helper: {fatal}"));
                std::process::ExitCode::from(fatal.code as u8)
            }
        };
    }
    let cli = match czctl::cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap echoes the offending value whole: a huge argument is cut, also in --help.
            let text = czctl::exit::elide_long_runs(&err.render().to_string());
            let code = err.exit_code();
            if err.use_stderr() {
                eprint!("{text}");
            } else {
                czctl::output::print(text);
            }
            return std::process::ExitCode::from(u8::try_from(code).unwrap_or(2));
        }
    };
    // kube's own client errors are reported by czctl with context; show them only at -vv.
    let default_filter = match cli.verbose {
        0 => "warn,kube_client=off,kube_runtime=off",
        1 => "info,kube_client=off,kube_runtime=warn",
        _ => "debug",
    };
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| default_filter.to_string());
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").is_none(),
        )
        .with_env_filter(filter);
    match cli.log_format {
        czctl::cli::LogFormat::Json => logs.json().init(),
        czctl::cli::LogFormat::Text => logs.init(),
    }
    // kube's TLS and ours use ring; choose it explicitly so rustls never has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(format_args!("czctl: cannot start the async runtime: {e}"));
            return std::process::ExitCode::from(czctl::exit::Code::Local as u8);
        }
    };
    match runtime.block_on(czctl::app::run(cli)) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(fatal) => {
            say(format_args!("czctl: {fatal}"));
            czctl::detach::drop_unread_log();
            std::process::ExitCode::from(fatal.code as u8)
        }
    }
}
