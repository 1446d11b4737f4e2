//! Child processes (`journalctl`, `systemctl`) on the executor: std's `Command`, its pipes read
//! through smol's `Async`, and a [`Child`] that is killed and reaped when dropped. Written
//! instead of taking async-process, which keeps a reaper thread and a SIGCHLD handler for what
//! is here a few short-lived children, and cost the binary 30 KB of its 2.5 MiB budget.

use std::io;
use std::process::{ChildStderr, ChildStdout, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use smol::Async;
use smol::io::AsyncReadExt;

/// Longest pause between two looks at whether a child has exited.
const POLL_MAX: Duration = Duration::from_millis(50);

/// A running child. Dropped before it was waited for, it is killed and reaped (off the
/// executor, so a child slow to die does not hold it up): no zombie is left either way.
pub struct Child {
    inner: Option<std::process::Child>,
    /// Its standard output, when piped.
    pub stdout: Option<Async<ChildStdout>>,
    /// Its standard error, when piped.
    pub stderr: Option<Async<ChildStderr>>,
}

/// Starts `cmd`; piped standard output and error become readable without blocking.
pub fn spawn(cmd: &mut Command) -> io::Result<Child> {
    let mut inner = cmd.spawn()?;
    let stdout = inner.stdout.take().map(Async::new).transpose()?;
    let stderr = inner.stderr.take().map(Async::new).transpose()?;
    Ok(Child {
        inner: Some(inner),
        stdout,
        stderr,
    })
}

impl Child {
    /// Sends SIGKILL (a child that has already exited is no error).
    pub fn kill(&mut self) -> io::Result<()> {
        match &mut self.inner {
            Some(c) => c.kill(),
            None => Ok(()),
        }
    }

    /// Waits for the child to exit and reaps it. It is looked at after 1, 2, 4 ... ms, then
    /// every 50 ms: callers wait once its output has ended or after killing it, when the exit
    /// is a moment away.
    pub async fn status(&mut self) -> io::Result<ExitStatus> {
        let mut pause = Duration::from_millis(1);
        loop {
            let c = self
                .inner
                .as_mut()
                .ok_or_else(|| io::Error::other("already reaped"))?;
            if let Some(status) = c.try_wait()? {
                self.inner = None;
                return Ok(status);
            }
            smol::Timer::after(pause).await;
            pause = (pause * 2).min(POLL_MAX);
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(mut c) = self.inner.take() else {
            return;
        };
        let _ = c.kill();
        if let Ok(None) = c.try_wait() {
            // Killed but not gone yet: reaped by a blocking-pool thread.
            smol::unblock(move || {
                let _ = c.wait();
            })
            .detach();
        }
    }
}

/// Runs `cmd` to completion with standard output and error captured (standard input is
/// whatever `cmd` says). Dropped before it ends, the child is killed.
pub async fn output(cmd: &mut Command) -> io::Result<Output> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(cmd)?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let read_out = async {
        if let Some(mut s) = stdout {
            s.read_to_end(&mut out).await?;
        }
        io::Result::Ok(())
    };
    let read_err = async {
        if let Some(mut s) = stderr {
            s.read_to_end(&mut err).await?;
        }
        io::Result::Ok(())
    };
    let (a, b) = smol::future::zip(read_out, read_err).await;
    a?;
    b?;
    let status = child.status().await?;
    Ok(Output {
        status,
        stdout: out,
        stderr: err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pid` is this process's child, running or a zombie.
    fn is_child(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            let rest = s.rsplit_once(") ").map_or("", |r| r.1);
            rest.split_whitespace().nth(1) == Some(&std::process::id().to_string())
        })
    }

    #[test]
    fn output_is_captured_with_the_status() {
        let out = smol::block_on(output(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        ))
        .unwrap();
        assert_eq!(out.stdout, b"out\n");
        assert_eq!(out.stderr, b"err\n");
        assert_eq!(out.status.code(), Some(3));
        assert!(matches!(
            smol::block_on(output(&mut Command::new("/nonexistent/edgemon-test"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn a_dropped_child_is_killed_and_reaped() {
        let child = spawn(Command::new("sleep").arg("60")).unwrap();
        let pid = child.inner.as_ref().unwrap().id();
        assert!(is_child(pid));
        drop(child);
        // Reaped by the blocking pool a moment later (bounded wait: /proc has no event).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while is_child(pid) {
            assert!(std::time::Instant::now() < deadline, "{pid} not reaped");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Killed and waited for: the status says SIGKILL.
        let mut c = spawn(Command::new("sleep").arg("60")).unwrap();
        c.kill().unwrap();
        let status = smol::block_on(c.status()).unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }
}
