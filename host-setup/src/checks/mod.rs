//! The preflight check registry evaluated over a facts bundle (DESIGN.md §7).
//!
//! The registry is data ([`registry`]): each [`CheckDef`] has a stable id, a title, the TEE it
//! applies to, a severity, a remediation and an optional parent. Evaluation walks it in order; a
//! child whose parent did not pass is skipped (as snphost does), a check for the other TEE is
//! skipped with a reason, and a fact the bundle does not hold is a skip, never a guess.

mod rules;

use std::io::IsTerminal as _;

use anyhow::Result;
use cvm_core::{
    check::{CheckResult, Report, Status},
    error::bad_input,
    model::Tee,
};

use crate::facts::Bundle;

pub use rules::Context;

/// Which hosts a check applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Every host.
    Any,
    /// AMD SEV-SNP hosts.
    Snp,
    /// Intel TDX hosts.
    Tdx,
}

/// What a check that finds a problem reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// The host cannot run the CVM: `fail`.
    Fail,
    /// It works, but not as recommended: `warn`.
    Warn,
}

/// What one evaluation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// As required; the text says what was found.
    Pass(String),
    /// Not as required; reported with the check's severity.
    Bad(String),
    /// Works, below what is recommended (a warning whatever the severity).
    Warn(String),
    /// Could not be evaluated for lack of a fact; the text says why (`--strict` fails it).
    Skip(String),
    /// Does not apply to this host (another TEE, another GPU topology); never fails.
    NotApplicable(String),
}

/// One check of the registry.
#[derive(Clone, Copy)]
pub struct CheckDef {
    /// Stable kebab-case id (`snp.kvm-enabled`); never renamed.
    pub id: &'static str,
    /// One-line title.
    pub title: &'static str,
    /// The hosts it applies to.
    pub applies: Applies,
    /// What a problem is reported as.
    pub severity: Severity,
    /// What to change when it does not pass.
    pub remediation: &'static str,
    /// The check that must pass before this one runs.
    pub parent: Option<&'static str>,
    /// The evaluation.
    pub eval: fn(&Context) -> Outcome,
}

impl std::fmt::Debug for CheckDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckDef")
            .field("id", &self.id)
            .field("applies", &self.applies)
            .field("severity", &self.severity)
            .field("parent", &self.parent)
            .finish()
    }
}

/// Every host check, parents before their children.
pub fn registry() -> &'static [CheckDef] {
    rules::REGISTRY
}

/// How to evaluate.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The TEE the host is meant for; by default the CPU vendor decides (AMD: SNP, Intel: TDX).
    pub tee: Option<Tee>,
    /// Report only these ids (an id, or a group prefix such as `snp.` or `bios.*`).
    pub only: Vec<String>,
    /// Leave out these ids (same forms as `only`).
    pub skip: Vec<String>,
    /// Turn every skip for a fact the bundle lacks into a failure (checks that do not apply to
    /// this host stay skipped).
    pub strict: bool,
}

fn pattern_matches(pattern: &str, id: &str) -> bool {
    let pattern = pattern.trim();
    let prefix = pattern.strip_suffix('*').unwrap_or(pattern);
    id == pattern || (prefix.ends_with('.') && id.starts_with(prefix))
}

fn validate_patterns(flag: &str, patterns: &[String]) -> Result<()> {
    for pattern in patterns {
        if !registry()
            .iter()
            .any(|check| pattern_matches(pattern, check.id))
        {
            return Err(bad_input(format!(
                "{flag} {pattern}: no check has this id or prefix; see the ids in `cargo xtask host check --json`"
            )));
        }
    }
    Ok(())
}

