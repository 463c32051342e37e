//! The profile checks over the passing XE7745 bundle and one failing variant per profile row, each
//! variant a line of data: file edits, then exactly the checks that must not pass.

use std::path::{Path, PathBuf};

use cvm_core::check::{CheckResult, Status};
use expect_test::expect_file;

use crate::{
    node_facts::{Bundle, NodeFacts},
    profile,
};

use Edit::*;
use Status::{Fail, Skip, Warn};

/// One edit of the passing bundle.
enum Edit {
    /// Replaces every occurrence (at least one) of `from` in a bundle file.
    Replace(&'static str, &'static str, &'static str),
    /// Drops a device (its line and detail lines) from `cmd/lspci`.
    DropPci(&'static str),
    /// Removes a path and lists it in facts.json `absent` (the host does not have it).
    MarkAbsent(&'static str),
    /// Removes a path without saying so (not collected).
    Remove(&'static str),
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/xe7745")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            // sysfs links are relative and point outside the bundle: copy the link itself.
            std::os::unix::fs::symlink(std::fs::read_link(entry.path()).unwrap(), target).unwrap();
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[track_caller]
fn apply(bundle: &Path, edit: &Edit) {
    match *edit {
        Replace(file, from, to) => {
            let path = bundle.join(file);
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(text.contains(from), "{from:?} is not in {file}");
            std::fs::write(&path, text.replace(from, to)).unwrap();
        }
        DropPci(address) => {
            let path = bundle.join("cmd/lspci");
            let text = std::fs::read_to_string(&path).unwrap();
            let mut kept = String::new();
            let mut dropping = false;
            for line in text.lines() {
                if !line.starts_with('\t') {
                    dropping = line.starts_with(address);
                }
                if !dropping {
                    kept.push_str(line);
                    kept.push('\n');
                }
            }
            assert_ne!(kept, text, "{address} is not in cmd/lspci");
            std::fs::write(&path, kept).unwrap();
        }
        MarkAbsent(relative) => {
            apply(bundle, &Remove(relative));
            let path = bundle.join("facts.json");
            let mut facts: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            facts["absent"]
                .as_array_mut()
                .unwrap()
                .push(relative.into());
            std::fs::write(&path, facts.to_string()).unwrap();
        }
        Remove(relative) => {
            let path = bundle.join(relative);
            if path.is_dir() {
                std::fs::remove_dir_all(&path).unwrap();
            } else {
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}

fn evaluate(edits: &[Edit]) -> Vec<CheckResult> {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("bundle");
    copy_dir(&fixture(), &bundle);
    for edit in edits {
        apply(&bundle, edit);
    }
    let profile = profile::load("xe7745").unwrap();
    super::evaluate(&profile, &NodeFacts::new(&Bundle::open(&bundle).unwrap()))
}

/// Applies `edits` and asserts that exactly the checks in `expect` do not pass, with those statuses.
#[track_caller]
fn check(edits: &[Edit], expect: &[(&str, Status)]) {
    let results = evaluate(edits);
    let not_passing: Vec<(&str, Status)> = results
        .iter()
        .filter(|result| result.status != Status::Pass)
        .map(|result| (result.id.as_str(), result.status))
        .collect();
    assert_eq!(
        not_passing,
        expect,
        "\n{}",
        results
            .iter()
            .map(|result| format!("{} {} {}", result.status.as_str(), result.id, result.detail))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

const GPU_7: &str = "0000:e1:00.0";

#[test]
fn passing_bundle_passes_every_row() {
    let results = evaluate(&[]);
    let table: String = results
        .iter()
        .map(|result| {
            format!(
                "{} {}: {}\n",
                result.status.as_str(),
                result.id,
                result.detail
            )
        })
        .collect();
    expect_file!["../../tests/data/xe7745.passing.txt"].assert_eq(&table);
    check(&[], &[]);
    assert_eq!(results.len(), 16, "one check per profile row");
}

#[test]
fn wrong_platform() {
    check(
        &[Replace(
            "cmd/dmidecode",
            "Product Name: PowerEdge XE7745",
            "Product Name: PowerEdge R7725",
        )],
        &[("xe7745.platform", Fail)],
    );
}

#[test]
fn legacy_bios_boot() {
    check(
        &[MarkAbsent("root/sys/firmware/efi")],
        &[("xe7745.boot-mode", Fail)],
    );
}

#[test]
fn wrong_cpu_model() {
    check(
        &[Replace(
            "cmd/lscpu",
            "AMD EPYC 9555 64-Core Processor\n",
            "AMD EPYC 9554 64-Core Processor\n",
        )],
        &[("xe7745.cpu-model", Fail)],
    );
}

#[test]
fn one_socket() {
    check(
        &[
            Replace(
                "cmd/lscpu",
                "Socket(s):                               2",
                "Socket(s):                               1",
            ),
            Replace(
                "cmd/lscpu",
                "CPU(s):                                  256",
                "CPU(s):                                  128",
            ),
        ],
        &[("xe7745.cpu-topology", Fail)],
    );
}

#[test]
fn smt_off() {
    check(
        &[
            Replace(
                "cmd/lscpu",
                "Thread(s) per core:                      2",
                "Thread(s) per core:                      1",
            ),
            Replace(
                "cmd/lscpu",
                "CPU(s):                                  256",
                "CPU(s):                                  128",
            ),
        ],
        &[("xe7745.cpu-topology", Fail)],
    );
}

#[test]
fn snp_off_in_kvm() {
    check(
        &[Replace(
            "root/sys/module/kvm_amd/parameters/sev_snp",
            "Y",
            "N",
        )],
        &[("xe7745.cpu-tee", Fail)],
    );
}

#[test]
fn kernel_without_snp_host_support() {
    check(
        &[MarkAbsent("root/sys/module/kvm_amd/parameters/sev_snp")],
        &[("xe7745.cpu-tee", Fail)],
    );
}

#[test]
fn snp_off_in_firmware() {
    // The kernel leaves the cpuinfo flag out when the BIOS did not enable SNP.
    check(
        &[Replace("root/proc/cpuinfo", " sev_snp", "")],
        &[("xe7745.cpu-tee", Fail)],
    );
}

#[test]
fn seven_gpus() {
    check(&[DropPci(GPU_7)], &[("xe7745.gpus", Fail)]);
}

#[test]
fn gpu_on_nvidia_driver() {
    check(
        &[Replace(
            "cmd/lspci",
            "[10de:2bb5] (rev a1)\n\tSubsystem: NVIDIA Corporation Device [10de:204e]\n\tKernel driver in use: vfio-pci\n\tKernel modules: nvidiafb, nouveau\n0000:c5",
            "[10de:2bb5] (rev a1)\n\tSubsystem: NVIDIA Corporation Device [10de:204e]\n\tKernel driver in use: nvidia\n\tKernel modules: nvidiafb, nouveau, nvidia\n0000:c5",
        )],
        &[("xe7745.gpu-driver", Fail)],
    );
}

#[test]
fn memory_five_percent_short() {
    check(
        &[Replace(
            "root/proc/meminfo",
            "MemTotal:       1584623660 kB",
            "MemTotal:       1505392477 kB",
        )],
        &[("xe7745.memory", Fail)],
    );
}

#[test]
fn memory_within_one_percent() {
    check(
        &[Replace(
            "root/proc/meminfo",
            "MemTotal:       1584623660 kB",
            "MemTotal:       1571000000 kB",
        )],
        &[],
    );
}

#[test]
fn no_nvme() {
    check(
        &[
            DropPci("0000:06:00.0"),
            DropPci("0000:07:00.0"),
            DropPci("0000:86:00.0"),
            DropPci("0000:87:00.0"),
        ],
        &[("xe7745.storage", Fail)],
    );
}

#[test]
fn bluefield3_missing() {
    check(
        &[
            DropPci("0000:4a:00.0"),
            DropPci("0000:4a:00.1"),
            DropPci("0000:4a:00.2"),
        ],
        &[("xe7745.nic-bluefield3", Fail)],
    );
}

#[test]
fn connectx6lx_missing() {
    check(
        &[DropPci("0000:6a:00.0"), DropPci("0000:6a:00.1")],
        &[("xe7745.nic-connectx6lx", Fail)],
    );
}

#[test]
fn three_connectx7() {
    check(
        &[DropPci("0000:c6:00.0")],
        &[("xe7745.nic-connectx7", Fail)],
    );
}

#[test]
fn one_port_of_a_dual_port_adapter_is_still_one_adapter() {
    check(&[DropPci("0000:6a:00.1")], &[]);
}

#[test]
fn host_ubuntu_24_04() {
    check(
        &[Replace(
            "root/etc/os-release",
            "VERSION_ID=\"25.10\"",
            "VERSION_ID=\"24.04\"",
        )],
        &[("xe7745.host-os", Fail)],
    );
}

#[test]
fn old_host_kernel() {
    check(
        &[Replace(
            "cmd/uname-r",
            "6.14.0-37-generic",
            "6.8.0-60-generic",
        )],
        &[("xe7745.host-kernel", Fail)],
    );
}

#[test]
fn newer_host_kernel_warns() {
    check(
        &[Replace(
            "cmd/uname-r",
            "6.14.0-37-generic",
            "6.17.0-5-generic",
        )],
        &[("xe7745.host-kernel", Warn)],
    );
}

#[test]
fn qemu_8_2() {
    check(
        &[Replace(
            "cmd/qemu-version",
            "9.2.1 (Debian 1:9.2.1+ds-1ubuntu5)",
            "8.2.2 (Debian 1:8.2.2+ds-0ubuntu1.7)",
        )],
        &[("xe7745.qemu", Fail)],
    );
}

#[test]
fn newer_qemu_warns() {
    check(
        &[Replace(
            "cmd/qemu-version",
            "9.2.1 (Debian 1:9.2.1+ds-1ubuntu5)",
            "10.1.0 (Debian 1:10.1.0+ds-5ubuntu2)",
        )],
        &[("xe7745.qemu", Warn)],
    );
}

#[test]
fn ovmf_missing() {
    check(
        &[MarkAbsent("root/usr/share/ovmf/OVMF.amdsev.fd")],
        &[("xe7745.ovmf", Fail)],
    );
}

#[test]
fn not_collected_facts_skip_never_guess() {
    check(
        &[Remove("cmd/lspci"), Remove("cmd/qemu-version")],
        &[
            ("xe7745.gpus", Skip),
            ("xe7745.gpu-driver", Skip),
            ("xe7745.storage", Skip),
            ("xe7745.nic-bluefield3", Skip),
            ("xe7745.nic-connectx6lx", Skip),
            ("xe7745.nic-connectx7", Skip),
            ("xe7745.qemu", Skip),
        ],
    );
}

#[test]
fn skip_reason_names_the_missing_file() {
    let results = evaluate(&[Remove("cmd/uname-r")]);
    let kernel = results
        .iter()
        .find(|result| result.id == "xe7745.host-kernel")
        .unwrap();
    assert_eq!(kernel.status, Skip);
    assert_eq!(kernel.detail, "cmd/uname-r was not collected");
}
