//! Reference values: what a verifier compares the guest's evidence with, read from a build's
//! `measurements.json` (DESIGN.md §4) with a small serde view of our own, so this module does not
//! depend on how guest-image computes the file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cvm_core::{
    error::bad_input,
    model::{Model, Profile, Tee},
};
use serde::{Deserialize, Serialize};

/// The file inside the artifacts directory.
pub const FILE_NAME: &str = "measurements.json";

/// Hex digits of a 48-byte SNP launch digest, MRTD or RTMR.
const DIGEST_HEX_LEN: usize = 96;

/// A build's reference values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferenceValues {
    /// The file they were read from.
    pub source: PathBuf,
    /// The CPU TEE.
    pub tee: Tee,
    /// SEV-SNP values (when `tee` is snp).
    pub snp: Option<SnpValues>,
    /// TDX values (when `tee` is tdx).
    pub tdx: Option<TdxValues>,
    /// True when the guest carries GPUs whose evidence must be verified too.
    pub gpu_attestation: bool,
}

/// SEV-SNP reference values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpValues {
    /// The launch digest, lowercase hex.
    pub measurement: String,
    /// The guest policy the digest was computed for, when recorded.
    pub policy: Option<u64>,
    /// The SEV features measured into each VMSA, when recorded.
    pub guest_features: Option<u64>,
    /// The VM permission level the guest's evidence comes from: 0, since the guest runs without
    /// an SVSM and its kernel requests reports at VMPL0.
    pub vmpl: u8,
}

/// TDX reference values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxValues {
    /// MRTD (the TD firmware), lowercase hex.
    pub mrtd: String,
    /// RTMR0..3 where recorded (lowercase hex).
    pub rtmr: [Option<String>; 4],
}

#[derive(Deserialize)]
struct File {
    schema: u32,
    tee: Tee,
    #[serde(default)]
    snp: Option<SnpSection>,
    #[serde(default)]
    tdx: Option<TdxSection>,
}

#[derive(Deserialize)]
struct SnpSection {
    measurement: String,
    #[serde(default)]
    inputs: Option<SnpInputs>,
}

#[derive(Deserialize)]
struct SnpInputs {
    #[serde(default)]
    policy: Option<Number>,
    #[serde(default)]
    guest_features: Option<Number>,
}

/// A number written either as JSON number or as a `0x…` hex string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Number {
    Int(u64),
    Text(String),
}

#[derive(Deserialize)]
struct TdxSection {
    mrtd: String,
    #[serde(default)]
    rtmr0: Option<String>,
    #[serde(default)]
    rtmr1: Option<String>,
    #[serde(default)]
    rtmr2: Option<String>,
    #[serde(default)]
    rtmr3: Option<String>,
}

/// Reads `<artifacts>/measurements.json` for `model`. A missing or malformed file, or one built
/// for the other TEE, is bad input naming the file and what to do.
pub fn load(artifacts: &Path, model: &Model) -> Result<ReferenceValues> {
    let path = artifacts.join(FILE_NAME);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(bad_input(format!(
                "{}: not found; build the guest first (`cargo xtask guest build`) or pass --artifacts DIR of a build",
                path.display()
            )))
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
    };
    let gpu_attestation = model.guest.profile == Profile::Gpu || !model.launch.gpus.is_empty();
    parse(&text, &path, model.deployment.tee, gpu_attestation)
}

