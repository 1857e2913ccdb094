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
//! The output is written with [`write_private`]: mode 0600, atomically (a temporary file beside
//! the target, then a rename).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::exit::{Code, Fatal};

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

type Reason = Cow<'static, str>;

/// One variable in `format` (a line, or a JSON member without its separator), or why not.
fn entry(format: Format, key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
    match format {
        Format::Env => env_entry(key, value),
        Format::Sh => sh_entry(key, value),
        Format::Json => {
            let value = unicode(value, "JSON strings are Unicode text")?;
            let mut out = json_string(key);
            out.push_str(": ");
            out.push_str(&json_string(value));
            Ok(out.into_bytes())
        }
        Format::Yaml => {
            let value = unicode(value, "YAML strings are Unicode text")?;
            let mut out = String::new();
            let mut quoted_key = String::new();
            yaml_string(key, &mut quoted_key);
            // An implicit key may be at most 1024 characters; longer ones use the explicit form.
            if quoted_key.chars().count() > 1000 {
                out.push_str("? ");
                out.push_str(&quoted_key);
                out.push('\n');
            } else {
                out.push_str(&quoted_key);
            }
            out.push_str(": ");
            yaml_string(value, &mut out);
            Ok(out.into_bytes())
        }
    }
}

const NUL_IN_VARIABLE: &str =
    "it contains a NUL byte, which no environment variable or shell string can hold";

fn unicode<'a>(value: &'a [u8], why: &'static str) -> Result<&'a str, Reason> {
    std::str::from_utf8(value)
        .map_err(|_| Cow::Owned(format!("it is not valid UTF-8 text and {why}")))
}

// ---------------------------------------------------------------------------------------- env

fn env_entry(key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
    let valid_key = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
    if !valid_key {
        return Err(Cow::Borrowed(
            "dotenvy reads only names made of ASCII letters, digits, _ and . that do not start \
             with a digit or .",
        ));
    }
    let quoted = env_value(value)?;
    let mut out = String::with_capacity(key.len() + 1 + quoted.len());
    out.push_str(key);
    out.push('=');
    out.push_str(&quoted);
    Ok(out.into_bytes())
}

/// The quoted value for `KEY=` in the dotenv dialect shared by python-dotenv and dotenvy.
fn env_value(value: &[u8]) -> Result<String, Reason> {
    if value.contains(&0) {
        return Err(Cow::Borrowed(NUL_IN_VARIABLE));
    }
    let text = unicode(value, "python-dotenv and dotenvy read UTF-8 only")?;
    if text.contains('\r') {
        return Err(Cow::Borrowed(
            "it contains a carriage return: python-dotenv reads the file with universal newlines \
             (a carriage return becomes a newline) and dotenvy has no escape for it",
        ));
    }
    if text.ends_with('\\') {
        return Err(Cow::Borrowed(
            "it ends with a backslash, which python-dotenv (and dotenvy, in single quotes) takes \
             as escaping the closing quote",
        ));
    }
    let has_quote = text.contains('\'');
    let has_double_backslash = text.contains("\\\\");
    let interpolated = python_dotenv_interpolates(text);
    if !has_quote && !has_double_backslash && !interpolated {
        // Both read single quotes literally: dotenvy up to the next ', python-dotenv decoding
        // only \\ and \' (neither occurs) and expanding ${...} (does not occur).
        let mut out = String::with_capacity(text.len() + 2);
        out.push('\'');
        out.push_str(text);
        out.push('\'');
        return Ok(out);
    }
    if !text.contains('$') {
        // Both decode \\ \" and \n in double quotes, and nothing else here is special to either.
        let mut out = String::with_capacity(text.len() + 2);
        out.push('"');
        for c in text.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
        return Ok(out);
    }
    let mut problems = Vec::new();
    if has_quote {
        problems.push("single quotes cannot hold '");
    }
    if has_double_backslash {
        problems.push(
            "inside single quotes python-dotenv reads \\\\ as one backslash where dotenvy keeps two",
        );
    }
    if interpolated {
        problems.push(
            "python-dotenv expands ${...} even inside single quotes (interpolation is its default)",
        );
    }
    Err(Cow::Owned(format!(
        "it contains $, which dotenvy expands outside single quotes and python-dotenv cannot \
         escape, so it needs single quotes, but {}",
        problems.join(", and ")
    )))
}

