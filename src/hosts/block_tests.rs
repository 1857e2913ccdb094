use super::*;

fn id(session: &str, pid: u32) -> BlockId {
    BlockId::new(session, pid).expect("test session ids are valid")
}

fn entry(addr: [u8; 4], names: &[&str]) -> Entry {
    Entry::new(Ipv4Addr::from(addr), names.iter().copied()).expect("test names are valid")
}

fn echo() -> Vec<Entry> {
    vec![entry(
        [127, 12, 34, 56],
        &[
            "echo",
            "echo.demo",
            "echo.demo.svc",
            "echo.demo.svc.cluster.local",
        ],
    )]
}

const ECHO_BLOCK: &str =
    "# czctl begin session=tp-3k9x2 pid=4242 -- added by czctl; removed when the session ends\n\
127.12.34.56\techo echo.demo echo.demo.svc echo.demo.svc.cluster.local\n\
# czctl end session=tp-3k9x2\n";

/// Originals whose bytes must survive any splice: CRLF, no final newline, comments, blanks.
const ORIGINALS: &[&str] = &[
    "",
    "127.0.0.1 localhost\n",
    "127.0.0.1 localhost",
    "127.0.0.1 localhost\r\n::1 localhost\r\n",
    "127.0.0.1 localhost\r\n# comment\r\n::1 localhost",
    "# only a comment\n\n\n",
    "\n",
    "  10.0.0.1   db  # trailing comment \t\n# czctl is mentioned here\n",
    // A bare `\r` at the end stays bare: no `\n` is left after it once the block is gone.
    "127.0.0.1 localhost\r",
    "127.0.0.1 localhost\r\n::1 localhost\r",
    "\r",
];

#[test]
fn render_has_markers_and_one_line_per_address() {
    assert_eq!(render(&id("tp-3k9x2", 4242), &echo()), ECHO_BLOCK);
}

#[test]
fn render_splits_long_name_lists_and_sorts_addresses() {
    let names: Vec<String> = (0..19).map(|i| format!("n{i}")).collect();
    let many = Entry::new(Ipv4Addr::new(127, 0, 0, 9), names.clone()).expect("valid names");
    let first = entry([127, 0, 0, 2], &["a"]);
    let text = render(&id("s", 1), &[many, first]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 + 1 + 3, "{text}");
    assert_eq!(lines[1], "127.0.0.2\ta");
    assert_eq!(lines[2], format!("127.0.0.9\t{}", names[..8].join(" ")));
    assert_eq!(lines[4], format!("127.0.0.9\t{}", names[16..].join(" ")));
}

#[test]
fn splice_round_trip_on_every_original() {
    let id = id("tp-3k9x2", 4242);
    for &original in ORIGINALS {
        let with = splice(original, &id, Some(&echo()));
        assert!(with.starts_with(original), "{original:?} -> {with:?}");
        assert!(with.contains(ECHO_BLOCK.trim_end()), "{with:?}");
        assert_eq!(
            with.ends_with('\n'),
            original.is_empty() || original.ends_with('\n')
        );
        let blocks = parse_blocks(&with);
        assert_eq!(blocks.len(), 1);
        assert!(blocks[0].terminated());
        assert_eq!((blocks[0].session(), blocks[0].pid()), ("tp-3k9x2", 4242));
        assert_eq!(blocks[0].line_count(), 3);
        // Updating again with the same entries changes nothing; removing restores every byte.
        assert_eq!(splice(&with, &id, Some(&echo())), with);
        assert_eq!(splice(&with, &id, None), original, "{with:?}");
    }
}

#[test]
fn update_replaces_in_place_and_keeps_foreign_edits() {
    let id = id("tp-1", 7);
    let original = "127.0.0.1 localhost\r\n# keep me\r\n";
    let first = splice(original, &id, Some(&echo()));
    // Other programs edit the file while czctl runs: a line appended after our block, and
    // one changed before it.
    let edited = format!("{}10.1.1.1 foreign\n", first.replace("keep me", "kept"));
    let more = vec![entry([127, 0, 0, 5], &["other.demo"]), echo().remove(0)];
    let second = splice(&edited, &id, Some(&more));
    let expected_block = render(&id, &more);
    assert_eq!(
        second,
        format!("127.0.0.1 localhost\r\n# kept\r\n{expected_block}10.1.1.1 foreign\n")
    );
    assert_eq!(
        splice(&second, &id, None),
        "127.0.0.1 localhost\r\n# kept\r\n10.1.1.1 foreign\n"
    );
}

#[test]
fn block_at_end_without_newline_stays_without_newline() {
    let id = id("s1", 1);
    let text = splice("a\nb", &id, Some(&echo()));
    assert!(text.starts_with("a\nb\n# czctl begin session=s1 pid=1"));
    assert!(text.ends_with("# czctl end session=s1"), "{text:?}");
    let updated = splice(&text, &id, Some(&[entry([127, 0, 0, 3], &["x"])]));
    assert!(
        updated.ends_with("127.0.0.3\tx\n# czctl end session=s1"),
        "{updated:?}"
    );
    assert_eq!(splice(&updated, &id, None), "a\nb");
}

