//! `sh`: `export KEY='value'` lines for bash and dash to source.

use std::borrow::Cow;

use super::{Reason, NUL_IN_VARIABLE};

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

pub(super) fn sh_entry(key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::var;
    use super::super::{render, Format};

    #[test]
    fn sh_escapes_single_quotes_only() {
        let out = render(Format::Sh, &var("K", b"a'b\"$c\\\n\xff")).unwrap();
        assert_eq!(out, b"export K='a'\\''b\"$c\\\n\xff'\n");
        assert_eq!(render(Format::Sh, &[]).unwrap(), b"");
    }
}
