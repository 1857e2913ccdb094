//! The session group: the CI job a session was started in, so that `session close --all` in
//! one job never ends another job's sessions on a shared runner, and a job's second teleport
//! of a namespace reuses its first.
//!
//! Read from each CI system's documented environment variables; `CZCTL_SESSION_GROUP` wins
//! over all of them. Outside any job there is no group.

/// The variable that names a group explicitly (any CI system, or none).
pub const GROUP_ENV: &str = "CZCTL_SESSION_GROUP";

/// The current group, from the process environment.
pub fn current() -> Option<String> {
    from_env(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
}

/// The group named by an environment (`get` returns a variable's non-empty value).
pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Option<String> {
    if let Some(group) = get(GROUP_ENV) {
        return Some(group);
    }
    let join = |prefix: &str, names: &[&str]| -> Option<String> {
        let parts: Vec<String> = names.iter().filter_map(|n| get(n)).collect();
        (!parts.is_empty()).then(|| format!("{prefix}:{}", parts.join("/")))
    };
    // GitHub Actions: a run's jobs share GITHUB_RUN_ID, matrix jobs share GITHUB_JOB; two
    // runners on one machine have different RUNNER_NAMEs.
    if get("GITHUB_ACTIONS").as_deref() == Some("true") && get("GITHUB_RUN_ID").is_some() {
        return join(
            "github",
            &[
                "GITHUB_REPOSITORY",
                "GITHUB_RUN_ID",
                "GITHUB_RUN_ATTEMPT",
                "GITHUB_JOB",
                "RUNNER_NAME",
            ],
        );
    }
    // GitLab CI: CI_JOB_ID is unique per job on its instance.
    if get("GITLAB_CI").is_some() && get("CI_JOB_ID").is_some() {
        return join("gitlab", &["CI_SERVER_HOST", "CI_JOB_ID"]);
    }
    // Buildkite: a job UUID.
    if let Some(job) = get("BUILDKITE_JOB_ID") {
        return Some(format!("buildkite:{job}"));
    }
    // CircleCI: a job UUID in workflows, else the build number (with the parallel node).
    if get("CIRCLECI").is_some() {
        if let Some(job) = get("CIRCLE_WORKFLOW_JOB_ID") {
            return Some(format!("circleci:{job}"));
        }
        if get("CIRCLE_BUILD_NUM").is_some() {
            return join(
                "circleci",
                &[
                    "CIRCLE_PROJECT_REPONAME",
                    "CIRCLE_BUILD_NUM",
                    "CIRCLE_NODE_INDEX",
                ],
            );
        }
    }
    // Azure Pipelines: TF_BUILD=True; a job id within a build.
    if get("TF_BUILD").is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && get("SYSTEM_JOBID").is_some()
    {
        return join("azure", &["BUILD_BUILDID", "SYSTEM_JOBID"]);
    }
    // Jenkins: BUILD_TAG is jenkins-JOB-NUMBER; parallel branches of one build on one agent
    // run on different executors.
    if get("JENKINS_URL").is_some() && get("BUILD_TAG").is_some() {
        return join("jenkins", &["BUILD_TAG", "EXECUTOR_NUMBER"]);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn group(vars: &[(&str, &str)]) -> Option<String> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        from_env(|n| map.get(n).map(|v| v.to_string()).filter(|v| !v.is_empty()))
    }

    #[test]
    fn ci_systems() {
        assert_eq!(group(&[]), None);
        assert_eq!(
            group(&[
                ("GITHUB_ACTIONS", "true"),
                ("GITHUB_REPOSITORY", "o/r"),
                ("GITHUB_RUN_ID", "7"),
                ("GITHUB_RUN_ATTEMPT", "1"),
                ("GITHUB_JOB", "test"),
                ("RUNNER_NAME", "r2"),
            ])
            .as_deref(),
            Some("github:o/r/7/1/test/r2")
        );
        assert_eq!(
            group(&[("GITLAB_CI", "true"), ("CI_JOB_ID", "99")]).as_deref(),
            Some("gitlab:99")
        );
        assert_eq!(
            group(&[("BUILDKITE", "true"), ("BUILDKITE_JOB_ID", "u-1")]).as_deref(),
            Some("buildkite:u-1")
        );
        assert_eq!(
            group(&[("CIRCLECI", "true"), ("CIRCLE_WORKFLOW_JOB_ID", "c-1")]).as_deref(),
            Some("circleci:c-1")
        );
        assert_eq!(
            group(&[
                ("TF_BUILD", "True"),
                ("BUILD_BUILDID", "5"),
                ("SYSTEM_JOBID", "j")
            ])
            .as_deref(),
            Some("azure:5/j")
        );
        assert_eq!(
            group(&[
                ("JENKINS_URL", "http://j/"),
                ("BUILD_TAG", "jenkins-x-3"),
                ("EXECUTOR_NUMBER", "1")
            ])
            .as_deref(),
            Some("jenkins:jenkins-x-3/1")
        );
    }

    #[test]
    fn the_explicit_group_wins_and_half_set_systems_do_not_count() {
        assert_eq!(
            group(&[
                ("CZCTL_SESSION_GROUP", "mine"),
                ("GITLAB_CI", "true"),
                ("CI_JOB_ID", "9")
            ])
            .as_deref(),
            Some("mine")
        );
        // GITHUB_ACTIONS alone (no run id) is not a job.
        assert_eq!(group(&[("GITHUB_ACTIONS", "true")]), None);
        assert_eq!(group(&[("CZCTL_SESSION_GROUP", "")]), None);
    }
}
