//! Carries out a provisioning [`Plan`] against a filesystem root.
//!
//! Every step is first checked with its [`Detect`]: a step already done is reported and left
//! alone, so a second `apply` changes nothing. Files are written whole, after the previous version
//! is copied to `PATH.cvm-stack-backup-<UTC timestamp>`; commands run inside the root (through
//! `chroot ROOT` when the root is not `/`) via a [`Runner`], which tests replace. `apply` stops at
//! the first failing step with its output, and at a reboot the host has not had yet: it never
//! reboots by itself.

use std::{
    fs,
    io::Write as _,
    os::unix::{fs::PermissionsExt, process::ExitStatusExt},
    path::{Path, PathBuf},
    process::ExitStatus,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{bail, Context, Result};
use cvm_core::{
    cmd::{Cmd, Output},
    deps::find_tool,
    hash::sha256_hex,
};
use serde::Serialize;

use super::{command_line, Action, Detect, Package, Plan, Step};

/// Runs a command inside a root directory.
pub trait Runner {
    /// Runs `argv` inside `root` and returns what it printed, whatever its exit status.
    fn output(&mut self, root: &Path, argv: &[String]) -> Result<Output>;
}

/// The real runner: the command itself when the root is `/`, else `chroot ROOT command`.
#[derive(Debug, Default)]
pub struct ChrootRunner;

/// The `PATH` commands get inside the root (a sudo or cron environment may lack the sbin dirs).
const ROOT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl Runner for ChrootRunner {
    fn output(&mut self, root: &Path, argv: &[String]) -> Result<Output> {
        let Some((program, args)) = argv.split_first() else {
            bail!("an empty command line in the plan");
        };
        let command = if root == Path::new("/") {
            Cmd::new(find_tool(program).unwrap_or_else(|| PathBuf::from(program))).args(args)
        } else {
            let chroot = find_tool("chroot").unwrap_or_else(|| PathBuf::from("chroot"));
            Cmd::new(chroot).arg(root).args(argv)
        };
        command
            .env("PATH", ROOT_PATH)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C")
            .output()
    }
}

/// How package steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PackageMode {
    /// `apt-get update` and `apt-get install`.
    Install,
    /// `apt-get install -s` only: resolves the packages, installs nothing. Steps that need the
    /// network stop, because what they need was not installed.
    Simulate,
}

/// Where and how to apply.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The filesystem root (`/` on a real host).
    pub root: PathBuf,
    /// Real or simulated package installation.
    pub packages: PackageMode,
    /// The suffix of backup files, `cvm-stack-backup-<timestamp>`.
    pub timestamp: String,
}

impl ApplyOptions {
    /// Options for `root` with a backup timestamp of now.
    pub fn new(root: impl Into<PathBuf>, packages: PackageMode) -> Self {
        ApplyOptions {
            root: root.into(),
            packages,
            timestamp: utc_timestamp(SystemTime::now()),
        }
    }
}

/// What happened to one step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Its check passed before anything was done.
    AlreadyDone,
    /// It was carried out and its check now passes.
    Applied,
    /// Packages resolved with apt's simulation; nothing installed.
    Simulated,
    /// A manual step, printed for the operator.
    Manual,
    /// The host must reboot before the rest of the plan.
    RebootNeeded,
    /// It failed; apply stopped here.
    Failed,
}

/// One line of the apply report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// The step id.
    pub id: String,
    /// What happened.
    pub outcome: Outcome,
    /// Details: what was written, the failure and its output.
    pub detail: String,
}

/// The result of one apply.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    /// The steps reached, in order.
    pub steps: Vec<StepReport>,
    /// The backup files written.
    pub backups: Vec<String>,
    /// Steps left for after the reboot.
    pub after_reboot: Vec<String>,
}

impl ApplyReport {
    /// The failed step, if apply stopped on a failure.
    pub fn failure(&self) -> Option<&StepReport> {
        self.steps
            .iter()
            .find(|step| step.outcome == Outcome::Failed)
    }

    /// True when a step changed something (a file, a package, a command run).
    pub fn changed_anything(&self) -> bool {
        self.steps
            .iter()
            .any(|step| step.outcome == Outcome::Applied)
            || !self.backups.is_empty()
    }

