//! `xrat daemon install|uninstall` against the real binary: the units pass `systemd-analyze
//! verify`, a dry run writes and runs nothing, and real runs call a recording fake `systemctl`
//! placed first on PATH in exactly the expected order.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const XRAT: &str = env!("CARGO_BIN_EXE_xrat");
const XRAT_API: &str = env!("CARGO_BIN_EXE_xrat-api");
const DAEMON_TEMPLATE: &str = include_str!("../packaging/systemd/xrat-daemon.service.in");
const API_TEMPLATE: &str = include_str!("../packaging/systemd/xrat-api.service.in");
const SOCKET_TEMPLATE: &str = include_str!("../packaging/systemd/xrat-daemon.socket.in");

/// A temporary HOME, XDG_CONFIG_HOME, XRAT root and PATH directory for one test.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    /// A sandbox with the recording fake systemctl (see [`Sandbox::fake_systemctl`]).
    fn with_fake(fail: Option<(&str, &str, i32)>) -> Sandbox {
        let sandbox = Sandbox::new();
        sandbox.fake_systemctl(fail);
        sandbox
    }

    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("xrat-install")
            .tempdir_in("/tmp")
            .unwrap();
        for sub in ["home", "bin"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
        }
        Sandbox { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn unit_dir(&self) -> PathBuf {
        self.path("config/systemd/user")
    }

    fn unit(&self, name: &str) -> PathBuf {
        self.unit_dir().join(name)
    }

    /// The daemon and the API unit files.
    fn units(&self) -> [PathBuf; 2] {
        ["xrat-daemon.service", "xrat-api.service"].map(|name| self.unit(name))
    }

    /// The daemon's socket unit file.
    fn socket_unit(&self) -> PathBuf {
        self.unit("xrat-daemon.socket")
    }

    /// Every unit file, in install order.
    fn all_units(&self) -> [PathBuf; 3] {
        let [daemon, api] = self.units();
        [self.socket_unit(), daemon, api]
    }

    /// Installs a fake systemctl that appends its arguments to a log and exits 0, or, when its
    /// arguments contain `fail.0`, prints `fail.1` on stderr and exits with `fail.2`.
    fn fake_systemctl(&self, fail: Option<(&str, &str, i32)>) {
        let log = self.path("systemctl.log");
        let mut script = format!("#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{}'\n", log.display());
        if let Some((word, message, code)) = fail {
            script += &format!(
                "case \" $* \" in *\" {word} \"*) echo '{message}' >&2; exit {code};; esac\n"
            );
        }
        let path = self.path("bin/systemctl");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// Each systemctl call recorded so far, as its space-joined arguments less `--user`.
    fn calls(&self) -> Vec<String> {
        let log = std::fs::read_to_string(self.path("systemctl.log")).unwrap_or_default();
        let strip = |l: &str| l.strip_prefix("--user ").expect("--user first").to_string();
        log.lines().map(strip).collect()
    }

    /// Runs `exe ARGS` under umask 077 (so 0644 must be set on purpose) with only the sandbox's
    /// bin directory on PATH.
    fn run_exe(&self, exe: &Path, root: &Path, args: &[&str]) -> Output {
        Command::new("/bin/sh")
            .args(["-c", "umask 077 && exec \"$0\" \"$@\""])
            .arg(exe)
            .args(args)
            .env("HOME", self.path("home"))
            .env("XDG_CONFIG_HOME", self.path("config"))
            .env("XRAT_ROOT", root)
            .env("PATH", self.path("bin"))
            .env_remove("NOTIFY_SOCKET")
            .output()
            .unwrap()
    }

    fn run(&self, args: &[&str]) -> Output {
        self.run_exe(Path::new(XRAT), &self.path("root"), args)
    }

    /// A unit as install should render it for plain (unescaped) paths.
    fn expected_unit(&self, template: &str) -> String {
        template
            .replace("@XRAT_EXE@", XRAT)
            .replace("@XRAT_ROOT@", self.path("root").to_str().unwrap())
    }

    /// The socket unit as install should render it for the default settings (front mode on
    /// 127.0.0.1:1080, no HTTP port).
    fn expected_socket_unit(&self) -> String {
        let socket = self.path("root/runtime/daemon.sock");
        SOCKET_TEMPLATE
            .replace("@XRAT_SOCKET@", socket.to_str().unwrap())
            .replace("@XRAT_SOCKS@", "127.0.0.1:1080")
            .replace("ListenStream=@XRAT_HTTP@\n", "")
            .replace("@XRAT_SOCKET_MODE@", "0600")
            .replace("SocketGroup=@XRAT_SOCKET_GROUP@\n", "")
            .replace("@XRAT_DIR_MODE@", "0700")
    }
}

/// The command's stdout and stderr as text.
fn texts(out: &Output) -> (String, String) {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// Asserts that the command succeeded with nothing on stderr; returns its stdout.
fn ok(out: Output) -> String {
    let (stdout, stderr) = texts(&out);
    let code = out.status.code();
    assert!(
        code == Some(0) && stderr.is_empty(),
        "exit {code:?}\n{stdout}{stderr}"
    );
    stdout
}

/// Asserts that the command failed with exit 1; returns its stdout and stderr.
fn failed(out: Output) -> (String, String) {
    assert_eq!(out.status.code(), Some(1), "{:?}", texts(&out));
    texts(&out)
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap()
}

/// Every file under `dir`, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        match path.is_dir() {
            true => found.extend(files_under(&path)),
            false => found.push(path),
        }
    }
    found.sort();
    found
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `systemd-analyze --user verify` on `units`; any finding is an error (it warns on stderr about
/// unknown keys or bad values and still exits 0).
fn verify(sandbox: &Sandbox, units: &[PathBuf]) -> Result<(), String> {
    let runtime = sandbox.path("runtime");
    std::fs::create_dir_all(&runtime).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["--user", "verify", "--man=no"])
        .args(units)
        // The user manager's lookup needs a runtime dir; the sandbox keeps it off the real one.
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("HOME", sandbox.path("home"))
        .env("XDG_CONFIG_HOME", sandbox.path("config"))
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze cannot run ({e}); install it: apt-get install systemd")
        });
    let report = texts(&out).0 + &texts(&out).1;
    match out.status.success() && report.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "systemd-analyze verify {units:?}: {}\n{report}",
            out.status
        )),
    }
}

