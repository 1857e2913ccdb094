//! Documentation generated from the clap definitions: shell completions and man pages.
//!
//! Man pages live in `man/` (one per command and subcommand, hidden ones excluded); the test
//! `man_pages_are_current` fails when they are stale. Regenerate them with
//! `CZCTL_UPDATE_MAN=1 cargo test --lib docs`.

use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// Writes the completion script for `shell`.
pub fn completion(shell: Shell, out: &mut dyn std::io::Write) {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "czctl", out);
}

/// Every man page: (file name, roff text), for `czctl` and each visible subcommand.
pub fn man_pages() -> Vec<(String, Vec<u8>)> {
    let mut pages = Vec::new();
    let mut root = Cli::command();
    root.build();
    collect(&root, "czctl", &mut pages);
    pages
}

fn collect(cmd: &clap::Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) {
    let mut text = Vec::new();
    let page = cmd
        .clone()
        .name(name.to_string())
        .bin_name(name.replace('-', " "));
    // Rendering into a Vec cannot fail.
    clap_mangen::Man::new(page)
        .render(&mut text)
        .expect("render man page");
    pages.push((format!("{name}.1"), text));
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        collect(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn man_pages_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
        let pages = man_pages();
        if std::env::var_os("CZCTL_UPDATE_MAN").is_some() {
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            for (name, text) in &pages {
                std::fs::write(dir.join(name), text).unwrap();
            }
        }
        let mut stale = Vec::new();
        for (name, text) in &pages {
            if std::fs::read(dir.join(name)).ok().as_deref() != Some(text.as_slice()) {
                stale.push(name.clone());
            }
        }
        let expected: std::collections::BTreeSet<_> =
            pages.iter().map(|(n, _)| n.clone()).collect();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !expected.contains(&name) {
                stale.push(format!("{name} (no such command)"));
            }
        }
        assert!(
            stale.is_empty(),
            "man/ is stale: {stale:?}; regenerate with CZCTL_UPDATE_MAN=1 cargo test --lib docs"
        );
    }

    #[test]
    fn every_visible_command_has_a_page() {
        let names: Vec<String> = man_pages().into_iter().map(|(n, _)| n).collect();
        for expected in [
            "czctl.1",
            "czctl-namespace-teleport.1",
            "czctl-session-close.1",
            "czctl-status.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} missing from {names:?}"
            );
        }
    }

    #[test]
    fn completions_name_the_commands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completion(shell, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains("teleport") && text.contains("session"),
                "{shell:?}"
            );
        }
    }
}
