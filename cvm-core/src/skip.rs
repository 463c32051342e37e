//! Loud skips for tests that cannot run on this machine (no Ubuntu archive, no KVM, no tool).
//!
//! A skipping test calls [`skip`]: the reason goes to stderr and, under `cargo xtask ci`, into the
//! file named by `CVM_SKIP_LOG`, which ci prints at the end so no skip goes unseen.

use std::io::Write;

/// The environment variable `cargo xtask ci` sets to collect skips.
pub const SKIP_LOG_ENV: &str = "CVM_SKIP_LOG";

/// The environment variable that enables the slow integration suites (set by `cargo xtask ci`).
pub const SLOW_TESTS_ENV: &str = "CVM_SLOW_TESTS";

/// Records that `test` was skipped and why.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIPPED {test}: {reason}");
    eprintln!("{line}");
    if let Some(path) = std::env::var_os(SKIP_LOG_ENV) {
        if let Ok(mut file) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(file, "{line}");
        }
    }
}

/// True when the slow integration suites should run (`CVM_SLOW_TESTS=1`).
pub fn slow_tests_enabled() -> bool {
    std::env::var(SLOW_TESTS_ENV).is_ok_and(|value| value == "1")
}

/// Skips (returning false) unless the slow suites are enabled; use as
/// `if !cvm_core::skip::require_slow("name") { return; }`.
pub fn require_slow(test: &str) -> bool {
    if slow_tests_enabled() {
        return true;
    }
    skip(
        test,
        &format!("slow integration test; run `cargo xtask ci` or set {SLOW_TESTS_ENV}=1"),
    );
    false
}
