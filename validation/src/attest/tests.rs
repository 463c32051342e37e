//! The attest commands against a real HTTPS server on 127.0.0.1 (certificates made here with
//! rcgen; the client trusts that CA through `Settings::ca_file`, the same option as
//! `--ca-file`). The server replays the request/response pairs of a scenario file under
//! tests/data/attest/scenarios/, records every request, and the test compares them field by
//! field with the scenario's. Every command path's stdout, stderr, error chain and every log
//! record are searched for each secret. Output is snapshotted beside the scenario (`.out`;
//! UPDATE_EXPECT=1 rewrites).

use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, Once,
    },
    time::{Duration, Instant},
};

use cvm_core::error::is_bad_input;
use expect_test::ExpectFile;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::{pki_types::PrivateKeyDer, ServerConfig, ServerConnection};
use serde::Deserialize;
use serde_json::Value;

use super::{
    http::{base64, error_text},
    reference,
    run::{self, CheckOptions, RegisterOptions},
    Env, Secret, Settings,
};

/// The DSM API key the tests put in the environment (shaped like one: base64 of id:secret).
const API_KEY: &str = "NWYyYzFhM2UtYXBwOmRzbS1zM2NyZXQtQVBJLWtleS12YWx1ZS0wOTg3";
/// The CCM login the tests put in the environment.
const CCM_LOGIN: &str = "release@example.com:ccm-pa55word-HUNTER2";
/// The variable names the test model uses.
const API_KEY_ENV: &str = "TEST_DSM_API_KEY";
const CCM_ENV: &str = "TEST_CCM_LOGIN";
/// The DSM app id the workload scenarios name (`"workload": "<this id>"`).
const WORKLOAD_APP_ID: &str = "7d3f0c4e-2a1b-4c5d-9e8f-0a1b2c3d4e5f";

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/attest")
}

// ---------------------------------------------------------------------------------------------
// Every log record, captured (ureq logs requests and responses through `log`).

static LOG: Mutex<String> = Mutex::new(String::new());

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        let mut log = LOG.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        log.push_str(&format!(
            "{} {}: {}\n",
            record.level(),
            record.target(),
            record.args()
        ));
    }
    fn flush(&self) {}
}

fn capture_logs() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        log::set_logger(&CaptureLogger).expect("the only logger of this test binary");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

// ---------------------------------------------------------------------------------------------
// The replaying HTTPS server.

#[derive(Debug, Clone, Deserialize)]
struct Scenario {
    about: String,
    command: String,
    model: String,
    measurements: Option<String>,
    flags: Vec<String>,
    env: Vec<String>,
    /// Present the test workload certificate (`--workload-cert`/`--workload-key`), with this
    /// DSM app id when it is a string (`--workload-app-id`).
    #[serde(default)]
    workload: Option<Value>,
    exchanges: Vec<Exchange>,
    exit: u8,
}

#[derive(Debug, Clone, Deserialize)]
struct Exchange {
    request: ExpectedRequest,
    response: ReplayResponse,
}

#[derive(Debug, Clone, Deserialize)]
struct ExpectedRequest {
    method: String,
    path: String,
    /// Headers the request must carry; a `null` value means it must not carry that header.
    headers: BTreeMap<String, Option<String>>,
    body: Option<Value>,
    /// The client certificate the request must come with: `"workload"` for the test workload
    /// certificate; absent for none.
    #[serde(default)]
    client_cert: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct ReplayResponse {
    status: u16,
    body: Value,
}

/// A request as the server received it.
#[derive(Debug)]
struct Recorded {
    method: String,
    path: String,
    headers: BTreeMap<String, String>,
    body: String,
    /// The client certificate of its connection (DER), if one was presented.
    client_cert: Option<Vec<u8>>,
}

/// The test workload identity: a "CCM zone" CA and a workload certificate it issued, made once
/// per test process. The replay server trusts the zone CA for client certificates (and lets
/// clients without one in, as DSM does for API-key apps).
struct WorkloadPki {
    zone_ca_der: Vec<u8>,
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
}

fn workload_pki() -> &'static WorkloadPki {
    static PKI: std::sync::OnceLock<WorkloadPki> = std::sync::OnceLock::new();
    PKI.get_or_init(|| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cvm-stack test CCM zone CA");
        let zone = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["llama.inference.example".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "llama.inference.example");
        let cert = params.signed_by(&key, &zone).unwrap();
        WorkloadPki {
            zone_ca_der: zone.der().to_vec(),
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
        }
    })
}

