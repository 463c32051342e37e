//! Rendering of launch scripts and libvirt domain XML from the model (issue 5).
//!
//! One launch plan is built from the validated model and the artifacts directory; the QEMU
//! argument vector is built from it once (`qemu::arg_groups`) and rendered into
//! `launch-<tee>.sh` (Tera template, every value shell-quoted by autoescaping), while
//! `domain-<tee>.xml` is rendered from the same plan (Tera template, every value XML-escaped by
//! autoescaping). [`emulated_args`] gives the emulated boot the same disk, UKI and firmware wiring
//! with the confidential objects left out.
//!
//! The script finds its files relative to its own directory, so the output directory can be moved;
//! the domain XML carries absolute paths, because libvirt requires them.

mod plan;
mod qemu;

use std::{
    ffi::OsString,
    io::Write,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use cvm_core::{
    cmd::shell_quote,
    model::{BootMode, LoadedModel, NetworkMode},
};
use serde::Serialize;
use tera::Tera;

pub use plan::{
    boot_time_warnings, mmio64_mib, DISK_FILE, FIRMWARE_FILE, MANIFEST_FILE, MEASUREMENTS_FILE,
    MMIO64_FW_CFG, MMIO64_MIB_PER_GPU, SERIAL_LOG_FILE, SLOW_BOOT_MEMORY_MIB, SLOW_BOOT_VCPUS,
    UKI_FILE,
};
pub use qemu::{EmulatedAccel, LaunchPaths};

use plan::{Location, Plan};
use qemu::{Mode, Var};

const SNP_SCRIPT: &str = include_str!("../../../templates/launch-snp.sh.tera");
const TDX_SCRIPT: &str = include_str!("../../../templates/launch-tdx.sh.tera");
const SNP_DOMAIN: &str = include_str!("../../../templates/domain-snp.xml.tera");
const TDX_DOMAIN: &str = include_str!("../../../templates/domain-tdx.xml.tera");

/// One rendered output file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// File name, e.g. `launch-snp.sh`.
    pub name: String,
    /// Its contents.
    pub contents: String,
    /// Permission bits.
    pub mode: u32,
}

/// Renders the launch script and domain XML for `model` into `out`, atomically (temporary file and
/// rename), and returns the paths written. `artifacts` is where the built image is (its files'
/// sha256 and the expected measurement are embedded); the script refers to it relative to `out`.
/// Warnings about slow boots go to stderr.
pub fn render(model: &LoadedModel, artifacts: &Path, out: &Path) -> Result<Vec<PathBuf>> {
    for warning in boot_time_warnings(&model.model) {
        eprintln!("warning: {}: {warning}", model.source_name());
    }
    let files = render_files(model, artifacts, out)?;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut written = Vec::new();
    for file in files {
        let path = out.join(&file.name);
        write_atomically(&path, file.contents.as_bytes(), file.mode)?;
        written.push(path);
    }
    Ok(written)
}

/// Renders `launch-<tee>.sh` and `domain-<tee>.xml` in memory (nothing is written; `artifacts` is
/// only read, and may not exist).
pub fn render_files(
    model: &LoadedModel,
    artifacts: &Path,
    out: &Path,
) -> Result<Vec<RenderedFile>> {
    let plan = plan::plan(model, artifacts, out)?;
    let tee = plan.tee.as_str();
    Ok(vec![
        RenderedFile {
            name: format!("launch-{tee}.sh"),
            contents: render_script(&plan)?,
            mode: 0o755,
        },
        RenderedFile {
            name: format!("domain-{tee}.xml"),
            contents: render_domain(&plan)?,
            mode: 0o644,
        },
    ])
}

/// The QEMU arguments (without the program name) that boot the model's disk, UKI and firmware
/// exactly as the launch script wires them, but with the confidential objects (SEV-SNP/TDX
/// objects, `confidential-guest-support`, guest_memfd backends), passed-through devices and the
/// network left out, on `accel` with `-cpu host` (KVM) or `-cpu max` (TCG). The serial console goes
/// to `paths.serial_log`.
pub fn emulated_args(
    model: &LoadedModel,
    paths: &LaunchPaths<'_>,
    accel: EmulatedAccel,
) -> Result<Vec<OsString>> {
    let plan = plan::model_plan(model)?;
    let groups = qemu::arg_groups(&plan, Mode::Emulated(accel));
    Ok(qemu::resolve(&groups, paths, None))
}

