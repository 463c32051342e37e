//! The three reports from one result list: JUnit read back by an XML parser, the JSON document,
//! and the HTML page (every id present, hostile text escaped).

use cvm_core::check::{CheckResult, Report, Status};
use quick_xml::{events::Event, Reader, XmlVersion};

use super::{html, json, junit, markdown, write_all, Input, RunInfo};

fn result(id: &str, status: Status, detail: &str, remediation: &str) -> CheckResult {
    CheckResult {
        id: id.to_owned(),
        title: format!("title of {id}"),
        status,
        detail: detail.to_owned(),
        remediation: remediation.to_owned(),
    }
}

const HOSTILE: &str =
    "<script>alert('x')</script> & \"quoted\" </td></tr><img src=x onerror=alert(1)>";

fn sample() -> Report {
    Report::new(vec![
        result(
            "xe7745.platform",
            Status::Pass,
            "dmidecode reports Dell Inc. PowerEdge XE7745",
            "",
        ),
        result(
            "xe7745.gpus",
            Status::Fail,
            "7 GPU(s) with PCI id 10de:2bb5; expected 8",
            "reseat the GPU",
        ),
        result(
            "xe7745.qemu",
            Status::Warn,
            "10.1.0 is not the validated 9.2.1",
            "install 9.2.1",
        ),
        result(
            "e2e.launch",
            Status::Skip,
            "emulated boot not available: guest boot is not implemented in this build",
            "",
        ),
        result("e2e.endpoint-https", Status::Fail, HOSTILE, HOSTILE),
    ])
}

fn info() -> RunInfo {
    RunInfo {
        suite: "cvm-validate xe7745".to_owned(),
        inputs: vec![Input {
            name: "facts".to_owned(),
            value: "/tmp/<bundle>".to_owned(),
        }],
    }
}

/// One testcase as read back from report.xml.
#[derive(Debug, PartialEq, Eq)]
struct Case {
    name: String,
    classname: String,
    outcome: String,
    message: String,
}

fn read_junit(xml: &str) -> (Vec<(String, String)>, Vec<Case>) {
    let mut reader = Reader::from_str(xml);
    let mut suites = Vec::new();
    let mut cases: Vec<Case> = Vec::new();
    let attribute = |element: &quick_xml::events::BytesStart, key: &str| {
        element
            .attributes()
            .map(|attribute| attribute.unwrap())
            .find(|attribute| attribute.key.as_ref() == key.as_bytes())
            .map(|attribute| {
                attribute
                    .normalized_value(XmlVersion::Implicit1_0)
                    .unwrap()
                    .into_owned()
            })
            .unwrap_or_default()
    };
    loop {
        match reader.read_event().unwrap() {
            Event::Eof => break,
            Event::Start(element) | Event::Empty(element) => match element.name().as_ref() {
                b"testsuite" => suites.push((
                    attribute(&element, "tests"),
                    attribute(&element, "failures"),
                )),
                b"testcase" => cases.push(Case {
                    name: attribute(&element, "name"),
                    classname: attribute(&element, "classname"),
                    outcome: "passed".to_owned(),
                    message: String::new(),
                }),
                kind @ (b"failure" | b"skipped") => {
                    let case = cases.last_mut().unwrap();
                    case.outcome = String::from_utf8(kind.to_vec()).unwrap();
                    case.message = attribute(&element, "message");
                }
                _ => {}
            },
            _ => {}
        }
    }
    (suites, cases)
}

