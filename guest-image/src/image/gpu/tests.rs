//! Tests of the gpu profile's pure parts over the fixtures in guest-image/tests/data/image/gpu/.

use std::path::{Path, PathBuf};

use expect_test::expect_file;

use super::*;

fn data(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/image/gpu")
        .join(relative)
}

fn read(relative: &str) -> String {
    fs::read_to_string(data(relative)).expect("fixture exists")
}

fn gpu_model() -> Model {
    cvm_core::model::load(Some(&data("model.toml")))
        .expect("the fixture model loads")
        .model
}

#[test]
fn package_names_follow_the_driver_branch_and_the_kernel_release() {
    assert_eq!(
        module_package("580-server", "6.17.0-42-generic"),
        "linux-modules-nvidia-580-server-open-6.17.0-42-generic"
    );
    assert_eq!(
        user_packages("580-server"),
        [
            "nvidia-utils-580-server",
            "libnvidia-compute-580-server",
            "nvidia-compute-utils-580-server"
        ]
    );
    // The hook reads the release from the tree instead of typing an ABI.
    let hook = install_hook("580-server");
    assert!(hook.contains("kver=$(ls \"$1/usr/lib/modules\")"), "{hook}");
    assert!(
        hook.contains("linux-modules-nvidia-580-server-open-$kver"),
        "{hook}"
    );
    assert!(hook.contains("--no-install-recommends"), "{hook}");
    // The host's apt only downloads; dpkg runs in the chroot, never on the host's root.
    // (Inside, with the downloaded packages only: offline builds have no archive there.)
    let (outside, inside) = hook
        .split_once(
            "; chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-download",
        )
        .unwrap();
    assert!(outside.contains("MMDEBSTRAP_APT_CONFIG"), "{hook}");
    assert!(outside.contains("--download-only"), "{hook}");
    assert!(!inside.contains("MMDEBSTRAP_APT_CONFIG"), "{hook}");
}

#[test]
fn a_real_signed_module_passes_for_its_kernel_only() {
    let module = fs::read(data("nvidia-peermem.ko")).unwrap();
    assert_eq!(module_problem(&module, "6.17.0-42-generic"), None);
    let other = module_problem(&module, "6.17.0-41-generic").unwrap();
    assert!(other.contains("another kernel"), "{other}");
    // Without its signature the same module is refused.
    let magic = b"~Module signature appended~\n";
    let unsigned = &module[..module.len() - magic.len() - 700];
    let problem = module_problem(unsigned, "6.17.0-42-generic").unwrap();
    assert!(problem.contains("not signed"), "{problem}");
    // A signature trailer with a non-PKCS#7 id type is refused.
    let mut forged = module.clone();
    let info = forged.len() - magic.len() - 12;
    forged[info + 2] = 0;
    let problem = module_problem(&forged, "6.17.0-42-generic").unwrap();
    assert!(problem.contains("malformed"), "{problem}");
}

