//! `cvm-init`: the guest initrd's `/init` (built statically; the initrd stage of
//! `guest_image::image::initrd` packs it with the few kernel modules it loads).
//!
//! It does only what opening the dm-verity root needs, with no shell, udev or device-mapper
//! library: mount the kernel's API file systems, load the initrd's modules (signed; the kernel
//! checks them under `module.sig_enforce=1`), wait for the two root partitions by GPT partition
//! name, read the verity superblock from the hash partition, create the read-only `verity`
//! device-mapper target with the root hash from the kernel command line (which the UKI carries, so
//! the launch measurement covers it), mount the erofs on it and hand over to the root's
//! `/sbin/init`. Anything it cannot do is fatal: it prints one `cvm-init: cannot boot: …` line on
//! the console and powers the guest off (fail closed).
//!
//! Kernel command line: `cvm.roothash=HEX cvm.verity_data=PARTLABEL=root`
//! `cvm.verity_hash=PARTLABEL=root-verity [rootfstype=erofs] [init=/sbin/init]`; a device may also
//! be given as a `/dev/…` path.

// An init is system calls: mount, finit_module, the device-mapper ioctls, chroot, execv. Each
// unsafe block says why its pointers are valid.
#![allow(unsafe_code)]

use std::{
    ffi::CString,
    fs,
    io::{Read, Write},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use guest_image::image::initrd::{
    dm_answer_device, dm_ioctl_buffer, uevent_field, InitCmdline, VeritySuperblock, DM_DEV_CREATE,
    DM_DEV_SUSPEND, DM_NAME, DM_READONLY_FLAG, DM_TABLE_LOAD, INIT_DIR, MODULE_DIR,
};

/// How long the root partitions may take to appear.
const DEVICE_TIMEOUT: Duration = Duration::from_secs(30);

fn main() {
    if let Err(err) = run() {
        log(2, &format!("cannot boot: {err}"));
        // SAFETY: sync and reboot take no pointers; PID 1 may power the machine off.
        unsafe {
            libc::sync();
            libc::reboot(libc::RB_POWER_OFF);
        }
        // Only reached if the power-off itself failed; PID 1 exiting panics the kernel.
        std::process::exit(1);
    }
}

/// Writes `message` to the kernel log at `level` (so it reaches the serial console with a
/// timestamp), or to stderr before /dev is mounted.
fn log(level: u8, message: &str) {
    let line = format!("<{level}>cvm-init: {message}\n");
    let written = fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut kmsg| kmsg.write_all(line.as_bytes()));
    if written.is_err() {
        eprintln!("cvm-init: {message}");
    }
}

fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}

fn cstr(text: impl AsRef<std::ffi::OsStr>) -> Result<CString, String> {
    CString::new(text.as_ref().as_bytes()).map_err(|_| "a path with a NUL byte".to_owned())
}

