//! The executor's short synchronous work: reading stored configs, checking them against the core,
//! rendering core configs, writing private files, and the few helpers shared with the ring code.

use std::net::{IpAddr, SocketAddr};

use crate::core::{self, CoreBinary, Inbounds};
use crate::ipc::protocol::Code;
use crate::links::Outbound;
use crate::paths::Paths;
use crate::settings::Settings;
use crate::store::Store;
use crate::supervisor::{ConfigCheck, Rejection, Selection, TestHistory};

/// A config checked and rendered for a session core; nothing has been touched yet.
#[derive(Clone)]
pub struct Prepared {
    /// The core chosen for it.
    pub core: CoreBinary,
    pub outbound: Outbound,
    pub rendered: String,
}

/// Configs a selection named, each with its outbound or why it cannot be used.
pub type Selected = Vec<(i64, Result<Outbound, Rejection>)>;

/// The settings the executor acts on, with the store.
pub struct Env {
    pub paths: Paths,
    pub settings: Settings,
    pub store: Store,
}

impl Env {
    /// `runtime.listen`.
    pub fn listen(&self) -> IpAddr {
        self.settings
            .runtime
            .listen
            .parse()
            .expect("validated in settings")
    }

    /// The user's inbounds.
    pub fn inbounds(&self) -> Inbounds {
        let r = &self.settings.runtime;
        Inbounds {
            listen: self.listen(),
            socks_port: r.socks_port,
            http_port: (r.http_port != 0).then_some(r.http_port),
        }
    }

    /// A stored, enabled config's outbound, or why not (404).
    fn outbound(&self, config_id: i64) -> Result<Outbound, Rejection> {
        let config = self
            .store
            .config(config_id)
            .map_err(|e| Rejection::new(Code::Internal, error_chain(&e)))?
            .ok_or_else(|| {
                Rejection::new(
                    Code::NotFound,
                    format!(
                        "config {config_id} not found; list stored configs with `xrat config list`"
                    ),
                )
            })?;
        if !config.enabled {
            return Err(Rejection::new(
                Code::NotFound,
                format!("config {config_id} is disabled; enable it with `xrat config enable {config_id}`"),
            ));
        }
        Ok(config.outbound)
    }

    /// The configs a selection names, before the core is known: (id, outbound or why not).
    pub fn select(&self, selection: Selection) -> Result<Selected, Rejection> {
        match selection {
            Selection::One(id) => Ok(vec![(id, self.outbound(id))]),
            Selection::Enabled => {
                let rows = self
                    .store
                    .enabled_configs()
                    .map_err(|e| Rejection::new(Code::Internal, error_chain(&e)))?;
                Ok(rows.into_iter().map(|c| (c.id, Ok(c.outbound))).collect())
            }
            Selection::All => {
                let rows = self
                    .store
                    .configs()
                    .map_err(|e| Rejection::new(Code::Internal, error_chain(&e)))?;
                Ok(rows.into_iter().map(|c| (c.id, Ok(c.outbound))).collect())
            }
            Selection::WithEnabled(id) => {
                let mut selected = self.select(Selection::One(id))?;
                let others = self.select(Selection::Enabled)?;
                selected.extend(others.into_iter().filter(|(other, _)| *other != id));
                Ok(selected)
            }
        }
    }

    /// Checks each selected config against `core`, keeping the renders of those that pass.
    pub fn checks(
        &self,
        selected: Selected,
        installed: &Result<Vec<CoreBinary>, Rejection>,
    ) -> (Vec<ConfigCheck>, Vec<(i64, Prepared)>) {
        let mut renders = Vec::new();
        // The quarantine policy's input. Unreadable results leave every config untested, which
        // only loosens the policy; the read is logged.
        let summaries = self.store.test_summaries().unwrap_or_else(|e| {
            eprintln!("xrat: cannot read config test results: {}", error_chain(&e));
            Default::default()
        });
        let checks = selected
            .into_iter()
            .map(|(config_id, outbound)| {
                let prepared = outbound.and_then(|outbound| {
                    let installed = installed.as_ref().map_err(Clone::clone)?;
                    self.render(installed, outbound)
                });
                let result = prepared.map(|p| renders.push((config_id, p)));
                let history = summaries
                    .get(&config_id)
                    .map_or_else(TestHistory::default, |s| TestHistory {
                        last_at: Some(s.last_at),
                        last_ok: s.last_ok,
                        failure_streak: s.failure_streak,
                    });
                ConfigCheck {
                    config_id,
                    result,
                    history,
                }
            })
            .collect();
        (checks, renders)
    }

    /// Checks the config against the core and renders its session config.
    pub fn prepare(&self, installed: &[CoreBinary], config_id: i64) -> Result<Prepared, Rejection> {
        let outbound = self.outbound(config_id)?;
        self.render(installed, outbound)
    }

    /// The core that runs `outbound`: the one binary settings name, or with `auto` the first
    /// installed core in `runtime.core_preference` that supports every feature it uses.
    fn choose<'a>(
        &self,
        installed: &'a [CoreBinary],
        outbound: &Outbound,
    ) -> Result<&'a CoreBinary, Rejection> {
        let r = &self.settings.runtime;
        let conflict = |e: core::CoreError| Rejection::new(Code::Conflict, error_chain(&e));
        match installed {
            [only] if !r.core_path.is_empty() || r.core != crate::settings::CoreChoice::Auto => {
                core::check_support(only, outbound).map_err(conflict)?;
                Ok(only)
            }
            _ => core::choose_core(installed, &r.core_preference, outbound).map_err(conflict),
        }
    }

    fn render(&self, installed: &[CoreBinary], outbound: Outbound) -> Result<Prepared, Rejection> {
        let core = self.choose(installed, &outbound)?;
        let rendered = core::render_session(core, &self.inbounds(), &outbound)
            .map_err(|e| Rejection::new(Code::Internal, error_chain(&e)))?;
        Ok(Prepared {
            core: core.clone(),
            outbound,
            rendered,
        })
    }

    /// Refuses to start when another process holds an inbound port: the readiness probe would
    /// otherwise be answered by that process and a dead core would look ready.
    pub fn ports_free(&self) -> Result<(), Rejection> {
        let inbounds = self.inbounds();
        let ports = [
            ("runtime.socks_port", Some(inbounds.socks_port)),
            ("runtime.http_port", inbounds.http_port),
        ];
        for (key, port) in ports {
            let Some(port) = port else { continue };
            let addr = SocketAddr::new(inbounds.listen, port);
            if let Err(e) = std::net::TcpListener::bind(addr) {
                return Err(Rejection::new(
                    Code::Timeout,
                    format!("the core cannot become ready: {addr} ({key}) is already in use ({e}); stop the process holding it or choose another port in {}", self.paths.settings_file().display()),
                ));
            }
        }
        Ok(())
    }
}

/// Free loopback ports for the batch inbounds (bound, then released for the core to take).
pub fn free_ports(listen: IpAddr, count: usize) -> std::io::Result<Vec<u16>> {
    let held: Vec<std::net::TcpListener> = (0..count)
        .map(|_| std::net::TcpListener::bind((listen, 0)))
        .collect::<Result<_, _>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// Writes a file readable only by its owner (core configs carry credentials).
pub fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())
}

/// "outer: inner: innermost", for messages that travel over the socket.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A socket address in the form connect(2) takes.
pub fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is valid; we write a sockaddr_in/in6 into its prefix.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(v4) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: v4.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(v4.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: v6.port().to_be(),
                sin6_flowinfo: v6.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                },
                sin6_scope_id: v6.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}