/// Evaluates the registry over `bundle`. Unknown ids in `only`/`skip` are bad input.
pub fn evaluate(bundle: &Bundle, options: &Options) -> Result<Report> {
    validate_patterns("--only", &options.only)?;
    validate_patterns("--skip", &options.skip)?;
    let context = Context::new(bundle, options.tee);
    let mut results: Vec<(CheckResult, bool)> = Vec::with_capacity(registry().len());
    for check in registry() {
        let parent_status = check.parent.and_then(|parent| {
            results
                .iter()
                .find(|(result, _)| result.id == parent)
                .map(|(result, _)| (parent, result.status))
        });
        let outcome = match (check.applies, context.tee()) {
            (Applies::Snp, Some(Tee::Tdx)) => {
                Outcome::NotApplicable("SEV-SNP check on a TDX host".into())
            }
            (Applies::Tdx, Some(Tee::Snp)) => {
                Outcome::NotApplicable("TDX check on a SEV-SNP host".into())
            }
            (Applies::Snp | Applies::Tdx, None) => {
                Outcome::NotApplicable("the CPU vendor names no TEE this product supports".into())
            }
            _ => match parent_status {
                // A child of a check that did not pass is not evaluated (as in snphost); the
                // parent carries the verdict, so --strict does not count it twice.
                Some((parent, Status::Fail | Status::Skip)) => {
                    Outcome::NotApplicable(format!("{parent} did not pass"))
                }
                _ => (check.eval)(&context),
            },
        };
        let (status, detail, strict_fails) = match outcome {
            Outcome::Pass(detail) => (Status::Pass, detail, false),
            Outcome::Bad(detail) => match check.severity {
                Severity::Fail => (Status::Fail, detail, false),
                Severity::Warn => (Status::Warn, detail, false),
            },
            Outcome::Warn(detail) => (Status::Warn, detail, false),
            Outcome::Skip(detail) => (Status::Skip, detail, true),
            Outcome::NotApplicable(detail) => (Status::Skip, detail, false),
        };
        let result = CheckResult {
            id: check.id.to_owned(),
            title: check.title.to_owned(),
            status,
            detail,
            remediation: if matches!(status, Status::Fail | Status::Warn) {
                check.remediation.to_owned()
            } else {
                String::new()
            },
        };
        results.push((result, strict_fails));
    }
    let selected = results
        .into_iter()
        .filter(|(result, _)| {
            (options.only.is_empty()
                || options
                    .only
                    .iter()
                    .any(|pattern| pattern_matches(pattern, &result.id)))
                && !options
                    .skip
                    .iter()
                    .any(|pattern| pattern_matches(pattern, &result.id))
        })
        .map(|(mut result, strict_fails)| {
            // --strict: a fact that was not collected is a failure, not a pass by default.
            if options.strict && strict_fails {
                result.status = Status::Fail;
                result.detail = format!("skipped under --strict: {}", result.detail);
                result.remediation =
                    "Collect the missing fact (see facts.json), then check again.".to_owned();
            }
            result
        })
        .collect();
    Ok(Report::new(selected))
}

/// The report as an aligned table (id, status, detail, remediation), for a terminal.
pub fn render_table(report: &Report) -> String {
    let id_width = report
        .checks
        .iter()
        .map(|check| check.id.len())
        .max()
        .unwrap_or(2)
        .max(2);
    let mut out = format!("{:<id_width$}  STATUS  DETAIL\n", "ID");
    for check in &report.checks {
        out.push_str(&format!(
            "{:<id_width$}  {:<6}  {}\n",
            check.id,
            check.status.as_str(),
            check.detail
        ));
        if !check.remediation.is_empty() {
            out.push_str(&format!(
                "{:<id_width$}  {:<6}  fix: {}\n",
                "", "", check.remediation
            ));
        }
    }
    out.push_str(&summary_line(report));
    out
}

/// The report as plain lines (`status id: detail`, then `  fix: …`), for pipes and logs.
pub fn render_plain(report: &Report) -> String {
    let mut out = String::new();
    for check in &report.checks {
        out.push_str(&format!(
            "{} {}: {}\n",
            check.status.as_str(),
            check.id,
            check.detail
        ));
        if !check.remediation.is_empty() {
            out.push_str(&format!("  fix: {}\n", check.remediation));
        }
    }
    out.push_str(&summary_line(report));
    out
}

/// Picks the table on a terminal and plain lines otherwise.
pub fn render_for_stdout(report: &Report) -> String {
    if std::io::stdout().is_terminal() {
        render_table(report)
    } else {
        render_plain(report)
    }
}

fn summary_line(report: &Report) -> String {
    let summary = report.summary;
    format!(
        "{} passed, {} failed, {} warned, {} skipped\n",
        summary.pass, summary.fail, summary.warn, summary.skip
    )
}

#[cfg(test)]
mod tests;
