//! The one wrapper for external commands.
//!
//! Every tool the library crates run (mmdebstrap, mkfs.erofs, veritysetup, qemu-img, lspci, …) goes
//! through [`Cmd`]. It logs the command line at debug level, sets stdin to null unless told
//! otherwise, and on failure returns an error that carries the full command line and the last
//! 1 KiB of stderr, so a failed step explains itself. `clippy.toml` bans
//! `std::process::Command::new` everywhere else.

use std::{
    ffi::{OsStr, OsString},
    fmt,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    thread,
    time::Duration,
};

use anyhow::{anyhow, Context, Result};

/// How much of stderr (or stdout, when stderr is empty) a failure message keeps.
const TAIL_BYTES: usize = 1024;

/// An external command, built up like [`std::process::Command`].
#[derive(Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    envs: Vec<(OsString, Option<OsString>)>,
    dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Option<Duration>,
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Output {
    /// The exit status.
    pub status: ExitStatus,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl Cmd {
    /// A command running `program` (looked up on `PATH` by the OS).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Self {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            envs: Vec::new(),
            dir: None,
            stdin: None,
            timeout: None,
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|arg| arg.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.envs
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes an environment variable for the child.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.as_ref().to_owned(), None));
        self
    }

    /// Runs the child in `dir`.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self
    }

    /// Feeds `input` to the child's stdin (otherwise stdin is null).
    pub fn stdin_bytes(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Kills the child and fails when it runs longer than `timeout`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The program name as given.
    pub fn program(&self) -> &OsStr {
        &self.program
    }

    /// Runs the command to completion, capturing stdout and stderr, without judging the exit status.
    pub fn output(&self) -> Result<Output> {
        tracing::debug!(command = %self, "running");
        #[allow(clippy::disallowed_methods)] // This is the one place allowed to spawn processes.
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().map_err(|err| {
            if err.kind() == std::io::ErrorKind::NotFound {
                anyhow!(
                    "running `{self}`: {} not found on PATH",
                    self.program.to_string_lossy()
                )
            } else {
                anyhow!("running `{self}`: {err}")
            }
        })?;
        let writer = self.stdin.clone().map(|input| {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            thread::spawn(move || {
                // A child that exits without reading its input is not our error.
                let _ = pipe.write_all(&input);
            })
        });
        let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
        let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
        let stdout_reader = thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stdout_pipe.read_to_end(&mut buffer);
            buffer
        });
        let stderr_reader = thread::spawn(move || {
            let mut buffer = Vec::new();
            let _ = stderr_pipe.read_to_end(&mut buffer);
            buffer
        });
        let status = match self.timeout {
            None => child
                .wait()
                .with_context(|| format!("waiting for `{self}`"))?,
            Some(timeout) => {
                let started = std::time::Instant::now();
                loop {
                    if let Some(status) = child
                        .try_wait()
                        .with_context(|| format!("waiting for `{self}`"))?
                    {
                        break status;
                    }
                    if started.elapsed() >= timeout {
                        let _ = child.kill();
                        let _ = child.wait();
                        let stderr = stderr_reader.join().unwrap_or_default();
                        return Err(anyhow!(
                            "`{self}` did not finish within {timeout:?}{}",
                            tail_suffix(&stderr)
                        ));
                    }
                    thread::sleep(Duration::from_millis(20));
                }
            }
        };
        if let Some(writer) = writer {
            let _ = writer.join();
        }
        Ok(Output {
            status,
            stdout: stdout_reader.join().unwrap_or_default(),
            stderr: stderr_reader.join().unwrap_or_default(),
        })
    }

    /// Runs the command and fails unless it exits 0. The error names the command line, the exit
    /// status and the tail of stderr.
    pub fn run(&self) -> Result<Output> {
        let output = self.output()?;
        if output.status.success() {
            return Ok(output);
        }
        let tail = if output.stderr.iter().any(|b| !b.is_ascii_whitespace()) {
            &output.stderr
        } else {
            &output.stdout
        };
        Err(anyhow!(
            "`{self}` failed ({}){}",
            describe_status(output.status),
            tail_suffix(tail)
        ))
    }

    /// Runs the command and returns its stdout as UTF-8 with trailing whitespace trimmed.
    pub fn read(&self) -> Result<String> {
        let output = self.run()?;
        let text = String::from_utf8(output.stdout)
            .map_err(|_| anyhow!("`{self}` printed output that is not UTF-8"))?;
        Ok(text.trim_end().to_owned())
    }

    /// Runs the command and parses its stdout as JSON.
    pub fn read_json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        let output = self.run()?;
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("parsing the JSON printed by `{self}`"))
    }

    /// Starts the command in the background with stdin, stdout and stderr set to null (for long
    /// running children such as a QEMU guest whose output goes to a file); the caller waits for or
    /// kills the returned child.
    pub fn spawn_background(&self) -> Result<std::process::Child> {
        tracing::debug!(command = %self, "starting in the background");
        #[allow(clippy::disallowed_methods)] // This is the one place allowed to spawn processes.
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        command
            .spawn()
            .map_err(|err| anyhow!("starting `{self}`: {err}"))
    }

    /// Runs the command with stdout and stderr passed through to ours (for long steps whose own
    /// progress the user should see); the error still names the command line.
    pub fn run_inherit(&self) -> Result<()> {
        tracing::debug!(command = %self, "running (output inherited)");
        #[allow(clippy::disallowed_methods)] // This is the one place allowed to spawn processes.
        let mut command = Command::new(&self.program);
        command.args(&self.args).stdin(Stdio::null());
        for (key, value) in &self.envs {
            match value {
                Some(value) => command.env(key, value),
                None => command.env_remove(key),
            };
        }
        if let Some(dir) = &self.dir {
            command.current_dir(dir);
        }
        let status = command
            .status()
            .map_err(|err| anyhow!("running `{self}`: {err}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(anyhow!("`{self}` failed ({})", describe_status(status)))
        }
    }
}

impl fmt::Display for Cmd {
    /// The command line, each word quoted for a POSIX shell where needed.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&shell_quote(&self.program.to_string_lossy()))?;
        for arg in &self.args {
            write!(f, " {}", shell_quote(&arg.to_string_lossy()))?;
        }
        Ok(())
    }
}

/// Quotes `word` for a POSIX shell; plain words stay as they are.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_owned(),
    }
}

/// `: <last line(s) of output>` with at most [`TAIL_BYTES`] bytes, or nothing when it is empty.
fn tail_suffix(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let mut start = text.len().saturating_sub(TAIL_BYTES);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    let tail = text[start..].trim();
    let prefix = if start > 0 { "…" } else { "" };
    format!(": {prefix}{}", tail.replace('\n', " | "))
}

#[cfg(test)]
mod tests;
