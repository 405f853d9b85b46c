//! `xrat config import|list|show|remove|enable|disable|test`: the stored proxy configs. These
//! commands work on the database directly, so they work whether or not the daemon runs.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use argh::{ArgsInfo, CommandInfo, CommandInfoWithArgs, EarlyExit, FromArgs, SubCommand};
use serde::Serialize;

use super::output::print_json;
use super::{CliError, EXIT_ERROR, EXIT_OK};
use crate::links::{parse_input, LineResult, ParsedLink, Security, Transport};
use crate::paths::Paths;
use crate::store::{ImportOutcome, Store};

mod url_import;

/// Manage stored proxy configs.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "config")]
pub struct ConfigCommand {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
enum Action {
    Import(ImportArgs),
    List(super::config_list::ListArgs),
    Test(super::config_test::TestArgs),
    Show(ShowArgs),
    Remove(RemoveArgs),
    Enable(EnableArgs),
    Disable(DisableArgs),
}

/// Import share links, a file or stdin of them, or a subscription URL (fetched once; use
/// `xrat sub add` to keep it updated).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "import")]
struct ImportOptions {
    /// a share link, an http(s) subscription URL, a file of links (one per line) or of a
    /// subscription, or - for stdin
    #[argh(positional, arg_name = "LINK|URL|FILE|-")]
    source: String,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// `import`'s arguments. argh takes every argument starting with '-' for an option, so the
/// conventional `-` (standard input) would be rejected; this moves a lone `-` behind `--`.
#[derive(Debug)]
struct ImportArgs(ImportOptions);

impl FromArgs for ImportArgs {
    fn from_args(command_name: &[&str], args: &[&str]) -> Result<Self, EarlyExit> {
        let end = args
            .iter()
            .position(|&arg| arg == "--")
            .unwrap_or(args.len());
        let (before, after) = args.split_at(end);
        if !before.contains(&"-") {
            return ImportOptions::from_args(command_name, args).map(ImportArgs);
        }
        let mut moved: Vec<&str> = before.iter().copied().filter(|&arg| arg != "-").collect();
        moved.push("--");
        moved.extend(before.iter().copied().filter(|&arg| arg == "-"));
        moved.extend(after.iter().skip(1));
        ImportOptions::from_args(command_name, &moved).map(ImportArgs)
    }
}

impl SubCommand for ImportArgs {
    const COMMAND: &'static CommandInfo = ImportOptions::COMMAND;
}

impl ArgsInfo for ImportArgs {
    fn get_args_info() -> CommandInfoWithArgs {
        ImportOptions::get_args_info()
    }
}

/// Show one stored config, including its link.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "show")]
struct ShowArgs {
    /// config id, as listed by `xrat config list`
    #[argh(positional, arg_name = "ID")]
    id: i64,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Remove a stored config (its session history is kept).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "remove")]
struct RemoveArgs {
    /// config id, as listed by `xrat config list`
    #[argh(positional, arg_name = "ID")]
    id: i64,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Let `xrat connect` and rotation use a config again.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "enable")]
struct EnableArgs {
    /// config id, as listed by `xrat config list`
    #[argh(positional, arg_name = "ID")]
    id: i64,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Keep a config stored but out of rotation and `xrat connect` (which then answers not found).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "disable")]