struct Server {
    port: u16,
    ca_pem: String,
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<Recorded>>,
}

fn tls_config() -> (Arc<ServerConfig>, String) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "cvm-stack attest test CA");
    let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut zone = rustls::RootCertStore::empty();
    zone.add(workload_pki().zone_ca_der.clone().into()).unwrap();
    let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(zone),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (Arc::new(config), issuer.pem())
}

/// Starts a server answering each connection's one request with the next response.
fn start_replay(responses: Vec<(u16, String)>) -> Server {
    let (config, ca_pem) = tls_config();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_seen = stop.clone();
    let handle = std::thread::spawn(move || {
        let mut recorded = Vec::new();
        let mut responses = responses.into_iter();
        loop {
            let Ok((mut stream, _)) = listener.accept() else {
                break;
            };
            if stop_seen.load(Ordering::SeqCst) {
                break;
            }
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut connection = ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::Stream::new(&mut connection, &mut stream);
            let Some(mut request) = read_request(&mut tls) else {
                continue;
            };
            request.client_cert = tls
                .conn
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|cert| cert.to_vec());
            recorded.push(request);
            let (status, body) = responses
                .next()
                .unwrap_or((500, "the scenario has no more exchanges".to_owned()));
            let content_type = if body.starts_with('{') {
                "application/json"
            } else {
                "text/plain"
            };
            let head = format!(
                "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                reason(status),
                body.len()
            );
            let _ = tls.write_all(head.as_bytes());
            let _ = tls.write_all(body.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
        recorded
    });
    Server {
        port,
        ca_pem,
        stop,
        handle,
    }
}

impl Server {
    /// Stops the server and returns what it received.
    fn finish(self) -> Vec<Recorded> {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        self.handle.join().unwrap()
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Status",
    }
}

fn read_request(stream: &mut impl Read) -> Option<Recorded> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let path = words.next()?.to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length: usize = headers
        .get("content-length")
        .map_or(Some(0), |value| value.parse().ok())?;
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        client_cert: None,
    })
}

// ---------------------------------------------------------------------------------------------
// Running a command path and checking it.

/// What one command path produced.
struct Outcome {
    stdout: String,
    stderr: String,
    error: Option<String>,
    exit: u8,
}

impl Outcome {
    fn all_text(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.stdout,
            self.stderr,
            self.error.as_deref().unwrap_or("")
        )
    }
}

fn placeholders(text: &str) -> String {
    text.replace("{API_KEY}", API_KEY)
        .replace("{CCM_BASIC}", &base64(CCM_LOGIN.as_bytes()))
        .replace(
            "{WORKLOAD_APP_BASIC}",
            &base64(format!("{WORKLOAD_APP_ID}:").as_bytes()),
        )
}

/// What a command path needs: the model (with `{PORT}` filled in), the artifacts, the settings
/// trusting the test CA, and the scenario's environment.
struct Prepared {
    dir: tempfile::TempDir,
    model: cvm_core::model::LoadedModel,
    artifacts: PathBuf,
    settings: Settings,
    env: Env,
}

