//! The checks of this machine: hosts file writable, loopback addresses usable, open-file limit.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::check::{Area, Check};

/// The key whose preferred address the loopback probe binds (never registered).
const PROBE_KEY: &str = "doctor/probe";
/// How long the loopback probe and `sudo -n true` may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this hard limit of open files, large namespaces may run out of descriptors.
pub const MIN_HARD_NOFILE: u64 = 4096;

/// Whether czctl can edit `path`: writable now, or with sudo.
pub async fn hosts_file(path: &Path) -> Check {
    const NAME: &str = "hosts file";
    let shown = path.display();
    let error = match std::fs::OpenOptions::new().append(true).open(path) {
        Ok(_) => return Check::pass(Area::Local, NAME, format!("{shown} is writable")),
        Err(e) => e,
    };
    let elsewhere = "or pass --hosts-file PATH to write the names to another file";
    match error.kind() {
        ErrorKind::NotFound => Check::fail(Area::Local, NAME, format!("{shown} does not exist"))
            .with_fix(format!("create it (touch {shown}), {elsewhere}")),
        ErrorKind::PermissionDenied if is_root() => Check::fail(
            Area::Local,
            NAME,
            format!("{shown} is not writable even as root: {error}"),
        )
        .with_fix(format!(
            "it may be immutable (lsattr {shown}; chattr -i {shown}) or on a read-only mount, \
             {elsewhere}"
        )),
        ErrorKind::PermissionDenied if sudo_works().await => Check::warn(
            Area::Local,
            NAME,
            format!("{shown} is not writable by you; czctl will need sudo"),
        )
        .with_fix(format!(
            "run czctl with sudo (your kubeconfig is still read from your home), {elsewhere}"
        )),
        ErrorKind::PermissionDenied => Check::fail(
            Area::Local,
            NAME,
            format!("{shown} is not writable by you and sudo needs a password or is not available"),
        )
        .with_fix(format!("run czctl with sudo, {elsewhere}")),
        _ => Check::fail(Area::Local, NAME, format!("cannot open {shown}: {error}")).with_fix(
            format!("check the file and its file system (read-only?), {elsewhere}"),
        ),
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether `sudo -n true` succeeds without asking for a password.
async fn sudo_works() -> bool {
    let status = tokio::process::Command::new("sudo")
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, status).await,
        Ok(Ok(status)) if status.success()
    )
}

/// Whether an address of czctl's loopback range can be bound and connected to.
pub async fn loopback() -> Check {
    const NAME: &str = "loopback addresses";
    let addr = loopback::preferred(PROBE_KEY);
    match tokio::time::timeout(PROBE_TIMEOUT, probe(addr)).await {
        Ok(Ok(bound)) => Check::pass(
            Area::Local,
            NAME,
            format!("bound and connected to {bound} (czctl's range 127.1-191.x.y)"),
        ),
        Ok(Err(e)) => {
            Check::fail(Area::Local, NAME, format!("cannot use {addr}: {e}")).with_fix(LOOPBACK_FIX)
        }
        Err(_) => Check::fail(
            Area::Local,
            NAME,
            format!(
                "connecting to {addr} took more than {}s",
                PROBE_TIMEOUT.as_secs()
            ),
        )
        .with_fix(LOOPBACK_FIX),
    }
}

const LOOPBACK_FIX: &str = "czctl needs all of 127.0.0.0/8 routed to the lo interface (Linux \
                            does this by default): check `ip addr show lo` and `ip route show \
                            table local`, and that no firewall rule drops loopback traffic";

async fn probe(addr: Ipv4Addr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((addr, 0)).await?;
    let bound = listener.local_addr()?;
    let (connected, accepted) = tokio::join!(TcpStream::connect(bound), listener.accept());
    connected?;
    accepted?;
    Ok(bound)
}

/// The open-file limits, as `(soft, hard)`; `u64::MAX` stands for unlimited.
fn file_limits() -> (u64, u64) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    )
}

/// The open-file limit check.
pub fn file_limit() -> Check {
    let (soft, hard) = file_limits();
    file_limit_check(soft, hard)
}

/// Warns when the hard limit is below [`MIN_HARD_NOFILE`]: every forwarded service port holds a
/// descriptor and every connection two.
pub fn file_limit_check(soft: u64, hard: u64) -> Check {
    let show = |v: u64| {
        if v == u64::MAX {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    let detail = format!(
        "soft {}, hard {} (czctl raises soft to hard)",
        show(soft),
        show(hard)
    );
    if hard >= MIN_HARD_NOFILE {
        return Check::pass(Area::Local, "open-file limit", detail);
    }
    Check::warn(
        Area::Local,
        "open-file limit",
        format!("{detail}; each forwarded port needs one descriptor and each connection two"),
    )
    .with_fix(format!(
        "raise the hard limit to at least {MIN_HARD_NOFILE}: LimitNOFILE= in the systemd unit, \
         nofile in /etc/security/limits.conf, or `ulimit -Hn 65536` as root"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::check::Status;

    #[test]
    fn file_limits_are_judged_by_the_hard_limit() {
        let low = file_limit_check(1024, 1024);
        assert_eq!(low.status, Status::Warn);
        assert!(low
            .detail
            .starts_with("soft 1024, hard 1024 (czctl raises soft to hard)"));
        assert!(low.fix.is_some());
        let ok = file_limit_check(1024, u64::MAX);
        assert_eq!(ok.status, Status::Pass);
        assert_eq!(
            ok.detail,
            "soft 1024, hard unlimited (czctl raises soft to hard)"
        );
        let (soft, hard) = file_limits();
        assert!(soft <= hard, "soft {soft} above hard {hard}");
    }

    #[tokio::test]
    async fn hosts_file_states() {
        let dir = std::env::temp_dir().join(format!("czctl-doctor-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("hosts");
        std::fs::write(&file, "127.0.0.1 localhost\n").expect("write temp hosts");
        assert_eq!(hosts_file(&file).await.status, Status::Pass);
        let missing = hosts_file(&dir.join("missing")).await;
        assert_eq!(missing.status, Status::Fail);
        assert!(missing.fix.unwrap_or_default().contains("--hosts-file"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn loopback_probe_works_here() {
        assert_eq!(loopback().await.status, Status::Pass);
    }
}
