//! The image pipeline end to end: one default image is built (once, shared by every test here)
//! with the real tools, then checked, audited, booted under QEMU (disk and direct UKI boot),
//! tampered with, and rebuilt without cache to prove the build is reproducible.

use std::{
    fs,
    io::{Read, Seek, SeekFrom, Write},
    path::{Path, PathBuf},
    sync::{Mutex, OnceLock},
    time::Duration,
};

use cvm_core::{cmd::Cmd, deps::InstallPolicy};
use guest_image::image::{self, boot, disk, uki};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("guest-image is one level below the workspace")
        .to_path_buf()
}

fn test_dir() -> PathBuf {
    workspace().join("target/cvm-test")
}

struct Built {
    out: PathBuf,
}

/// Builds the default image once for all tests; `None` (after a loud skip) when the archive or
/// the tools are not available here.
fn built(test: &str) -> Option<&'static Built> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let requirements: Vec<&str> = image::BUILD_REQUIREMENTS
            .iter()
            .chain(image::BOOT_REQUIREMENTS)
            .copied()
            .collect();
        if let Err(err) = cvm_core::deps::ensure(&requirements, InstallPolicy::Refuse) {
            return Err(format!("{err:#}"));
        }
        build_into(&test_dir().join("cvm-base"), false).map_err(|err| format!("{err:#}"))
    });
    match result {
        Ok(built) => Some(built),
        Err(reason)
            if reason.contains("unreachable") || reason.contains("missing host packages") =>
        {
            cvm_core::skip::skip(
                test,
                &format!("cannot build the default image here: {reason}"),
            );
            None
        }
        Err(reason) => panic!("building the default image failed: {reason}"),
    }
}

fn build_into(out: &Path, no_cache: bool) -> anyhow::Result<Built> {
    build_with(out, no_cache, false)
}

fn build_with(out: &Path, no_cache: bool, offline: bool) -> anyhow::Result<Built> {
    let model = cvm_core::model::load(None)?;
    let cvm_status = image::build_cvm_status(&workspace())?;
    let report = image::build(
        &model,
        image::BuildOptions {
            out: out.to_path_buf(),
            cache: workspace().join("target/cvm-cache"),
            lock_path: test_dir().join("cvm-base.packages.lock"),
            locked: false,
            no_cache,
            offline,
            cvm_status,
            lock_only: false,
        },
    )?;
    image::print_report(&report);
    Ok(Built { out: report.out })
}

/// QEMU boots run one at a time: the machine has two cores.
static BOOTS: Mutex<()> = Mutex::new(());

fn boot_it(artifacts: &Path, disk: PathBuf, mode: boot::BootMode, name: &str) -> boot::BootOutcome {
    let _guard = BOOTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let outcome = boot::boot(&boot::BootRequest {
        artifacts,
        disk,
        mode,
        kvm: false,
        timeout: Duration::from_secs(400),
        serial_log: test_dir().join(format!("serial-{name}.log")),
    })
    .expect("QEMU starts");
    eprintln!(
        "{name}: {:.1}s, failure: {:?}, status: {:?}",
        outcome.seconds, outcome.failure, outcome.status
    );
    outcome
}

