//! Attestation services: register a build's reference values with the service that verifies the
//! guest's evidence, and check that the model key is released only to attested workloads.
//!
//! Callers see one seam, [`AttestationProvider`], chosen by `attestation.provider` in the model
//! ([`provider`]); Fortanix (CCM for attestation, DSM for keys) is the one implementation today. A
//! second key manager with attestation support is one more module and one more match arm in
//! [`provider`]; `xtask attest` and validation's `e2e.key-release` do not change.
//!
//! The flow: [`reference::load`] reads `<artifacts>/measurements.json` into [`ReferenceValues`],
//! [`AttestationProvider::registration_request`] turns them into the exact request that will be
//! sent (printed before it is sent), [`AttestationProvider::register`] sends it unless it is a dry
//! run, and [`AttestationProvider::check_key_release`] reads the key's policy. [`run`] holds the
//! two commands with their output, so tests run every command path with captured output;
//! [`key_release_policy_check`] gives the same verdict as one check result for validation.
//!
//! Secrets (the DSM API key, the CCM credentials, session tokens) live only in [`Secret`], which
//! has no `Display` and a redacted `Debug`; text a server sends back is redacted before it enters
//! an error message.
//!
//! Why not Fortanix's `sdkms` crate: 0.5.1 (the newest) covers DSM only (not CCM), pulls in an
//! async stack (hyper through simple-hyper-client, tokio) for a handful of blocking calls, needs
//! OpenSSL through tokio-native-tls for TLS, and still depends on `url` 1.x. The DSM calls used
//! here are three JSON requests, so both services go through one small blocking client on ureq
//! with rustls, the TLS stack the rest of the workspace already builds.

mod fortanix;
mod http;
pub mod reference;
pub mod run;

#[cfg(test)]
mod tests;

use std::{collections::BTreeMap, fmt, io::Write, path::PathBuf, time::Duration};

use anyhow::Result;
use cvm_core::model::{AttestationProvider as ProviderKind, Model};
use serde::Serialize;

pub use reference::{ReferenceValues, SnpValues, TdxValues};

/// An attestation service with a key manager: the seam every caller uses.
pub trait AttestationProvider {
    /// The provider's name as the model spells it (e.g. `fortanix`).
    fn name(&self) -> &'static str;

    /// The request that registers `values` as an approvable image/build, exactly as it will be
    /// sent (without credentials). Needs no network and no secret.
    fn registration_request(&self, values: &ReferenceValues) -> Result<PlannedRequest>;

    /// Sends `request`, writing progress lines to `progress`; with `dry_run` sends nothing and
    /// reads no secret.
    fn register(
        &self,
        request: &PlannedRequest,
        dry_run: bool,
        progress: &mut dyn Write,
    ) -> Result<Registration>;

    /// Authenticates to the key manager, reads the model key's metadata and policy and reports
    /// whether its release is restricted to attested workloads (progress lines to `progress`).
    fn check_key_release(&self, progress: &mut dyn Write) -> Result<KeyReleaseStatus>;
}

/// Settings that are not part of the model: how to reach the services.
#[derive(Debug, Clone)]
pub struct Settings {
    /// PEM CA certificates to trust instead of the built-in web roots (an on-premises service).
    pub ca_file: Option<PathBuf>,
    /// Bound on each request, connection and TLS handshake included.
    pub timeout: Duration,
    /// Environment variable holding the CCM login as `EMAIL:PASSWORD`.
    pub ccm_credentials_env: String,
    /// Use the proxy named by `HTTPS_PROXY`/`ALL_PROXY` (and `NO_PROXY`) when set.
    pub proxy_from_env: bool,
    /// The attested workload's identity for the key manager (the certificate CCM issued to a
    /// workload of this build), to show that release to attested workloads works.
    pub workload: Option<WorkloadIdentity>,
}

/// A CCM-issued workload certificate and its private key, both PEM files; the key manager
/// authenticates the workload by mutual TLS.
#[derive(Debug, Clone)]
pub struct WorkloadIdentity {
    /// The certificate (chain), PEM.
    pub cert: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1). Read, never printed.
    pub key: PathBuf,
    /// The key manager's id of the app the certificate authenticates as, when the service
    /// needs it named (DSM: sent as the Basic user with an empty password).
    pub app_id: Option<String>,
}

/// Default name of the variable holding the CCM login.
pub const DEFAULT_CCM_CREDENTIALS_ENV: &str = "FORTANIX_CCM_CREDENTIALS";

impl Default for Settings {
    fn default() -> Self {
        Self {
            ca_file: None,
            timeout: Duration::from_secs(30),
            ccm_credentials_env: DEFAULT_CCM_CREDENTIALS_ENV.to_owned(),
            proxy_from_env: true,
            workload: None,
        }
    }
}

/// Where secrets come from: the process environment, or a fixed map (tests).
#[derive(Clone)]
pub enum Env {
    /// `std::env::var`.
    Process,
    /// A fixed set of variables.
    Map(BTreeMap<String, String>),
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Variable values are secrets: only their names are shown.
        match self {
            Env::Process => f.write_str("Env::Process"),
            Env::Map(map) => f.debug_set().entries(map.keys()).finish(),
        }
    }
}

impl Env {
    /// The non-empty value of `name`, as a secret.
    pub fn secret(&self, name: &str) -> Option<Secret> {
        let value = match self {
            Env::Process => std::env::var(name).ok(),
            Env::Map(map) => map.get(name).cloned(),
        }?;
        let value = value.trim().to_owned();
        (!value.is_empty()).then_some(Secret(value))
    }
}