/// mount(2); the error is the system's.
fn mount_raw(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> std::io::Result<()> {
    let invalid = |_| std::io::Error::from(std::io::ErrorKind::InvalidInput);
    let c_source = CString::new(source).map_err(invalid)?;
    let c_target = CString::new(target).map_err(invalid)?;
    let c_fstype = fstype.map(CString::new).transpose().map_err(invalid)?;
    // SAFETY: every pointer is a valid NUL-terminated string or null, alive for the call.
    let rc = unsafe {
        libc::mount(
            c_source.as_ptr(),
            c_target.as_ptr(),
            c_fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(errno());
    }
    Ok(())
}

/// mount(2) with an error that names what was mounted where.
fn mount(
    source: &str,
    target: &str,
    fstype: Option<&str>,
    flags: libc::c_ulong,
) -> Result<(), String> {
    mount_raw(source, target, fstype, flags).map_err(|err| {
        format!(
            "mounting {source} on {target} ({}): {err}",
            fstype.unwrap_or("move")
        )
    })
}

/// Loads every module of the initrd, in file-name order (dependencies first).
fn load_modules() -> Result<(), String> {
    let dir = Path::new("/").join(MODULE_DIR);
    let mut files: Vec<PathBuf> = match fs::read_dir(&dir) {
        Ok(entries) => entries.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(format!("reading {}: {err}", dir.display())),
    };
    files.sort();
    for file in files {
        let module = fs::File::open(&file).map_err(|err| format!("{}: {err}", file.display()))?;
        let params = c"";
        // SAFETY: a valid open file descriptor and a NUL-terminated empty parameter string.
        let rc = unsafe {
            use std::os::fd::AsRawFd;
            libc::syscall(
                libc::SYS_finit_module,
                module.as_raw_fd(),
                params.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            let err = errno();
            if err.raw_os_error() != Some(libc::EEXIST) {
                return Err(format!("loading module {}: {err}", file.display()));
            }
        }
    }
    Ok(())
}

/// The device node of `spec` (`PARTLABEL=NAME` or a `/dev/…` path), once it exists.
fn find_device(spec: &str) -> Option<PathBuf> {
    let Some(label) = spec.strip_prefix("PARTLABEL=") else {
        let path = PathBuf::from(spec);
        return path.exists().then_some(path);
    };
    for entry in fs::read_dir("/sys/class/block").ok()?.flatten() {
        let Ok(uevent) = fs::read_to_string(entry.path().join("uevent")) else {
            continue;
        };
        if uevent_field(&uevent, "PARTNAME=") == Some(label) {
            let node = PathBuf::from("/dev").join(uevent_field(&uevent, "DEVNAME=")?);
            return node.exists().then_some(node);
        }
    }
    None
}

fn wait_for_devices(specs: &[&str]) -> Result<Vec<PathBuf>, String> {
    let started = Instant::now();
    loop {
        let found: Vec<Option<PathBuf>> = specs.iter().map(|spec| find_device(spec)).collect();
        if found.iter().all(Option::is_some) {
            return Ok(found.into_iter().flatten().collect());
        }
        if started.elapsed() > DEVICE_TIMEOUT {
            let missing: Vec<&str> = specs
                .iter()
                .zip(&found)
                .filter(|(_, found)| found.is_none())
                .map(|(spec, _)| *spec)
                .collect();
            return Err(format!(
                "the root devices {} did not appear within {} s",
                missing.join(", "),
                DEVICE_TIMEOUT.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_superblock(device: &Path) -> Result<VeritySuperblock, String> {
    let mut block = [0u8; 512];
    fs::File::open(device)
        .and_then(|mut file| file.read_exact(&mut block))
        .map_err(|err| {
            format!(
                "reading the verity superblock of {}: {err}",
                device.display()
            )
        })?;
    VeritySuperblock::parse(&block).map_err(|err| format!("{}: {err}", device.display()))
}

/// One device-mapper ioctl on `control` (see [`dm_ioctl_buffer`]); returns the kernel's answer.
fn dm_call(
    control: &fs::File,
    request: u32,
    uuid: &str,
    flags: u32,
    target: Option<(&str, u64, &str)>,
) -> Result<Vec<u64>, String> {
    let mut buffer = dm_ioctl_buffer(uuid, flags, target)?;
    // SAFETY: the buffer is as long as its data_size field says and outlives the call.
    let rc = unsafe {
        use std::os::fd::AsRawFd;
        libc::ioctl(control.as_raw_fd(), request as _, buffer.as_mut_ptr())
    };
    if rc != 0 {
        return Err(errno().to_string());
    }
    Ok(buffer)
}

/// Creates the read-only verity device over `data` and `hash`; returns its (major, minor).
fn open_verity(data: &Path, hash: &Path, root_hash: &str) -> Result<(u32, u32), String> {
    let sb = read_superblock(hash)?;
    let table = sb.table(&data.to_string_lossy(), &hash.to_string_lossy(), root_hash);
    let sectors = sb.sectors();
    let uuid = sb.dm_uuid();
    let control = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .map_err(|err| format!("opening /dev/mapper/control (is dm-mod in the kernel?): {err}"))?;
    let created = dm_call(&control, DM_DEV_CREATE, &uuid, 0, None)
        .map_err(|err| format!("creating the device-mapper device {DM_NAME}: {err}"))?;
    dm_call(
        &control,
        DM_TABLE_LOAD,
        "",
        DM_READONLY_FLAG,
        Some(("verity", sectors, &table)),
    )
    .map_err(|err| format!("dm-verity refused the root device's table ({table}): {err}"))?;
    dm_call(&control, DM_DEV_SUSPEND, "", 0, None)
        .map_err(|err| format!("activating the dm-verity root device: {err}"))?;
    Ok(dm_answer_device(&created))
}

fn run() -> Result<(), String> {
    mount("devtmpfs", "/dev", Some("devtmpfs"), libc::MS_NOSUID)?;
    mount(
        "proc",
        "/proc",
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    mount(
        "sysfs",
        "/sys",
        Some("sysfs"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
    )?;
    let text = fs::read_to_string("/proc/cmdline")
        .map_err(|err| format!("reading /proc/cmdline: {err}"))?;
    let cmdline = InitCmdline::parse(&text)?;
    load_modules()?;
    let devices = wait_for_devices(&[&cmdline.data, &cmdline.hash])?;
    let (data, hash) = (&devices[0], &devices[1]);
    log(
        6,
        &format!(
            "opening the dm-verity root ({}, {})",
            data.display(),
            hash.display()
        ),
    );
    let (major, minor) = open_verity(data, hash, &cmdline.root_hash)?;
    let dm = format!("/dev/dm-{minor}");
    // devtmpfs names the node dm-N; root= and tools know it as /dev/mapper/root.
    let mapper = cstr(format!("/dev/mapper/{DM_NAME}"))?;
    // SAFETY: a valid path; a block node of the device just created.
    if unsafe {
        libc::mknod(
            mapper.as_ptr(),
            libc::S_IFBLK | 0o600,
            libc::makedev(major, minor),
        )
    } != 0
    {
        log(4, &format!("creating /dev/mapper/{DM_NAME}: {}", errno()));
    }
    if let Err(err) = mount_raw(&dm, "/root", Some(&cmdline.fstype), libc::MS_RDONLY) {
        let what = format!("mounting {dm} ({}) on /root: {err}", cmdline.fstype);
        // dm-verity answers a block that does not match the root hash with EIO.
        return Err(if err.raw_os_error() == Some(libc::EIO) {
            format!(
                "dm-verity refused the root filesystem (it does not match cvm.roothash): {what}"
            )
        } else {
            what
        });
    }
    for api in ["/dev", "/proc", "/sys"] {
        mount(api, &format!("/root{api}"), None, libc::MS_MOVE)?;
    }
    // The initrd's files go before the switch: nothing of it stays in memory.
    let _ = fs::remove_dir_all(Path::new("/").join(INIT_DIR));
    let _ = fs::remove_file("/init");
    std::env::set_current_dir("/root").map_err(|err| format!("entering /root: {err}"))?;
    mount(".", "/", None, libc::MS_MOVE)?;
    let dot = cstr(".")?;
    // SAFETY: a valid path.
    if unsafe { libc::chroot(dot.as_ptr()) } != 0 {
        return Err(format!("chroot into the root: {}", errno()));
    }
    std::env::set_current_dir("/").map_err(|err| format!("entering /: {err}"))?;
    let init = cstr(&cmdline.init)?;
    let argv = [init.as_ptr(), std::ptr::null()];
    // SAFETY: a NUL-terminated argv of valid strings.
    unsafe { libc::execv(init.as_ptr(), argv.as_ptr()) };
    Err(format!("starting {}: {}", cmdline.init, errno()))
}
