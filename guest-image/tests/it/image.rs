//! The image pipeline end to end: one default image is built (once, shared by every test here)
//! with the real tools, then checked, audited, booted under QEMU (disk and direct UKI boot),
//! tampered with, and rebuilt without cache to prove the build is reproducible.
//!
//! When the Ubuntu archive is unreachable, the tests say so loudly (a skip line ci lists) and use
//! the same pipeline built from Debian trixie instead ([`image::Distro::DebianTrixie`]). One test
//! always builds and boots that fallback, so its code runs in CI where Ubuntu is reachable.

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

/// Which distribution a test image is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The default model's Ubuntu noble: the product.
    Ubuntu,
    /// The Debian trixie fallback.
    Trixie,
}

impl Source {
    /// The name of the output directory and lock under target/cvm-test.
    fn name(self) -> &'static str {
        match self {
            Source::Ubuntu => "cvm-base",
            Source::Trixie => "cvm-trixie",
        }
    }

    fn from_name(name: &str) -> Source {
        if name == Source::Trixie.name() {
            Source::Trixie
        } else {
            Source::Ubuntu
        }
    }

    /// The kernel release series the image must carry.
    fn kernel_series(self) -> &'static str {
        match self {
            Source::Ubuntu => "linux-image-6.17",
            Source::Trixie => "linux-image-6.12",
        }
    }
}

/// The AmdSev firmware of the trixie fallback (Debian ships none): Ubuntu noble's
/// OVMF.amdsev.fd from shared/test-data/firmware (its README gives the sha256).
const FALLBACK_FIRMWARE: &str = "ovmf-noble-2024.02-2ubuntu0.10-OVMF.amdsev.fd";
const FALLBACK_FIRMWARE_SHA256: &str =
    "a50b4bca32ad9c040702d11b9b1dab221324eda84281e853ed6a013ee84bee9d";

/// The library's distribution for `source`; `mirror` replaces the archive (the signature tests).
fn distro(source: Source, mirror: Option<String>) -> anyhow::Result<image::Distro> {
    Ok(match source {
        Source::Ubuntu => image::Distro::Ubuntu,
        Source::Trixie => {
            let dir = guest_image::measure::reference::test_firmware_dir(&workspace()).ok_or_else(
                || {
                    anyhow::anyhow!(
                        "missing test data: no shared/test-data/firmware beside the workspace"
                    )
                },
            )?;
            image::Distro::DebianTrixie(image::DebianFallback {
                firmware: dir.join(FALLBACK_FIRMWARE),
                firmware_sha256: FALLBACK_FIRMWARE_SHA256.to_owned(),
                mirror,
            })
        }
    })
}

#[derive(Debug, Clone)]
struct Built {
    out: PathBuf,
    source: Source,
}

/// True when a build failure means this machine cannot build here (no archive, no tools, no test
/// data) rather than a broken pipeline.
fn cannot_build_here(reason: &str) -> bool {
    reason.contains("unreachable")
        || reason.contains("missing host packages")
        || reason.contains("missing test data")
}

fn ensure_tools() -> Result<(), String> {
    let requirements: Vec<&str> = image::BUILD_REQUIREMENTS
        .iter()
        .chain(image::BOOT_REQUIREMENTS)
        .chain(&["debian-archive-keyring"])
        .copied()
        .collect();
    cvm_core::deps::ensure(&requirements, InstallPolicy::Refuse).map_err(|err| format!("{err:#}"))
}

/// The Debian trixie fallback image, built once for every test that needs it.
fn trixie_result() -> &'static Result<Built, String> {
    static TRIXIE: OnceLock<Result<Built, String>> = OnceLock::new();
    TRIXIE.get_or_init(|| {
        ensure_tools()?;
        build_into(
            &test_dir().join(Source::Trixie.name()),
            false,
            Source::Trixie,
        )
        .map_err(|err| format!("{err:#}"))
    })
}

