//! `host apply` for real inside a throwaway Ubuntu 24.04 root made with mmdebstrap (slow suite):
//! file steps are written, package steps are resolved with apt's simulation, the second apply
//! changes nothing, and the steps that need a download stop with a clear message.

use std::{
    fs,
    path::{Path, PathBuf},
};

use cvm_core::{cmd::Cmd, deps::find_tool, model::Model, skip::skip};
use host_setup::provision::{
    self,
    apply::{self, ApplyOptions, ApplyReport, ChrootRunner, Outcome, PackageMode},
    Action, Plan, PlanRequest, Release,
};

/// What apt, mmdebstrap or curl print when the archive cannot be reached.
const NETWORK_ERRORS: [&str; 6] = [
    "Failed to fetch",
    "Could not resolve",
    "Temporary failure resolving",
    "Unable to connect",
    "Could not connect",
    "Network is unreachable",
];

/// Makes an Ubuntu noble root (variant apt, main and universe, package lists kept so apt can
/// simulate) in `dir`, or says why it cannot.
fn noble_root(test: &str, dir: &Path) -> Option<PathBuf> {
    if !cvm_core::deps::is_root() {
        skip(test, "needs root (mmdebstrap in root mode, chroot)");
        return None;
    }
    let Some(mmdebstrap) = find_tool("mmdebstrap") else {
        skip(
            test,
            "mmdebstrap is not installed (cargo xtask ci installs it)",
        );
        return None;
    };
    if !Path::new("/usr/share/keyrings/ubuntu-archive-keyring.gpg").exists() {
        skip(test, "the Ubuntu archive keyring is not installed (package ubuntu-keyring; cargo xtask ci installs it)");
        return None;
    }
    let root = dir.join("noble");
    // The mirror is mmdebstrap's own default for the suite.
    let output = Cmd::new(mmdebstrap)
        .args([
            "--variant=apt",
            "--components=main,universe",
            "--skip=cleanup/apt/lists",
            "noble",
        ])
        .arg(&root)
        .output()
        .expect("running mmdebstrap");
    if !output.status.success() {
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if NETWORK_ERRORS.iter().any(|error| text.contains(error)) {
            let line = text
                .lines()
                .find(|line| NETWORK_ERRORS.iter().any(|error| line.contains(error)))
                .unwrap_or_default();
            skip(test, &format!("the Ubuntu archive is unreachable: {line}"));
            return None;
        }
        panic!("mmdebstrap failed:\n{text}");
    }
    // A --variant=apt root has no boot loader and no initramfs-tools: stand-ins record that the
    // plan ran them (once per input change), as the real tools would be run.
    for tool in ["update-grub", "update-initramfs"] {
        let path = root.join("usr/local/sbin").join(tool);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(
            &path,
            "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> /var/log/cvm-stack-test-stand-ins\n",
        )
        .unwrap();
        let mut permissions = fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        fs::set_permissions(&path, permissions).unwrap();
    }
    Some(root)
}

fn model(fixture: Option<&str>) -> Model {
    let path = fixture.map(|name| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/provision/models")
            .join(name)
    });
    cvm_core::model::load(path.as_deref()).unwrap().model
}

fn plan_for_root(root: &Path, model: &Model) -> Plan {
    let release = provision::read_release(&root.join("etc/os-release")).unwrap();
    assert_eq!(release, Release::Noble);
    provision::plan(&PlanRequest::from_model(model, release, None, false)).unwrap()
}

fn apply(root: &Path, plan: &Plan, timestamp: &str) -> ApplyReport {
    let options = ApplyOptions {
        root: root.to_owned(),
        packages: PackageMode::Simulate,
        timestamp: timestamp.to_owned(),
    };
    let report = apply::apply(plan, &options, &mut ChrootRunner).unwrap();
    eprintln!("{}", report.render());
    report
}

fn outcome(report: &ApplyReport, id: &str) -> Outcome {
    report
        .steps
        .iter()
        .find(|step| step.id == id)
        .unwrap_or_else(|| panic!("step {id} not reached:\n{}", report.render()))
        .outcome
}

/// Every file below the parts of the root the plan may touch, with its contents.
fn tree(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["etc", "usr/local", "var/lib/cvm-stack", "var/log", "boot"] {
        for entry in walkdir::WalkDir::new(root.join(dir))
            .into_iter()
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_file())
        {
            let relative = entry
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string();
            files.push((relative, fs::read(entry.path()).unwrap()));
        }
    }
    files.sort();
    files
}

