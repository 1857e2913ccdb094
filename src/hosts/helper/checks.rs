//! What the helper accepts: the hosts file it may edit and the addresses it may use.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The hosts file the helper may edit, symlinks resolved once and for all: an existing
/// regular file readable by everyone (as a hosts file is and a secret is not), in a directory
/// only root (or the helper's own user) may change, so nobody can swap it for another file
/// while the helper runs.
pub(super) fn check_file(file: &Path) -> Result<PathBuf, String> {
    let refuse = |why: String| format!("hosts-helper refuses {}: {why}", file.display());
    let target = std::fs::canonicalize(file).map_err(|e| refuse(e.to_string()))?;
    let meta = std::fs::metadata(&target).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse("it is not a regular file".into()));
    }
    if meta.mode() & 0o004 == 0 {
        return Err(refuse(
            "it is not readable by everyone, so it is not a hosts file".into(),
        ));
    }
    let dir = target.parent().unwrap_or(Path::new("/"));
    let dir_meta = std::fs::metadata(dir).map_err(|e| refuse(e.to_string()))?;
    let ours = rustix::process::geteuid().as_raw();
    let owner_ok = dir_meta.uid() == 0 || dir_meta.uid() == ours;
    let sticky = dir_meta.mode() & 0o1000 != 0 && (meta.uid() == 0 || meta.uid() == ours);
    if !owner_ok || (dir_meta.mode() & 0o022 != 0 && !sticky) {
        return Err(refuse(format!(
            "other users may replace files in {}",
            dir.display()
        )));
    }
    Ok(target)
}

/// Whether `addr` is one czctl hands out (127.B.x.y with B in [`loopback::ranges::CZCTL_BLOCKS`]).
pub(super) fn czctl_address(addr: Ipv4Addr) -> bool {
    let [a, b, ..] = addr.octets();
    a == 127 && loopback::ranges::CZCTL_BLOCKS.contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hosts::helper::serve::tests::temp;

    #[test]
    fn only_world_readable_regular_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp("check");
        let file = dir.join("secret");
        std::fs::write(&file, "x").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(check_file(&file)
            .unwrap_err()
            .contains("not readable by everyone"));
        assert!(check_file(&dir).unwrap_err().contains("not a regular file"));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(
            check_file(&file).unwrap(),
            std::fs::canonicalize(&file).unwrap()
        );
        // A file others could swap: refused.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_file(&file).unwrap_err().contains("may replace files"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
