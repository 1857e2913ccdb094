//! Rewriting a file in place (same inode) without losing what other programs append to it
//! meanwhile. Used when renaming over the file is impossible (a bind-mounted `/etc/hosts` in
//! containers and WSL) or would break it (hard links). Knows nothing about hosts files.
//!
//! The caller holds czctl's lock, so no other czctl writes; other programs may still append
//! (`echo … >> /etc/hosts`, O_APPEND), which lands at the end of the file at that moment.
//! Hence the rules:
//! - What czctl last read or wrote is `known`: the file's first `known.len()` bytes. Bytes
//!   after them are someone else's, and are merged into the text the change is computed from.
//! - Positional writes only ever cover bytes inside `known`, so they cannot overwrite an append.
//! - Growing the file is an O_APPEND write of the new tail: it lands exactly at the end; when
//!   it lands later than `known.len()`, the bytes before it were appended by someone else in
//!   between, are read back and merged, and the change is recomputed.
//! - Shrinking is `ftruncate`, done only when the size is still `known.len()`, i.e. nothing
//!   was appended since czctl last looked.
//!
//! # The residual race
//! `ftruncate` cannot be made conditional: an append landing between the last size check and
//! the `ftruncate` (a window of two system calls, microseconds) is cut off. It only exists when
//! the file shrinks (a block removed or made smaller). A program that rewrites the file in
//! place (not appending) while czctl writes can also lose its change; one that replaces the file
//! by rename is noticed (the caller checks the path still names the same file).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;

use super::lock::{open_regular, read_from, LockFailure};

/// The change to apply: from a text (which may have grown by foreign appends) to the new one.
pub(super) type Apply<'a, E> = dyn FnMut(&[u8]) -> Result<Vec<u8>, E> + 'a;

/// How many rounds (write, notice an append, merge, write again) before giving up.
const MAX_ROUNDS: usize = 100;

/// Why [`rewrite`] stopped.
#[derive(Debug)]
pub(super) enum Failure<E> {
    /// An I/O error; `partial` when czctl had already written something.
    Io {
        /// Whether the file may hold a mix of old and new text.
        partial: bool,
        /// The cause.
        source: io::Error,
    },
    /// The change refused the merged text (the caller's error).
    Apply(E),
    /// The path no longer names the file read (replaced by rename): start over.
    Replaced,
    /// Other programs kept appending between every check and write, [`MAX_ROUNDS`] times.
    Contended(usize),
}

/// Rewrites the file `read` (open for reading, at `path`) from `base`, its content as read,
/// to `apply(base)`; whatever other programs append meanwhile is added to `base` and the
/// change recomputed, so it is kept. Returns how many rounds it took. The file is synced.
pub(super) fn rewrite<E>(
    read: &File,
    path: &Path,
    mut base: Vec<u8>,
    apply: &mut Apply<'_, E>,
) -> Result<usize, Failure<E>> {
    let mut wrote = false;
    let io = |wrote: bool| {
        move |source| Failure::Io {
            partial: wrote,
            source,
        }
    };
    let (writer, appender) = open_writers(read, path)?;
    let mut known = base.clone();
    for round in 1..=MAX_ROUNDS {
        let target = apply(&base).map_err(Failure::Apply)?;
        if target == known {
            // Done when the file starts with it; bytes after it were appended since, and stay.
            let now = read_from(read, 0).map_err(io(wrote))?;
            if now.starts_with(&target) {
                writer.sync_all().map_err(io(wrote))?;
                return Ok(round);
            }
            // Someone rewrote the file (not an append): start from what it holds now.
            base = now.clone();
            known = now;
            continue;
        }
        let same = common_prefix(&known, &target);
        if target.len() > known.len() {
            let start = known.len();
            let tail = &target[start..];
            wrote = true;
            let landed = append(&appender, tail).map_err(io(wrote))?;
            let end = landed.last().map_or(start as u64, |&(at, n)| at + n as u64);
            if landed.len() != 1 || landed[0].0 != start as u64 {
                // Others appended first (or between pieces of ours): what lies between
                // `start` and the end of our last piece, minus our pieces, is theirs.
                let cut = landed.iter().any(|&(at, _)| at < start as u64);
                let region = match cut {
                    false => read_range(read, start as u64, end).map_err(io(wrote))?,
                    true => None,
                };
                let Some(region) = region else {
                    // Someone cut the file meanwhile: start from what it holds now.
                    let now = read_from(read, 0).map_err(io(wrote))?;
                    base = now.clone();
                    known = now;
                    continue;
                };
                base.extend_from_slice(&theirs(&region, start as u64, &landed));
                known.extend_from_slice(&region);
                continue;
            }
            // The tail landed right after `known`; now fix the part before it.
            if same < start {
                writer
                    .write_all_at(&target[same..start], same as u64)
                    .map_err(io(wrote))?;
            }
            known = target;
        } else {
            writer
                .write_all_at(&target[same..], same as u64)
                .map_err(io(true))?;
            wrote = true;
            match settle(read, &writer, target, known.len() as u64, &mut base) {
                Ok(Settled::Done(content)) => {
                    // Done when the file still starts with it (lines appended since stay).
                    let now = read_from(read, 0).map_err(io(wrote))?;
                    if now.starts_with(&content) {
                        writer.sync_all().map_err(io(wrote))?;
                        return Ok(round);
                    }
                    base = now.clone();
                    known = now;
                }
                Ok(Settled::Recompute(content)) => known = content,
                Ok(Settled::Lost) => {
                    // Someone cut the file meanwhile: start from what it holds now.
                    let now = read_from(read, 0).map_err(io(wrote))?;
                    base = now.clone();
                    known = now;
                }
                Err(source) => return Err(io(wrote)(source)),
            }
        }
    }
    Err(Failure::Contended(MAX_ROUNDS))
}