#[test]
fn junit_has_one_testcase_per_check_with_its_outcome() {
    let report = sample();
    let xml = junit(&report, &info()).unwrap();
    let (suites, cases) = read_junit(&xml);
    assert_eq!(suites, [("5".to_owned(), "2".to_owned())]);
    let outcomes: Vec<(&str, &str, &str)> = cases
        .iter()
        .map(|case| {
            (
                case.name.as_str(),
                case.classname.as_str(),
                case.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        outcomes,
        [
            ("xe7745.platform", "xe7745", "passed"),
            ("xe7745.gpus", "xe7745", "failure"),
            ("xe7745.qemu", "xe7745", "passed"),
            ("e2e.launch", "e2e", "skipped"),
            ("e2e.endpoint-https", "e2e", "failure"),
        ]
    );
    assert_eq!(
        cases[1].message,
        "7 GPU(s) with PCI id 10de:2bb5; expected 8 (remediation: reseat the GPU)"
    );
    assert_eq!(
        cases[3].message,
        "emulated boot not available: guest boot is not implemented in this build"
    );
    // Hostile text survives the round trip through XML escaping unchanged.
    assert!(
        cases[4].message.starts_with(HOSTILE),
        "{}",
        cases[4].message
    );
}

#[test]
fn json_is_the_design_document() {
    let report = sample();
    let text = json(&report).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["schema"], 1);
    assert_eq!(
        value["summary"],
        serde_json::json!({"pass": 1, "fail": 2, "warn": 1, "skip": 1})
    );
    assert_eq!(value["checks"][3]["status"], "skip");
    let back: Report = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
}

#[test]
fn html_has_summary_first_and_every_check_id() {
    let report = sample();
    let page = html(&report, &info()).unwrap();
    let summary_at = page.find("id=\"summary\"").unwrap();
    assert!(page[summary_at..].starts_with(
        "id=\"summary\"><span class=\"pass\">1 passed</span>, <span class=\"fail\">2 failed</span>"
    ));
    let table_at = page.find("<table>").unwrap();
    assert!(summary_at < table_at, "summary comes before the table");
    assert!(page.contains("cvm-validate xe7745: <span class=\"verdict-FAILED\">FAILED</span>"));
    for check in &report.checks {
        let row = format!(
            "<tr id=\"{}\"><td class=\"id\">{}</td><td class=\"status {}\">",
            check.id,
            check.id,
            check.status.as_str()
        );
        assert!(page.contains(&row), "no row for {}", check.id);
    }
    assert!(page.contains("reseat the GPU"));
    // Self-contained: nothing loaded from elsewhere.
    for external in ["<script", "<link", "<img", " src=\"", " href=\"", "@import"] {
        assert!(!page.contains(external), "{external} in the page");
    }
}

#[test]
fn html_escapes_hostile_detail_and_inputs() {
    let page = html(&sample(), &info()).unwrap();
    assert!(!page.contains(HOSTILE));
    assert!(
        page.contains(
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2F;script&gt; &amp; &quot;quoted&quot;"
        ),
        "{page}"
    );
    assert!(page.contains("&lt;img src=x onerror=alert(1)&gt;"));
    assert!(page.contains("&#x2F;tmp&#x2F;&lt;bundle&gt;"));
}

#[test]
fn all_reports_are_written_from_the_same_list() {
    let dir = tempfile::tempdir().unwrap();
    let report = sample();
    let written = write_all(&report, &info(), &dir.path().join("reports")).unwrap();
    let (_, cases) = read_junit(&std::fs::read_to_string(&written.junit).unwrap());
    let from_json: Report =
        serde_json::from_str(&std::fs::read_to_string(&written.json).unwrap()).unwrap();
    let page = std::fs::read_to_string(&written.html).unwrap();
    let ids: Vec<&str> = report
        .checks
        .iter()
        .map(|check| check.id.as_str())
        .collect();
    assert_eq!(
        cases
            .iter()
            .map(|case| case.name.as_str())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        from_json
            .checks
            .iter()
            .map(|check| check.id.as_str())
            .collect::<Vec<_>>(),
        ids
    );
    for id in ids {
        assert!(page.contains(&format!("<tr id=\"{id}\">")));
    }
}

#[test]
fn markdown_summary_lists_what_did_not_pass() {
    let text = markdown(&sample(), &info());
    expect_test::expect![[r#"
        ## cvm-validate xe7745: FAILED

        1 passed, 2 failed, 1 warnings, 1 skipped (5 checks)

        | check | status | detail | remediation |
        |---|---|---|---|
        | `xe7745.gpus` | fail | 7 GPU(s) with PCI id 10de:2bb5; expected 8 | reseat the GPU |
        | `xe7745.qemu` | warn | 10.1.0 is not the validated 9.2.1 | install 9.2.1 |
        | `e2e.launch` | skip | emulated boot not available: guest boot is not implemented in this build |  |
        | `e2e.endpoint-https` | fail | &lt;script&gt;alert('x')&lt;/script&gt; &amp; "quoted" &lt;/td&gt;&lt;/tr&gt;&lt;img src=x onerror=alert(1)&gt; | &lt;script&gt;alert('x')&lt;/script&gt; &amp; "quoted" &lt;/td&gt;&lt;/tr&gt;&lt;img src=x onerror=alert(1)&gt; |
    "#]]
    .assert_eq(&text);
}

#[test]
fn markdown_cells_cannot_break_the_table() {
    assert_eq!(super::cell("a|b\nc`d`"), "a\\|b c'd'");
}