/// Parses the text of a measurements file (`path` only names it in errors).
pub fn parse(text: &str, path: &Path, tee: Tee, gpu_attestation: bool) -> Result<ReferenceValues> {
    let shown = path.display();
    let file: File = serde_json::from_str(text).map_err(|err| {
        bad_input(format!(
            "{shown}: not a measurements file ({err}); rebuild with `cargo xtask guest build`"
        ))
    })?;
    if file.schema != 1 {
        return Err(bad_input(format!(
            "{shown}: schema {} is not supported (expected 1); rebuild with this version of cvm-stack",
            file.schema
        )));
    }
    if file.tee != tee {
        return Err(bad_input(format!(
            "{shown}: tee is {} but the model's deployment.tee is {tee}; pass --artifacts of a {tee} build",
            file.tee
        )));
    }
    let digest = |field: &str, value: &str| -> Result<String> {
        let value = value.trim().to_ascii_lowercase();
        if value.len() != DIGEST_HEX_LEN || !value.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(bad_input(format!(
                "{shown}: {field} {value:?} is not {DIGEST_HEX_LEN} hex digits; rebuild with `cargo xtask guest build`"
            )));
        }
        Ok(value)
    };
    let number = |field: &str, value: Option<Number>| -> Result<Option<u64>> {
        let Some(value) = value else { return Ok(None) };
        let parsed = match &value {
            Number::Int(int) => Some(*int),
            Number::Text(text) => {
                let hex = text.trim_start_matches("0x").trim_start_matches("0X");
                u64::from_str_radix(hex, 16).ok()
            }
        };
        match parsed {
            Some(parsed) => Ok(Some(parsed)),
            None => Err(bad_input(format!(
                "{shown}: {field} is neither a number nor 0x-prefixed hex; rebuild with `cargo xtask guest build`"
            ))),
        }
    };
    let mut values = ReferenceValues {
        source: path.to_owned(),
        tee,
        snp: None,
        tdx: None,
        gpu_attestation,
    };
    match tee {
        Tee::Snp => {
            let Some(snp) = file.snp else {
                return Err(bad_input(format!(
                    "{shown}: has no \"snp\" object; rebuild with `cargo xtask guest build`"
                )));
            };
            let inputs = snp.inputs.unwrap_or(SnpInputs {
                policy: None,
                guest_features: None,
            });
            values.snp = Some(SnpValues {
                measurement: digest("snp.measurement", &snp.measurement)?,
                policy: number("snp.inputs.policy", inputs.policy)?,
                guest_features: number("snp.inputs.guest_features", inputs.guest_features)?,
                vmpl: 0,
            });
        }
        Tee::Tdx => {
            let Some(tdx) = file.tdx else {
                return Err(bad_input(format!(
                    "{shown}: has no \"tdx\" object; rebuild with `cargo xtask guest build`"
                )));
            };
            let rtmr = |index: usize, value: Option<String>| -> Result<Option<String>> {
                value
                    .map(|value| digest(&format!("tdx.rtmr{index}"), &value))
                    .transpose()
            };
            values.tdx = Some(TdxValues {
                mrtd: digest("tdx.mrtd", &tdx.mrtd)?,
                rtmr: [
                    rtmr(0, tdx.rtmr0)?,
                    rtmr(1, tdx.rtmr1)?,
                    rtmr(2, tdx.rtmr2)?,
                    rtmr(3, tdx.rtmr3)?,
                ],
            });
        }
    }
    Ok(values)
}

/// RTMR values an operator captured from a running TD (`--rtmr N=HEX`): index → lowercase hex.
pub type OperatorRtmrs = [Option<String>; 4];

/// Parses `--rtmr N=HEX` values: N is 0..=3, HEX 96 hex digits, each index once (bad input
/// otherwise, naming the flag value).
pub fn parse_operator_rtmrs(values: &[String]) -> Result<OperatorRtmrs> {
    let mut rtmrs: OperatorRtmrs = Default::default();
    for value in values {
        let fail = |why: &str| {
            bad_input(format!(
                "--rtmr {value}: {why}; give N=HEX with N in 0..3 and the 96 hex digits read from a running TD's quote or event log"
            ))
        };
        let (index, hex) = value.split_once('=').ok_or_else(|| fail("no `=`"))?;
        let index: usize = index
            .trim()
            .parse()
            .ok()
            .filter(|index| *index < 4)
            .ok_or_else(|| fail("the index is not 0, 1, 2 or 3"))?;
        let hex = hex.trim().to_ascii_lowercase();
        if hex.len() != DIGEST_HEX_LEN || !hex.bytes().all(|byte| byte.is_ascii_hexdigit()) {
            return Err(fail(&format!(
                "the value is not {DIGEST_HEX_LEN} hex digits"
            )));
        }
        if rtmrs[index].replace(hex).is_some() {
            return Err(fail("this RTMR is given twice"));
        }
    }
    Ok(rtmrs)
}

impl ReferenceValues {
    /// Puts the operator's RTMRs over the build's; returns which indexes the operator supplied.
    /// Refused for SEV-SNP, which has no RTMRs.
    pub fn apply_operator_rtmrs(&mut self, rtmrs: OperatorRtmrs) -> Result<Vec<usize>> {
        let given: Vec<usize> = (0..4).filter(|index| rtmrs[*index].is_some()).collect();
        if given.is_empty() {
            return Ok(given);
        }
        let Some(tdx) = self.tdx.as_mut() else {
            return Err(bad_input(
                "--rtmr is for TDX builds; SEV-SNP has no RTMRs (its launch digest covers the boot)",
            ));
        };
        for (index, value) in rtmrs.into_iter().enumerate() {
            if let Some(value) = value {
                tdx.rtmr[index] = Some(value);
            }
        }
        Ok(given)
    }
}
