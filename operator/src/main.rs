//! The `niso-operator` binary: logging, then `run` (default) or `crd`.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Two rustls crypto providers are compiled in (aws-smithy and kube); pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = EnvFilter::try_from_env("NISO_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("NISO_LOG_FORMAT").map_or(true, |format| format != "text");
    if json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    match niso_operator::run::main(niso_operator::run::Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("niso-operator: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
