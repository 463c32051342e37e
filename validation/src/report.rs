//! Reports from one result list: `report.xml` (JUnit), `report.json` (DESIGN.md §7),
//! `report.html` (self-contained, for people) and `report.md` (the CI job summary). All are rendered
//! from the same [`Report`].

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cvm_core::check::{CheckResult, Report, Status};
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde::Serialize;

/// What the reports say about the run besides the checks.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// The suite's name (JUnit `testsuites`/`testsuite` name, HTML title), e.g. `cvm-validate xe7745`.
    pub suite: String,
    /// The inputs of the run (profile, facts, artifacts), shown under the title.
    pub inputs: Vec<Input>,
}

/// One named input of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// What it is, e.g. `profile`.
    pub name: String,
    /// Its value, e.g. a path.
    pub value: String,
}

/// The files written by [`write_all`].
#[derive(Debug, Clone)]
pub struct Written {
    /// report.xml.
    pub junit: PathBuf,
    /// report.json.
    pub json: PathBuf,
    /// report.html.
    pub html: PathBuf,
    /// report.md.
    pub markdown: PathBuf,
}

/// Writes report.xml, report.json, report.html and report.md into `dir` (created if needed).
pub fn write_all(report: &Report, info: &RunInfo, dir: &Path) -> Result<Written> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating report directory {}", dir.display()))?;
    let written = Written {
        junit: dir.join("report.xml"),
        json: dir.join("report.json"),
        html: dir.join("report.html"),
        markdown: dir.join("report.md"),
    };
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
    };
    write(&written.junit, junit(report, info)?)?;
    write(&written.json, json(report)?)?;
    write(&written.html, html(report, info)?)?;
    write(&written.markdown, markdown(report, info))?;
    Ok(written)
}

/// The DESIGN.md §7 JSON document, pretty-printed.
pub fn json(report: &Report) -> Result<String> {
    let mut text = serde_json::to_string_pretty(report).context("serializing the report")?;
    text.push('\n');
    Ok(text)
}

/// JUnit XML: one testcase per check, named by its id and grouped by the id's prefix (`xe7745`,
/// `e2e`, `snp`) as the classname; fail -> `<failure>`, skip -> `<skipped>`, warn -> a passing
/// testcase whose system-out carries the warning.
pub fn junit(report: &Report, info: &RunInfo) -> Result<String> {
    let mut junit = quick_junit::Report::new(info.suite.as_str());
    let mut suite = TestSuite::new(info.suite.as_str());
    for check in &report.checks {
        suite.add_test_case(test_case(check));
    }
    junit.add_test_suite(suite);
    junit.to_string().context("serializing the JUnit report")
}

fn test_case(check: &CheckResult) -> TestCase {
    let message = if check.remediation.is_empty() {
        check.detail.clone()
    } else {
        format!("{} (remediation: {})", check.detail, check.remediation)
    };
    let status = match check.status {
        Status::Pass | Status::Warn => TestCaseStatus::success(),
        Status::Fail => {
            let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
            status.set_message(message.as_str());
            status.set_type("check-failed");
            status.set_description(format!(
                "{}\n\ndetail: {}\nremediation: {}",
                check.title, check.detail, check.remediation
            ));
            status
        }
        Status::Skip => {
            let mut status = TestCaseStatus::skipped();
            status.set_message(message.as_str());
            status
        }
    };
    let mut case = TestCase::new(check.id.as_str(), status);
    let class = check.id.split('.').next().unwrap_or(check.id.as_str());
    case.set_classname(class);
    if check.status == Status::Warn {
        case.set_system_out(format!("warning: {message}"));
    }
    case
}

/// The self-contained HTML page (no external resources); Tera with autoescaping on.
pub fn html(report: &Report, info: &RunInfo) -> Result<String> {
    let mut tera = tera::Tera::default();
    tera.add_raw_template("report.html", include_str!("report.html.tera"))
        .context("loading the HTML report template")?;
    // Every value comes from the host or the network: escape all of it.
    tera.autoescape_on(vec![".html"]);
    let mut context = tera::Context::new();
    context.insert("info", info);
    context.insert("summary", &report.summary);
    context.insert(
        "verdict",
        if report.summary.fail > 0 {
            "FAILED"
        } else {
            "PASSED"
        },
    );
    context.insert("checks", &report.checks);
    tera.render("report.html", &context)
        .context("rendering the HTML report")
}

/// A Markdown summary for CI job summaries (`$GITHUB_STEP_SUMMARY`): counts first, then a table of
/// every check that did not pass. Table cells are escaped so host text cannot break the table or
/// inject markup.
pub fn markdown(report: &Report, info: &RunInfo) -> String {
    let summary = &report.summary;
    let mut text = format!(
        "## {}: {}\n\n{} passed, {} failed, {} warnings, {} skipped ({} checks)\n",
        cell(&info.suite),
        if summary.fail > 0 { "FAILED" } else { "PASSED" },
        summary.pass,
        summary.fail,
        summary.warn,
        summary.skip,
        report.checks.len()
    );
    let not_passing: Vec<&CheckResult> = report
        .checks
        .iter()
        .filter(|check| check.status != Status::Pass)
        .collect();
    if !not_passing.is_empty() {
        text.push_str("\n| check | status | detail | remediation |\n|---|---|---|---|\n");
        for check in not_passing {
            text.push_str(&format!(
                "| `{}` | {} | {} | {} |\n",
                cell(&check.id),
                check.status.as_str(),
                cell(&check.detail),
                cell(&check.remediation)
            ));
        }
    }
    text
}

/// Escapes text for one Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('|', "\\|")
        .replace('`', "'")
        .replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
