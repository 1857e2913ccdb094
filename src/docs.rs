//! Documentation generated from the clap definitions: shell completions and the man pages.
//!
//! Man pages live in `man/` (one per command and subcommand, hidden ones excluded); the test
//! `man_pages_are_current` fails when they are stale. Regenerate them with
//! `CZCTL_UPDATE_MAN=1 cargo test --lib docs`. Beside what clap knows, every page gets EXIT
//! STATUS (the table of [`crate::exit::Code`]); the root page and every command page also get
//! ENVIRONMENT and FILES, and the root page and some command pages EXAMPLES.
//!
//! No subcommand is hidden (the in-cluster agent is its own binary, `czctl-agent`), so the
//! completion scripts are clap's for the whole command.

use clap::CommandFactory;

use crate::cli::{Cli, Shell};

/// Writes the completion script for `shell` to `out` (normally stdout): a reader that goes
/// away ends czctl quietly (see [`crate::output`]).
pub fn completion(shell: Shell, out: &mut dyn std::io::Write) {
    crate::output::write_all_to(out, &completion_script(shell));
}

/// Prints the completion script for `shell` on stdout; a reader that goes away ends czctl
/// quietly.
pub fn print_completion(shell: Shell) {
    completion(shell, &mut crate::output::stdout());
}

/// The completion script for `shell`.
pub fn completion_script(shell: Shell) -> Vec<u8> {
    let mut cmd = Cli::command();
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    // Generating into a Vec cannot fail (clap_complete panics on a failed write).
    clap_complete::generate(shell, &mut cmd, "czctl", &mut script);
    script
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
    let leaf = cmd.get_subcommands().all(|s| s.get_name() == "help");
    let text = with_sections(text, &sections(name, leaf));
    pages.push((format!("{name}.1"), text));
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        collect(sub, &format!("{name}-{}", sub.get_name()), pages);
    }
}

/// `page` with `extra` inserted before its VERSION section (clap's last), or at its end.
fn with_sections(page: Vec<u8>, extra: &str) -> Vec<u8> {
    let text = String::from_utf8(page).expect("clap_mangen writes UTF-8");
    let text = match text.find("\n.SH VERSION\n") {
        Some(at) => format!("{}\n{}{}", &text[..at], extra.trim_end(), &text[at..]),
        None => format!("{text}{extra}"),
    };
    text.into_bytes()
}

/// The sections czctl adds to the page `name` (`czctl-namespace-teleport`); `leaf` when the
/// page is a command that runs (not a group of subcommands).
fn sections(name: &str, leaf: bool) -> String {
    let mut out = exit_status(name);
    let runs = name == "czctl" || (leaf && name != "czctl-completion");
    if runs {
        out.push_str(&environment());
        out.push_str(&files());
    }
    if let Some(examples) = examples(name) {
        out.push_str(".SH EXAMPLES\n");
        out.push_str(&examples);
    }
    out
}

/// Escapes text for roff: backslashes, hyphens (so they are not broken or turned into dashes)
/// and a leading dot or quote (which would start a request).
fn roff(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    if escaped.starts_with('.') || escaped.starts_with('\'') {
        format!("\\&{escaped}")
    } else {
        escaped
    }
}

/// A `.TP` item: `term` in bold, then its description.
fn item(term: &str, text: &str) -> String {
    format!(".TP\n\\fB{}\\fR\n{}\n", roff(term), roff(text))
}

fn exit_status(name: &str) -> String {
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (code, meaning) in crate::exit::TABLE {
        out.push_str(&item(&code.to_string(), meaning));
    }
    if name.ends_with("-teleport") && name != "czctl-namespace-teleport" || name == "czctl" {
        out.push_str(".PP\n");
        out.push_str(&roff(
            "With \"-- COMMAND\", a workload teleport exits with the exit code of COMMAND.",
        ));
        out.push('\n');
    }
    out.push_str(".PP\n");
    out.push_str(&roff(
        "A reader of standard output that goes away (czctl ... | head) ends czctl quietly with 0.",
    ));
    out.push('\n');
    out
}

