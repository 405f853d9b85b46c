//! Multi-link input: a subscription blob (the whole input is base64 of a link list) or links one
//! per line. Each line gets its own result so one bad link does not block the rest.

use super::common::decode_base64_text;
use super::error::LinkError;
use super::model::ParsedLink;
use super::parse_link;

/// The outcome for one non-blank, non-comment line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineResult {
    /// 1-based line number, in the decoded text when the input was a subscription blob.
    pub line: usize,
    /// The parsed link or why it was rejected.
    pub result: Result<ParsedLink, LinkError>,
}

/// Parses every link in `text`, which is either a base64 subscription blob (standard or
/// URL-safe, padded or not, possibly wrapped) or newline-separated links. Blank lines and lines
/// starting with `#` are skipped. Results are in input order.
pub fn parse_input(text: &str) -> Vec<LineResult> {
    let text = text.trim_start_matches('\u{feff}');
    let decoded = decode_subscription(text);
    decoded
        .as_deref()
        .unwrap_or(text)
        .lines()
        .enumerate()
        .filter_map(|(index, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            Some(LineResult {
                line: index + 1,
                result: parse_link(line),
            })
        })
        .collect()
}

/// The link list inside a subscription blob, or `None` if `text` is not one. Plain link lists
/// never decode because "://" is outside both base64 alphabets; the "://" check on the result
/// guards against short plain words that happen to be valid base64.
fn decode_subscription(text: &str) -> Option<String> {
    let decoded = decode_base64_text(text)?;
    let decoded = decoded.trim_start_matches('\u{feff}');
    decoded.contains("://").then(|| decoded.to_owned())
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use base64::Engine;

    use super::*;
    use crate::links::model::{Protocol, Scheme};

    /// Four schemes, a blank line, a comment, CRLF endings and one link without a port.
    const LIST: &str = "vless://b831381d-6324-4d53-ad4f-8cda48b30811@203.0.113.7:443\
        ?encryption=none&flow=xtls-rprx-vision&security=reality&sni=www.microsoft.com&fp=chrome\
        &pbk=SbVKOEMjK0sIlbwg4akyBg5mL5KZwwB-ed4eEE7YnRc&sid=6ba85179e30d4fc2&type=tcp\
        #DE%20Reality\r\n\
        vless://b831381d-6324-4d53-ad4f-8cda48b30811@203.0.113.8?security=tls&type=ws#broken\r\n\
        \r\n\
        # staging nodes\r\n\
        trojan://p%40ss@trojan.example.com:443?sni=trojan.example.com#US%20Trojan\r\n\
        ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg==@198.51.100.4:8388#SG%20SS\r\n\
        socks5://10.0.0.1:1080\r\n";

    fn summary(results: &[LineResult]) -> Vec<(usize, Result<String, String>)> {
        results
            .iter()
            .map(|entry| {
                let result = match &entry.result {
                    Ok(link) => Ok(link.name.clone()),
                    Err(err) => Err(err.to_string()),
                };
                (entry.line, result)
            })
            .collect()
    }

    fn expected() -> Vec<(usize, Result<String, String>)> {
        vec![
            (1, Ok("DE Reality".to_owned())),
            (2, Err("vless: missing port".to_owned())),
            (5, Ok("US Trojan".to_owned())),
            (6, Ok("SG SS".to_owned())),
            (7, Ok("socks 10.0.0.1:1080".to_owned())),
        ]
    }

    #[test]
    fn plain_list() {
        assert_eq!(summary(&parse_input(LIST)), expected());
    }

    #[test]
    fn blob_in_any_base64_flavour() {
        let standard = STANDARD.encode(LIST);
        let wrapped: Vec<String> = standard
            .as_bytes()
            .chunks(76)
            .map(|chunk| String::from_utf8(chunk.to_vec()).unwrap())
            .collect();
        for blob in [
            standard.clone(),
            URL_SAFE_NO_PAD.encode(LIST),
            wrapped.join("\n") + "\n",
            format!("\u{feff}{standard}"),
        ] {
            assert_eq!(summary(&parse_input(&blob)), expected(), "{blob}");
        }
    }

    #[test]
    fn results_keep_raw_lines() {
        let results = parse_input(LIST);
        let trojan = results[2].result.as_ref().unwrap();
        assert!(trojan.raw.starts_with("trojan://p%40ss@"));
        assert!(!trojan.raw.ends_with('\r'));
        let password = "p@ss".to_owned();
        assert_eq!(trojan.outbound.protocol, Protocol::Trojan { password });
    }

    #[test]
    fn odd_inputs() {
        assert!(parse_input("").is_empty());
        assert!(parse_input("  \n# only a comment\n").is_empty());
        // A lone word that is valid base64 but decodes to no links is treated as a link.
        let results = parse_input("abcd");
        assert_eq!(results.len(), 1);
        assert_eq!(
            results[0].result.as_ref().unwrap_err().to_string(),
            "not a share link: \"abcd\"; expected <scheme>://..."
        );
        let single = parse_input("ss://YWVzLTI1Ni1nY206bjh3NFN0bmJWRDlkbVhZbg@[::1]:8388");
        assert_eq!(single[0].line, 1);
        assert_eq!(single[0].result.as_ref().unwrap().name, "ss [::1]:8388");
        assert_eq!(Scheme::Shadowsocks.to_string(), "ss");
    }
}