#[test]
fn the_module_audit_requires_nvidia_and_uvm_signed_for_the_kernel() {
    let root = tempfile::tempdir().unwrap();
    let dir = root
        .path()
        .join("usr/lib/modules/6.17.0-42-generic/kernel/nvidia-580srv-open");
    fs::create_dir_all(&dir).unwrap();
    let module = fs::read(data("nvidia-peermem.ko")).unwrap();
    fs::write(dir.join("nvidia.ko"), &module).unwrap();
    let problems = audit_modules(root.path(), "6.17.0-42-generic").unwrap();
    assert_eq!(
        problems,
        ["the NVIDIA module nvidia-uvm.ko for kernel 6.17.0-42-generic is missing"]
    );
    fs::write(dir.join("nvidia-uvm.ko"), &module[..module.len() - 10]).unwrap();
    let problems = audit_modules(root.path(), "6.17.0-42-generic").unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("nvidia-uvm.ko is not signed"),
        "{problems:?}"
    );
    fs::write(dir.join("nvidia-uvm.ko"), &module).unwrap();
    assert!(audit_modules(root.path(), "6.17.0-42-generic")
        .unwrap()
        .is_empty());
    // The same tree audited for another kernel has no modules for it.
    assert_eq!(
        audit_modules(root.path(), "6.17.0-43-generic")
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn gpu_cc_is_na_without_a_gpu_and_explicit_otherwise() {
    let never = || -> Result<String> { panic!("nvidia-smi must not run without a GPU") };
    assert_eq!(gpu_cc(&data("sysfs-none"), never), "n/a");
    assert_eq!(
        gpu_cc(&data("sysfs-nodriver"), never),
        "error: an NVIDIA GPU is present but the nvidia driver is not loaded"
    );
    let on = read("conf-compute-on.txt");
    assert_eq!(gpu_cc(&data("sysfs-gpu"), || Ok(on)), "on");
    assert_eq!(parse_conf_compute(&read("conf-compute-off.txt")), "off");
    assert_eq!(
        parse_conf_compute(&read("conf-compute-none.txt")),
        "error: nvidia-smi conf-compute -f printed no CC status (No CC capable devices found.)"
    );
    let failed = gpu_cc(&data("sysfs-gpu"), || anyhow::bail!("exit status 6"));
    assert_eq!(
        failed,
        "error: nvidia-smi conf-compute -f failed: exit status 6"
    );
}

#[test]
fn an_unmet_module_dependency_is_explained() {
    let why = explain_unmet(&read("apt-unmet.txt"), "580-server").unwrap();
    assert!(
        why.contains("linux-modules-nvidia-580-server-open-6.17.0-42-generic depends on nvidia-kernel-common-580-server (<= 580.173.02-1) but 580.178.04-0ubuntu0.24.04.1 is to be installed"),
        "{why}"
    );
    assert!(why.contains("guest.kernel"), "{why}");
    // The same report inside a command error, whose stderr tail is joined with " | ", and which
    // also quotes the hook's own command line.
    let joined = format!(
        "stage rootfs: `sh -c apt-get install linux-modules-nvidia-580-server-open-$kver` failed: {}",
        read("apt-unmet.txt").lines().collect::<Vec<_>>().join(" | ")
    );
    assert_eq!(
        explain_unmet(&joined, "580-server").as_deref(),
        Some(why.as_str())
    );
    assert_eq!(explain_unmet("E: Failed to fetch", "580-server"), None);
    assert_eq!(explain_unmet(&read("apt-unmet.txt"), "595"), None);
}

#[test]
fn guest_files_are_rendered_from_the_model() {
    let model = gpu_model();
    let rendered: String = guest_files(&model)
        .iter()
        .map(|f| format!("==> {} ({:o})\n{}", f.path, f.mode, f.contents))
        .collect();
    expect_file!["../../../tests/data/image/gpu/rendered.txt"].assert_eq(&rendered);
    // Without attestation gating the ready unit is wanted directly and no path unit exists.
    let mut direct = model.clone();
    direct.guest.gpu.ready_after_attestation = false;
    direct.guest.gpu.attestation_tool = None;
    assert_eq!(wanted_units(&direct), ["cvm-gpu-ready.service"]);
    let files = guest_files(&direct);
    assert!(files.iter().all(|f| !f.path.ends_with(".path")));
    assert!(files.iter().all(|f| !f.path.contains("attest.service")));
}

#[test]
fn gpu_lists_extend_the_base_lists() {
    use cvm_core::model::Profile;
    let (purge, remove, forbidden) = super::super::harden::lists(Profile::Base);
    let (gpu_purge, gpu_remove, gpu_forbidden) = super::super::harden::lists(Profile::Gpu);
    assert!(gpu_purge.starts_with(&purge) && gpu_purge.contains(&"ocl-icd-libopencl1"));
    assert!(gpu_remove.starts_with(&remove) && gpu_remove.len() > remove.len());
    assert!(gpu_forbidden.starts_with(&forbidden));
    assert!(gpu_forbidden.contains(&"usr/lib/x86_64-linux-gnu/libnvidia-gl*"));
    // The audit of a gpu tree refuses a graphics ICD that the base audit would not notice.
    let root = tempfile::tempdir().unwrap();
    let icd = root.path().join("etc/OpenCL/vendors");
    fs::create_dir_all(&icd).unwrap();
    fs::write(icd.join("nvidia.icd"), "libnvidia-opencl.so.1\n").unwrap();
    // (The tree has no kernel modules, which both audits also report; only paths matter here.)
    let paths = |profile| -> Vec<String> {
        super::super::harden::audit_tree_for(root.path(), profile)
            .unwrap()
            .into_iter()
            .filter(|problem| problem.starts_with("forbidden path"))
            .collect()
    };
    assert!(paths(Profile::Base).is_empty());
    assert_eq!(paths(Profile::Gpu), ["forbidden path /etc/OpenCL"]);
}
