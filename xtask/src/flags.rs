//! The whole command-line interface of `cargo xtask` (DESIGN.md §3), in one place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Build, measure, launch and validate confidential-VM inference deployments from one cvm.toml.
#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    help_expected = true
)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build, lock, boot and inspect the guest image.
    #[command(subcommand)]
    Guest(GuestCommand),
    /// Compute launch measurements (SEV-SNP launch digest, TDX MRTD).
    Measure(MeasureArgs),
    /// Render launch scripts and libvirt domain XML.
    #[command(subcommand)]
    Launch(LaunchCommand),
    /// Provision hosts and check their prerequisites.
    #[command(subcommand)]
    Host(HostCommand),
    /// Validate a node end to end and write JUnit/JSON/HTML reports.
    Validate(ValidateArgs),
    /// Register reference values with the attestation service and check key release.
    #[command(subcommand)]
    Attest(AttestCommand),
    /// Check a deployment model (cvm.toml) without building anything.
    #[command(subcommand)]
    Model(ModelCommand),
    /// Run the whole test suite (what CI and the README run); installs test tools as root.
    Ci(CiArgs),
    /// Benchmarks that print ratios against reference tools (not part of ci).
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// `bench …`.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Guest image: bare mmdebstrap vs our cold build, no-op and cmdline-only rebuilds, boot times.
    Image(BenchImageArgs),
    /// Measurement: sev-snp-measure's whole-process time / ours, per input.
    Measure(BenchMeasureArgs),
    /// Preflight: `host check --facts` over a full bundle.
    HostCheck(BenchHostCheckArgs),
}

/// `bench image`.
#[derive(Debug, Args)]
pub struct BenchImageArgs {
    #[command(flatten)]
    pub model: ModelArg,
}

/// `bench measure`.
#[derive(Debug, Args)]
pub struct BenchMeasureArgs {
    /// Repetitions per input.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub runs: u32,
}

/// `bench host-check`.
#[derive(Debug, Args)]
pub struct BenchHostCheckArgs {
    /// Facts bundle to evaluate (default: the healthy SEV-SNP XE7745 fixture).
    #[arg(long, value_name = "DIR")]
    pub facts: Option<PathBuf>,
    /// Repetitions.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub runs: u32,
}

/// `-c FILE`: the deployment model.
#[derive(Debug, Args, Clone)]
pub struct ModelArg {
    /// Deployment model (cvm.toml); the embedded default when not given.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `guest …`.
#[derive(Debug, Subcommand)]
pub enum GuestCommand {
    /// Build the guest image into target/cvm/<name>/.
    Build(GuestBuildArgs),
    /// Resolve the package closure into packages.lock next to the model.
    Lock(GuestLockArgs),
    /// Boot the built image non-confidentially under QEMU and wait for CVM-STATUS.
    Boot(GuestBootArgs),
    /// Show what a built image contains, or print the embedded default model.
    Inspect(GuestInspectArgs),
}

/// `guest build`.
#[derive(Debug, Args)]
pub struct GuestBuildArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Output directory (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Fail instead of changing packages.lock.
    #[arg(long)]
    pub locked: bool,
    /// Build only from packages.lock and the package cache, with no network access.
    #[arg(long)]
    pub offline: bool,
    /// Rebuild every stage; keep only downloaded packages.
    #[arg(long)]
    pub no_cache: bool,
    /// Never install missing build tools; fail with the command to run instead.
    #[arg(long)]
    pub no_install_deps: bool,
}

/// `guest lock`.
#[derive(Debug, Args)]
pub struct GuestLockArgs {
    #[command(flatten)]
    pub model: ModelArg,
}

/// QEMU accelerator for the emulated boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Accel {
    /// KVM when it really runs guests (probed), else TCG.
    Auto,
    /// KVM only.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// `guest boot`.
#[derive(Debug, Args)]
pub struct GuestBootArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Directory of the built artifacts (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Seconds to wait for CVM-STATUS.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub timeout: u64,
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
}

/// `guest inspect`.
#[derive(Debug, Args)]
pub struct GuestInspectArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Directory of the built artifacts (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Print the embedded default cvm.toml (start your own model from it).
    #[arg(long, conflicts_with_all = ["artifacts", "json"])]
    pub default_model: bool,
}

/// `measure [snp|tdx]`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct MeasureArgs {
    /// Measure raw inputs instead of a model and its built artifacts.
    #[command(subcommand)]
    pub command: Option<MeasureCommand>,
    #[command(flatten)]
    pub model: ModelArg,
    /// Directory of the built artifacts (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Print JSON (the measurements.json object).
    #[arg(long)]
    pub json: bool,
}

