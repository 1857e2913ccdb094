//! The helper's wire format: one JSON request per line from czctl, one JSON reply per line back.

use std::io;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::hosts::block::{Entry, FoundBlock};
use crate::hosts::file::{Outcome, StaleCleanup, WriteMethod};

/// One request from czctl to the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub(crate) enum Request {
    /// Who are you? Answers the helper's uid and pid.
    Hello,
    /// [`HostsFile::remove_stale`](crate::hosts::HostsFile::remove_stale) with the helper's own liveness check.
    RemoveStale,
    /// [`HostsFile::backup_once`](crate::hosts::HostsFile::backup_once) into the helper's `--state-dir`.
    BackupOnce {
        /// Session id.
        session: String,
        /// Owner pid.
        pid: u32,
    },
    /// [`HostsFile::update`](crate::hosts::HostsFile::update).
    Update {
        /// Session id.
        session: String,
        /// Owner pid.
        pid: u32,
        /// The block's entries.
        entries: Vec<WireEntry>,
    },
    /// [`HostsFile::remove`](crate::hosts::HostsFile::remove).
    Remove {
        /// Session id.
        session: String,
        /// Owner pid.
        pid: u32,
    },
    /// Binds a TCP listener on a port below 1024 and hands it over.
    Bind {
        /// One of czctl's loopback addresses.
        addr: Ipv4Addr,
        /// The port (1-1023).
        port: u16,
    },
}

/// An [`Entry`] on the wire; validated again by the helper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WireEntry {
    /// The address.
    pub addr: Ipv4Addr,
    /// The names.
    pub names: Vec<String>,
}

impl From<&Entry> for WireEntry {
    fn from(entry: &Entry) -> Self {
        WireEntry {
            addr: entry.addr(),
            names: entry.names().to_vec(),
        }
    }
}

/// An [`Outcome`] on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum WireOutcome {
    /// [`Outcome::Unchanged`].
    Unchanged,
    /// [`Outcome::Written`] with [`WriteMethod::Renamed`].
    Renamed,
    /// [`Outcome::Written`] with [`WriteMethod::InPlace`].
    InPlace,
}

impl From<Outcome> for WireOutcome {
    fn from(outcome: Outcome) -> Self {
        match outcome {
            Outcome::Unchanged => WireOutcome::Unchanged,
            Outcome::Written(WriteMethod::Renamed) => WireOutcome::Renamed,
            Outcome::Written(WriteMethod::InPlace) => WireOutcome::InPlace,
        }
    }
}

impl From<WireOutcome> for Outcome {
    fn from(outcome: WireOutcome) -> Self {
        match outcome {
            WireOutcome::Unchanged => Outcome::Unchanged,
            WireOutcome::Renamed => Outcome::Written(WriteMethod::Renamed),
            WireOutcome::InPlace => Outcome::Written(WriteMethod::InPlace),
        }
    }
}

/// A [`FoundBlock`] on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WireBlock {
    session: String,
    pid: u32,
    /// Zero-based index of the begin marker line.
    start: usize,
    /// Lines spanned, markers included.
    lines: usize,
    terminated: bool,
}

impl From<&FoundBlock> for WireBlock {
    fn from(block: &FoundBlock) -> Self {
        WireBlock {
            session: block.session().to_string(),
            pid: block.pid(),
            start: block.lines().start,
            lines: block.line_count(),
            terminated: block.terminated(),
        }
    }
}

impl From<WireBlock> for FoundBlock {
    fn from(b: WireBlock) -> Self {
        FoundBlock::from_parts(
            b.session,
            b.pid,
            b.start..b.start.saturating_add(b.lines),
            b.terminated,
        )
    }
}

/// The helper's answer to one request; fields not relevant to the request are absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not, when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The OS error number behind `error`, when there is one (EADDRINUSE, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// `bind`: a listening socket comes with this line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fd: Option<bool>,
    /// `hello`: the helper's effective uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// `hello`: the helper's pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Edits: whether and how the file was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<WireOutcome>,
    /// `backup_once`: the backup's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<PathBuf>,
    /// `remove_stale`: the blocks removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<WireBlock>>,
    /// `remove_stale`: unterminated blocks, left alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unterminated: Option<Vec<WireBlock>>,
}

impl Reply {
    pub(super) fn done() -> Self {
        Reply {
            ok: true,
            ..Reply::default()
        }
    }

    pub(super) fn failed(error: impl std::fmt::Display) -> Self {
        Reply {
            ok: false,
            error: Some(error.to_string()),
            ..Reply::default()
        }
    }

    pub(super) fn os_error(what: String, err: &io::Error) -> Self {
        Reply {
            errno: err.raw_os_error(),
            ..Reply::failed(format!("{what}: {err}"))
        }
    }

    pub(super) fn edited(outcome: Outcome) -> Self {
        Reply {
            outcome: Some(outcome.into()),
            ..Reply::done()
        }
    }

    /// The [`StaleCleanup`] a `remove_stale` reply carries.
    pub(crate) fn into_cleanup(self) -> StaleCleanup {
        StaleCleanup {
            removed: self
                .removed
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            unterminated: self
                .unterminated
                .unwrap_or_default()
                .into_iter()
                .map(Into::into)
                .collect(),
            outcome: self.outcome.map_or(Outcome::Unchanged, Into::into),
        }
    }
}
