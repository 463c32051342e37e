//! Unit tests of the CLI definition and the repository's tidiness rules.

use std::path::Path;

use clap::CommandFactory;

use crate::{flags::Cli, project_root};

#[test]
fn clap_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn top_level_help_lists_every_command() {
    let help = Cli::command().render_long_help().to_string();
    for command in [
        "guest", "measure", "launch", "host", "validate", "attest", "ci",
    ] {
        assert!(
            help.contains(&format!("  {command} ")),
            "{command} missing from:\n{help}"
        );
    }
}

#[test]
fn every_argument_has_help() {
    fn walk(command: &clap::Command, path: &str) {
        let path = format!("{path} {}", command.get_name());
        assert!(command.get_about().is_some(), "{path} has no help text");
        for arg in command.get_arguments() {
            if arg.get_id() == "help" || arg.get_id() == "version" {
                continue;
            }
            assert!(
                arg.get_help().is_some(),
                "{path} --{} has no help text",
                arg.get_id()
            );
        }
        for sub in command.get_subcommands() {
            walk(sub, &path);
        }
    }
    walk(&Cli::command(), "");
}

fn rust_files(root: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for crate_dir in [
        "xtask",
        "cvm-core",
        "guest-image",
        "host-setup",
        "validation",
    ] {
        for entry in walkdir(&root.join(crate_dir)) {
            if entry.extension().is_some_and(|ext| ext == "rs") {
                files.push(entry);
            }
        }
    }
    files
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|name| name == "target" || name == "data")
            {
                continue;
            }
            out.extend(walkdir(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// rust-analyzer style tidy: a `//!` doc on every module and no placeholders in the code.
#[test]
fn tidy() {
    let root = project_root();
    let mut problems = Vec::new();
    // Spelled in pieces so this file does not trip its own check.
    let banned = [
        concat!("todo", "!("),
        concat!("unimplemented", "!("),
        concat!("dbg", "!("),
    ];
    for file in rust_files(&root) {
        let text = std::fs::read_to_string(&file).unwrap();
        let relative = file.strip_prefix(&root).unwrap().display().to_string();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!(
                "{relative}: the module has no `//!` doc comment at the top"
            ));
        }
        for (number, line) in text.lines().enumerate() {
            for pattern in banned {
                if line.contains(pattern) {
                    problems.push(format!(
                        "{relative}:{}: `{pattern}` left in the code",
                        number + 1
                    ));
                }
            }
            if line.ends_with(' ') || line.ends_with('\t') {
                problems.push(format!("{relative}:{}: trailing whitespace", number + 1));
            }
        }
    }
    assert!(problems.is_empty(), "tidy found:\n{}", problems.join("\n"));
}