/// `measure snp|tdx`.
#[derive(Debug, Subcommand)]
pub enum MeasureCommand {
    /// SEV-SNP launch digest (flags as sev-snp-measure's).
    Snp(MeasureSnpArgs),
    /// TDX MRTD from the TDVF metadata.
    Tdx(MeasureTdxArgs),
}

/// VMM whose launch sequence is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum VmmType {
    /// QEMU/KVM.
    Qemu,
    /// AWS EC2.
    Ec2,
}

/// `measure snp`.
#[derive(Debug, Args)]
pub struct MeasureSnpArgs {
    /// OVMF firmware image (the AmdSev build for kernel hashes).
    #[arg(long, value_name = "F")]
    pub ovmf: PathBuf,
    /// Number of vCPUs.
    #[arg(long, value_name = "N")]
    pub vcpus: u32,
    /// vCPU model (EPYC-v4, EPYC-Milan, EPYC-Genoa, EPYC-Turin, …).
    #[arg(
        long,
        value_name = "T",
        required_unless_present = "vcpu_sig",
        conflicts_with = "vcpu_sig"
    )]
    pub vcpu_type: Option<String>,
    /// vCPU signature (CPUID 1 EAX) as sev-snp-measure reads it: 0x-prefixed hex (0xa10f11),
    /// or decimal; 0o octal and 0b binary also work.
    #[arg(long, value_name = "INT")]
    pub vcpu_sig: Option<String>,
    /// Kernel measured with kernel-hashes=on (e.g. uki.efi).
    #[arg(long, value_name = "F")]
    pub kernel: Option<PathBuf>,
    /// Initrd measured with the kernel.
    #[arg(long, value_name = "F", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line measured with the kernel.
    #[arg(long, value_name = "STR", requires = "kernel")]
    pub append: Option<String>,
    /// SEV guest features (the VMSA SEV_FEATURES word) as sev-snp-measure reads it: 0x-prefixed
    /// hex (0x1), or decimal (digits without 0x are read as decimal, as Python's int(s, 0) does).
    #[arg(long, value_name = "INT", default_value = "0x1")]
    pub guest_features: String,
    /// VMM type.
    #[arg(long, value_enum, default_value_t = VmmType::Qemu)]
    pub vmm_type: VmmType,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// How the VMM adds TDVF pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PageAddOrder {
    /// Upstream KVM / QEMU >= 9.
    Single,
    /// Older TDX QEMU.
    TwoPass,
}

