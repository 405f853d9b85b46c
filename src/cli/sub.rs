//! `xrat sub add|list|update|remove`: subscriptions, refreshed on an interval by the daemon
//! (which runs `xrat sub update --due`). These work on the database directly, like `config`.

use argh::{ArgsInfo, FromArgs};
use serde::Serialize;

use super::config::{printable, table, utc_time};
use super::output::{human_duration, print_json};
use super::sub_fetch::{fetch_body, Body, Source};
use super::{CliError, EXIT_ERROR, EXIT_OK};
use crate::paths::Paths;
use crate::settings::{Settings, DURATION_SECS_MAX};
use crate::store::{NewSubscription, Store, StoreError, SubscriptionRow, UpdateCounts};

/// Longest subscription name.
pub const NAME_CHARS_MAX: usize = 64;
/// Names tried when the default (the URL's host) is taken: host, host-2, … host-N.
const NAME_TRIES_MAX: usize = 100;

/// Manage subscriptions (provider URLs whose configs are kept up to date).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "sub")]
pub struct SubCommand {
    #[argh(subcommand)]
    action: Action,
}

#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
enum Action {
    Add(AddArgs),
    List(ListArgs),
    Update(UpdateArgs),
    Remove(RemoveArgs),
}

/// Add a subscription and import its configs (fetched now; nothing is stored if that fails).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "add")]
struct AddArgs {
    /// the subscription URL (http:// or https://)
    #[argh(positional, arg_name = "URL")]
    url: String,
    /// a name for it (default: the URL's host)
    #[argh(option)]
    name: Option<String>,
    /// refresh period in seconds (default: subscriptions.interval_secs)
    #[argh(option)]
    interval: Option<u64>,
    /// fetch through the running session's SOCKS port (now and on every refresh)
    #[argh(switch)]
    via_proxy: bool,
    /// a PEM file of the CA that signed the server's certificate (default: $XRAT_CA_FILE)
    #[argh(option)]
    ca: Option<String>,
    /// the User-Agent to send (some providers answer per client, e.g. clash)
    #[argh(option)]
    user_agent: Option<String>,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// List subscriptions with their last update, traffic and expiry.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "list")]
struct ListArgs {
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Fetch subscriptions again and apply the changes (all of them when no NAME is given).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "update")]
struct UpdateArgs {
    /// the subscription to update
    #[argh(positional, arg_name = "NAME")]
    name: Option<String>,
    /// update every subscription (the default)
    #[argh(switch)]
    all: bool,
    /// update only those whose interval has passed (what the daemon runs)
    #[argh(switch)]
    due: bool,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Remove a subscription and its configs (those in use are kept, disabled).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "remove")]
struct RemoveArgs {
    /// the subscription's name, as listed by `xrat sub list`
    #[argh(positional, arg_name = "NAME")]
    name: String,
    /// keep its configs as plain configs
    #[argh(switch)]
    keep_configs: bool,
    /// print the result as JSON
    #[argh(switch)]
    json: bool,
}

/// Runs a `sub` subcommand.
pub fn run(command: SubCommand) -> Result<i32, CliError> {
    match command.action {
        Action::Add(args) => add(args),
        Action::List(args) => list(args.json),
        Action::Update(args) => update(args),
        Action::Remove(args) => remove(args),
    }
}

