//! Check results (DESIGN.md §7), shared by host checks and the validation suite so both emit the
//! same JSON, JUnit and HTML from one result list.

use serde::{Deserialize, Serialize};

/// The verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The host or artifact is as required.
    Pass,
    /// It is not; the remediation says what to change.
    Fail,
    /// It works but is below what is recommended.
    Warn,
    /// The check could not be evaluated (the detail says why).
    Skip,
}

impl Status {
    /// The lower-case name used in JSON and tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Fail => "fail",
            Status::Warn => "warn",
            Status::Skip => "skip",
        }
    }
}

/// One evaluated check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Stable kebab-case id, e.g. `snp.kvm-enabled`; never renamed.
    pub id: String,
    /// One-line human title.
    pub title: String,
    /// The verdict.
    pub status: Status,
    /// What was found.
    pub detail: String,
    /// What to do when the status is not `pass` (may be empty on pass).
    pub remediation: String,
}

impl CheckResult {
    /// A result with every field given; what each validation and preflight check builds.
    pub fn new(
        id: impl Into<String>,
        title: impl Into<String>,
        status: Status,
        detail: impl Into<String>,
        remediation: impl Into<String>,
    ) -> Self {
        Self {
            id: id.into(),
            title: title.into(),
            status,
            detail: detail.into(),
            remediation: remediation.into(),
        }
    }
}

/// Counts per status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Checks that passed.
    pub pass: usize,
    /// Checks that failed.
    pub fail: usize,
    /// Checks that warned.
    pub warn: usize,
    /// Checks that were skipped.
    pub skip: usize,
}

/// The JSON document of DESIGN.md §7.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Always 1.
    pub schema: u32,
    /// Every check, in evaluation order.
    pub checks: Vec<CheckResult>,
    /// Counts per status.
    pub summary: Summary,
}

impl Report {
    /// A report over `checks` with the summary computed from them.
    pub fn new(checks: Vec<CheckResult>) -> Self {
        let mut summary = Summary::default();
        for check in &checks {
            match check.status {
                Status::Pass => summary.pass += 1,
                Status::Fail => summary.fail += 1,
                Status::Warn => summary.warn += 1,
                Status::Skip => summary.skip += 1,
            }
        }
        Self {
            schema: 1,
            checks,
            summary,
        }
    }

    /// The process exit code of DESIGN.md §3: 0 when nothing failed, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.summary.fail > 0)
    }
}
