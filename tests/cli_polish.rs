//! Newcomer polish (issue 12, part 4) that needs no core: `--version`, `-h`, completions,
//! `daemon status`'s block, `logs` (tail, JSON, follow), `api serve --json`, and the help texts.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, wait_until, xrat_bin, Root};
use serde_json::Value;

/// How long a `logs -f` or `api serve` child gets to show or end something.
const CHILD_TIMEOUT: Duration = Duration::from_secs(10);

#[test]
fn version_and_short_help() {
    let root = Root::new();
    let out = root.run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("xrat {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = root.run(&["-V", "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["version"], env!("CARGO_PKG_VERSION"));

    for args in [&["-h"][..], &["--help"], &["help"]] {
        let out = root.run(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let help = text(&out.stdout);
        assert!(help.starts_with("Usage: xrat <command>"), "{help}");
        for command in ["completions", "logs", "daemon", "config", "proxy", "api"] {
            assert!(
                help.contains(&format!("\n  {command} ")),
                "{command} in {help}"
            );
        }
    }
    let out = root.run(&["daemon", "status", "-h"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("Usage: xrat daemon status [--json]"));
    let out = root.run(&["--versionx"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn help_texts_name_only_commands_that_exist() {
    let root = Root::new();
    let groups: [&[&str]; 5] = [&[], &["config"], &["daemon"], &["proxy"], &["api"]];
    for group in groups {
        let commands = subcommands(&root, group);
        for command in commands {
            let mut args: Vec<&str> = group.to_vec();
            args.push(&command);
            args.push("--help");
            let out = root.run(&args);
            assert_eq!(out.status.code(), Some(0), "{args:?}");
            let help = text(&out.stdout);
            assert!(!help.contains("runtime connect"), "{args:?}: {help}");
            if !help.contains("Commands:") && !matches!(args[..], ["completions", ..]) {
                // Every leaf command that prints a result takes --json.
                assert!(help.contains("--json"), "{args:?} lacks --json: {help}");
            }
        }
    }
}

/// The command names `xrat GROUP --help` lists.
fn subcommands(root: &Root, group: &[&str]) -> Vec<String> {
    let mut args = group.to_vec();
    args.push("--help");
    let help = text(&root.run(&args).stdout);
    let Some((_, list)) = help.split_once("Commands:\n") else {
        return Vec::new();
    };
    list.lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    let root = Root::new();
    let out = root.run(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0));
    let script = text(&out.stdout);
    assert!(script.contains("complete -F _xrat"), "{script}");
    for word in ["daemon", "logs", "--follow", "--core", "--config-id"] {
        assert!(script.contains(word), "{word} missing from the bash script");
    }
    // The script is valid bash.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("xrat.bash");
    std::fs::write(&file, &script).unwrap();
    let check = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", text(&check.stderr));

    let zsh = text(&root.run(&["completions", "zsh"]).stdout);
    assert!(zsh.starts_with("#compdef xrat"), "{zsh}");
    let fish = text(&root.run(&["completions", "fish", "--json"]).stdout);
    let view: Value = serde_json::from_str(&fish).unwrap();
    assert_eq!(view["shell"], "fish");
    assert!(view["script"]
        .as_str()
        .unwrap()
        .contains("complete -c xrat"));

    let out = root.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("use one of bash, zsh, fish"));
}

#[test]
fn daemon_status_keeps_the_seed_block_and_adds_pid_version_uptime() {
    let root = Root::new();
    let pid = root.start();
    let out = root.run(&["daemon", "status"]);
    assert_eq!(out.status.code(), Some(0));
    let socket = root.socket().display().to_string();
    let version = env!("CARGO_PKG_VERSION");
    let shown = text(&out.stdout);
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 9, "{shown}");
    assert_eq!(
        lines[..5],
        [
            "Daemon Status",
            &"─".repeat(33),
            &format!("Socket: {socket}"),
            "Reachable: yes",
            "Protocol: v1"
        ]
    );
    assert_eq!(lines[5], format!("Pid: {pid}"));
    assert_eq!(lines[6], format!("Version: {version}"));
    let uptime = lines[7].strip_prefix("Uptime: ").expect(lines[7]);
    assert!(uptime.ends_with('s'), "{uptime}");
    let backend = lines[8].strip_prefix("Backend: ").expect(lines[8]);
    assert!(["io_uring", "epoll"].contains(&backend), "{backend}");
}

#[test]
fn logs_show_the_tail_as_text_and_json() {
    let root = Root::new();
    let out = root.run(&["logs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no daemon log at"),
        "{}",
        text(&out.stderr)
    );
    let out = root.run(&["logs", "--core"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no core log in"));

    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let body: String = (1..=60).map(|i| format!("line {i}\n")).collect();
    std::fs::write(logs.join("daemon.log"), &body).unwrap();
    let out = root.run(&["logs"]);
    assert_eq!(out.status.code(), Some(0));
    let expected: String = (11..=60).map(|i| format!("line {i}\n")).collect();
    assert_eq!(
        text(&out.stdout),
        expected,
        "the default is the last 50 lines"
    );
    let out = root.run(&["logs", "-n", "2"]);
    assert_eq!(text(&out.stdout), "line 59\nline 60\n");
    let out = root.run(&["logs", "-n", "2", "--json"]);
    let view: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["lines"], serde_json::json!(["line 59", "line 60"]));
    assert_eq!(view["file"], logs.join("daemon.log").display().to_string());
    let out = root.run(&["logs", "-n", "99999999"]);
    assert_eq!(out.status.code(), Some(1));

    // --core: the newest of core-<session>.log and pool-<core>.log, by modification time.
    std::fs::write(logs.join("core-9.log"), "old core\n").unwrap();
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(logs.join("pool-1.log"), "new pool\n").unwrap();
    std::fs::write(logs.join("batch.log"), "batch\n").unwrap();
    let out = root.run(&["logs", "--core"]);
    assert_eq!(text(&out.stdout), "new pool\n");
}

#[test]
fn logs_follow_until_interrupted_or_removed() {
    let root = Root::new();
    let logs = root.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let path = logs.join("daemon.log");
    std::fs::write(&path, "before\n").unwrap();

    let mut child = spawn(&root, &["logs", "-f", "-n", "1", "--json"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    assert_eq!(json_line(&mut out)["line"], "before");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"after 1\nafter").unwrap();
    file.flush().unwrap();
    assert_eq!(json_line(&mut out)["line"], "after 1");
    file.write_all(b" 2\n").unwrap();
    assert_eq!(json_line(&mut out)["line"], "after 2");
    // SAFETY: interrupting the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert_eq!(wait_exit(&mut child), Some(0), "SIGINT ends -f cleanly");

    let mut child = spawn(&root, &["logs", "-f", "-n", "1"]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "after 2\n");
    std::fs::remove_file(&path).unwrap();
    assert_eq!(wait_exit(&mut child), Some(0), "a removed file ends -f");
}

fn spawn(root: &Root, args: &[&str]) -> Child {
    root.command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn json_line(out: &mut impl BufRead) -> Value {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

/// The child's exit code, killing it if it runs past [`CHILD_TIMEOUT`].
fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + CHILD_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("the child did not exit within {CHILD_TIMEOUT:?}");
}

#[test]
fn api_serve_json_prints_its_address_and_pid() {
    let root = Root::new();
    let mut child = spawn(
        &root,
        &["api", "serve", "--listen", "127.0.0.1:0", "--json"],
    );
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let start = json_line(&mut out);
    assert_eq!(start["event"], "listening", "{start}");
    assert_eq!(start["pid"], child.id());
    let listen: std::net::SocketAddr = start["listen"].as_str().unwrap().parse().unwrap();
    assert_ne!(listen.port(), 0);
    assert_eq!(start["url"], format!("http://{listen}"));
    assert_eq!(
        start["token_file"],
        root.path().join("api.token").display().to_string()
    );
    assert!(wait_until(CHILD_TIMEOUT, || std::net::TcpStream::connect(
        listen
    )
    .is_ok()));
    // SAFETY: stopping the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let stop = json_line(&mut out);
    assert_eq!(stop["event"], "stopped", "{stop}");
    assert_eq!(wait_exit(&mut child), Some(0));
}

/// The API is the `xrat-api` binary beside `xrat`; a lone `xrat` says which file is missing and
/// how to install it, and a usage error is still `xrat`'s own (exit 2, nothing started).
#[test]
fn api_serve_without_xrat_api_beside_xrat_names_the_file() {
    let root = Root::new();
    let lone = tempfile::tempdir().unwrap();
    let exe = lone.path().join("xrat");
    std::fs::copy(xrat_bin(), &exe).unwrap();
    let out = Command::new(&exe)
        .args(["api", "serve", "--listen", "127.0.0.1:0"])
        .env("XRAT_ROOT", root.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let missing = lone.path().join("xrat-api");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "error: the HTTP API is the separate binary xrat-api, and {} does not exist; \
             `cargo install --locked --path .` installs it beside xrat, or copy it there from target/release/",
            missing.display()
        )
    );
    let out = Command::new(&exe)
        .args(["api", "serve", "--listen", "nowhere"])
        .env("XRAT_ROOT", root.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen \"nowhere\" is not IP:PORT"));
}

/// A reader that closed stdout before xrat wrote (`xrat completions bash | true`) ends the
/// command quietly with 0, not with a "failed printing to stdout" panic. The pipe's read end is
/// closed before the child starts, so its first write always meets EPIPE.
#[test]
fn closed_stdout_ends_quietly() {
    let root = Root::new();
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let out = root
        .command(&["completions", "bash"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .expect("run xrat");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(stderr.is_empty(), "stderr: {stderr}");
}
