//! `xrat daemon install|uninstall`: the systemd user units. `crate::install` builds the plan;
//! this file gathers its inputs, prints it (`--dry-run`) or carries it out step by step, so a
//! failure still shows what was already done.

use std::net::SocketAddr;
use std::path::PathBuf;

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::output::print_json;
use super::{CliError, EXIT_OK};
use crate::install::{
    execute, install_plan, install_units, installed_units, uninstall_plan, unit_dir_from_env,
    InstallEnv, InstallOptions, Outcome, Plan, Step, Unit,
};
use crate::paths::Paths;
use crate::settings::{RuntimeMode, Settings};

/// Install the daemon as a systemd user service.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "install")]
pub struct InstallArgs {
    /// start the units now, not only at the next login
    #[argh(switch)]
    start: bool,
    /// also install the HTTP API unit (xrat-api.service)
    #[argh(switch)]
    with_api: bool,
    /// print the units and the commands, and write and run nothing
    #[argh(switch)]
    dry_run: bool,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Remove the systemd user services (config, database and logs are kept).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "uninstall")]
pub struct UninstallArgs {
    /// print the commands, and remove and run nothing
    #[argh(switch)]
    dry_run: bool,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// What `--json` prints: the plan, and how far it went.
#[derive(Serialize)]
struct PlanView {
    dry_run: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exe: Option<PathBuf>,
    root: PathBuf,
    unit_dir: PathBuf,
    units: Vec<&'static str>,
    steps: Vec<StepView>,
}

#[derive(Serialize)]
struct StepView {
    /// write_file, run or remove_file.
    action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    contents: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    argv: Option<Vec<String>>,
    /// planned (dry run), done, or tolerated_failure (its output follows).
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<String>,
}

impl StepView {
    fn new(step: &Step, outcome: Option<&Outcome>) -> StepView {
        let (status, output) = match outcome {
            None => ("planned", None),
            Some(Outcome::Done) => ("done", None),
            Some(Outcome::Tolerated(out)) => ("tolerated_failure", Some(out.clone())),
        };
        let mut view = StepView {
            action: "run",
            path: None,
            mode: None,
            contents: None,
            argv: None,
            status,
            output,
        };
        match step {
            Step::WriteFile {
                path,
                contents,
                mode,
            } => {
                view.action = "write_file";
                view.path = Some(path.clone());
                view.mode = Some(format!("{mode:04o}"));
                view.contents = Some(contents.clone());
            }
            Step::Run { argv, .. } => view.argv = Some(argv.clone()),
            Step::RemoveFile { path } => {
                view.action = "remove_file";
                view.path = Some(path.clone());
            }
        }
        view
    }
}

/// `xrat daemon install`: writes the unit files, reloads systemd, enables (and starts) them.
pub fn install(args: InstallArgs) -> Result<i32, CliError> {
    let root = root()?;
    let exe = std::env::current_exe().map_err(|e| {
        CliError::Daemon(format!("cannot find the xrat executable for the unit: {e}"))
    })?;
    // After a rebuild or an upgrade, /proc/self/exe names a file that is gone ("… (deleted)").
    if !exe.is_file() {
        return Err(CliError::Daemon(format!(
            "the running xrat executable {} no longer exists; run `xrat daemon install` from the installed binary",
            exe.display()
        )));
    }
    let api = exe.with_file_name(super::API_EXE);
    if args.with_api && !api.is_file() {
        return Err(CliError::Daemon(format!(
            "--with-api: the API unit runs `xrat api serve`, which runs {}, and that file does not exist; \
             `cargo install --locked --path .` installs it beside xrat",
            api.display()
        )));
    }
    let options = InstallOptions {
        start: args.start,
        with_api: args.with_api,
    };
    let paths = Paths::at(&root);
    // The socket unit holds the ports config.toml names now; a later change needs a reinstall.
    let settings = Settings::load(&paths.settings_file())?;
    let (front_socks, front_http) = front_ports(&settings);
    let env = InstallEnv {
        exe: exe.clone(),
        root: root.clone(),
        unit_dir: unit_dir()?,
        socket: paths.checked_socket()?,
        front_socks,
        front_http,
        socket_group: Some(settings.daemon.socket_group).filter(|g| !g.is_empty()),
    };
    let plan = install_plan(&options, &env)
        .map_err(|e| CliError::Daemon(format!("cannot write the systemd unit: {e}")))?;
    let units = install_units(&options);
    let mut view = PlanView {
        dry_run: args.dry_run,
        exe: Some(exe),
        root,
        unit_dir: env.unit_dir,
        units: units.iter().map(|u| u.name()).collect(),
        steps: Vec::new(),
    };
    if args.dry_run {
        return print_dry_run(&plan, view, args.json);
    }
    view.steps = carry_out(&plan, args.json)?;
    if args.json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    for unit in &units {
        println!("{} installed successfully.", unit.label());
    }
    if !options.start {
        let names: Vec<&str> = units.iter().map(|u| u.name()).collect();
        println!(
            "The units start at your next login; to start them now: systemctl --user start {}",
            names.join(" ")
        );
    }
    Ok(EXIT_OK)
}

/// The user's ports the daemon binds in front mode (the socket unit holds them); none in direct
/// mode, where the core binds them.
fn front_ports(settings: &Settings) -> (Option<SocketAddr>, Option<SocketAddr>) {
    let runtime = &settings.runtime;
    let listen = runtime.listen.parse().expect("validated with the settings");
    let port = |port: u16| (runtime.mode == RuntimeMode::Front && port != 0).then_some(port);
    let addr = |port| SocketAddr::new(listen, port);
    (
        port(runtime.socks_port).map(addr),
        port(runtime.http_port).map(addr),
    )
}

/// `xrat daemon uninstall`: stops, disables and removes the units whose files are present.
pub fn uninstall(args: UninstallArgs) -> Result<i32, CliError> {
    let root = root()?;
    let unit_dir = unit_dir()?;
    let installed = installed_units(&unit_dir);
    let plan = uninstall_plan(&unit_dir, &installed);
    let mut view = PlanView {
        dry_run: args.dry_run,
        exe: None,
        root: root.clone(),
        unit_dir: unit_dir.clone(),
        units: installed.iter().map(|u| u.name()).collect(),
        steps: Vec::new(),
    };
    if plan.steps.is_empty() {
        // Uninstalling twice is not an error: scripts can run it to make sure.
        if args.json {
            print_json(&view);
        } else {
            println!(
                "No xrat units in {}; nothing to uninstall.",
                unit_dir.display()
            );
        }
        return Ok(EXIT_OK);
    }
    if args.dry_run {
        return print_dry_run(&plan, view, args.json);
    }
    view.steps = carry_out(&plan, args.json)?;
    if args.json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    let label = match installed.contains(&Unit::Daemon) {
        true => Unit::Daemon.label(),
        false => Unit::Api.label(),
    };
    println!(
        "{label} uninstalled; config, database and logs in {} are kept.",
        root.display()
    );
    Ok(EXIT_OK)
}

/// The XRAT root the CLI uses, made absolute: the service does not run in this directory.
fn root() -> Result<PathBuf, CliError> {
    let root = Paths::from_env()?.root;
    std::path::absolute(&root).map_err(|e| {
        CliError::Daemon(format!(
            "cannot make the XRAT root {} absolute: {e}",
            root.display()
        ))
    })
}

fn unit_dir() -> Result<PathBuf, CliError> {
    unit_dir_from_env().ok_or_else(|| {
        CliError::Daemon(
            "cannot find the systemd user unit directory: set XDG_CONFIG_HOME or HOME".into(),
        )
    })
}

/// Prints the plan (text: each step, a unit's text indented under its write), runs nothing.
fn print_dry_run(plan: &Plan, mut view: PlanView, json: bool) -> Result<i32, CliError> {
    if json {
        view.steps = plan.steps.iter().map(|s| StepView::new(s, None)).collect();
        print_json(&view);
        return Ok(EXIT_OK);
    }
    for step in &plan.steps {
        println!("{}", step.planned_line());
        if let Step::WriteFile { contents, .. } = step {
            print_indented(contents);
        }
    }
    println!("Dry run: nothing was written or run.");
    Ok(EXIT_OK)
}

fn print_indented(text: &str) {
    for line in text.lines() {
        match line.is_empty() {
            true => println!(),
            false => println!("    {line}"),
        }
    }
}

/// Executes the plan, printing each step as it is done (text mode), so the lines before an
/// error show what already happened.
fn carry_out(plan: &Plan, json: bool) -> Result<Vec<StepView>, CliError> {
    let mut views = Vec::new();
    execute(plan, |step, outcome| {
        if !json {
            println!("{}", outcome_line(step, outcome));
        }
        views.push(StepView::new(step, Some(outcome)));
    })
    .map_err(|e| CliError::Daemon(e.to_string()))?;
    Ok(views)
}

fn outcome_line(step: &Step, outcome: &Outcome) -> String {
    match (step, outcome) {
        (
            Step::Run {
                tolerated: Some(line),
                ..
            },
            Outcome::Tolerated(output),
        ) => format!("{line} ({})", one_line(output)),
        _ => step.done_line(),
    }
}

/// Command output folded onto one line for a progress message.
fn one_line(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.is_empty() {
        true => "no output".into(),
        false => lines.join("; "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerated_failures_fold_their_output() {
        let step = Step::Run {
            argv: vec!["systemctl".into()],
            done: "Stopped: x".into(),
            tolerated: Some("Not stopped: x".into()),
        };
        let out = Outcome::Tolerated("Failed to stop x.\n\n  Unit not loaded.\n".into());
        assert_eq!(
            outcome_line(&step, &out),
            "Not stopped: x (Failed to stop x.; Unit not loaded.)"
        );
        assert_eq!(outcome_line(&step, &Outcome::Done), "Stopped: x");
    }
}
