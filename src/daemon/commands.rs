//! The command runner: a `command` step's program, run with its timeout off the
//! engine thread; its outcome goes back through the engine's door.
//!
//! Each command runs in a process group of its own. When it times out, the
//! whole group is killed, and when it ends, whatever it left running in its
//! group is killed too, as is every running group when the daemon stops: a
//! step's script must not leave `sleep 3600 &` or a hung `ssh` behind.
//!
//! **Invariant:** no process started for a step outlives its step's command.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::engine::{CommandOutcome, CommandRequest, EngineHandle};

/// Starts commands and remembers their process groups until they end.
#[derive(Clone)]
pub struct CommandRunner {
    runtime: tokio::runtime::Handle,
    engine: EngineHandle,
    workdir: PathBuf,
    groups: Arc<Mutex<HashSet<u32>>>,
}

impl CommandRunner {
    pub fn new(runtime: tokio::runtime::Handle, engine: EngineHandle, workdir: PathBuf) -> Self {
        CommandRunner {
            runtime,
            engine,
            workdir,
            groups: Arc::default(),
        }
    }

    /// Starts a command; its outcome reaches the engine as `CommandFinished`.
    pub fn spawn(&self, c: CommandRequest) {
        let this = self.clone();
        self.runtime.spawn(async move {
            let outcome = run_command(&c, &this.workdir, &this.groups).await;
            this.engine.command_finished(c.incident, c.step, outcome);
        });
    }

    /// Kills every running command's process group (the daemon is stopping).
    pub fn kill_all(&self) {
        let groups: Vec<u32> = match self.groups.lock() {
            Ok(mut g) => g.drain().collect(),
            Err(p) => p.into_inner().drain().collect(),
        };
        for g in groups {
            kill_group(g);
        }
    }
}

#[cfg(unix)]
fn kill_group(pgid: u32) {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;
    if let Ok(id) = i32::try_from(pgid) {
        // ESRCH (nothing left in the group) is the usual, good case.
        let _ = killpg(Pid::from_raw(id), Signal::SIGKILL);
    }
}

#[cfg(not(unix))]
fn kill_group(_: u32) {}

/// How much of a command's output (each of stdout and stderr) the history
/// keeps; the rest is read and dropped, so a chatty script neither blocks on
/// a full pipe nor fills the daemon's memory.
const OUTPUT_MAX: usize = 64 * 1024;

/// How long output is still read after the command's group was killed.
const PIPE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads a pipe to its end, keeping the first [`OUTPUT_MAX`] bytes.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(pipe: Option<R>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else { return kept };
    let mut buf = [0u8; 8192];
    let mut dropped = false;
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_MAX.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
                dropped |= n > room;
            }
        }
    }
    if dropped {
        kept.extend_from_slice(b"\n[output cut at 64 KiB]\n");
    }
    kept
}

