//! xrat: a daemon and CLI that keeps one proxy session alive and lets scripts steer it fast.
//!
//! See `docs/ARCHITECTURE.md` for how the parts fit and `docs/PROTOCOL.md` for the IPC protocol.

pub mod api;
pub mod cli;
pub mod core;
pub mod ctest;
pub mod install;
pub mod ipc;
pub mod links;
pub mod loader;
pub mod paths;
pub mod probe;
pub mod reactor;
pub mod settings;
pub mod store;
pub mod subs;
pub mod supervisor;
pub mod utc;
