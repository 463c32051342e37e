//! The end-to-end stage runner of `cargo xtask validate`. Each stage is one function taking the
//! [`Context`] and returning its checks (DESIGN.md §7 ids); the runner calls them in order and
//! collects one result list, from which every report is written.
//!
//! Stages whose module has not landed in this build report `skip` with the exact reason, never
//! `pass`. Plugging a module in means replacing the body of one stage function: guest boot and
//! launch in [`launch`]. The facts stage reads one host-setup facts
//! bundle for both the profile rows ([`facts`]) and host-setup's full preflight registry
//! ([`preflight`]). Validation never changes the host.

use std::path::PathBuf;

use cvm_core::{
    check::{CheckResult, Report, Status},
    model::{LoadedModel, NetworkMode, Tee},
};
use serde_json::Value;

use crate::{
    endpoint::{self, Endpoint},
    guest::{self, Expected, GuestRun},
    node_checks,
    node_facts::{Bundle, NodeFacts},
    profile::Profile,
};

/// How long network probes wait.
const NETWORK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the HTTPS endpoint check connects.
#[derive(Debug, Clone)]
pub enum EndpointTarget {
    /// Given with `--endpoint`: checked whether or not this run launched the CVM.
    Explicit(Endpoint),
    /// Derived from the model's forwarded port: checked once this run has the CVM running.
    FromModel(Endpoint),
    /// Not configured; the reason the check is skipped.
    NotConfigured(String),
}

/// Everything the stages read. Built by the CLI from its flags; never changes the host.
pub struct Context {
    /// The deployment model.
    pub model: LoadedModel,
    /// The node profile.
    pub profile: Profile,
    /// The node's facts bundle (given with `--facts`, or collected live into a temporary directory).
    pub facts: Bundle,
    /// The built artifacts directory.
    pub artifacts: PathBuf,
    /// Boot non-confidentially under QEMU instead of launching the CVM.
    pub emulate: bool,
    /// The inference endpoint.
    pub endpoint: EndpointTarget,
    /// How `e2e.key-release` reaches the key manager (and the attested workload's identity, when
    /// given).
    pub attest: crate::attest::Settings,
}

/// What the launch stage produced.
#[derive(Debug, Clone)]
pub struct Launched {
    /// The guest's run, when one started.
    pub run: Option<GuestRun>,
    /// Why there is no run (shown by every check that needs one).
    pub why_no_run: String,
}

/// Runs every stage in order; `progress` receives (verb, what) lines for stderr.
pub fn run(context: &Context, progress: &mut dyn FnMut(&str, &str)) -> Report {
    let mut checks = Vec::new();
    progress(
        "Checking",
        &format!("node facts against profile {}", context.profile.name),
    );
    checks.extend(facts(context));
    checks.extend(preflight(context));
    progress(
        "Verifying",
        &format!("artifacts in {}", context.artifacts.display()),
    );
    let artifact_checks = artifacts(context);
    let artifacts_ok = artifact_checks
        .first()
        .is_some_and(|check| check.status == Status::Pass);
    checks.extend(artifact_checks);
    progress(
        "Launching",
        if context.emulate {
            "emulated boot"
        } else {
            "the CVM"
        },
    );
    let (launch_check, launched) = launch(context, artifacts_ok);
    checks.push(launch_check);
    progress(
        "Checking",
        "guest, attestation, key release, endpoint, egress, telemetry",
    );
    checks.extend(guest_stage(context, &launched));
    checks.push(attestation(context, &launched));
    checks.push(key_release(context));
    checks.push(endpoint_stage(context, &launched));
    checks.push(egress(context));
    checks.push(telemetry(context, &launched));
    Report::new(checks)
}

fn check(
    id: &str,
    title: &str,
    status: Status,
    detail: impl Into<String>,
    remediation: &str,
) -> CheckResult {
    CheckResult::new(id, title, status, detail, remediation)
}

/// Stage 1a: one `<profile>.<row>` check per row of the node profile.
pub fn facts(context: &Context) -> Vec<CheckResult> {
    node_checks::evaluate(&context.profile, &NodeFacts::new(&context.facts))
}

/// Stage 1b: every check of host-setup's preflight registry (`cargo xtask host check`) over the
/// same bundle, for the model's TEE: checks for the other TEE skip with host-setup's reason.
pub fn preflight(context: &Context) -> Vec<CheckResult> {
    let options = host_setup::checks::Options {
        tee: Some(context.model.model.deployment.tee),
        ..Default::default()
    };
    match host_setup::checks::evaluate(&context.facts, &options) {
        Ok(report) => report.checks,
        // Only an unknown --only/--skip pattern makes evaluation fail, and none is passed here;
        // should that change, the run still reports it instead of losing the stage.
        Err(err) => vec![check(
            "host.preflight",
            "host preflight checks (cargo xtask host check)",
            Status::Fail,
            format!("{err:#}"),
            "report this as a bug in cvm-stack's validation",
        )],
    }
}

