//! Unit tests of provisioning: os-release fixtures, plan snapshots for every release × TEE × GPU
//! count, and `apply` against a temporary root with a recording runner.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
};

use cvm_core::{cmd::Output, deps::OsRelease, model::Tee};
use expect_test::{expect, expect_file, Expect, ExpectFile};

use super::{
    apply::{self, exit_status, ApplyOptions, ApplyReport, Outcome, PackageMode, Runner},
    build::forbidden_words,
    read_release, Action, Plan, PlanRequest, Release,
};

fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/provision")
        .join(relative)
}

/// The result of reading an os-release fixture: the release, or the one-line error.
#[track_caller]
fn check_release(fixture: &str, expect: Expect) {
    let path = data(&format!("os-release/{fixture}"));
    let actual = match read_release(&path) {
        Ok(release) => format!("{release}"),
        Err(err) => {
            assert!(cvm_core::error::is_bad_input(&err), "{err:#}");
            let text = format!("{err:#}");
            text.replace(&format!("{}", data("").display()), "DATA/")
                .replace("DATA//", "DATA/")
        }
    };
    expect.assert_eq(&actual);
}

#[test]
fn os_release_fixtures() {
    check_release("ubuntu-24.04", expect!["Ubuntu 24.04 (noble)"]);
    check_release("ubuntu-25.04", expect!["Ubuntu 25.04 (plucky)"]);
    check_release("ubuntu-25.10", expect!["Ubuntu 25.10 (questing)"]);
    check_release("ubuntu-26.04", expect!["Ubuntu 26.04 (resolute)"]);
    check_release(
        "ubuntu-22.04",
        expect!["DATA/os-release/ubuntu-22.04: Ubuntu 22.04 is not supported for host provisioning; supported hosts are Ubuntu 24.04, 25.04, 25.10 and 26.04: upgrade the host, or pass --os-release FILE to plan for another host"],
    );
    check_release(
        "debian-12",
        expect!["DATA/os-release/debian-12: debian 12 is not supported for host provisioning; supported hosts are Ubuntu 24.04, 25.04, 25.10 and 26.04: install one, or pass --os-release FILE to plan for another host"],
    );
    check_release(
        "missing",
        expect!["DATA/os-release/missing: cannot read the os-release file: No such file or directory (os error 2); pass an existing file with --os-release FILE"],
    );
}

fn request(version: &str, model: &str, tee: Option<Tee>) -> PlanRequest {
    let os = OsRelease {
        id: "ubuntu".to_owned(),
        version_id: version.to_owned(),
        codename: String::new(),
    };
    let release = Release::from_os_release(&os, "test").expect("a supported release");
    let path = data(&format!("models/{model}"));
    let loaded = cvm_core::model::load(Some(&path)).expect("the fixture model is valid");
    PlanRequest::from_model(&loaded.model, release, tee, false)
}

/// The rendered plan for a release and a model fixture, or the refusal.
#[track_caller]
fn check_plan(version: &str, model: &str, expect: ExpectFile) {
    let actual = match super::plan(&request(version, model, None)) {
        Ok(plan) => plan.render(),
        Err(err) => {
            assert!(cvm_core::error::is_bad_input(&err), "{err:#}");
            format!("error: {err:#}\n")
        }
    };
    expect.assert_eq(&actual);
}

#[test]
fn plans_24_04() {
    check_plan(
        "24.04",
        "snp-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/24.04-snp-0gpu.txt"],
    );
    check_plan(
        "24.04",
        "snp-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/24.04-snp-1gpu.txt"],
    );
    check_plan(
        "24.04",
        "snp-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/24.04-snp-8gpu.txt"],
    );
    check_plan(
        "24.04",
        "tdx-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/24.04-tdx-0gpu.txt"],
    );
    check_plan(
        "24.04",
        "tdx-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/24.04-tdx-1gpu.txt"],
    );
    check_plan(
        "24.04",
        "tdx-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/24.04-tdx-8gpu.txt"],
    );
}