fn prepare(scenario: &Scenario, port: u16, ca_pem: &str, timeout: Duration) -> Prepared {
    let dir = tempfile::tempdir().unwrap();
    let model_text = std::fs::read_to_string(data_dir().join(&scenario.model))
        .unwrap()
        .replace("{PORT}", &port.to_string());
    let model_path = dir.path().join("cvm.toml");
    std::fs::write(&model_path, model_text).unwrap();
    let model = cvm_core::model::load(Some(&model_path)).unwrap();
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir(&artifacts).unwrap();
    if let Some(measurements) = &scenario.measurements {
        std::fs::copy(
            data_dir().join(measurements),
            artifacts.join(reference::FILE_NAME),
        )
        .unwrap();
    }
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).unwrap();
    let workload = scenario.workload.as_ref().map(|app_id| {
        let cert = dir.path().join("workload.pem");
        let key = dir.path().join("workload.key");
        std::fs::write(&cert, &workload_pki().cert_pem).unwrap();
        std::fs::write(&key, &workload_pki().key_pem).unwrap();
        super::WorkloadIdentity {
            cert,
            key,
            app_id: app_id.as_str().map(str::to_owned),
        }
    });
    let settings = Settings {
        ca_file: Some(ca_file),
        timeout,
        ccm_credentials_env: CCM_ENV.to_owned(),
        proxy_from_env: false,
        workload,
    };
    let mut env = BTreeMap::new();
    for name in &scenario.env {
        match name.as_str() {
            "api-key" => env.insert(API_KEY_ENV.to_owned(), API_KEY.to_owned()),
            "ccm-login" => env.insert(CCM_ENV.to_owned(), CCM_LOGIN.to_owned()),
            other => panic!("unknown env entry {other}"),
        };
    }
    Prepared {
        dir,
        model,
        artifacts,
        settings,
        env: Env::Map(env),
    }
}

/// Runs the scenario's command and returns what it printed.
fn run_command(scenario: &Scenario, port: u16, ca_pem: &str, timeout: Duration) -> Outcome {
    let Prepared {
        dir,
        model,
        artifacts,
        settings,
        env,
    } = prepare(scenario, port, ca_pem, timeout);
    let json = scenario.flags.iter().any(|flag| flag == "--json");
    let dry_run = scenario.flags.iter().any(|flag| flag == "--dry-run");
    // `--rtmr=N=HEX` flags, as `attest register --rtmr N=HEX` takes them.
    let rtmr_flags: Vec<String> = scenario
        .flags
        .iter()
        .filter_map(|flag| flag.strip_prefix("--rtmr="))
        .map(str::to_owned)
        .collect();
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let result = match scenario.command.as_str() {
        "register" => reference::parse_operator_rtmrs(&rtmr_flags)
            .and_then(|rtmrs| {
                run::register(
                    &RegisterOptions {
                        model: &model,
                        artifacts: &artifacts,
                        dry_run,
                        json,
                        settings,
                        rtmrs,
                    },
                    env,
                    &mut stdout,
                    &mut stderr,
                )
            })
            .map(|()| 0),
        "check" => run::check(
            &CheckOptions {
                model: &model,
                json,
                settings,
            },
            env,
            &mut stdout,
            &mut stderr,
        )
        .map(|restricted| if restricted { 0 } else { 1 }),
        other => panic!("unknown command {other}"),
    };
    let (error, exit) = match result {
        Ok(code) => (None, code),
        // Exactly what xtask's main prints and how it maps the exit code.
        Err(err) => (
            Some(format!("error: {err:#}")),
            if is_bad_input(&err) { 2 } else { 1 },
        ),
    };
    let port_text = port.to_string();
    let dir_text = dir.path().display().to_string();
    let unport = |text: String| {
        text.replace(&port_text, "{PORT}")
            .replace(&dir_text, "{DIR}")
    };
    Outcome {
        stdout: unport(String::from_utf8(stdout).unwrap()),
        stderr: unport(String::from_utf8(stderr).unwrap()),
        error: error.map(unport),
        exit,
    }
}