fn context() -> Result<(Paths, Settings, Store), CliError> {
    let paths = Paths::from_env()?;
    paths.create_dirs()?;
    let settings = Settings::load(&paths.settings_file())?;
    let store = Store::open(&paths.database())?;
    Ok((paths, settings, store))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The result of fetching one subscription.
#[derive(Serialize)]
struct UpdateView {
    name: String,
    ok: bool,
    format: Option<&'static str>,
    #[serde(flatten)]
    counts: UpdateCounts,
    /// Entries the formats could not read (`label: reason`).
    failed: Vec<String>,
    error: Option<String>,
}

impl UpdateView {
    fn done(name: &str, body: &Body, counts: UpdateCounts) -> UpdateView {
        UpdateView {
            name: name.to_owned(),
            ok: true,
            format: Some(body.format.as_str()),
            counts,
            failed: body.failed.clone(),
            error: None,
        }
    }

    fn print(&self) {
        let c = &self.counts;
        match &self.error {
            Some(e) => eprintln!("{}: error: {e}", printable(&self.name)),
            None => println!(
                "{}: {} — added {}, updated {}, unchanged {}, removed {}",
                printable(&self.name),
                self.format.unwrap_or("?"),
                c.added,
                c.updated,
                c.unchanged,
                c.removed
            ),
        }
        for line in self.failed.iter().chain(&c.skipped) {
            eprintln!("  {}", printable(line));
        }
    }
}

fn check_name(name: &str) -> Result<(), CliError> {
    let bad = name.is_empty()
        || name.chars().count() > NAME_CHARS_MAX
        || name.starts_with('-')
        || name.chars().any(|c| c.is_control() || c.is_whitespace());
    if bad {
        return Err(CliError::Daemon(format!(
            "invalid subscription name {name:?}: use 1 to {NAME_CHARS_MAX} characters without spaces, not starting with '-'"
        )));
    }
    Ok(())
}

/// The URL's host, or host-2, host-3 … when taken.
fn default_name(store: &Store, url: &str) -> Result<String, CliError> {
    let host = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "sub".into());
    let taken: Vec<String> = store.subscriptions()?.into_iter().map(|s| s.name).collect();
    (1..=NAME_TRIES_MAX)
        .map(|n| {
            if n == 1 {
                host.clone()
            } else {
                format!("{host}-{n}")
            }
        })
        .find(|name| !taken.contains(name))
        .ok_or_else(|| {
            CliError::Daemon(format!(
                "pick a name with --name: {host} and its numbered variants are taken"
            ))
        })
}

fn add(args: AddArgs) -> Result<i32, CliError> {
    let (paths, settings, mut store) = context()?;
    let interval = args
        .interval
        .unwrap_or(settings.subscriptions.interval_secs);
    if interval == 0 || interval > DURATION_SECS_MAX {
        return Err(CliError::Daemon(format!(
            "--interval {interval}: must be between 1 and {DURATION_SECS_MAX} seconds (366 days)"
        )));
    }
    let name = match args.name {
        Some(name) => name,
        None => default_name(&store, &args.url)?,
    };
    check_name(&name)?;
    if store.subscription(&name).is_ok() {
        return Err(StoreError::SubscriptionExists {
            path: store.path().to_path_buf(),
            name,
        }
        .into());
    }
    // Stored absolute, and taken from XRAT_CA_FILE when given there: the daemon's refreshes
    // run in another directory and environment.
    let ca = args
        .ca
        .clone()
        .or_else(|| {
            std::env::var(super::sub_fetch::CA_FILE_ENV)
                .ok()
                .filter(|v| !v.is_empty())
        })
        .map(|ca| std::fs::canonicalize(&ca).map_or(ca, |p| p.display().to_string()));
    let source = Source {
        url: &args.url,
        via_proxy: args.via_proxy,
        ca_file: ca.as_deref(),
        user_agent: args.user_agent.as_deref(),
    };
    let body = fetch_body(&paths, &settings, &source)?;
    let new = NewSubscription {
        name: name.clone(),
        url: args.url.clone(),
        interval_secs: interval,
        via_proxy: args.via_proxy,
        ca_file: ca,
        user_agent: args.user_agent.clone(),
    };
    let counts = store.add_subscription(&new, &body.links, body.userinfo, now())?;
    let view = UpdateView::done(&name, &body, counts);
    if args.json {
        print_json(&view);
    } else {
        view.print();
        println!(
            "Added subscription {}; it refreshes every {}.",
            printable(&name),
            human_duration(interval)
        );
    }
    Ok(EXIT_OK)
}

/// A subscription in `sub list`.
#[derive(Serialize)]
struct ListView {
    subscriptions: Vec<SubscriptionRow>,
}

