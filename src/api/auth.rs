//! The API's bearer token: `<root>/api.token`, made on first run from /dev/urandom, mode 0600.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ApiError;

/// The token file's name under the XRAT root.
pub const TOKEN_FILE: &str = "api.token";
/// Random bytes in a new token (written hex-encoded: 64 characters).
pub const TOKEN_BYTES: usize = 32;
/// The token file may not grant any access to group or others.
const PRIVATE_MODE_MASK: u32 = 0o077;

/// The token every request must present as `Authorization: Bearer <token>`.
#[derive(Debug, Clone)]
pub struct Token {
    value: Vec<u8>,
    path: PathBuf,
}

impl Token {
    /// Reads the token at `path`, creating it first when absent.
    pub fn load_or_create(path: &Path) -> Result<Token, ApiError> {
        if !path.exists() {
            create(path)?;
        }
        load(path)
    }

    /// The token file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True when `authorization` (the header values; exactly one is allowed) carries this token.
    pub fn authorizes<'a>(&self, mut authorization: impl Iterator<Item = &'a [u8]>) -> bool {
        let (Some(value), None) = (authorization.next(), authorization.next()) else {
            // Missing, or sent twice: which one would count is ambiguous, so neither does.
            return false;
        };
        let Some(space) = value.iter().position(|&b| b == b' ') else {
            return false;
        };
        let (scheme, presented) = value.split_at(space);
        // The scheme is case-insensitive (RFC 9110 §11.1); the token is compared exactly.
        scheme.eq_ignore_ascii_case(b"Bearer") && self.matches(presented.trim_ascii())
    }

    /// True when `presented` is this token (constant time), e.g. from `?token=`.
    pub fn matches(&self, presented: &[u8]) -> bool {
        constant_time_eq(presented, &self.value)
    }
}

/// Equality whose time does not depend on where the inputs differ, so response timing cannot
/// guess a token byte by byte. The length is not secret (every token made here is 64 bytes).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    // black_box keeps the optimizer from turning the fold back into an early-exit compare.
    std::hint::black_box(diff) == 0
}

fn token_error(path: &Path, detail: impl Into<String>) -> ApiError {
    ApiError::Token {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Writes a fresh token to a private temporary file, then hard-links it into place: the link
/// fails if the file exists, so two servers starting at once agree on one token and neither
/// ever reads a half-written file.
fn create(path: &Path) -> Result<(), ApiError> {
    let mut random = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut random))
        .map_err(|e| token_error(path, format!("cannot read /dev/urandom: {e}")))?;
    let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = path.with_file_name(format!("{TOKEN_FILE}.{}.tmp", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(format!("{hex}\n").as_bytes())?;
            f.sync_all()
        });
    let linked = written.and_then(|()| match std::fs::hard_link(&tmp, path) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    });
    let _ = std::fs::remove_file(&tmp);
    linked.map_err(|e| token_error(path, format!("cannot create it: {e}")))
}

fn load(path: &Path) -> Result<Token, ApiError> {
    let meta = std::fs::metadata(path).map_err(|e| token_error(path, e.to_string()))?;
    let mode = meta.mode() & 0o777;
    if mode & PRIVATE_MODE_MASK != 0 {
        return Err(token_error(
            path,
            format!(
                "it is readable by others (mode {mode:04o}); run `chmod 600 {}`",
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| token_error(path, e.to_string()))?;
    let value = text.trim();
    // Visible ASCII only: the token travels in a header and is compared byte for byte.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(token_error(
            path,
            "it is empty or holds spaces or non-ASCII characters; delete it and a new one is made on the next start",
        ));
    }
    Ok(Token {
        value: value.as_bytes().to_vec(),
        path: path.to_path_buf(),
    })
}
