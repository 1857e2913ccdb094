//! Round trip of every export format through its real readers: each value rendered is read back
//! byte-for-byte by every reader the format names, or the format refuses it — and a refusal is
//! only allowed where a reader really disagrees (shown below by writing the value the naive ways
//! and watching a reader get it wrong).
//!
//! Readers: `env` → python-dotenv (`dotenv_values` with interpolation on and off, `load_dotenv`)
//! and dotenvy (`from_path_iter`); `sh` → bash and dash sourcing the file, in the C and C.UTF-8
//! locales, and the environment of a program they start; `json` → serde_json and python's json;
//! `yaml` → serde_saphyr. The readers are prerequisites: a missing one (dash, python-dotenv)
//! fails the tests that need it, naming what to install; CI installs them.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use czctl::env::format::{render, sh_special_names, write_private, Format, FormatError};

use Format::{Env, Json, Sh, Yaml};

/// A hard value and the formats that must refuse it.
struct Case {
    value: Vec<u8>,
    refused: &'static [Format],
}

fn case(value: impl AsRef<[u8]>, refused: &'static [Format]) -> Case {
    Case {
        value: value.as_ref().to_vec(),
        refused,
    }
}

fn cases() -> Vec<Case> {
    let mut long = String::new();
    for i in 0..2000 {
        long.push_str(&format!("line {i}: \"q\" 'q' # = \t ü\n"));
    }
    vec![
        case("", &[]),
        case(" ", &[]),
        case("plain", &[]),
        case("two words", &[]),
        case("line1\nline2\n", &[]),
        case("\nleading newline", &[]),
        case("\n\n", &[]),
        case("it's", &[]),
        case("'", &[]),
        case("''quoted''", &[]),
        case("say \"hi\"", &[]),
        case("\"", &[]),
        case("both ' and \"", &[]),
        case("$HOME", &[]),
        case("$", &[]),
        case("a$", &[]),
        case("$$ and $1 and $@ and $é", &[]),
        case("$(id -u)", &[]),
        case("`id -u`", &[]),
        case("${a:b} and ${ and ${X:d}", &[]),
        case("{X} and $ {X}", &[]),
        case("# not a comment", &[]),
        case("a #b", &[]),
        case("value # with hash", &[]),
        case("C:\\dir\\file", &[]),
        case("\\n is not a newline", &[]),
        case("\\t\\r\\a\\b\\f\\v\\x41\\u0041", &[]),
        case("a\\\\b", &[]),
        case("\\'", &[]),
        case("\\\"", &[]),
        case("\\$HOME", &[]),
        case("\\\nnext line", &[]),
        case("\\ space", &[]),
        case("key=value=x", &[]),
        case("=", &[]),
        case("  leading and trailing  ", &[]),
        case("\ttabs\t", &[]),
        case(" \t \n \t ", &[]),
        case("ünïcødé ✓ 日本語 🎉 עברית", &[]),
        case(
            "\u{a0}nbsp\u{2028}ls\u{2029}ps\u{85}nel\u{feff}bom\u{3000}",
            &[],
        ),
        case("\x01\x07\x08\x0b\x0c\x1b\x1c\x1d\x1e\x1f\x7f", &[]),
        case("export X=1", &[]),
        case("yes", &[]),
        case("~", &[]),
        case("null", &[]),
        case("0o17", &[]),
        case("1e3", &[]),
        case("- item", &[]),
        case(": colon", &[]),
        case("{a: b}", &[]),
        case("[1, 2]", &[]),
        case("&anchor *alias !tag %dir @at |lit >fold ?q", &[]),
        case(
            "multi\nline with 'quotes' and # hash\n  indented\n\ttabbed",
            &[],
        ),
        case(long.as_bytes(), &[]),
        // env: dotenvy expands $ except in single quotes, which cannot hold '; in double quotes
        // python-dotenv keeps \$ as two characters.
        case("it's $5", &[Env]),
        case("'$'", &[Env]),
        // env: $ needs single quotes for dotenvy, but inside them python-dotenv reads \\ as \.
        case("$HOME\\\\x", &[Env]),
        case("pa$$w0rd'\"\\\\`", &[Env]),
        // env: python-dotenv expands ${X} even in single quotes (interpolate=True, its default);
        // dotenvy expands it in double quotes.
        case("${HOME}", &[Env]),
        case("${X:-default}", &[Env]),
        case("${}", &[Env]),
        case("a ${b} c", &[Env]),
        // env: ends with a backslash — python-dotenv's quote regex takes \" or \' at the end as an
        // escaped quote and runs on to the next quote in the file; dotenvy's line splitter does
        // the same in single quotes, and drops a final unquoted backslash.
        case("ends with \\", &[Env]),
        case("\\", &[Env]),
        case("\\\\", &[Env]),
        // env: python-dotenv reads with universal newlines (CR, CRLF → LF); dotenvy has no \r
        // escape (an error in double quotes).
        case("crlf\r\n", &[Env]),
        case("cr\r", &[Env]),
        // env, sh: NUL — bash and dash drop it; python-dotenv's load_dotenv raises "embedded null
        // byte" and dotenvy's from_path panics in set_var.
        case("nul\0byte", &[Env, Sh]),
        case("\0", &[Env, Sh]),
        // env, json, yaml: not UTF-8 — python-dotenv and dotenvy fail to decode the file, JSON and
        // YAML strings are Unicode. Only single quotes in sh carry raw bytes.
        case(b"\xff\xfe\xe0'bin\xc3", &[Env, Json, Yaml]),
        case(b"\x80", &[Env, Json, Yaml]),
        // Nothing carries NUL and non-UTF-8 together.
        case(b"\xff\0", &[Env, Sh, Json, Yaml]),
    ]
}

