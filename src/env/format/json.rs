//! `json`: one object of strings, with serde_json's escaping.

use super::{unicode, Reason};

/// One `"KEY": "value"` member, without its separator.
pub(super) fn json_entry(key: &str, value: &[u8]) -> Result<Vec<u8>, Reason> {
    let value = unicode(value, "JSON strings are Unicode text")?;
    let mut out = json_string(key);
    out.push_str(": ");
    out.push_str(&json_string(value));
    Ok(out.into_bytes())
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).expect("a string always serializes")
}
