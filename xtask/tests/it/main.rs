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

/// What one `cargo xtask` run must show.
enum Expect<'a> {
    /// This exit code, with every one of these strings on stdout.
    Exit(i32, Vec<String>),
    /// Exit 2, nothing on stdout, and exactly one `error: ` line on stderr naming this text.
    BadInput(&'a str),
}

/// Runs `cargo xtask args` and asserts `expect`; returns the output for further checks.
#[track_caller]
fn check(args: &[&str], expect: Expect) -> Output {
    match expect {
        Expect::Exit(code, stdout_has) => {
            let output = xtask(args, code);
            let stdout = String::from_utf8_lossy(&output.stdout);
            for text in stdout_has {
                assert!(
                    stdout.contains(&text),
                    "cargo xtask {}: {text:?} is not on stdout:\n{stdout}",
                    args.join(" ")
                );
            }
            output
        }
        Expect::BadInput(names) => {
            let output = xtask(args, 2);
            let text = stderr(&output);
            assert_eq!(text.lines().count(), 1, "not one line: {text}");
            assert!(
                text.starts_with("error: ") && text.contains(names),
                "{names:?} not named: {text}"
            );
            assert!(output.stdout.is_empty(), "stdout of bad input is empty");
            output
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// Copies a facts bundle, keeping its sysfs symlinks as links.
fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), target).unwrap();
        } else if kind.is_dir() {
            copy_bundle(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A copy of `bundle` whose host runs Ubuntu 24.04 instead of 25.10.
fn on_ubuntu_24_04(bundle: &Path, dir: &Path) -> PathBuf {
    let copy = dir.join(bundle.file_name().unwrap());
    copy_bundle(bundle, &copy);
    let os_release = copy.join("root/etc/os-release");
    let text = std::fs::read_to_string(&os_release).unwrap();
    assert!(text.contains("VERSION_ID=\"25.10\""));
    std::fs::write(
        &os_release,
        text.replace("VERSION_ID=\"25.10\"", "VERSION_ID=\"24.04\""),
    )
    .unwrap();
    copy
}

/// The host check ids DESIGN.md §7 names as stable. `firmware.tee-support` is not among them: it
/// needs the model's firmware, so validation adds it (DESIGN.md §6) and `host check` cannot.
const DESIGN_HOST_IDS: &[&str] = &[
    "host.os-release",
    "host.kernel-version",
    "cpu.vendor",
    "snp.cpu-support",
    "snp.bios-enabled",
    "snp.asids",
    "snp.kvm-enabled",
    "snp.firmware-version",
    "snp.iommu-mode",
    "tdx.cpu-support",
    "tdx.module-initialized",
    "tdx.kvm-enabled",
    "tdx.cmdline",
    "tdx.memlock",
    "iommu.enabled",
    "gpu.present",
    "gpu.host-driver-absent",
    "gpu.vfio-bound",
    "gpu.iommu-isolated",
    "gpu.cc-mode",
    "qemu.version",
    "qemu.tee-support",
    "bios.",
];

#[test]
fn host_commands_exit_as_documented() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = root().join("host-setup/tests/data/facts/snp-xe7745");
    let broken = on_ubuntu_24_04(&healthy, dir.path());
    let releases = root().join("host-setup/tests/data/provision/os-release");
    let (ubuntu, debian) = (releases.join("ubuntu-25.10"), releases.join("debian-12"));
    let every_design_id: Vec<String> = DESIGN_HOST_IDS
        .iter()
        .map(|id| format!("\"id\": \"{id}"))
        .collect();
    let cases: Vec<(Vec<&str>, Expect)> = vec![
        (
            vec!["host", "check", "--facts", path_str(&healthy), "--json"],
            Expect::Exit(0, every_design_id),
        ),
        (
            vec!["host", "check", "--facts", path_str(&broken), "--json"],
            Expect::Exit(
                1,
                vec!["ubuntu 24.04 has no stock SEV-SNP host support".to_owned()],
            ),
        ),
        (
            vec!["host", "check", "--facts", "no/such/bundle"],
            Expect::BadInput("no/such/bundle/facts.json"),
        ),
        (
            vec![
                "host",
                "plan",
                "--os-release",
                path_str(&ubuntu),
                "--tee",
                "snp",
            ],
            Expect::Exit(
                0,
                vec!["Provisioning plan: Ubuntu 25.10 (questing), AMD SEV-SNP".to_owned()],
            ),
        ),
        (
            vec![
                "host",
                "plan",
                "--os-release",
                path_str(&debian),
                "--tee",
                "snp",
            ],
            Expect::BadInput(path_str(&debian)),
        ),
    ];
    for (args, expect) in cases {
        check(&args, expect);
    }
}

/// report.json of a validate run: (id, status) in order.
#[test]
fn host_check_warns_about_a_model_in_the_slow_boot_range() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = root().join("host-setup/tests/data/facts/snp-xe7745");
    let big = dir.path().join("big.toml");
    let text = cvm_core::model::DEFAULT_MODEL_TOML
        .replace("vcpus = 2", "vcpus = 96")
        .replace("memory = \"4G\"", "memory = \"512G\"");
    std::fs::write(&big, text).unwrap();
    let args = ["host", "check", "--facts", path_str(&healthy), "--json"];
    let quiet = stderr(&check(&args, Expect::Exit(0, vec![])));
    assert!(!quiet.contains("warning:"), "{quiet}");
    let mut with_model = args.to_vec();
    with_model.extend(["-c", path_str(&big)]);
    let loud = stderr(&check(&with_model, Expect::Exit(0, vec![])));
    let warnings: Vec<&str> = loud
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .collect();
    assert_eq!(warnings.len(), 2, "{loud}");
    assert!(warnings.iter().all(|w| w.contains("big.toml")), "{loud}");
    assert!(
        loud.contains("launch.memory") && loud.contains("launch.vcpus"),
        "{loud}"
    );
}

