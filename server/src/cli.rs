//! The `niso-server` command line: `serve` (default), `migrate`, `gc --once`, `keys create`.
//! Every subcommand reads the same configuration and brings the database up to date first.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

use crate::http::{AppState, serve, serve_metrics};
use niso_registry::Registry;
use niso_registry::config::{Config, parse_duration};
use niso_registry::metrics::Metrics;
use niso_registry::permissions::SystemAuthority;

#[derive(Parser, Debug)]
#[command(name = "niso-server", version, about = "The niso package registry")]
pub struct Cli {
    /// TOML configuration file; NISO_* environment variables override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Serve the registry API (the default).
    Serve,
    /// Apply database migrations and exit.
    Migrate,
    /// Collect orphan chunks.
    Gc {
        /// Run one pass and exit (the only mode; the operator runs GC continuously).
        #[arg(long)]
        once: bool,
        /// Only chunks older than this are collected (e.g. 1h, 30m, 0).
        #[arg(long, value_parser = parse_duration)]
        grace: Option<Duration>,
    },
    /// Manage API keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key and print it as one JSON line (the only time the key is shown).
    Create {
        #[arg(long)]
        name: String,
        /// e.g. 'admin:*' or 'push:@team/*,pull:*'
        #[arg(long)]
        scope: String,
        /// Link the key to this user.
        #[arg(long)]
        user: Option<String>,
    },
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    let metrics = Arc::new(Metrics::new());
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run_server(config, metrics).await,
        Command::Migrate => {
            Registry::open(&config, metrics).await?;
            println!("{{\"migrated\":true}}");
            Ok(())
        }
        Command::Gc { once, grace } => {
            if !once {
                anyhow::bail!(
                    "only `gc --once` is supported here; the operator runs GC continuously"
                );
            }
            let registry = Registry::open(&config, metrics).await?;
            let report = registry
                .collect_garbage(grace.unwrap_or(config.gc_grace_period))
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Create { name, scope, user },
        } => {
            let registry = Registry::open(&config, metrics).await?;
            // Whoever runs the binary against the registry's database is its operator: the
            // root of trust, who may mint any key (DESIGN.md §5).
            let authority = SystemAuthority::root_of_trust("niso-server keys create");
            let key = registry
                .create_key_by_authority(&authority, user.as_deref(), &name, &scope, None)
                .await
                .map_err(|error| anyhow::anyhow!("{error}"))?;
            println!(
                "{}",
                serde_json::json!({
                    "id": key.id,
                    "key": key.plaintext,
                    "name": key.name,
                    "scope": key.scope,
                })
            );
            Ok(())
        }
    }
}

async fn run_server(config: Config, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::open(&config, metrics.clone()).await?);
    niso_registry::auth::password::warm_up();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| anyhow::anyhow!("cannot listen on {}: {error}", config.listen))?;
    let metrics_listener = TcpListener::bind(config.metrics_listen)
        .await
        .map_err(|error| {
            anyhow::anyhow!(
                "cannot listen on {} for metrics: {error}",
                config.metrics_listen
            )
        })?;
    tracing::info!(
        listen = %listener.local_addr()?,
        metrics = %metrics_listener.local_addr()?,
        "niso-server ready"
    );
    let (shutdown_sender, shutdown) = tokio::sync::watch::channel(false);
    let flusher = spawn_download_count_flusher(
        registry.clone(),
        config.download_count_flush_interval,
        shutdown.clone(),
    );
    let metrics_server = tokio::spawn(serve_metrics(
        metrics_listener,
        metrics,
        wait_for(shutdown.clone()),
    ));
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = shutdown_sender.send(true);
    });
    serve(
        listener,
        AppState::new(registry.clone()),
        wait_for(shutdown),
    )
    .await?;
    let _ = flusher.await;
    let _ = metrics_server.await;
    Ok(())
}

async fn wait_for(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Flushes download counts every `interval`, and once more at shutdown.
pub fn spawn_download_count_flusher(
    registry: Arc<Registry>,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
            if let Err(error) = registry.flush_download_counts().await {
                tracing::warn!(%error, "could not flush download counts; will retry");
            }
        }
        if let Err(error) = registry.flush_download_counts().await {
            tracing::error!(%error, "could not flush download counts at shutdown");
        }
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