fn list(json: bool) -> Result<i32, CliError> {
    let (_, _, store) = context()?;
    let view = ListView {
        subscriptions: store.subscriptions()?,
    };
    if json {
        print_json(&view);
        return Ok(EXIT_OK);
    }
    if view.subscriptions.is_empty() {
        println!("No subscriptions. Add one with `xrat sub add URL`.");
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = view.subscriptions.iter().map(list_row).collect();
    let headers = [
        "NAME", "CONFIGS", "EVERY", "UPDATED", "STATUS", "TRAFFIC", "EXPIRES", "URL",
    ];
    print!("{}", table(&headers, &rows));
    for s in view.subscriptions.iter().filter(|s| s.last_error.is_some()) {
        let error = s.last_error.as_deref().unwrap_or_default();
        println!("{}: last error: {}", printable(&s.name), printable(error));
    }
    Ok(EXIT_OK)
}

fn list_row(s: &SubscriptionRow) -> Vec<String> {
    let u = &s.userinfo;
    let used = u.upload.unwrap_or(0) + u.download.unwrap_or(0);
    let traffic = match (u.upload.or(u.download), u.total) {
        (None, None) => "-".into(),
        (_, Some(total)) => format!("{} / {}", bytes(used), bytes(total)),
        (_, None) => bytes(used),
    };
    vec![
        printable(&s.name),
        format!("{}/{}", s.enabled, s.configs),
        human_duration(s.interval_secs),
        s.last_success_at.map_or("never".into(), utc_time),
        s.last_status.clone().unwrap_or_else(|| "-".into()),
        traffic,
        u.expire
            .map_or("-".into(), |e| utc_time(e)[..10].to_owned()),
        printable(&s.url),
    ]
}

/// Bytes in binary units, one decimal.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[derive(Serialize)]
struct UpdatesView {
    results: Vec<UpdateView>,
}

fn update(args: UpdateArgs) -> Result<i32, CliError> {
    let (paths, settings, mut store) = context()?;
    if args.name.is_some() && (args.all || args.due) || (args.all && args.due) {
        return Err(CliError::Daemon("give one of NAME, --all or --due".into()));
    }
    let started = now();
    let targets: Vec<SubscriptionRow> = match &args.name {
        Some(name) => vec![store.subscription(name)?],
        None => store
            .subscriptions()?
            .into_iter()
            .filter(|s| !args.due || s.is_due(started))
            .collect(),
    };
    let mut results = Vec::with_capacity(targets.len());
    for sub in &targets {
        let view = update_one(&paths, &settings, &mut store, sub)?;
        if !args.json {
            view.print();
        }
        results.push(view);
    }
    let failed = results.iter().any(|r| !r.ok);
    if args.json {
        print_json(&UpdatesView { results });
    } else if targets.is_empty() && !args.due {
        // `--due` (the daemon's timer) stays quiet, or the log would fill with this line.
        println!("No subscription is stored. Add one with `xrat sub add URL`.");
    }
    Ok(if failed { EXIT_ERROR } else { EXIT_OK })
}

/// Fetches one subscription and applies it; a fetch or format failure is recorded on the
/// subscription (its configs stay as they are) and reported in the view.
fn update_one(
    paths: &Paths,
    settings: &Settings,
    store: &mut Store,
    sub: &SubscriptionRow,
) -> Result<UpdateView, CliError> {
    let source = Source {
        url: &sub.url,
        via_proxy: sub.via_proxy,
        ca_file: sub.ca_file.as_deref(),
        user_agent: sub.user_agent.as_deref(),
    };
    match fetch_body(paths, settings, &source) {
        Ok(body) => {
            let counts = store.update_subscription(sub.id, &body.links, body.userinfo, now())?;
            Ok(UpdateView::done(&sub.name, &body, counts))
        }
        Err(e @ (CliError::Store(_) | CliError::Paths(_) | CliError::Settings(_))) => Err(e),
        Err(e) => {
            let message = e.to_string();
            store.subscription_failed(sub.id, &message, now())?;
            Ok(UpdateView {
                name: sub.name.clone(),
                ok: false,
                format: None,
                counts: UpdateCounts::default(),
                failed: Vec::new(),
                error: Some(message),
            })
        }
    }
}

#[derive(Serialize)]
struct RemoveView {
    name: String,
    removed: bool,
    deleted_configs: u64,
    kept_configs: u64,
}

fn remove(args: RemoveArgs) -> Result<i32, CliError> {
    let (_, _, mut store) = context()?;
    let done = store.remove_subscription(&args.name, args.keep_configs)?;
    let view = RemoveView {
        name: args.name,
        removed: true,
        deleted_configs: done.deleted,
        kept_configs: done.kept,
    };
    if args.json {
        print_json(&view);
    } else {
        println!(
            "Removed subscription {}: {} configs deleted, {} kept.",
            printable(&view.name),
            view.deleted_configs,
            view.kept_configs
        );
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_bytes() {
        assert!(check_name("provider-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("-x").is_err());
        assert!(check_name("a b").is_err());
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(1 << 30), "1.0 GiB");
    }
}
