//! The command runner: a `command` step's program, run with its timeout off the
//! engine thread; its outcome goes back through the engine's door.

use std::path::Path;

use crate::engine::{CommandOutcome, CommandRequest, EngineHandle};

/// Starts a command; its outcome reaches the engine as `CommandFinished`.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    engine: &EngineHandle,
    workdir: &Path,
    c: CommandRequest,
) {
    let engine = engine.clone();
    let workdir = workdir.to_path_buf();
    runtime.spawn(async move {
        let outcome = run_command(&c, &workdir).await;
        engine.command_finished(c.incident, c.step, outcome);
    });
}

/// Runs a command step with its timeout; output is captured for the history.
async fn run_command(c: &CommandRequest, workdir: &Path) -> CommandOutcome {
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
        .stdin(std::process::Stdio::null());
    match tokio::time::timeout(c.timeout, cmd.output()).await {
        Ok(Ok(out)) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            CommandOutcome {
                exit_code: out.status.code(),
                output: text,
            }
        }
        Ok(Err(e)) => CommandOutcome {
            exit_code: None,
            output: format!("could not start `{prog}`: {e}"),
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

    #[tokio::test]
    async fn commands_report_exit_output_timeout_and_start_failure() {
        let dir = std::env::temp_dir();
        let ok = run_command(
            &req(
                &["sh", "-c", "echo on $BRANCHGUARD_BRANCH; echo oops >&2"],
                10_000,
            ),
            &dir,
        )
        .await;
        assert_eq!(ok.exit_code, Some(0));
        assert!(
            ok.output.contains("on sh-001") && ok.output.contains("oops"),
            "{}",
            ok.output
        );
        let failed = run_command(&req(&["sh", "-c", "exit 3"], 10_000), &dir).await;
        assert_eq!(failed.exit_code, Some(3));
        let slow = run_command(&req(&["sleep", "5"], 100), &dir).await;
        assert_eq!(slow.exit_code, None);
        assert_eq!(slow.output, "timed out after 100ms");
        let missing = run_command(&req(&["/no/such/program"], 1000), &dir).await;
        assert_eq!(missing.exit_code, None);
        assert!(
            missing.output.contains("could not start"),
            "{}",
            missing.output
        );
    }
}