/// Stage 2: `e2e.artifacts` (manifest digests re-verified), `firmware.tee-support` (the launch
/// firmware has the model's TEE metadata) and `e2e.artifacts-measurement` (the measurement
/// recomputed from the artifacts equals the manifest's).
pub fn artifacts(context: &Context) -> Vec<CheckResult> {
    vec![
        crate::artifacts::verify(&context.artifacts),
        crate::firmware::tee_support(&context.model.model, &context.artifacts),
        crate::measurement::check(&context.model.model, &context.artifacts),
    ]
}

/// Stage 3: `e2e.launch`. The rendered launch script starts the CVM, or with `--emulate` the same
/// artifacts boot non-confidentially under QEMU (guest-image's emulated boot, the same wiring
/// `cargo xtask guest boot` uses).
pub fn launch(context: &Context, artifacts_ok: bool) -> (CheckResult, Launched) {
    const TITLE: &str = "the CVM starts from the built artifacts";
    let reason = if !artifacts_ok {
        "not launched: the artifacts did not verify (see e2e.artifacts)".to_owned()
    } else if context.emulate {
        match emulated_boot(context) {
            Ok((outcome, serial_log)) => {
                let run = GuestRun {
                    serial_log,
                    emulated: true,
                };
                let (status, detail, remediation) = match &outcome.failure {
                    None => (
                        Status::Pass,
                        format!(
                            "emulated {} boot reached CVM-STATUS in {:.1} s (serial log {})",
                            boot_mode(context).as_str(),
                            outcome.seconds,
                            outcome.serial_log.display()
                        ),
                        String::new(),
                    ),
                    Some(failure) => (
                        Status::Fail,
                        format!("emulated boot failed: {failure}"),
                        format!(
                            "read the serial log {} and rebuild the image (cargo xtask guest build)",
                            outcome.serial_log.display()
                        ),
                    ),
                };
                return (
                    check("e2e.launch", TITLE, status, detail, &remediation),
                    Launched {
                        run: Some(run),
                        why_no_run: String::new(),
                    },
                );
            }
            Err(err) => {
                let detail = format!("the emulated boot could not start: {err:#}");
                let launched = Launched {
                    run: None,
                    why_no_run: format!("the guest did not run: {detail}"),
                };
                return (
                    check(
                        "e2e.launch",
                        TITLE,
                        Status::Fail,
                        detail,
                        "install QEMU and OVMF (qemu-system-x86_64, ovmf) and check the artifacts boot: cargo xtask guest boot",
                    ),
                    launched,
                );
            }
        }
    } else {
        "CVM launch not run: launching the confidential VM needs the node's TEE; run the rendered launch script on the node, or pass --emulate".to_owned()
    };
    let launched = Launched {
        run: None,
        why_no_run: format!("the guest did not run: {reason}"),
    };
    (
        check("e2e.launch", TITLE, Status::Skip, reason, ""),
        launched,
    )
}

fn boot_mode(context: &Context) -> guest_image::image::boot::BootMode {
    match context.model.model.launch.boot {
        cvm_core::model::BootMode::DirectUki => guest_image::image::boot::BootMode::Direct,
        cvm_core::model::BootMode::Disk => guest_image::image::boot::BootMode::Disk,
    }
}