fn report_statuses(report_dir: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(report_dir.join("report.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|check| {
            (
                check["id"].as_str().unwrap().to_owned(),
                check["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The status of check `id` in a report's (id, status) list.
#[track_caller]
fn status_in<'a>(statuses: &'a [(String, String)], id: &str) -> &'a str {
    statuses
        .iter()
        .find(|(found, _)| found == id)
        .map(|(_, status)| status.as_str())
        .unwrap_or_else(|| panic!("{id} is not in report.json"))
}

#[test]
fn validate_writes_every_report_and_exits_per_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let healthy = root().join("validation/tests/data/xe7745");
    let broken = on_ubuntu_24_04(&healthy, dir.path());
    let artifacts = root().join("validation/tests/data/artifacts");
    let reports = |name: &str| dir.path().join(name);
    let validate = |facts: &Path, report_dir: &Path| -> Vec<String> {
        [
            "validate",
            "-c",
            "examples/xe7745-snp.toml",
            "--facts",
            path_str(facts),
            "--artifacts",
            path_str(&artifacts),
            "--report-dir",
            path_str(report_dir),
        ]
        .map(str::to_owned)
        .to_vec()
    };
    let (good, bad) = (reports("healthy"), reports("ubuntu-24.04"));
    let good_args = validate(&healthy, &good);
    let bad_args = validate(&broken, &bad);
    let missing_args = validate(Path::new("no/such/bundle"), &reports("missing"));
    let cases: Vec<(&Vec<String>, Expect)> = vec![
        (
            &good_args,
            Expect::Exit(0, vec!["pass  xe7745.platform".to_owned()]),
        ),
        (
            &bad_args,
            Expect::Exit(1, vec!["fail  xe7745.host-os".to_owned()]),
        ),
        (&missing_args, Expect::BadInput("no/such/bundle/facts.json")),
    ];
    for (args, expect) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        check(&args, expect);
    }

    // The healthy bundle: every profile row passes, then host-setup's whole preflight registry for
    // SEV-SNP (the model's TEE) with no failure, then the e2e stages: the artifacts verify and every
    // stage that has not landed skips.
    let statuses = report_statuses(&good);
    let registry: Vec<&str> = host_setup::checks::registry()
        .iter()
        .map(|check| check.id)
        .collect();
    let (rows, rest) = statuses.split_at(16);
    assert!(
        rows.iter()
            .all(|(id, status)| id.starts_with("xe7745.") && status == "pass"),
        "{rows:?}"
    );
    let (preflight, e2e) = rest.split_at(registry.len());
    let preflight_ids: Vec<&str> = preflight.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(preflight_ids, registry);
    assert!(
        preflight.iter().all(|(_, status)| status != "fail"),
        "{preflight:?}"
    );
    let e2e: Vec<(&str, &str)> = e2e
        .iter()
        .map(|(id, status)| (id.as_str(), status.as_str()))
        .collect();
    assert_eq!(
        e2e,
        [
            ("e2e.artifacts", "pass"),
            ("firmware.tee-support", "skip"),
            ("e2e.artifacts-measurement", "skip"),
            ("e2e.launch", "skip"),
            ("e2e.guest-ready", "skip"),
            ("e2e.guest-tee", "skip"),
            ("e2e.gpu-cc-ready", "skip"),
            ("e2e.measurement-match", "skip"),
            ("e2e.key-release", "skip"),
            ("e2e.endpoint-https", "skip"),
            ("e2e.egress", "skip"),
            ("e2e.telemetry", "skip"),
        ]
    );
    let junit = std::fs::read_to_string(good.join("report.xml")).unwrap();
    let html = std::fs::read_to_string(good.join("report.html")).unwrap();
    for (id, _) in &statuses {
        assert!(
            junit.contains(&format!("name=\"{id}\"")),
            "{id} not in report.xml"
        );
        assert!(
            html.contains(&format!("id=\"{id}\"")),
            "{id} not in report.html"
        );
    }

    // Ubuntu 24.04: the profile row and host-setup's release check fail, nothing else.
    let failed: Vec<String> = report_statuses(&bad)
        .into_iter()
        .filter(|(_, status)| status == "fail")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(failed, ["xe7745.host-os", "host.os-release"]);
}

#[test]
fn host_collect_writes_a_bundle_of_this_machine() {
    if !cvm_core::skip::require_slow("host_collect_writes_a_bundle_of_this_machine") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("facts");
    // --marker records whether extra host paths exist: one that does, one that does not.
    let absent = dir.path().join("no-such-ovmf.fd");
    check(
        &[
            "host",
            "collect",
            "--out",
            path_str(&out),
            "--marker",
            "/proc/cpuinfo",
            "--marker",
            path_str(&absent),
        ],
        Expect::Exit(0, Vec::new()),
    );
    let bundle = host_setup::facts::Bundle::open(&out).expect("the collected bundle opens");
    assert_eq!(bundle.meta().schema, 1);
    assert!(
        bundle.root_file("/proc/cpuinfo").present().is_some(),
        "/proc/cpuinfo is always readable"
    );
    assert!(bundle.root_exists("/proc/cpuinfo").present().is_some());
    assert!(
        matches!(
            bundle.root_exists(path_str(&absent)),
            host_setup::facts::Fact::Absent
        ),
        "an absent marker path is recorded as absent, not as not collected"
    );
    check(
        &[
            "host",
            "collect",
            "--out",
            path_str(&dir.path().join("again")),
            "--marker",
            "relative/x",
        ],
        Expect::BadInput("relative/x"),
    );
}

/// The bundle path each profile row reads, for the rows a virtual machine without SEV-SNP cannot
/// match: no Dell XE7745, no EPYC 9555 with 256 threads, no SEV-SNP, no GPU or Mellanox adapter,
/// no 1.5 TB of memory, not Ubuntu 25.10. (Rows it may match are left out: the kernel and QEMU
/// rows only warn when newer, a VM may have NVMe storage and the OVMF file.)
const ROWS_A_VM_CANNOT_MATCH: &[(&str, &str)] = &[
    ("xe7745.platform", "cmd/dmidecode"),
    ("xe7745.cpu-model", "cmd/lscpu"),
    ("xe7745.cpu-topology", "cmd/lscpu"),
    ("xe7745.cpu-tee", "root/proc/cpuinfo"),
    ("xe7745.gpus", "cmd/lspci"),
    ("xe7745.gpu-driver", "cmd/lspci"),
    ("xe7745.memory", "root/proc/meminfo"),
    ("xe7745.nic-bluefield3", "cmd/lspci"),
    ("xe7745.nic-connectx6lx", "cmd/lspci"),
    ("xe7745.nic-connectx7", "cmd/lspci"),
    ("xe7745.host-os", "root/etc/os-release"),
];

#[test]
fn validate_over_this_machine_fails_every_row_it_cannot_match() {
    const TEST: &str = "validate_over_this_machine_fails_every_row_it_cannot_match";
    if !cvm_core::skip::require_slow(TEST) {
        return;
    }
    use host_setup::facts::{Bundle, Fact};
    let dir = tempfile::tempdir().unwrap();
    let facts = dir.path().join("facts");
    let reports = dir.path().join("reports");
    check(
        &["host", "collect", "--out", path_str(&facts)],
        Expect::Exit(0, Vec::new()),
    );
    let bundle = Bundle::open(&facts).unwrap();
    let Fact::Present(cpuinfo) = bundle.root_file("/proc/cpuinfo") else {
        panic!("/proc/cpuinfo was not collected");
    };
    if !host_setup::facts::parse::cpuinfo(&cpuinfo)
        .flags
        .contains("hypervisor")
    {
        cvm_core::skip::skip(
            TEST,
            "this host is not a virtual machine; the expected verdicts are those of a VM",
        );
        return;
    }
    check(
        &[
            "validate",
            "-c",
            "examples/xe7745-snp.toml",
            "--facts",
            path_str(&facts),
            "--artifacts",
            path_str(&dir.path().join("no-artifacts")),
            "--report-dir",
            path_str(&reports),
        ],
        Expect::Exit(1, Vec::new()),
    );
    let statuses = report_statuses(&reports);
    let status_of = |id: &str| status_in(&statuses, id);
    for (row, source) in ROWS_A_VM_CANNOT_MATCH {
        // Collected means the bundle has the file or records that the host does not have it.
        let expected = match bundle.text(source) {
            Fact::Present(_) | Fact::Absent => "fail",
            Fact::NotCollected(_) => "skip",
        };
        assert_eq!(status_of(row), expected, "{row} (reads {source})");
    }
    // host-setup's checks over the same bundle see the virtual machine too.
    assert_eq!(status_of("host.bare-metal"), "fail");

    // Without --facts, validate collects this host itself, with the same verdicts for those rows,
    // and records the profile's firmware, so the OVMF row has a verdict instead of a skip.
    let live_reports = dir.path().join("live-reports");
    check(
        &[
            "validate",
            "-c",
            "examples/xe7745-snp.toml",
            "--artifacts",
            path_str(&dir.path().join("no-artifacts")),
            "--report-dir",
            path_str(&live_reports),
        ],
        Expect::Exit(1, Vec::new()),
    );
    let live = report_statuses(&live_reports);
    let live_status = |id: &str| status_in(&live, id);
    for (row, _) in ROWS_A_VM_CANNOT_MATCH {
        assert_eq!(live_status(row), status_of(row), "{row}");
    }
    let ovmf = "/usr/share/ovmf/OVMF.amdsev.fd";
    let expected = if Path::new(ovmf).exists() {
        "pass"
    } else {
        "fail"
    };
    assert_eq!(live_status("xe7745.ovmf"), expected, "{ovmf}");
}

/// The end-to-end path of issue 8 on this machine: build the default image with a network (QEMU
/// user networking) and one outbound endpoint (the stage cache makes this cheap after
/// guest-image's own tests: only the stages from harden on differ), then `validate --emulate`
/// boots it under QEMU over the passing XE7745 bundle. The guest must report ready with its
/// firewall loaded, and e2e.egress must read that firewall back out of the built disk and find
/// exactly the model's endpoint; what only a real TEE can show is a skip with its reason, never a
/// pass.
#[test]
fn validate_emulate_boots_the_built_image() {
    if !cvm_core::skip::require_slow("validate_emulate_boots_the_built_image") {
        return;
    }
    let out = root().join("target/cvm-test/validate-emulate");
    let models = tempfile::tempdir().unwrap();
    let model = models.path().join("cvm.toml");
    // A free port for QEMU's host forward, so parallel runs cannot collide.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &model,
        format!(
            "[deployment]\nname = \"cvm-base\"\ntee = \"snp\"\n\n[launch.network]\nmode = \"user\"\nhost-port = {port}\negress = [\"192.0.2.10:443\"]\n"
        ),
    )
    .unwrap();
    #[allow(clippy::disallowed_methods)] // Tests run the binary under test directly.
    let build = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args([
            "guest",
            "build",
            "-c",
            path_str(&model),
            "--out",
            path_str(&out),
        ])
        .current_dir(root())
        .output()
        .unwrap();
    if !build.status.success() {
        let text = stderr(&build);
        if text.contains("unreachable") {
            cvm_core::skip::skip(
                "validate_emulate_boots_the_built_image",
                &format!("cannot build the default image here: {}", text.trim()),
            );
            return;
        }
        panic!("guest build failed:\n{text}");
    }
    let reports = tempfile::tempdir().unwrap();
    let facts = root().join("validation/tests/data/xe7745");
    let args = [
        "validate",
        "-c",
        path_str(&model),
        "--emulate",
        "--artifacts",
        path_str(&out),
        "--facts",
        path_str(&facts),
        "--report-dir",
        path_str(reports.path()),
    ];
    #[allow(clippy::disallowed_methods)] // Tests run the binary under test directly.
    let output = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    let statuses = report_statuses(reports.path());
    let context = format!(
        "{statuses:?}\n--- stderr\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (id, expected) in [
        ("e2e.artifacts", "pass"),
        ("e2e.launch", "pass"),
        ("e2e.guest-ready", "pass"),
        ("e2e.guest-tee", "skip"),
        ("e2e.measurement-match", "skip"),
        ("e2e.egress", "pass"),
        ("e2e.telemetry", "pass"),
    ] {
        assert_eq!(status_in(&statuses, id), expected, "{id}: {context}");
    }
    assert!(
        statuses.iter().all(|(_, status)| status != "fail"),
        "no check may fail: {context}"
    );
    assert_eq!(output.status.code(), Some(0), "{context}");
    let report = std::fs::read_to_string(reports.path().join("report.json")).unwrap();
    assert!(
        report.contains("the image's firewall lets out exactly 192.0.2.10:443 (plus DHCP)"),
        "{report}"
    );
    assert!(report.contains("firewall active"), "{report}");
}

