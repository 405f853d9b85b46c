//! Why a core cannot be found, run, or given a config. Every message names what went wrong
//! and what to do about it, because it ends up in front of a person (CLI output, IPC message).

use std::path::PathBuf;

use thiserror::Error;

/// Failures of the core backends.
#[derive(Debug, Error)]
pub enum CoreError {
    /// No core binary on PATH.
    #[error(
        "no {wanted} found on PATH (looked for {looked_for}); install {hint}, or set runtime.core_path in {}",
        settings_file.display()
    )]
    NotFound {
        /// `proxy core` when any core would do, else the core's name.
        wanted: String,
        /// The binary names searched for, comma-separated.
        looked_for: String,
        /// Install advice, e.g. `` one, e.g. `apt-get install v2ray` ``.
        hint: String,
        /// The settings file, so the message can say where `core_path` goes.
        settings_file: PathBuf,
    },
    /// `runtime.core_path` names something that is not an executable file.
    #[error(
        "runtime.core_path {} is not an executable file; fix it in {} or set it to \"\" to search PATH",
        path.display(), settings_file.display()
    )]
    BadCorePath {
        /// The configured path.
        path: PathBuf,
        /// The settings file.
        settings_file: PathBuf,
    },
    /// The binary could not be started.
    #[error("cannot run {}: {source}", path.display())]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The version output is not one we recognise, or contradicts `runtime.core`.
    #[error("{}: {detail}", path.display())]
    Version {
        /// The binary.
        path: PathBuf,
        /// What was wrong, quoting the output.
        detail: String,
    },
    /// The core lacks a feature the stored config needs; found before anything is spawned.
    #[error("{core} {version} cannot run {feature}; {fix}")]
    Unsupported {
        /// Core name (`xray`, `v2ray`, `sing-box`).
        core: &'static str,
        /// Its version, e.g. `4.34.0`.
        version: String,
        /// The feature, e.g. `REALITY (vless reality)`.
        feature: String,
        /// What to do, e.g. `use xray or sing-box (set runtime.core)`.
        fix: String,
    },
    /// No installed core in `runtime.core_preference` can run the config, but another core
    /// could ([`super::choose_core`]).
    #[error(
        "{feature} is not supported by the installed cores ({installed}); it needs the {capable} \
         core; install one, see docs/CORES.md"
    )]
    NoCapableCore {
        /// What the first preferred installed core refused, e.g. `REALITY (vless reality)`.
        feature: String,
        /// The cores that would run it, e.g. `sing-box or mihomo`.
        capable: String,
        /// The installed cores that were tried, e.g. `v2ray 4.34.0, sing-box 1.14.4`.
        installed: String,
    },
    /// `choose_core` was given no installed core of a preferred family.
    #[error(
        "no proxy core of runtime.core_preference ({preference}) is installed; install one, see \
         docs/CORES.md"
    )]
    NoCore {
        /// The preference list, comma-separated.
        preference: String,
    },
    /// The render request itself is unusable (no candidates, a port used twice).
    #[error("cannot render core config: {0}")]
    Render(String),
    /// The core's own config check rejected a rendered config (a bug in the renderer, or a
    /// value the core validates that the model does not, such as a Shadowsocks 2022 key).
    #[error("{core} rejected the config {}: {output}", config.display())]
    CheckFailed {
        /// Core name.
        core: &'static str,
        /// The config file.
        config: PathBuf,
        /// The core's output (trimmed), or the exit status when it printed nothing.
        output: String,
    },
}