#[test]
fn the_verify_check_catches_a_broken_unit() {
    let sandbox = Sandbox::new();
    let broken = sandbox.path("broken.service");
    let unit = sandbox.expected_unit(DAEMON_TEMPLATE);
    std::fs::write(&broken, unit.replace("Type=notify", "Type=notifyy")).unwrap();
    let err = verify(&sandbox, &[broken]).unwrap_err();
    assert!(err.contains("Failed to parse service type"), "{err}");
}

#[test]
fn the_verify_check_catches_a_broken_socket_unit() {
    let sandbox = Sandbox::with_fake(None);
    ok(sandbox.run(&["daemon", "install"]));
    let unit = std::fs::read_to_string(sandbox.socket_unit()).unwrap();
    let broken = unit.replace("SocketMode=0600", "SocketMode=06x0");
    std::fs::write(sandbox.socket_unit(), broken).unwrap();
    let err = verify(&sandbox, &sandbox.all_units()[..2]).unwrap_err();
    assert!(err.contains("Failed to parse mode value"), "{err}");
}

#[test]
fn generated_units_pass_systemd_analyze_verify() {
    let sandbox = Sandbox::with_fake(None);
    ok(sandbox.run(&["daemon", "install", "--with-api"]));
    verify(&sandbox, &sandbox.all_units()).unwrap();
}

/// The `ListenStream=` lines of the installed socket unit.
fn listens(sandbox: &Sandbox) -> Vec<String> {
    let unit = std::fs::read_to_string(sandbox.socket_unit()).unwrap();
    let lines = unit.lines().filter(|l| l.starts_with("ListenStream="));
    lines.map(str::to_string).collect()
}