/// Builds the default image once for all tests; when the Ubuntu archive is unreachable, says so
/// loudly and gives the Debian trixie fallback instead. `None` (after a loud skip) when neither
/// can be built here.
fn built(test: &str) -> Option<&'static Built> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        ensure_tools()?;
        match build_into(
            &test_dir().join(Source::Ubuntu.name()),
            false,
            Source::Ubuntu,
        ) {
            Ok(built) => Ok(built),
            Err(err) if format!("{err:#}").contains("unreachable") => {
                // The error up to the command line it quotes (mmdebstrap's is long).
                let text = format!("{err:#}");
                let why = text.split(": `").next().unwrap_or(&text);
                cvm_core::skip::skip(
                    "image tests on Ubuntu noble",
                    &format!(
                        "THE UBUNTU ARCHIVE IS UNREACHABLE ({why}); the image tests run on the \
                         Debian trixie fallback (linux-image-cloud-amd64, firmware from \
                         shared/test-data/firmware) instead"
                    ),
                );
                trixie_result().clone()
            }
            Err(err) => Err(format!("{err:#}")),
        }
    });
    match result {
        Ok(built) => Some(built),
        Err(reason) if cannot_build_here(reason) => {
            cvm_core::skip::skip(
                test,
                &format!("cannot build the default image here: {reason}"),
            );
            None
        }
        Err(reason) => panic!("building the default image failed: {reason}"),
    }
}

fn build_into(out: &Path, no_cache: bool, source: Source) -> anyhow::Result<Built> {
    build_with(out, no_cache, false, source)
}

/// Set to a mirror URL, replaces the Ubuntu archive of the default image: pointing it at a
/// closed port (`http://127.0.0.1:9/ubuntu`) makes the archive unreachable, to exercise the
/// trixie fallback of [`built`] on a machine where Ubuntu is reachable.
const UBUNTU_MIRROR_ENV: &str = "CVM_TEST_UBUNTU_MIRROR";

fn build_with(out: &Path, no_cache: bool, offline: bool, source: Source) -> anyhow::Result<Built> {
    let mut model = cvm_core::model::load(None)?;
    if let (Source::Ubuntu, Ok(mirror)) = (source, std::env::var(UBUNTU_MIRROR_ENV)) {
        model.model.guest.mirror = Some(mirror);
    }
    let distro = distro(source, None)?;
    let binaries = image::build_guest_binaries(&workspace(), false)?;
    let report = image::build(
        &model,
        image::BuildOptions {
            out: out.to_path_buf(),
            cache: workspace().join("target/cvm-cache"),
            lock_path: test_dir().join(format!("{}.packages.lock", source.name())),
            locked: false,
            no_cache,
            offline,
            binaries,
            lock_only: false,
            distro,
        },
    )?;
    image::print_report(&report);
    Ok(Built {
        out: report.out,
        source,
    })
}

/// QEMU boots run one at a time: the machine has two cores.
static BOOTS: Mutex<()> = Mutex::new(());