    /// The report as text, one line per step.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for step in &self.steps {
            let outcome = match step.outcome {
                Outcome::AlreadyDone => "already done",
                Outcome::Applied => "applied",
                Outcome::Simulated => "simulated",
                Outcome::Manual => "manual",
                Outcome::RebootNeeded => "reboot needed",
                Outcome::Failed => "FAILED",
            };
            out.push_str(&format!("{:<28} {outcome}", step.id));
            if !step.detail.is_empty() {
                out.push_str(": ");
                out.push_str(&step.detail);
            }
            out.push('\n');
        }
        for backup in &self.backups {
            out.push_str(&format!("backup: {backup}\n"));
        }
        if !self.after_reboot.is_empty() {
            out.push_str(&format!(
                "after the reboot, run `cargo xtask host apply` again for: {}\n",
                self.after_reboot.join(", ")
            ));
        }
        out
    }
}

/// The apt command lines of a package step.
pub fn package_commands(
    packages: &[Package],
    allow_downgrades: bool,
    simulate: bool,
) -> Vec<Vec<String>> {
    let mut install: Vec<String> = ["apt-get", "install", "-y", "--no-install-recommends"]
        .into_iter()
        .map(str::to_owned)
        .collect();
    if simulate {
        install.insert(2, "-s".to_owned());
    }
    if allow_downgrades {
        install.push("--allow-downgrades".to_owned());
    }
    install.extend(packages.iter().map(|package| package.name.clone()));
    if simulate {
        vec![install]
    } else {
        vec![vec!["apt-get".to_owned(), "update".to_owned()], install]
    }
}

/// Whether a step is done, and if not, why not (for the confirmation list).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The check passes.
    Done,
    /// The check fails; the text says what is missing.
    Pending(String),
}

struct Applier<'a> {
    options: &'a ApplyOptions,
    runner: &'a mut dyn Runner,
    report: ApplyReport,
}

