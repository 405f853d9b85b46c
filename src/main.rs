//! The `xrat` binary: argv to [`xrat::cli::run`], the outcome to an exit code.

fn main() {
    let code = xrat::cli::main(std::env::args().collect());
    std::process::exit(code);
}