/// Every secret value the tests use, including the tokens the scenario's server hands out and
/// any key value it returns.
fn secrets(scenario: &Scenario) -> Vec<String> {
    let mut secrets = vec![
        API_KEY.to_owned(),
        CCM_LOGIN.to_owned(),
        "ccm-pa55word-HUNTER2".to_owned(),
        base64(CCM_LOGIN.as_bytes()),
    ];
    if scenario.workload.is_some() {
        // The workload's private key, line by line.
        secrets.extend(
            workload_pki()
                .key_pem
                .lines()
                .filter(|line| !line.starts_with("-----") && line.len() > 16)
                .map(str::to_owned),
        );
    }
    for exchange in &scenario.exchanges {
        for field in ["access_token", "value"] {
            if let Some(value) = exchange.response.body.get(field).and_then(Value::as_str) {
                secrets.push(value.to_owned());
            }
        }
    }
    secrets
}

#[track_caller]
fn assert_no_secret(text: &str, secrets: &[String], what: &str) {
    for secret in secrets {
        assert!(
            !text.contains(secret.as_str()),
            "{what} leaks the secret {secret:?}:\n{text}"
        );
    }
}

/// The scenario file `name` of tests/data/attest/scenarios/.
fn load_scenario(name: &str) -> Scenario {
    let path = data_dir().join("scenarios").join(format!("{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// A replay server answering with `scenario`'s responses, placeholders filled in.
fn replay(scenario: &Scenario) -> Server {
    let responses = scenario
        .exchanges
        .iter()
        .map(|exchange| {
            let body = match &exchange.response.body {
                Value::String(text) => placeholders(text),
                json => json.to_string(),
            };
            (exchange.response.status, body)
        })
        .collect();
    start_replay(responses)
}

/// The scenario `name`, its replay server, and what a command path needs against it.
fn serve(name: &str) -> (Scenario, Server, Prepared) {
    let scenario = load_scenario(name);
    let server = replay(&scenario);
    let prepared = prepare(
        &scenario,
        server.port,
        &server.ca_pem,
        Duration::from_secs(10),
    );
    (scenario, server, prepared)
}

/// Runs the scenario `name` and checks requests, exit code, output snapshot and secrets.
#[track_caller]
fn check(name: &str) {
    capture_logs();
    let scenario = load_scenario(name);
    assert!(!scenario.about.is_empty());
    let server = replay(&scenario);
    let outcome = run_command(
        &scenario,
        server.port,
        &server.ca_pem,
        Duration::from_secs(10),
    );
    let port = server.port;
    let recorded = server.finish();

    // Our requests, field by field.
    let shown: Vec<_> = recorded
        .iter()
        .map(|request| format!("{} {}", request.method, request.path))
        .collect();
    assert_eq!(
        recorded.len(),
        scenario.exchanges.len(),
        "{name}: requests received: {shown:?}; error: {:?}",
        outcome.error
    );
    for (index, (got, exchange)) in recorded.iter().zip(&scenario.exchanges).enumerate() {
        let want = &exchange.request;
        let at = format!("{name}: request {index} ({} {})", want.method, want.path);
        assert_eq!(got.method, want.method, "{at}: method");
        assert_eq!(got.path, want.path, "{at}: path");
        assert_eq!(
            got.headers.get("host").map(String::as_str),
            Some(format!("127.0.0.1:{port}").as_str()),
            "{at}: host"
        );
        for (header, value) in &want.headers {
            assert_eq!(
                got.headers.get(header).map(String::as_str),
                value.as_deref().map(placeholders).as_deref(),
                "{at}: header {header}"
            );
        }
        match want.client_cert.as_deref() {
            None => assert_eq!(got.client_cert, None, "{at}: no client certificate"),
            Some("workload") => assert_eq!(
                got.client_cert.as_deref(),
                Some(workload_pki().cert_der.as_slice()),
                "{at}: the workload certificate"
            ),
            Some(other) => panic!("{at}: unknown client_cert {other}"),
        }
        match &want.body {
            None => assert_eq!(got.body, "", "{at}: a request without a body"),
            Some(body) => {
                let sent: Value = serde_json::from_str(&got.body)
                    .unwrap_or_else(|err| panic!("{at}: body is not JSON ({err}): {}", got.body));
                assert_eq!(&sent, body, "{at}: body");
            }
        }
    }

    assert_eq!(
        outcome.exit, scenario.exit,
        "{name}: exit code; stdout:\n{}\nerror: {:?}",
        outcome.stdout, outcome.error
    );
    if let Some(error) = &outcome.error {
        assert_eq!(
            error.lines().count(),
            1,
            "{name}: the error is one line: {error}"
        );
    }

    let secrets = secrets(&scenario);
    assert_no_secret(&outcome.all_text(), &secrets, name);
    let log = LOG
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .clone();
    if !scenario.exchanges.is_empty() {
        // The capture works: ureq's records of this very run are in it.
        assert!(
            log.contains(&format!("127.0.0.1:{port}")),
            "{name}: no log records"
        );
    }
    assert_no_secret(&log, &secrets, "the log");

    let snapshot = format!(
        "--- stdout\n{}--- stderr\n{}--- error\n{}\n--- exit {}\n",
        outcome.stdout,
        outcome.stderr,
        outcome.error.as_deref().unwrap_or("(none)"),
        outcome.exit
    );
    ExpectFile {
        path: data_dir().join("scenarios").join(format!("{name}.out")),
        position: file!(),
    }
    .assert_eq(&snapshot);
}

#[test]
fn register_snp_dry_run() {
    check("register-snp-dry-run");
}

#[test]
fn register_snp() {
    check("register-snp");
}

#[test]
fn register_snp_json() {
    check("register-snp-json");
}

#[test]
fn register_expired_token() {
    check("register-expired-token");
}

#[test]
fn register_login_refused() {
    check("register-login-refused");
}

#[test]
fn register_quota() {
    check("register-quota");
}

#[test]
fn register_missing_credentials() {
    check("register-missing-credentials");
}

#[test]
fn register_no_attestation() {
    check("register-no-attestation");
}

#[test]
fn register_no_measurements() {
    check("register-no-measurements");
}

#[test]
fn register_tdx_incomplete() {
    check("register-tdx-incomplete");
}

#[test]
fn register_tdx_operator_rtmrs() {
    check("register-tdx-operator-rtmrs");
}

#[test]
fn register_snp_account() {
    check("register-snp-account");
}

#[test]
fn register_unknown_account() {
    check("register-unknown-account");
}

#[test]
fn register_tdx_bad_rtmr() {
    check("register-tdx-bad-rtmr");
}

#[test]
fn check_restricted() {
    check("check-restricted");
}

#[test]
fn check_restricted_json() {
    check("check-restricted-json");
}

#[test]
fn check_not_exportable() {
    check("check-not-exportable");
}

#[test]
fn check_export_allowed() {
    check("check-export-allowed");
}

#[test]
fn check_expired_token() {
    check("check-expired-token");
}

#[test]
fn check_expired_twice() {
    check("check-expired-twice");
}

#[test]
fn check_api_key_refused() {
    check("check-api-key-refused");
}

#[test]
fn check_unknown_key() {
    check("check-unknown-key");
}

#[test]
fn check_workload_released() {
    check("check-workload-released");
}

#[test]
fn check_workload_refused() {
    check("check-workload-refused");
}

#[test]
fn check_workload_not_exportable() {
    check("check-workload-not-exportable");
}

#[test]
fn check_workload_cert_refused() {
    check("check-workload-cert-refused");
}

/// A workload key file that is not PEM, or a certificate file that is missing, is a one-line
/// bad-input error naming the flag and the file, before anything is sent.
#[test]
fn workload_identity_files_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("workload.pem");
    let key = dir.path().join("workload.key");
    std::fs::write(&cert, &workload_pki().cert_pem).unwrap();
    std::fs::write(&key, "not a key\n").unwrap();
    let identity = |cert: &Path| super::WorkloadIdentity {
        cert: cert.to_owned(),
        key: key.clone(),
        app_id: None,
    };
    let err = super::http::Client::new(None, Duration::from_secs(1), false, Some(&identity(&cert)))
        .err()
        .unwrap();
    assert!(is_bad_input(&err));
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!(
            "--workload-key {}: no PEM private key",
            key.display()
        )),
        "{text}"
    );
    let missing = dir.path().join("missing.pem");
    let err = super::http::Client::new(
        None,
        Duration::from_secs(1),
        false,
        Some(&identity(&missing)),
    )
    .err()
    .unwrap();
    assert!(is_bad_input(&err));
    let text = format!("{err:#}");
    assert!(
        text.starts_with(&format!(
            "--workload-cert {}: cannot read it",
            missing.display()
        )),
        "{text}"
    );
}

