//! Output formats for the workload configuration export: resolved variables → file text.
//!
//! No single file syntax means the same thing to every reader, so each [`Format`] names its
//! readers ([`Format::readers`]) and [`render`] writes every value so that each of them reads
//! back exactly the same bytes, or refuses the value with a [`FormatError`] that names the key,
//! the reason and the formats that can carry it. A value is never written differently and never
//! appears in an error.
//!
//! # Quoting rules
//!
//! - `env` (default) — `KEY='value'` or `KEY="value"`, one variable per line, for python-dotenv
//!   (`dotenv_values`/`load_dotenv`, with interpolation on, its default, or off) and the dotenvy
//!   crate. The two agree on very little:
//!   - single quotes: dotenvy keeps everything up to the next `'` (and its line splitter skips
//!     the character after any `\`); python-dotenv decodes `\\` and `\'`, then expands `${NAME}`
//!     and `${NAME:-default}` (not `$NAME`) even inside single quotes;
//!   - double quotes: dotenvy decodes `\\ \" \' \$ \n` and backslash-space (any other escape is
//!     an error) and expands `$NAME` and `${NAME}`; python-dotenv decodes only
//!     `\\ \" \' \n \t \r \a \b \f \v`, so `\$` stays two characters, and also expands `${...}`;
//!     its quote regex takes a `\"` as an escaped quote even when the backslash was itself
//!     escaped, so `"a\\"` runs on to the next quote in the file;
//!   - python-dotenv opens the file with universal newlines (a raw carriage return becomes a
//!     newline) and dotenvy has no `\r` escape.
//!
//!   So a value is single-quoted when it has no `'`, no `\\`, no `${...}` that python-dotenv
//!   would expand; otherwise double-quoted (escaping `\`, `"` and newline) when it has no `$`.
//!   Refused: a `$` together with `'`, `\\` or a `${...}` (no quoting keeps `$` for dotenvy and
//!   the rest for python-dotenv), a carriage return, a final backslash (both readers take it as
//!   escaping the closing quote), NUL, text that is not UTF-8, and names other than
//!   `[A-Za-z_][A-Za-z0-9_.]*` (dotenvy's key syntax).
//! - `sh` — `export KEY='value'` for bash and dash (`. FILE`, `set -a; . FILE`). Single quotes
//!   keep every byte but `'`, written `'\''`; arbitrary non-UTF-8 bytes, newlines and carriage
//!   returns round-trip. Refused: NUL (a shell variable is a C string), names that are not shell
//!   identifiers, and names bash treats specially, which give back something else after the
//!   assignment (readonly `UID`, `PPID`...; dynamic `RANDOM`, `SECONDS`, `LINENO`, `OPTIND`...).
//! - `json` — one object of strings (serde_json's escaping). Carries any key and any UTF-8 value,
//!   NUL included (`\u0000`); refuses text that is not UTF-8 (JSON strings are Unicode).
//! - `yaml` — one block mapping whose keys and values are double-quoted scalars with escapes
//!   (`\n`, `\t`, `\0`, `\xXX`, `\uXXXX`...), so no YAML 1.1/1.2 plain-scalar typing (`yes`, `0o7`,
//!   `~`) applies. Same carrying rules as `json`.
//!
//! NUL cannot be in an environment variable, so only `json` and `yaml` carry it (as text for a
//! program that reads the file); a value that has NUL and is not UTF-8 fits no format.
//!
//! A file (`-f FILE`) is written with [`write_file`]: mode 0600, atomically (a temporary file
//! beside the target, then a rename), with czctl's mark ([`MARK`]) as its first line where the
//! format has comments, and never over a file that is not czctl's own unless `--overwrite`
//! says so; see [`file`] for the rules.

mod env;
pub mod file;
mod json;
mod sh;
#[cfg(test)]
mod tests;
mod yaml;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::str::FromStr;

use crate::exit::{Code, Fatal};

pub use file::{check as check_file, mark_line, write_file, WriteError, Written, MARK};
pub use sh::sh_special_names;

/// A file syntax for the exported variables, with the readers it is written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum)]
pub enum Format {
    /// `KEY='value'` lines read alike by python-dotenv and the dotenvy crate.
    #[default]
    Env,
    /// `export KEY='value'` lines for bash and dash to source.
    Sh,
    /// A JSON object of strings.
    Json,
    /// A YAML mapping of double-quoted strings.
    Yaml,
}

impl Format {
    /// Every format, in the order alternatives are suggested.
    pub const ALL: [Format; 4] = [Format::Env, Format::Sh, Format::Json, Format::Yaml];

    /// The name on the command line (`--format NAME`).
    pub fn name(self) -> &'static str {
        match self {
            Format::Env => "env",
            Format::Sh => "sh",
            Format::Json => "json",
            Format::Yaml => "yaml",
        }
    }

    /// The readers that give back every rendered value byte-for-byte (tested in
    /// `tests/env_formats.rs`).
    pub fn readers(self) -> &'static [&'static str] {
        match self {
            Format::Env => &[
                "python-dotenv (dotenv_values, load_dotenv; interpolate on or off)",
                "dotenvy (from_path, from_path_iter)",
            ],
            Format::Sh => &["bash (. FILE)", "dash (. FILE)"],
            Format::Json => &["JSON parsers (RFC 8259)"],
            Format::Yaml => &["YAML 1.1 and 1.2 parsers"],
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Format::ALL
            .into_iter()
            .find(|format| format.name() == text)
            .ok_or_else(|| format!("unknown format {text:?}: use env, sh, json or yaml"))
    }
}

