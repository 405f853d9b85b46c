//! The steps that install or remove the units, built without touching the system.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::render::{render, render_socket, RenderError};
use super::Unit;

/// Mode of a written unit file: systemd and the user read it, only the user writes it.
pub const UNIT_FILE_MODE: u32 = 0o644;

/// What `xrat daemon install` was asked to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InstallOptions {
    /// Start the units now, not only enable them for the next login.
    pub start: bool,
    /// Install the API unit as well.
    pub with_api: bool,
}

/// The facts an install plan depends on, gathered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstallEnv {
    /// The xrat executable the units run (absolute).
    pub exe: PathBuf,
    /// The XRAT root the units get as `XRAT_ROOT` (absolute).
    pub root: PathBuf,
    /// The systemd user unit directory the files go to.
    pub unit_dir: PathBuf,
    /// The daemon socket the socket unit listens on (absolute).
    pub socket: PathBuf,
    /// Front mode: the user's SOCKS port, which the socket unit holds too (`None` in direct
    /// mode, where the core binds it).
    pub front_socks: Option<SocketAddr>,
    /// Front mode, with `runtime.http_port` set: the user's HTTP port.
    pub front_http: Option<SocketAddr>,
    /// `daemon.socket_group`, when set: the socket unit gives the socket to that group.
    pub socket_group: Option<String>,
}

/// One thing to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Write `contents` to `path` with permissions `mode`, creating the directory.
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Its text.
        contents: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Run a command (found on PATH).
    Run {
        /// Program and arguments.
        argv: Vec<String>,
        /// The line reported once it succeeded ("Enabled: xrat-daemon.service").
        done: String,
        /// When set, a failure is reported with this line and the plan goes on; when unset, a
        /// failure stops the plan.
        tolerated: Option<String>,
    },
    /// Remove a file; one that is already gone counts as removed.
    RemoveFile {
        /// The file.
        path: PathBuf,
    },
}

impl Step {
    /// The line reported once the step succeeded.
    pub fn done_line(&self) -> String {
        match self {
            Step::WriteFile { path, .. } => format!("Written: {}", path.display()),
            Step::Run { done, .. } => done.clone(),
            Step::RemoveFile { path } => format!("Removed: {}", path.display()),
        }
    }

    /// The line a dry run prints for the step (a file's contents are printed apart).
    pub fn planned_line(&self) -> String {
        match self {
            Step::WriteFile { path, mode, .. } => {
                format!("Would write: {} (mode {mode:04o})", path.display())
            }
            Step::Run { argv, .. } => format!("Would run: {}", shell_words(argv)),
            Step::RemoveFile { path } => format!("Would remove: {}", path.display()),
        }
    }
}

/// An ordered list of steps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// The steps, in the order they run.
    pub steps: Vec<Step>,
}

/// The units an install writes, in [`Unit::ALL`] order: the daemon's socket and service units,
/// and with `with_api` the API unit.
pub fn install_units(options: &InstallOptions) -> Vec<Unit> {
    let wanted = |unit: &Unit| *unit != Unit::Api || options.with_api;
    Unit::ALL.into_iter().filter(wanted).collect()
}

/// Writes the unit files, reloads systemd, then enables (and with `start`, starts) the socket
/// unit, the daemon unit and, with `with_api`, the API unit, in that order.
pub fn install_plan(options: &InstallOptions, env: &InstallEnv) -> Result<Plan, RenderError> {
    let units = install_units(options);
    let mut steps = Vec::new();
    for unit in &units {
        steps.push(Step::WriteFile {
            path: env.unit_dir.join(unit.name()),
            contents: render_unit(*unit, env)?,
            mode: UNIT_FILE_MODE,
        });
    }
    // systemd reads new or changed files only on a reload; enable would act on the old ones.
    steps.push(reload());
    for unit in &units {
        steps.push(systemctl("enable", *unit, "Enabled"));
        if options.start {
            steps.push(systemctl("start", *unit, "Started"));
        }
    }
    Ok(Plan { steps })
}

fn render_unit(unit: Unit, env: &InstallEnv) -> Result<String, RenderError> {
    match unit {
        Unit::Socket => render_socket(
            unit.template(),
            &env.socket,
            env.front_socks,
            env.front_http,
            env.socket_group.as_deref(),
        ),
        Unit::Daemon | Unit::Api => render(unit.template(), &env.exe, &env.root),
    }
}

