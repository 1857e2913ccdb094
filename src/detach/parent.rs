//! The foreground parent of a background start: it waits for the ready line on the child's
//! stdout. When it is killed before that, nobody will ever learn about the session, so
//! the child gives up its start and removes what it created.
//!
//! Two signs, either enough: the child's parent process changed (it was adopted), or its
//! stdout is a pipe that nobody reads any more (the parent held the only read end). The pipe
//! also covers a parent that died before the child could read its parent's pid.

use std::time::Duration;

/// Names the parent's pid to the child; without it the child takes its parent at start.
pub const PARENT_ENV: &str = "CZCTL_DETACHED_PARENT";

/// How often the parent is looked at.
const POLL: Duration = Duration::from_millis(200);

/// The watch on the parent of a detached child.
#[derive(Debug, Clone, Copy)]
pub struct ParentWatch {
    parent: libc::pid_t,
    stdout_is_pipe: bool,
}

impl ParentWatch {
    /// Starts watching: call it as early as possible.
    pub fn start() -> ParentWatch {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        let parent = std::env::var(PARENT_ENV)
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(ppid);
        ParentWatch {
            parent,
            stdout_is_pipe: is_fifo(libc::STDOUT_FILENO),
        }
    }

    /// Why the parent is gone, or `None` while it is there.
    pub fn gone(&self) -> Option<String> {
        // SAFETY: getppid has no preconditions.
        let ppid = unsafe { libc::getppid() };
        if ppid != self.parent {
            return Some(format!(
                "the command that started it (pid {}) is gone",
                self.parent
            ));
        }
        if self.stdout_is_pipe && reader_gone(libc::STDOUT_FILENO) {
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

fn is_fifo(fd: libc::c_int) -> bool {
    // SAFETY: fstat writes into the zeroed stat buffer we own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFIFO
    }
}

/// Whether the pipe written through `fd` has no reader left (poll reports POLLERR for it).
fn reader_gone(fd: libc::c_int) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    };
    // SAFETY: poll on one pollfd we own, without waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLERR | libc::POLLNVAL) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_without_reader_is_noticed() {
        let mut fds = [0; 2];
        // SAFETY: pipe fills the two descriptors we own.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (read, write) = (fds[0], fds[1]);
        assert!(is_fifo(write));
        assert!(!reader_gone(write));
        // SAFETY: closing descriptors we own.
        unsafe { libc::close(read) };
        assert!(reader_gone(write));
        // SAFETY: as above.
        unsafe { libc::close(write) };
    }
}