/// Borrowed arguments for [`check`].
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The exact OVMF builds of shared/test-data/firmware, or `None` (with a loud skip) when that
/// directory is not beside this checkout.
fn test_firmware(test: &str) -> Option<PathBuf> {
    let dir = guest_image::measure::reference::test_firmware_dir(&root());
    if dir.is_none() {
        cvm_core::skip::skip(
            test,
            "shared/test-data/firmware is not beside this checkout",
        );
    }
    dir
}

#[test]
fn measure_commands_print_digests_and_refuse_bad_input_in_one_line() {
    let Some(firmware) = test_firmware("measure_commands") else {
        return;
    };
    let amdsev = firmware.join("ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd");
    let plucky = firmware.join("ovmf-plucky-2025.02-3ubuntu2-OVMF.fd");
    let dir = tempfile::tempdir().unwrap();
    let truncated = dir.path().join("truncated.fd");
    std::fs::write(&truncated, &std::fs::read(&amdsev).unwrap()[..1 << 20]).unwrap();
    let kernel = dir.path().join("uki.efi");
    std::fs::write(&kernel, b"not really a UKI").unwrap();
    let snp = |ovmf: &Path| {
        vec![
            "measure".to_owned(),
            "snp".to_owned(),
            "--ovmf".to_owned(),
            path_str(ovmf).to_owned(),
            "--vcpus".to_owned(),
            "4".to_owned(),
            "--vcpu-type".to_owned(),
            "EPYC-v4".to_owned(),
        ]
    };

    // A valid SNP measurement: the last stdout line is 96 hex digits, and --json parses.
    let args = snp(&amdsev);
    let output = check(&strs(&args), Expect::Exit(0, Vec::new()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(
        last.len() == 96 && last.bytes().all(|b| b.is_ascii_hexdigit()),
        "last line is not a 96-hex-digit digest: {stdout}"
    );
    let mut json_args = args.clone();
    json_args.push("--json".to_owned());
    let output = check(&strs(&json_args), Expect::Exit(0, Vec::new()));
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(json.is_object(), "{json}");

    // Bad input: each exits 2 with one line.
    let mut with_kernel = snp(&plucky);
    with_kernel.extend(["--kernel".to_owned(), path_str(&kernel).to_owned()]);
    let mut unknown_vcpu = snp(&amdsev);
    unknown_vcpu[7] = "EPYC-Nowhere".to_owned();
    let mut bad_features = snp(&amdsev);
    bad_features.extend(["--guest-features".to_owned(), "zz".to_owned()]);
    for (args, names) in [
        (snp(&truncated), "truncated.fd"),
        (with_kernel, "ovmf-plucky"),
        (unknown_vcpu, "EPYC-Nowhere"),
        (bad_features, "zz"),
    ] {
        check(&strs(&args), Expect::BadInput(names));
    }

    // The public MRTD of the plucky OVMF.fd (shared/reference/measurement.md).
    check(
        &["measure", "tdx", "--ovmf", path_str(&plucky)],
        Expect::Exit(
            0,
            vec!["7357a10d2e2724dffe68813e3cc4cfcde6814d749f2fb62e3953e54f6e0b50a219786afe2cd478f684b52c61837e1114".to_owned()],
        ),
    );
}

#[test]
fn attest_register_dry_run_sends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir(&artifacts).unwrap();
    std::fs::copy(
        root().join("xtask/tests/data/cli/measurements.json"),
        artifacts.join("measurements.json"),
    )
    .unwrap();
    // The example as shipped: its app-id placeholder is what the operator replaces.
    let model = root().join("examples/xe7745-snp.toml");
    // No CCM credentials and no reachable service: a dry run must not need either.
    check(
        &[
            "attest",
            "register",
            "-c",
            path_str(&model),
            "--artifacts",
            path_str(&artifacts),
            "--dry-run",
            "--ccm-credentials-env",
            "CVM_TEST_UNSET_CCM_LOGIN",
        ],
        Expect::Exit(
            0,
            vec![
                "POST https://ccm.fortanix.com/v1/builds".to_owned(),
                "\"app_id\": \"00000000-0000-4000-8000-000000000000\"".to_owned(),
                "\"measurement\": \"3c6f1b8e2d4a59c70e1f2a3b4c5d6e7f".to_owned(),
                "Dry run: nothing was sent.".to_owned(),
            ],
        ),
    );
}

#[test]
fn launch_render_writes_a_script_bash_accepts() {
    let dir = tempfile::tempdir().unwrap();
    check(
        &[
            "launch",
            "render",
            "-c",
            "examples/tdx.toml",
            "--artifacts",
            path_str(dir.path()),
        ],
        Expect::Exit(0, Vec::new()),
    );
    let script = dir.path().join("launch-tdx.sh");
    assert!(dir.path().join("domain-tdx.xml").is_file());
    assert!(script.is_file());
    #[allow(clippy::disallowed_methods)] // A syntax check of the rendered script, nothing run.
    let status = Command::new("bash")
        .arg("-n")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "bash -n rejects {}", script.display());
}

