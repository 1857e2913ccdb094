//! The foreground parent of a background start: it waits for the ready line on the child's
//! stdout. When it is killed before that, nobody will ever learn about the session, so
//! the child gives up its start and removes what it created.
//!
//! Two signs, either enough: the child's parent process changed (it was adopted), or its
//! stdout is a pipe that nobody reads any more (the parent held the only read end). The pipe
//! also covers a parent that died before the child could read its parent's pid.

use std::os::fd::AsFd;
use std::os::unix::process::parent_id;
use std::time::Duration;

/// Names the parent's pid to the child; without it the child takes its parent at start.
pub const PARENT_ENV: &str = "CZCTL_DETACHED_PARENT";

/// How often the parent is looked at.
const POLL: Duration = Duration::from_millis(200);

/// The watch on the parent of a detached child.
#[derive(Debug, Clone, Copy)]
pub struct ParentWatch {
    parent: u32,
    stdout_is_pipe: bool,
}

impl ParentWatch {
    /// Starts watching: call it as early as possible.
    pub fn start() -> ParentWatch {
        let parent = std::env::var(PARENT_ENV)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(parent_id);
        ParentWatch {
            parent,
            stdout_is_pipe: is_fifo(std::io::stdout()),
        }
    }

    /// Why the parent is gone, or `None` while it is there.
    pub fn gone(&self) -> Option<String> {
        if parent_id() != self.parent {
            return Some(format!(
                "the command that started it (pid {}) is gone",
                self.parent
            ));
        }
        if self.stdout_is_pipe && reader_gone(std::io::stdout()) {
            return Some(format!(
                "the command that started it (pid {}) no longer reads its output",
                self.parent
            ));
        }
        None
    }

    /// Resolves once the parent is gone; never without a watch.
    pub async fn wait_gone(watch: Option<ParentWatch>) -> String {
        let Some(watch) = watch else {
            return std::future::pending().await;
        };
        loop {
            if let Some(why) = watch.gone() {
                return why;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether `fd` is a pipe (or FIFO).
fn is_fifo(fd: impl AsFd) -> bool {
    use rustix::fs::{fstat, FileType};
    fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Fifo)
}

/// Whether the pipe written through `fd` has no reader left (poll reports POLLERR for it).
fn reader_gone(fd: impl AsFd) -> bool {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let mut fds = [PollFd::new(&fd, PollFlags::empty())];
    poll(&mut fds, Some(&Timespec::default())).is_ok_and(|n| n > 0)
        && fds[0]
            .revents()
            .intersects(PollFlags::ERR | PollFlags::NVAL)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_without_reader_is_noticed() {
        let (read, write) = std::io::pipe().expect("pipe");
        assert!(is_fifo(&write));
        assert!(!reader_gone(&write));
        drop(read);
        assert!(reader_gone(&write));
    }
}