#[test]
fn the_socket_unit_holds_the_ports_config_toml_names_in_front_mode() {
    let socket = |sandbox: &Sandbox| {
        let path = sandbox.path("root/runtime/daemon.sock");
        format!("ListenStream={}", path.display())
    };
    let front = Sandbox::with_fake(None);
    std::fs::create_dir_all(front.path("root")).unwrap();
    let settings = "[runtime]\nlisten = \"::1\"\nsocks_port = 1081\nhttp_port = 8118\n";
    std::fs::write(front.path("root/config.toml"), settings).unwrap();
    ok(front.run(&["daemon", "install"]));
    let expected = [
        socket(&front),
        "ListenStream=[::1]:1081".into(),
        "ListenStream=[::1]:8118".into(),
    ];
    assert_eq!(listens(&front), expected);
    verify(&front, &front.all_units()[..2]).unwrap();

    // In direct mode the core binds the ports; systemd holds only the daemon socket.
    let direct = Sandbox::with_fake(None);
    std::fs::create_dir_all(direct.path("root")).unwrap();
    let settings = "[runtime]\nmode = \"direct\"\nhttp_port = 8118\n";
    std::fs::write(direct.path("root/config.toml"), settings).unwrap();
    ok(direct.run(&["daemon", "install"]));
    assert_eq!(listens(&direct), [socket(&direct)]);
    verify(&direct, &direct.all_units()[..2]).unwrap();

    // A config.toml install cannot read is named before anything is written.
    let broken = Sandbox::with_fake(None);
    std::fs::create_dir_all(broken.path("root")).unwrap();
    std::fs::write(
        broken.path("root/config.toml"),
        "[runtime]\nmode = \"sideways\"\n",
    )
    .unwrap();
    let (_, err) = failed(broken.run(&["daemon", "install"]));
    let file = broken.path("root/config.toml");
    let named = format!("error: invalid settings in {}", file.display());
    assert!(err.starts_with(&named) && err.contains("sideways"), "{err}");
    assert!(!broken.path("config").exists() && broken.calls().is_empty());
}

/// A hard link to the real binary (a copy where linking fails) in `dir`/`sub`, so that
/// `current_exe()` names a path of the test's choosing.
fn exe_in(dir: &Path, sub: &str) -> PathBuf {
    let parent = dir.join(sub);
    std::fs::create_dir(&parent).unwrap();
    for (from, name) in [(XRAT, "xrat"), (XRAT_API, "xrat-api")] {
        let to = parent.join(name);
        if std::fs::hard_link(from, &to).is_err() {
            std::fs::copy(from, &to).unwrap();
        }
    }
    parent.join("xrat")
}

#[test]
fn with_api_refuses_an_xrat_without_xrat_api_beside_it() {
    let sandbox = Sandbox::with_fake(None);
    let bins = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = exe_in(bins.path(), "lone");
    let api = bins.path().join("lone/xrat-api");
    std::fs::remove_file(&api).unwrap();
    let root = sandbox.path("root");
    let (_, stderr) = failed(sandbox.run_exe(&exe, &root, &["daemon", "install", "--with-api"]));
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: --with-api: the API unit runs `xrat api serve`, which runs {}, and that file does not exist; \
             `cargo install --locked --path .` installs it beside xrat",
            api.display()
        )
    );
    assert!(
        sandbox.units().iter().all(|unit| !unit.exists()),
        "nothing is written"
    );
    // Without the API unit, xrat alone is enough.
    ok(sandbox.run_exe(&exe, &root, &["daemon", "install"]));
}