/// Runs a command step with its timeout; output is captured for the history.
/// On failure to finish, `exit_code` is `None` and `output` says why.
async fn run_command(
    c: &CommandRequest,
    workdir: &Path,
    groups: &Mutex<HashSet<u32>>,
) -> CommandOutcome {
    let Some((prog, args)) = c.argv.split_first() else {
        return CommandOutcome {
            exit_code: None,
            output: "empty command".into(),
        };
    };
    let mut cmd = tokio::process::Command::new(prog);
    cmd.args(args)
        .envs(c.env.iter().cloned())
        .current_dir(workdir)
        .kill_on_drop(true)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    #[cfg(unix)]
    cmd.process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return CommandOutcome {
                exit_code: None,
                output: format!("could not start `{prog}`: {e}"),
            };
        }
    };
    // With process_group(0) the group's id is the child's pid.
    let group = child.id();
    if let (Some(g), Ok(mut set)) = (group, groups.lock()) {
        set.insert(g);
    }
    // The pipes are read beside the wait, not after it: what the script
    // left running in the background holds them open, and the step ends
    // when the script does (its leftovers are killed with the group).
    let stdout = tokio::spawn(read_capped(child.stdout.take()));
    let stderr = tokio::spawn(read_capped(child.stderr.take()));
    let result = tokio::time::timeout(c.timeout, child.wait()).await;
    if let Some(g) = group {
        kill_group(g);
        if let Ok(mut set) = groups.lock() {
            set.remove(&g);
        }
    }
    // With the group gone the pipes close; a process that left the group
    // (setsid) may hold them: its output is not waited for.
    let collect = |task: tokio::task::JoinHandle<Vec<u8>>| async move {
        tokio::time::timeout(PIPE_GRACE, task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    };
    let (out, err) = (collect(stdout).await, collect(stderr).await);
    match result {
        Ok(Ok(status)) => {
            let mut text = String::from_utf8_lossy(&out).into_owned();
            text.push_str(&String::from_utf8_lossy(&err));
            match status.code() {
                Some(code) => CommandOutcome {
                    exit_code: Some(code),
                    output: text,
                },
                None => CommandOutcome {
                    exit_code: None,
                    output: format!("killed by a signal\n{text}"),
                },
            }
        }
        Ok(Err(e)) => CommandOutcome {
            exit_code: None,
            output: format!("could not wait for `{prog}`: {e}"),
        },
        Err(_) => CommandOutcome {
            exit_code: None,
            output: format!("timed out after {}", crate::duration::short(c.timeout)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn req(argv: &[&str], timeout_ms: u64) -> CommandRequest {
        CommandRequest {
            incident: 1,
            step: "s".into(),
            argv: argv.iter().map(|a| a.to_string()).collect(),
            env: vec![("BRANCHGUARD_BRANCH".into(), "sh-001".into())],
            timeout: Duration::from_millis(timeout_ms),
        }
    }

    async fn run(argv: &[&str], timeout_ms: u64) -> CommandOutcome {
        run_command(
            &req(argv, timeout_ms),
            &std::env::temp_dir(),
            &Mutex::default(),
        )
        .await
    }

    /// A script that leaves a process in the background ends when it exits
    /// (not when its leftover would), and a flood of output is cut, not kept
    /// whole nor left to block the script.
    #[tokio::test]
    async fn a_background_leftover_does_not_hold_the_step_and_output_is_capped() {
        // Held until its 20 s timeout by the leftover's pipes, it would
        // come back as timed out, with no exit code.
        let left = run(&["sh", "-c", "echo started; sleep 30 & exit 0"], 20_000).await;
        assert_eq!(left.exit_code, Some(0), "{}", left.output);
        assert!(left.output.contains("started"), "{}", left.output);
        let flood = run(
            &["sh", "-c", "head -c 1000000 /dev/zero | tr '\\0' x; echo"],
            20_000,
        )
        .await;
        assert_eq!(flood.exit_code, Some(0));
        assert!(flood.output.len() < 70 * 1024, "{}", flood.output.len());
        assert!(flood.output.contains("[output cut at 64 KiB]"));
    }

    #[tokio::test]
    async fn commands_report_exit_output_timeout_and_start_failure() {
        let ok = run(
            &["sh", "-c", "echo on $BRANCHGUARD_BRANCH; echo oops >&2"],
            10_000,
        )
        .await;
        assert_eq!(ok.exit_code, Some(0));
        assert!(
            ok.output.contains("on sh-001") && ok.output.contains("oops"),
            "{}",
            ok.output
        );
        let failed = run(&["sh", "-c", "exit 3"], 10_000).await;
        assert_eq!(failed.exit_code, Some(3));
        let slow = run(&["sleep", "5"], 100).await;
        assert_eq!(slow.exit_code, None);
        assert_eq!(slow.output, "timed out after 100ms");
        let missing = run(&["/no/such/program"], 1000).await;
        assert_eq!(missing.exit_code, None);
        assert!(
            missing.output.contains("could not start"),
            "{}",
            missing.output
        );
    }
}