#[test]
fn built_disk_passes_qemu_img_check() {
    if !cvm_core::skip::require_slow("built_disk_passes_qemu_img_check") {
        return;
    }
    let Some(built) = built("built_disk_passes_qemu_img_check") else {
        return;
    };
    let output = Cmd::new("qemu-img")
        .args(["check", "-f", "qcow2"])
        .arg(built.out.join("disk.qcow2"))
        .read()
        .expect("qemu-img check passes");
    assert!(output.contains("No errors were found"), "{output}");
    for name in [
        "uki.efi",
        "disk.qcow2",
        "firmware.fd",
        "packages.lock",
        "manifest.json",
    ] {
        assert!(built.out.join(name).is_file(), "{name} is missing");
    }
    let manifest: image::manifest::Manifest =
        serde_json::from_str(&fs::read_to_string(built.out.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest.schema, 1);
    for name in ["uki.efi", "disk.qcow2", "firmware.fd", "packages.lock"] {
        let (sha256, size) = cvm_core::hash::sha256_file(&built.out.join(name)).unwrap();
        assert_eq!(manifest.artifacts[name].sha256, sha256, "{name}");
        assert_eq!(manifest.artifacts[name].size, size, "{name}");
    }
    assert!(manifest
        .packages
        .iter()
        .any(|p| p.name.starts_with("linux-image-6.17")));
}

#[test]
fn uki_has_the_standard_sections_and_the_root_hash() {
    if !cvm_core::skip::require_slow("uki_has_the_standard_sections_and_the_root_hash") {
        return;
    }
    let Some(built) = built("uki_has_the_standard_sections_and_the_root_hash") else {
        return;
    };
    let inspection = image::inspect(&built.out).unwrap();
    let names: Vec<&str> = inspection
        .uki_sections
        .iter()
        .map(|(name, _)| name.as_str())
        .collect();
    for wanted in [".osrel", ".cmdline", ".uname", ".initrd", ".linux", ".sbat"] {
        assert!(names.contains(&wanted), "{wanted} missing from {names:?}");
    }
    assert!(inspection
        .uki_cmdline
        .contains(&format!("cvm.roothash={}", inspection.manifest.roothash)));
    let bytes = fs::read(built.out.join("uki.efi")).unwrap();
    let uname = uki::section_data(&bytes, ".uname").unwrap().unwrap();
    assert_eq!(String::from_utf8_lossy(uname), inspection.manifest.kernel);
    let initrd = uki::section_data(&bytes, ".initrd").unwrap().unwrap();
    eprintln!("initrd: {:.1} MB", initrd.len() as f64 / 1e6);
}

#[test]
fn audit_reads_the_finished_disk_and_refuses_forbidden_files() {
    if !cvm_core::skip::require_slow("audit_reads_the_finished_disk_and_refuses_forbidden_files") {
        return;
    }
    let Some(built) = built("audit_reads_the_finished_disk_and_refuses_forbidden_files") else {
        return;
    };
    let work = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let problems = image::audit_qcow2(&built.out.join("disk.qcow2"), work.path()).unwrap();
    assert_eq!(problems, Vec::<String>::new());

    // A small root with a shell and a setuid file, through the same erofs → disk → qcow2 path.
    use std::os::unix::fs::PermissionsExt;
    let tree = work.path().join("bad-tree");
    fs::create_dir_all(tree.join("usr/bin")).unwrap();
    fs::write(tree.join("usr/bin/bash"), "#!").unwrap();
    fs::write(tree.join("usr/bin/helper"), "").unwrap();
    fs::set_permissions(
        tree.join("usr/bin/helper"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    let stage = work.path().join("bad-stage");
    fs::create_dir_all(&stage).unwrap();
    let root_hash = image::root_image::build(&tree, 1_700_000_000, "bad", &stage).unwrap();
    let fake_uki = stage.join("uki.efi");
    fs::write(&fake_uki, b"not booted").unwrap();
    disk::build_raw(
        &root_hash,
        &fake_uki,
        &stage.join("root.erofs"),
        &stage.join("root.verity"),
        1_700_000_000,
        &stage,
    )
    .unwrap();
    disk::to_qcow2(&stage.join("disk.raw"), &stage.join("disk.qcow2")).unwrap();
    let audit_work = work.path().join("audit");
    fs::create_dir_all(&audit_work).unwrap();
    let problems = image::audit_qcow2(&stage.join("disk.qcow2"), &audit_work).unwrap();
    assert_eq!(
        problems,
        [
            "forbidden path /usr/bin/bash",
            "setuid/setgid file /usr/bin/helper (mode 4755)"
        ]
    );
}

#[test]
fn boots_from_the_disk() {
    if !cvm_core::skip::require_slow("boots_from_the_disk") {
        return;
    }
    let Some(built) = built("boots_from_the_disk") else {
        return;
    };
    let outcome = boot_it(
        &built.out,
        built.out.join("disk.qcow2"),
        boot::BootMode::Disk,
        "disk",
    );
    assert!(
        outcome.ok(),
        "{:?}\n{}",
        outcome.failure,
        boot::log_tail(&outcome.serial_log, 30)
    );
    let status = outcome.status.unwrap();
    assert_eq!(status.tee, "none");
    assert_eq!(status.measurement, None);
}

#[test]
fn boots_the_uki_directly() {
    if !cvm_core::skip::require_slow("boots_the_uki_directly") {
        return;
    }
    let Some(built) = built("boots_the_uki_directly") else {
        return;
    };
    let outcome = boot_it(
        &built.out,
        built.out.join("disk.qcow2"),
        boot::BootMode::Direct,
        "direct",
    );
    assert!(
        outcome.ok(),
        "{:?}\n{}",
        outcome.failure,
        boot::log_tail(&outcome.serial_log, 30)
    );
}

#[test]
fn a_tampered_root_fails_with_a_dm_verity_message() {
    if !cvm_core::skip::require_slow("a_tampered_root_fails_with_a_dm_verity_message") {
        return;
    }
    let Some(built) = built("a_tampered_root_fails_with_a_dm_verity_message") else {
        return;
    };
    let work = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let raw = work.path().join("disk.raw");
    Cmd::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(built.out.join("disk.qcow2"))
        .arg(&raw)
        .run()
        .unwrap();
    {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw)
            .unwrap();
        let root = disk::read_gpt(&mut file)
            .unwrap()
            .into_iter()
            .find(|entry| entry.name == "root")
            .unwrap();
        // Byte 1024 is the erofs superblock's magic: every mount reads it.
        let at = root.offset + 1024;
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[byte[0] ^ 0xff]).unwrap();
    }
    let tampered = work.path().join("tampered.qcow2");
    disk::to_qcow2(&raw, &tampered).unwrap();
    fs::remove_file(&raw).unwrap();
    let outcome = boot_it(&built.out, tampered, boot::BootMode::Direct, "tampered");
    assert!(!outcome.ok());
    assert!(outcome.status.is_none(), "{:?}", outcome.status);
    let failure = outcome.failure.unwrap();
    assert!(
        failure.starts_with("dm-verity refused the root filesystem"),
        "{failure}"
    );
}

#[test]
fn a_second_build_without_cache_is_byte_identical() {
    if !cvm_core::skip::require_slow("a_second_build_without_cache_is_byte_identical") {
        return;
    }
    let Some(built) = built("a_second_build_without_cache_is_byte_identical") else {
        return;
    };
    let again = build_into(&test_dir().join("cvm-base-again"), true).expect("second build");
    for name in ["uki.efi", "disk.qcow2", "firmware.fd", "packages.lock"] {
        let first = cvm_core::hash::sha256_file(&built.out.join(name)).unwrap();
        let second = cvm_core::hash::sha256_file(&again.out.join(name)).unwrap();
        assert_eq!(first, second, "{name} differs between the two builds");
    }
}

#[test]
fn a_mirror_without_a_valid_signature_is_refused() {
    if !cvm_core::skip::require_slow("a_mirror_without_a_valid_signature_is_refused") {
        return;
    }
    let Some(built) = built("a_mirror_without_a_valid_signature_is_refused") else {
        return;
    };
    let lock_text = fs::read_to_string(built.out.join("packages.lock")).unwrap();
    let lock = image::lock::PackagesLock::parse(&lock_text, Path::new("packages.lock")).unwrap();
    let work = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let repo = work.path().join("repo");
    let deb_cache = workspace().join("target/cvm-cache/debs");
    image::local_repo::write(&lock, &deb_cache, &repo).unwrap();
    image::local_repo::write_unsigned_suite_layout(&repo, &lock.suite).unwrap();
    let mut model = cvm_core::model::load(None).unwrap().model;
    model.guest.mirror = Some(format!("file://{}", repo.display()));
    let stage = work.path().join("stage");
    fs::create_dir_all(&stage).unwrap();
    let cvm_status = image::build_cvm_status(&workspace()).unwrap();
    let err = image::rootfs::build(
        &model,
        &image::rootfs::RootfsInputs {
            cvm_status: &cvm_status,
            lock: Some(&lock),
            deb_cache: &work.path().join("debs"),
            offline_repo: None,
            extra_files: &[],
        },
        &stage,
    )
    .expect_err("apt must refuse an unsigned mirror");
    let text = format!("{err:#}");
    assert!(
        text.contains("signature could not be verified") && text.contains("is not signed"),
        "{text}"
    );
}

/// Set (to the shared image's directory) when this test binary runs itself inside an empty
/// network namespace for [`an_offline_build_needs_no_network`].
const OFFLINE_INNER_ENV: &str = "CVM_TEST_OFFLINE_INNER";

#[test]
fn an_offline_build_needs_no_network() {
    if !cvm_core::skip::require_slow("an_offline_build_needs_no_network") {
        return;
    }
    let Some(built) = built("an_offline_build_needs_no_network") else {
        return;
    };
    if cvm_core::deps::find_tool("unshare").is_none() {
        cvm_core::skip::skip("an_offline_build_needs_no_network", "no unshare(1) here");
        return;
    }
    // The same test binary, inside a network namespace with no interface but lo (down).
    let output = Cmd::new("unshare")
        .arg("--net")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "image::offline_build_inside_the_namespace",
            "--nocapture",
        ])
        .env(OFFLINE_INNER_ENV, &built.out)
        .env(cvm_core::skip::SLOW_TESTS_ENV, "1")
        .timeout(Duration::from_secs(900))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "offline build failed:\n{stdout}\n{stderr}"
    );
}

/// The inner half of [`an_offline_build_needs_no_network`]: a `--offline --no-cache` build from
/// the lock and the package cache must give the same UKI and disk as the online build.
#[test]
fn offline_build_inside_the_namespace() {
    let Some(online) = std::env::var_os(OFFLINE_INNER_ENV).map(PathBuf::from) else {
        cvm_core::skip::skip(
            "offline_build_inside_the_namespace",
            "runs only inside an_offline_build_needs_no_network's empty network namespace",
        );
        return;
    };
    // Prove there is no network here: /proc/net/dev lists only the loopback interface.
    let interfaces = fs::read_to_string("/proc/net/dev").unwrap();
    assert_eq!(interfaces.lines().count(), 3, "{interfaces}");
    let offline =
        build_with(&test_dir().join("cvm-base-offline"), true, true).expect("offline build");
    for name in ["uki.efi", "disk.qcow2", "packages.lock"] {
        let first = cvm_core::hash::sha256_file(&online.join(name)).unwrap();
        let second = cvm_core::hash::sha256_file(&offline.out.join(name)).unwrap();
        assert_eq!(
            first, second,
            "{name} differs between the online and the offline build"
        );
    }
}
