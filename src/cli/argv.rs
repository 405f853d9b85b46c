//! What argh does not do itself: `xrat --version` (`-V`) and `-h` as a short `--help`. The
//! command line is rewritten before argh sees it, so every command's help works both ways.

use serde::Serialize;

use super::output::print_json;
use super::EXIT_OK;

/// The version `xrat --version` prints: the crate's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Serialize)]
struct VersionView {
    name: &'static str,
    version: &'static str,
}

/// `xrat --version [--json]` (or `-V`): prints the version and returns the exit code; `None` when
/// the command line asks for something else.
pub fn version(args: &[String]) -> Option<i32> {
    let (first, rest) = args.split_first()?;
    if first != "--version" && first != "-V" {
        return None;
    }
    let view = VersionView {
        name: "xrat",
        version: VERSION,
    };
    match rest {
        [] => println!("{} {}", view.name, view.version),
        [json] if json == "--json" => print_json(&view),
        // Anything else after --version is argh's to refuse (as an unknown argument).
        _ => return None,
    }
    Some(EXIT_OK)
}

/// `args` with every `-h` before a `--` turned into `--help` (after `--`, arguments are data).
pub fn normalize(args: &[String]) -> Vec<&str> {
    let mut data = false;
    args.iter()
        .map(|arg| match arg.as_str() {
            "--" => {
                data = true;
                "--"
            }
            "-h" if !data => "--help",
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn short_help_becomes_long_help_until_a_double_dash() {
        let args = strings(&["config", "-h", "import", "--", "-h"]);
        assert_eq!(normalize(&args), ["config", "--help", "import", "--", "-h"]);
    }

    #[test]
    fn version_only_answers_a_leading_flag() {
        assert_eq!(version(&strings(&["status", "--version"])), None);
        assert_eq!(version(&strings(&["--version", "status"])), None);
        assert_eq!(version(&strings(&[])), None);
    }
}