fn key(index: usize) -> String {
    format!("CZ_V{index:03}")
}

// ------------------------------------------------------------------------------------ readers

type Values = BTreeMap<String, Vec<u8>>;
/// Variables in file order.
type Vars = Vec<(String, Vec<u8>)>;
/// One reader's verdict on one file.
type Verdict = (Reader, Result<(), String>);

static FILES: AtomicU32 = AtomicU32::new(0);

fn scratch() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("czctl-env-formats-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    })
    .clone()
}

/// Writes `text` as the product does and returns the path.
fn file(text: &[u8], extension: &str) -> PathBuf {
    let path = scratch().join(format!(
        "f{}.{extension}",
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    write_private(&path, text).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    path
}

/// Removes files that were read as expected (a failure keeps its file for a look). The
/// per-process scratch directory stays: tests run in parallel and share it.
fn remove(paths: impl IntoIterator<Item = PathBuf>) {
    for path in paths {
        let _ = fs::remove_file(path);
    }
}

fn have(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|out| out.status.success())
}

/// The readers are prerequisites (README, Quick start): a missing one fails the test that
/// needs it, saying what to install, instead of passing without it.
fn need(found: &OnceLock<bool>, check: impl FnOnce() -> bool, what: &str) {
    assert!(*found.get_or_init(check), "missing prerequisite: {what}");
}

fn need_dash() {
    static HAVE: OnceLock<bool> = OnceLock::new();
    need(
        &HAVE,
        || have("dash", &["-c", ":"]),
        "dash (apt-get install dash)",
    );
}

fn need_python_dotenv() {
    static HAVE: OnceLock<bool> = OnceLock::new();
    need(
        &HAVE,
        || have("python3", &["-c", "import dotenv"]),
        "python-dotenv (python3 -m pip install python-dotenv)",
    );
}

#[derive(Clone, Copy, Debug)]
enum Reader {
    /// `dotenv_values(path, interpolate=...)`.
    PythonDotenvValues {
        interpolate: bool,
    },
    /// `load_dotenv(path)`, then `os.environ`.
    PythonLoadDotenv,
    /// `dotenvy::from_path_iter`.
    Dotenvy,
    /// `set -a; . FILE` in the shell and locale, then each variable as the shell sees it.
    Shell {
        shell: &'static str,
        locale: &'static str,
    },
    /// `. FILE; exec env -0`: what a program started from the shell gets.
    ShellChild {
        shell: &'static str,
    },
    SerdeJson,
    PythonJson,
    SerdeSaphyr,
}

fn readers(format: Format) -> Vec<Reader> {
    let mut readers = Vec::new();
    match format {
        Env => {
            need_python_dotenv();
            readers.push(Reader::PythonDotenvValues { interpolate: true });
            readers.push(Reader::PythonDotenvValues { interpolate: false });
            readers.push(Reader::PythonLoadDotenv);
            readers.push(Reader::Dotenvy);
        }
        Sh => {
            need_dash();
            for shell in ["bash", "dash"] {
                readers.push(Reader::Shell { shell, locale: "C" });
                readers.push(Reader::Shell {
                    shell,
                    locale: "C.UTF-8",
                });
                readers.push(Reader::ShellChild { shell });
            }
        }
        Json => {
            readers.push(Reader::SerdeJson);
            if have("python3", &["-c", ""]) {
                readers.push(Reader::PythonJson);
            }
        }
        Yaml => readers.push(Reader::SerdeSaphyr),
    }
    readers
}

/// Reads each job's file (`{"path", "keys"}` on stdin) with python's json or python-dotenv and
/// prints, per file, the values or the error; python-dotenv's "could not parse statement"
/// warnings count as errors.
const PYTHON_READ: &str = r#"
import json, logging, os, sys

class Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())