#[test]
fn check_missing_api_key() {
    check("check-missing-api-key");
}

#[test]
fn check_no_attestation() {
    check("check-no-attestation");
}

/// Every scenario file has its test above (a new file without one fails here).
#[test]
fn every_scenario_is_tested() {
    let source = include_str!("tests.rs");
    let mut names: Vec<String> = std::fs::read_dir(data_dir().join("scenarios"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 20);
    for name in names {
        assert!(
            source.contains(&format!("check(\"{name}\")")),
            "scenario {name} has no test"
        );
    }
}

/// A server that accepts the connection and never answers: both commands fail within the
/// timeout (bounded), with an error that says so and leaks nothing.
#[test]
fn server_that_never_answers_times_out() {
    capture_logs();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_seen = stop.clone();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            if stop_seen.load(Ordering::SeqCst) {
                break;
            }
            // Keeps the connection open and says nothing.
            held.push(stream);
        }
    });
    let (_, ca_pem) = tls_config();
    for command in ["register", "check"] {
        let scenario = Scenario {
            about: "silent server".to_owned(),
            command: command.to_owned(),
            model: "cvm.toml".to_owned(),
            measurements: Some("measurements-snp.json".to_owned()),
            flags: Vec::new(),
            env: vec!["api-key".to_owned(), "ccm-login".to_owned()],
            workload: None,
            exchanges: Vec::new(),
            exit: 1,
        };
        let started = Instant::now();
        let outcome = run_command(&scenario, port, &ca_pem, Duration::from_secs(1));
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(5),
            "{command}: took {elapsed:?}"
        );
        assert_eq!(outcome.exit, 1, "{command}: {:?}", outcome.error);
        let error = outcome.error.clone().unwrap();
        assert!(error.contains("no answer within 1 s"), "{command}: {error}");
        assert_no_secret(&outcome.all_text(), &secrets(&scenario), command);
    }
    stop.store(true, Ordering::SeqCst);
    let _ = TcpStream::connect(("127.0.0.1", port));
    holder.join().unwrap();
}

