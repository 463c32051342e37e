//! The Redfish client against a real HTTP server on 127.0.0.1 serving Dell-shaped documents from
//! tests/data/redfish/, including a BMC that rejects the credentials and one that never answers.

use std::{
    io::{BufRead, BufReader, Write},
    net::{TcpListener, TcpStream},
    path::Path,
    thread,
    time::{Duration, Instant},
};

use host_setup::redfish::{base64, Client, Credentials, BIOS_DOCUMENTS};

/// How the test BMC behaves.
#[derive(Clone, Copy)]
enum Bmc {
    /// Serves files for the right credentials, 401 otherwise.
    Serving,
    /// Accepts connections and never answers.
    Silent,
}

const USER: &str = "root";
const PASSWORD: &str = "calvin";

fn data_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/redfish"))
}

fn respond(mut stream: TcpStream) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut authorization = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("authorization") {
                authorization = value.trim().to_owned();
            }
        }
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let expected = format!("Basic {}", base64(format!("{USER}:{PASSWORD}").as_bytes()));
    let file = data_dir().join(format!("{}.json", path.trim_matches('/')));
    let (status, body) = if authorization != expected {
        ("401 Unauthorized", r#"{"error":{"code":"Base.1.12.GeneralError","message":"Unable to complete the operation because an invalid username and/or password is entered."}}"#.to_owned())
    } else {
        match std::fs::read_to_string(&file) {
            Ok(body) => ("200 OK", body),
            Err(_) => (
                "404 Not Found",
                r#"{"error":{"code":"Base.1.12.ResourceMissingAtURI"}}"#.to_owned(),
            ),
        }
    };
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// Starts a BMC on 127.0.0.1 and returns its base URL.
fn start(bmc: Bmc) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            match bmc {
                Bmc::Serving => {
                    thread::spawn(move || respond(stream));
                }
                // Keep the connection open and say nothing.
                Bmc::Silent => held.push(stream),
            }
        }
    });
    url
}

fn credentials(password: &str) -> Credentials {
    Credentials {
        username: USER.to_owned(),
        password: password.to_owned(),
    }
}

#[test]
fn reads_dell_bios_attributes_and_registry() {
    let url = start(Bmc::Serving);
    let client =
        Client::new(&url, &credentials(PASSWORD), Duration::from_secs(5), true).expect("client");
    let bios = client.get(BIOS_DOCUMENTS[0]).expect("GET Bios");
    let attributes = host_setup::facts::parse::bios_attributes(&bios).expect("Attributes");
    assert!(attributes["Snp"].is_enabled());
    assert_eq!(attributes["CpuMinSevAsid"].as_int(), Some(100));
    let registry = client.get(BIOS_DOCUMENTS[1]).expect("GET BiosRegistry");
    let names = host_setup::facts::parse::bios_registry_names(&registry);
    assert!(
        names.contains("Rmp") && names.contains("CpuMinSevAsid"),
        "{names:?}"
    );
}

#[test]
fn bmc_rejecting_the_credentials() {
    let url = start(Bmc::Serving);
    let client =
        Client::new(&url, &credentials("wrong"), Duration::from_secs(5), true).expect("client");
    let err = client.get(BIOS_DOCUMENTS[0]).unwrap_err().to_string();
    assert!(err.contains("rejected the credentials (HTTP 401)"), "{err}");
    assert!(err.contains("REDFISH_USERNAME"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password must never be printed: {err}"
    );
}

#[test]
fn missing_document_names_the_status() {
    let url = start(Bmc::Serving);
    let client =
        Client::new(&url, &credentials(PASSWORD), Duration::from_secs(5), true).expect("client");
    let err = client.get("/redfish/v1/Nothing").unwrap_err().to_string();
    assert!(
        err.contains("HTTP 404") && err.contains("/redfish/v1/Nothing"),
        "{err}"
    );
}

#[test]
fn bmc_that_never_answers_times_out() {
    let url = start(Bmc::Silent);
    let client = Client::new(
        &url,
        &credentials(PASSWORD),
        Duration::from_millis(500),
        true,
    )
    .expect("client");
    let started = Instant::now();
    let err = format!("{:#}", client.get(BIOS_DOCUMENTS[0]).unwrap_err());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        err.contains("GET http://127.0.0.1") && err.to_lowercase().contains("timeout"),
        "{err}"
    );
}

#[test]
fn collect_records_a_silent_bmc_as_failed_and_goes_on() {
    if !cvm_core::skip::require_slow("collect_records_a_silent_bmc_as_failed_and_goes_on") {
        return;
    }
    let url = start(Bmc::Silent);
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("facts");
    let meta = host_setup::facts::collect(&host_setup::facts::CollectOptions {
        redfish: Some(host_setup::facts::Redfish {
            url,
            credentials: credentials(PASSWORD),
            verify_tls: true,
            timeout: Duration::from_millis(300),
        }),
        ..host_setup::facts::CollectOptions::live(&out)
    })
    .expect("collect");
    let failed = &meta.failed["redfish/redfish/v1/Systems/System.Embedded.1/Bios.json"];
    assert!(failed.to_lowercase().contains("timeout"), "{failed}");
    assert!(out.join("root/proc/cpuinfo").is_file());
}
