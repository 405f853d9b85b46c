//! Carrying a [`Plan`] out: file writes and removals, and commands found on PATH.

use std::fs::{self, OpenOptions, Permissions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use thiserror::Error;

use super::plan::{shell_words, Plan, Step};

/// How a step that did not stop the plan ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it says.
    Done,
    /// It failed, and the plan allows that (stopping a unit that is not loaded); the command's
    /// output is attached.
    Tolerated(String),
}

/// A step that failed and stopped the plan. The steps before it stay done.
#[derive(Debug, Error)]
pub enum ExecError {
    /// A unit file could not be written.
    #[error("cannot write the unit file {}: {error}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// A unit file could not be removed.
    #[error("cannot remove the unit file {}: {error}", path.display())]
    Remove {
        /// The file.
        path: PathBuf,
        /// The failure.
        error: std::io::Error,
    },
    /// The program is not on PATH.
    #[error("`{command}` could not run: {program} was not found on PATH. The xrat units need systemd's {program} and a systemd user manager (Debian/Ubuntu: apt-get install systemd)")]
    NotFound {
        /// The command line.
        command: String,
        /// Its program.
        program: String,
    },
    /// The program exists but could not be started.
    #[error("`{command}` could not run: {error}")]
    Spawn {
        /// The command line.
        command: String,
        /// The failure.
        error: std::io::Error,
    },
    /// The command ran and failed.
    #[error("`{command}` failed ({status}):\n{}{}", indent(output), hint(output))]
    Failed {
        /// The command line.
        command: String,
        /// How it exited.
        status: String,
        /// What it printed (stderr, else stdout).
        output: String,
    },
}