fn write_atomically(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".launch-render-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    temp.write_all(contents)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("writing {}", temp.path().display()))?;
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", temp.path().display()))?;
    temp.persist(path)
        .map_err(|err| err.error)
        .with_context(|| format!("renaming into {}", path.display()))?;
    Ok(())
}

/// A Tera instance whose autoescaping quotes every value for the shell: `{{ value }}` is always one
/// shell word, and only pre-rendered shell text is marked `| safe`.
fn shell_tera() -> Result<Tera> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![".sh"]);
    tera.set_escape_fn(shell_quote);
    tera.add_raw_templates(vec![
        ("launch/launch-snp.sh", SNP_SCRIPT),
        ("launch/launch-tdx.sh", TDX_SCRIPT),
    ])
    .context("parsing the launch script templates")?;
    Ok(tera)
}

/// A Tera instance whose autoescaping escapes every value for XML text and attributes.
fn xml_tera() -> Result<Tera> {
    let mut tera = Tera::default();
    tera.autoescape_on(vec![".xml"]);
    tera.set_escape_fn(escape_xml);
    tera.add_raw_templates(vec![
        ("launch/domain-snp.xml", SNP_DOMAIN),
        ("launch/domain-tdx.xml", TDX_DOMAIN),
    ])
    .context("parsing the domain XML templates")?;
    Ok(tera)
}

/// Escapes `text` for XML character data and for attribute values in either quote style.
pub fn escape_xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Serialize)]
struct ScriptContext {
    script: String,
    name: String,
    artifacts_relative: Option<String>,
    files: Vec<ScriptFile>,
    serial_log: String,
    cbitpos: Option<u8>,
    vcpu_type: String,
    devices: Vec<ScriptDevice>,
    measurement: Vec<plan::MeasurementLine>,
    arg_groups: Vec<ScriptArgGroup>,
}

#[derive(Serialize)]
struct ScriptFile {
    var: &'static str,
    /// `"${var}"` (safe: our own variable name).
    var_ref: String,
    label: String,
    /// A shell expression (safe: built from quoted words).
    path: String,
    /// Empty when the file was missing at render time.
    sha256: String,
    source: &'static str,
}

#[derive(Serialize)]
struct ScriptDevice {
    kind: String,
    address: String,
}

#[derive(Serialize)]
struct ScriptArgGroup {
    /// One sentence of our own text (model values in it are validated PCI addresses and numbers).
    comment: String,
    /// Lines of shell words (safe: each word is quoted).
    lines: Vec<String>,
}

/// The location as a shell expression.
fn shell_location(location: &Location) -> String {
    match location {
        Location::Artifact(name) => format!("\"${{artifacts_dir}}\"/{}", shell_quote(name)),
        Location::Host(path) => shell_quote(path),
        Location::ScriptDir(relative) => format!("\"${{here}}\"/{}", shell_quote(relative)),
    }
}

fn render_script(plan: &Plan) -> Result<String> {
    let groups = qemu::arg_groups(plan, Mode::Confidential);
    let context = ScriptContext {
        script: format!("launch-{}.sh", plan.tee),
        name: plan.name.clone(),
        artifacts_relative: plan.artifacts_relative().map(|path| shell_quote(&path)),
        files: plan
            .files
            .iter()
            .map(|file| ScriptFile {
                var: file.var.shell_name(),
                var_ref: format!("\"${{{}}}\"", file.var.shell_name()),
                label: file.label.clone(),
                path: shell_location(&file.location),
                sha256: file.sha256.clone().unwrap_or_default(),
                source: file.source,
            })
            .collect(),
        serial_log: shell_location(&plan.serial_log),
        cbitpos: plan.snp.as_ref().and_then(|snp| snp.cbitpos),
        vcpu_type: plan.vcpu_type.clone(),
        devices: plan
            .passthrough
            .iter()
            .map(|device| ScriptDevice {
                kind: device.kind.clone(),
                address: device.address.clone(),
            })
            .collect(),
        measurement: plan.measurement.clone(),
        arg_groups: groups
            .iter()
            .map(|group| {
                // One option and its value per line.
                let mut lines: Vec<String> = Vec::new();
                for word in &group.words {
                    let text = word.to_shell();
                    match lines.last_mut() {
                        Some(line) if !text.starts_with('-') => {
                            line.push(' ');
                            line.push_str(&text);
                        }
                        _ => lines.push(text),
                    }
                }
                ScriptArgGroup {
                    comment: group.comment.clone(),
                    lines,
                }
            })
            .collect(),
    };
    let template = format!("launch/launch-{}.sh", plan.tee);
    let context = tera::Context::from_serialize(&context).context("building the script context")?;
    let text = shell_tera()?
        .render(&template, &context)
        .with_context(|| format!("rendering {template}"))?;
    Ok(with_final_newline(text))
}