fn stand_in_calls(root: &Path) -> String {
    fs::read_to_string(root.join("var/log/cvm-stack-test-stand-ins"))
        .unwrap_or_default()
        .lines()
        .map(|line| format!("{}\n", line.trim_end()))
        .collect()
}

#[test]
fn apply_in_a_noble_root() {
    let test = "provision::apply_in_a_noble_root";
    if !cvm_core::skip::require_slow(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = noble_root(test, dir.path()) else {
        return;
    };

    // SEV-SNP (the embedded default model): the 24.04 source-build path.
    let plan = plan_for_root(&root, &model(None));
    let first = apply(&root, &plan, "20260101T000000Z");
    for step in &plan.steps {
        if let Action::WriteFile { path, contents, .. } = &step.action {
            let written = fs::read_to_string(root.join(path.trim_start_matches('/')))
                .unwrap_or_else(|err| panic!("{path} of step {} not written: {err}", step.id));
            assert_eq!(&written, contents, "{path}");
            assert_eq!(outcome(&first, &step.id), Outcome::Applied, "{}", step.id);
        }
    }
    assert_eq!(
        outcome(&first, "kernel.forbidden-words"),
        Outcome::AlreadyDone
    );
    assert_eq!(
        stand_in_calls(&root),
        "update-initramfs -u -k all\nupdate-grub\n"
    );
    let build_deps = first
        .steps
        .iter()
        .find(|step| step.id == "packages.build-deps")
        .unwrap();
    assert_eq!(build_deps.outcome, Outcome::Simulated);
    let resolved: usize = build_deps
        .detail
        .split_whitespace()
        .nth(3)
        .and_then(|count| count.parse().ok())
        .unwrap_or(0);
    assert!(
        resolved > 20,
        "apt resolved too little: {}",
        build_deps.detail
    );
    let failed = first.failure().expect("the source build stops");
    assert_eq!(failed.id, "snp.build");
    assert!(
        failed.detail.contains("this step downloads linux v6.17")
            && failed.detail.contains("packages were only simulated"),
        "{}",
        failed.detail
    );
    assert!(first.backups.is_empty(), "{:?}", first.backups);

    // The second apply changes nothing.
    let before = tree(&root);
    let second = apply(&root, &plan, "20260101T000100Z");
    assert!(!second.changed_anything(), "{}", second.render());
    for step in &second.steps {
        let expected = match step.id.as_str() {
            id if id.starts_with("bios.") => Outcome::Manual,
            "packages.build-deps" => Outcome::Simulated,
            "snp.build" => Outcome::Failed,
            _ => Outcome::AlreadyDone,
        };
        assert_eq!(step.outcome, expected, "{}", step.id);
    }
    assert_eq!(tree(&root), before, "the second apply changed files");

    // TDX on the same root: the PPA path. The changed kernel command line is backed up, the
    // pinning files are written, and adding the PPA stops at its download.
    let plan = plan_for_root(&root, &model(Some("tdx-gpus-0.toml")));
    let third = apply(&root, &plan, "20260101T000200Z");
    assert!(third.backups.contains(
        &"/etc/default/grub.d/90-cvm-stack.cfg.cvm-stack-backup-20260101T000200Z".to_owned()
    ));
    let backup = fs::read_to_string(
        root.join("etc/default/grub.d/90-cvm-stack.cfg.cvm-stack-backup-20260101T000200Z"),
    )
    .unwrap();
    assert!(backup.contains("kvm_amd.sev_snp=1"), "{backup}");
    assert_eq!(outcome(&third, "tdx.ppa-tools"), Outcome::Simulated);
    assert_eq!(outcome(&third, "tdx.ppa-pin"), Outcome::Applied);
    assert_eq!(
        outcome(&third, "tdx.ppa-unattended-upgrades"),
        Outcome::Applied
    );
    let failed = third.failure().expect("adding the PPA stops");
    assert_eq!(failed.id, "tdx.ppa");
    assert!(
        failed.detail.contains("ppa:kobuk-team/tdx-release"),
        "{}",
        failed.detail
    );
    assert_eq!(
        stand_in_calls(&root),
        "update-initramfs -u -k all\nupdate-grub\nupdate-initramfs -u -k all\nupdate-grub\n"
    );
}
