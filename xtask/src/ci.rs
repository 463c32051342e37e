//! `cargo xtask ci`: the whole test suite, as CI and the README run it.
//!
//! Installs the tools the tests need (as root, through cvm_core::deps), then runs rustfmt, clippy
//! and every test with the slow integration suites enabled, and finally lists every skipped test
//! with its reason.

use std::{process::ExitCode, time::Instant};

use anyhow::{Context, Result};
use cvm_core::deps::InstallPolicy;
use xshell::{cmd, Shell};

use crate::{flags::CiArgs, project_root};

/// Host tools the test suites use beyond what `guest build` and `guest boot` need (names from
/// cvm_core::deps::REQUIREMENTS).
const TEST_REQUIREMENTS: &[&str] = &[
    "shellcheck",
    "nft",    // guest-image: nft --check on the rendered guest firewall.
    "cpio",   // guest-image: the initrd archive read back by cpio.
    "setcap", // guest-image: a kept tree keeps file capabilities.
    "virt-xml-validate",
    "xmllint",
    "qemu-system-x86_64",
    "mmdebstrap",
    "ubuntu-archive-keyring",
    "debian-archive-keyring", // guest-image image: the Debian trixie fallback build.
    "gpg",                    // guest-image image: a repository signed by an untrusted key.
    "gpgconf",
    "chroot",
    "lspci",
    "dmidecode",
    "lsmod",
    "python3-venv", // guest-image measure: sev-snp-measure from PyPI in a venv.
    "ovmf",         // guest-image measure: Debian's OVMF.fd for the differential test.
    "openssl",      // guest-image measure: a test certificate for osslsigncode.
    "osslsigncode", // guest-image measure: the Authenticode differential test.
];

pub fn run(args: CiArgs) -> Result<ExitCode> {
    let started = Instant::now();
    let sh = Shell::new()?;
    sh.change_dir(project_root());
    let policy = if args.no_install_deps {
        InstallPolicy::Refuse
    } else {
        InstallPolicy::Install
    };
    step("Checking", "test tools");
    let mut requirements = guest_image::image::build_and_boot_requirements();
    requirements.extend(TEST_REQUIREMENTS);
    cvm_core::deps::ensure(&requirements, policy).context("installing the tools the tests need")?;

    step("Checking", "formatting (cargo fmt --check)");
    cmd!(sh, "cargo fmt --all -- --check")
        .run()
        .context("code is not formatted: run `cargo fmt --all`")?;
    step("Checking", "lints (cargo clippy -D warnings)");
    cmd!(
        sh,
        "cargo clippy --workspace --all-targets --quiet -- -D warnings"
    )
    .run()
    .context("clippy found problems")?;

    let skip_log = tempfile_path(&sh)?;
    let _skip_env = sh.push_env(cvm_core::skip::SKIP_LOG_ENV, &skip_log);
    let _slow_env = (!args.quick).then(|| sh.push_env(cvm_core::skip::SLOW_TESTS_ENV, "1"));
    step(
        "Testing",
        if args.quick {
            "unit tests"
        } else {
            "unit and integration tests"
        },
    );
    let result = cmd!(sh, "cargo test --workspace").run();

    let skipped = std::fs::read_to_string(&skip_log).unwrap_or_default();
    let _ = std::fs::remove_file(&skip_log);
    if skipped.trim().is_empty() {
        eprintln!("No test was skipped.");
    } else {
        eprintln!("Skipped tests (each with its reason):");
        for line in skipped.lines() {
            eprintln!("  {line}");
        }
    }
    result.context("tests failed")?;
    eprintln!("ci passed in {:.0} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn step(verb: &str, what: &str) {
    eprintln!("{verb:>12} {what}");
}

fn tempfile_path(sh: &Shell) -> Result<std::path::PathBuf> {
    let dir = project_root().join("target");
    sh.create_dir(&dir)?;
    Ok(dir.join(format!("ci-skipped-{}.log", std::process::id())))
}