/// Stops, disables and removes each of `installed` in [`Unit::STOP_ORDER`] (the API, a client
/// of the daemon, first; the socket unit before the service, so nothing starts it again), then
/// reloads systemd. Nothing installed gives an empty plan.
pub fn uninstall_plan(unit_dir: &Path, installed: &[Unit]) -> Plan {
    let mut steps = Vec::new();
    for unit in Unit::STOP_ORDER.iter().filter(|u| installed.contains(u)) {
        // A unit that is not loaded cannot be stopped, and that must not block its removal.
        let mut stop = systemctl("stop", *unit, "Stopped");
        if let Step::Run { tolerated, .. } = &mut stop {
            *tolerated = Some(format!("Not stopped: {}", unit.name()));
        }
        steps.push(stop);
        steps.push(systemctl("disable", *unit, "Disabled"));
        steps.push(Step::RemoveFile {
            path: unit_dir.join(unit.name()),
        });
    }
    if !steps.is_empty() {
        // Drops the removed units from the manager's memory.
        steps.push(reload());
    }
    Plan { steps }
}

fn reload() -> Step {
    Step::Run {
        argv: argv(&["daemon-reload"]),
        done: "Reloaded systemd user daemon.".into(),
        tolerated: None,
    }
}

fn systemctl(verb: &str, unit: Unit, done: &str) -> Step {
    Step::Run {
        argv: argv(&[verb, unit.name()]),
        done: format!("{done}: {}", unit.name()),
        tolerated: None,
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    ["systemctl", "--user"]
        .iter()
        .chain(args)
        .map(|a| a.to_string())
        .collect()
}

/// `argv` as a line a shell would split back into the same words.
pub(crate) fn shell_words(argv: &[String]) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c);
    argv.iter()
        .map(|a| match !a.is_empty() && a.chars().all(plain) {
            true => a.clone(),
            false => format!("'{}'", a.replace('\'', r"'\''")),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> InstallEnv {
        InstallEnv {
            exe: "/opt/xrat/bin/xrat".into(),
            root: "/home/u/.config/xrat".into(),
            unit_dir: "/home/u/.config/systemd/user".into(),
            socket: "/home/u/.config/xrat/runtime/daemon.sock".into(),
            front_socks: Some("127.0.0.1:1080".parse().unwrap()),
            front_http: None,
            socket_group: None,
        }
    }

    /// The plan as the lines a dry run and a real run report, in order.
    fn summary(plan: &Plan) -> Vec<String> {
        plan.steps.iter().map(Step::planned_line).collect()
    }

    #[test]
    fn install_writes_reloads_and_enables() {
        let plan = install_plan(&InstallOptions::default(), &env()).unwrap();
        assert_eq!(
            summary(&plan),
            [
                "Would write: /home/u/.config/systemd/user/xrat-daemon.socket (mode 0644)",
                "Would write: /home/u/.config/systemd/user/xrat-daemon.service (mode 0644)",
                "Would run: systemctl --user daemon-reload",
                "Would run: systemctl --user enable xrat-daemon.socket",
                "Would run: systemctl --user enable xrat-daemon.service",
            ]
        );
        let contents = |step: &Step| match step {
            Step::WriteFile { contents, mode, .. } if *mode == 0o644 => contents.clone(),
            other => panic!("not a unit write: {other:?}"),
        };
        let socket = contents(&plan.steps[0]);
        let socket_lines: Vec<&str> = socket.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(socket_lines.contains(&"ListenStream=/home/u/.config/xrat/runtime/daemon.sock"));
        assert!(socket_lines.contains(&"ListenStream=127.0.0.1:1080"));
        assert!(socket_lines.contains(&"SocketMode=0600"));
        assert!(socket_lines.contains(&"DirectoryMode=0700"));
        assert!(!socket.contains("\nSocketGroup="), "{socket}");
        let shared = InstallEnv {
            socket_group: Some("xrat".into()),
            ..env()
        };
        let plan = install_plan(&InstallOptions::default(), &shared).unwrap();
        let socket = contents(&plan.steps[0]);
        let socket_lines: Vec<&str> = socket.lines().filter(|l| !l.starts_with('#')).collect();
        for line in ["SocketMode=0660", "SocketGroup=xrat", "DirectoryMode=0710"] {
            assert!(socket_lines.contains(&line), "{line} not in {socket}");
        }
        let service = contents(&plan.steps[1]);
        assert!(service.contains("\nExecStart=/opt/xrat/bin/xrat daemon run-server\n"));
        assert!(service.contains("\nEnvironment=XRAT_ROOT=/home/u/.config/xrat\n"));
        assert_eq!(plan.steps[3].done_line(), "Enabled: xrat-daemon.socket");
    }

    #[test]
    fn the_socket_unit_holds_the_front_ports_only_in_front_mode() {
        let listens = |env: &InstallEnv| {
            let plan = install_plan(&InstallOptions::default(), env).unwrap();
            let Step::WriteFile { contents, .. } = &plan.steps[0] else {
                panic!("the socket unit comes first")
            };
            let lines = contents.lines().filter(|l| l.starts_with("ListenStream="));
            lines.map(str::to_string).collect::<Vec<_>>()
        };
        let mut env = env();
        env.front_http = Some("[::1]:8080".parse().unwrap());
        let socket = "ListenStream=/home/u/.config/xrat/runtime/daemon.sock";
        let both = [
            socket,
            "ListenStream=127.0.0.1:1080",
            "ListenStream=[::1]:8080",
        ];
        assert_eq!(listens(&env), both);
        (env.front_socks, env.front_http) = (None, None);
        assert_eq!(listens(&env), [socket]);
    }

    #[test]
    fn start_and_with_api_extend_the_plan() {
        let options = InstallOptions {
            start: true,
            with_api: true,
        };
        let plan = install_plan(&options, &env()).unwrap();
        assert_eq!(
            summary(&plan),
            [
                "Would write: /home/u/.config/systemd/user/xrat-daemon.socket (mode 0644)",
                "Would write: /home/u/.config/systemd/user/xrat-daemon.service (mode 0644)",
                "Would write: /home/u/.config/systemd/user/xrat-api.service (mode 0644)",
                "Would run: systemctl --user daemon-reload",
                "Would run: systemctl --user enable xrat-daemon.socket",
                "Would run: systemctl --user start xrat-daemon.socket",
                "Would run: systemctl --user enable xrat-daemon.service",
                "Would run: systemctl --user start xrat-daemon.service",
                "Would run: systemctl --user enable xrat-api.service",
                "Would run: systemctl --user start xrat-api.service",
            ]
        );
        let with_api_only = InstallOptions {
            start: false,
            with_api: true,
        };
        let plan = install_plan(&with_api_only, &env()).unwrap();
        assert!(!summary(&plan).iter().any(|l| l.contains(" start ")));
        assert_eq!(plan.steps.len(), 7);
    }

    #[test]
    fn install_refuses_unrenderable_paths() {
        let mut bad = env();
        bad.root = "relative".into();
        assert!(install_plan(&InstallOptions::default(), &bad).is_err());
    }

    #[test]
    fn uninstall_removes_the_api_first_and_tolerates_stop_failures() {
        let dir = Path::new("/u");
        let plan = uninstall_plan(dir, &Unit::ALL);
        assert_eq!(
            summary(&plan),
            [
                "Would run: systemctl --user stop xrat-api.service",
                "Would run: systemctl --user disable xrat-api.service",
                "Would remove: /u/xrat-api.service",
                "Would run: systemctl --user stop xrat-daemon.socket",
                "Would run: systemctl --user disable xrat-daemon.socket",
                "Would remove: /u/xrat-daemon.socket",
                "Would run: systemctl --user stop xrat-daemon.service",
                "Would run: systemctl --user disable xrat-daemon.service",
                "Would remove: /u/xrat-daemon.service",
                "Would run: systemctl --user daemon-reload",
            ]
        );
        let tolerated: Vec<bool> = plan
            .steps
            .iter()
            .map(|s| {
                matches!(
                    s,
                    Step::Run {
                        tolerated: Some(_),
                        ..
                    }
                )
            })
            .collect();
        let unit = [true, false, false];
        assert_eq!(
            tolerated,
            [unit, unit, unit]
                .concat()
                .into_iter()
                .chain([false])
                .collect::<Vec<_>>()
        );
        assert_eq!(uninstall_plan(dir, &[Unit::Daemon]).steps.len(), 4);
        assert!(uninstall_plan(dir, &[]).steps.is_empty());
    }

    #[test]
    fn shell_words_quote_what_a_shell_would_split() {
        let argv = ["a b".to_string(), "it's".into(), "plain-1.x".into()];
        assert_eq!(shell_words(&argv), r"'a b' 'it'\''s' plain-1.x");
    }
}