#[test]
fn paths_with_spaces_quotes_and_percent_are_escaped() {
    let sandbox = Sandbox::with_fake(None);
    // verify checks that ExecStart names an existing executable, so a wrongly escaped path fails.
    // Beside the real binary, on the same file system, a hard link does for a copy.
    let bins = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = exe_in(bins.path(), "my apps; 100%n $HOME");
    let root = sandbox.path(r#"root dir %i "q" 'a' \b"#);
    ok(sandbox.run_exe(&exe, &root, &["daemon", "install", "--with-api"]));
    let unit = std::fs::read_to_string(&sandbox.units()[0]).unwrap();
    let directives: Vec<&str> = unit
        .lines()
        .filter(|l| l.starts_with("ExecStart=") || l.starts_with("Environment="))
        .collect();
    let (bins, tmp) = (bins.path().display(), sandbox.dir.path().display());
    assert_eq!(
        directives,
        [
            format!(r#"Environment="XRAT_ROOT={tmp}/root dir %%i \"q\" 'a' \\b""#),
            format!(r#"ExecStart="{bins}/my apps; 100%%n $HOME/xrat" daemon run-server"#),
        ]
    );
    // systemd takes a ListenStream= path whole (no unquoting): only % is escaped.
    let socket = format!(r#"ListenStream={tmp}/root dir %%i "q" 'a' \b/runtime/daemon.sock"#);
    assert_eq!(listens(&sandbox)[0], socket);
    verify(&sandbox, &sandbox.all_units()).unwrap();
}

#[test]
fn an_executable_path_systemd_refuses_is_refused_before_writing() {
    let sandbox = Sandbox::with_fake(None);
    let bins = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let exe = exe_in(bins.path(), "o'brien");
    let root = sandbox.path("root");
    let (_, err) = failed(sandbox.run_exe(&exe, &root, &["daemon", "install"]));
    let expected = format!("error: cannot write the systemd unit: the xrat executable {} contains a quote or a backslash, which systemd refuses in an executable path; move xrat to a plain path and install from there\n", exe.display());
    assert_eq!(err, expected);
    assert!(!sandbox.path("config").exists() && sandbox.calls().is_empty());
}

/// The dry-run text for writing `unit` to `path`: the line, then the unit indented.
fn planned_write(path: &Path, unit: &str) -> String {
    let mut text = format!("Would write: {} (mode 0644)\n", path.display());
    for line in unit.lines() {
        match line.is_empty() {
            true => text.push('\n'),
            false => text += &format!("    {line}\n"),
        }
    }
    text
}

#[test]
fn dry_run_prints_units_and_commands_and_changes_nothing() {
    let sandbox = Sandbox::with_fake(None);
    let out = ok(sandbox.run(&["daemon", "install", "--dry-run", "--start", "--with-api"]));
    let [socket, daemon, api] = sandbox.all_units();
    let expected = [
        planned_write(&socket, &sandbox.expected_socket_unit()),
        planned_write(&daemon, &sandbox.expected_unit(DAEMON_TEMPLATE)),
        planned_write(&api, &sandbox.expected_unit(API_TEMPLATE)),
        "Would run: systemctl --user daemon-reload\n\
         Would run: systemctl --user enable xrat-daemon.socket\n\
         Would run: systemctl --user start xrat-daemon.socket\n\
         Would run: systemctl --user enable xrat-daemon.service\n\
         Would run: systemctl --user start xrat-daemon.service\n\
         Would run: systemctl --user enable xrat-api.service\n\
         Would run: systemctl --user start xrat-api.service\n\
         Dry run: nothing was written or run.\n"
            .to_string(),
    ];
    assert_eq!(out, expected.concat());

    let view = json(&ok(sandbox.run(&[
        "daemon",
        "install",
        "--dry-run",
        "--json",
    ])));
    assert_eq!(view["dry_run"], true);
    let units = ["xrat-daemon.socket", "xrat-daemon.service"];
    assert_eq!(view["units"], serde_json::json!(units));
    let steps = view["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 5);
    assert!(steps.iter().all(|s| s["status"] == "planned"));
    assert_eq!(steps[0]["mode"], "0644");
    assert_eq!(steps[0]["contents"], sandbox.expected_socket_unit());
    assert_eq!(steps[1]["contents"], sandbox.expected_unit(DAEMON_TEMPLATE));
    let enable = ["systemctl", "--user", "enable", "xrat-daemon.service"];
    assert_eq!(steps[4]["argv"], serde_json::json!(enable));
    // Nothing written (not even the unit or XRAT root directories), nothing run.
    let bin = sandbox.path("bin/systemctl");
    assert_eq!(files_under(sandbox.dir.path()), [bin]);
}

#[test]
fn install_writes_the_unit_then_reloads_and_enables() {
    let sandbox = Sandbox::with_fake(None);
    let out = ok(sandbox.run(&["daemon", "install"]));
    let [socket, unit, _] = sandbox.all_units();
    let expected = format!(
        "Written: {}\n\
         Written: {}\n\
         Reloaded systemd user daemon.\n\
         Enabled: xrat-daemon.socket\n\
         Enabled: xrat-daemon.service\n\
         Daemon socket installed successfully.\n\
         Daemon installed successfully.\n\
         The units start at your next login; to start them now: systemctl --user start xrat-daemon.socket xrat-daemon.service\n",
        socket.display(),
        unit.display()
    );
    assert_eq!(out, expected);
    assert_eq!(
        sandbox.calls(),
        [
            "daemon-reload",
            "enable xrat-daemon.socket",
            "enable xrat-daemon.service"
        ]
    );
    let text = std::fs::read_to_string(&unit).unwrap();
    assert_eq!(text, sandbox.expected_unit(DAEMON_TEMPLATE));
    let text = std::fs::read_to_string(&socket).unwrap();
    assert_eq!(text, sandbox.expected_socket_unit());
    assert_eq!(
        (mode(&socket), mode(&unit)),
        (0o644, 0o644),
        "under umask 077"
    );
    assert_eq!(files_under(&sandbox.unit_dir()), [unit, socket]);
}

#[test]
fn start_and_with_api_start_and_add_the_api_unit() {
    let sandbox = Sandbox::with_fake(None);
    let out = ok(sandbox.run(&["daemon", "install", "--start", "--with-api"]));
    let [socket, daemon, api] = sandbox.all_units();
    let expected = format!(
        "Written: {}\nWritten: {}\nWritten: {}\n\
         Reloaded systemd user daemon.\n\
         Enabled: xrat-daemon.socket\nStarted: xrat-daemon.socket\n\
         Enabled: xrat-daemon.service\nStarted: xrat-daemon.service\n\
         Enabled: xrat-api.service\nStarted: xrat-api.service\n\
         Daemon socket installed successfully.\nDaemon installed successfully.\nAPI installed successfully.\n",
        socket.display(),
        daemon.display(),
        api.display()
    );
    assert_eq!(out, expected);
    let calls = [
        "daemon-reload",
        "enable xrat-daemon.socket",
        "start xrat-daemon.socket",
        "enable xrat-daemon.service",
        "start xrat-daemon.service",
        "enable xrat-api.service",
        "start xrat-api.service",
    ];
    assert_eq!(sandbox.calls(), calls);
    let text = std::fs::read_to_string(&api).unwrap();
    assert_eq!(text, sandbox.expected_unit(API_TEMPLATE));
    assert_eq!((mode(&daemon), mode(&api)), (0o644, 0o644));

    // --start alone starts the daemon's units only.
    let only_start = Sandbox::with_fake(None);
    let view = json(&ok(
        only_start.run(&["daemon", "install", "--start", "--json"])
    ));
    assert!(view["steps"]
        .as_array()
        .unwrap()
        .iter()
        .all(|s| s["status"] == "done"));
    assert_eq!(only_start.calls(), calls[..5]);
    assert!(!only_start.units()[1].exists());
}

#[test]
fn uninstall_stops_disables_removes_and_keeps_the_root() {
    let sandbox = Sandbox::with_fake(None);
    ok(sandbox.run(&["daemon", "install", "--with-api"]));
    let root = sandbox.path("root");
    std::fs::create_dir_all(root.join("logs")).unwrap();
    let kept = [root.join("config.toml"), root.join("logs/daemon.log")];
    kept.iter()
        .for_each(|f| std::fs::write(f, "kept\n").unwrap());
    std::fs::remove_file(sandbox.path("systemctl.log")).unwrap();
    let [socket, daemon, api] = sandbox.all_units();

    let dry = ok(sandbox.run(&["daemon", "uninstall", "--dry-run"]));
    let expected = format!(
        "Would run: systemctl --user stop xrat-api.service\n\
         Would run: systemctl --user disable xrat-api.service\n\
         Would remove: {}\n\
         Would run: systemctl --user stop xrat-daemon.socket\n\
         Would run: systemctl --user disable xrat-daemon.socket\n\
         Would remove: {}\n\
         Would run: systemctl --user stop xrat-daemon.service\n\
         Would run: systemctl --user disable xrat-daemon.service\n\
         Would remove: {}\n\
         Would run: systemctl --user daemon-reload\n\
         Dry run: nothing was written or run.\n",
        api.display(),
        socket.display(),
        daemon.display()
    );
    assert_eq!(dry, expected);
    assert!(sandbox.calls().is_empty() && daemon.exists() && api.exists() && socket.exists());

    let out = ok(sandbox.run(&["daemon", "uninstall"]));
    let expected = format!(
        "Stopped: xrat-api.service\nDisabled: xrat-api.service\nRemoved: {}\n\
         Stopped: xrat-daemon.socket\nDisabled: xrat-daemon.socket\nRemoved: {}\n\
         Stopped: xrat-daemon.service\nDisabled: xrat-daemon.service\nRemoved: {}\n\
         Reloaded systemd user daemon.\n\
         Daemon uninstalled; config, database and logs in {} are kept.\n",
        api.display(),
        socket.display(),
        daemon.display(),
        root.display()
    );
    assert_eq!(out, expected);
    let calls = [
        "stop xrat-api.service",
        "disable xrat-api.service",
        "stop xrat-daemon.socket",
        "disable xrat-daemon.socket",
        "stop xrat-daemon.service",
        "disable xrat-daemon.service",
        "daemon-reload",
    ];
    assert_eq!(sandbox.calls(), calls);
    assert!(files_under(&sandbox.unit_dir()).is_empty());
    assert_eq!(files_under(&root), kept);

    // A second uninstall finds nothing and runs nothing.
    let again = ok(sandbox.run(&["daemon", "uninstall"]));
    let unit_dir = sandbox.unit_dir();
    let expected = format!(
        "No xrat units in {}; nothing to uninstall.\n",
        unit_dir.display()
    );
    assert_eq!(again, expected);
    assert_eq!(sandbox.calls().len(), 7);
}

#[test]
fn uninstall_goes_on_when_the_unit_is_not_loaded() {
    let message = "Failed to stop xrat-daemon.socket: Unit xrat-daemon.socket not loaded.";
    let sandbox = Sandbox::with_fake(None);
    for args in [
        &["daemon", "uninstall"][..],
        &["daemon", "uninstall", "--json"],
    ] {
        sandbox.fake_systemctl(None);
        ok(sandbox.run(&["daemon", "install"]));
        sandbox.fake_systemctl(Some(("stop", message, 5)));
        let out = ok(sandbox.run(args));
        assert!(!sandbox.units()[0].exists() && !sandbox.socket_unit().exists());
        let Ok(view) = serde_json::from_str::<serde_json::Value>(&out) else {
            let first = out.lines().next().unwrap();
            assert_eq!(
                first,
                format!("Not stopped: xrat-daemon.socket ({message})")
            );
            continue;
        };
        let steps = view["steps"].as_array().unwrap();
        for step in steps {
            let stop = step["argv"][2] == "stop";
            let status = match stop {
                true => "tolerated_failure",
                false => "done",
            };
            assert_eq!(step["status"], status, "{step}");
        }
        assert_eq!(steps[0]["output"], message);
    }
}

#[test]
fn a_failing_systemctl_is_named_with_its_output() {
    let message = "Failed to connect to bus: No medium found";
    let sandbox = Sandbox::with_fake(Some(("--user", message, 1)));
    let (out, err) = failed(sandbox.run(&["daemon", "install", "--start"]));
    let [socket, daemon, _] = sandbox.all_units();
    let written = format!(
        "Written: {}\nWritten: {}\n",
        socket.display(),
        daemon.display()
    );
    assert_eq!(out, written);
    let expected = format!(
        "error: `systemctl --user daemon-reload` failed (exit status: 1):\n  {message}\n\
         No systemd user manager answers for this user: log in directly (not through su or sudo), or keep one running with `loginctl enable-linger $USER`.\n"
    );
    assert_eq!(err, expected);
    assert_eq!(sandbox.calls(), ["daemon-reload"]);

    // A later step failing stops the plan there, after what was done is reported.
    let message = "Failed to enable unit: Access denied";
    let later = Sandbox::with_fake(Some(("enable", message, 4)));
    let (out, err) = failed(later.run(&["daemon", "install", "--start"]));
    assert!(out.ends_with("Reloaded systemd user daemon.\n"), "{out}");
    let expected = format!(
        "error: `systemctl --user enable xrat-daemon.socket` failed (exit status: 4):\n  {message}\n"
    );
    assert_eq!(err, expected);
    assert_eq!(
        later.calls(),
        ["daemon-reload", "enable xrat-daemon.socket"]
    );
}

#[test]
fn a_missing_systemctl_is_named() {
    let sandbox = Sandbox::new();
    let (_, err) = failed(sandbox.run(&["daemon", "install"]));
    let expected = "error: `systemctl --user daemon-reload` could not run: systemctl was not found on PATH. \
                    The xrat units need systemd's systemctl and a systemd user manager (Debian/Ubuntu: apt-get install systemd)\n";
    assert_eq!(err, expected);
    // Uninstall stops at its first command the same way, before removing anything.
    let [unit, _] = sandbox.units();
    assert!(unit.exists());
    let (_, err) = failed(sandbox.run(&["daemon", "uninstall"]));
    let expected = "error: `systemctl --user stop xrat-daemon.socket` could not run: systemctl was not found on PATH.";
    assert!(err.starts_with(expected), "{err}");
    assert!(unit.exists());
}
