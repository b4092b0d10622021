//! Running the PostgreSQL tools, as the clusters' OS user when we run as root (PostgreSQL refuses
//! to run as root).

use super::LocalPgConfig;
use crate::restore_engine::EngineError;
use std::path::Path;
use tokio::process::Command;

/// A command for a PostgreSQL tool (`pg_ctl`, ...) or a plain program (`cp`, `mkdir`).
pub fn command(config: &LocalPgConfig, program: &str) -> Command {
    let program = if program.starts_with("pg_") || program == "postgres" {
        config.bin_dir.join(program).display().to_string()
    } else {
        program.to_owned()
    };
    match &config.run_as {
        Some(user) => {
            let mut command = Command::new("runuser");
            command.arg("-u").arg(user).arg("--").arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Runs `command` to completion; a non-zero exit becomes an error with the tail of its stderr.
pub async fn run(operation: &str, mut command: Command) -> Result<String, EngineError> {
    command.kill_on_drop(true);
    let output = command.output().await.map_err(|source| EngineError::Io {
        operation: operation.to_owned(),
        source,
    })?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        Err(EngineError::Local {
            operation: "local PostgreSQL tool",
            reason: format!(
                "{operation} exited with {}: {}",
                output.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            ),
        })
    }
}

/// Creates `dir` (and parents) owned by the clusters' OS user.
pub async fn make_dir(config: &LocalPgConfig, dir: &Path) -> Result<(), EngineError> {
    let mut mkdir = command(config, "mkdir");
    mkdir.arg("-p").arg("-m").arg("700").arg(dir);
    run(&format!("mkdir {}", dir.display()), mkdir)
        .await
        .map(drop)
}

/// Writes a file as the clusters' OS user (via `tee`, so ownership is right without chown).
pub async fn write_file(
    config: &LocalPgConfig,
    path: &Path,
    contents: &str,
    append: bool,
) -> Result<(), EngineError> {
    use tokio::io::AsyncWriteExt;
    let mut tee = command(config, "tee");
    if append {
        tee.arg("-a");
    }
    tee.arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let io = |source| EngineError::Io {
        operation: format!("write {}", path.display()),
        source,
    };
    let mut child = tee.spawn().map_err(io)?;
    let mut stdin = child.stdin.take().expect("stdin is piped");
    stdin.write_all(contents.as_bytes()).await.map_err(io)?;
    drop(stdin);
    let status = child.wait().await.map_err(io)?;
    if status.success() {
        Ok(())
    } else {
        Err(EngineError::Local {
            operation: "write file",
            reason: format!("tee {} exited with {status}", path.display()),
        })
    }
}

/// A TCP port on loopback that nothing listens on right now.
pub fn free_port() -> Result<u16, EngineError> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|source| EngineError::Io {
            operation: "find a free port".into(),
            source,
        })?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|source| EngineError::Io {
            operation: "find a free port".into(),
            source,
        })
}
