//! `xrat config test [IDS…|--all]`: the batch test of stored configs (issue 12 part 2), run by
//! the CLI itself: one temporary core per core family with one SOCKS inbound per config (the
//! batch test the rotation runs), results written to `config_tests`.

use std::io::IsTerminal;
use std::time::Duration;

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::output::print_json;
use super::{CliError, EXIT_OK, EXIT_USAGE};
use crate::core::{check_support, choose_core, detect_all, CoreBinary};
use crate::ctest::standalone::{self, Member, Setup};
use crate::ctest::{self as ct, TestOptions, TestOutcome};
use crate::paths::Paths;
use crate::settings::{CoreChoice, Settings};
use crate::store::{ConfigRow, Store};

/// Test stored configs through a temporary core: latency through each, or why it failed.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "test")]
pub struct TestArgs {
    /// config ids, as listed by `xrat config list`
    #[argh(positional, arg_name = "ID")]
    ids: Vec<i64>,
    /// test every enabled config
    #[argh(switch)]
    all: bool,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
    /// the http:// URL probed through each config (default: health.probe_url)
    #[argh(option)]
    url: Option<String>,
    /// one probe's deadline in ms (default 5000, 100 to 60000)
    #[argh(option, default = "ct::TIMEOUT_MS_DEFAULT")]
    timeout: u64,
    /// probes at once (default 8, at most 64)
    #[argh(option, default = "ct::CONCURRENCY_DEFAULT")]
    concurrency: u32,
}

/// Slack on top of the longest a daemon's test can take, for the reply to travel.
const REPLY_SLACK: Duration = Duration::from_secs(10);

/// Runs the test in the daemon when one answers at the socket (`config_test`); `None` when none
/// runs. The daemon runs the same batch test the rotation runs and records the results itself.
fn through_daemon(
    paths: &Paths,
    settings: &Settings,
    configs: &[ConfigRow],
    options: &TestOptions,
    json: bool,
) -> Result<Option<Vec<TestOutcome>>, CliError> {
    use crate::ipc::client::{Client, ClientError};
    let socket = paths.checked_socket()?;
    let rounds = configs.len().div_ceil(options.concurrency.max(1) as usize) as u64;
    let longest = Duration::from_millis(
        settings.runtime.ready_timeout_ms + (rounds + 1) * options.timeout_ms,
    ) + crate::supervisor::STOP_GRACE_MS_DURATION
        + REPLY_SLACK;
    let mut client = match Client::connect(&socket, &paths.daemon_log(), longest) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let spinner = spinner(configs.len(), json);
    let request = crate::ipc::protocol::Request::ConfigTest {
        config_ids: configs.iter().map(|c| c.id).collect(),
        url: Some(options.url.clone()),
        timeout_ms: Some(options.timeout_ms),
        concurrency: Some(options.concurrency),
    };
    let response = client.call(request);
    if let Some(spinner) = spinner {
        spinner.finish_and_clear();
    }
    let payload: crate::ipc::protocol::ConfigTestPayload = super::rpc::payload(response?)?;
    Ok(Some(payload.results))
}