/// The client trusts only the CA it is given: a server whose certificate comes from another CA
/// is refused before any request is sent.
#[test]
fn untrusted_server_is_refused() {
    let server = start_replay(vec![(200, "{}".to_owned())]);
    let (_, other_ca) = tls_config();
    let scenario = Scenario {
        about: "untrusted".to_owned(),
        command: "check".to_owned(),
        model: "cvm.toml".to_owned(),
        measurements: None,
        flags: Vec::new(),
        env: vec!["api-key".to_owned()],
        workload: None,
        exchanges: Vec::new(),
        exit: 1,
    };
    let outcome = run_command(&scenario, server.port, &other_ca, Duration::from_secs(5));
    let recorded = server.finish();
    assert!(recorded.is_empty(), "{recorded:?}");
    assert_eq!(outcome.exit, 1);
    let error = outcome.error.clone().unwrap();
    assert!(error.contains("certificate"), "{error}");
    assert_no_secret(&outcome.all_text(), &secrets(&scenario), "untrusted");
}

/// Secrets: `Debug` never shows them; server text is cut to one short line with them removed.
#[test]
fn secrets_are_redacted() {
    let secret = Secret::new(API_KEY);
    assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
    let env = Env::Map(BTreeMap::from([(
        API_KEY_ENV.to_owned(),
        API_KEY.to_owned(),
    )]));
    assert!(!format!("{env:?}").contains(API_KEY));
    assert_eq!(
        error_text(&format!("bad key\n {API_KEY} "), &[&secret]),
        "bad key <redacted>"
    );
    assert_eq!(
        error_text(r#"{"message": "Image creation limit exceeded"}"#, &[]),
        "Image creation limit exceeded"
    );
    assert_eq!(error_text("", &[]), "no error text");
    assert_eq!(error_text(&"x".repeat(500), &[]).chars().count(), 201);
}

/// RFC 4648 test vectors.
#[test]
fn base64_vectors() {
    for (input, expect) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), expect, "{input:?}");
    }
}

