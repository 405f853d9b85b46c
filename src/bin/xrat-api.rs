//! `xrat-api`: the HTTP API (`xrat api serve`, docs/API.md), a binary of its own so that its
//! HTTP stack is not linked into `xrat`, which every CLI call and the daemon run.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(xrat::cli::api_main(&args))
}