/// Boots the artifacts under QEMU (KVM when it runs firmware here, else TCG) and returns the
/// outcome with the serial log's text. The log goes to a temporary directory: validation never
/// writes into the artifacts or changes the host.
fn emulated_boot(
    context: &Context,
) -> anyhow::Result<(guest_image::image::boot::BootOutcome, String)> {
    use guest_image::image::{self, boot};
    image::require_artifacts(&context.artifacts)?;
    let work = std::env::temp_dir().join(format!("cvm-validate-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let kvm = boot::resolve_accel(boot::Accel::Auto, &work)?;
    let outcome = boot::boot(&boot::BootRequest {
        model: &context.model,
        artifacts: &context.artifacts,
        disk: context.artifacts.join("disk.qcow2"),
        mode: boot_mode(context),
        kvm,
        timeout: std::time::Duration::from_secs(900),
        serial_log: work.join("serial.log"),
    })?;
    let log = std::fs::read(&outcome.serial_log).unwrap_or_default();
    Ok((outcome, String::from_utf8_lossy(&log).into_owned()))
}

/// Stage 4: `e2e.guest-ready`, `e2e.guest-tee`, `e2e.gpu-cc-ready` from the guest's CVM-STATUS.
pub fn guest_stage(context: &Context, launched: &Launched) -> Vec<CheckResult> {
    guest::guest_checks(
        launched.run.as_ref(),
        &launched.why_no_run,
        &expected(context),
    )
}

/// Stage 5: `e2e.measurement-match`: the TEE-reported measurement equals measurements.json.
pub fn attestation(context: &Context, launched: &Launched) -> CheckResult {
    guest::measurement_check(
        launched.run.as_ref(),
        &launched.why_no_run,
        &expected(context),
    )
}

/// Stage 6: `e2e.key-release`: the model key is released only to attested workloads (the
/// attestation module's key-release policy check against the key manager), with the API key from
/// the process environment and, when given, the attested workload's certificate (DSM must release
/// the key to it). It asks the key manager, not the guest, so it runs whether or not this run
/// launched the CVM.
pub fn key_release(context: &Context) -> CheckResult {
    key_release_with(context, &context.attest, crate::attest::Env::Process)
}

/// [`key_release`] with explicit service settings and environment (tests).
pub fn key_release_with(
    context: &Context,
    settings: &crate::attest::Settings,
    env: crate::attest::Env,
) -> CheckResult {
    const TITLE: &str = "the model key is released only to attested workloads";
    let Some(attestation) = &context.model.model.attestation else {
        return check(
            "e2e.key-release",
            TITLE,
            Status::Skip,
            "key release not configured: the model has no [attestation] section",
            "",
        );
    };
    if env.secret(&attestation.api_key_env).is_none() && settings.workload.is_none() {
        return check(
            "e2e.key-release",
            TITLE,
            Status::Skip,
            format!(
                "key release not checked: {} (attestation.api-key-env) is not set and no --workload-cert was given",
                attestation.api_key_env
            ),
            "",
        );
    }
    crate::attest::key_release_policy_check(&context.model, settings, env)
}

/// Stage 7: `e2e.endpoint-https`: a TLS client check against the configured CA.
pub fn endpoint_stage(context: &Context, launched: &Launched) -> CheckResult {
    match &context.endpoint {
        EndpointTarget::Explicit(target) => endpoint::check(target, NETWORK_TIMEOUT),
        EndpointTarget::FromModel(target) if launched.run.is_some() => {
            endpoint::check(target, NETWORK_TIMEOUT)
        }
        EndpointTarget::FromModel(target) => check(
            endpoint::ID,
            endpoint::TITLE,
            Status::Skip,
            format!("{} not checked: {}", target.url(), launched.why_no_run),
            "",
        ),
        EndpointTarget::NotConfigured(reason) => check(
            endpoint::ID,
            endpoint::TITLE,
            Status::Skip,
            reason.clone(),
            "",
        ),
    }
}

/// Stage 8: `e2e.egress`: the rendered launch script's network and the image's egress firewall
/// against the model's outbound endpoints.
pub fn egress(context: &Context) -> CheckResult {
    crate::egress::check(&context.model, &context.artifacts)
}

/// Stage 9: `e2e.telemetry`: the guest's `CVM-EVENT` lines in the run's serial log.
pub fn telemetry(_context: &Context, launched: &Launched) -> CheckResult {
    match &launched.run {
        Some(run) => crate::telemetry::check(&run.serial_log),
        None => check(
            crate::telemetry::ID,
            crate::telemetry::TITLE,
            Status::Skip,
            launched.why_no_run.clone(),
            "",
        ),
    }
}

/// What the guest checks compare against.
pub fn expected(context: &Context) -> Expected {
    let model = &context.model.model;
    let tee = model.deployment.tee;
    Expected {
        tee: match tee {
            Tee::Snp => "sev-snp".to_owned(),
            Tee::Tdx => "tdx".to_owned(),
        },
        gpus: !model.launch.gpus.is_empty(),
        measurement: predicted_measurement(context, tee),
    }
}

/// The predicted launch measurement from `measurements.json` (DESIGN.md §4) in the artifacts.
fn predicted_measurement(context: &Context, tee: Tee) -> Result<String, String> {
    let path = context.artifacts.join("measurements.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .map_err(|err| format!("{} is not JSON: {err}", path.display()))?;
    let pointer = match tee {
        Tee::Snp => "/snp/measurement",
        Tee::Tdx => "/tdx/mrtd",
    };
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{} has no {pointer}", path.display()))
}

/// The endpoint target from the flags and the model: `--endpoint` wins; otherwise the model's
/// user-mode port forward on 127.0.0.1; without `--endpoint-ca` nothing is configured.
pub fn endpoint_target(
    model: &LoadedModel,
    url: Option<&str>,
    ca: Option<&std::path::Path>,
) -> anyhow::Result<EndpointTarget> {
    let Some(ca) = ca else {
        if let Some(url) = url {
            return Err(cvm_core::error::bad_input(format!(
                "--endpoint {url} needs --endpoint-ca FILE: the CA the endpoint's certificate chain must lead to"
            )));
        }
        return Ok(EndpointTarget::NotConfigured(
            "endpoint not checked: no CA configured; pass --endpoint-ca FILE (the CA that issues the workload certificate) and, unless the model forwards a port, --endpoint URL".to_owned(),
        ));
    };
    if let Some(url) = url {
        return Ok(EndpointTarget::Explicit(Endpoint::new(url, ca)?));
    }
    let network = &model.model.launch.network;
    match (network.mode, network.host_port) {
        (NetworkMode::User, Some(port)) => Ok(EndpointTarget::FromModel(Endpoint::new(
            &format!("https://127.0.0.1:{port}"),
            ca,
        )?)),
        _ => Ok(EndpointTarget::NotConfigured(
            "endpoint not checked: the model forwards no port to this host (launch.network); pass --endpoint URL".to_owned(),
        )),
    }
}

#[cfg(test)]
mod tests;