struct DisableArgs {
    /// config id, as listed by `xrat config list`
    #[argh(positional, arg_name = "ID")]
    id: i64,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Runs a `config` subcommand.
pub fn run(command: ConfigCommand) -> Result<i32, CliError> {
    match command.action {
        Action::Import(ImportArgs(args)) => import(&args.source, args.json),
        Action::List(args) => super::config_list::run(args),
        Action::Test(args) => super::config_test::run(args),
        Action::Show(args) => show(args.id, args.json),
        Action::Remove(args) => remove(args.id, args.json),
        Action::Enable(args) => set_enabled(args.id, true, args.json),
        Action::Disable(args) => set_enabled(args.id, false, args.json),
    }
}

pub(super) fn open_store() -> Result<Store, CliError> {
    let paths = Paths::from_env()?;
    paths.create_dirs()?;
    Ok(Store::open(&paths.database())?)
}

fn not_found(id: i64) -> CliError {
    CliError::Daemon(format!(
        "config {id} not found; list them with `xrat config list`"
    ))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[derive(Serialize)]
struct IdName {
    id: i64,
    name: String,
}

#[derive(Serialize)]
struct FailedLine {
    line: usize,
    error: String,
}

/// An imported config that no installed core can run: stored, and marked with the reason
/// (`config list` shows it).
#[derive(Serialize)]
struct Marked {
    id: i64,
    name: String,
    reason: String,
}

#[derive(Default, Serialize)]
struct ImportView {
    imported: Vec<IdName>,
    duplicates: Vec<IdName>,
    failed: Vec<FailedLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    marked: Vec<Marked>,
}

/// The import text and a description of where it came from, for messages.
fn read_source(source: &str) -> Result<(String, String), CliError> {
    if source.contains("://") {
        return Ok((source.to_owned(), "the argument".to_owned()));
    }
    if source == "-" {
        let text = std::io::read_to_string(std::io::stdin())
            .map_err(|e| CliError::Daemon(format!("cannot read standard input: {e}")))?;
        return Ok((text, "standard input".to_owned()));
    }
    let text = std::fs::read_to_string(source).map_err(|e| {
        CliError::Daemon(format!(
            "cannot read file {source}: {e}; pass a share link (scheme://...), a file of links, or - for standard input"
        ))
    })?;
    Ok((text, format!("file {source}")))
}

fn import(source: &str, json: bool) -> Result<i32, CliError> {
    if url_import::is_fetch_url(source) {
        return url_import::import_url(source, json);
    }
    let (text, origin) = read_source(source)?;
    let lines = parse_input(&text);
    if lines.is_empty() {
        return Err(CliError::Daemon(format!(
            "no share links found in {origin}; expected links such as vless://..., one per line, or a base64 subscription"
        )));
    }
    let good: Vec<ParsedLink> = lines
        .iter()
        .filter_map(|line| line.result.as_ref().ok().cloned())
        .collect();
    let mut store = open_store()?;
    let outcomes = store.import(&good, now())?;
    let mut view = import_view(&lines, outcomes, json);
    view.marked = mark_unrunnable(&store, &view.imported)?;
    if !json {
        for m in &view.marked {
            let (id, name) = (m.id, printable(&m.name));
            println!("Marked    #{id}  {name}: {}", printable(&m.reason));
        }
    }
    if json {
        print_json(&view);
    } else {
        println!(
            "Imported {}, duplicates {}, failed {}.",
            view.imported.len(),
            view.duplicates.len(),
            view.failed.len()
        );
    }
    Ok(if view.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

/// Checks the imported configs against the installed cores (issue 12 part 3): one that no
/// installed core can run is kept, and its reason stored in `config_issues`. With no core
/// installed at all nothing is marked (there is nothing to check against yet).
fn mark_unrunnable(store: &Store, imported: &[IdName]) -> Result<Vec<Marked>, CliError> {
    if imported.is_empty() {
        return Ok(Vec::new());
    }
    let paths = Paths::from_env()?;
    let settings = crate::settings::Settings::load(&paths.settings_file())?;
    let Ok(installed) = crate::core::detect_all(&settings.runtime, &paths.settings_file()) else {
        return Ok(Vec::new());
    };
    let mut marked = Vec::new();
    for entry in imported {
        let Some(config) = store.config(entry.id)? else {
            continue;
        };
        if let Err(reason) = super::config_test::choose(&settings, &installed, &config) {
            store.set_config_issue(entry.id, Some(&reason), now())?;
            marked.push(Marked {
                id: entry.id,
                name: entry.name.clone(),
                reason,
            });
        }
    }
    Ok(marked)
}

/// Pairs the store's outcomes (one per good line, in order) back with the input lines; in text
/// mode prints each line's result as it goes, failures on stderr.
fn import_view(lines: &[LineResult], outcomes: Vec<ImportOutcome>, json: bool) -> ImportView {
    let mut view = ImportView::default();
    let mut outcomes = outcomes.into_iter();
    for line in lines {
        if let Err(e) = &line.result {
            if !json {
                eprintln!("line {}: {e}", line.line);
            }
            let (line, error) = (line.line, e.to_string());
            view.failed.push(FailedLine { line, error });
            continue;
        }
        match outcomes.next().expect("the store answers once per link") {
            ImportOutcome::Imported { id, name } => {
                if !json {
                    println!("Imported  #{id}  {}", printable(&name));
                }
                view.imported.push(IdName { id, name });
            }
            ImportOutcome::Duplicate { existing_id, name } => {
                if !json {
                    let shown = printable(&name);
                    println!("Duplicate #{existing_id}  {shown} (already stored)");
                }
                let id = existing_id;
                view.duplicates.push(IdName { id, name });
            }
        }
    }
    view
}

fn show(id: i64, json: bool) -> Result<i32, CliError> {
    let config = open_store()?.config(id)?.ok_or_else(|| not_found(id))?;
    if json {
        print_json(&config);
        return Ok(EXIT_OK);
    }
    let pairs = [
        ("id", config.id.to_string()),
        ("name", printable(&config.name)),
        ("enabled", yes_no(config.enabled).to_owned()),
        ("scheme", config.scheme.clone()),
        ("server", config.server.clone()),
        ("port", config.port.to_string()),
        ("transport", describe_transport(&config.outbound.transport)),
        ("security", describe_security(&config.outbound.security)),
        ("created", utc_time(config.created_at)),
        ("link", printable(&config.raw_link)),
    ];
    let width = pairs
        .iter()
        .map(|(key, _)| key.len() + 1)
        .max()
        .unwrap_or(0);
    for (key, value) in pairs {
        println!("{:width$} {value}", format!("{key}:"));
    }
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct RemoveView {
    id: i64,
    name: String,
    removed: bool,
}

fn remove(id: i64, json: bool) -> Result<i32, CliError> {
    let store = open_store()?;
    let config = store.config(id)?.ok_or_else(|| not_found(id))?;
    if !store.remove_config(id)? {
        return Err(not_found(id));
    }
    if json {
        print_json(&RemoveView {
            id,
            name: config.name,
            removed: true,
        });
    } else {
        println!("Removed config #{id} ({}).", printable(&config.name));
    }
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct EnableView {
    id: i64,
    name: String,
    enabled: bool,
    changed: bool,
}

fn set_enabled(id: i64, enabled: bool, json: bool) -> Result<i32, CliError> {
    let store = open_store()?;
    let config = store.config(id)?.ok_or_else(|| not_found(id))?;
    if !store.set_enabled(id, enabled)? {
        return Err(not_found(id));
    }
    let changed = config.enabled != enabled;
    let name = printable(&config.name);
    if json {
        print_json(&EnableView {
            id,
            name: config.name,
            enabled,
            changed,
        });
    } else if changed {
        let verb = if enabled { "Enabled" } else { "Disabled" };
        println!("{verb} config #{id} ({name}).");
    } else {
        let state = if enabled { "enabled" } else { "disabled" };
        println!("Config #{id} ({name}) is already {state}.");
    }
    Ok(EXIT_OK)
}

pub(super) fn yes_no(value: bool) -> &'static str {
    if value {
        "yes"
    } else {
        "no"
    }
}

/// `host:port`, with IPv6 addresses bracketed.
pub(super) fn host_port(server: &str, port: u16) -> String {
    if server.contains(':') {
        format!("[{server}]:{port}")
    } else {
        format!("{server}:{port}")
    }
}

/// Escapes control characters: names come from link fragments, where `%0A` or an escape
/// sequence would otherwise break the table or the terminal.
pub(super) fn printable(text: &str) -> String {
    text.chars().fold(String::new(), |mut out, c| {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        out
    })
}

/// Left-aligned columns two spaces apart; the last column is not padded.
pub(super) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let last = row.len().saturating_sub(1);
        for (index, cell) in row.iter().enumerate() {
            if index == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[index]);
            }
        }
        out.push('\n');
    }
    out
}

fn describe_transport(transport: &Transport) -> String {
    let with_host = |kind: &str, path: &str, host: Option<&str>| match host {
        Some(host) => format!("{kind} (path {path}, host {host})"),
        None => format!("{kind} (path {path})"),
    };
    match transport {
        Transport::Tcp => "tcp".to_owned(),
        Transport::Ws { path, host } => with_host("ws", path, host.as_deref()),
        Transport::HttpUpgrade { path, host } => with_host("httpupgrade", path, host.as_deref()),
        Transport::Xhttp {
            path, host, mode, ..
        } => {
            let kind = format!("xhttp {}", mode.as_deref().unwrap_or("auto"));
            with_host(&kind, path, host.as_deref())
        }
        Transport::ShadowTls { version, host, .. } => {
            format!("shadow-tls v{version} (host {host})")
        }
        Transport::Obfs { mode, host } => match host {
            Some(host) => format!("obfs {} (host {host})", mode.as_str()),
            None => format!("obfs {}", mode.as_str()),
        },
        Transport::H2 { path, host } if host.is_empty() => with_host("h2", path, None),
        Transport::H2 { path, host } => with_host("h2", path, Some(&host.join(", "))),
        Transport::Grpc {
            service_name,
            multi_mode,
        } => {
            let mode = if *multi_mode { ", multi" } else { "" };
            format!("grpc (service {service_name}{mode})")
        }
    }
}

fn describe_security(security: &Security) -> String {
    let mut parts = Vec::new();
    let kind = match security {
        Security::None => return "none".to_owned(),
        Security::Tls(tls) => {
            parts.extend(tls.sni.as_ref().map(|sni| format!("sni {sni}")));
            if !tls.alpn.is_empty() {
                parts.push(format!("alpn {}", tls.alpn.join(",")));
            }
            parts.extend(
                tls.fingerprint
                    .as_ref()
                    .map(|fp| format!("fingerprint {fp}")),
            );
            if tls.allow_insecure {
                parts.push("certificate not verified".to_owned());
            }
            if tls.ech.is_some() {
                parts.push("encrypted client hello".to_owned());
            }
            "tls"
        }
        Security::Reality(reality) => {
            parts.extend(reality.sni.as_ref().map(|sni| format!("sni {sni}")));
            parts.extend(
                reality
                    .fingerprint
                    .as_ref()
                    .map(|fp| format!("fingerprint {fp}")),
            );
            if !reality.short_id.is_empty() {
                parts.push(format!("short id {}", reality.short_id));
            }
            "reality"
        }
    };
    if parts.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind} ({})", printable(&parts.join(", ")))
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
pub(super) fn utc_time(secs: u64) -> String {
    let (date, (h, m, s)) = crate::utc::fields(secs);
    format!("{date} {h:02}:{m:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_time_matches_known_dates() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn table_aligns_all_but_the_last_column() {
        let rows = vec![vec!["10".to_owned(), "x".to_owned(), "last".to_owned()]];
        assert_eq!(
            table(&["ID", "COL", "NAME"], &rows),
            "ID  COL  NAME\n10  x    last\n"
        );
        assert_eq!(printable("a\nb\u{1b}"), "a\\nb\\u{1b}");
        assert_eq!(host_port("2001:db8::1", 443), "[2001:db8::1]:443");
    }
}
