//! `cargo xtask measure [snp|tdx]`: launch measurements (guest_image::measure does the work).

use std::process::ExitCode;

use anyhow::Result;
use cvm_core::{error::bad_input, model::PageAddOrder};
use guest_image::measure::{self, snp::parse_int, SnpRequest, Vcpu, Vmm};
use serde::Serialize;

use crate::{
    default_artifacts,
    flags::{self, MeasureArgs, MeasureCommand, MeasureSnpArgs, MeasureTdxArgs, VmmType},
    print_json,
};

/// What RTMRs `measure tdx` and `measure` do not predict, said once wherever MRTD is printed.
const RTMR_NOTE: &str = "RTMR0-2 are not predicted: RTMR0 covers the VMM's ACPI tables and TD HOB, RTMR1/RTMR2 what OVMF and the UKI measure at boot; `measure tdx --uki F` and measurements.json's tdx.uki_boot list the events that follow from the UKI and an RTMR1 candidate not verified on hardware; compare them against a captured event log";

pub fn run(args: MeasureArgs) -> Result<ExitCode> {
    match args.command {
        Some(MeasureCommand::Snp(args)) => snp(args),
        Some(MeasureCommand::Tdx(args)) => tdx(args),
        None => artifacts(args),
    }
}

fn snp(args: MeasureSnpArgs) -> Result<ExitCode> {
    let vcpu = match (args.vcpu_type, args.vcpu_sig) {
        (_, Some(sig)) => Vcpu::Sig(
            parse_int(&sig)
                .and_then(|value| u32::try_from(value).ok())
                .ok_or_else(|| {
                    bad_input(format!(
                        "--vcpu-sig {sig:?} is not a 32-bit number; give the CPUID 1 EAX value, e.g. 0xa10f10"
                    ))
                })?,
        ),
        (Some(name), None) => Vcpu::Type(name),
        (None, None) => return Err(bad_input("give --vcpu-type T or --vcpu-sig HEX")),
    };
    let guest_features = parse_int(&args.guest_features).ok_or_else(|| {
        bad_input(format!(
            "--guest-features {:?} is not a number; give it in hex as sev-snp-measure does, e.g. 0x1 or 0x21",
            args.guest_features
        ))
    })?;
    let request = SnpRequest {
        ovmf: args.ovmf,
        vcpus: args.vcpus,
        vcpu,
        kernel: args.kernel,
        initrd: args.initrd,
        append: args.append,
        guest_features,
        vmm: match args.vmm_type {
            VmmType::Qemu => Vmm::Qemu,
            VmmType::Ec2 => Vmm::Ec2,
        },
        policy: None,
    };
    if args.json {
        print_json(&measure::measure_snp(&request)?)?;
    } else {
        // The plain digest needs no input hashes beyond the measured ones.
        println!("{}", measure::snp_measurement(&request)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// `measure tdx --json`.
#[derive(Serialize)]
struct TdxReport {
    tee: &'static str,
    #[serde(flatten)]
    measurement: measure::TdxMeasurement,
    not_predicted: &'static str,
}

fn tdx(args: MeasureTdxArgs) -> Result<ExitCode> {
    let order = match args.page_add_order {
        flags::PageAddOrder::Single => PageAddOrder::Single,
        flags::PageAddOrder::TwoPass => PageAddOrder::TwoPass,
    };
    let mut measurement = measure::measure_tdx(&args.ovmf, order)?;
    if let Some(uki) = &args.uki {
        measurement.uki_boot = Some(measure::predict_uki_boot(uki)?);
    }
    if args.json {
        print_json(&TdxReport {
            tee: "tdx",
            measurement,
            not_predicted: RTMR_NOTE,
        })?;
    } else {
        eprintln!("note: {RTMR_NOTE}");
        println!("{}", measurement.mrtd);
    }
    Ok(ExitCode::SUCCESS)
}

fn artifacts(args: MeasureArgs) -> Result<ExitCode> {
    let loaded = cvm_core::model::load_for_command(args.model.config.as_deref())?;
    let mut model = loaded.model.clone();
    // A relative firmware path in the model is relative to the model file, as everywhere else.
    if let Some(firmware) = model.launch.firmware.as_mut() {
        firmware.path = loaded.resolve(&firmware.path);
    }
    let artifacts = args
        .artifacts
        .unwrap_or_else(|| default_artifacts(&model.deployment.name));
    let measurements = measure::measure_artifacts(&model, &artifacts)?;
    measure::write_measurements(&artifacts, &measurements)?;
    eprintln!(
        "{:>12} {}",
        "Wrote",
        artifacts.join(measure::MEASUREMENTS_FILE).display()
    );
    if args.json {
        print_json(&measurements)?;
    } else {
        if measurements.tdx.is_some() {
            eprintln!("note: {RTMR_NOTE}");
        }
        println!("{}", measurements.primary().unwrap_or_default());
    }
    Ok(ExitCode::SUCCESS)
}
