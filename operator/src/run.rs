//! The `niso-operator` command line and the long-running `run`: the registry opened from the
//! same configuration as niso-server, the custom resources checked, the Lease, the controllers
//! (`controllers`) and the GC loop (only while this replica holds the Lease), `/health`,
//! `/ready` and `/metrics`, and a graceful SIGTERM shutdown that releases the Lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use kube::api::ListParams;
use kube::{Api, Client};
use kube_lease_manager::LeaseManagerBuilder;
use tokio::net::TcpListener;
use tokio::sync::watch;

use niso_registry::Registry;
use niso_registry::config::Config;

use crate::context::{Context, Settings};
use crate::crd::{ApiKey, RegistryNamespace};
use crate::gc::GcSettings;
use crate::metrics::Metrics;

#[derive(Parser, Debug)]
#[command(
    name = "niso-operator",
    version,
    about = "The niso Kubernetes operator: RegistryNamespace and ApiKey controllers, chunk GC"
)]
pub struct Cli {
    /// TOML configuration file of the registry; NISO_* environment variables override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run the controllers and the GC loop (the default).
    Run,
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

/// The operator's own settings (the registry's come from `niso_registry::config::Config`).
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// `NISO_REGISTRY_URL` (required): written into every ApiKey Secret.
    pub registry_url: String,
    /// `NISO_OPERATOR_LISTEN` (default 0.0.0.0:8081): `/health` and `/metrics`.
    pub listen: SocketAddr,
    /// `NISO_GC_INTERVAL_SECS` (default 600), `NISO_GC_GRACE_SECS` (default 3600) and
    /// `NISO_GC_ORPHAN_SWEEP_INTERVAL_SECS` (default 3600, 0: every pass).
    pub gc: GcSettings,
    /// `NISO_OPERATOR_LEASE_NAME` (default niso-operator).
    pub lease_name: String,
    /// `NISO_OPERATOR_LEASE_NAMESPACE`, else `POD_NAMESPACE`, else the client's namespace.
    pub lease_namespace: Option<String>,
    /// `NISO_OPERATOR_LEASE_SECS` (default 15): how long the Lease holds without renewal.
    pub lease_duration_secs: u64,
    /// `POD_NAME`, else `HOSTNAME`: this replica's identity in the Lease and its Events.
    pub identity: Option<String>,
    /// `NISO_OPERATOR_PRIVILEGED_NAMESPACES` (comma-separated, default none): Kubernetes
    /// namespaces whose ApiKeys may hold registry-wide scopes and act as registry users.
    pub privileged_namespaces: Vec<String>,
    /// `NISO_OPERATOR_INSTANCE`: reconcile only objects labelled `niso.online/instance=<it>`.
    pub instance: Option<String>,
    /// `NISO_OPERATOR_WATCH_NAMESPACES` (comma-separated, default all): where ApiKeys are
    /// watched.
    pub watch_namespaces: Vec<String>,
    /// `NISO_OPERATOR_CLUSTER_ISSUER` (default Kubernetes' own): the issuer of this cluster's
    /// ServiceAccount tokens, named by the grants mirrored for keyless access.
    pub cluster_issuer: String,
}

fn invalid(name: &str, value: &str, reason: &str) -> anyhow::Error {
    anyhow::anyhow!("invalid {name}={value:?}: {reason}")
}

/// A comma-separated list of Kubernetes namespace names (DNS labels).
fn namespace_list(variable: &str, value: &str) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for name in value
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        let valid = name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        if !valid {
            return Err(invalid(
                variable,
                value,
                &format!("{name:?} is not a Kubernetes namespace name"),
            ));
        }
        names.push(name.to_owned());
    }
    Ok(names)
}

