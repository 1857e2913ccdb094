//! The result of one diagnostic check, and how a list of them is shown and turned into an exit
//! code. Pure: no I/O.

use serde_json::{json, Value};

use crate::exit::Code;

/// How a check went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// czctl can work as far as this check can tell.
    Pass,
    /// Something to know or to clean up; czctl still works.
    Warn,
    /// czctl cannot work until this is fixed.
    Fail,
}

impl Status {
    /// The lowercase word used in the text table and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// What a check is about; decides the exit code when it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    /// Kubeconfig, credentials, reaching the API server.
    Cluster,
    /// Kubernetes rights in the namespace.
    Rights,
    /// This machine: hosts file, addresses, limits, leftovers.
    Local,
}

impl Area {
    /// The exit code of a failed check in this area.
    pub fn code(self) -> Code {
        match self {
            Area::Cluster => Code::Config,
            Area::Rights => Code::Forbidden,
            Area::Local => Code::Local,
        }
    }

    /// The lowercase word used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Cluster => "cluster",
            Area::Rights => "rights",
            Area::Local => "local",
        }
    }
}

/// One line of the doctor's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, such as `kubeconfig` or `rights: create pods/portforward`.
    pub name: String,
    /// How it went.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do about it, for warnings and failures.
    pub fix: Option<String>,
    /// What it is about (the exit code when it fails).
    pub area: Area,
}

impl Check {
    /// A check with the given outcome and no fix.
    pub fn new(
        area: Area,
        name: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
    ) -> Check {
        Check {
            name: name.into(),
            status,
            detail: detail.into(),
            fix: None,
            area,
        }
    }

    /// A passed check.
    pub fn pass(area: Area, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(area, name, Status::Pass, detail)
    }

    /// A warning.
    pub fn warn(area: Area, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(area, name, Status::Warn, detail)
    }

    /// A failed check.
    pub fn fail(area: Area, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check::new(area, name, Status::Fail, detail)
    }

    /// The same check with a fix.
    pub fn with_fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
}

/// The exit code of a report: `None` when nothing failed (warnings allowed), else the code of
/// the first failed check's area.
pub fn exit_code(checks: &[Check]) -> Option<Code> {
    checks
        .iter()
        .find(|c| c.status == Status::Fail)
        .map(|c| c.area.code())
}

/// How many checks passed, warned and failed.
pub fn counts(checks: &[Check]) -> (usize, usize, usize) {
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    (
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
    )
}

/// The report as an aligned table (CHECK, STATUS, DETAIL), each fix on its own line under the
/// detail, then a summary line. Line breaks inside details and fixes are flattened to `; `.
pub fn render_text(checks: &[Check]) -> String {
    const HEAD: [&str; 3] = ["CHECK", "STATUS", "DETAIL"];
    let name_width = checks
        .iter()
        .map(|c| c.name.chars().count())
        .chain([HEAD[0].len()])
        .max()
        .unwrap_or(0);
    let status_width = HEAD[1].len();
    let indent = " ".repeat(name_width + 2 + status_width + 2);
    let mut out = format!(
        "{:<name_width$}  {:<status_width$}  {}\n",
        HEAD[0], HEAD[1], HEAD[2]
    );
    for check in checks {
        let row = format!(
            "{:<name_width$}  {:<status_width$}  {}",
            check.name,
            check.status.as_str(),
            one_line(&check.detail)
        );
        out.push_str(row.trim_end());
        out.push('\n');
        if let Some(fix) = &check.fix {
            out.push_str(&format!("{indent}fix: {}\n", one_line(fix)));
        }
    }
    let (pass, warn, fail) = counts(checks);
    out.push_str(&format!(
        "\n{pass} passed, {warn} {}, {fail} failed\n",
        if warn == 1 { "warning" } else { "warnings" }
    ));
    out
}

/// The report as JSON:
/// `{"ok": bool, "summary": {"pass": N, "warn": N, "fail": N}, "checks": [{"name", "status",
/// "area", "detail", "fix"}]}`, with `fix` null when there is none.
pub fn render_json(checks: &[Check]) -> Value {
    let (pass, warn, fail) = counts(checks);
    let items: Vec<Value> = checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "status": c.status.as_str(),
                "area": c.area.as_str(),
                "detail": c.detail,
                "fix": c.fix,
            })
        })
        .collect();
    json!({
        "ok": fail == 0,
        "summary": {"pass": pass, "warn": warn, "fail": fail},
        "checks": items,
    })
}

fn one_line(text: &str) -> String {
    text.trim()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Check> {
        vec![
            Check::pass(Area::Cluster, "kubeconfig", "context kubesim"),
            Check::warn(Area::Local, "open-file limit", "soft 1024, hard 1024")
                .with_fix("raise it"),
            Check::fail(
                Area::Rights,
                "rights: create pods/portforward",
                "denied\nin demo",
            )
            .with_fix("kubectl create role ..."),
            Check::fail(Area::Local, "hosts file", "read-only"),
        ]
    }

    #[test]
    fn text_is_aligned_with_fixes_under_the_detail() {
        let text = render_text(&sample());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "CHECK                            STATUS  DETAIL");
        assert_eq!(
            lines[1],
            "kubeconfig                       pass    context kubesim"
        );
        assert_eq!(
            lines[2],
            "open-file limit                  warn    soft 1024, hard 1024"
        );
        assert_eq!(lines[3], format!("{}fix: raise it", " ".repeat(41)));
        assert_eq!(
            lines[4],
            "rights: create pods/portforward  fail    denied; in demo"
        );
        let detail_column = lines[0].find("DETAIL").unwrap_or(usize::MAX);
        assert_eq!(lines[5].find("fix:"), Some(detail_column));
        assert_eq!(
            lines[6],
            "hosts file                       fail    read-only"
        );
        assert_eq!(lines[7], "");
        assert_eq!(lines[8], "1 passed, 1 warning, 2 failed");
        assert_eq!(lines.len(), 9);
    }

    #[test]
    fn json_has_every_check_and_a_summary() {
        let v = render_json(&sample());
        assert_eq!(v["ok"], false);
        assert_eq!(v["summary"], json!({"pass": 1, "warn": 1, "fail": 2}));
        let checks = v["checks"].as_array().map_or(0, Vec::len);
        assert_eq!(checks, 4);
        assert_eq!(v["checks"][0]["status"], "pass");
        assert_eq!(v["checks"][0]["fix"], Value::Null);
        assert_eq!(v["checks"][2]["area"], "rights");
        assert_eq!(v["checks"][2]["detail"], "denied\nin demo");
        assert_eq!(v["checks"][2]["fix"], "kubectl create role ...");
        let empty = render_json(&[]);
        assert_eq!(empty["ok"], true);
    }

    #[test]
    fn exit_code_is_the_first_failure() {
        let checks = sample();
        assert_eq!(exit_code(&checks), Some(Code::Forbidden));
        assert_eq!(exit_code(&checks[..2]), None);
        assert_eq!(exit_code(&checks[3..]), Some(Code::Local));
        let broken = [Check::fail(Area::Cluster, "kubeconfig", "missing")];
        assert_eq!(exit_code(&broken), Some(Code::Config));
    }
}
