//! `yaml`: one block mapping of double-quoted scalars.

use super::{unicode, Reason};

/// One `"KEY": "value"` line (an explicit `? "KEY"` key when the key is long).
pub(super) fn yaml_entry(key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
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

#[cfg(test)]
mod tests {
    use super::super::{render, Format};

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
}