/// Processes whose command line names `dir`, or whose root directory (a chroot) is inside it.
fn processes_in(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(|e| e.ok()) {
        let proc_dir = entry.path();
        if proc_dir.join("cmdline").is_file() && entry.file_name() != "self" {
            let cmdline = std::fs::read(proc_dir.join("cmdline"))
                .map(|bytes| String::from_utf8_lossy(&bytes).replace('\0', " "))
                .unwrap_or_default();
            let chroot = std::fs::read_link(proc_dir.join("root")).unwrap_or_default();
            if cmdline.contains(&needle) || chroot.starts_with(dir) {
                found.push(format!(
                    "{}: {cmdline}",
                    entry.file_name().to_string_lossy()
                ));
            }
        }
    }
    found
}

/// DESIGN §4 and the guest image issue: a build killed with SIGKILL while mmdebstrap installs
/// the root leaves no process, no mount and no output behind, and the next build succeeds and
/// removes its scratch tree.
#[test]
fn a_build_killed_in_mmdebstrap_leaves_nothing_running_and_the_next_build_succeeds() {
    const TEST: &str =
        "a_build_killed_in_mmdebstrap_leaves_nothing_running_and_the_next_build_succeeds";
    if !cvm_core::skip::require_slow(TEST) {
        return;
    }
    use std::io::BufRead;
    let out = root().join("target/cvm-test/killed-build");
    let _ = std::fs::remove_dir_all(&out);
    #[allow(clippy::disallowed_methods)] // Tests run the binary under test directly.
    let mut build = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["guest", "build", "--no-cache", "--out", path_str(&out)])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    let stderr_pipe = build.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr_pipe).lines() {
            if lines.send(line.unwrap_or_default()).is_err() {
                break;
            }
        }
    });
    // The scratch directory the build names, then its root tree well into the package install.
    let mut text = String::new();
    let scratch = loop {
        match received.recv_timeout(std::time::Duration::from_secs(300)) {
            Ok(line) => {
                text.push_str(&line);
                text.push('\n');
                if let Some(rest) = line.trim().strip_prefix("Scratch trees in ") {
                    break PathBuf::from(rest.split(" (").next().unwrap());
                }
            }
            Err(_) => {
                let _ = build.kill();
                let _ = build.wait();
                if text.contains("unreachable") {
                    cvm_core::skip::skip(TEST, &format!("cannot build here: {}", text.trim()));
                    return;
                }
                panic!("the build never named its scratch directory:\n{text}");
            }
        }
    };
    let started = std::time::Instant::now();
    let installing = || {
        std::fs::read_dir(&scratch)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok())
            .any(|tree| tree.path().join("var/lib/dpkg/status").is_file())
    };
    while !installing() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(300),
            "mmdebstrap never started installing into {}",
            scratch.display()
        );
        if let Some(status) = build.try_wait().unwrap() {
            while let Ok(line) = received.try_recv() {
                text.push_str(&line);
                text.push('\n');
            }
            if text.contains("unreachable") {
                cvm_core::skip::skip(TEST, &format!("cannot build here: {}", text.trim()));
                return;
            }
            panic!("the build ended ({status}) before it could be killed:\n{text}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        !processes_in(&scratch).is_empty(),
        "nothing is building in {}",
        scratch.display()
    );
    build.kill().unwrap();
    build.wait().unwrap();
    // mmdebstrap gets SIGTERM when its parent dies (setpriv --pdeathsig) and stops its children;
    // its mounts live in its own namespace and go with its last process.
    let killed = std::time::Instant::now();
    while !processes_in(&scratch).is_empty() {
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(60),
            "still running a minute after the build was killed: {:?}",
            processes_in(&scratch)
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let cache = root().join("target/cvm-cache");
    for line in mountinfo.lines() {
        assert!(
            !line.contains(&*scratch.to_string_lossy())
                && !line.contains(&*cache.to_string_lossy()),
            "a mount outlived the killed build: {line}"
        );
    }
    assert!(!out.exists(), "the killed build left {}", out.display());
    // The next build removes the killed one's scratch tree (unless a build of another test, run
    // in parallel, took the cache over first and removed it: every build sweeps).
    let next = xtask(&["guest", "build", "--out", path_str(&out)], 0);
    let text = stderr(&next);
    if !text.contains(&*scratch.to_string_lossy()) {
        eprintln!(
            "{TEST}: another build removed {} before this one ran",
            scratch.display()
        );
    }
    assert!(
        !scratch.exists(),
        "{} outlived the next build:\n{text}",
        scratch.display()
    );
    assert!(out.join("manifest.json").is_file());
}