/// How [`settle`] left the file.
enum Settled {
    /// The file holds this (the change, plus lines appended meanwhile) and nothing else.
    Done(Vec<u8>),
    /// The file holds this; `base` has what was appended, and the change must be recomputed.
    Recompute(Vec<u8>),
    /// The file is shorter than czctl knows it to be: someone else cut it.
    Lost,
}

/// Ends a rewrite once `goal` has been written at the start of the file, whose first `end`
/// bytes czctl knows: drops the bytes between `goal` and `end` (left from the old text) with
/// `ftruncate`, but only while the file is exactly `end` bytes long. Lines appended meanwhile
/// are added to `base` and moved down after `goal` first, a few system calls per round (no
/// recomputing), so even a busy appender is caught up with.
fn settle(
    read: &File,
    writer: &File,
    mut goal: Vec<u8>,
    mut end: u64,
    base: &mut Vec<u8>,
) -> io::Result<Settled> {
    loop {
        if (goal.len() as u64) < end {
            match truncate_if_size(writer, end, goal.len() as u64)? {
                None => return Ok(Settled::Done(goal)),
                Some(size) if size < end => return Ok(Settled::Lost),
                Some(_) => {}
            }
        }
        let size = writer.metadata()?.len();
        if size < end {
            return Ok(Settled::Lost);
        }
        if size == end {
            return Ok(Settled::Done(goal));
        }
        let Some(more) = read_range(read, end, size)? else {
            return Ok(Settled::Lost);
        };
        base.extend_from_slice(&more);
        if !(goal.is_empty() || goal.ends_with(b"\n")) {
            // The new bytes would join the last line of ours: recompute the change instead.
            let Some(content) = read_range(read, 0, size)? else {
                return Ok(Settled::Lost);
            };
            return Ok(Settled::Recompute(content));
        }
        // Move them down behind `goal`; this only writes bytes czctl has read.
        writer.write_all_at(&more, goal.len() as u64)?;
        goal.extend_from_slice(&more);
        end = size;
    }
}

/// Truncates `file` to `to` if it is `size` bytes long, else returns its size. The residual
/// race: an append landing between the size check and the truncation is cut off; the two
/// system calls follow each other directly to keep that window as small as it gets.
fn truncate_if_size(file: &File, size: u64, to: u64) -> io::Result<Option<u64>> {
    let now = rustix::fs::seek(file, rustix::fs::SeekFrom::End(0))?;
    if now != size {
        return Ok(Some(now));
    }
    rustix::fs::ftruncate(file, to)?;
    Ok(None)
}

/// Opens the file twice for writing: positional writes and truncation, and appends. Both
/// must be the file `read` is.
fn open_writers<E>(read: &File, path: &Path) -> Result<(File, File), Failure<E>> {
    let open = |append: bool| {
        let file = open_regular(path, OpenOptions::new().write(true).append(append));
        let file = file.map_err(|e| match e {
            LockFailure::Io(source) => Failure::Io {
                partial: false,
                source,
            },
            _ => Failure::Replaced,
        })?;
        let (ours, theirs) = (read.metadata(), file.metadata());
        match (ours, theirs) {
            (Ok(a), Ok(b)) if (a.dev(), a.ino()) == (b.dev(), b.ino()) => Ok(file),
            (Err(source), _) | (_, Err(source)) => Err(Failure::Io {
                partial: false,
                source,
            }),
            _ => Err(Failure::Replaced),
        }
    };
    Ok((open(false)?, open(true)?))
}

/// Appends `bytes` through the O_APPEND descriptor `file`; returns where each piece landed
/// (offset, length): one piece unless a write was short.
fn append(mut file: &File, bytes: &[u8]) -> io::Result<Vec<(u64, usize)>> {
    let mut landed = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = match file.write(rest) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        // With O_APPEND the offset is the end of what was just written.
        let end = file.stream_position()?;
        landed.push((end - n as u64, n));
        rest = &rest[n..];
    }
    Ok(landed)
}

/// The bytes in `[from, to)`, or `None` when the file is shorter than that now.
fn read_range(file: &File, from: u64, to: u64) -> io::Result<Option<Vec<u8>>> {
    let mut out = vec![0u8; (to - from) as usize];
    match file.read_exact_at(&mut out, from) {
        Ok(()) => Ok(Some(out)),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

/// `region` (which starts at offset `start`) without our pieces.
fn theirs(region: &[u8], start: u64, ours: &[(u64, usize)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut at = 0usize;
    for &(offset, n) in ours {
        let from = (offset - start) as usize;
        out.extend_from_slice(&region[at..from]);
        at = from + n;
    }
    out.extend_from_slice(&region[at..]);
    out
}

fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_bytes_between_our_pieces_are_theirs() {
        let region = b"AAxxBByy";
        // Our pieces: "AA" at 10, "BB" at 14.
        assert_eq!(theirs(region, 10, &[(10, 2), (14, 2)]), b"xxyy");
        assert_eq!(theirs(b"xxAA", 10, &[(12, 2)]), b"xx");
        assert_eq!(common_prefix(b"abcd", b"abxd"), 2);
    }
}
