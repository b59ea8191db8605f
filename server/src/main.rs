//! The `niso-server` binary: parses the command line, sets up logging and tracing
//! (`telemetry`) and hands over to `cli`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // Two rustls crypto providers are compiled in (aws-smithy and sqlx); pick one explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let telemetry = match niso_server::telemetry::Telemetry::init("niso-server") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("niso-server: {error:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = niso_server::cli::run(niso_server::cli::Cli::parse()).await;
    telemetry.shutdown().await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("niso-server: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