#[test]
fn plans_25_04() {
    check_plan(
        "25.04",
        "snp-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/25.04-snp-0gpu.txt"],
    );
    check_plan(
        "25.04",
        "snp-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/25.04-snp-1gpu.txt"],
    );
    check_plan(
        "25.04",
        "snp-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/25.04-snp-8gpu.txt"],
    );
    check_plan(
        "25.04",
        "tdx-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/25.04-tdx-0gpu.txt"],
    );
    check_plan(
        "25.04",
        "tdx-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/25.04-tdx-1gpu.txt"],
    );
    check_plan(
        "25.04",
        "tdx-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/25.04-tdx-8gpu.txt"],
    );
}

#[test]
fn plans_25_10() {
    check_plan(
        "25.10",
        "snp-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/25.10-snp-0gpu.txt"],
    );
    check_plan(
        "25.10",
        "snp-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/25.10-snp-1gpu.txt"],
    );
    check_plan(
        "25.10",
        "snp-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/25.10-snp-8gpu.txt"],
    );
    check_plan(
        "25.10",
        "tdx-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/25.10-tdx-0gpu.txt"],
    );
    check_plan(
        "25.10",
        "tdx-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/25.10-tdx-1gpu.txt"],
    );
    check_plan(
        "25.10",
        "tdx-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/25.10-tdx-8gpu.txt"],
    );
}

#[test]
fn plans_26_04() {
    check_plan(
        "26.04",
        "snp-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/26.04-snp-0gpu.txt"],
    );
    check_plan(
        "26.04",
        "snp-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/26.04-snp-1gpu.txt"],
    );
    check_plan(
        "26.04",
        "snp-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/26.04-snp-8gpu.txt"],
    );
    check_plan(
        "26.04",
        "tdx-gpus-0.toml",
        expect_file!["../../tests/data/provision/plans/26.04-tdx-0gpu.txt"],
    );
    check_plan(
        "26.04",
        "tdx-gpus-1.toml",
        expect_file!["../../tests/data/provision/plans/26.04-tdx-1gpu.txt"],
    );
    check_plan(
        "26.04",
        "tdx-gpus-8.toml",
        expect_file!["../../tests/data/provision/plans/26.04-tdx-8gpu.txt"],
    );
}

#[test]
fn plan_json() {
    let plan = super::plan(&request("25.10", "snp-gpus-1.toml", None)).unwrap();
    let json = serde_json::to_string_pretty(&plan).unwrap() + "\n";
    expect_file!["../../tests/data/provision/plans/25.10-snp-1gpu.json"].assert_eq(&json);
}

