//! Short, bounded runs of a core binary (`version`, config checks). A core that hangs must not
//! hang xrat, so every run has a deadline after which the child is killed.

use std::ffi::OsString;
use std::io::{self, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// Output kept per stream; versions and check errors are a few lines.
const OUTPUT_LIMIT: u64 = 64 * 1024;

/// How a bounded run ended.
#[derive(Debug)]
pub(crate) struct Finished {
    /// Exit status; `None` when the run was killed at the deadline.
    pub status: Option<ExitStatus>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Finished {
    /// Exited on its own with status 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// What to tell a person when the run failed: the output (V2Ray reports check errors on
    /// stdout, sing-box on stderr), else the status.
    pub fn describe_failure(&self) -> String {
        let output = format!("{}\n{}", self.stdout.trim(), self.stderr.trim());
        let output = output.trim();
        match self.status {
            None => format!("timed out and was killed; output: {output:?}"),
            Some(_) if !output.is_empty() => output.to_owned(),
            Some(status) => format!("failed with {status} and printed nothing"),
        }
    }
}

/// Runs `program args` with stdin on `/dev/null` (V2Ray 4 otherwise waits for a config on
/// stdin), killing it after `timeout`.
pub(crate) fn run_bounded(
    program: &Path,
    args: &[OsString],
    timeout: Duration,
) -> io::Result<Finished> {
    let mut child = spawn(program, args)?;
    let deadline = Instant::now() + timeout;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_until(&mut child, deadline)?;
    // A grandchild could keep a pipe open after the child exits; give the readers a moment,
    // then go on without their output rather than block.
    let grace = Instant::now() + Duration::from_millis(500);
    Ok(Finished {
        status,
        stdout: collect(stdout, grace),
        stderr: collect(stderr, grace),
    })
}

/// Spawns with piped output. ETXTBSY ("text file busy") is retried briefly: it happens when
/// the binary was just written (a core being upgraded, a test's fake core) and another thread
/// forked while the writer's descriptor was open.
fn spawn(program: &Path, args: &[OsString]) -> io::Result<Child> {
    let mut attempts = 0;
    loop {
        let result = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        match result {
            Err(err) if err.raw_os_error() == Some(libc::ETXTBSY) && attempts < 20 => {
                attempts += 1;
                thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Waits for the child until `deadline`; past it, kills and reaps it and returns `None`.
fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            // The child may exit between try_wait and kill; either way wait() reaps it.
            let _ = child.kill();
            child.wait()?;
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a pipe to its end on a thread, so a chatty child never blocks on a full pipe.
fn drain(pipe: Option<impl Read + Send + 'static>) -> Option<Receiver<Vec<u8>>> {
    let pipe = pipe?;
    let (send, receive) = mpsc::channel();
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.take(OUTPUT_LIMIT).read_to_end(&mut bytes);
        let _ = send.send(bytes);
    });
    Some(receive)
}

fn collect(receiver: Option<Receiver<Vec<u8>>>, until: Instant) -> String {
    let wait = until.saturating_duration_since(Instant::now());
    let bytes = receiver
        .and_then(|receiver| receiver.recv_timeout(wait).ok())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Duration) -> Finished {
        let args = ["-c".into(), script.into()];
        run_bounded(Path::new("/bin/sh"), &args, timeout).unwrap()
    }

    #[test]
    fn captures_output_and_status() {
        let done = sh("echo out; echo err >&2; exit 3", Duration::from_secs(5));
        assert_eq!(done.stdout, "out\n");
        assert_eq!(done.stderr, "err\n");
        assert_eq!(done.status.unwrap().code(), Some(3));
        assert!(!done.success());
        assert_eq!(done.describe_failure(), "out\nerr");
        let quiet = sh("exit 1", Duration::from_secs(5));
        assert_eq!(
            quiet.describe_failure(),
            "failed with exit status: 1 and printed nothing"
        );
    }

    #[test]
    fn kills_at_the_deadline() {
        let start = Instant::now();
        let done = sh("echo started; exec sleep 30", Duration::from_millis(300));
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(done.status.is_none());
        assert!(done
            .describe_failure()
            .starts_with("timed out and was killed"));
    }

    #[test]
    fn stdin_is_empty() {
        let done = sh("cat; echo done", Duration::from_secs(5));
        assert_eq!(done.stdout, "done\n");
    }

    #[test]
    fn missing_program_is_an_error() {
        let err = run_bounded(Path::new("/nonexistent/core"), &[], Duration::from_secs(1));
        assert_eq!(err.unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
