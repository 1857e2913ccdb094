//! What a teleport leaves on this machine when its process is gone (a crash, `kill -9`), and
//! how `session close` undoes it: its hosts block, its registered addresses, its record and
//! hosts backup. [`crate::session::manage`] decides which sessions to clean; this says how.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use loopback::Registry;

use crate::exit::{Code, Fatal};
use crate::hosts::{parse_blocks, BlockId, HostsEditor};
use crate::session::manage::{Closing, Places};
use crate::session::process::{self, Liveness};
use crate::session::record::{self, Record};

/// The hosts editors one `session close` uses, one per file, opened (and so elevated) only
/// when there is something to remove.
#[derive(Default)]
pub struct Leftovers {
    editors: HashMap<PathBuf, HostsEditor>,
}

impl Leftovers {
    fn editor(&mut self, file: &Path, state_dir: &Path) -> Result<&HostsEditor, Fatal> {
        if !self.editors.contains_key(file) {
            let editor = HostsEditor::open(file, state_dir, None)
                .map_err(|e| Fatal::new(Code::Local, e.to_string()))?;
            self.editors.insert(file.to_path_buf(), editor);
        }
        Ok(&self.editors[file])
    }

    /// Refuses the swept hosts file up front, before anything is closed, when it is not a
    /// regular file (reading a FIFO would block, a device is no hosts file).
    pub fn check(&self, places: &Places) -> Result<(), Fatal> {
        match crate::hosts::not_regular(&places.hosts_file) {
            Some(refusal) => Err(Fatal::new(Code::Local, refusal)),
            None => Ok(()),
        }
    }

    /// Undoes what a dead teleport left: its hosts block, its addresses, its record. The
    /// addresses are registered by pid: when the pid runs another process now, they are
    /// released only if that is no czctl (which may have registered addresses of its own under
    /// the same pid).
    pub fn clean(
        &mut self,
        places: &Places,
        record: &Record,
        liveness: &Liveness,
    ) -> Result<String, Fatal> {
        self.remove_block(places, record)?;
        let release = match liveness {
            Liveness::Gone => true,
            _ => process::runs_czctl(record.pid) == Some(false),
        };
        if release {
            Registry::new(places.registry_dir.clone())
                .release_all_of(record.pid)
                .map_err(|e| {
                    Fatal::new(Code::Local, format!("cleaning session {}: {e}", record.id))
                })?;
        }
        record.remove(&places.state_dir);
        record::remove_backup(&places.state_dir, &record.id);
        Ok(format!(
            "session {} was stale ({}): removed its hosts entries and addresses",
            record.id,
            liveness.describe(record.pid)
        ))
    }

    /// `--forget`: everything a teleport leaves is on this machine, so a stale one is cleaned
    /// as by [`Leftovers::clean`]; one whose process cannot be seen from here (another PID
    /// namespace) loses its hosts block and record, and its addresses stay registered.
    pub fn forget(
        &mut self,
        places: &Places,
        record: &Record,
        liveness: &Liveness,
    ) -> Result<String, Fatal> {
        if liveness.is_stale() {
            return self.clean(places, record, liveness);
        }
        self.remove_block(places, record)?;
        record.remove(&places.state_dir);
        Ok(format!(
            "session {}: forgotten on this machine (its process could not be checked from here \
             and its control socket did not answer): removed its record and hosts entries; its \
             addresses stay registered until the registry reclaims them",
            record.id
        ))
    }

    /// Removes a session's hosts block (blocks are matched by session id).
    fn remove_block(&mut self, places: &Places, record: &Record) -> Result<(), Fatal> {
        let local = |e: &dyn std::fmt::Display| {
            Fatal::new(Code::Local, format!("cleaning session {}: {e}", record.id))
        };
        let block = BlockId::new(record.id.clone(), record.pid).map_err(|e| local(&e))?;
        let has_block = |text: &str| {
            parse_blocks(text)
                .iter()
                .any(|b| b.session() == block.session())
        };
        if needs_edit(&record.hosts_file, has_block) {
            self.editor(&record.hosts_file, &places.state_dir)?
                .remove(&block)
                .map_err(|e| local(&e))?;
        }
        Ok(())
    }

    /// Removes the stale czctl blocks of the swept hosts file, one by one: a block is stale
    /// when its owner is (see [`process::block_owner_alive`]), so the block of a session in
    /// another PID namespace stays.
    pub fn sweep(&mut self, places: &Places, out: &mut Closing) {
        let stale = |text: &str| -> Vec<(String, u32)> {
            parse_blocks(text)
                .iter()
                .filter(|b| {
                    b.terminated()
                        && !process::block_owner_alive(&places.state_dir, b.session(), b.pid())
                })
                .map(|b| (b.session().to_string(), b.pid()))
                .collect()
        };
        let blocks = match std::fs::read(&places.hosts_file) {
            Ok(bytes) => stale(&String::from_utf8_lossy(&bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                out.said.push(format!(
                    "hosts file {} does not exist: no stale blocks to look for there",
                    places.hosts_file.display()
                ));
                return;
            }
            Err(e) => {
                out.failed.push(Fatal::new(
                    Code::Local,
                    format!("cannot read {}: {e}", places.hosts_file.display()),
                ));
                return;
            }
        };
        for (session, pid) in blocks {
            let removed = BlockId::new(session.clone(), pid)
                .map_err(|e| Fatal::new(Code::Local, e.to_string()))
                .and_then(|block| {
                    self.editor(&places.hosts_file, &places.state_dir)?
                        .remove(&block)
                        .map_err(|e| Fatal::new(Code::Local, e.to_string()))
                });
            match removed {
                Ok(_) => out.said.push(format!(
                    "removed a stale hosts block of session {session} (pid {pid})"
                )),
                Err(e) => out.failed.push(e),
            }
        }
    }
}

/// Whether `file` may need an edit: `wanted` says so about its text, and a file czctl cannot
/// read is tried anyway (the edit then reports why it fails).
fn needs_edit(file: &Path, wanted: impl Fn(&str) -> bool) -> bool {
    match std::fs::read(file) {
        Ok(bytes) => wanted(&String::from_utf8_lossy(&bytes)),
        Err(e) => e.kind() != std::io::ErrorKind::NotFound,
    }
}
