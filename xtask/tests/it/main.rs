//! End-to-end tests of the `cargo xtask` binary: exit codes, one-line errors and help output.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

/// Runs the xtask binary; on a wrong exit code the panic shows args, stdout and stderr.
#[track_caller]
fn xtask(args: &[&str], expected_code: i32) -> Output {
    #[allow(clippy::disallowed_methods)] // Tests run the binary under test directly.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(expected_code),
        "cargo xtask {}\n--- stdout\n{}\n--- stderr\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_bad_model_exits_2_with_one_line() {
    let dir = root().join("cvm-core/tests/data/bad-models");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 15);
    for file in files {
        let output = xtask(&["model", "check", "-c", file.to_str().unwrap()], 2);
        let text = stderr(&output);
        assert_eq!(text.lines().count(), 1, "{}: {text}", file.display());
        assert!(text.starts_with("error: "), "{text}");
        assert!(
            text.contains(file.to_str().unwrap()),
            "error does not name the file: {text}"
        );
        assert!(
            output.stdout.is_empty(),
            "nothing on stdout for a bad model"
        );
    }
}

#[test]
fn examples_and_default_model_check_clean() {
    for model in ["examples/xe7745-snp.toml", "examples/tdx.toml"] {
        let output = xtask(&["model", "check", "-c", model, "--json"], 0);
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert!(json["deployment"]["name"].is_string(), "{json}");
    }
    let output = xtask(&["model", "check"], 0);
    assert!(String::from_utf8_lossy(&output.stdout).contains("name = \"cvm-base\""));
}

#[test]
fn default_model_prints_and_round_trips() {
    let output = xtask(&["guest", "inspect", "--default-model"], 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cvm.toml");
    std::fs::write(&path, &output.stdout).unwrap();
    xtask(&["model", "check", "-c", path.to_str().unwrap()], 0);
}

#[test]
fn missing_model_file_is_bad_input() {
    let output = xtask(&["model", "check", "-c", "no/such/cvm.toml"], 2);
    let text = stderr(&output);
    assert!(
        text.contains("no/such/cvm.toml") && text.contains("-c FILE"),
        "{text}"
    );
}

#[test]
fn usage_errors_exit_2_and_help_exits_0() {
    xtask(&["no-such-command"], 2);
    xtask(
        &[
            "measure",
            "snp",
            "--vcpus",
            "x",
            "--ovmf",
            "f",
            "--vcpu-type",
            "EPYC-v4",
        ],
        2,
    );
    let output = xtask(&["--help"], 0);
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["guest", "measure", "launch", "host", "validate", "ci"] {
        assert!(help.contains(command), "{help}");
    }
}

#[test]
fn every_subcommand_help_documents_every_flag() {
    let commands: &[&[&str]] = &[
        &["guest", "build"],
        &["guest", "lock"],
        &["guest", "boot"],
        &["guest", "inspect"],
        &["measure"],
        &["measure", "snp"],
        &["measure", "tdx"],
        &["launch", "render"],
        &["host", "plan"],
        &["host", "apply"],
        &["host", "collect"],
        &["host", "check"],
        &["validate"],
        &["attest", "register"],
        &["attest", "check"],
        &["model", "check"],
        &["ci"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let output = xtask(&args, 0);
        let help = String::from_utf8_lossy(&output.stdout);
        let usage = format!("Usage: cargo xtask {}", command.join(" "));
        assert!(help.contains(&usage), "{usage} missing from:\n{help}");
    }
}
