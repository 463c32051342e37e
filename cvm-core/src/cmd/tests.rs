//! Tests of the command wrapper against real processes, asserting the exact error text.

use super::*;

#[track_caller]
fn check_error(cmd: Cmd, expect: expect_test::Expect) {
    let err = cmd.run().expect_err("the command should fail");
    expect.assert_eq(&format!("{err:#}"));
}

#[test]
fn true_succeeds() {
    let output = Cmd::new("true").run().unwrap();
    assert!(output.status.success());
    assert!(output.stdout.is_empty());
}

#[test]
fn false_names_command_and_code() {
    check_error(
        Cmd::new("false"),
        expect_test::expect!["`false` failed (exit code 1)"],
    );
}

#[test]
fn stderr_tail_is_in_the_error() {
    check_error(
        Cmd::new("sh").args(["-c", "echo 'no space left' 1>&2; exit 3"]),
        expect_test::expect!["`sh -c 'echo '\\''no space left'\\'' 1>&2; exit 3'` failed (exit code 3): no space left"],
    );
}

#[test]
fn only_the_last_kibibyte_of_stderr_is_kept() {
    let err = Cmd::new("sh")
        .args([
            "-c",
            "head -c 5000 /dev/zero | tr '\\0' a 1>&2; echo END 1>&2; exit 1",
        ])
        .run()
        .unwrap_err()
        .to_string();
    assert!(err.ends_with("END"), "{err}");
    assert!(err.contains(": …"), "{err}");
    assert!(err.len() < 1200, "{} bytes: {err}", err.len());
}

#[test]
fn missing_program_says_not_found() {
    check_error(
        Cmd::new("cvm-no-such-tool").arg("--version"),
        expect_test::expect![
            "running `cvm-no-such-tool --version`: cvm-no-such-tool not found on PATH"
        ],
    );
}

#[test]
fn read_trims_and_stdin_is_fed() {
    let text = Cmd::new("cat").stdin_bytes("hello\n\n").read().unwrap();
    assert_eq!(text, "hello");
}

#[test]
fn stdin_is_null_by_default() {
    // `cat` with a null stdin ends at once instead of waiting for a terminal.
    let text = Cmd::new("cat")
        .timeout(Duration::from_secs(5))
        .read()
        .unwrap();
    assert_eq!(text, "");
}

#[test]
fn timeout_kills_the_child() {
    let err = Cmd::new("sleep")
        .arg("10")
        .timeout(Duration::from_millis(200))
        .run()
        .unwrap_err();
    assert_eq!(err.to_string(), "`sleep 10` did not finish within 200ms");
}

#[test]
fn quoting_matches_a_posix_shell() {
    let cmd = Cmd::new("echo").args(["plain", "two words", "it's", "", "$HOME"]);
    expect_test::expect![[r#"echo plain 'two words' 'it'\''s' '' '$HOME'"#]]
        .assert_eq(&cmd.to_string());
}
