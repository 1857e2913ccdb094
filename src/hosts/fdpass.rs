//! JSON lines over a Unix socket, with an optional file descriptor attached to a line
//! (SCM_RIGHTS): how the root helper hands a listener it bound to the unprivileged czctl.

use std::collections::VecDeque;
use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};

/// Longest line accepted; anything longer means the peer is broken.
const MAX_LINE: usize = 16 << 20;

/// Descriptors one read has room for. The peer attaches one per line, and a stream socket
/// never merges two sends that carry descriptors into one read; more is a broken peer.
const MAX_FDS: usize = 16;

/// Writes `line` to `fd`; when `attach` is given it goes with the first byte (the descriptor
/// must then be a Unix socket). Never raises SIGPIPE.
pub(crate) fn send_line(
    fd: BorrowedFd<'_>,
    line: &[u8],
    attach: Option<BorrowedFd<'_>>,
) -> io::Result<()> {
    let mut rest = line;
    if let Some(attach) = attach {
        let sent = send_with_fd(fd, rest, attach)?;
        rest = &rest[sent..];
    }
    // The rest with plain writes: `fd` may be a pipe (the helper's output relayed by sudo).
    while !rest.is_empty() {
        match rustix::io::write(fd, rest) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => rest = &rest[n..],
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], attach: BorrowedFd<'_>) -> io::Result<usize> {
    if bytes.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "nothing to carry the descriptor",
        ));
    }
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let attached = [attach];
    let pushed = control.push(SendAncillaryMessage::ScmRights(&attached));
    assert!(pushed, "the control buffer is sized for one descriptor");
    loop {
        match sendmsg(
            sock,
            &[IoSlice::new(bytes)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Err(Errno::INTR) => continue,
            sent => return Ok(sent?),
        }
    }
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
            let n = self.receive(fd, &mut chunk)?;
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

    fn receive(&mut self, fd: BorrowedFd<'_>, chunk: &mut [u8]) -> io::Result<usize> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        loop {
            let mut control = RecvAncillaryBuffer::new(&mut space);
            // Received descriptors are close-on-exec from the start: no child may inherit one.
            let received = recvmsg(
                fd,
                &mut [IoSliceMut::new(chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            );
            let msg = match received {
                Ok(msg) => msg,
                Err(Errno::INTR) => continue,
                // A pipe (the helper's output relayed by sudo): plain reads, no descriptors.
                Err(Errno::NOTSOCK) => match rustix::io::read(fd, &mut *chunk) {
                    Err(Errno::INTR) => continue,
                    read => return Ok(read?),
                },
                Err(e) => return Err(e.into()),
            };
            // The kernel dropped descriptors that did not fit: the line they came with would
            // be taken without them. (Those that fit are closed with `control`.)
            if msg.flags.contains(ReturnFlags::CTRUNC) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "descriptors sent with a line were cut off (more than the peer may send)",
                ));
            }
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    self.fds.extend(fds);
                }
            }
            return Ok(msg.bytes);
        }
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

    #[test]
    fn descriptors_cut_off_are_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        // Twice the room: the buffer rounds up for alignment and may hold a few more than MAX_FDS.
        let many = vec![file.as_fd(); 2 * MAX_FDS];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2 * MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&many)));
        let line = b"{\"with\":\"too many\"}\n";
        let sent = sendmsg(&a, &[IoSlice::new(line)], &mut control, SendFlags::empty()).unwrap();
        assert_eq!(sent, line.len());
        let mut lines = Lines::default();
        let err = lines
            .read_line(b.as_fd())
            .expect_err("a truncated control message");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("cut off"), "{err}");
        assert!(
            lines.take_fd().is_none(),
            "no descriptor of a cut-off message is kept"
        );
    }
}
