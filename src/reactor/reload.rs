//! Signals, the daemon convention (issue 10): SIGHUP (and `daemon_reload`) re-reads config.toml
//! and reopens the log, SIGUSR1 logs a one-line state summary, SIGTERM/SIGINT shut down, and every
//! other signal that would kill the process is blocked and logged.

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;

use crate::ipc::RawId;
use crate::settings::Settings;
use crate::supervisor::{ConnId, Input, Reloaded};

use super::prepare::error_chain;
use super::Reactor;

/// Keys read once at start; a change is named in the log as needing a restart.
/// (The other `[subscriptions]` keys are read by each `xrat sub update` run, so they apply live.)
const RESTART_KEYS: [&str; 11] = [
    "daemon.max_connections",
    "daemon.socket_group",
    "daemon.backend",
    "runtime.rotation.enabled",
    "runtime.mode",
    "daemon.relay_connections_max",
    "relay.replay_bytes_max",
    "relay.splice",
    "subscriptions.check_interval_secs",
    "subscriptions.refresh_timeout_secs",
    "runtime.rotation.refresh_subscriptions",
];
/// Keys the front bound at start (front mode only; in direct mode they apply at the next connect).
const FRONT_RESTART_KEYS: [&str; 3] = ["runtime.listen", "runtime.socks_port", "runtime.http_port"];

/// Signals the daemon takes through its signalfd (blocked for the process, so none kills it).
pub const HANDLED_SIGNALS: [libc::c_int; 15] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGQUIT,
    libc::SIGALRM,
    libc::SIGPIPE,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGXCPU,
    libc::SIGXFSZ,
    libc::SIGSTKFLT,
];

/// Dotted key → value of every setting, to tell what a reload changed.
fn flatten(settings: &Settings) -> BTreeMap<String, String> {
    fn walk(prefix: &str, value: &serde_json::Value, out: &mut BTreeMap<String, String>) {
        match value {
            serde_json::Value::Object(map) => {
                for (key, v) in map {
                    let dotted = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&dotted, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = BTreeMap::new();
    let value = serde_json::to_value(settings).expect("settings serialize");
    walk("", &value, &mut out);
    out
}

impl Reactor {
    /// Reads config.toml again and applies what can change live; the answer goes to the
    /// supervisor in the request's place (so it keeps its order among the connection's replies).
    pub(super) fn reload_input(&mut self, from: Option<(ConnId, RawId)>) -> Input {
        let file = self.env.paths.settings_file();
        let result = match Settings::load(&file) {
            Err(e) => Err(format!(
                "{}; the running settings are kept",
                error_chain(&e)
            )),
            Ok(new) => Ok(self.apply_settings(new)),
        };
        Input::Reload { from, result }
    }

    fn apply_settings(&mut self, new: Settings) -> Reloaded {
        let front = self.env.settings.runtime.mode == crate::settings::RuntimeMode::Front;
        let (before, after) = (flatten(&self.env.settings), flatten(&new));
        let changed: Vec<String> = after
            .iter()
            .filter(|(key, value)| before.get(*key) != Some(*value))
            .map(|(key, _)| key.clone())
            .collect();
        let (restart_needed, applied): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|key| {
                RESTART_KEYS.contains(&key.as_str())
                    || (front && FRONT_RESTART_KEYS.contains(&key.as_str()))
            });
        let mut settings = new;
        let old = &self.env.settings;
        // Kept as started: the loop's backend, the connection slab, the rotation switch (proxy_start/stop), the
        // mode, and what the front bound and sized.
        settings.daemon.max_connections = old.daemon.max_connections;
        settings.daemon.backend = old.daemon.backend;
        // The socket's group and modes, and the access rule, were set at start.
        settings.daemon.socket_group = old.daemon.socket_group.clone();
        settings.runtime.rotation.enabled = old.runtime.rotation.enabled;
        settings.runtime.mode = old.runtime.mode;
        settings.daemon.relay_connections_max = old.daemon.relay_connections_max;
        settings.relay.replay_bytes_max = old.relay.replay_bytes_max;
        settings.relay.splice = old.relay.splice;
        if front {
            settings.runtime.listen = old.runtime.listen.clone();
            settings.runtime.socks_port = old.runtime.socks_port;
            settings.runtime.http_port = old.runtime.http_port;
        }
        self.admission.frame_timeout_ms = settings.daemon.frame_timeout_ms;
        self.admission.idle_timeout_ms = settings.daemon.idle_timeout_secs * 1000;
        if let Ok(target) = crate::probe::ProbeTarget::parse(&settings.health.probe_url) {
            self.probes.set_target(target);
        }
        if settings.daemon.sched_slice_us != old.daemon.sched_slice_us {
            super::setup::set_sched_slice(settings.daemon.sched_slice_us);
        }
        let config = super::supervisor_config(&settings);
        self.env.settings = settings;
        Reloaded {
            config,
            applied,
            restart_needed,
        }
    }

    /// Reopens the daemon log (logrotate moved it) when stderr is that file.
    pub(super) fn reopen_log(&mut self) {
        // SAFETY: fstat on our own stderr into a zeroed stat.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let regular =
            unsafe { libc::fstat(2, &mut st) } == 0 && (st.st_mode & libc::S_IFMT) == libc::S_IFREG;
        if !regular {
            return; // the journal, a terminal or a pipe: nothing to reopen
        }
        let path = self.env.paths.logs_dir().join("daemon.log");
        let file = crate::paths::open_log(&path);
        match file {
            Ok(file) => {
                let fd = file.as_raw_fd();
                // SAFETY: dup2 of a valid fd onto stdout and stderr.
                unsafe {
                    libc::dup2(fd, 1);
                    libc::dup2(fd, 2);
                }
            }
            Err(e) => eprintln!("xrat: cannot reopen {}: {e}", path.display()),
        }
    }

    /// One line about the daemon's state (SIGUSR1).
    pub(super) fn log_summary(&self) {
        let session = self.sup.session().map_or("none".to_string(), |s| {
            format!(
                "session {} (config {}, {} pid {}, socks {})",
                s.id, s.config_id, s.core, s.pid, s.socks_addr
            )
        });
        eprintln!(
            "xrat: state: {session}; operation in flight: {}; connections: {}; cores watched: {}; deadlines: {}; health ticks: {}",
            self.sup.is_busy(),
            self.conns.len(),
            self.procs.len(),
            self.deadlines.len(),
            self.sup.health_ticks()
        );
    }

    /// A signal arrived through the signalfd.
    pub(super) fn on_signo(&mut self, now: crate::supervisor::Now, signo: u32) {
        match signo as libc::c_int {
            libc::SIGTERM | libc::SIGINT => {
                eprintln!("xrat: received signal {signo}; shutting down");
                if self.shutdown_deadline.is_some() {
                    // A second signal while flushing: stop waiting for slow clients.
                    self.shutdown_deadline = Some(now.monotonic_ms);
                }
                self.inputs.push_back(Input::ShutdownSignal);
            }
            libc::SIGHUP => {
                self.reopen_log();
                eprintln!("xrat: SIGHUP: reopened the log; reloading config.toml");
                let input = self.reload_input(None);
                self.inputs.push_back(input);
            }
            libc::SIGUSR1 => self.log_summary(),
            other => eprintln!("xrat: ignoring signal {other} (only SIGTERM and SIGINT stop the daemon; SIGHUP reloads, SIGUSR1 logs the state)"),
        }
    }
}
