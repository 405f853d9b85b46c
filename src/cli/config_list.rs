//! `xrat config list [--sort id|latency] [--enabled] [--alive] [--sub NAME]`: the stored configs with the
//! core that would run each, the last test result (`config_tests`) and any import-time refusal
//! (`config_issues`).

use std::collections::HashMap;
use std::str::FromStr;

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::config::{host_port, open_store, printable, table, yes_no};
use super::output::print_json;
use super::{CliError, EXIT_OK};
use crate::paths::Paths;
use crate::store::TestSummary;

/// How `config list` orders its rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// By id (the default).
    #[default]
    Id,
    /// Passing configs by their last latency, then failed, then untested; ties by id.
    Latency,
}

impl FromStr for SortKey {
    type Err = String;
    fn from_str(value: &str) -> Result<SortKey, String> {
        match value {
            "id" => Ok(SortKey::Id),
            "latency" => Ok(SortKey::Latency),
            other => Err(format!("unknown sort key {other:?}; use id or latency")),
        }
    }
}

/// List stored configs, with the last test result of each.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "list")]
pub struct ListArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
    /// order: id (default) or latency (last test; failed and untested last)
    #[argh(option, default = "SortKey::Id")]
    sort: SortKey,
    /// only enabled configs
    #[argh(switch)]
    enabled: bool,
    /// only configs whose last test passed
    #[argh(switch)]
    alive: bool,
    /// only the configs of this subscription
    #[argh(option)]
    sub: Option<String>,
}

/// A config in `list --json`: the link and credentials stay out, `show` has them.
#[derive(Serialize)]
struct ListEntry {
    id: i64,
    name: String,
    enabled: bool,
    scheme: String,
    server: String,
    port: u16,
    created_at: u64,
    /// The core that would run it (`runtime.core`, or with `auto` the first capable one).
    core: Option<String>,
    /// Why no installed core can run it.
    core_error: Option<String>,
    /// Why it was marked at import (no installed core could run it then), if it was.
    import_issue: Option<String>,
    /// The last test, if any.
    last_test: Option<TestSummary>,
}

#[derive(Serialize)]
struct ListView {
    configs: Vec<ListEntry>,
}

/// The rank `--sort latency` orders by.
fn latency_rank(entry: &ListEntry) -> (u8, u64, i64) {
    match &entry.last_test {
        Some(t) if t.last_ok => (0, t.last_latency_ms.unwrap_or(0), entry.id),
        Some(_) => (1, 0, entry.id),
        None => (2, 0, entry.id),
    }
}

/// Runs `config list`.
pub fn run(args: ListArgs) -> Result<i32, CliError> {
    let store = open_store()?;
    let mut configs = store.configs()?;
    if let Some(name) = &args.sub {
        let members = store.subscription_members(store.subscription(name)?.id)?;
        configs.retain(|c| members.contains(&c.id));
    }
    let mut tests: HashMap<i64, TestSummary> = store.test_summaries()?;
    let mut issues = store.config_issues()?;
    let paths = Paths::from_env()?;
    let settings = crate::settings::Settings::load(&paths.settings_file())?;
    let outbounds: Vec<&crate::links::Outbound> = configs.iter().map(|c| &c.outbound).collect();
    let cores =
        crate::core::describe_choices(&settings.runtime, &paths.settings_file(), &outbounds);
    let mut entries: Vec<ListEntry> = configs
        .into_iter()
        .zip(cores)
        .map(|(c, core)| ListEntry {
            core: core.as_ref().ok().cloned(),
            core_error: core.err(),
            import_issue: issues.remove(&c.id),
            last_test: tests.remove(&c.id),
            id: c.id,
            name: c.name,
            enabled: c.enabled,
            scheme: c.scheme,
            server: c.server,
            port: c.port,
            created_at: c.created_at,
        })
        .filter(|e| !args.enabled || e.enabled)
        .filter(|e| !args.alive || e.last_test.as_ref().is_some_and(|t| t.last_ok))
        .collect();
    if args.sort == SortKey::Latency {
        entries.sort_by_key(latency_rank);
    }
    let view = ListView { configs: entries };
    if args.json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    print_text(&view, args.enabled || args.alive || args.sub.is_some());
    Ok(EXIT_OK)
}

fn latency_cell(test: Option<&TestSummary>) -> String {
    match test {
        None => "-".into(),
        Some(t) => match t.last_latency_ms {
            Some(ms) if t.last_ok => format!("{ms} ms"),
            _ => t.last_error_kind.clone().unwrap_or_else(|| "failed".into()),
        },
    }
}

fn print_text(view: &ListView, filtered: bool) {
    if view.configs.is_empty() {
        if filtered {
            println!("No stored config matches the filter.");
        } else {
            println!("No configs stored. Import one with `xrat config import <LINK>`.");
        }
        return;
    }
    let rows: Vec<Vec<String>> = view
        .configs
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                yes_no(c.enabled).to_owned(),
                c.scheme.clone(),
                host_port(&c.server, c.port),
                // `config list --json` carries the whole reason in `core_error`.
                c.core.clone().unwrap_or_else(|| "none".into()),
                latency_cell(c.last_test.as_ref()),
                printable(&c.name),
            ]
        })
        .collect();
    print!(
        "{}",
        table(
            &["ID", "ENABLED", "SCHEME", "SERVER", "CORE", "LATENCY", "NAME"],
            &rows
        )
    );
    // A mark whose config a core now runs (one was installed since) is history, in --json only.
    for c in view
        .configs
        .iter()
        .filter(|c| c.import_issue.is_some() && c.core.is_none())
    {
        let why = c.import_issue.as_deref().unwrap_or_default();
        println!("#{}: marked at import: {}", c.id, printable(why));
    }
    if view.configs.iter().any(|c| c.core.is_none()) {
        println!("A config with CORE none cannot run on any installed core; `xrat config list --json` says why.");
    }
}