impl Applier<'_> {
    fn path(&self, absolute: &str) -> PathBuf {
        self.options.root.join(absolute.trim_start_matches('/'))
    }

    fn run(&mut self, argv: &[String]) -> Result<Output> {
        self.runner.output(&self.options.root, argv)
    }

    fn backup(&mut self, absolute: &str) -> Result<()> {
        let path = self.path(absolute);
        if !path.exists() {
            return Ok(());
        }
        let backup = format!("{absolute}.cvm-stack-backup-{}", self.options.timestamp);
        let backup_path = self.path(&backup);
        fs::copy(&path, &backup_path).with_context(|| {
            format!("backing up {} to {}", path.display(), backup_path.display())
        })?;
        self.report.backups.push(backup);
        Ok(())
    }

    /// Evaluates a step's check.
    fn state(&mut self, step: &Step) -> Result<State> {
        match &step.done_when {
            Detect::FileContents { path } => {
                let Action::WriteFile { contents, mode, .. } = &step.action else {
                    bail!(
                        "step {}: a file-contents check needs a file action",
                        step.id
                    );
                };
                let full = self.path(path);
                match fs::read(&full) {
                    Ok(current) if current == contents.as_bytes() => {
                        let current_mode = fs::metadata(&full)
                            .with_context(|| format!("reading the mode of {}", full.display()))?
                            .permissions()
                            .mode()
                            & 0o7777;
                        if current_mode == *mode {
                            Ok(State::Done)
                        } else {
                            Ok(State::Pending(format!(
                                "{path} has mode {current_mode:04o}, not {mode:04o}"
                            )))
                        }
                    }
                    Ok(_) => Ok(State::Pending(format!("{path} has other contents"))),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                        Ok(State::Pending(format!("{path} does not exist")))
                    }
                    Err(err) => Err(err).with_context(|| format!("reading {}", full.display())),
                }
            }
            Detect::Packages { packages } => {
                let mut missing = Vec::new();
                for package in packages {
                    if let Some(problem) = self.package_problem(package)? {
                        missing.push(problem);
                    }
                }
                Ok(if missing.is_empty() {
                    State::Done
                } else {
                    State::Pending(missing.join(", "))
                })
            }
            Detect::FilesExist { paths } => {
                let missing: Vec<&String> = paths
                    .iter()
                    .filter(|path| !self.path(path).exists())
                    .collect();
                Ok(if missing.is_empty() {
                    State::Done
                } else {
                    State::Pending(format!(
                        "missing: {}",
                        missing
                            .iter()
                            .map(|path| path.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })
            }
            Detect::Stamp { stamp, inputs } => {
                let expected = self.inputs_hash(inputs)?;
                Ok(match fs::read_to_string(self.path(stamp)) {
                    Ok(current) if current.trim() == expected => State::Done,
                    Ok(_) => State::Pending(format!(
                        "{} changed since the commands last ran",
                        inputs.join(", ")
                    )),
                    Err(_) => State::Pending(format!("never ran here ({stamp} is absent)")),
                })
            }
            Detect::CommandOutput { checks } => {
                for check in checks {
                    let line = command_line(&check.command);
                    let output = match self.run(&check.command) {
                        Ok(output) => output,
                        Err(err) => return Ok(State::Pending(format!("`{line}`: {err:#}"))),
                    };
                    let text = format!(
                        "{}{}",
                        String::from_utf8_lossy(&output.stdout),
                        String::from_utf8_lossy(&output.stderr)
                    );
                    if !output.status.success() || !text.contains(&check.contains) {
                        return Ok(State::Pending(format!(
                            "`{line}` does not print {:?}",
                            check.contains
                        )));
                    }
                }
                Ok(State::Done)
            }
            Detect::NoForbiddenWords { files, words } => {
                Ok(match self.forbidden_word(files, words)? {
                    None => State::Done,
                    Some(found) => State::Pending(found),
                })
            }
            Detect::Booted { words, kernel } => {
                let cmdline = fs::read_to_string(self.path("/proc/cmdline")).unwrap_or_default();
                let present: Vec<&str> = cmdline.split_whitespace().collect();
                let mut missing: Vec<String> = words
                    .iter()
                    .filter(|word| !present.contains(&word.as_str()))
                    .map(|word| format!("{word} is not on /proc/cmdline"))
                    .collect();
                if let Some(kernel) = kernel {
                    let running = fs::read_to_string(self.path("/proc/sys/kernel/osrelease"))
                        .unwrap_or_default();
                    if running.trim() != kernel {
                        missing.push(format!("the running kernel is not {kernel}"));
                    }
                }
                Ok(if missing.is_empty() {
                    State::Done
                } else {
                    State::Pending(missing.join(", "))
                })
            }
            Detect::HostCheck { .. } => Ok(State::Pending(
                "a manual step; `host check` verifies it".to_owned(),
            )),
        }
    }

    /// Why `package` does not satisfy its requirement, or `None` when it does.
    fn package_problem(&mut self, package: &Package) -> Result<Option<String>> {
        let query = [
            "dpkg-query".to_owned(),
            "-W".to_owned(),
            "-f=${Status}\t${Version}".to_owned(),
            package.name.clone(),
        ];
        let output = self.run(&query)?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        let (status, version) = text.split_once('\t').unwrap_or(("", ""));
        if !output.status.success() || status.trim() != "install ok installed" {
            return Ok(Some(format!("{package} is not installed")));
        }
        let Some(min) = &package.min_version else {
            return Ok(None);
        };
        let compare = [
            "dpkg".to_owned(),
            "--compare-versions".to_owned(),
            version.trim().to_owned(),
            "ge".to_owned(),
            min.clone(),
        ];
        let output = self.run(&compare)?;
        Ok(if output.status.success() {
            None
        } else {
            Some(format!(
                "{} is at {}, below {min}",
                package.name,
                version.trim()
            ))
        })
    }

    /// The sha256 over the stamp's inputs (path and contents, or a marker for an absent file).
    fn inputs_hash(&self, inputs: &[String]) -> Result<String> {
        let mut bytes = Vec::new();
        for input in inputs {
            bytes.extend_from_slice(input.as_bytes());
            bytes.push(0);
            match fs::read(self.path(input)) {
                Ok(contents) => {
                    bytes.extend_from_slice(&(contents.len() as u64).to_le_bytes());
                    bytes.extend_from_slice(&contents);
                }
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    bytes.extend_from_slice(b"<absent>");
                }
                Err(err) => {
                    return Err(err).with_context(|| format!("reading {}", input));
                }
            }
            bytes.push(0);
        }
        Ok(sha256_hex(&bytes))
    }

    /// The first forbidden kernel command-line word configured in `files`, as `FILE:LINE: …`.
    fn forbidden_word(&self, files: &[String], words: &[String]) -> Result<Option<String>> {
        let mut paths = Vec::new();
        for file in files {
            match file.strip_suffix("/*.cfg") {
                Some(dir) => {
                    let full = self.path(dir);
                    let Ok(entries) = fs::read_dir(&full) else {
                        continue;
                    };
                    let mut found: Vec<String> = entries
                        .filter_map(|entry| entry.ok())
                        .map(|entry| entry.file_name().to_string_lossy().into_owned())
                        .filter(|name| name.ends_with(".cfg"))
                        .map(|name| format!("{dir}/{name}"))
                        .collect();
                    found.sort();
                    paths.extend(found);
                }
                None => paths.push(file.clone()),
            }
        }
        for path in paths {
            let Ok(text) = fs::read_to_string(self.path(&path)) else {
                continue;
            };
            if let Some(found) = find_forbidden(&text, words) {
                return Ok(Some(format!("{path}:{}: sets {}", found.0, found.1)));
            }
        }
        Ok(None)
    }

    fn write_file(&mut self, path: &str, mode: u32, contents: &str) -> Result<String> {
        let full = self.path(path);
        let existed = full.exists();
        if existed {
            self.backup(path)?;
        }
        let parent = full
            .parent()
            .with_context(|| format!("{} has no parent directory", full.display()))?;
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let temporary = parent.join(format!(
            ".{}.cvm-stack-new",
            full.file_name()
                .map(|name| name.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        let mut file = fs::File::create(&temporary)
            .with_context(|| format!("creating {}", temporary.display()))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", temporary.display()))?;
        fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", temporary.display()))?;
        fs::rename(&temporary, &full)
            .with_context(|| format!("renaming {} to {}", temporary.display(), full.display()))?;
        Ok(if existed {
            format!("rewrote {path}")
        } else {
            format!("wrote {path}")
        })
    }

    /// Runs `argv`; on failure, the error names the command and carries the tail of its output.
    fn run_checked(&mut self, argv: &[String]) -> Result<Output> {
        let line = command_line(argv);
        eprintln!("{:>12} {line}", "Running");
        let output = self.run(argv)?;
        if output.status.success() {
            return Ok(output);
        }
        bail!(
            "`{line}` failed ({}):\n{}",
            describe(output.status),
            output_tail(&output, 40)
        )
    }

    /// Carries out one step that is not done. Returns the outcome and its detail.
    fn execute(&mut self, step: &Step) -> Result<(Outcome, String)> {
        match &step.action {
            Action::WriteFile {
                path,
                mode,
                contents,
            } => Ok((Outcome::Applied, self.write_file(path, *mode, contents)?)),
            Action::Packages {
                packages,
                allow_downgrades,
            } => {
                let simulate = self.options.packages == PackageMode::Simulate;
                let mut last = None;
                for command in package_commands(packages, *allow_downgrades, simulate) {
                    last = Some(self.run_checked(&command)?);
                }
                if simulate {
                    let output = last.map(|output| output.stdout).unwrap_or_default();
                    let count = String::from_utf8_lossy(&output)
                        .lines()
                        .filter(|line| line.starts_with("Inst "))
                        .count();
                    return Ok((
                        Outcome::Simulated,
                        format!(
                            "apt-get -s resolved {count} packages to install; nothing installed"
                        ),
                    ));
                }
                Ok((Outcome::Applied, "installed".to_owned()))
            }
            Action::Commands {
                commands,
                backs_up,
                network,
            } => {
                if let (Some(network), PackageMode::Simulate) = (network, self.options.packages) {
                    bail!("this step downloads {network}; stopped here because packages were only simulated (the tools it needs are not installed and this run does not reach the network)");
                }
                for path in backs_up {
                    self.backup(path)?;
                }
                for command in commands {
                    self.run_checked(command)?;
                }
                if let Detect::Stamp { stamp, inputs } = &step.done_when {
                    let hash = self.inputs_hash(inputs)?;
                    self.write_file(stamp, 0o644, &format!("{hash}\n"))?;
                }
                Ok((
                    Outcome::Applied,
                    format!(
                        "ran {} command{}",
                        commands.len(),
                        if commands.len() == 1 { "" } else { "s" }
                    ),
                ))
            }
            Action::Guard { fix } => match self.state(step)? {
                State::Done => Ok((Outcome::AlreadyDone, String::new())),
                State::Pending(found) => bail!("{found}; {fix}"),
            },
            Action::Manual { .. } | Action::Reboot { .. } => {
                bail!("step {}: manual steps are not executed", step.id)
            }
        }
    }
}

/// The first line number (1-based) and word of `text` that sets a forbidden word in a
/// `GRUB_CMDLINE_LINUX*` assignment.
pub fn find_forbidden(text: &str, words: &[String]) -> Option<(usize, String)> {
    for (index, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.starts_with('#') || !line.contains("GRUB_CMDLINE_LINUX") {
            continue;
        }
        let value = line.split_once('=').map_or("", |(_, value)| value);
        for token in value.split(|c: char| c.is_whitespace() || c == '"' || c == '\'') {
            for word in words {
                let hit = if word.ends_with('=') {
                    token.starts_with(word.as_str())
                } else {
                    token == word
                };
                if hit {
                    return Some((index + 1, token.to_owned()));
                }
            }
        }
    }
    None
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown status".to_owned(),
    }
}

/// The last `lines` lines of a command's stdout and stderr.
fn output_tail(output: &Output, lines: usize) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let all: Vec<&str> = text.trim_end().lines().collect();
    let start = all.len().saturating_sub(lines);
    all[start..]
        .iter()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each step up to the first reboot the host has not had, with its state (manual steps are
/// `Pending` with their text). This is what `apply` asks about before changing anything.
pub fn survey(
    plan: &Plan,
    options: &ApplyOptions,
    runner: &mut dyn Runner,
) -> Result<Vec<(String, State)>> {
    let mut context = Applier {
        options,
        runner,
        report: ApplyReport::default(),
    };
    let mut states = Vec::new();
    for step in &plan.steps {
        let state = context.state(step)?;
        let stop = matches!(step.action, Action::Reboot { .. }) && state != State::Done;
        states.push((step.id.clone(), state));
        if stop {
            break;
        }
    }
    Ok(states)
}

/// True when a surveyed step would change something.
pub fn changes(plan: &Plan, states: &[(String, State)]) -> Vec<String> {
    states
        .iter()
        .filter(|(id, state)| {
            let step = plan.steps.iter().find(|step| &step.id == id);
            let changing = step.is_some_and(|step| {
                !matches!(
                    step.action,
                    Action::Manual { .. } | Action::Reboot { .. } | Action::Guard { .. }
                )
            });
            changing && matches!(state, State::Pending(_))
        })
        .map(|(id, _)| id.clone())
        .collect()
}

/// Applies `plan`: every step not yet done, in order, until the first failure or the first reboot
/// the host has not had. The report says what happened to each step reached; a failure is in the
/// report (its detail carries the command's output), not an `Err`, which is kept for errors that
/// are not a step's (an unreadable root).
pub fn apply(plan: &Plan, options: &ApplyOptions, runner: &mut dyn Runner) -> Result<ApplyReport> {
    let mut context = Applier {
        options,
        runner,
        report: ApplyReport::default(),
    };
    for (index, step) in plan.steps.iter().enumerate() {
        let state = context.state(step)?;
        match (&step.action, state) {
            (Action::Manual { instructions }, _) => {
                context.report.steps.push(StepReport {
                    id: step.id.clone(),
                    outcome: Outcome::Manual,
                    detail: format!(
                        "by hand, not checked here: {}",
                        instructions.first().cloned().unwrap_or_default()
                    ),
                });
            }
            (Action::Reboot { activates }, State::Pending(why)) => {
                context.report.steps.push(StepReport {
                    id: step.id.clone(),
                    outcome: Outcome::RebootNeeded,
                    detail: format!(
                        "{why}; reboot the host (apply never does) to activate {activates}"
                    ),
                });
                context.report.after_reboot = plan.steps[index + 1..]
                    .iter()
                    .map(|step| step.id.clone())
                    .collect();
                break;
            }
            (_, State::Done) => {
                eprintln!("{:>12} {}", "Done", step.id);
                context.report.steps.push(StepReport {
                    id: step.id.clone(),
                    outcome: Outcome::AlreadyDone,
                    detail: String::new(),
                });
            }
            (_, State::Pending(_)) => {
                eprintln!("{:>12} {}", "Applying", step.id);
                let result = context.execute(step).and_then(|(outcome, detail)| {
                    if outcome == Outcome::Applied {
                        if let State::Pending(why) = context.state(step)? {
                            bail!("the step ran, but its check still fails: {why}");
                        }
                    }
                    Ok((outcome, detail))
                });
                match result {
                    Ok((outcome, detail)) => context.report.steps.push(StepReport {
                        id: step.id.clone(),
                        outcome,
                        detail,
                    }),
                    Err(err) => {
                        context.report.steps.push(StepReport {
                            id: step.id.clone(),
                            outcome: Outcome::Failed,
                            detail: format!("{err:#}"),
                        });
                        break;
                    }
                }
            }
        }
    }
    Ok(context.report)
}

/// `YYYYMMDDTHHMMSSZ` for `time`, in UTC.
pub fn utc_timestamp(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map(|duration| duration.as_secs())
        .unwrap_or(0);
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// An exit status with `code`, for runners that do not spawn processes (tests).
pub fn exit_status(code: i32) -> ExitStatus {
    ExitStatus::from_raw(code << 8)
}
