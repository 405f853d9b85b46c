//! `xrat completions bash|zsh|fish`: a completion script generated from the command tree
//! (argh's `ArgsInfo`, rendered by `argh_complete`, both from the argh project).

use argh::{ArgsInfo, FromArgs};
use argh_complete::Generator;
use serde::Serialize;

use super::output::print_json;
use super::{CliError, EXIT_OK};

/// The shells a script is generated for.
pub const SHELLS: [&str; 3] = ["bash", "zsh", "fish"];

/// Print a shell completion script (e.g. `source <(xrat completions bash)`).
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "completions")]
pub struct CompletionsCommand {
    /// the shell: bash, zsh or fish
    #[argh(positional, arg_name = "SHELL", from_str_fn(parse_shell))]
    shell: String,
    /// print the script inside a JSON object ({"shell", "script"})
    #[argh(switch)]
    json: bool,
}

fn parse_shell(value: &str) -> Result<String, String> {
    if SHELLS.contains(&value) {
        Ok(value.to_string())
    } else {
        Err(format!(
            "unknown shell {value:?}; use one of {}",
            SHELLS.join(", ")
        ))
    }
}

#[derive(Serialize)]
struct CompletionsView {
    shell: String,
    script: String,
}

/// Runs `xrat completions`, generating from `T`, the whole command line's root.
pub fn run<T: ArgsInfo>(command: CompletionsCommand) -> Result<i32, CliError> {
    let info = T::get_args_info();
    let script = match command.shell.as_str() {
        "bash" => argh_complete::bash::Bash::generate("xrat", &info),
        "zsh" => argh_complete::zsh::Zsh::generate("xrat", &info),
        _ => argh_complete::fish::Fish::generate("xrat", &info),
    };
    if command.json {
        print_json(&CompletionsView {
            shell: command.shell,
            script,
        });
    } else {
        print!("{script}");
    }
    Ok(EXIT_OK)
}