/// Why variables could not be rendered. Never contains a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The key or its value cannot be written so that every reader of `format` gets it back.
    #[error(
        "{} cannot be written as {format}: {reason}; {}",
        shown(key),
        advice(alternatives)
    )]
    Unrepresentable {
        /// The variable's name.
        key: String,
        /// The format asked for.
        format: Format,
        /// Which characters, and which reader would read them differently.
        reason: String,
        /// The formats that can carry this variable (empty: none can).
        alternatives: Vec<Format>,
    },
    /// The same name appears twice: readers disagree on which one wins.
    #[error(
        "{} is given more than once; each variable must be written once",
        shown(key)
    )]
    DuplicateKey {
        /// The variable's name.
        key: String,
    },
}

impl From<FormatError> for Fatal {
    fn from(err: FormatError) -> Self {
        Fatal::new(Code::Usage, err.to_string())
    }
}

/// A key for messages: control characters and quotes escaped, so a strange name stays one line.
fn shown(key: &str) -> String {
    if key.is_empty() {
        return "the empty name".to_string();
    }
    key.escape_debug().to_string()
}

fn advice(alternatives: &[Format]) -> String {
    if alternatives.is_empty() {
        return "no format can carry it".to_string();
    }
    let options: Vec<String> = alternatives
        .iter()
        .map(|format| format!("--format {format}"))
        .collect();
    format!("use {}", options.join(" or "))
}

/// Renders `vars`, in order, as the text of a file in `format`; refuses the first variable that
/// cannot be written exactly for every reader of the format.
pub fn render(format: Format, vars: &[(String, Vec<u8>)]) -> Result<Vec<u8>, FormatError> {
    let mut seen = HashSet::new();
    for (key, _) in vars {
        if !seen.insert(key.as_str()) {
            return Err(FormatError::DuplicateKey { key: key.clone() });
        }
    }
    let mut entries = Vec::with_capacity(vars.len());
    for (key, value) in vars {
        match entry(format, key, value) {
            Ok(entry) => entries.push(entry),
            Err(reason) => {
                let alternatives = Format::ALL
                    .into_iter()
                    .filter(|other| *other != format && entry(*other, key, value).is_ok())
                    .collect();
                return Err(FormatError::Unrepresentable {
                    key: key.clone(),
                    format,
                    reason: reason.into_owned(),
                    alternatives,
                });
            }
        }
    }
    let mut out = Vec::new();
    match format {
        Format::Env | Format::Sh => {
            for entry in entries {
                out.extend_from_slice(&entry);
                out.push(b'\n');
            }
        }
        Format::Json if entries.is_empty() => out.extend_from_slice(b"{}\n"),
        Format::Json => {
            out.extend_from_slice(b"{\n");
            let last = entries.len() - 1;
            for (index, entry) in entries.into_iter().enumerate() {
                out.extend_from_slice(b"  ");
                out.extend_from_slice(&entry);
                out.extend_from_slice(if index == last { b"\n" } else { b",\n" });
            }
            out.extend_from_slice(b"}\n");
        }
        Format::Yaml if entries.is_empty() => out.extend_from_slice(b"{}\n"),
        Format::Yaml => {
            for entry in entries {
                out.extend_from_slice(&entry);
                out.push(b'\n');
            }
        }
    }
    Ok(out)
}

pub(super) type Reason = Cow<'static, str>;

/// One variable in `format` (a line, or a JSON member without its separator), or why not.
fn entry(format: Format, key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
    match format {
        Format::Env => env::env_entry(key, value),
        Format::Sh => sh::sh_entry(key, value),
        Format::Json => json::json_entry(key, value),
        Format::Yaml => yaml::yaml_entry(key, value),
    }
}

pub(super) const NUL_IN_VARIABLE: &str =
    "it contains a NUL byte, which no environment variable or shell string can hold";

pub(super) fn unicode<'a>(value: &'a [u8], why: &'static str) -> Result<&'a str, Reason> {
    std::str::from_utf8(value)
        .map_err(|_| Cow::Owned(format!("it is not valid UTF-8 text and {why}")))
}

// ------------------------------------------------------------------------------------ writing

/// Writes `contents` to `path` atomically with mode 0600: a new temporary file beside it
/// (created 0600 without following links, so the contents are never readable by others,
/// whatever the umask), synced, then renamed over `path`. A symlink at `path` is replaced, not
/// followed. On failure the temporary file is removed and `path` is left as it was.
///
/// No ownership checks and no mark: what the product writes to a file the user names goes
/// through [`write_file`].
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} does not name a file", path.display()),
        )
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (temp, mut file) = file::create_temp(dir, name)?;
    let written = (|| {
        // The umask may have taken bits away; set exactly 0600.
        file.set_permissions(fs::Permissions::from_mode(0o600))?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)
    })();
    if let Err(err) = written {
        let _ = fs::remove_file(&temp);
        return Err(err);
    }
    // Make the rename durable; a failure here does not undo a complete write.
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}