/// A credential or token: never displayed, redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that puts it into a request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// One request as it will be sent, minus its credentials.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlannedRequest {
    /// HTTP method.
    pub method: String,
    /// Full URL.
    pub url: String,
    /// How the request is authenticated (words, never the credential).
    pub auth: String,
    /// The JSON body.
    pub body: serde_json::Value,
    /// Reference values the service has no field for, and why (shown, not sent).
    pub not_sent: Vec<String>,
}

/// The outcome of [`AttestationProvider::register`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Registration {
    /// False for a dry run.
    pub sent: bool,
    /// The request (sent, or that would have been sent).
    pub request: PlannedRequest,
    /// The service's id for the registered image/build.
    pub build_id: Option<String>,
    /// Its approval status (Fortanix: PENDING until approved, then WHITELISTED).
    pub status: Option<String>,
    /// The approval task to act on, when the service created one.
    pub pending_task_id: Option<String>,
}

/// The outcome of [`AttestationProvider::check_key_release`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyReleaseStatus {
    /// The key's name.
    pub key_name: String,
    /// The key manager's id for it.
    pub key_id: Option<String>,
    /// The key's type as the key manager names it.
    pub key_type: Option<String>,
    /// Operations the key permits.
    pub key_ops: Vec<String>,
    /// Whether an export by our non-attested API-key session was tried, and what happened.
    pub export_probe: ExportProbe,
    /// What the attested workload's session (its CCM-issued certificate) was allowed; absent
    /// when no workload identity was given.
    pub workload: Option<WorkloadProbe>,
    /// True when the key is shown to be released only to attested workloads: it has no export
    /// operation, or the key manager refused to export it to a non-attested app.
    pub restricted: bool,
    /// One line saying why.
    pub detail: String,
}

impl KeyReleaseStatus {
    /// The verdict in one line: the restriction's detail, then the workload's when probed.
    pub fn summary(&self) -> String {
        match &self.workload {
            Some(workload) => format!("{}; {}", self.detail, workload.detail),
            None => self.detail.clone(),
        }
    }

    /// True when the key is shown restricted and, where a workload identity was given, that
    /// workload can use the key.
    pub fn ok(&self) -> bool {
        self.restricted && self.workload.as_ref().is_none_or(|probe| probe.usable)
    }
}

/// What the attested workload's session saw.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkloadProbe {
    /// The key manager's id of the entity the certificate authenticated as.
    pub entity_id: Option<String>,
    /// The export by the attested session (not tried when the key has no export operation).
    pub export: ExportProbe,
    /// True when the attested workload can use the key: it sees it and, when the key is
    /// exportable, the key manager released it (the value was discarded unread).
    pub usable: bool,
    /// One line saying why.
    pub detail: String,
}

/// What happened when a session asked to export the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExportProbe {
    /// Not tried: the key's operations do not include export.
    NotTried,
    /// Not tried: no credential for a non-attested app was given.
    NoCredential,
    /// The key manager refused (HTTP 403).
    Refused,
    /// The key manager exported the key (its value was discarded unread).
    Allowed,
}

/// The provider the model names (`source` names the model file in error messages).
pub fn provider(
    model: &Model,
    source: &str,
    settings: &Settings,
    env: Env,
) -> Result<Box<dyn AttestationProvider>> {
    let Some(attestation) = &model.attestation else {
        return Err(cvm_core::error::bad_input(format!(
            "{source}: has no [attestation] section; add one (provider, ccm-url, dsm-url, app-id, key-name, api-key-env) as in examples/xe7745-snp.toml"
        )));
    };
    match attestation.provider {
        ProviderKind::Fortanix => Ok(Box::new(fortanix::Fortanix::new(
            attestation,
            source,
            settings,
            env,
        ))),
    }
}

/// The key-release policy as one check result (for validation's `e2e.key-release` stage): pass
/// when the model key is released only to attested workloads, fail when it is not or the key
/// manager could not be asked, skip when the model or the environment does not configure it.
pub fn key_release_policy_check(
    model: &cvm_core::model::LoadedModel,
    settings: &Settings,
    env: Env,
) -> cvm_core::check::CheckResult {
    use cvm_core::check::{CheckResult, Status};
    const ID: &str = "e2e.key-release";
    const TITLE: &str = "the model key is released only to attested workloads";
    let result = |status, detail: String, remediation: &str| {
        CheckResult::new(ID, TITLE, status, detail, remediation)
    };
    let status = provider(&model.model, &model.source_name(), settings, env)
        .and_then(|provider| provider.check_key_release(&mut std::io::sink()));
    match status {
        Ok(status) if status.ok() => result(Status::Pass, status.summary(), ""),
        Ok(status) if status.export_probe == ExportProbe::NoCredential => result(
            Status::Fail,
            status.summary(),
            "export the API key of a non-attested app in the variable attestation.api-key-env names, so DSM's refusal can be shown",
        ),
        Ok(status) if status.restricted => result(
            Status::Fail,
            status.summary(),
            "give the attested workload's DSM app access to the key (the key's group and its policy)",
        ),
        Ok(status) => result(
            Status::Fail,
            status.summary(),
            "restrict the key: remove EXPORT from its operations, or keep only apps that authenticate with CCM-issued certificates in its group",
        ),
        Err(err) if cvm_core::error::is_bad_input(&err) => result(
            Status::Skip,
            format!("key release not checked: {err:#}"),
            "configure [attestation] and the API key variable it names",
        ),
        Err(err) => result(
            Status::Fail,
            format!("{err:#}"),
            "check the DSM URL, the API key and the network path to DSM",
        ),
    }
}
