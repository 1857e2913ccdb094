use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::*;

const SECRET: &str = "hunter2-SeCrEt";

pub(super) fn var(key: &str, value: &[u8]) -> Vec<(String, Vec<u8>)> {
    vec![(key.to_string(), value.to_vec())]
}

pub(super) fn refusal(format: Format, key: &str, value: &[u8]) -> (String, Vec<Format>) {
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

mod files {
    use super::super::file::{mark_line, write_file, WriteError, Written, MARK};
    use super::super::Format;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("czctl-file-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, format: Format, overwrite: bool) -> Result<Written, WriteError> {
        let mark = mark_line(format, "deployment demo/echo");
        write_file(path, format, mark.as_deref(), b"K='v'\n", overwrite)
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn a_new_file_is_marked_private_and_czctl_replaces_only_its_own() {
        let dir = scratch("own");
        let path = dir.join("app.env");
        assert_eq!(write(&path, Format::Env, false).unwrap(), Written::Created);
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with(MARK), "{text}");
        assert!(text.ends_with("\nK='v'\n"), "{text}");
        assert_eq!(mode(&path), 0o600);
        assert_eq!(write(&path, Format::Env, false).unwrap(), Written::Replaced);

        // The same file without the mark is the user's: refused, and left alone.
        fs::write(&path, "MINE=1\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let err = write(&path, Format::Env, false).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, WriteError::NotOurs { .. }), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("czctl did not write it"), "{text}");
        assert!(text.contains("--overwrite"), "{text}");
        assert!(text.contains("mode 0600 instead of 0640"), "{text}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "MINE=1\n");
        assert_eq!(mode(&path), 0o640);
        let overwrote = write(&path, Format::Env, true).unwrap();
        assert!(matches!(overwrote, Written::Overwrote(_)), "{overwrote:?}");
        assert_eq!(mode(&path), 0o600);

        // JSON has no mark: an existing one takes --overwrite, a new one does not.
        let json = dir.join("app.json");
        assert_eq!(write(&json, Format::Json, false).unwrap(), Written::Created);
        assert_eq!(fs::read(&json).unwrap(), b"K='v'\n", "no mark in JSON");
        let err = write(&json, Format::Json, false).unwrap_err();
        assert!(err.to_string().contains("JSON"), "{err}");
        write(&json, Format::Json, true).unwrap();
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left behind: {names:?}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_fifos_devices_and_links_to_them_are_never_written() {
        let dir = scratch("never");
        let fifo = dir.join("fifo");
        use rustix::fs::{mknodat, FileType, Mode, CWD};
        mknodat(CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0).expect("mkfifo");
        let to_null = dir.join("null-link");
        std::os::unix::fs::symlink("/dev/null", &to_null).unwrap();
        let to_dir = dir.join("dir-link");
        std::os::unix::fs::symlink(&dir, &to_dir).unwrap();
        for (path, what) in [
            (dir.as_path(), "a directory"),
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/null"), "a character device"),
            (to_null.as_path(), "a symbolic link to a character device"),
            (to_dir.as_path(), "a symbolic link to a directory"),
        ] {
            for overwrite in [false, true] {
                let err = write(path, Format::Env, overwrite).unwrap_err();
                let text = err.to_string();
                assert!(matches!(err, WriteError::Never { .. }), "{text}");
                assert!(text.contains(what), "{text}");
                assert!(text.contains(&path.display().to_string()), "{text}");
            }
        }
        use std::os::unix::fs::FileTypeExt;
        assert!(fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_link_to_a_file_is_not_followed() {
        let dir = scratch("link");
        let target = dir.join("target");
        fs::write(&target, format!("{MARK} but a link to it is not ours\n")).unwrap();
        let link = dir.join("link.env");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write(&link, Format::Env, false).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        let overwrote = write(&link, Format::Env, true).unwrap();
        assert!(matches!(overwrote, Written::Overwrote(_)), "{overwrote:?}");
        assert!(
            fs::symlink_metadata(&link).unwrap().is_file(),
            "the link is replaced"
        );
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            format!("{MARK} but a link to it is not ours\n"),
            "its target is untouched"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