/// Whether python-dotenv's interpolation (on by default) would change `text`: it replaces every
/// match of `\$\{[^}:]*(?::-[^}]*)?\}` (`${NAME}` or `${NAME:-default}`), in any quoting.
fn python_dotenv_interpolates(text: &str) -> bool {
    let bytes = text.as_bytes();
    let mut from = 0;
    while let Some(offset) = text[from..].find("${") {
        let start = from + offset;
        let mut at = start + 2;
        while at < bytes.len() && bytes[at] != b'}' && bytes[at] != b':' {
            at += 1;
        }
        if at < bytes.len() {
            if bytes[at] == b'}' {
                return true;
            }
            if bytes.get(at + 1) == Some(&b'-') && bytes[at + 2..].contains(&b'}') {
                return true;
            }
        }
        from = start + 1;
    }
    false
}

// ----------------------------------------------------------------------------------------- sh

/// Names whose assignment bash refuses (readonly) or does not give back (dynamic or
/// arithmetic). dash treats none of these specially except `OPTIND`, which it checks is a
/// number; bash evaluates it as arithmetic (`07` reads back as `7`).
const SH_SPECIAL: &[&str] = &[
    // readonly in bash
    "BASHOPTS",
    "BASH_VERSINFO",
    "EUID",
    "PPID",
    "SHELLOPTS",
    "UID",
    // dynamic or arithmetic in bash
    "BASHPID",
    "BASH_ARGC",
    "BASH_ARGV",
    "BASH_COMMAND",
    "BASH_LINENO",
    "BASH_SOURCE",
    "BASH_SUBSHELL",
    "DIRSTACK",
    "EPOCHREALTIME",
    "EPOCHSECONDS",
    "FUNCNAME",
    "GROUPS",
    "HISTCMD",
    "LINENO",
    "OPTIND",
    "RANDOM",
    "SECONDS",
    "SRANDOM",
    "_",
];

/// The names that `sh` refuses because bash or dash would not give their value back.
pub fn sh_special_names() -> &'static [&'static str] {
    SH_SPECIAL
}

fn sh_entry(key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
    let identifier = key
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !identifier {
        return Err(Cow::Borrowed(
            "the name is not a shell identifier (ASCII letters, digits and _, not starting with \
             a digit)",
        ));
    }
    if SH_SPECIAL.contains(&key) {
        return Err(Cow::Borrowed(
            "bash treats that name specially (readonly or computed on every read), so the \
             assignment does not give the value back",
        ));
    }
    if value.contains(&0) {
        return Err(Cow::Borrowed(NUL_IN_VARIABLE));
    }
    let mut out = Vec::with_capacity(key.len() + value.len() + 10);
    out.extend_from_slice(b"export ");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"='");
    for &byte in value {
        if byte == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(byte);
        }
    }
    out.push(b'\'');
    Ok(out)
}

// -------------------------------------------------------------------------------- json + yaml

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}

/// A YAML double-quoted scalar: printable characters as they are, everything else escaped, so
/// the scalar is one line and no line folding or whitespace trimming applies.
fn yaml_string(text: &str, out: &mut String) {
    use std::fmt::Write as _;
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            ' '..='~' => out.push(c),
            // Printable in YAML 1.2 (c-printable), minus the YAML 1.1 line breaks U+2028 and
            // U+2029 and the byte order mark, which may not appear inside a document.
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..
                if !matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') =>
            {
                out.push(c)
            }
            c if (c as u32) <= 0xff => {
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c if (c as u32) <= 0xffff => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08X}", c as u32);
            }
        }
    }
    out.push('"');
}

// ------------------------------------------------------------------------------------ writing

static TEMP_COUNTER: AtomicU32 = AtomicU32::new(0);