/// The environment variables czctl reads (its own children's internal ones left out).
pub const ENVIRONMENT: [(&str, &str); 19] = [
    (
        "KUBECONFIG",
        "Colon-separated list of kubeconfig files, merged as kubectl merges them: missing files \
         are skipped (an error only when none exists), the first file to set a cluster, user or \
         context wins, and so does the first to set current-context. --kubeconfig PATH wins \
         over it and names one file, which must exist. Default: ~/.kube/config; under sudo, the \
         invoking user's (SUDO_USER's) ~/.kube/config.",
    ),
    (
        "SUDO_USER, USER",
        "Under sudo, SUDO_USER names whose ~/.kube/config is read (unless KUBECONFIG or \
         --kubeconfig says otherwise); either names the owner (user@host) in an intercept's \
         record.",
    ),
    (
        "CZCTL_STATE_DIR",
        "czctl's state directory (session records, logs, control sockets, hosts-file backups). \
         Default: $XDG_STATE_HOME/czctl, else ~/.local/state/czctl. Empty means unset. It must \
         be a directory of yours (or root's) that no one else may write; czctl creates it 0700.",
    ),
    (
        "XDG_STATE_HOME",
        "Base of the default state directory ($XDG_STATE_HOME/czctl).",
    ),
    (
        "CZCTL_REGISTRY_DIR",
        "The loopback address registry of this user's czctl runs. Default: \
         /run/czctl-loopback for root (sudo included), else $XDG_RUNTIME_DIR/czctl-loopback, \
         else $TMPDIR/czctl-loopback-UID. Same safety rules as CZCTL_STATE_DIR; created 0700.",
    ),
    (
        "XDG_RUNTIME_DIR",
        "Base of a user's default registry directory.",
    ),
    (
        "SUDO_UID, SUDO_GID",
        "Under sudo: the invoking user. Files and directories they own count as czctl's own, \
         and a new -f file is given to them.",
    ),
    (
        "CZCTL_SESSION_GROUP",
        "Names the group (the CI job) a session belongs to: session close --all closes only \
         the group's sessions (and stale ones), and a second teleport of a namespace in the same \
         group reuses the first. Wins over the CI variables below.",
    ),
    (
        "GITHUB_ACTIONS, GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT, GITHUB_JOB, GITHUB_REPOSITORY, RUNNER_NAME",
        "GitHub Actions: the job's session group.",
    ),
    (
        "GITLAB_CI, CI_JOB_ID, CI_SERVER_HOST",
        "GitLab CI: the job's session group.",
    ),
    (
        "JENKINS_URL, BUILD_TAG, EXECUTOR_NUMBER",
        "Jenkins: the build's session group (per executor).",
    ),
    ("BUILDKITE_JOB_ID", "Buildkite: the job's session group."),
    (
        "CIRCLECI, CIRCLE_WORKFLOW_JOB_ID, CIRCLE_BUILD_NUM, CIRCLE_PROJECT_REPONAME, CIRCLE_NODE_INDEX",
        "CircleCI: the job's session group.",
    ),
    (
        "TF_BUILD, SYSTEM_JOBID, BUILD_BUILDID",
        "Azure Pipelines: the job's session group.",
    ),
    (
        "NGROK_AUTHTOKEN",
        "The ngrok authtoken for service intercept --tunnel ngrok.",
    ),
    (
        "CZCTL_PORTFORWARD",
        "The port-forward protocol: auto (default: SPDY over WebSocket, then SPDY, then \
         WebSocket v4), spdy-websocket, spdy or websocket.",
    ),
    (
        "CZCTL_SUDO",
        "The command that starts czctl's root hosts-file helper when the hosts file is not \
         writable (default sudo; split on whitespace, so \"sudo -n\" or doas work too).",
    ),
    (
        "RUST_LOG",
        "Log filter for stderr, in tracing's EnvFilter syntax (overrides -v).",
    ),
    ("NO_COLOR", "Set: no colours in logs on a terminal."),
];

fn environment() -> String {
    let mut out = String::from(".SH ENVIRONMENT\n");
    for (name, text) in ENVIRONMENT {
        out.push_str(&item(name, text));
    }
    out
}

fn files() -> String {
    let mut out = String::from(".SH FILES\n");
    for (path, text) in [
        (
            "/etc/hosts",
            "czctl adds one marked block per session (# czctl begin session=ID ... # czctl end \
             session=ID) and removes it when the session ends; --hosts-file PATH names another \
             file. When it is not writable, a root helper started with sudo edits it.",
        ),
        (
            "STATE/sessions/ID.json",
            "The record of session ID (STATE is the state directory, see CZCTL_STATE_DIR).",
        ),
        (
            "STATE/sessions/ID.log",
            "The log of a session running in the background.",
        ),
        (
            "STATE/sessions/ID.sock",
            "The control socket of a running session (status, session close).",
        ),
        (
            "STATE/hosts-ID.backup",
            "The hosts file as it was before session ID first changed it.",
        ),
        (
            "$TMPDIR/czctl-loopback/",
            "The loopback address registry shared by every czctl run (see CZCTL_REGISTRY_DIR).",
        ),
        ("~/.kube/config", "The default kubeconfig (see KUBECONFIG)."),
    ] {
        out.push_str(&item(path, text));
    }
    out
}

/// A shell example as roff: the lines kept as they are (no filling).
fn example(intro: &str, lines: &[&str]) -> String {
    let mut out = format!(".PP\n{}\n.PP\n.nf\n.RS 4\n", roff(intro));
    for line in lines {
        out.push_str(&roff(line));
        out.push('\n');
    }
    out.push_str(".RE\n.fi\n");
    out
}

/// The script a CI job runs: its tests against the staging namespace with api's configuration.
pub const CI_SCRIPT: [&str; 4] = [
    "czctl namespace teleport staging",
    "czctl deployment teleport api -n staging -f api.env",
    "set -a; . ./api.env; set +a; npm test",
    "czctl session close --all",
];

fn ci_example() -> String {
    example(
        "In a CI job: make the staging namespace reachable, write api's environment to a file, \
         run the tests with it, then end the job's sessions:",
        &CI_SCRIPT,
    )
}

