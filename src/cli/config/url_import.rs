//! `config import URL`: an http(s) subscription URL fetched once, its links stored as plain
//! configs (`xrat sub add` keeps one updated instead).

use super::{now, open_store, print_json, printable, FailedLine, IdName, ImportView};
use super::{CliError, EXIT_ERROR, EXIT_OK};
use crate::links::ParsedLink;
use crate::paths::Paths;
use crate::store::ImportOutcome;

/// Whether `source` is a subscription URL to fetch rather than an HTTP(S) proxy's share link.
///
/// A path (`/sub`, `/api/v1/client/subscribe`) means a subscription. Without one, credentials or
/// a `#name` mean a proxy link (`https://user:pass@host:port/?sni=…#name` carries its TLS options
/// in the query); a bare query (`https://host/?token=…`) means a subscription; a bare
/// `http://host:port` stays a proxy link.
pub(super) fn is_fetch_url(source: &str) -> bool {
    let lower = source.to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return false;
    }
    let Ok(url) = url::Url::parse(source) else {
        return false;
    };
    if url.path() != "/" {
        return true;
    }
    let proxy_like = !url.username().is_empty() || url.fragment().is_some();
    !proxy_like && url.query().is_some()
}

/// `config import URL`: fetch it like a subscription and store its links as plain configs.
pub(super) fn import_url(url: &str, json: bool) -> Result<i32, CliError> {
    let paths = Paths::from_env()?;
    let settings = crate::settings::Settings::load(&paths.settings_file())?;
    let source = crate::cli::sub_fetch::Source {
        url,
        via_proxy: false,
        ca_file: None,
        user_agent: None,
    };
    let body = crate::cli::sub_fetch::fetch_body(&paths, &settings, &source)?;
    let links: Vec<ParsedLink> = body.links.iter().map(|(_, link)| link.clone()).collect();
    let outcomes = open_store()?.import(&links, now())?;
    let mut view = ImportView::default();
    for outcome in outcomes {
        match outcome {
            ImportOutcome::Imported { id, name } => view.imported.push(IdName { id, name }),
            ImportOutcome::Duplicate { existing_id, name } => view.duplicates.push(IdName {
                id: existing_id,
                name,
            }),
        }
    }
    for (index, error) in body.failed.into_iter().enumerate() {
        view.failed.push(FailedLine {
            line: index + 1,
            error,
        });
    }
    if json {
        print_json(&view);
    } else {
        for failed in &view.failed {
            eprintln!("{}", printable(&failed.error));
        }
        println!(
            "Imported {}, duplicates {}, failed {} ({} from {url}).",
            view.imported.len(),
            view.duplicates.len(),
            view.failed.len(),
            body.format.as_str()
        );
    }
    Ok(if view.failed.is_empty() {
        EXIT_OK
    } else {
        EXIT_ERROR
    })
}

#[cfg(test)]
mod tests {
    use super::is_fetch_url;

    #[test]
    fn subscription_urls_and_proxy_links_are_told_apart() {
        for url in [
            "https://provider.example/sub",
            "https://provider.example/api/v1/client/subscribe?token=abc",
            "http://127.0.0.1:8080/?token=abc",
        ] {
            assert!(is_fetch_url(url), "{url} is a subscription");
        }
        for url in [
            "http://user:pass@127.0.0.1:3128",
            "http://127.0.0.1:3128#office",
            "https://u:pw@127.0.0.1:443/?sni=localhost&allowInsecure=1#e2e",
            "vless://id@host:443",
        ] {
            assert!(!is_fetch_url(url), "{url} is a proxy link");
        }
    }
}
