//! Running a command while a teleport is active (`czctl deployment teleport NAME -- CMD`):
//! the command gets the resolved environment, signals czctl receives are passed on to it, and
//! its exit code becomes czctl's.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::process::ExitStatus;

use tokio::process::{Child, Command};

use crate::exit::{Code, Fatal};

/// A command to run once the teleport is ready.
#[derive(Debug, Clone, Default)]
pub struct CommandSpec {
    /// Program and arguments.
    pub argv: Vec<OsString>,
    /// Variables added to czctl's own environment (bytes: values may be any non-NUL bytes).
    pub env: Vec<(String, Vec<u8>)>,
}

/// Starts the command with its environment; stdin, stdout and stderr are czctl's.
pub fn spawn(spec: &CommandSpec) -> Result<Child, Fatal> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err(Fatal::new(Code::Usage, "no command given after --"));
    };
    let mut cmd = Command::new(program);
    // A detached session's helper descriptor is its own, never the command's.
    cmd.args(args)
        .env_remove(crate::hosts::elevated::INHERIT_ENV);
    for (name, value) in &spec.env {
        cmd.env(name, OsString::from_vec(value.clone()));
    }
    cmd.spawn().map_err(|e| {
        Fatal::new(
            Code::Usage,
            format!("cannot run {}: {e}", program.to_string_lossy()),
        )
    })
}

/// Passes a signal on to the command.
pub fn forward(child: &Child, signal: i32) {
    use rustix::process::{kill_process, Pid, Signal};
    // `id()` is `None` once the child is reaped: until then its pid names nothing else.
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .and_then(Pid::from_raw);
    if let (Some(pid), Some(signal)) = (pid, Signal::from_named_raw(signal)) {
        let _ = kill_process(pid, signal);
    }
}

/// The exit code a shell would report: the command's code, or 128 + the signal that ended it.
pub fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn environment_and_exit_code_come_through() {
        let spec = CommandSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "test \"$CZ_VALUE\" = 'a b$c' && exit 7".into(),
            ],
            env: vec![("CZ_VALUE".into(), b"a b$c".to_vec())],
        };
        let mut child = spawn(&spec).unwrap();
        assert_eq!(code_of(child.wait().await.unwrap()), 7);
        let missing = CommandSpec {
            argv: vec!["/nonexistent/program".into()],
            env: vec![],
        };
        assert!(spawn(&missing).is_err());
    }
}
