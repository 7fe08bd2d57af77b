//! What the three client binaries share: logging to stderr, the Tokio
//! runtime, and turning an error into one `prog: what: why` line and an
//! exit status (a broken stdout pipe exits quietly).

use std::error::Error as _;
use std::future::Future;
use std::process::ExitCode;

use anyhow::Context;
use berth::cli::{CliError, EXIT_FAILED};

/// Logs go to stderr (stdout carries response bodies); `BERTH_LOG` sets the
/// filter, warnings by default.
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BERTH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Runs `work` on a fresh runtime and maps its outcome to an exit status.
pub fn main<F, E>(prog: &str, work: F) -> ExitCode
where
    F: Future<Output = Result<(), E>>,
    E: Into<CliError>,
{
    init_logging();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{prog}: {e:#}");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    let result = runtime.block_on(work).map_err(Into::into);
    // Do not wait for stray tasks (a blocked stdin read, a dead peer).
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{prog}: {}", one_line(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the
/// message already contains.
fn one_line(e: &CliError) -> String {
    let mut line = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}
