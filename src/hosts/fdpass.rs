//! JSON lines over a Unix socket, with an optional file descriptor attached to a line
//! (SCM_RIGHTS): how the root helper hands a listener it bound to the unprivileged czctl.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::mem::{size_of, ManuallyDrop};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Longest line accepted; anything longer means the peer is broken.
const MAX_LINE: usize = 16 << 20;

/// Writes `line` to `fd`; when `attach` is given it goes with the first byte (the descriptor
/// must then be a Unix socket). Never raises SIGPIPE.
pub(crate) fn send_line(
    fd: BorrowedFd<'_>,
    line: &[u8],
    attach: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut rest = line;
    if let Some(attach) = attach {
        let sent = send_with_fd(fd.as_raw_fd(), rest, attach.as_raw_fd())?;
        rest = &rest[sent..];
    }
    // SAFETY: the File is never dropped (ManuallyDrop), so `fd` stays owned by the caller.
    let mut file = ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd.as_raw_fd()) });
    file.write_all(rest)?;
    file.flush()
}

fn send_with_fd(sock: RawFd, bytes: &[u8], attach: RawFd) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nothing to carry the descriptor",
        ));
    }
    // u64 keeps the control buffer aligned for cmsghdr.
    let mut control = [0u64; 8];
    // SAFETY: CMSG_SPACE and CMSG_LEN are pure size computations.
    let (space, len) = unsafe {
        (
            libc::CMSG_SPACE(size_of::<RawFd>() as u32) as usize,
            libc::CMSG_LEN(size_of::<RawFd>() as u32) as usize,
        )
    };
    assert!(space <= size_of::<[u64; 8]>());
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; every pointer set below outlives the sendmsg call, the
    // control buffer is aligned and at least CMSG_SPACE(sizeof fd) long, and CMSG_FIRSTHDR of
    // a non-empty control buffer is not null.
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = len as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), attach);
        libc::sendmsg(sock, &msg, send_flags())
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sent as usize)
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_flags() -> libc::c_int {
    libc::MSG_NOSIGNAL
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send_flags() -> libc::c_int {
    0
}

/// Reads lines from a Unix socket (or a pipe), collecting descriptors that come with them.
#[derive(Default)]
pub(crate) struct Lines {
    buf: Vec<u8>,
    fds: VecDeque<OwnedFd>,
}

impl Lines {
    /// The next line (without its newline), or `None` at end of input.
    pub(crate) fn read_line(&mut self, fd: BorrowedFd<'_>) -> io::Result<Option<String>> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return String::from_utf8(line[..pos].to_vec())
                    .map(Some)
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::InvalidData, "a line is not UTF-8")
                    });
            }
            if self.buf.len() > MAX_LINE {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "a line is too long",
                ));
            }
            let mut chunk = [0u8; 4096];
            let n = self.receive(fd.as_raw_fd(), &mut chunk)?;
            if n == 0 {
                return Ok(None);
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The oldest descriptor received and not yet taken.
    pub(crate) fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// Closes every descriptor received and not taken.
    pub(crate) fn drop_fds(&mut self) {
        self.fds.clear();
    }

    fn receive(&mut self, fd: RawFd, chunk: &mut [u8]) -> io::Result<usize> {
        let mut control = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: chunk.as_mut_ptr().cast(),
            iov_len: chunk.len(),
        };
        loop {
            // SAFETY: msghdr is plain data; its pointers outlive the call and the control
            // buffer is aligned.
            let (n, msg) = unsafe {
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = size_of::<[u64; 16]>() as _;
                let n = libc::recvmsg(fd, &mut msg, recv_flags());
                (n, msg)
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // A pipe (the helper's output relayed by sudo): plain reads, no descriptors.
                    Some(libc::ENOTSOCK) => {
                        // SAFETY: read into our own buffer of the given length.
                        let n = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), chunk.len()) };
                        if n < 0 {
                            return Err(io::Error::last_os_error());
                        }
                        return Ok(n as usize);
                    }
                    _ => return Err(err),
                }
            }
            // SAFETY: walking the control messages the kernel wrote into `control`, within
            // msg_controllen; SCM_RIGHTS payloads are descriptors now owned by this process.
            unsafe {
                let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
                while !cmsg.is_null() {
                    if (*cmsg).cmsg_level == libc::SOL_SOCKET
                        && (*cmsg).cmsg_type == libc::SCM_RIGHTS
                    {
                        let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                        let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                        for i in 0..payload / size_of::<RawFd>() {
                            let received = std::ptr::read_unaligned(data.add(i));
                            set_cloexec(received);
                            self.fds.push_back(OwnedFd::from_raw_fd(received));
                        }
                    }
                    cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
                }
            }
            return Ok(n as usize);
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn recv_flags() -> libc::c_int {
    libc::MSG_CMSG_CLOEXEC
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn recv_flags() -> libc::c_int {
    0
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD only changes the descriptor's flags.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn lines_carry_descriptors() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send_line(a.as_fd(), b"first\n", None).unwrap();
        send_line(a.as_fd(), b"{\"with\":\"fd\"}\nthird", Some(file.as_fd())).unwrap();
        drop(a);
        let mut lines = Lines::default();
        assert_eq!(
            lines.read_line(b.as_fd()).unwrap().as_deref(),
            Some("first")
        );
        assert_eq!(
            lines.read_line(b.as_fd()).unwrap().as_deref(),
            Some("{\"with\":\"fd\"}")
        );
        let fd = lines.take_fd().expect("a descriptor came along");
        assert!(std::fs::File::from(fd).metadata().is_ok());
        assert_eq!(
            lines.read_line(b.as_fd()).unwrap(),
            None,
            "no newline, then EOF"
        );
        assert!(lines.take_fd().is_none());
    }
}