/// Runs the steps in order, calling `report` after each one that did not fail the plan, and
/// stops at the first failure.
pub fn execute(plan: &Plan, mut report: impl FnMut(&Step, &Outcome)) -> Result<(), ExecError> {
    for step in &plan.steps {
        let outcome = match step {
            Step::WriteFile {
                path,
                contents,
                mode,
            } => write_file(path, contents, *mode).map(|()| Outcome::Done),
            Step::RemoveFile { path } => remove_file(path).map(|()| Outcome::Done),
            Step::Run {
                argv, tolerated, ..
            } => run(argv, tolerated.is_some()),
        }?;
        report(step, &outcome);
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so systemd never reads a half-written unit and
/// an existing unit with other permissions is replaced, not patched.
fn write_file(path: &Path, contents: &str, mode: u32) -> Result<(), ExecError> {
    let failed = |error| ExecError::Write {
        path: path.to_path_buf(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(failed)?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    // A leading dot and the suffix keep systemd from taking the temporary file for a unit.
    let tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents.as_bytes())?;
        // The umask may have cleared bits of `mode` at creation.
        fs::set_permissions(&tmp, Permissions::from_mode(mode))?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(failed)
}

fn remove_file(path: &Path) -> Result<(), ExecError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(ExecError::Remove {
            path: path.to_path_buf(),
            error: e,
        }),
        _ => Ok(()),
    }
}

fn run(argv: &[String], tolerated: bool) -> Result<Outcome, ExecError> {
    let command = shell_words(argv);
    let (program, args) = argv.split_first().expect("a command has a program");
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|error| match error.kind() {
            ErrorKind::NotFound => ExecError::NotFound {
                command: command.clone(),
                program: program.clone(),
            },
            _ => ExecError::Spawn {
                command: command.clone(),
                error,
            },
        })?;
    if output.status.success() {
        return Ok(Outcome::Done);
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    let printed = match stderr.is_empty() {
        true => String::from_utf8_lossy(&output.stdout).trim().to_string(),
        false => stderr,
    };
    if tolerated {
        return Ok(Outcome::Tolerated(printed));
    }
    Err(ExecError::Failed {
        command,
        status: output.status.to_string(),
        output: printed,
    })
}

fn indent(output: &str) -> String {
    if output.is_empty() {
        return "  (no output)".into();
    }
    output
        .lines()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The usual reasons for systemctl's failures here, and what to do about them.
fn hint(output: &str) -> &'static str {
    if output.contains("Failed to connect to bus") {
        "\nNo systemd user manager answers for this user: log in directly (not through su or sudo), or keep one running with `loginctl enable-linger $USER`."
    } else if output.contains("Job for xrat-daemon.service failed") {
        // run-server refuses to start while another daemon holds the root's lock.
        "\nIf a daemon started with `xrat daemon start` runs for the same XRAT root, it holds the lock the service needs: stop it (`xrat daemon stop`) and install again."
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_step(argv: &[&str], tolerated: bool) -> Step {
        Step::Run {
            argv: argv.iter().map(|a| a.to_string()).collect(),
            done: "ran".into(),
            tolerated: tolerated.then(|| "tolerated".into()),
        }
    }

    fn lines(plan: &Plan) -> (Vec<String>, Result<(), ExecError>) {
        let mut seen = Vec::new();
        let result = execute(plan, |step, outcome| {
            seen.push(format!("{} {outcome:?}", step.done_line()))
        });
        (seen, result)
    }

    #[test]
    fn files_are_written_with_their_mode_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/dir/x.service");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, Permissions::from_mode(0o600)).unwrap();
        let write = Step::WriteFile {
            path: path.clone(),
            contents: "[Unit]\n".into(),
            mode: 0o644,
        };
        let (seen, result) = lines(&Plan { steps: vec![write] });
        result.unwrap();
        assert_eq!(seen, [format!("Written: {} Done", path.display())]);
        assert_eq!(fs::read_to_string(&path).unwrap(), "[Unit]\n");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
        let remove = Step::RemoveFile { path: path.clone() };
        let (_, result) = lines(&Plan {
            steps: vec![remove.clone(), remove],
        });
        result.unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_failing_command_stops_the_plan_with_its_output() {
        let fail = run_step(&["sh", "-c", "echo 'it broke' >&2; exit 3"], false);
        let plan = Plan {
            steps: vec![run_step(&["true"], false), fail, run_step(&["true"], false)],
        };
        let (seen, result) = lines(&plan);
        assert_eq!(seen, ["ran Done"]);
        assert_eq!(
            result.unwrap_err().to_string(),
            "`sh -c 'echo '\\''it broke'\\'' >&2; exit 3'` failed (exit status: 3):\n  it broke"
        );
    }

    #[test]
    fn a_tolerated_failure_goes_on() {
        let stop = run_step(&["sh", "-c", "echo not loaded >&2; exit 5"], true);
        let plan = Plan {
            steps: vec![stop, run_step(&["true"], false)],
        };
        let (seen, result) = lines(&plan);
        result.unwrap();
        assert_eq!(seen, ["ran Tolerated(\"not loaded\")", "ran Done"]);
    }

    #[test]
    fn a_missing_program_is_named() {
        let plan = Plan {
            steps: vec![run_step(&["xrat-no-such-systemctl", "--user"], true)],
        };
        let err = lines(&plan).1.unwrap_err().to_string();
        assert!(
            err.starts_with("`xrat-no-such-systemctl --user` could not run: xrat-no-such-systemctl was not found on PATH"),
            "{err}"
        );
    }

    #[test]
    fn common_failures_get_a_hint() {
        let err = ExecError::Failed {
            command: "systemctl --user daemon-reload".into(),
            status: "exit status: 1".into(),
            output: "Failed to connect to bus: No medium found".into(),
        };
        assert!(err.to_string().contains("loginctl enable-linger"));
        let err = ExecError::Failed {
            command: "systemctl --user start xrat-daemon.service".into(),
            status: "exit status: 1".into(),
            output: "Job for xrat-daemon.service failed because the control process exited with error code.".into(),
        };
        assert!(err
            .to_string()
            .ends_with("stop it (`xrat daemon stop`) and install again."));
    }
}