collect = Collect()
logging.getLogger("dotenv").addHandler(collect)
logging.getLogger("dotenv").propagate = False
mode = sys.argv[1]
results = []
for job in json.load(sys.stdin):
    collect.messages = []
    try:
        if mode == "json":
            with open(job["path"], encoding="utf-8") as f:
                values = json.load(f)
        elif mode == "load":
            from dotenv import load_dotenv
            for key in job["keys"]:
                os.environ.pop(key, None)
            load_dotenv(job["path"], override=True)
            values = {key: os.environ[key] for key in job["keys"] if key in os.environ}
        else:
            from dotenv import dotenv_values
            values = dotenv_values(job["path"], interpolate=(mode == "interpolate"))
        if collect.messages:
            results.append({"error": "; ".join(collect.messages)})
        else:
            results.append({"values": values})
    except Exception as e:
        results.append({"error": repr(e)})
json.dump(results, sys.stdout)
"#;

const SHELL_READ: &str = r#"set -a
. "$1"
shift
for czctl_key do
  eval "czctl_set=\${$czctl_key+S} czctl_value=\${$czctl_key-}"
  printf '%s%s\0' "${czctl_set:-U}" "$czctl_value"
done
"#;

/// Runs a command; its stdout, or the failure (a non-zero exit or anything on stderr).
fn run(command: &mut Command) -> Result<Vec<u8>, String> {
    let out = command.output().map_err(|e| format!("cannot run: {e}"))?;
    if !out.status.success() || !out.stderr.is_empty() {
        return Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn utf8_values(map: BTreeMap<String, Option<String>>) -> Result<Values, String> {
    map.into_iter()
        .map(|(k, v)| match v {
            Some(v) => Ok((k, v.into_bytes())),
            None => Err(format!("{k} has no value")),
        })
        .collect()
}

/// Reads every file with `reader`: the variables it sees (all of them, or for shells the keys
/// asked), or what went wrong. python-dotenv reads them all in one process.
fn read_all(reader: Reader, files: &[(PathBuf, Vec<String>)]) -> Vec<Result<Values, String>> {
    let mode = match reader {
        Reader::PythonDotenvValues { interpolate: true } => "interpolate",
        Reader::PythonDotenvValues { interpolate: false } => "plain",
        Reader::PythonLoadDotenv => "load",
        Reader::PythonJson => "json",
        _ => {
            return files
                .iter()
                .map(|(path, keys)| read(reader, path, keys))
                .collect()
        }
    };
    let jobs: Vec<serde_json::Value> = files
        .iter()
        .map(|(path, keys)| serde_json::json!({"path": path, "keys": keys}))
        .collect();
    let mut child = Command::new("python3")
        .args(["-c", PYTHON_READ, mode])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let input = serde_json::to_vec(&jobs).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "python reader failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answers.len(), files.len());
    answers
        .into_iter()
        .map(|answer| match (answer.get("values"), answer.get("error")) {
            (Some(values), None) => utf8_values(serde_json::from_value(values.clone()).unwrap()),
            (_, error) => Err(error.map(|e| e.to_string()).unwrap_or_default()),
        })
        .collect()
}

/// Reads `path` with a reader that runs per file.
fn read(reader: Reader, path: &Path, keys: &[String]) -> Result<Values, String> {
    match reader {
        Reader::PythonDotenvValues { .. } | Reader::PythonLoadDotenv | Reader::PythonJson => {
            read_all(reader, &[(path.to_path_buf(), keys.to_vec())]).remove(0)
        }
        Reader::Dotenvy => {
            let iter = dotenvy::from_path_iter(path).map_err(|e| e.to_string())?;
            let mut values = Values::new();
            for item in iter {
                let (k, v) = item.map_err(|e| e.to_string())?;
                values.insert(k, v.into_bytes());
            }
            Ok(values)
        }
        Reader::Shell { shell, locale } => {
            let out = run(Command::new(shell)
                .env("LC_ALL", locale)
                .args(["-c", SHELL_READ, shell])
                .arg(path)
                .args(keys))?;
            let fields: Vec<&[u8]> = out.split(|b| *b == 0).collect();
            if fields.len() != keys.len() + 1 || !fields[keys.len()].is_empty() {
                return Err(format!(
                    "unexpected output {:?}",
                    String::from_utf8_lossy(&out)
                ));
            }
            let mut values = Values::new();
            for (k, field) in keys.iter().zip(fields) {
                if let Some(value) = field.strip_prefix(b"S") {
                    values.insert(k.clone(), value.to_vec());
                }
            }
            Ok(values)
        }
        Reader::ShellChild { shell } => {
            let out = run(Command::new(shell)
                .env_clear()
                .args(["-c", ". \"$1\"; exec env -0", shell])
                .arg(path))?;
            let mut values = Values::new();
            for entry in out.split(|b| *b == 0).filter(|e| !e.is_empty()) {
                let at = entry.iter().position(|b| *b == b'=').unwrap_or(entry.len());
                let name = String::from_utf8_lossy(&entry[..at]).into_owned();
                if keys.contains(&name) {
                    values.insert(name, entry.get(at + 1..).unwrap_or_default().to_vec());
                }
            }
            Ok(values)
        }
        Reader::SerdeJson => {
            let map: BTreeMap<String, String> =
                serde_json::from_slice(&fs::read(path).unwrap()).map_err(|e| e.to_string())?;
            Ok(map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        }
        Reader::SerdeSaphyr => {
            let text = fs::read(path).unwrap();
            let map: BTreeMap<String, String> =
                serde_saphyr::from_slice(&text).map_err(|e| e.to_string())?;
            Ok(map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        }
    }
}

/// Compares what a reader saw with `expected` (for shells only the keys asked; parsers must
/// see nothing else either). Returns what differed.
fn compare(
    reader: Reader,
    got: Result<Values, String>,
    expected: &[(String, Vec<u8>)],
) -> Result<(), String> {
    let got = got?;
    let mut problems = Vec::new();
    for (k, v) in expected {
        match got.get(k) {
            Some(value) if value == v => {}
            Some(value) => problems.push(format!(
                "{k}: expected {:?}, read {:?}",
                String::from_utf8_lossy(v),
                String::from_utf8_lossy(value)
            )),
            None => problems.push(format!("{k}: missing")),
        }
    }
    let exhaustive = !matches!(reader, Reader::Shell { .. } | Reader::ShellChild { .. });
    if exhaustive {
        for k in got
            .keys()
            .filter(|k| !expected.iter().any(|(e, _)| e == *k))
        {
            problems.push(format!("unexpected key {k:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// For each file (text and the variables it should give), each reader's verdict.
fn verdicts(format: Format, files: &[(PathBuf, Vars)]) -> Vec<Vec<Verdict>> {
    let jobs: Vec<(PathBuf, Vec<String>)> = files
        .iter()
        .map(|(path, vars)| (path.clone(), vars.iter().map(|(k, _)| k.clone()).collect()))
        .collect();
    let mut out: Vec<Vec<Verdict>> = files.iter().map(|_| Vec::new()).collect();
    for reader in readers(format) {
        for (index, got) in read_all(reader, &jobs).into_iter().enumerate() {
            out[index].push((reader, compare(reader, got, &files[index].1)));
        }
    }
    out
}

/// Renders each set of variables in `format` and asserts every reader gets them back.
fn assert_round_trips(format: Format, sets: &[Vars]) {
    let files: Vec<(PathBuf, Vars)> = sets
        .iter()
        .map(|vars| {
            let text = render(format, vars).unwrap_or_else(|e| panic!("{format}: {e}"));
            (file(&text, extension(format)), vars.clone())
        })
        .collect();
    for ((path, _), verdicts) in files.iter().zip(verdicts(format, &files)) {
        for (reader, verdict) in verdicts {
            if let Err(problem) = verdict {
                panic!(
                    "{format} read by {reader:?} differs ({}):\n{problem}",
                    path.display()
                );
            }
        }
    }
    remove(files.into_iter().map(|(path, _)| path));
}

fn extension(format: Format) -> &'static str {
    match format {
        Env => "env",
        Sh => "sh",
        Json => "json",
        Yaml => "yaml",
    }
}

// -------------------------------------------------------------------------------------- tests

fn round_trip(format: Format) {
    let mut accepted = Vec::new();
    let mut surprises = Vec::new();
    for (index, case) in cases().into_iter().enumerate() {
        let vars = vec![(key(index), case.value.clone())];
        let must_refuse = case.refused.contains(&format);
        let shown = String::from_utf8_lossy(&case.value).into_owned();
        match render(format, &vars) {
            Ok(_) => {
                if must_refuse {
                    surprises.push(format!("case {index} {shown:?} should be refused"));
                }
                accepted.push(vars.into_iter().next().unwrap());
            }
            Err(FormatError::Unrepresentable {
                key: refused_key,
                format: refused_format,
                alternatives,
                ..
            }) if must_refuse => {
                assert_eq!((refused_key, refused_format), (key(index), format));
                let carriers: Vec<Format> = Format::ALL
                    .into_iter()
                    .filter(|f| !case.refused.contains(f))
                    .collect();
                assert_eq!(alternatives, carriers, "case {index}");
            }
            Err(err) => surprises.push(format!("case {index} {shown:?} refused: {err}")),
        }
    }
    // Every accepted value (expected or not) must read back. All together, so one value's
    // quoting cannot swallow the next line, in both orders, and each alone (no later quote in
    // the file to hide a runaway one).
    let mut sets = vec![accepted.clone(), accepted.iter().rev().cloned().collect()];
    sets.extend(accepted.into_iter().map(|var| vec![var]));
    assert_round_trips(format, &sets);
    assert!(surprises.is_empty(), "{format}:\n{}", surprises.join("\n"));
}

#[test]
fn env_round_trips_through_python_dotenv_and_dotenvy() {
    round_trip(Env);
}

#[test]
fn sh_round_trips_through_bash_and_dash() {
    round_trip(Sh);
}

#[test]
fn json_round_trips_through_json_parsers() {
    round_trip(Json);
}

#[test]
fn yaml_round_trips_through_a_yaml_parser() {
    round_trip(Yaml);
}

/// The ways one might write a value in the dotenv dialect.
fn naive_env_lines(value: &[u8]) -> Vec<Vec<u8>> {
    let escaped = |escape_dollar: bool| {
        let mut out = b"\"".to_vec();
        for &b in value {
            match b {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'"' => out.extend_from_slice(b"\\\""),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                b'$' if escape_dollar => out.extend_from_slice(b"\\$"),
                b => out.push(b),
            }
        }
        out.push(b'"');
        out
    };
    let mut single = b"'".to_vec();
    single.extend_from_slice(value);
    single.push(b'\'');
    vec![value.to_vec(), single, escaped(false), escaped(true)]
}

/// Every value `env` refuses is misread by at least one of its readers whichever way it is
/// quoted; likewise `sh` (NUL) and `json`/`yaml` (bytes that are not UTF-8).
#[test]
fn refusals_are_real_disagreements() {
    for format in Format::ALL {
        let mut files = Vec::new();
        for (index, case) in cases().into_iter().enumerate() {
            if !case.refused.contains(&format) {
                continue;
            }
            let k = key(index);
            let candidates: Vec<Vec<u8>> = match format {
                Env => naive_env_lines(&case.value)
                    .into_iter()
                    .map(|v| [k.as_bytes(), b"=", &v, b"\nCZ_NEXT=\"next\"\n"].concat())
                    .collect(),
                Sh => vec![[
                    format!("export {k}='").as_bytes(),
                    &case.value,
                    b"'\nexport CZ_NEXT='next'\n",
                ]
                .concat()],
                Json => vec![[
                    format!("{{\"{k}\": \"").as_bytes(),
                    &case.value,
                    b"\", \"CZ_NEXT\": \"next\"}\n",
                ]
                .concat()],
                Yaml => vec![[
                    format!("\"{k}\": \"").as_bytes(),
                    &case.value,
                    b"\"\n\"CZ_NEXT\": \"next\"\n",
                ]
                .concat()],
            };
            let expected = vec![
                (k.clone(), case.value.clone()),
                ("CZ_NEXT".to_string(), b"next".to_vec()),
            ];
            for candidate in candidates {
                files.push((file(&candidate, extension(format)), expected.clone()));
            }
        }
        for ((path, _), verdicts) in files.iter().zip(verdicts(format, &files)) {
            assert!(
                !verdicts.iter().all(|(_, verdict)| verdict.is_ok()),
                "{format} refuses this value, but every reader reads {} back",
                path.display()
            );
        }
        remove(files.into_iter().map(|(path, _)| path));
    }
}

#[test]
fn keys_round_trip_or_are_refused() {
    // env carries dotenvy's key syntax, dots included; sh only shell identifiers.
    let keys: [(&str, &[Format]); 9] = [
        ("app.port", &[Sh]),
        ("_underscore", &[]),
        ("lower_case9", &[]),
        ("export", &[]),
        ("my-key", &[Env, Sh]),
        ("9lives", &[Env, Sh]),
        ("key with space", &[Env, Sh]),
        ("ключ", &[Env, Sh]),
        ("", &[Env, Sh]),
    ];
    for format in Format::ALL {
        // A key longer than YAML's 1024-character limit for implicit keys.
        let mut sets = vec![vec![("K".repeat(3000), b"long".to_vec())]];
        for (k, refused) in keys {
            let vars = vec![(k.to_string(), b"v 'a' \"b\"\n".to_vec())];
            match render(format, &vars) {
                Ok(_) => {
                    assert!(
                        !refused.contains(&format),
                        "{format} should refuse key {k:?}"
                    );
                    sets.push(vars);
                }
                Err(FormatError::Unrepresentable { key, .. }) => {
                    assert!(refused.contains(&format), "{format} refused key {k:?}");
                    assert_eq!(key, k);
                }
                Err(err) => panic!("{err}"),
            }
        }
        assert_round_trips(format, &sets);
    }
}

/// The names `sh` refuses really do not come back from bash (or dash).
#[test]
fn sh_special_names_are_misread_by_a_shell() {
    let files: Vec<_> = sh_special_names()
        .iter()
        .map(|name| {
            assert!(render(Sh, &[(name.to_string(), b"1".to_vec())]).is_err());
            let path = file(format!("export {name}='cz val'\n").as_bytes(), "sh");
            (path, vec![(name.to_string(), b"cz val".to_vec())])
        })
        .collect();
    for ((_, vars), verdicts) in files.iter().zip(verdicts(Sh, &files)) {
        let broken = verdicts
            .iter()
            .any(|(reader, verdict)| matches!(reader, Reader::Shell { .. }) && verdict.is_err());
        assert!(
            broken,
            "bash and dash both read {} back: it need not be refused",
            vars[0].0
        );
    }
    remove(files.into_iter().map(|(path, _)| path));
}