impl OperatorConfig {
    pub fn from_env(
        config: &Config,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<OperatorConfig> {
        let get = |name: &str| env(name).filter(|value| !value.trim().is_empty());
        let registry_url = get("NISO_REGISTRY_URL").ok_or_else(|| {
            anyhow::anyhow!(
                "NISO_REGISTRY_URL is not set: the registry's public URL, written into ApiKey Secrets"
            )
        })?;
        if !(registry_url.starts_with("http://") || registry_url.starts_with("https://")) {
            return Err(invalid(
                "NISO_REGISTRY_URL",
                &registry_url,
                "expected an http:// or https:// URL",
            ));
        }
        let listen = match get("NISO_OPERATOR_LISTEN") {
            Some(value) => value.parse().map_err(|_| {
                invalid(
                    "NISO_OPERATOR_LISTEN",
                    &value,
                    "expected an address such as 0.0.0.0:8081",
                )
            })?,
            None => SocketAddr::from(([0, 0, 0, 0], 8081)),
        };
        let seconds = |name: &str, default: u64| -> anyhow::Result<u64> {
            match get(name) {
                Some(value) => value
                    .trim()
                    .parse()
                    .map_err(|_| invalid(name, &value, "expected a number of seconds")),
                None => Ok(default),
            }
        };
        let interval = seconds("NISO_GC_INTERVAL_SECS", 600)?;
        if interval == 0 {
            return Err(invalid("NISO_GC_INTERVAL_SECS", "0", "must be positive"));
        }
        // 0 is allowed: a sweep in every pass, as before the sweep had an interval of its own.
        let orphan_sweep_interval = seconds("NISO_GC_ORPHAN_SWEEP_INTERVAL_SECS", 3600)?;
        let lease_duration_secs = seconds("NISO_OPERATOR_LEASE_SECS", 15)?;
        if lease_duration_secs < 2 {
            return Err(invalid(
                "NISO_OPERATOR_LEASE_SECS",
                &lease_duration_secs.to_string(),
                "must be at least 2",
            ));
        }
        let privileged_namespaces = match get("NISO_OPERATOR_PRIVILEGED_NAMESPACES") {
            Some(value) => namespace_list("NISO_OPERATOR_PRIVILEGED_NAMESPACES", &value)?,
            None => Vec::new(),
        };
        let watch_namespaces = match get("NISO_OPERATOR_WATCH_NAMESPACES") {
            Some(value) => namespace_list("NISO_OPERATOR_WATCH_NAMESPACES", &value)?,
            None => Vec::new(),
        };
        let instance = match get("NISO_OPERATOR_INSTANCE") {
            Some(value) => {
                let value = value.trim().to_owned();
                // A label value: 63 characters, alphanumeric at both ends, `-_.` inside.
                let valid = value.len() <= 63
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                    && value
                        .bytes()
                        .next()
                        .is_some_and(|b| b.is_ascii_alphanumeric())
                    && value
                        .bytes()
                        .last()
                        .is_some_and(|b| b.is_ascii_alphanumeric());
                if !valid {
                    return Err(invalid(
                        "NISO_OPERATOR_INSTANCE",
                        &value,
                        "expected a Kubernetes label value (letters, digits, '-', '_', '.')",
                    ));
                }
                Some(value)
            }
            None => None,
        };
        let cluster_issuer = match get("NISO_OPERATOR_CLUSTER_ISSUER") {
            Some(value) => {
                let value = value.trim().to_owned();
                if !value.starts_with("https://") || value.len() > 512 {
                    return Err(invalid(
                        "NISO_OPERATOR_CLUSTER_ISSUER",
                        &value,
                        "expected the cluster's https:// ServiceAccount issuer URL",
                    ));
                }
                value
            }
            None => crate::context::DEFAULT_CLUSTER_ISSUER.to_owned(),
        };
        Ok(OperatorConfig {
            cluster_issuer,
            privileged_namespaces,
            watch_namespaces,
            instance,
            registry_url,
            listen,
            gc: GcSettings {
                interval: Duration::from_secs(interval),
                grace: config.gc_grace_period,
                orphan_sweep_interval: Duration::from_secs(orphan_sweep_interval),
            },
            lease_name: get("NISO_OPERATOR_LEASE_NAME").unwrap_or_else(|| "niso-operator".into()),
            lease_namespace: get("NISO_OPERATOR_LEASE_NAMESPACE").or_else(|| get("POD_NAMESPACE")),
            lease_duration_secs,
            identity: get("POD_NAME").or_else(|| get("HOSTNAME")),
        })
    }

    /// Renewal happens this long before the Lease would expire.
    pub fn lease_grace_secs(&self) -> u64 {
        (self.lease_duration_secs / 3).max(1)
    }
}

pub async fn main(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Run) {
        Command::Crd => {
            print!("{}", crate::crd::crds_yaml());
            Ok(())
        }
        Command::Run => {
            let config = Config::load(cli.config.as_deref())?;
            let operator = OperatorConfig::from_env(&config, |name| std::env::var(name).ok())?;
            run(config, operator).await
        }
    }
}

