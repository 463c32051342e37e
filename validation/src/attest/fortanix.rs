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
    Registration, Secret, Settings, WorkloadIdentity, WorkloadProbe,
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
    #[serde(default)]
    entity_id: Option<String>,
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

    /// The HTTPS client, presenting `workload`'s certificate when given.
    fn client(&self, workload: Option<&WorkloadIdentity>) -> Result<Client> {
        Client::new(
            self.settings.ca_file.as_deref(),
            self.settings.timeout,
            self.settings.proxy_from_env,
            workload,
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
            200 => dsm_session(&url, &response.body).map(|(session, _)| session),
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

/// The bearer header value and the entity id of a successful DSM login's answer.
fn dsm_session(url: &str, body: &str) -> Result<(Secret, Option<String>)> {
    let auth: DsmAuthResponse = serde_json::from_str(body).map_err(|_| {
        anyhow!("authenticating to DSM (POST {url}): the answer has no access_token")
    })?;
    let token_type = auth.token_type.unwrap_or_else(|| "Bearer".to_owned());
    Ok((
        Secret::new(format!("{token_type} {}", auth.access_token)),
        auth.entity_id,
    ))
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
        let client = self.client(None)?;
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
        let api_key = self.env.secret(&self.api_key_env);
        let workload = self.settings.workload.as_ref();
        if api_key.is_none() && workload.is_none() {
            return Err(bad_input(format!(
                "environment variable {} is not set and no --workload-cert was given; export {} with the DSM API key of a non-attested app (to show DSM refuses it the key), or pass --workload-cert and --workload-key with a certificate CCM issued to a workload of this build (to show release to it works)",
                self.api_key_env, self.api_key_env
            )));
        }
        let descriptor = json!({ "name": key_name });
        let mut status = KeyReleaseStatus {
            key_name: key_name.to_owned(),
            key_id: None,
            key_type: None,
            key_ops: Vec::new(),
            export_probe: ExportProbe::NoCredential,
            workload: None,
            restricted: false,
            detail: String::new(),
        };
        // Whether any session saw the key's metadata.
        let mut seen = false;

        // The non-attested app: DSM must refuse it the key.
        if let Some(api_key) = &api_key {
            let client = self.client(None)?;
            writeln!(progress, "{:>12} to DSM at {}", "Logging in", self.dsm_url)?;
            let relogin = || self.dsm_login(&client, api_key);
            let mut session = relogin()?;
            let probe = self.probe(
                &client,
                &mut session,
                &relogin,
                &descriptor,
                "as a non-attested app (DSM must refuse)",
                progress,
            )?;
            let Some((sobject, export)) = probe.outcome else {
                return Err(bad_input(format!(
                    "DSM has no key named {key_name:?} visible to the app of {}; check attestation.key-name and the app's groups",
                    self.api_key_env
                )));
            };
            status.set_metadata(sobject);
            seen = true;
            match export {
                None => status.export_probe = ExportProbe::NotTried,
                Some(403) => {
                    status.export_probe = ExportProbe::Refused;
                    status.restricted = true;
                    status.detail = format!(
                        "{key_name:?} is exportable, and DSM refused to export it to the non-attested API-key app of {} (HTTP 403)",
                        self.api_key_env
                    );
                }
                Some(200) => {
                    status.export_probe = ExportProbe::Allowed;
                    status.detail = format!(
                        "DSM exported {key_name:?} to the non-attested API-key app of {}: release is not restricted to attested workloads (the value was discarded unread)",
                        self.api_key_env
                    );
                }
                Some(other) => bail!(
                    "POST {}/crypto/v1/keys/export: unexpected HTTP {other} to the export probe",
                    self.dsm_url
                ),
            }
        }

        // The attested workload: DSM must let it use the key.
        if let Some(workload) = workload {
            let client = self.client(Some(workload))?;
            writeln!(
                progress,
                "{:>12} to DSM at {} with the workload certificate {}",
                "Logging in",
                self.dsm_url,
                workload.cert.display()
            )?;
            let relogin = || self.dsm_workload_login(&client, workload).map(|(s, _)| s);
            let (mut session, entity_id) = self.dsm_workload_login(&client, workload)?;
            let probe = self.probe(
                &client,
                &mut session,
                &relogin,
                &descriptor,
                "as the attested workload (DSM must release it)",
                progress,
            )?;
            let report = match probe.outcome {
                None => WorkloadProbe {
                    entity_id,
                    export: ExportProbe::NotTried,
                    usable: false,
                    detail: format!(
                        "DSM shows no key named {key_name:?} to the attested workload's app; add that app to the key's group (or check attestation.key-name)"
                    ),
                },
                Some((sobject, export)) => {
                    if !seen {
                        status.set_metadata(sobject);
                        seen = true;
                    }
                    match export {
                        None => WorkloadProbe {
                            entity_id,
                            export: ExportProbe::NotTried,
                            usable: true,
                            detail: format!(
                                "the attested workload's app sees {key_name:?} and uses it inside DSM ({})",
                                status.key_ops.join(", ")
                            ),
                        },
                        Some(200) => WorkloadProbe {
                            entity_id,
                            export: ExportProbe::Allowed,
                            usable: true,
                            detail: format!(
                                "DSM released {key_name:?} to the attested workload (HTTP 200; the value was discarded unread)"
                            ),
                        },
                        Some(403) => WorkloadProbe {
                            entity_id,
                            export: ExportProbe::Refused,
                            usable: false,
                            detail: format!(
                                "DSM refused to export {key_name:?} to the attested workload (HTTP 403: {}); give the workload's app access through the key's group and its policy",
                                probe.error_text
                            ),
                        },
                        Some(other) => bail!(
                            "POST {}/crypto/v1/keys/export: unexpected HTTP {other} to the workload's export",
                            self.dsm_url
                        ),
                    }
                }
            };
            status.workload = Some(report);
        }

        // The verdict from the metadata, where it decides; else the non-attested probe's above.
        if seen && !status.key_ops.iter().any(|op| op == "EXPORT") {
            status.export_probe = ExportProbe::NotTried;
            status.restricted = true;
            status.detail = format!(
                "{key_name:?} has no EXPORT operation: its value never leaves DSM (workloads use it through wrap/unwrap or decrypt)"
            );
        } else if api_key.is_none() && seen {
            status.detail = format!(
                "{key_name:?} is exportable and no API key of a non-attested app was given; export {} with one (an app outside the attested workloads) so DSM's refusal can be shown",
                self.api_key_env
            );
        } else if api_key.is_none() {
            status.detail = format!(
                "no session saw {key_name:?}, so its operations are unknown; export {} with the API key of a non-attested app that sees the key so DSM's refusal can be shown",
                self.api_key_env
            );
        }
        Ok(status)
    }
}

/// What one session saw of the key.
struct Probe {
    /// The key's metadata and, when it is exportable, the export's HTTP status; `None` when the
    /// session does not see the key (404).
    outcome: Option<(Sobject, Option<u16>)>,
    /// The export answer's error text (redacted), when it was refused.
    error_text: String,
}

impl KeyReleaseStatus {
    fn set_metadata(&mut self, sobject: Sobject) {
        self.key_id = sobject.kid;
        self.key_type = sobject.obj_type;
        self.key_ops = sobject.key_ops;
    }
}

impl Fortanix {
    /// Logs in to DSM with the workload certificate (mutual TLS; the app id, when given, as the
    /// Basic user with an empty password) and returns the bearer header value and the entity id.
    fn dsm_workload_login(
        &self,
        client: &Client,
        workload: &WorkloadIdentity,
    ) -> Result<(Secret, Option<String>)> {
        let url = format!("{}/sys/v1/session/auth", self.dsm_url);
        let basic = Secret::new(match &workload.app_id {
            Some(app_id) => format!("Basic {}", base64(format!("{app_id}:").as_bytes())),
            None => String::new(),
        });
        let response = client
            .send("POST", &url, &basic, None, Body::Read)
            .with_context(|| {
                format!(
                    "authenticating to DSM with the workload certificate {} (POST {url})",
                    workload.cert.display()
                )
            })?;
        match response.status {
            200 => dsm_session(&url, &response.body),
            401 | 403 => bail!(
                "DSM refused the workload certificate {} (HTTP {}: {}); check that CCM issued it for this build, that it has not expired, and that the DSM app trusts the CCM zone's CA",
                workload.cert.display(),
                response.status,
                error_text(&response.body, &[])
            ),
            status => bail!(
                "authenticating to DSM with the workload certificate (POST {url}): HTTP {status}: {}",
                error_text(&response.body, &[])
            ),
        }
    }

    /// Reads the key's metadata with `session` and, when the key is exportable, asks to export
    /// it (the answer's body is never read on success).
    fn probe(
        &self,
        client: &Client,
        session: &mut Secret,
        relogin: &dyn Fn() -> Result<Secret>,
        descriptor: &serde_json::Value,
        who: &str,
        progress: &mut dyn Write,
    ) -> Result<Probe> {
        let key_name = descriptor["name"].as_str().unwrap_or_default();
        writeln!(progress, "{:>12} key {key_name:?}", "Reading")?;
        let info_url = format!("{}/crypto/v1/keys/info", self.dsm_url);
        let response = with_session(
            client,
            session,
            relogin,
            Call {
                service: "DSM",
                method: "POST",
                url: &info_url,
                body: Some(descriptor),
                keep: Body::Read,
            },
        )?;
        match response.status {
            200 => {}
            404 => {
                return Ok(Probe {
                    outcome: None,
                    error_text: String::new(),
                })
            }
            status => bail!(
                "POST {info_url}: HTTP {status}: {}",
                error_text(&response.body, &[session])
            ),
        }
        let sobject: Sobject = serde_json::from_str(&response.body).map_err(|err| {
            anyhow!("POST {info_url}: the answer is not a DSM security object ({err})")
        })?;
        if !sobject.key_ops.iter().any(|op| op == "EXPORT") {
            return Ok(Probe {
                outcome: Some((sobject, None)),
                error_text: String::new(),
            });
        }
        let export_url = format!("{}/crypto/v1/keys/export", self.dsm_url);
        writeln!(progress, "{:>12} to export {key_name:?} {who}", "Trying")?;
        let response = with_session(
            client,
            session,
            relogin,
            Call {
                service: "DSM",
                method: "POST",
                url: &export_url,
                body: Some(descriptor),
                // A refusal's text is read; a success's body is the key and is never read.
                keep: Body::ReadUnlessSuccess,
            },
        )?;
        Ok(Probe {
            error_text: error_text(&response.body, &[session]),
            outcome: Some((sobject, Some(response.status))),
        })
    }
}
