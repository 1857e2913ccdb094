//! `env`: `KEY='value'` lines read alike by python-dotenv and the dotenvy crate.

use std::borrow::Cow;

use super::{unicode, Reason, NUL_IN_VARIABLE};

pub(super) fn env_entry(key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{refusal, var};
    use super::super::{render, Format};
    use super::*;

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
}