#[test]
fn two_sessions_coexist_and_each_touches_only_its_own() {
    let (a, b) = (id("sess-a", 10), id("sess-b", 20));
    let original = "127.0.0.1 localhost\n";
    let both = splice(&splice(original, &a, Some(&echo())), &b, Some(&echo()));
    let blocks = parse_blocks(&both);
    assert_eq!(
        blocks.iter().map(|b| b.session()).collect::<Vec<_>>(),
        ["sess-a", "sess-b"]
    );
    let a_only = render(&a, &[entry([127, 0, 0, 7], &["seven"])]);
    let updated = splice(&both, &a, Some(&[entry([127, 0, 0, 7], &["seven"])]));
    assert_eq!(
        updated,
        format!("{original}{a_only}{}", render(&b, &echo()))
    );
    assert_eq!(
        splice(&updated, &a, None),
        format!("{original}{}", render(&b, &echo()))
    );
    assert_eq!(splice(&splice(&updated, &b, None), &a, None), original);
}

#[test]
fn matching_is_by_session_and_duplicates_are_collapsed() {
    let old = id("s", 100);
    let original = "x\n";
    let twice = format!(
        "{original}{}y\n{}",
        render(&old, &echo()),
        render(&old, &echo())
    );
    let new_owner = id("s", 200);
    let out = splice(&twice, &new_owner, Some(&echo()));
    assert_eq!(out, format!("{original}{}y\n", render(&new_owner, &echo())));
}

#[test]
fn stale_blocks_of_dead_owners_are_removed() {
    let original = "127.0.0.1 localhost\n# mine\n";
    let mut text = original.to_owned();
    for (session, pid) in [("dead-1", 11), ("live", 22), ("dead-2", 33)] {
        text = splice(&text, &id(session, pid), Some(&echo()));
    }
    let (out, removed) = remove_stale(&text, |_, pid| pid == 22);
    assert_eq!(
        out,
        format!("{original}{}", render(&id("live", 22), &echo()))
    );
    let summary: Vec<_> = removed
        .iter()
        .map(|b| (b.session(), b.pid(), b.line_count()))
        .collect();
    assert_eq!(summary, [("dead-1", 11, 3), ("dead-2", 33, 3)]);
    let (again, none) = remove_stale(&out, |_, pid| pid == 22);
    assert_eq!((again.as_str(), none.len()), (out.as_str(), 0));
}

#[test]
fn unterminated_block_is_reported_and_left_alone() {
    let original = "a\n# czctl begin session=s pid=9 -- x\n10.0.0.1 mine-or-not\nb\n";
    let blocks = parse_blocks(original);
    assert_eq!(blocks.len(), 1);
    assert!(!blocks[0].terminated());
    assert_eq!(
        (blocks[0].first_line_number(), blocks[0].line_count()),
        (2, 1)
    );
    let (out, removed) = remove_stale(original, |_, _| false);
    assert_eq!((out.as_str(), removed.len()), (original, 0));
    // The same session writes a fresh block at the end and removes only that one.
    let id = id("s", 9);
    let with = splice(original, &id, Some(&echo()));
    assert_eq!(with, format!("{original}{}", render(&id, &echo())));
    let states: Vec<bool> = parse_blocks(&with).iter().map(|b| b.terminated()).collect();
    assert_eq!(states, [false, true]);
    assert_eq!(splice(&with, &id, None), original);
}

#[test]
fn interleaved_or_malformed_markers_make_blocks_untouchable() {
    let interleaved = "# czctl begin session=a pid=1\n1.1.1.1 a\n# czctl begin session=b pid=2\n\
                       # czctl end session=a\n# czctl end session=b\n";
    assert!(parse_blocks(interleaved).iter().all(|b| !b.terminated()));
    assert_eq!(remove_stale(interleaved, |_, _| false).0, interleaved);
    assert_eq!(splice(interleaved, &id("a", 1), None), interleaved);
    let malformed = "# czctl begin session=a pid=1\n# czctl begin session=b pid=oops\n\
                     # czctl end session=a\n";
    let blocks = parse_blocks(malformed);
    assert_eq!(blocks.len(), 1);
    assert!(!blocks[0].terminated());
    assert_eq!(remove_stale(malformed, |_, _| false).0, malformed);
}

#[test]
fn markers_with_crlf_and_extra_spaces_are_recognised() {
    let text =
        "#  czctl begin  session=w pid=5 -- x\r\n1.2.3.4\tw\r\n# czctl end session=w\r\nz\r\n";
    let blocks = parse_blocks(text);
    assert_eq!((blocks[0].terminated(), blocks[0].lines()), (true, 0..3));
    assert_eq!(splice(text, &id("w", 5), None), "z\r\n");
}

#[test]
fn names_that_could_inject_lines_are_rejected() {
    let addr = Ipv4Addr::LOCALHOST;
    let long = "a".repeat(MAX_NAME_LEN + 1);
    for bad in [
        "a\n1.2.3.4 evil",
        "a b",
        "a\tb",
        "a#b",
        "",
        "-x",
        "é",
        "a\r",
        long.as_str(),
    ] {
        let err = Entry::new(addr, [bad]).expect_err(bad);
        assert!(matches!(err, InvalidInput::Name { .. }), "{bad:?}: {err}");
    }
    assert!(Entry::new(addr, ["ok", "x\ny"]).is_err());
    assert!(Entry::new(addr, Vec::<String>::new()).is_err());
    assert!(Entry::new(addr, ["a".repeat(MAX_NAME_LEN), "x-1.Y".to_owned()]).is_ok());
    for bad in [
        "",
        "tp 1",
        "tp\n",
        "a=b",
        "x_y",
        &"s".repeat(MAX_SESSION_LEN + 1),
    ] {
        assert!(BlockId::new(bad, 1).is_err(), "{bad:?}");
    }
    let msg = Entry::new(addr, ["a\nb"]).expect_err("invalid").to_string();
    assert!(
        msg.contains("refusing host name") && msg.contains("127.0.0.1"),
        "{msg}"
    );
}
