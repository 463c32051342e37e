//! Fortanix: Confidential Computing Manager (CCM) verifies the CPU and GPU evidence against
//! whitelisted images; Data Security Manager (DSM) holds the model key.
//!
//! Calls (shapes from Fortanix's public API documentation; see
//! validation/tests/data/attest/README.md):
//! - CCM: `POST /v1/sys/auth` with HTTP Basic (the login from the variable
//!   `Settings::ccm_credentials_env`) gives `access_token`; with `attestation.ccm-account-id`,
//!   `POST /v1/sys/session/select_account/{id}` scopes the session to that account;
//!   `POST /v1/builds` with
//!   `{"app_id", "attributes": {"baremetal_amd_sev_snp": {"measurement", "vmpl",
//!   "coprocessors"}}}` (or `baremetal_tdx` with `mrtd`, `rtmr0`..`rtmr3`) creates an image in
//!   status PENDING, to be approved (WHITELISTED) in CCM.
//! - DSM: `POST /sys/v1/session/auth` with `Authorization: Basic <API key>` (a DSM API key is
//!   already the base64 of `app-id:secret`) gives a bearer token; `POST /crypto/v1/keys/info`
//!   with `{"name"}` gives the key's metadata (`kid`, `obj_type`, `key_ops`); when `key_ops`
//!   holds `EXPORT`, `POST /crypto/v1/keys/export` with `{"name"}` from this non-attested
//!   API-key session must be refused (403). Its answer is never read.
//!
//! A 401 on a call made with a session token means the session expired: log in once more and
//! repeat the call once; a second 401 is an error saying so.
//!
//! CCM's published spec names its bearer header `Authentication`; we send the standard
//! `Authorization`, as Fortanix's own clients and examples do. `attestation.zone-id` is not
//! needed here: an image belongs to its application, which belongs to a zone.

use std::io::Write;

use anyhow::{anyhow, bail, Context, Result};
use cvm_core::{error::bad_input, model::Attestation, model::Tee};
use serde::Deserialize;
use serde_json::json;

use super::{
    http::{base64, error_text, Body, Client, Response},
    AttestationProvider, Env, ExportProbe, KeyReleaseStatus, PlannedRequest, ReferenceValues,
    Registration, Secret, Settings,
};

/// The Fortanix provider.
pub struct Fortanix {
    ccm_url: String,
    dsm_url: String,
    app_id: Option<String>,
    account_id: Option<String>,
    key_name: Option<String>,
    api_key_env: String,
    ccm_credentials_env: String,
    source: String,
    settings: Settings,
    env: Env,
}

#[derive(Deserialize)]
struct CcmAuthResponse {
    access_token: String,
}

#[derive(Deserialize)]
struct Build {
    #[serde(default)]
    build_id: Option<String>,
    #[serde(default)]
    status: Option<BuildStatus>,
    #[serde(default)]
    pending_task_id: Option<String>,
}

#[derive(Deserialize)]
struct BuildStatus {
    status: String,
}

#[derive(Deserialize)]
struct DsmAuthResponse {
    #[serde(default)]
    token_type: Option<String>,
    access_token: String,
}

#[derive(Deserialize)]
struct Sobject {
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    obj_type: Option<String>,
    #[serde(default)]
    key_ops: Vec<String>,
}

impl Fortanix {
    /// The provider for the model's `[attestation]` section.
    pub fn new(attestation: &Attestation, source: &str, settings: &Settings, env: Env) -> Self {
        Self {
            ccm_url: attestation.ccm_url.trim_end_matches('/').to_owned(),
            dsm_url: attestation.dsm_url.trim_end_matches('/').to_owned(),
            app_id: attestation.app_id.clone(),
            account_id: attestation.ccm_account_id.clone(),
            key_name: attestation.key_name.clone(),
            api_key_env: attestation.api_key_env.clone(),
            ccm_credentials_env: settings.ccm_credentials_env.clone(),
            source: source.to_owned(),
            settings: settings.clone(),
            env,
        }
    }

    fn client(&self) -> Result<Client> {
        Client::new(
            self.settings.ca_file.as_deref(),
            self.settings.timeout,
            self.settings.proxy_from_env,
        )
    }

    fn secret(&self, name: &str, what: &str) -> Result<Secret> {
        self.env.secret(name).ok_or_else(|| {
            bad_input(format!(
                "environment variable {name} is not set; export it with {what} (the model names the variable, never the value)"
            ))
        })
    }

