//! Standard output for one-shot commands, the way a pipeline expects it: when the reader goes
//! away (`czctl completion zsh | head -1`, `czctl doctor -o json | head`), czctl stops quietly
//! with exit code 0, as ripgrep does, instead of panicking like `println!` does.
//!
//! SIGPIPE stays ignored (Rust's default): the data path writes to TCP sockets and must get
//! `EPIPE` as an error there, never die of the signal. Only writes to stdout made through this
//! module end the process when the pipe is closed. (kubectl, a Go program, is killed by SIGPIPE
//! instead, which shells report as 141; exit 0 keeps `set -o pipefail` scripts that read only
//! the first lines working.)
//!
//! For one-shot output only (reports, lists, completion scripts): the process ends at once, so
//! nothing that needs cleaning up may be running. Long-running commands that print progress
//! (teleport, intercept) ignore write errors instead: a reader that goes away must not stop
//! forwarding.

use std::io::{self, Write};

/// The exit code when the reader of stdout went away: success, like ripgrep (the reader had
/// what it wanted).
pub const BROKEN_PIPE_EXIT: i32 = 0;

/// Writes `text` to stdout and flushes it; see [`stdout`] for errors.
pub fn print(text: impl AsRef<str>) {
    write_bytes(text.as_ref().as_bytes());
}

/// Writes `text` and a newline to stdout and flushes it; see [`stdout`] for errors.
pub fn println(text: impl AsRef<str>) {
    let mut line = String::with_capacity(text.as_ref().len() + 1);
    line.push_str(text.as_ref());
    line.push('\n');
    write_bytes(line.as_bytes());
}

/// Writes `bytes` to stdout and flushes them; see [`stdout`] for errors.
pub fn write_bytes(bytes: &[u8]) {
    write_all_to(&mut stdout(), bytes);
}

/// Writes `bytes` to `out` (normally stdout) and flushes it, with this module's handling of
/// errors: a closed pipe ends the process quietly, any other error with a message and exit
/// code 6.
pub fn write_all_to(out: &mut dyn Write, bytes: &[u8]) {
    let result = out.write_all(bytes).and_then(|()| out.flush());
    if let Err(e) = quiet_on_broken_pipe(result) {
        fail(&e);
    }
}

/// Stdout as a writer for code that takes `&mut dyn Write`: a closed pipe ends the process
/// quietly (exit [`BROKEN_PIPE_EXIT`]); any other error is returned to the caller. The
/// functions of this module end the process on other errors too, with a message and exit
/// code 6 (this machine).
pub fn stdout() -> Stdout {
    Stdout(io::stdout())
}

/// See [`stdout`].
pub struct Stdout(io::Stdout);

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        quiet_on_broken_pipe(self.0.write(buf))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        quiet_on_broken_pipe(self.0.lock().write_all(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        quiet_on_broken_pipe(self.0.flush())
    }
}

/// Ends the process quietly when `result` says the reader went away; passes it on otherwise.
pub fn quiet_on_broken_pipe<T>(result: io::Result<T>) -> io::Result<T> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(BROKEN_PIPE_EXIT),
        other => other,
    }
}

/// Handles an error writing to stdout that is not a closed pipe (a full disk, a closed
/// descriptor): a message on stderr and exit code 6.
fn fail(e: &io::Error) -> ! {
    eprintln!("czctl: cannot write to standard output: {e}");
    std::process::exit(crate::exit::Code::Local as i32)
}