fn examples(name: &str) -> Option<String> {
    Some(match name {
        "czctl" => {
            let mut out = ci_example();
            out.push_str(&example(
                "Check that czctl can work here, and see what a running session forwards:",
                &["czctl doctor -n staging", "czctl status"],
            ));
            out
        }
        "czctl-deployment-teleport" | "czctl-session-close" => ci_example(),
        "czctl-doctor" => example(
            "Check the rights in namespace staging; the first failed check sets the exit code:",
            &[
                "czctl doctor -n staging",
                "czctl doctor -o json | jq '.checks[] | select(.status != \"pass\")'",
            ],
        ),
        "czctl-completion" => example(
            "Install the completions:",
            &[
                "czctl completion bash > /etc/bash_completion.d/czctl",
                "czctl completion zsh > \"${fpath[1]}/_czctl\"",
                "czctl completion fish > ~/.config/fish/completions/czctl.fish",
            ],
        ),
        _ => return None,
    })
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

    /// clap's completion generators offer hidden subcommands, so czctl has none (the agent
    /// was one; it is `czctl-agent` now): a hidden one would need filtering out again.
    #[test]
    fn no_subcommand_is_hidden_and_completions_offer_every_command() {
        fn hidden(cmd: &clap::Command, out: &mut Vec<String>) {
            for sub in cmd.get_subcommands() {
                if sub.is_hide_set() {
                    out.push(sub.get_name().to_string());
                }
                hidden(sub, out);
            }
        }
        let mut found = Vec::new();
        hidden(&Cli::command(), &mut found);
        assert!(found.is_empty(), "hidden subcommands: {found:?}");
        let bash = String::from_utf8(completion_script(Shell::Bash)).unwrap();
        for name in ["namespace", "service", "session", "doctor", "completion"] {
            assert!(bash.contains(&format!("czctl__subcmd__{name}")), "{name}");
        }
        assert!(!bash.contains("czctl__subcmd__agent"));
    }

    #[test]
    fn every_page_has_the_exit_status_and_the_root_page_all_sections() {
        for (name, text) in man_pages() {
            let text = String::from_utf8(text).unwrap();
            assert!(text.contains(".SH \"EXIT STATUS\"\n"), "{name}");
            for (code, _) in crate::exit::TABLE {
                assert!(
                    text.contains(&format!(".TP\n\\fB{code}\\fR\n")),
                    "{name}: {code}"
                );
            }
            assert!(
                text.trim_end().ends_with("v0.1.0") || text.contains(".SH VERSION"),
                "{name}"
            );
        }
        let root = String::from_utf8(
            man_pages()
                .into_iter()
                .find(|(n, _)| n == "czctl.1")
                .unwrap()
                .1,
        )
        .unwrap();
        for section in ["ENVIRONMENT", "FILES", "EXAMPLES"] {
            assert!(root.contains(&format!(".SH {section}\n")), "{section}");
        }
        for line in CI_SCRIPT {
            assert!(root.contains(&roff(line)), "{line}");
        }
    }

    /// The names of the environment variables czctl's sources read: `env::var("X")`,
    /// `env::var_os("X")`, constants `..._ENV: &str = "X"`, and the CI variables of the session
    /// group (`get("X")`).
    fn variables_read() -> std::collections::BTreeSet<String> {
        fn visit(dir: &Path, out: &mut std::collections::BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    visit(&path, out);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                let text = text.split("#[cfg(test)]").next().unwrap_or_default();
                for line in text.lines() {
                    let reads = line.contains("env::var")
                        || line.contains("_ENV: &str =")
                        || (path.ends_with("session/group.rs") && line.contains("get(\""))
                        || (path.ends_with("session/group.rs")
                            && line.trim_start().starts_with('"'));
                    if !reads {
                        continue;
                    }
                    for (i, quoted) in line.split('"').enumerate() {
                        let name = i % 2 == 1
                            && quoted.len() > 1
                            && quoted
                                .chars()
                                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
                        if name {
                            out.insert(quoted.to_string());
                        }
                    }
                }
            }
        }
        let mut out = std::collections::BTreeSet::new();
        visit(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out
    }

    #[test]
    fn the_environment_section_names_every_variable_czctl_reads() {
        // czctl's own children's, the in-cluster agent's, and tests' switches.
        const INTERNAL: [&str; 7] = [
            "CZCTL_DETACHED_SESSION",
            "CZCTL_DETACHED_PARENT",
            "CZCTL_HOSTS_HELPER",
            "CZCTL_TUNNEL_TOKEN",
            "POD_IP",
            "CZCTL_UPDATE_MAN",
            "HOME",
        ];
        let documented: Vec<&str> = ENVIRONMENT
            .iter()
            .flat_map(|(names, _)| names.split(", "))
            .collect();
        let read = variables_read();
        assert!(
            read.contains("KUBECONFIG") && read.contains("GITHUB_RUN_ID"),
            "{read:?}"
        );
        let missing: Vec<&String> = read
            .iter()
            .filter(|v| !INTERNAL.contains(&v.as_str()) && !documented.contains(&v.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "not in the man pages' ENVIRONMENT: {missing:?}"
        );
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