/// Invariants every plan keeps, whatever the release, TEE and GPUs (corrections.md 10–12).
#[test]
fn plan_invariants() {
    for release in Release::ALL {
        for model in [
            "snp-gpus-0.toml",
            "snp-gpus-1.toml",
            "snp-gpus-8.toml",
            "tdx-gpus-0.toml",
            "tdx-gpus-1.toml",
            "tdx-gpus-8.toml",
        ] {
            for tee in [Tee::Snp, Tee::Tdx] {
                let Ok(plan) = super::plan(&request(release.version(), model, Some(tee))) else {
                    assert!(release == Release::Noble && tee == Tee::Tdx && !model.contains("-0"));
                    continue;
                };
                let json = serde_json::to_string(&plan).unwrap();
                let case = format!("{} {model} {tee}", release.version());
                let ids: BTreeSet<&str> = plan.steps.iter().map(|step| step.id.as_str()).collect();
                assert_eq!(ids.len(), plan.steps.len(), "{case}: step ids repeat");
                let cmdline = plan
                    .steps
                    .iter()
                    .find_map(|step| match &step.action {
                        Action::WriteFile { path, contents, .. } if step.id == "kernel.cmdline" => {
                            Some((path.clone(), contents.clone()))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| panic!("{case}: no kernel.cmdline step"));
                assert!(cmdline.0.starts_with("/etc/default/grub.d/"), "{case}");
                let forbidden = forbidden_words(tee);
                assert_eq!(
                    apply::find_forbidden(&cmdline.1, &forbidden),
                    None,
                    "{case}"
                );
                if tee == Tee::Snp {
                    assert!(forbidden.contains(&"iommu=pt".to_owned()), "{case}");
                    assert!(!cmdline.1.contains("iommu"), "{case}: {}", cmdline.1);
                } else {
                    for word in ["nohibernate", "kvm_intel.tdx=1", "intel_iommu=on"] {
                        assert!(cmdline.1.contains(&format!(" {word}")), "{case}: {word}");
                    }
                    assert!(json.contains("memlock    unlimited"), "{case}: memlock");
                }
                let reboot = plan
                    .steps
                    .iter()
                    .position(|step| step.id == "reboot.host")
                    .unwrap_or_else(|| panic!("{case}: no reboot step"));
                let gpu_mode = plan
                    .steps
                    .iter()
                    .position(|step| step.id.starts_with("gpu.") && step.id.ends_with("-mode"));
                assert_eq!(gpu_mode.is_some(), !plan.gpus.is_empty(), "{case}");
                if let Some(gpu_mode) = gpu_mode {
                    assert!(
                        gpu_mode > reboot,
                        "{case}: GPU mode is set after the vfio reboot"
                    );
                }
            }
        }
    }
}

#[test]
fn libvirt_is_installed_when_wanted() {
    for (version, model) in [("24.04", "tdx-gpus-0.toml"), ("25.10", "snp-gpus-1.toml")] {
        let mut with = request(version, model, None);
        with.libvirt = true;
        let packages = |request: &PlanRequest| -> Vec<String> {
            super::plan(request)
                .unwrap()
                .steps
                .into_iter()
                .filter_map(|step| match step.action {
                    Action::Packages { packages, .. } => Some(packages),
                    _ => None,
                })
                .flatten()
                .map(|package| package.name)
                .collect()
        };
        let plain = packages(&request(version, model, None));
        let libvirt = packages(&with);
        let added: Vec<&String> = libvirt
            .iter()
            .filter(|name| !plain.contains(name))
            .collect();
        assert_eq!(
            added,
            ["libvirt-daemon-system", "libvirt-clients"],
            "{version} {model}"
        );
    }
}

/// A runner that records every command and answers like the tools it stands in for: dpkg-query
/// knows the packages `apt-get install` installed (and the firmware files they ship), `dpkg --compare-versions` compares numerically,
/// git knows the commit it checked out, gpu-admin-tools reports the mode it was last set to, and
/// any command in `failing` fails.
#[derive(Default)]
struct FakeRunner {
    log: Vec<String>,
    installed: BTreeSet<String>,
    cc_on: BTreeSet<String>,
    checked_out: Option<String>,
    failing: Vec<String>,
}

fn output(code: i32, stdout: &str, stderr: &str) -> Output {
    Output {
        status: exit_status(code),
        stdout: stdout.as_bytes().to_vec(),
        stderr: stderr.as_bytes().to_vec(),
    }
}

impl Runner for FakeRunner {
    fn output(&mut self, root: &Path, argv: &[String]) -> anyhow::Result<Output> {
        let line = super::command_line(argv);
        self.log.push(line.clone());
        if self
            .failing
            .iter()
            .any(|failing| line.starts_with(failing.as_str()))
        {
            return Ok(output(1, "step one\nstep two\n", "something broke\n"));
        }
        let words: Vec<&str> = argv.iter().map(String::as_str).collect();
        Ok(match words.as_slice() {
            ["dpkg-query", _, _, name] => match self.installed.contains(*name) {
                true => output(0, "install ok installed\t1:10.1.0+ds-5ubuntu2", ""),
                false => output(1, "", "dpkg-query: no packages found"),
            },
            ["dpkg", "--compare-versions", version, "ge", min] => {
                let number = |text: &str| {
                    cvm_core::model::parse_version(text.rsplit(':').next().unwrap_or(text))
                };
                output(if number(version) >= number(min) { 0 } else { 1 }, "", "")
            }
            ["apt-get", "install", rest @ ..] => {
                for name in rest.iter().filter(|word| !word.starts_with('-')) {
                    self.installed.insert((*name).to_owned());
                    let firmware = match *name {
                        "ovmf" => "usr/share/ovmf/OVMF.amdsev.fd",
                        "ovmf-inteltdx" => "usr/share/ovmf/OVMF.inteltdx.ms.fd",
                        _ => continue,
                    };
                    fs::create_dir_all(root.join(firmware).parent().unwrap()).unwrap();
                    fs::write(root.join(firmware), "firmware").unwrap();
                }
                output(0, "", "")
            }
            ["qemu-system-x86_64", "-object", "help"] => {
                match self.installed.contains("qemu-system-x86") {
                    true => output(
                        0,
                        "List of user creatable objects:\n  sev-snp-guest\n  tdx-guest\n",
                        "",
                    ),
                    false => output(127, "", "qemu-system-x86_64: not found"),
                }
            }
            ["git", "-C", _, "checkout", .., commit] => {
                self.checked_out = Some((*commit).to_owned());
                output(0, "", "")
            }
            ["git", "-C", _, "rev-parse", "HEAD"] => match &self.checked_out {
                Some(commit) => output(0, &format!("{commit}\n"), ""),
                None => output(128, "", "fatal: not a git repository"),
            },
            ["python3", _, device, mode, _] if mode.starts_with("--set-") => {
                self.cc_on.insert((*device).to_owned());
                output(0, "", "")
            }
            ["python3", _, device, _query] => match self.cc_on.contains(*device) {
                true => output(0, "", "GPU 0000:41:00.0 CC mode is on\n"),
                false => output(0, "", "GPU 0000:41:00.0 CC mode is off\n"),
            },
            _ => output(0, "", ""),
        })
    }
}

fn options(root: &Path) -> ApplyOptions {
    ApplyOptions {
        root: root.to_owned(),
        packages: PackageMode::Install,
        timestamp: "20261128T120000Z".to_owned(),
    }
}

fn plan_for(version: &str, model: &str) -> Plan {
    super::plan(&request(version, model, None)).unwrap()
}

/// The report with the temporary root's path taken out.
fn render(report: &ApplyReport, root: &Path) -> String {
    report.render().replace(&root.display().to_string(), "ROOT")
}

#[test]
fn apply_is_idempotent_and_stops_at_the_reboot() {
    let root = tempfile::tempdir().unwrap();
    let plan = plan_for("25.10", "snp-gpus-1.toml");
    let options = options(root.path());
    let mut runner = FakeRunner::default();

    let first = apply::apply(&plan, &options, &mut runner).unwrap();
    expect![[r#"
        bios.snp-stage-1             manual: by hand, not checked here: racadm set BIOS.ProcSettings.ProcVirtualization Enabled
        bios.snp-stage-2             manual: by hand, not checked here: racadm set BIOS.ProcSettings.Snp Enabled
        bios.snp-stage-3             manual: by hand, not checked here: racadm set BIOS.ProcSettings.Rmp Enabled
        kernel.cmdline               applied: wrote /etc/default/grub.d/90-cvm-stack.cfg
        kernel.forbidden-words       already done
        kvm.module-options           applied: wrote /etc/modprobe.d/cvm-stack-kvm.conf
        vfio.ids                     applied: wrote /etc/modprobe.d/cvm-stack-vfio.conf
        vfio.modules-load            applied: wrote /etc/modules-load.d/cvm-stack-vfio.conf
        gpu.blacklist-host-drivers   applied: wrote /etc/modprobe.d/cvm-stack-blacklist-gpu.conf
        memlock.limits               applied: wrote /etc/security/limits.d/90-cvm-stack-memlock.conf
        memlock.systemd              applied: wrote /etc/systemd/system.conf.d/90-cvm-stack-memlock.conf
        initramfs.update             applied: ran 1 command
        grub.update                  applied: ran 1 command
        packages.install             applied: installed
        verify.firmware              already done
        verify.qemu-tee              already done
        gpu.admin-tools              applied: ran 3 commands
        reboot.host                  reboot needed: kvm_amd.sev=1 is not on /proc/cmdline, kvm_amd.sev_es=1 is not on /proc/cmdline, kvm_amd.sev_snp=1 is not on /proc/cmdline; reboot the host (apply never does) to activate the kernel command line, the module options and the memlock limits
        after the reboot, run `cargo xtask host apply` again for: gpu.cc-mode
    "#]]
    .assert_eq(&render(&first, root.path()));
    let vfio = fs::read_to_string(root.path().join("etc/modprobe.d/cvm-stack-vfio.conf")).unwrap();
    assert!(vfio.contains("options vfio-pci ids=10de:2bb5\n"), "{vfio}");
    let changing: Vec<&String> = runner.log.iter().filter(|line| !is_query(line)).collect();
    expect![[r#"
        [
            "update-initramfs -u -k all",
            "update-grub",
            "apt-get update",
            "apt-get install -y --no-install-recommends qemu-system-x86 ovmf git python3 pciutils",
            "rm -rf /opt/cvm-stack/gpu-admin-tools",
            "git clone --quiet https://github.com/NVIDIA/gpu-admin-tools.git /opt/cvm-stack/gpu-admin-tools",
            "git -C /opt/cvm-stack/gpu-admin-tools checkout --quiet --detach 82422cc1811cf7d04b69733cef3fa46e4144e203",
        ]
    "#]]
    .assert_debug_eq(&changing);

    // The second apply finds everything done and runs nothing but checks.
    let snapshot = tree(root.path());
    runner.log.clear();
    let second = apply::apply(&plan, &options, &mut runner).unwrap();
    assert!(!second.changed_anything(), "{}", second.render());
    assert!(second.steps.iter().all(|step| matches!(
        step.outcome,
        Outcome::AlreadyDone | Outcome::Manual | Outcome::RebootNeeded
    )));
    assert_eq!(
        tree(root.path()),
        snapshot,
        "the second apply changed files"
    );
    assert!(
        runner.log.iter().all(|line| is_query(line)),
        "{:?}",
        runner.log
    );

    // After the reboot (the kernel command line has the words), the GPU goes into CC mode.
    fs::create_dir_all(root.path().join("proc")).unwrap();
    fs::write(
        root.path().join("proc/cmdline"),
        "BOOT_IMAGE=/boot/vmlinuz ro kvm_amd.sev=1 kvm_amd.sev_es=1 kvm_amd.sev_snp=1\n",
    )
    .unwrap();
    runner.log.clear();
    let third = apply::apply(&plan, &options, &mut runner).unwrap();
    let tail: Vec<String> = third.steps[third.steps.len() - 2..]
        .iter()
        .map(|step| format!("{} {:?}", step.id, step.outcome))
        .collect();
    assert_eq!(tail, ["reboot.host AlreadyDone", "gpu.cc-mode Applied"]);
    assert!(runner.log.contains(&"python3 /opt/cvm-stack/gpu-admin-tools/nvidia_gpu_tools.py --devices=0000:41:00.0 --set-cc-mode=on --reset-after-cc-mode-switch".to_owned()));
}

/// True for the read-only commands the checks run.
fn is_query(line: &str) -> bool {
    line.starts_with("dpkg")
        || line.ends_with(" rev-parse HEAD")
        || line.ends_with(" -object help")
        || line.contains(" --query-")
}

/// Relative path and contents of every file below `root`.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .map(|entry| {
            (
                entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string(),
                fs::read(entry.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

#[test]
fn apply_backs_up_changed_files_and_reruns_triggers() {
    let root = tempfile::tempdir().unwrap();
    let plan = plan_for("26.04", "tdx-gpus-0.toml");
    let kvm = root.path().join("etc/modprobe.d/cvm-stack-kvm.conf");
    fs::create_dir_all(kvm.parent().unwrap()).unwrap();
    fs::write(&kvm, "options kvm_intel tdx=0\n").unwrap();
    let mut runner = FakeRunner::default();
    let report = apply::apply(&plan, &options(root.path()), &mut runner).unwrap();
    assert_eq!(
        report.backups,
        ["/etc/modprobe.d/cvm-stack-kvm.conf.cvm-stack-backup-20261128T120000Z"]
    );
    let backup = root
        .path()
        .join("etc/modprobe.d/cvm-stack-kvm.conf.cvm-stack-backup-20261128T120000Z");
    assert_eq!(
        fs::read_to_string(backup).unwrap(),
        "options kvm_intel tdx=0\n"
    );
    assert!(fs::read_to_string(&kvm)
        .unwrap()
        .contains("options kvm_intel tdx=1\n"));

    // Editing /etc/default/grub makes grub.update (and only it) run again.
    fs::write(root.path().join("etc/default/grub"), "GRUB_TIMEOUT=5\n").unwrap();
    runner.log.clear();
    let report = apply::apply(&plan, &options(root.path()), &mut runner).unwrap();
    let applied: Vec<&str> = report
        .steps
        .iter()
        .filter(|step| step.outcome == Outcome::Applied)
        .map(|step| step.id.as_str())
        .collect();
    assert_eq!(applied, ["grub.update"]);
}

#[test]
fn apply_stops_at_the_first_failure_with_its_output() {
    let root = tempfile::tempdir().unwrap();
    let plan = plan_for("25.10", "tdx-gpus-0.toml");
    let mut runner = FakeRunner {
        failing: vec!["update-grub".to_owned()],
        ..FakeRunner::default()
    };
    let report = apply::apply(&plan, &options(root.path()), &mut runner).unwrap();
    let failed = report.failure().expect("update-grub fails");
    assert_eq!(failed.id, "grub.update");
    expect![[r#"
        `update-grub` failed (exit code 1):
            step one
            step two
            something broke"#]]
    .assert_eq(&failed.detail);
    assert_eq!(report.steps.last().unwrap().id, "grub.update");
    assert!(!runner.log.iter().any(|line| line.starts_with("apt-get")));
    assert!(!root
        .path()
        .join("var/lib/cvm-stack/provision/grub.update.sha256")
        .exists());
}

#[test]
fn apply_refuses_iommu_pt_on_snp() {
    let root = tempfile::tempdir().unwrap();
    let grub = root.path().join("etc/default/grub");
    fs::create_dir_all(grub.parent().unwrap()).unwrap();
    fs::write(
        &grub,
        "# GRUB_CMDLINE_LINUX=\"iommu=pt\" in a comment is fine\nGRUB_DEFAULT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash amd_iommu=on iommu=pt\"\n",
    )
    .unwrap();
    let plan = plan_for("25.04", "snp-gpus-0.toml");
    let report = apply::apply(&plan, &options(root.path()), &mut FakeRunner::default()).unwrap();
    let failed = report.failure().expect("the guard fails");
    assert_eq!(failed.id, "kernel.forbidden-words");
    expect!["/etc/default/grub:3: sets iommu=pt; remove the word from GRUB_CMDLINE_LINUX* in the file named, then run `cargo xtask host apply` again"]
        .assert_eq(&failed.detail);
    assert!(!root.path().join("etc/modprobe.d").exists());
}

#[test]
fn simulated_packages_and_network_steps() {
    let root = tempfile::tempdir().unwrap();
    let plan = plan_for("24.04", "tdx-gpus-0.toml");
    let mut options = options(root.path());
    options.packages = PackageMode::Simulate;
    let mut runner = FakeRunner::default();
    let report = apply::apply(&plan, &options, &mut runner).unwrap();
    let outcomes: Vec<String> = report
        .steps
        .iter()
        .skip_while(|step| step.id != "tdx.ppa-tools")
        .map(|step| format!("{} {:?}: {}", step.id, step.outcome, step.detail))
        .collect();
    expect![[r#"
        [
            "tdx.ppa-tools Simulated: apt-get -s resolved 0 packages to install; nothing installed",
            "tdx.ppa-pin Applied: wrote /etc/apt/preferences.d/cvm-stack-kobuk-tdx-release-pin-4000",
            "tdx.ppa-unattended-upgrades Applied: wrote /etc/apt/apt.conf.d/99cvm-stack-unattended-upgrades-kobuk-tdx-release",
            "tdx.ppa Failed: this step downloads the Launchpad PPA ppa:kobuk-team/tdx-release and its signing key; stopped here because packages were only simulated (the tools it needs are not installed and this run does not reach the network)",
        ]
    "#]]
    .assert_debug_eq(&outcomes);
    assert!(runner.log.contains(
        &"apt-get install -s -y --no-install-recommends software-properties-common".to_owned()
    ));
    assert!(!runner.log.iter().any(|line| line == "apt-get update"));
}

/// Which token of a grub file a guard finds.
#[track_caller]
fn check_forbidden(text: &str, expect: Expect) {
    let found = apply::find_forbidden(text, &forbidden_words(Tee::Snp));
    expect.assert_eq(&format!("{found:?}"));
}

#[test]
fn forbidden_words_in_grub_files() {
    check_forbidden(
        "GRUB_CMDLINE_LINUX_DEFAULT=\"quiet splash\"\n",
        expect!["None"],
    );
    check_forbidden(
        "GRUB_CMDLINE_LINUX=\"iommu=pt\"\n",
        expect![[r#"Some((1, "iommu=pt"))"#]],
    );
    check_forbidden("#GRUB_CMDLINE_LINUX=\"iommu=pt\"\n", expect!["None"]);
    check_forbidden(
        "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX maxcpus=8\"\n",
        expect![[r#"Some((1, "maxcpus=8"))"#]],
    );
    check_forbidden(
        "GRUB_CMDLINE_LINUX='amd_iommu=pgtbl_v2'\n",
        expect![[r#"Some((1, "amd_iommu=pgtbl_v2"))"#]],
    );
    check_forbidden("GRUB_CMDLINE_LINUX=\"iommu=ptx\"\n", expect!["None"]);
    check_forbidden(
        "GRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX=\"nosmt\"\n",
        expect![[r#"Some((2, "nosmt"))"#]],
    );
}

#[test]
fn timestamps() {
    use std::time::{Duration, UNIX_EPOCH};
    let at = |seconds: u64| apply::utc_timestamp(UNIX_EPOCH + Duration::from_secs(seconds));
    assert_eq!(at(0), "19700101T000000Z");
    assert_eq!(at(1_700_000_000), "20231114T221320Z");
    assert_eq!(at(1_709_208_000), "20240229T120000Z");
    assert_eq!(at(1_798_761_599), "20261231T235959Z");
}

#[test]
fn a_model_expecting_another_release_gets_a_note() {
    let mut model = cvm_core::model::Model::default_model();
    model.host.release = Some("25.10".to_owned());
    let request = PlanRequest::from_model(&model, Release::Resolute, None, false);
    let plan = super::plan(&request).unwrap();
    expect!["The model's host.release is 25.10, but this plan is for 26.04: `host check` will flag the difference."]
        .assert_eq(&plan.notes[0]);
    let request = PlanRequest::from_model(&model, Release::Questing, None, false);
    assert!(super::plan(&request).unwrap().notes.is_empty());
}