/// `measure tdx`.
#[derive(Debug, Args)]
pub struct MeasureTdxArgs {
    /// TDVF firmware image.
    #[arg(long, value_name = "F")]
    pub ovmf: PathBuf,
    /// Page-add order of the VMM.
    #[arg(long, value_enum, default_value_t = PageAddOrder::Single)]
    pub page_add_order: PageAddOrder,
    /// UKI booted with `-kernel`: also list the RTMR events it determines and an unverified
    /// RTMR1 candidate (`uki_boot`).
    #[arg(long, value_name = "F")]
    pub uki: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `launch …`.
#[derive(Debug, Subcommand)]
pub enum LaunchCommand {
    /// Write launch-<tee>.sh and domain-<tee>.xml.
    Render(LaunchRenderArgs),
}

/// `launch render`.
#[derive(Debug, Args)]
pub struct LaunchRenderArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Directory of the built artifacts (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Where to write the files (default: the artifacts directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// TEE selector for host commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TeeArg {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
}

/// `host …`.
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// Print the provisioning plan for this host's release and TEE.
    Plan(HostPlanArgs),
    /// Apply the provisioning plan (asks first unless --yes; never reboots).
    Apply(HostApplyArgs),
    /// Collect this host's facts into a bundle directory.
    Collect(HostCollectArgs),
    /// Evaluate the preflight checks over a facts bundle (or this host).
    Check(HostCheckArgs),
}

/// `host plan`.
#[derive(Debug, Args)]
pub struct HostPlanArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// os-release file to plan for instead of this host's.
    #[arg(long, value_name = "FILE")]
    pub os_release: Option<PathBuf>,
    /// TEE to plan for instead of the model's.
    #[arg(long, value_enum)]
    pub tee: Option<TeeArg>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Also install libvirt (for the rendered domain XML).
    #[arg(long)]
    pub libvirt: bool,
}

/// `host apply`.
#[derive(Debug, Args)]
pub struct HostApplyArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Apply without asking.
    #[arg(long)]
    pub yes: bool,
    /// Also install libvirt (for the rendered domain XML); give it to `host plan` too.
    #[arg(long)]
    pub libvirt: bool,
    /// Apply into this root directory instead of / (commands run with chroot), e.g. to stage an
    /// image; its etc/os-release chooses the plan.
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,
}

/// `host collect`.
#[derive(Debug, Args)]
pub struct HostCollectArgs {
    /// Bundle directory to write.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// BMC Redfish base URL (credentials from REDFISH_USERNAME / REDFISH_PASSWORD).
    #[arg(long, value_name = "URL")]
    pub redfish: Option<String>,
    /// Accept the BMC's self-signed TLS certificate.
    #[arg(long, requires = "redfish")]
    pub redfish_insecure: bool,
    /// Seconds to wait for each Redfish request.
    #[arg(long, value_name = "SECS", default_value_t = 20, requires = "redfish")]
    pub redfish_timeout: u64,
    /// Also record whether this host path exists (repeatable), e.g. a node profile's OVMF file
    /// (`--marker /usr/share/ovmf/OVMF.amdsev.fd`) for `validate`'s `<profile>.ovmf` row.
    #[arg(long, value_name = "PATH")]
    pub marker: Vec<String>,
}

/// `host check`.
#[derive(Debug, Args)]
pub struct HostCheckArgs {
    /// Deployment model whose launch size is checked for slow-boot ranges (warnings only); the
    /// embedded default when not given.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Facts bundle to evaluate (default: collect this host into a temporary directory).
    #[arg(long, value_name = "DIR")]
    pub facts: Option<PathBuf>,
    /// Print JSON (DESIGN.md §7).
    #[arg(long)]
    pub json: bool,
    /// Only these check ids (comma-separated; a prefix like `snp.` selects a group).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip these check ids (comma-separated).
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Treat skipped checks as failures.
    #[arg(long)]
    pub strict: bool,
}

/// `validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Node profile name (e.g. xe7745) or file.
    #[arg(long, value_name = "NAME|FILE", default_value = "xe7745")]
    pub profile: String,
    /// Facts bundle (default: collect this host).
    #[arg(long, value_name = "DIR")]
    pub facts: Option<PathBuf>,
    /// Directory of the built artifacts (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Where to write report.xml, report.json and report.html.
    #[arg(long, value_name = "DIR", default_value = "target/cvm-reports")]
    pub report_dir: PathBuf,
    /// Boot the artifacts non-confidentially under QEMU instead of launching the CVM.
    #[arg(long)]
    pub emulate: bool,
    /// HTTPS inference endpoint to check (default: the model's forwarded port on 127.0.0.1).
    #[arg(long, value_name = "URL")]
    pub endpoint: Option<String>,
    /// CA certificate (PEM) the endpoint's chain must lead to; without it the endpoint is skipped.
    #[arg(long, value_name = "FILE")]
    pub endpoint_ca: Option<PathBuf>,
    /// e2e.key-release also asks DSM, as this attested workload, to release the key.
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