/// The daemon answers once at the end: a spinner instead of a bar, on a terminal only.
fn spinner(len: usize, json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stdout().is_terminal() {
        return None;
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.set_message(format!("the daemon is testing {len} config(s)"));
    spinner.enable_steady_tick(Duration::from_millis(120));
    Some(spinner)
}

/// One config's line in the result.
#[derive(Serialize)]
struct ResultEntry {
    name: String,
    #[serde(flatten)]
    outcome: TestOutcome,
}

/// What `config test` prints.
#[derive(Serialize)]
struct TestView {
    /// `daemon`: the running daemon tested them (`config_test`); `standalone`: the CLI ran the
    /// cores itself.
    ran_by: &'static str,
    url: String,
    timeout_ms: u64,
    concurrency: u32,
    passed: usize,
    failed: usize,
    results: Vec<ResultEntry>,
}

fn usage(message: &str) -> Result<i32, CliError> {
    eprintln!("{message}");
    eprintln!("Run `xrat config test --help` for usage.");
    Ok(EXIT_USAGE)
}

/// Runs `config test`.
pub fn run(args: TestArgs) -> Result<i32, CliError> {
    if args.all != args.ids.is_empty() {
        return usage("name config ids or pass --all (not both)");
    }
    if let Err(message) = ct::check_limits(args.timeout, args.concurrency) {
        return usage(&message);
    }
    if args.ids.len() > ct::CONFIGS_MAX {
        return usage(&format!(
            "{} ids given; test at most {} at once",
            args.ids.len(),
            ct::CONFIGS_MAX
        ));
    }
    let paths = Paths::from_env()?;
    paths.create_dirs()?;
    let settings = Settings::load(&paths.settings_file())?;
    let url = args
        .url
        .clone()
        .unwrap_or(settings.health.probe_url.clone());
    crate::probe::ProbeTarget::parse(&url).map_err(|e| CliError::Daemon(format!("--url: {e}")))?;
    let mut store = Store::open(&paths.database())?;
    let configs = select(&store, &args)?;
    let options = TestOptions {
        url,
        timeout_ms: args.timeout,
        concurrency: args.concurrency,
    };
    let (ran_by, outcomes) = match through_daemon(&paths, &settings, &configs, &options, args.json)?
    {
        // The daemon recorded them.
        Some(outcomes) => ("daemon", outcomes),
        None => {
            let outcomes = run_standalone(&paths, &settings, &configs, &options, args.json)?;
            let records: Vec<_> = outcomes.iter().map(|o| o.record("cli")).collect();
            store.record_tests(&records)?;
            ("standalone", outcomes)
        }
    };
    let view = TestView {
        ran_by,
        url: options.url,
        timeout_ms: options.timeout_ms,
        concurrency: options.concurrency,
        passed: outcomes.iter().filter(|o| o.ok).count(),
        failed: outcomes.iter().filter(|o| !o.ok).count(),
        results: configs
            .iter()
            .zip(outcomes)
            .map(|(c, outcome)| ResultEntry {
                name: c.name.clone(),
                outcome,
            })
            .collect(),
    };
    print_view(&view, args.json);
    Ok(EXIT_OK)
}

/// The configs named (in the order given), or every enabled one.
fn select(store: &Store, args: &TestArgs) -> Result<Vec<ConfigRow>, CliError> {
    if args.all {
        let configs = store.enabled_configs()?;
        if configs.is_empty() {
            return Err(CliError::Daemon(
                "no enabled config to test; import one with `xrat config import <LINK>`".into(),
            ));
        }
        return Ok(configs.into_iter().take(ct::CONFIGS_MAX).collect());
    }
    let mut configs = Vec::with_capacity(args.ids.len());
    for id in &args.ids {
        let config = store.config(*id)?.ok_or_else(|| {
            CliError::Daemon(format!(
                "config {id} not found; list them with `xrat config list`"
            ))
        })?;
        if !configs.iter().any(|c: &ConfigRow| c.id == *id) {
            configs.push(config);
        }
    }
    Ok(configs)
}

/// The core for each config, as the daemon would choose it.
pub(super) fn choose<'a>(
    settings: &Settings,
    installed: &'a [CoreBinary],
    config: &ConfigRow,
) -> Result<&'a CoreBinary, String> {
    let r = &settings.runtime;
    let explicit = !r.core_path.is_empty() || r.core != CoreChoice::Auto;
    match installed {
        [only] if explicit => check_support(only, &config.outbound).map(|()| only),
        _ => choose_core(installed, &r.core_preference, &config.outbound),
    }
    .map_err(|e| e.to_string())
}

fn run_standalone(
    paths: &Paths,
    settings: &Settings,
    configs: &[ConfigRow],
    options: &TestOptions,
    json: bool,
) -> Result<Vec<TestOutcome>, CliError> {
    let installed = detect_all(&settings.runtime, &paths.settings_file())
        .map_err(|e| CliError::Daemon(e.to_string()))?;
    let members: Vec<Member<'_>> = configs
        .iter()
        .map(|c| Member {
            config_id: c.id,
            outbound: &c.outbound,
            core: choose(settings, &installed, c),
        })
        .collect();
    let dir = paths.runtime_dir();
    let setup = Setup {
        dir: &dir,
        listen: settings
            .runtime
            .listen
            .parse()
            .expect("validated in settings"),
        ready_timeout: Duration::from_millis(settings.runtime.ready_timeout_ms),
    };
    let bar = progress_bar(configs.len(), json);
    let mut tick = |outcome: &TestOutcome| {
        if let Some(bar) = &bar {
            let verdict = match outcome.latency_ms {
                Some(ms) => format!("#{} {ms} ms", outcome.config_id),
                None => format!("#{} failed", outcome.config_id),
            };
            bar.set_message(verdict);
            bar.inc(1);
        }
    };
    let outcomes = standalone::run(&setup, &members, options, &mut tick)
        .map_err(|e| CliError::Daemon(e.to_string()))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok(outcomes)
}

/// A bar on stderr when stdout is a terminal and the output is text; none otherwise.
fn progress_bar(len: usize, json: bool) -> Option<indicatif::ProgressBar> {
    if json || !std::io::stdout().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(len as u64);
    let style = indicatif::ProgressStyle::with_template("testing {bar:30} {pos}/{len} {msg}")
        .expect("a valid template");
    bar.set_style(style);
    Some(bar)
}

fn print_view(view: &TestView, json: bool) {
    if json {
        print_json(view);
        return;
    }
    let rows: Vec<Vec<String>> = view
        .results
        .iter()
        .map(|r| {
            let o = &r.outcome;
            let (result, latency) = match o.latency_ms {
                Some(ms) => ("ok".to_string(), format!("{ms} ms")),
                None => (
                    o.error_kind.map_or("failed", |k| k.name()).to_string(),
                    "-".to_string(),
                ),
            };
            let detail = o.error.as_deref().unwrap_or("");
            vec![
                o.config_id.to_string(),
                result,
                latency,
                super::config::printable(&r.name),
                super::config::printable(detail),
            ]
        })
        .collect();
    let table = super::config::table(&["ID", "RESULT", "LATENCY", "NAME", "ERROR"], &rows);
    // A passing row's empty ERROR cell would leave the padded NAME trailing spaces.
    for line in table.lines() {
        println!("{}", line.trim_end());
    }
    println!(
        "{} passed, {} failed (probe {}).",
        view.passed, view.failed, view.url
    );
}