    /// Logs in to CCM and returns the bearer header value.
    fn ccm_login(&self, client: &Client, login: &Secret) -> Result<Secret> {
        let url = format!("{}/v1/sys/auth", self.ccm_url);
        let basic = Secret::new(format!("Basic {}", base64(login.expose().as_bytes())));
        let response = client
            .send("POST", &url, &basic, None, Body::Read)
            .with_context(|| format!("logging in to CCM (POST {url})"))?;
        let secrets = [login, &basic];
        match response.status {
            200 => {
                let auth: CcmAuthResponse = serde_json::from_str(&response.body).map_err(|_| {
                    anyhow!("logging in to CCM (POST {url}): the answer has no access_token")
                })?;
                let session = Secret::new(format!("Bearer {}", auth.access_token));
                if let Some(account) = &self.account_id {
                    self.ccm_select_account(client, &session, account, &secrets)?;
                }
                Ok(session)
            }
            401 | 403 => bail!(
                "CCM refused the login in {} (HTTP {}: {}); check the email and password",
                self.ccm_credentials_env,
                response.status,
                error_text(&response.body, &secrets)
            ),
            status => bail!(
                "logging in to CCM (POST {url}): HTTP {status}: {}",
                error_text(&response.body, &secrets)
            ),
        }
    }

    /// Scopes a fresh CCM session to `account` (`POST /v1/sys/session/select_account/{id}`).
    fn ccm_select_account(
        &self,
        client: &Client,
        session: &Secret,
        account: &str,
        secrets: &[&Secret],
    ) -> Result<()> {
        let url = format!("{}/v1/sys/session/select_account/{account}", self.ccm_url);
        let response = client
            .send("POST", &url, session, None, Body::Read)
            .with_context(|| format!("selecting the CCM account (POST {url})"))?;
        let mut secrets = secrets.to_vec();
        secrets.push(session);
        match response.status {
            200 | 204 => Ok(()),
            403 | 404 => Err(bad_input(format!(
                "{}: CCM has no account {account} this login may select (HTTP {}: {}); set attestation.ccm-account-id to an account id from CCM (Accounts), or remove it to use the login's default account",
                self.source,
                response.status,
                error_text(&response.body, &secrets)
            ))),
            status => bail!(
                "selecting the CCM account (POST {url}): HTTP {status}: {}",
                error_text(&response.body, &secrets)
            ),
        }
    }

    /// Logs in to DSM with the API key and returns the bearer header value.
    fn dsm_login(&self, client: &Client, api_key: &Secret) -> Result<Secret> {
        let url = format!("{}/sys/v1/session/auth", self.dsm_url);
        let basic = Secret::new(format!("Basic {}", api_key.expose()));
        let response = client
            .send("POST", &url, &basic, None, Body::Read)
            .with_context(|| format!("authenticating to DSM (POST {url})"))?;
        let secrets = [api_key, &basic];
        match response.status {
            200 => {
                let auth: DsmAuthResponse = serde_json::from_str(&response.body).map_err(|_| {
                    anyhow!("authenticating to DSM (POST {url}): the answer has no access_token")
                })?;
                let token_type = auth.token_type.unwrap_or_else(|| "Bearer".to_owned());
                Ok(Secret::new(format!("{token_type} {}", auth.access_token)))
            }
            401 | 403 => bail!(
                "DSM refused the API key in {} (HTTP {}: {}); check that it is the key of an app with access to the model key",
                self.api_key_env,
                response.status,
                error_text(&response.body, &secrets)
            ),
            status => bail!(
                "authenticating to DSM (POST {url}): HTTP {status}: {}",
                error_text(&response.body, &secrets)
            ),
        }
    }
}

/// One request made with a session token.
struct Call<'a> {
    service: &'static str,
    method: &'a str,
    url: &'a str,
    body: Option<&'a serde_json::Value>,
    keep: Body,
}