fn boot_it(artifacts: &Path, disk: PathBuf, mode: boot::BootMode, name: &str) -> boot::BootOutcome {
    let _guard = BOOTS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let model = cvm_core::model::load(None).expect("the embedded model loads");
    let outcome = boot::boot(&boot::BootRequest {
        model: &model,
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
    let series = built.source.kernel_series();
    assert!(
        manifest.packages.iter().any(|p| p.name.starts_with(series)),
        "no {series} package in the manifest"
    );
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

    // A small root with a shell, a setuid file and no kernel modules, through the same erofs →
    // disk → qcow2 path.
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
    // Nothing the guest needs is there either: every required path is named.
    let mut expected =
        vec!["expected one kernel's modules under /usr/lib/modules, found 0".to_owned()];
    expected.extend(
        image::harden::list_entries(image::harden::REQUIRED_PATHS)
            .into_iter()
            .map(|path| format!("required path /{path} is missing")),
    );
    expected.push("forbidden path /usr/bin/bash".to_owned());
    expected.push("setuid/setgid file /usr/bin/helper (mode 4755)".to_owned());
    assert_eq!(problems, expected);
    assert!(problems.contains(&"required path /etc/cvm/egress.nft is missing".to_owned()));
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
    // The guest firewall loaded on the real kernel (its nf_tables modules survived the pruning).
    assert_eq!(status.firewall, "active");
}

#[test]
fn boots_the_uki_directly() {
    if !cvm_core::skip::require_slow("boots_the_uki_directly") {
        return;
    }
    let Some(built) = built("boots_the_uki_directly") else {
        return;
    };
    // The ESP is zeroed in the copy, so only the `-kernel` UKI can boot: a firmware that fell
    // back to the disk would find nothing to boot.
    let work = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let disk = modified_disk(&built.out, work.path(), |file, partitions| {
        let esp = partitions.iter().find(|p| p.name == "esp").unwrap();
        file.seek(SeekFrom::Start(esp.offset)).unwrap();
        file.write_all(&vec![0; esp.length as usize]).unwrap();
    });
    let outcome = boot_it(&built.out, disk, boot::BootMode::Direct, "direct");
    assert!(
        outcome.ok(),
        "{:?}\n{}",
        outcome.failure,
        boot::log_tail(&outcome.serial_log, 30)
    );
    // The kernel unpacked the UKI's own initrd (ours: a few MB, not a stock one).
    let log = fs::read_to_string(&outcome.serial_log).unwrap();
    assert!(
        log.contains("cvm-init: opening the dm-verity root"),
        "{log}"
    );
}

/// A qcow2 copy of the built disk (in `work`) after `edit` changed its raw bytes; `edit` gets
/// the raw file and its GPT partitions.
fn modified_disk(
    out: &Path,
    work: &Path,
    edit: impl FnOnce(&mut fs::File, &[disk::GptEntry]),
) -> PathBuf {
    let raw = work.join("disk.raw");
    Cmd::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(out.join("disk.qcow2"))
        .arg(&raw)
        .run()
        .unwrap();
    {
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&raw)
            .unwrap();
        let partitions = disk::read_gpt(&mut file).unwrap();
        edit(&mut file, &partitions);
    }
    let modified = work.join("modified.qcow2");
    disk::to_qcow2(&raw, &modified).unwrap();
    fs::remove_file(&raw).unwrap();
    modified
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
    let tampered = modified_disk(&built.out, work.path(), |file, partitions| {
        let root = partitions.iter().find(|p| p.name == "root").unwrap();
        // Byte 1024 is the erofs superblock's magic: every mount reads it.
        let at = root.offset + 1024;
        let mut byte = [0u8];
        file.seek(SeekFrom::Start(at)).unwrap();
        file.read_exact(&mut byte).unwrap();
        file.seek(SeekFrom::Start(at)).unwrap();
        file.write_all(&[byte[0] ^ 0xff]).unwrap();
    });
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
    let again = build_into(
        &test_dir().join(format!("{}-again", built.source.name())),
        true,
        built.source,
    )
    .expect("second build");
    for name in ["uki.efi", "disk.qcow2", "firmware.fd", "packages.lock"] {
        let first = cvm_core::hash::sha256_file(&built.out.join(name)).unwrap();
        let second = cvm_core::hash::sha256_file(&again.out.join(name)).unwrap();
        assert_eq!(first, second, "{name} differs between the two builds");
    }
}

/// Builds the rootfs stage of `built`'s distribution from a local mirror holding its locked
/// packages, unsigned or (with `sign`) signed by a freshly generated key no keyring trusts, and
/// returns the error the build must give with the new key's fingerprint.
fn rootfs_from_local_mirror(built: &Built, test: &str, sign: bool) -> (String, Option<String>) {
    let lock_text = fs::read_to_string(built.out.join("packages.lock")).unwrap();
    let lock = image::lock::PackagesLock::parse(&lock_text, Path::new("packages.lock")).unwrap();
    let work = tempfile::tempdir_in(workspace().join("target")).unwrap();
    let repo = work.path().join("repo");
    let deb_cache = workspace()
        .join("target/cvm-cache")
        .join(distro(built.source, None).unwrap().deb_cache_name());
    image::local_repo::write(&lock, &deb_cache, &repo).unwrap();
    image::local_repo::write_unsigned_suite_layout(&repo, &lock.suite).unwrap();
    let fingerprint = sign.then(|| {
        // A short home: gpg-agent's socket path must fit in a sockaddr_un.
        let home = tempfile::Builder::new()
            .prefix("cvm-gpg")
            .tempdir_in("/tmp")
            .unwrap();
        let fingerprint = image::local_repo::generate_signing_key(home.path()).unwrap();
        let signed = image::local_repo::sign_suite_layout(&repo, home.path(), &fingerprint);
        image::local_repo::stop_gpg_agent(home.path()).unwrap();
        signed.unwrap();
        fingerprint
    });
    if let Some(fingerprint) = &fingerprint {
        for name in ["InRelease", "Release.gpg"] {
            let path = repo.join("dists").join(&lock.suite).join(name);
            assert!(path.is_file(), "{} is missing", path.display());
        }
        eprintln!("{test}: the local mirror is signed by {fingerprint}");
    }
    let mirror = format!("file://{}", repo.display());
    let mut model = cvm_core::model::load(None).unwrap().model;
    let distro = match built.source {
        Source::Ubuntu => {
            model.guest.mirror = Some(mirror);
            image::Distro::Ubuntu
        }
        Source::Trixie => distro(Source::Trixie, Some(mirror)).unwrap(),
    };
    let stage = work.path().join("stage");
    fs::create_dir_all(&stage).unwrap();
    let err = image::rootfs::build(
        &model,
        &image::rootfs::RootfsInputs {
            lock: Some(&lock),
            deb_cache: &work.path().join("debs"),
            offline_repo: None,
            distro: &distro,
            extra_files: &[],
        },
        &stage,
        &work.path().join("tree"),
    )
    .expect_err("apt must refuse a mirror whose signature it cannot verify");
    let text = format!("{err:#}");
    eprintln!("{test}: refused: {text}");
    (text, fingerprint)
}

#[test]
fn a_mirror_without_a_valid_signature_is_refused() {
    if !cvm_core::skip::require_slow("a_mirror_without_a_valid_signature_is_refused") {
        return;
    }
    let Some(built) = built("a_mirror_without_a_valid_signature_is_refused") else {
        return;
    };
    let (text, _) = rootfs_from_local_mirror(
        built,
        "a_mirror_without_a_valid_signature_is_refused",
        false,
    );
    assert!(
        text.contains("signature could not be verified") && text.contains("is not signed"),
        "{text}"
    );
}

#[test]
fn a_mirror_signed_by_an_untrusted_key_is_refused() {
    let test = "a_mirror_signed_by_an_untrusted_key_is_refused";
    if !cvm_core::skip::require_slow(test) {
        return;
    }
    let Some(built) = built(test) else {
        return;
    };
    if let Err(err) = cvm_core::deps::ensure(&["gpg", "gpgconf"], InstallPolicy::Refuse) {
        cvm_core::skip::skip(test, &format!("{err:#}"));
        return;
    }
    let (text, fingerprint) = rootfs_from_local_mirror(built, test, true);
    let fingerprint = fingerprint.unwrap();
    // apt names the missing key by its long key id: the last 16 hex digits of the fingerprint.
    let key_id = &fingerprint[fingerprint.len() - 16..];
    assert!(
        text.contains("signature could not be verified")
            && text.contains("NO_PUBKEY")
            && text.contains(key_id),
        "{text}"
    );
    // A signature failure is final: the build must not have retried it.
    assert!(image::rootfs::is_final_failure(&text), "{text}");
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
    let source = Source::from_name(&online.file_name().unwrap().to_string_lossy());
    let offline = build_with(
        &test_dir().join(format!("{}-offline", source.name())),
        true,
        true,
        source,
    )
    .expect("offline build");
    for name in ["uki.efi", "disk.qcow2", "packages.lock"] {
        let first = cvm_core::hash::sha256_file(&online.join(name)).unwrap();
        let second = cvm_core::hash::sha256_file(&offline.out.join(name)).unwrap();
        assert_eq!(
            first, second,
            "{name} differs between the online and the offline build"
        );
    }
}

/// The Debian trixie fallback, built and booted even where the Ubuntu archive is reachable, so
/// that its code is exercised in CI: a direct UKI boot (the build's firmware.fd, here Ubuntu
/// noble's OVMF.amdsev.fd from shared/test-data, and `-kernel uki.efi`) must reach CVM-STATUS
/// with dm-verity active and no failed unit.
#[test]
fn the_debian_trixie_fallback_builds_and_boots() {
    let test = "the_debian_trixie_fallback_builds_and_boots";
    if !cvm_core::skip::require_slow(test) {
        return;
    }
    let built = match trixie_result() {
        Ok(built) => built,
        Err(reason) if cannot_build_here(reason) => {
            cvm_core::skip::skip(
                test,
                &format!("cannot build the trixie fallback here: {reason}"),
            );
            return;
        }
        Err(reason) => panic!("building the Debian trixie fallback failed: {reason}"),
    };
    let manifest: image::manifest::Manifest =
        serde_json::from_str(&fs::read_to_string(built.out.join("manifest.json")).unwrap())
            .unwrap();
    assert!(
        manifest.kernel.ends_with("-cloud-amd64"),
        "{}",
        manifest.kernel
    );
    let (firmware, _) = cvm_core::hash::sha256_file(&built.out.join("firmware.fd")).unwrap();
    assert_eq!(firmware, FALLBACK_FIRMWARE_SHA256);
    // The build's audit stage has already read the finished disk (a finding fails the build);
    // one direct boot is the cheapest proof that the Debian kernel, initrd and root work.
    let outcome = boot_it(
        &built.out,
        built.out.join("disk.qcow2"),
        boot::BootMode::Direct,
        "trixie-direct",
    );
    assert!(
        outcome.ok(),
        "{:?}\n{}",
        outcome.failure,
        boot::log_tail(&outcome.serial_log, 30)
    );
    let status = outcome.status.unwrap();
    assert_eq!(status.kernel, manifest.kernel);
}