/// `attest …`.
#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Register the build's reference values with Fortanix CCM.
    Register(AttestRegisterArgs),
    /// Check that the model key in Fortanix DSM is released only to attested workloads.
    Check(AttestCheckArgs),
}

/// `attest register`.
#[derive(Debug, Args)]
pub struct AttestRegisterArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Directory of the built artifacts (default: target/cvm/<name>).
    #[arg(long, value_name = "DIR")]
    pub artifacts: Option<PathBuf>,
    /// Print what would be sent; send nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// TDX: an RTMR captured from a running TD of this build on the target host (repeatable,
    /// N in 0..3, 96 hex digits). CCM needs RTMR0..3; cvm-stack predicts none of them reliably
    /// (RTMR0 covers the host's ACPI tables), so they come from the operator.
    #[arg(long, value_name = "N=HEX")]
    pub rtmr: Vec<String>,
    /// Environment variable holding the CCM login as EMAIL:PASSWORD (never the value itself).
    #[arg(long, value_name = "NAME", default_value = validation::attest::DEFAULT_CCM_CREDENTIALS_ENV)]
    pub ccm_credentials_env: String,
    #[command(flatten)]
    pub service: AttestServiceArgs,
}

/// How `attest` reaches the attestation service.
#[derive(Debug, Args)]
pub struct AttestServiceArgs {
    /// PEM CA certificates to trust instead of the built-in web roots (an on-premises service).
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Seconds each request may take, connecting included.
    #[arg(long, value_name = "SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
}

/// The attested workload's identity for the key manager.
#[derive(Debug, Args)]
pub struct WorkloadArgs {
    /// The certificate (PEM) CCM issued to a workload of this build: DSM is asked, by mutual
    /// TLS as that workload, to release the key (the value is discarded unread).
    #[arg(long, value_name = "FILE", requires = "workload_key")]
    pub workload_cert: Option<PathBuf>,
    /// The private key (PEM) of --workload-cert; read, never printed.
    #[arg(long, value_name = "FILE", requires = "workload_cert")]
    pub workload_key: Option<PathBuf>,
    /// The DSM app id the workload certificate authenticates as, when DSM needs it named.
    #[arg(long, value_name = "UUID", requires = "workload_cert")]
    pub workload_app_id: Option<String>,
}

impl WorkloadArgs {
    /// The identity, when a certificate was given.
    pub fn identity(&self) -> Option<validation::attest::WorkloadIdentity> {
        match (&self.workload_cert, &self.workload_key) {
            (Some(cert), Some(key)) => Some(validation::attest::WorkloadIdentity {
                cert: cert.clone(),
                key: key.clone(),
                app_id: self.workload_app_id.clone(),
            }),
            _ => None,
        }
    }
}

/// `attest check`.
#[derive(Debug, Args)]
pub struct AttestCheckArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    #[command(flatten)]
    pub service: AttestServiceArgs,
}

/// `model …`.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Load and validate a model; print it with every default filled in.
    Check(ModelCheckArgs),
}

/// `model check`.
#[derive(Debug, Args)]
pub struct ModelCheckArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Print JSON instead of TOML.
    #[arg(long)]
    pub json: bool,
}

/// `ci`.
#[derive(Debug, Args)]
pub struct CiArgs {
    /// Never install missing test tools; fail with the command to run instead.
    #[arg(long)]
    pub no_install_deps: bool,
    /// Run only the fast checks (fmt, clippy, unit tests); skip the integration suites.
    #[arg(long)]
    pub quick: bool,
}
