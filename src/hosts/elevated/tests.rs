//! The helper's channel without a helper: a socket pair whose far end plays the helper (or a
//! child process standing in for it).

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Channel, Elevated, HelperError};
use crate::hosts::fdpass::Lines;
use crate::hosts::helper::Request;

fn elevated(sock: UnixStream, child: Option<Child>, reply_wait: Duration) -> Elevated {
    Elevated {
        file: "/etc/hosts".into(),
        state_dir: "/nonexistent/state".into(),
        helper_pid: 4242,
        channel: Mutex::new(Channel {
            sock: Some(sock),
            lines: Lines::default(),
            child,
            timeout: None,
            reply_wait,
        }),
    }
}

/// A stand-in for the helper: `script` run by sh with the far end of a socket pair as its
/// stdin and stdout.
fn child(script: &str) -> (UnixStream, Child) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let theirs_too = theirs.try_clone().unwrap();
    let child = Command::new("sh")
        .args(["-c", script])
        .stdin(Stdio::from(OwnedFd::from(theirs)))
        .stdout(Stdio::from(OwnedFd::from(theirs_too)))
        .spawn()
        .expect("sh runs");
    (ours, child)
}

/// Whether process `pid` is still there and not a zombie.
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
    })
}

#[test]
fn a_helper_that_does_not_answer_is_given_up_with_what_it_was_asked() {
    let (ours, mut theirs) = UnixStream::pair().unwrap();
    let helper = elevated(ours, None, Duration::from_millis(200));
    let error = helper
        .request(&Request::Remove {
            session: "tp-abcdef".into(),
            pid: 1,
        })
        .unwrap_err();
    let message = error.to_string();
    assert!(
        matches!(error, HelperError::Lost { pid: 4242, .. }),
        "{message}"
    );
    assert!(
        message.contains("did not answer the removal of czctl's hosts block within 200ms"),
        "{message}"
    );
    // czctl closed its end: the helper reads the request, then its end of input (and so
    // cleans up and exits).
    theirs
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut heard = String::new();
    theirs.read_to_string(&mut heard).unwrap();
    assert!(heard.starts_with(r#"{"op":"remove""#), "{heard}");
    // Out of step with the helper: no further request is sent.
    let again = helper.request(&Request::RemoveStale).unwrap_err();
    assert!(
        again.to_string().contains("its socket is closed"),
        "{again}"
    );
}

#[test]
fn close_ends_the_helper_and_waits_for_it() {
    let (ours, child) = child("cat >/dev/null");
    let pid = child.id();
    let helper = elevated(ours, Some(child), super::REPLY_WAIT);
    helper.close();
    assert!(!running(pid), "the helper was reaped when close returned");
}

#[test]
fn dropping_a_helper_closes_its_input_without_waiting_for_it() {
    // A helper that takes its time cleaning up after its input ends.
    let (ours, child) = child("cat >/dev/null; exec sleep 30");
    let pid = child.id();
    let helper = elevated(ours, Some(child), super::REPLY_WAIT);
    let started = Instant::now();
    drop(helper);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "drop waited {:?}",
        started.elapsed()
    );
    assert!(running(pid), "not killed: the helper does its own cleanup");
    // Its input ended: `cat` returned and the stand-in went on to `sleep`.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(Instant::now() < deadline, "the helper's input never ended");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The stand-in would sleep on; a reaper thread waits for it.
    let _ = Command::new("kill").arg(pid.to_string()).status();
}