#[derive(Serialize)]
struct DomainContext {
    name: String,
    memory_mib: u64,
    vcpus: u32,
    vcpu_type: String,
    host_phys_bits: bool,
    firmware: String,
    uki: Option<String>,
    disk: String,
    serial_log: String,
    mmio64_mib: Option<u64>,
    mmio64_fw_cfg: &'static str,
    devices: Vec<DomainDevice>,
    network: &'static str,
    host_port: u16,
    guest_port: u16,
    bridge: String,
    snp: Option<DomainSnp>,
    tdx: Option<DomainTdx>,
}

#[derive(Serialize)]
struct DomainDevice {
    kind: String,
    /// The pcie-root-port controller's index.
    port: usize,
    /// The same, as the hex bus number of the device behind it.
    port_bus: String,
    domain: String,
    bus: String,
    slot: String,
    function: String,
}

#[derive(Serialize)]
struct DomainSnp {
    policy: String,
    cbitpos: Option<u8>,
    reduced_phys_bits: u8,
    kernel_hashes: &'static str,
}

#[derive(Serialize)]
struct DomainTdx {
    policy: String,
    quote_generation_port: u32,
}

fn render_domain(plan: &Plan) -> Result<String> {
    let path_of = |var: Var| {
        plan.file(var)
            .map(|file| plan.absolute(&file.location))
            .unwrap_or_default()
    };
    let devices = plan
        .passthrough
        .iter()
        .enumerate()
        .map(|(index, device)| {
            // DDDD:BB:DD.F, validated by the model.
            let address = &device.address;
            DomainDevice {
                kind: device.kind.clone(),
                port: index + 1,
                port_bus: format!("{:#04x}", index + 1),
                domain: format!("0x{}", &address[0..4]),
                bus: format!("0x{}", &address[5..7]),
                slot: format!("0x{}", &address[8..10]),
                function: format!("0x{}", &address[11..12]),
            }
        })
        .collect();
    let network = &plan.network;
    let context = DomainContext {
        name: plan.name.clone(),
        memory_mib: plan.memory_mib,
        vcpus: plan.vcpus,
        vcpu_type: plan.vcpu_type.clone(),
        host_phys_bits: plan.host_phys_bits,
        firmware: path_of(Var::Firmware),
        uki: (plan.boot == BootMode::DirectUki).then(|| path_of(Var::Uki)),
        disk: path_of(Var::Disk),
        serial_log: plan.absolute(&plan.serial_log),
        mmio64_mib: plan.mmio64_mib,
        mmio64_fw_cfg: MMIO64_FW_CFG,
        devices,
        network: match network.mode {
            NetworkMode::None => "none",
            NetworkMode::User => "user",
            NetworkMode::Bridge => "bridge",
        },
        host_port: network.host_port.unwrap_or_default(),
        guest_port: network.guest_port,
        bridge: network.bridge.clone().unwrap_or_default(),
        snp: plan.snp.as_ref().map(|snp| DomainSnp {
            policy: format!("{:#010x}", snp.policy),
            cbitpos: snp.cbitpos,
            reduced_phys_bits: snp.reduced_phys_bits,
            kernel_hashes: if plan.boot == BootMode::DirectUki {
                "yes"
            } else {
                "no"
            },
        }),
        tdx: plan.tdx.as_ref().map(|tdx| DomainTdx {
            policy: format!("{:#010x}", tdx.attributes),
            quote_generation_port: tdx.quote_generation_port,
        }),
    };
    let template = format!("launch/domain-{}.xml", plan.tee);
    let context = tera::Context::from_serialize(&context).context("building the domain context")?;
    let text = xml_tera()?
        .render(&template, &context)
        .with_context(|| format!("rendering {template}"))?;
    Ok(with_final_newline(text))
}

fn with_final_newline(mut text: String) -> String {
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests;
