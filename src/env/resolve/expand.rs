//! `$(VAR)` expansion, byte for byte as the kubelet's
//! `third_party/forked/golang/expansion/expand.go` does it:
//!
//! - `$(NAME)` is replaced by what the mapping gives for `NAME` (the mapping decides what an
//!   unknown name becomes: the kubelet puts the reference back as written, `$(NAME)`);
//! - `$$` becomes `$`, so `$$(NAME)` becomes the literal `$(NAME)`;
//! - `$(` without a later `)` stays as written; the scan goes on right after the `(`;
//! - `$` followed by any other character stays as written, and a `$` at the very end too;
//! - the name is everything between `$(` and the first `)`, whatever it contains (`$()` asks
//!   the mapping for the empty name).
//!
//! A `$` before a multi-byte character: kubelets before the fix of kubernetes#136325 (2026)
//! copied only the first byte as a Latin-1 character and produced invalid UTF-8 (1.34 then
//! refused to start such containers); this follows the fixed kubelet, which keeps the
//! character as written.

/// Expands `input`. `mapping` appends the replacement of a `$(name)` reference to `out`.
pub(crate) fn expand(input: &str, mut mapping: impl FnMut(&str, &mut Vec<u8>)) -> Vec<u8> {
    let bytes = input.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.extend_from_slice(&bytes[checkpoint..cursor]);
            // `$` is ASCII, so the byte after it starts a character.
            let rest = &input[cursor + 1..];
            let advance = match rest.chars().next() {
                Some('$') => {
                    out.push(b'$');
                    1
                }
                Some('(') => match rest[1..].find(')') {
                    Some(close) => {
                        mapping(&rest[1..1 + close], &mut out);
                        close + 2
                    }
                    None => {
                        out.extend_from_slice(b"$(");
                        1
                    }
                },
                Some(other) => {
                    out.push(b'$');
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(other.encode_utf8(&mut buf).as_bytes());
                    other.len_utf8()
                }
                None => 0,
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < bytes.len() {
        out.extend_from_slice(&bytes[checkpoint..]);
    }
    out
}

use k8s_openapi::api::core::v1::EnvVar;

use super::{Env, Slot, Sources};

/// Expands an `env[].value` against the variables defined so far, then the Service ones.
pub(super) fn expand_value(
    variable: &str,
    value: &str,
    env: &Env,
    later: &[EnvVar],
    sources: &Sources,
    warnings: &mut Vec<String>,
) -> Slot {
    let mut unknown = Vec::new();
    let mut undefined = Vec::new();
    let out = expand(value, |name, out| {
        let known = match env.slots.get(name) {
            Some(Slot::Known(bytes)) => Some(bytes.as_slice()),
            Some(Slot::Unknown(_)) => {
                unknown.push(name.to_string());
                None
            }
            None => match sources.service_env.iter().find(|(n, _)| n == name) {
                Some((_, text)) => Some(text.as_bytes()),
                None => {
                    if !undefined.iter().any(|n| n == name) {
                        undefined.push(name.to_string());
                    }
                    None
                }
            },
        };
        match known {
            Some(bytes) => out.extend_from_slice(bytes),
            None => {
                out.extend_from_slice(b"$(");
                out.extend_from_slice(name.as_bytes());
                out.push(b')');
            }
        }
    });
    for name in undefined {
        let hint = if later.iter().any(|v| v.name == name) {
            format!("; {name} is defined later in env, and only earlier entries count")
        } else if looks_like_service_variable(&name) && sources.service_env.is_empty() {
            format!(
                "; if {name} is a Service variable the kubelet adds, the container sees it expanded"
            )
        } else {
            String::new()
        };
        warnings.push(format!(
            "{variable}: $({name}) is not defined before it, so it stays the literal text $({name}), as the kubelet leaves it{hint}"
        ));
    }
    if let Some(first) = unknown.first() {
        Slot::Unknown(format!(
            "its value refers to $({first}), which is unresolved"
        ))
    } else {
        Slot::Known(out)
    }
}

/// Whether `name` has the shape of a variable the kubelet derives from a Service.
fn looks_like_service_variable(name: &str) -> bool {
    name.contains("_SERVICE_") || name.contains("_PORT")
}

#[cfg(test)]
mod tests {
    use super::expand;
    use std::collections::BTreeMap;

    /// The kubelet's mapping: known names give their value, unknown ones stay `$(NAME)`.
    fn run(input: &str, vars: &[(&str, &str)]) -> String {
        let vars: BTreeMap<&str, &str> = vars.iter().copied().collect();
        let out = expand(input, |name, out| match vars.get(name) {
            Some(value) => out.extend_from_slice(value.as_bytes()),
            None => {
                out.extend_from_slice(b"$(");
                out.extend_from_slice(name.as_bytes());
                out.push(b')');
            }
        });
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn table() {
        let vars = [
            ("A", "a"),
            ("B", "b"),
            ("EMPTY", ""),
            ("DOLLAR", "$(A)"),
            ("", "empty-name"),
        ];
        let cases: &[(&str, &str)] = &[
            // plain text
            ("", ""),
            ("plain", "plain"),
            // references
            ("$(A)", "a"),
            ("$(A)$(B)", "ab"),
            ("x$(A)y$(B)z", "xaybz"),
            ("$(A)_$(B)", "a_b"),
            ("$(EMPTY)", ""),
            ("$(A)$(A)", "aa"),
            // unknown names stay as written
            ("$(UNSET)", "$(UNSET)"),
            ("-$(UNSET)-$(A)", "-$(UNSET)-a"),
            // values are not expanded again
            ("$(DOLLAR)", "$(A)"),
            // escapes
            ("$$", "$"),
            ("$$$$", "$$"),
            ("$$(A)", "$(A)"),
            ("$$$(A)", "$a"),
            ("$$$$(A)", "$$(A)"),
            ("$$$$$$(A)", "$$$(A)"),
            ("$$$$$$$(A)", "$$$a"),
            ("a$$b", "a$b"),
            // incomplete references
            ("$(", "$("),
            ("$(A", "$(A"),
            ("x$(", "x$("),
            ("$($(A)", "$($(A)"),
            ("$(A$(B)", "$(A$(B)"),
            ("$(A$(B))", "$(A$(B))"),
            ("$(A )", "$(A )"),
            // the empty name is looked up like any other
            ("$()", "empty-name"),
            // a lone or trailing `$`, and `$` before other characters
            ("$", "$"),
            ("a$", "a$"),
            ("$$$", "$$"),
            ("$A", "$A"),
            ("$a$(A)", "$aa"),
            ("${A}", "${A}"),
            ("$)", "$)"),
            ("$ (A)", "$ (A)"),
            ("100$", "100$"),
            // multi-byte characters (the fixed kubelet keeps them whole)
            ("$é", "$é"),
            ("é$(A)é", "éaé"),
            ("$€$(A)", "$€a"),
            ("$(é)", "$(é)"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input, &vars), *want, "input {input:?}");
        }
    }

    #[test]
    fn replacement_bytes_are_kept_as_they_are() {
        let out = expand("<$(BIN)>", |_, out| out.extend_from_slice(&[0, 0xff, b'$']));
        assert_eq!(out, vec![b'<', 0, 0xff, b'$', b'>']);
    }
}
