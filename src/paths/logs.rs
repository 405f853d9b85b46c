//! The log files under `<root>/logs/`: which are core logs, which is the newest, rotation of the
//! old ones (`logs.core_sessions_kept`), and the last lines of a file.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Prefixes of per-core logs: `core-<session>.log` (direct mode) and `pool-<core>.log` (the
/// front's pool cores). `batch.log` is one shared file and is not rotated.
pub const CORE_LOG_PREFIXES: [&str; 2] = ["core-", "pool-"];

/// Bytes read per step when looking for the last lines from the end of a file.
const TAIL_CHUNK_BYTES: u64 = 64 * 1024;

/// True for `core-<digits>.log` and `pool-<digits>.log`.
pub fn is_core_log(name: &str) -> bool {
    CORE_LOG_PREFIXES.iter().any(|prefix| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".log"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// The core logs in `dir`, newest first (by modification time, then by name).
pub fn core_logs(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut logs: Vec<(SystemTime, String, PathBuf)> = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_core_log(&name) {
            continue;
        }
        // DirEntry::metadata does not follow symbolic links; only regular files count.
        match entry.metadata() {
            Ok(meta) if meta.is_file() => {
                let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                logs.push((modified, name, entry.path()));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    logs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
    Ok(logs.into_iter().map(|(_, _, path)| path).collect())
}

/// Deletes all but the newest `keep` core logs in `dir` (and never `current`, the log of the
/// core that just started); returns the files removed.
pub fn prune_core_logs(dir: &Path, keep: usize, current: &Path) -> io::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    let logs = core_logs(dir)?;
    let others = logs.iter().filter(|path| path.as_path() != current);
    // `current` is one of the kept files whether or not it sorted first.
    for path in others.skip(keep.saturating_sub(1)) {
        match std::fs::remove_file(path) {
            Ok(()) => removed.push(path.clone()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(removed)
}

/// The last `n` lines of `file` (without their newlines) and the file's length, reading from the
/// end in chunks, so a large log costs what its tail costs.
pub fn tail_lines(file: &mut File, n: usize) -> io::Result<(Vec<String>, u64)> {
    let len = file.seek(SeekFrom::End(0))?;
    if n == 0 {
        return Ok((Vec::new(), len));
    }
    let mut start = len;
    let mut buf: Vec<u8> = Vec::new();
    while start > 0 && count_lines(&buf, len, start) <= n {
        let step = TAIL_CHUNK_BYTES.min(start);
        start -= step;
        let mut chunk = vec![0; step as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    // The first line of a chunk that did not start at 0 may be partial: it is dropped when
    // more than `n` lines are there.
    let from = lines.len().saturating_sub(n);
    Ok((lines[from..].iter().map(|l| l.to_string()).collect(), len))
}

/// Complete lines in `buf` (which ends at `len` and starts at `start`).
fn count_lines(buf: &[u8], len: u64, start: u64) -> usize {
    let newlines = buf.iter().filter(|&&b| b == b'\n').count();
    let unterminated = buf.last().is_some_and(|&b| b != b'\n') as usize;
    // A chunk that does not start the file begins with a possibly partial line.
    let partial = (start > 0 && len > 0) as usize;
    (newlines + unterminated).saturating_sub(partial)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn names_core_logs() {
        assert!(is_core_log("core-12.log"));
        assert!(is_core_log("pool-3.log"));
        for name in [
            "batch.log",
            "daemon.log",
            "core-.log",
            "core-1.log.1",
            "core-x.log",
        ] {
            assert!(!is_core_log(name), "{name}");
        }
    }

    #[test]
    fn keeps_the_newest_and_the_current() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        for (i, name) in ["core-1.log", "pool-2.log", "core-3.log", "pool-4.log"]
            .iter()
            .enumerate()
        {
            let file = File::create(dir.path().join(name)).unwrap();
            file.set_modified(now - std::time::Duration::from_secs(100 - i as u64))
                .unwrap();
        }
        File::create(dir.path().join("batch.log")).unwrap();
        let current = dir.path().join("core-1.log");
        let removed = prune_core_logs(dir.path(), 2, &current).unwrap();
        let names = |paths: Vec<PathBuf>| -> Vec<String> {
            let mut names: Vec<String> = paths
                .iter()
                .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        assert_eq!(names(removed), ["core-3.log", "pool-2.log"]);
        let left = names(core_logs(dir.path()).unwrap());
        assert_eq!(left, ["core-1.log", "pool-4.log"]);
        assert!(dir.path().join("batch.log").exists());
    }

    #[test]
    fn tails_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("daemon.log");
        let mut file = File::create(&path).unwrap();
        for i in 0..20_000 {
            writeln!(file, "line {i}").unwrap();
        }
        write!(file, "last, unterminated").unwrap();
        let mut file = File::open(&path).unwrap();
        let (lines, len) = tail_lines(&mut file, 3).unwrap();
        assert_eq!(lines, ["line 19998", "line 19999", "last, unterminated"]);
        assert_eq!(len, std::fs::metadata(&path).unwrap().len());
        let (all, _) = tail_lines(&mut file, 1_000_000).unwrap();
        assert_eq!(all.len(), 20_001);
        assert_eq!(all[0], "line 0");
        assert!(tail_lines(&mut file, 0).unwrap().0.is_empty());
    }
}