async fn run(config: Config, operator: OperatorConfig) -> anyhow::Result<()> {
    let registry = Arc::new(Registry::open(&config, crate::metrics::registry_metrics()).await?);
    let metrics = Arc::new(Metrics::new());
    let client = Client::try_default()
        .await
        .context("cannot configure the Kubernetes client")?;
    check_resources(&client, &operator).await?;
    let listener = TcpListener::bind(operator.listen)
        .await
        .with_context(|| format!("cannot listen on {}", operator.listen))?;
    let identity = operator
        .identity
        .clone()
        .unwrap_or_else(|| format!("niso-operator-{}", std::process::id()));
    let settings = Settings {
        privileged_namespaces: operator.privileged_namespaces.clone(),
        instance: operator.instance.clone(),
        watch_namespaces: operator.watch_namespaces.clone(),
        cluster_issuer: operator.cluster_issuer.clone(),
        ..Settings::new(operator.registry_url.clone())
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        registry.clone(),
        metrics.clone(),
        settings,
        Some(identity.clone()),
    ));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let http = {
        let mut shutdown = shutdown_rx.clone();
        tokio::spawn(crate::http::serve(
            listener,
            crate::http::Endpoints {
                metrics: metrics.clone(),
                registry: registry.clone(),
                readiness: ctx.readiness.clone(),
            },
            async move {
                let _ = shutdown.wait_for(|stop| *stop).await;
            },
        ))
    };
    tracing::info!(listen = %operator.listen, "serving /health, /ready and /metrics");

    let lease_namespace = operator
        .lease_namespace
        .clone()
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let lease = LeaseManagerBuilder::new(client.clone(), &operator.lease_name)
        .with_namespace(&lease_namespace)
        .with_identity(&identity)
        .with_duration(operator.lease_duration_secs)
        .with_grace(operator.lease_grace_secs())
        .build()
        .await
        .with_context(|| format!("cannot use Lease {lease_namespace}/{}", operator.lease_name))?;
    let (leader, lease_task) = lease.watch().await;
    tracing::info!(%identity, lease = %operator.lease_name, "waiting for the Lease");

    let gc = tokio::spawn(crate::gc::run_loop(
        registry.clone(),
        metrics.clone(),
        operator.gc,
        leader.clone(),
        shutdown_rx.clone(),
    ));
    let controllers = tokio::spawn(crate::controllers::run_while_leader(
        ctx,
        leader,
        shutdown_rx.clone(),
    ));

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = shutdown_tx.send(true);
    let _ = controllers.await;
    let _ = gc.await;
    // Every receiver of the Lease channel is gone now: the Lease task releases it and returns.
    match tokio::time::timeout(Duration::from_secs(10), lease_task).await {
        Ok(Ok(Ok(_))) => tracing::info!("Lease released"),
        Ok(Ok(Err(error))) => tracing::warn!(%error, "cannot release the Lease"),
        Ok(Err(error)) => tracing::warn!(%error, "Lease task failed"),
        Err(_) => tracing::warn!("timed out releasing the Lease"),
    }
    let _ = http.await;
    Ok(())
}

