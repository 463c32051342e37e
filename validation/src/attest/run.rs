//! The two commands, `attest register` and `attest check`, with all their output: data on `out`,
//! progress on `err`. xtask passes stdout and stderr; tests pass buffers and search them for
//! secrets.

use std::{io::Write, path::Path};

use anyhow::Result;
use cvm_core::model::LoadedModel;

use super::{provider, reference, Env, ExportProbe, Settings};

/// Options of `attest register`.
#[derive(Debug)]
pub struct RegisterOptions<'a> {
    /// The model.
    pub model: &'a LoadedModel,
    /// The build's artifacts directory (holding measurements.json).
    pub artifacts: &'a Path,
    /// Print the request; send nothing.
    pub dry_run: bool,
    /// Print JSON.
    pub json: bool,
    /// How to reach the service.
    pub settings: Settings,
    /// RTMRs the operator captured from a running TD (`--rtmr N=HEX`), over the build's.
    pub rtmrs: reference::OperatorRtmrs,
}

/// Options of `attest check`.
#[derive(Debug)]
pub struct CheckOptions<'a> {
    /// The model.
    pub model: &'a LoadedModel,
    /// Print JSON.
    pub json: bool,
    /// How to reach the service.
    pub settings: Settings,
}

/// `attest register`: prints the request, then sends it unless `dry_run`.
pub fn register(
    options: &RegisterOptions<'_>,
    env: Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<()> {
    let model = options.model;
    // The provider first: a model without [attestation] is the first thing to fix.
    let provider = provider(&model.model, &model.source_name(), &options.settings, env)?;
    let mut values = reference::load(options.artifacts, &model.model)?;
    let supplied = values.apply_operator_rtmrs(options.rtmrs.clone())?;
    if !supplied.is_empty() {
        // Say which values are the build's prediction and which the operator's capture.
        let names: Vec<String> = supplied
            .iter()
            .map(|index| format!("rtmr{index}"))
            .collect();
        writeln!(
            err,
            "{:>12} {} from --rtmr (captured by the operator, not predicted); mrtd from {}",
            "Using",
            names.join(", "),
            values.source.display()
        )?;
    }
    let request = provider.registration_request(&values)?;
    let body = serde_json::to_string_pretty(&request.body)?;
    // The request is shown before anything is sent: as data in the plain output, as progress
    // beside the JSON output (whose one object on stdout includes it again).
    let plan: &mut dyn Write = if options.json { err } else { out };
    writeln!(plan, "{} {}", request.method, request.url)?;
    writeln!(plan, "Authentication: {}", request.auth)?;
    writeln!(plan, "{body}")?;
    for line in &request.not_sent {
        writeln!(plan, "Not sent: {line}")?;
    }
    let registration = provider.register(&request, options.dry_run, err)?;
    if options.json {
        serde_json::to_writer_pretty(&mut *out, &registration)?;
        writeln!(out)?;
    } else if !registration.sent {
        writeln!(out, "Dry run: nothing was sent.")?;
    } else {
        writeln!(
            out,
            "Registered image {} with status {}.",
            registration
                .build_id
                .as_deref()
                .unwrap_or("(no id returned)"),
            registration.status.as_deref().unwrap_or("(none returned)")
        )?;
        if let Some(task) = &registration.pending_task_id {
            writeln!(
                out,
                "Approve task {task} in CCM to whitelist it; until then no workload of this build gets a certificate."
            )?;
        }
    }
    Ok(())
}

/// `attest check`: returns true when the key's release is shown restricted to attested workloads
/// and, when a workload identity was given, that workload can use the key.
pub fn check(
    options: &CheckOptions<'_>,
    env: Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Result<bool> {
    let model = options.model;
    let provider = provider(&model.model, &model.source_name(), &options.settings, env)?;
    let status = provider.check_key_release(err)?;
    if options.json {
        serde_json::to_writer_pretty(&mut *out, &status)?;
        writeln!(out)?;
    } else {
        writeln!(out, "key:        {}", status.key_name)?;
        writeln!(
            out,
            "id:         {}",
            status.key_id.as_deref().unwrap_or("-")
        )?;
        writeln!(
            out,
            "type:       {}",
            status.key_type.as_deref().unwrap_or("-")
        )?;
        writeln!(out, "operations: {}", status.key_ops.join(", "))?;
        let probe = match status.export_probe {
            ExportProbe::NotTried => "not tried (no EXPORT operation)",
            ExportProbe::NoCredential => "not tried (no API key of a non-attested app given)",
            ExportProbe::Refused => "refused (HTTP 403)",
            ExportProbe::Allowed => "ALLOWED",
        };
        writeln!(out, "export by a non-attested app: {probe}")?;
        if let Some(workload) = &status.workload {
            writeln!(
                out,
                "attested workload ({}): {}: {}",
                workload.entity_id.as_deref().unwrap_or("entity -"),
                if workload.usable {
                    "can use the key"
                } else {
                    "CANNOT use the key"
                },
                workload.detail
            )?;
        }
        let verdict = if status.restricted {
            "restricted"
        } else if status.export_probe == ExportProbe::Allowed {
            "NOT restricted"
        } else {
            "NOT SHOWN restricted"
        };
        writeln!(out, "{verdict}: {}", status.detail)?;
    }
    Ok(status.ok())
}