/// Sends `call` with the session token; on 401 logs in again and repeats it once.
fn with_session(
    client: &Client,
    session: &mut Secret,
    login: &dyn Fn() -> Result<Secret>,
    call: Call<'_>,
) -> Result<Response> {
    let Call {
        service,
        method,
        url,
        body,
        keep,
    } = call;
    let response = client
        .send(method, url, session, body, keep)
        .with_context(|| format!("{method} {url}"))?;
    if response.status != 401 {
        return Ok(response);
    }
    tracing::debug!("{service} answered 401 to {method} {url}; logging in again");
    *session = login().context("logging in again after the session expired")?;
    let response = client
        .send(method, url, session, body, keep)
        .with_context(|| format!("{method} {url}"))?;
    if response.status == 401 {
        bail!(
            "{method} {url}: {service} rejected a fresh session token too (HTTP 401: {}); the account may lack the permission",
            error_text(&response.body, &[session])
        );
    }
    Ok(response)
}

impl AttestationProvider for Fortanix {
    fn name(&self) -> &'static str {
        "fortanix"
    }

    fn registration_request(&self, values: &ReferenceValues) -> Result<PlannedRequest> {
        let app_id = self.app_id.as_deref().ok_or_else(|| {
            bad_input(format!(
                "{}: attestation.app-id is not set; set it to the id of the model's CCM application (CCM: Applications)",
                self.source
            ))
        })?;
        let coprocessors = if values.gpu_attestation {
            json!([{ "attestation": "Required", "gpu_vendor": "Nvidia" }])
        } else {
            json!([])
        };
        let mut not_sent = Vec::new();
        let attributes = match values.tee {
            Tee::Snp => {
                let snp = values
                    .snp
                    .as_ref()
                    .ok_or_else(|| anyhow!("{}: no SNP values", values.source.display()))?;
                if let Some(policy) = snp.policy {
                    not_sent.push(format!(
                        "policy {policy:#x}: CCM's image attributes have no policy field (it is not part of the launch digest)"
                    ));
                }
                if let Some(features) = snp.guest_features {
                    not_sent.push(format!(
                        "guest features {features:#x}: measured into every VMSA, so the launch digest already covers them"
                    ));
                }
                json!({ "baremetal_amd_sev_snp": {
                    "measurement": snp.measurement,
                    "vmpl": format!("vmpl{}", snp.vmpl),
                    "coprocessors": coprocessors,
                }})
            }
            Tee::Tdx => {
                let tdx = values
                    .tdx
                    .as_ref()
                    .ok_or_else(|| anyhow!("{}: no TDX values", values.source.display()))?;
                let missing: Vec<String> = tdx
                    .rtmr
                    .iter()
                    .enumerate()
                    .filter(|(_, value)| value.is_none())
                    .map(|(index, _)| format!("rtmr{index}"))
                    .collect();
                if !missing.is_empty() {
                    bail!(
                        "{}: has no {}; CCM's baremetal_tdx image needs mrtd and rtmr0..rtmr3: capture the missing ones from a running TD of this build on the target host and pass them with --rtmr N=HEX",
                        values.source.display(),
                        missing.join(", ")
                    );
                }
                json!({ "baremetal_tdx": {
                    "mrtd": tdx.mrtd,
                    "rtmr0": tdx.rtmr[0],
                    "rtmr1": tdx.rtmr[1],
                    "rtmr2": tdx.rtmr[2],
                    "rtmr3": tdx.rtmr[3],
                    "coprocessors": coprocessors,
                }})
            }
        };
        Ok(PlannedRequest {
            method: "POST".to_owned(),
            url: format!("{}/v1/builds", self.ccm_url),
            auth: format!(
                "Bearer token from POST {}/v1/sys/auth with the login in {}",
                self.ccm_url, self.ccm_credentials_env
            ),
            body: json!({ "app_id": app_id, "attributes": attributes }),
            not_sent,
        })
    }

    fn register(
        &self,
        request: &PlannedRequest,
        dry_run: bool,
        progress: &mut dyn Write,
    ) -> Result<Registration> {
        let mut registration = Registration {
            sent: false,
            request: request.clone(),
            build_id: None,
            status: None,
            pending_task_id: None,
        };
        if dry_run {
            return Ok(registration);
        }
        let login = self.secret(
            &self.ccm_credentials_env,
            "your CCM login as EMAIL:PASSWORD",
        )?;
        let client = self.client()?;
        writeln!(progress, "{:>12} to CCM at {}", "Logging in", self.ccm_url)?;
        let relogin = || self.ccm_login(&client, &login);
        let mut session = relogin()?;
        writeln!(
            progress,
            "{:>12} {} {}",
            "Sending", request.method, request.url
        )?;
        let response = with_session(
            &client,
            &mut session,
            &relogin,
            Call {
                service: "CCM",
                method: &request.method,
                url: &request.url,
                body: Some(&request.body),
                keep: Body::Read,
            },
        )?;
        let secrets = [&login, &session];
        if response.status != 200 && response.status != 201 {
            bail!(
                "{} {}: CCM refused the image (HTTP {}: {})",
                request.method,
                request.url,
                response.status,
                error_text(&response.body, &secrets)
            );
        }
        let build: Build = serde_json::from_str(&response.body).map_err(|err| {
            anyhow!(
                "{} {}: the answer is not a CCM image ({err})",
                request.method,
                request.url
            )
        })?;
        registration.sent = true;
        registration.build_id = build.build_id;
        registration.status = build.status.map(|status| status.status);
        registration.pending_task_id = build.pending_task_id;
        Ok(registration)
    }

    fn check_key_release(&self, progress: &mut dyn Write) -> Result<KeyReleaseStatus> {
        let key_name = self.key_name.as_deref().ok_or_else(|| {
            bad_input(format!(
                "{}: attestation.key-name is not set; set it to the name of the model key in DSM",
                self.source
            ))
        })?;
        let api_key = self.secret(
            &self.api_key_env,
            "the DSM API key of the app that checks the key",
        )?;
        let client = self.client()?;
        writeln!(progress, "{:>12} to DSM at {}", "Logging in", self.dsm_url)?;
        let relogin = || self.dsm_login(&client, &api_key);
        let mut session = relogin()?;
        writeln!(progress, "{:>12} key {key_name:?}", "Reading")?;
        let descriptor = json!({ "name": key_name });

        let info_url = format!("{}/crypto/v1/keys/info", self.dsm_url);
        let response = with_session(
            &client,
            &mut session,
            &relogin,
            Call {
                service: "DSM",
                method: "POST",
                url: &info_url,
                body: Some(&descriptor),
                keep: Body::Read,
            },
        )?;
        match response.status {
            200 => {}
            404 => {
                return Err(bad_input(format!(
                    "DSM has no key named {key_name:?} visible to the app of {}; check attestation.key-name and the app's groups",
                    self.api_key_env
                )))
            }
            status => bail!(
                "POST {info_url}: HTTP {status}: {}",
                error_text(&response.body, &[&api_key, &session])
            ),
        }
        let sobject: Sobject = serde_json::from_str(&response.body).map_err(|err| {
            anyhow!("POST {info_url}: the answer is not a DSM security object ({err})")
        })?;
        let exportable = sobject.key_ops.iter().any(|op| op == "EXPORT");
        let mut status = KeyReleaseStatus {
            key_name: key_name.to_owned(),
            key_id: sobject.kid,
            key_type: sobject.obj_type,
            key_ops: sobject.key_ops.clone(),
            export_probe: ExportProbe::NotTried,
            restricted: true,
            detail: String::new(),
        };
        if !exportable {
            status.detail = format!(
                "{key_name:?} has no EXPORT operation: its value never leaves DSM (workloads use it through wrap/unwrap or decrypt)"
            );
            return Ok(status);
        }
        let export_url = format!("{}/crypto/v1/keys/export", self.dsm_url);
        writeln!(
            progress,
            "{:>12} to export {key_name:?} as a non-attested app (DSM must refuse)",
            "Trying"
        )?;
        let response = with_session(
            &client,
            &mut session,
            &relogin,
            Call {
                service: "DSM",
                method: "POST",
                url: &export_url,
                body: Some(&descriptor),
                keep: Body::Discard,
            },
        )?;
        match response.status {
            403 => {
                status.export_probe = ExportProbe::Refused;
                status.detail = format!(
                    "{key_name:?} is exportable, and DSM refused to export it to the non-attested API-key app of {} (HTTP 403)",
                    self.api_key_env
                );
            }
            200 => {
                status.export_probe = ExportProbe::Allowed;
                status.restricted = false;
                status.detail = format!(
                    "DSM exported {key_name:?} to the non-attested API-key app of {}: release is not restricted to attested workloads (the value was discarded unread)",
                    self.api_key_env
                );
            }
            other => bail!("POST {export_url}: unexpected HTTP {other} to the export probe"),
        }
        Ok(status)
    }
}