/// Fails the start-up, saying what to do, when a custom resource cannot be listed: a missing
/// CRD or RBAC would otherwise leave controllers retrying silently while nothing happens.
async fn check_resources(client: &Client, operator: &OperatorConfig) -> anyhow::Result<()> {
    let params = ListParams::default().limit(1);
    let explain = |plural: &str, error: kube::Error| -> anyhow::Error {
        match &error {
            kube::Error::Api(status) if status.code == 404 => anyhow::anyhow!(
                "the CustomResourceDefinition {plural}.niso.online is not installed: apply the \
                 CRDs (crds/ in the repository, or the chart's crds/) before the operator"
            ),
            kube::Error::Api(status) if status.code == 403 => anyhow::anyhow!(
                "this ServiceAccount may not list {plural}.niso.online ({}): check the \
                 operator's ClusterRole/Role bindings",
                status.message
            ),
            _ => anyhow::Error::new(error).context(format!("cannot list {plural}.niso.online")),
        }
    };
    Api::<RegistryNamespace>::all(client.clone())
        .list_metadata(&params)
        .await
        .map_err(|error| explain("registrynamespaces", error))?;
    if operator.watch_namespaces.is_empty() {
        Api::<ApiKey>::all(client.clone())
            .list_metadata(&params)
            .await
            .map_err(|error| explain("apikeys", error))?;
    } else {
        for namespace in &operator.watch_namespaces {
            Api::<ApiKey>::namespaced(client.clone(), namespace)
                .list_metadata(&params)
                .await
                .map_err(|error| explain("apikeys", error))?;
        }
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = terminate.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn operator_config(vars: &[(&str, &str)]) -> anyhow::Result<OperatorConfig> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let config = Config::from_sources(None, |name| vars.get(name).cloned())?;
        OperatorConfig::from_env(&config, |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults() {
        let config = operator_config(&[("NISO_REGISTRY_URL", "https://niso.example.com")]).unwrap();
        assert_eq!(config.registry_url, "https://niso.example.com");
        assert_eq!(config.listen, "0.0.0.0:8081".parse().unwrap());
        assert_eq!(config.gc.interval, Duration::from_secs(600));
        assert_eq!(config.gc.grace, Duration::from_secs(3600));
        assert_eq!(config.gc.orphan_sweep_interval, Duration::from_secs(3600));
        assert_eq!(config.lease_name, "niso-operator");
        assert_eq!(config.lease_duration_secs, 15);
        assert_eq!(config.lease_grace_secs(), 5);
    }

    #[test]
    fn settings_from_the_environment() {
        let config = operator_config(&[
            ("NISO_REGISTRY_URL", "http://niso:8080"),
            ("NISO_OPERATOR_LISTEN", "127.0.0.1:9000"),
            ("NISO_GC_INTERVAL_SECS", "30"),
            ("NISO_GC_GRACE_SECS", "0"),
            ("NISO_GC_ORPHAN_SWEEP_INTERVAL_SECS", "0"),
            ("POD_NAMESPACE", "niso-system"),
            ("POD_NAME", "niso-operator-abc"),
            ("NISO_OPERATOR_PRIVILEGED_NAMESPACES", " niso-system, ci ,"),
            ("NISO_OPERATOR_WATCH_NAMESPACES", "team-a,team-b"),
            ("NISO_OPERATOR_INSTANCE", "prod"),
        ])
        .unwrap();
        assert_eq!(config.privileged_namespaces, ["niso-system", "ci"]);
        assert_eq!(config.watch_namespaces, ["team-a", "team-b"]);
        assert_eq!(config.instance.as_deref(), Some("prod"));
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.gc.interval, Duration::from_secs(30));
        assert_eq!(config.gc.grace, Duration::ZERO);
        assert_eq!(config.gc.orphan_sweep_interval, Duration::ZERO);
        assert_eq!(config.lease_namespace.as_deref(), Some("niso-system"));
        assert_eq!(config.identity.as_deref(), Some("niso-operator-abc"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let error = operator_config(&[]).unwrap_err().to_string();
        assert!(error.contains("NISO_REGISTRY_URL"), "{error}");
        for (name, value) in [
            ("NISO_REGISTRY_URL", "niso.example.com"),
            ("NISO_GC_INTERVAL_SECS", "often"),
            ("NISO_GC_INTERVAL_SECS", "0"),
            ("NISO_GC_ORPHAN_SWEEP_INTERVAL_SECS", "hourly"),
            ("NISO_OPERATOR_LISTEN", "everywhere"),
            ("NISO_OPERATOR_LEASE_SECS", "1"),
            ("NISO_OPERATOR_PRIVILEGED_NAMESPACES", "ops,Team_A"),
            ("NISO_OPERATOR_WATCH_NAMESPACES", "-a"),
            ("NISO_OPERATOR_INSTANCE", "prod/eu"),
        ] {
            let mut vars = vec![("NISO_REGISTRY_URL", "https://niso.example.com")];
            vars.push((name, value));
            let error = operator_config(&vars).unwrap_err().to_string();
            assert!(error.contains(name), "{name}={value}: {error}");
        }
    }

    #[test]
    fn subcommands() {
        let cli = Cli::try_parse_from(["niso-operator"]).unwrap();
        assert_eq!(cli.command, None);
        let cli = Cli::try_parse_from(["niso-operator", "crd"]).unwrap();
        assert_eq!(cli.command, Some(Command::Crd));
        let cli = Cli::try_parse_from(["niso-operator", "run", "--config", "x.toml"]).unwrap();
        assert_eq!(cli.command, Some(Command::Run));
        assert!(Cli::try_parse_from(["niso-operator", "serve"]).is_err());
    }
}