/// Writes `contents` to `path` atomically with mode 0600: a new temporary file beside it
/// (created 0600, so the contents are never readable by others, whatever the umask), synced,
/// then renamed over `path`. A symlink at `path` is replaced, not followed. On failure the
/// temporary file is removed and `path` is left as it was.
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
    let (temp, mut file) = loop {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            ".{}.{}.tmp",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = dir.join(temp_name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
        {
            Ok(file) => break (temp, file),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err),
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "hunter2-SeCrEt";

    fn var(key: &str, value: &[u8]) -> Vec<(String, Vec<u8>)> {
        vec![(key.to_string(), value.to_vec())]
    }

    fn refusal(format: Format, key: &str, value: &[u8]) -> (String, Vec<Format>) {
        match render(format, &var(key, value)) {
            Err(err @ FormatError::Unrepresentable { .. }) => {
                let message = err.to_string();
                let FormatError::Unrepresentable {
                    key: refused,
                    format: refused_format,
                    alternatives,
                    ..
                } = err
                else {
                    unreachable!()
                };
                assert_eq!(refused, key);
                assert_eq!(refused_format, format);
                assert!(
                    message.contains(&format!("cannot be written as {format}")),
                    "{message}"
                );
                (message, alternatives)
            }
            other => panic!("{key} in {format}: expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn names_parse_and_print() {
        for format in Format::ALL {
            assert_eq!(format.name().parse::<Format>(), Ok(format));
            assert_eq!(format.to_string(), format.name());
            assert!(!format.readers().is_empty());
            let value = clap::ValueEnum::to_possible_value(&format).unwrap();
            assert_eq!(value.get_name(), format.name());
        }
        assert_eq!(Format::default(), Format::Env);
        assert!("toml"
            .parse::<Format>()
            .unwrap_err()
            .contains("env, sh, json or yaml"));
    }

    #[test]
    fn refusals_name_key_format_and_alternatives_but_never_the_value() {
        let cases: &[(Format, String, &[Format])] = &[
            (
                Format::Env,
                format!("{SECRET}$'"),
                &[Format::Sh, Format::Json, Format::Yaml],
            ),
            (
                Format::Env,
                format!("{SECRET}$\\\\"),
                &[Format::Sh, Format::Json, Format::Yaml],
            ),
            (
                Format::Env,
                format!("${{{SECRET}}}"),
                &[Format::Sh, Format::Json, Format::Yaml],
            ),
            (
                Format::Env,
                format!("{SECRET}\r\n"),
                &[Format::Sh, Format::Json, Format::Yaml],
            ),
            (
                Format::Env,
                format!("{SECRET}\\"),
                &[Format::Sh, Format::Json, Format::Yaml],
            ),
            (
                Format::Env,
                format!("{SECRET}\0"),
                &[Format::Json, Format::Yaml],
            ),
            (
                Format::Sh,
                format!("{SECRET}\0"),
                &[Format::Json, Format::Yaml],
            ),
        ];
        for (format, value, expected) in cases {
            let (message, alternatives) = refusal(*format, "DATABASE_PASSWORD", value.as_bytes());
            assert_eq!(alternatives, *expected, "{message}");
            assert!(
                message.starts_with("DATABASE_PASSWORD cannot be written as"),
                "{message}"
            );
            assert!(!message.contains(SECRET), "value leaked: {message}");
            let debug = format!(
                "{:?}",
                render(*format, &var("DATABASE_PASSWORD", value.as_bytes()))
            );
            assert!(!debug.contains(SECRET), "value leaked: {debug}");
            for alternative in *expected {
                assert!(
                    message.contains(&format!("--format {alternative}")),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn the_env_message_says_which_reader_breaks() {
        let (message, _) = refusal(Format::Env, "DATABASE_PASSWORD", b"it's $5 \\\\ each");
        assert!(message.contains("dotenvy expands"), "{message}");
        assert!(message.contains("single quotes cannot hold '"), "{message}");
        assert!(
            message.contains("python-dotenv reads \\\\ as one backslash"),
            "{message}"
        );
        assert!(
            message.ends_with("use --format sh or --format json or --format yaml"),
            "{message}"
        );
    }

    #[test]
    fn non_utf8_goes_to_sh_and_nul_with_non_utf8_fits_nothing() {
        let binary = [0xff, 0xfe, b'x'];
        for format in [Format::Env, Format::Json, Format::Yaml] {
            let (message, alternatives) = refusal(format, "BLOB", &binary);
            assert_eq!(alternatives, [Format::Sh], "{message}");
            assert!(message.contains("not valid UTF-8"), "{message}");
        }
        assert!(render(Format::Sh, &var("BLOB", &binary)).is_ok());
        let (message, alternatives) = refusal(Format::Json, "BLOB", &[0xff, 0]);
        assert!(alternatives.is_empty());
        assert!(message.ends_with("no format can carry it"), "{message}");
    }

    #[test]
    fn keys_must_suit_the_format() {
        let (message, alternatives) = refusal(Format::Sh, "app.port", b"80");
        assert_eq!(alternatives, [Format::Env, Format::Json, Format::Yaml]);
        assert!(message.contains("not a shell identifier"), "{message}");
        let (_, alternatives) = refusal(Format::Env, "my-key", b"1");
        assert_eq!(alternatives, [Format::Json, Format::Yaml]);
        let (message, _) = refusal(Format::Sh, "bad\nkey", b"1");
        assert!(message.starts_with("bad\\nkey cannot"), "{message}");
        for special in ["RANDOM", "UID", "SECONDS", "_"] {
            let (message, alternatives) = refusal(Format::Sh, special, b"1");
            assert!(
                message.contains("bash treats that name specially"),
                "{message}"
            );
            assert_eq!(alternatives, [Format::Env, Format::Json, Format::Yaml]);
        }
        let (message, _) = refusal(Format::Env, "", b"1");
        assert!(message.starts_with("the empty name cannot"), "{message}");
        assert!(render(Format::Json, &var("", b"1")).is_ok());
        assert!(render(Format::Yaml, &var("my-key", b"1")).is_ok());
    }

    #[test]
    fn duplicates_are_refused() {
        let vars = vec![
            ("A".to_string(), b"1".to_vec()),
            ("A".to_string(), b"2".to_vec()),
        ];
        for format in Format::ALL {
            let err = render(format, &vars).unwrap_err();
            assert_eq!(err, FormatError::DuplicateKey { key: "A".into() });
            assert_eq!(
                err.to_string(),
                "A is given more than once; each variable must be written once"
            );
        }
    }

    #[test]
    fn env_picks_the_quoting() {
        let line = |value: &str| {
            String::from_utf8(render(Format::Env, &var("K", value.as_bytes())).unwrap()).unwrap()
        };
        assert_eq!(line(""), "K=''\n");
        assert_eq!(line("plain text"), "K='plain text'\n");
        assert_eq!(
            line("$HOME and $(id) `x` ${a:b} \"q\""),
            "K='$HOME and $(id) `x` ${a:b} \"q\"'\n"
        );
        assert_eq!(line("C:\\dir\\file"), "K='C:\\dir\\file'\n");
        assert_eq!(line("it's"), "K=\"it's\"\n");
        assert_eq!(line("a\\\\b \"c\"\nd"), "K=\"a\\\\\\\\b \\\"c\\\"\\nd\"\n");
        assert!(render(Format::Env, &var("K", b"${X}")).is_err());
    }

    #[test]
    fn python_interpolation_is_detected_exactly() {
        for text in ["${X}", "a${}b", "${X:-d}", "${:-}", "x${a b}y", "${X:-a{b}"] {
            assert!(python_dotenv_interpolates(text), "{text}");
        }
        for text in [
            "$X", "${", "${X", "${a:b}", "${X:d}", "$ {X}", "{X}", "${X:-", "$${:x}",
        ] {
            assert!(!python_dotenv_interpolates(text), "{text}");
        }
    }

    #[test]
    fn sh_escapes_single_quotes_only() {
        let out = render(Format::Sh, &var("K", b"a'b\"$c\\\n\xff")).unwrap();
        assert_eq!(out, b"export K='a'\\''b\"$c\\\n\xff'\n");
        assert_eq!(render(Format::Sh, &[]).unwrap(), b"");
    }

    #[test]
    fn json_and_yaml_documents() {
        let vars = vec![
            ("A".to_string(), b"x\0\"\\\n".to_vec()),
            (
                "B".to_string(),
                "\u{7f}\u{85}\u{2028}\u{feff}\u{1F600}\té"
                    .as_bytes()
                    .to_vec(),
            ),
        ];
        let json = String::from_utf8(render(Format::Json, &vars).unwrap()).unwrap();
        assert_eq!(json, "{\n  \"A\": \"x\\u0000\\\"\\\\\\n\",\n  \"B\": \"\u{7f}\u{85}\u{2028}\u{feff}\u{1F600}\\té\"\n}\n");
        let yaml = String::from_utf8(render(Format::Yaml, &vars).unwrap()).unwrap();
        assert_eq!(
            yaml,
            "\"A\": \"x\\0\\\"\\\\\\n\"\n\"B\": \"\\x7F\\x85\\u2028\\uFEFF\u{1F600}\\té\"\n"
        );
        assert_eq!(render(Format::Json, &[]).unwrap(), b"{}\n");
        assert_eq!(render(Format::Yaml, &[]).unwrap(), b"{}\n");
    }

    #[test]
    fn write_private_is_0600_and_replaces() {
        let dir = std::env::temp_dir().join(format!("czctl-format-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("out.env");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, b"K='v'\n").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"K='v'\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["out.env"], "no temporary file left behind");
        let missing = dir.join("no-such-dir").join("out.env");
        assert!(write_private(&missing, b"x").is_err());
        assert!(write_private(Path::new("/"), b"x").is_err());
        fs::remove_dir_all(&dir).unwrap();
    }
}