/// Reads a measurements file for `tee` and renders the values, or the error with its exit code.
#[track_caller]
fn check_measurements(tee: cvm_core::model::Tee, text: &str, expect: expect_test::Expect) {
    let path = Path::new("artifacts/measurements.json");
    let actual = match reference::parse(text, path, tee, true) {
        Ok(values) => format!("{:?} {:?}", values.snp, values.tdx),
        Err(err) => format!("exit {}: {err:#}", if is_bad_input(&err) { 2 } else { 1 }),
    };
    expect.assert_eq(&actual);
}

#[test]
fn measurements_files() {
    use cvm_core::model::Tee;
    use expect_test::expect;
    let digest = "ab".repeat(48);
    check_measurements(
        Tee::Snp,
        &format!(
            r#"{{"schema":1,"tee":"snp","snp":{{"measurement":"{digest}","inputs":{{"policy":196608,"guest_features":"0x1"}}}}}}"#
        ),
        expect![[
            r#"Some(SnpValues { measurement: "abababababababababababababababababababababababababababababababababababababababababababababababab", policy: Some(196608), guest_features: Some(1), vmpl: 0 }) None"#
        ]],
    );
    check_measurements(
        Tee::Snp,
        &format!(r#"{{"schema":1,"tee":"snp","snp":{{"measurement":"{digest}"}}}}"#),
        expect![[
            r#"Some(SnpValues { measurement: "abababababababababababababababababababababababababababababababababababababababababababababababab", policy: None, guest_features: None, vmpl: 0 }) None"#
        ]],
    );
    check_measurements(
        Tee::Snp,
        r#"{"schema":1,"tee":"snp","snp":{"measurement":"abc"}}"#,
        expect![[
            r#"exit 2: artifacts/measurements.json: snp.measurement "abc" is not 96 hex digits; rebuild with `cargo xtask guest build`"#
        ]],
    );
    check_measurements(
        Tee::Snp,
        &format!(r#"{{"schema":2,"tee":"snp","snp":{{"measurement":"{digest}"}}}}"#),
        expect![[
            r#"exit 2: artifacts/measurements.json: schema 2 is not supported (expected 1); rebuild with this version of cvm-stack"#
        ]],
    );
    check_measurements(
        Tee::Snp,
        &format!(r#"{{"schema":1,"tee":"tdx","tdx":{{"mrtd":"{digest}"}}}}"#),
        expect![[
            r#"exit 2: artifacts/measurements.json: tee is tdx but the model's deployment.tee is snp; pass --artifacts of a snp build"#
        ]],
    );
    check_measurements(
        Tee::Snp,
        &format!(
            r#"{{"schema":1,"tee":"snp","snp":{{"measurement":"{digest}","inputs":{{"policy":"lots"}}}}}}"#
        ),
        expect![[
            r#"exit 2: artifacts/measurements.json: snp.inputs.policy is neither a number nor 0x-prefixed hex; rebuild with `cargo xtask guest build`"#
        ]],
    );
    check_measurements(
        Tee::Tdx,
        &format!(
            r#"{{"schema":1,"tee":"tdx","tdx":{{"mrtd":"{digest}","rtmr1":null,"rtmr2":"{digest}"}}}}"#
        ),
        expect![[
            r#"None Some(TdxValues { mrtd: "abababababababababababababababababababababababababababababababababababababababababababababababab", rtmr: [None, None, Some("abababababababababababababababababababababababababababababababababababababababababababababababab"), None] })"#
        ]],
    );
    check_measurements(
        Tee::Snp,
        "not json",
        expect![[
            r#"exit 2: artifacts/measurements.json: not a measurements file (expected ident at line 1 column 2); rebuild with `cargo xtask guest build`"#
        ]],
    );
}

/// The same scenarios as one check result for validation's `e2e.key-release` stage.
#[test]
fn key_release_policy_check_results() {
    use cvm_core::check::Status;
    for (name, status, detail) in [
        ("check-restricted", Status::Pass, "refused to export"),
        ("check-not-exportable", Status::Pass, "no EXPORT operation"),
        ("check-export-allowed", Status::Fail, "not restricted"),
        (
            "check-workload-released",
            Status::Pass,
            "released \"model-key-llama\" to the attested workload",
        ),
        (
            "check-workload-refused",
            Status::Fail,
            "refused to export \"model-key-llama\" to the attested workload",
        ),
        ("check-expired-twice", Status::Fail, "fresh session token"),
        (
            "check-missing-api-key",
            Status::Skip,
            "TEST_DSM_API_KEY is not set",
        ),
        (
            "check-no-attestation",
            Status::Skip,
            "no [attestation] section",
        ),
    ] {
        let (scenario, server, prepared) = serve(name);
        let result =
            super::key_release_policy_check(&prepared.model, &prepared.settings, prepared.env);
        let recorded = server.finish();
        assert_eq!(recorded.len(), scenario.exchanges.len(), "{name}");
        assert_eq!(result.id, "e2e.key-release");
        assert_eq!(result.status, status, "{name}: {}", result.detail);
        assert!(result.detail.contains(detail), "{name}: {}", result.detail);
        assert_no_secret(&format!("{result:?}"), &secrets(&scenario), name);
    }
}

/// Validation's `e2e.key-release` stage asks the key manager through the attestation module,
/// with the settings of its context: with the API key, the restricted-key scenario passes; with
/// only the workload certificate (no API key, which alone would make the stage skip), a key DSM
/// refuses to the attested workload fails.
#[test]
fn validation_stage_checks_key_release() {
    use cvm_core::check::Status;
    for (name, status, detail) in [
        ("check-restricted", Status::Pass, "refused to export"),
        (
            "check-workload-refused",
            Status::Fail,
            "refused to export \"model-key-llama\" to the attested workload",
        ),
    ] {
        let (scenario, server, prepared) = serve(name);
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let context = crate::stages::Context {
            model: prepared.model,
            profile: crate::profile::load("xe7745").unwrap(),
            facts: crate::node_facts::Bundle::open(manifest_dir.join("tests/data/xe7745")).unwrap(),
            artifacts: prepared.artifacts,
            emulate: true,
            endpoint: crate::stages::EndpointTarget::NotConfigured("not configured".to_owned()),
            attest: prepared.settings,
        };
        let result = crate::stages::key_release_with(&context, &context.attest, prepared.env);
        let recorded = server.finish();
        assert_eq!(recorded.len(), scenario.exchanges.len(), "{name}");
        assert_eq!(
            (result.id.as_str(), result.status),
            ("e2e.key-release", status),
            "{name}: {}",
            result.detail
        );
        assert!(result.detail.contains(detail), "{name}: {}", result.detail);
    }
}
