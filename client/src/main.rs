//! `niso`, the registry's command-line client.
//!
//! Modules: `cli` (the arguments), `commands` (one function per command), `api` (HTTP, retries,
//! error messages), `config` (config, credentials, registry resolution), `cache` (the chunk
//! cache), `pull` (delta pulls), `push` (pack and upload), `install` (safe extraction),
//! `output` (results, progress), `error` (messages and exit codes).

mod api;
mod cache;
mod cli;
mod commands;
mod config;
mod error;
mod install;
mod output;
mod pull;
mod push;

use std::process::ExitCode;

use clap::Parser;

use crate::error::ErrorKind;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(ErrorKind::Usage.exit_code())
            } else {
                // --help and --version
                ExitCode::SUCCESS
            };
        }
    };
    let output = output::Output::new(cli.global.json, cli.global.quiet);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: starting the runtime: {error}");
            return ExitCode::from(ErrorKind::Failed.exit_code());
        }
    };
    let result = runtime.block_on(async {
        let paths = config::Paths::from_environment()?;
        commands::run(cli.command, paths, cli.global.registry.as_deref(), &output).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if output.json {
                println!(
                    "{}",
                    serde_json::json!({"error": error.message, "exit_code": error.kind.exit_code()})
                );
            }
            eprintln!("error: {}", error.message);
            ExitCode::from(error.kind.exit_code())
        }
    }
}
