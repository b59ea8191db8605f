//! Where the client keeps its settings and secrets, and which registry and key a command uses.
//!
//! - `config.toml` in the config directory (`$NISO_CONFIG_DIR`, else `niso` in the platform's
//!   config dir, e.g. `~/.config/niso`): `registry` (the default registry, set by
//!   `niso login`) and `cache_max_bytes`.
//! - `credentials.toml` beside it, mode 0600 in a 0700 directory: one API key per registry URL.
//!   Written atomically (a temporary file renamed over it) so a crash never leaves half a file.
//! - The chunk cache in `$NISO_CACHE_DIR`, else the platform's cache dir + `niso`.
//!
//! Precedence: `--registry` > `NISO_REGISTRY` > `config.toml`; `NISO_TOKEN` > the stored key;
//! `NISO_CACHE_MAX_BYTES` > `config.toml` > 2 GiB.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CliError, Result};

pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_max_bytes: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsFile {
    #[serde(default)]
    pub registries: BTreeMap<String, Credential>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credential {
    pub token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// The client's directories and files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub config_dir: PathBuf,
    pub cache_dir: PathBuf,
}

impl Paths {
    pub fn from_environment() -> Result<Paths> {
        let config_dir = directory("NISO_CONFIG_DIR", dirs::config_dir)?;
        let cache_dir = directory("NISO_CACHE_DIR", dirs::cache_dir)?;
        Ok(Paths {
            config_dir,
            cache_dir,
        })
    }

    fn config_file(&self) -> PathBuf {
        self.config_dir.join("config.toml")
    }

    fn credentials_file(&self) -> PathBuf {
        self.config_dir.join("credentials.toml")
    }

    pub fn load_config(&self) -> Result<ConfigFile> {
        load_toml(&self.config_file())
    }

    pub fn save_config(&self, config: &ConfigFile) -> Result<()> {
        save_toml(&self.config_dir, &self.config_file(), config)
    }

    pub fn load_credentials(&self) -> Result<CredentialsFile> {
        load_toml(&self.credentials_file())
    }

    pub fn save_credentials(&self, credentials: &CredentialsFile) -> Result<()> {
        save_toml(&self.config_dir, &self.credentials_file(), credentials)
    }
}

fn directory(variable: &str, platform: fn() -> Option<PathBuf>) -> Result<PathBuf> {
    match std::env::var_os(variable) {
        Some(value) if !value.is_empty() => Ok(PathBuf::from(value)),
        _ => platform().map(|dir| dir.join("niso")).ok_or_else(|| {
            CliError::usage(format!(
                "no home directory to keep niso's files in; set {variable}"
            ))
        }),
    }
}

fn load_toml<T: for<'de> Deserialize<'de> + Default>(path: &Path) -> Result<T> {
    match fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|error| {
            CliError::usage(format!(
                "{} is invalid: {}",
                path.display(),
                error.message()
            ))
        }),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(error) => Err(CliError::io(format!("reading {}", path.display()), error)),
    }
}

/// Writes `value` to `path` through a 0600 temporary file in the same 0700 directory.
fn save_toml<T: Serialize>(directory: &Path, path: &Path, value: &T) -> Result<()> {
    let context = |what: &str| format!("{what} {}", path.display());
    create_private_directory(directory)
        .map_err(|error| CliError::io(format!("creating {}", directory.display()), error))?;
    let text = toml::to_string(value).expect("the config types serialise to TOML");
    // tempfile creates the file 0600 on Unix, before anything is written to it.
    let mut file = tempfile::NamedTempFile::new_in(directory)
        .map_err(|error| CliError::io(context("writing"), error))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.as_file().sync_all())
        .map_err(|error| CliError::io(context("writing"), error))?;
    file.persist(path)
        .map_err(|error| CliError::io(context("writing"), error.error))?;
    Ok(())
}

fn create_private_directory(directory: &Path) -> std::io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(directory)
}

/// A registry base URL without a trailing slash; only http and https.
pub fn normalise_registry(url: &str) -> Result<String> {
    let url = url.trim().trim_end_matches('/');
    let parsed = reqwest::Url::parse(url)
        .map_err(|error| CliError::usage(format!("registry URL `{url}` is invalid: {error}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(CliError::usage(format!(
            "registry URL `{url}` must be http:// or https:// with a host"
        )));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(CliError::usage(format!(
            "registry URL `{url}` must not have a query or fragment"
        )));
    }
    Ok(url.to_owned())
}

/// The registry and key a command runs with.
#[derive(Debug, Clone)]
pub struct Session {
    pub paths: Paths,
    pub registry: String,
    pub token: Option<String>,
}

impl Session {
    /// Resolves the registry (`flag` > `NISO_REGISTRY` > config) and its key.
    pub fn resolve(paths: Paths, flag: Option<&str>) -> Result<Session> {
        let from_environment = std::env::var("NISO_REGISTRY")
            .ok()
            .filter(|value| !value.is_empty());
        let registry = match flag.map(str::to_owned).or(from_environment) {
            Some(url) => url,
            None => paths.load_config()?.registry.ok_or_else(|| {
                CliError::usage(
                    "no registry: run `niso login --registry URL`, or pass --registry or set \
                     NISO_REGISTRY",
                )
            })?,
        };
        let registry = normalise_registry(&registry)?;
        let token = match std::env::var("NISO_TOKEN") {
            Ok(token) if !token.is_empty() => Some(token),
            _ => paths
                .load_credentials()?
                .registries
                .get(&registry)
                .map(|credential| credential.token.clone()),
        };
        Ok(Session {
            paths,
            registry,
            token,
        })
    }

    /// The cache size limit in bytes.
    pub fn cache_max_bytes(&self) -> Result<u64> {
        if let Ok(value) = std::env::var("NISO_CACHE_MAX_BYTES") {
            return value.trim().parse().map_err(|_| {
                CliError::usage(format!(
                    "NISO_CACHE_MAX_BYTES must be a number of bytes, not `{value}`"
                ))
            });
        }
        Ok(self
            .paths
            .load_config()?
            .cache_max_bytes
            .unwrap_or(DEFAULT_CACHE_MAX_BYTES))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_urls_are_normalised_and_checked() {
        assert_eq!(
            normalise_registry("https://r.example.com/").unwrap(),
            "https://r.example.com"
        );
        assert!(normalise_registry("ftp://r.example.com").is_err());
        assert!(normalise_registry("r.example.com").is_err());
        assert!(normalise_registry("https://r.example.com/?a=b").is_err());
    }

    #[cfg(unix)]
    #[test]
    fn credentials_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            config_dir: dir.path().join("config"),
            cache_dir: dir.path().join("cache"),
        };
        let mut credentials = CredentialsFile::default();
        credentials.registries.insert(
            "https://r.example.com".into(),
            Credential {
                token: "niso_secret".into(),
                username: Some("alice".into()),
            },
        );
        paths.save_credentials(&credentials).unwrap();
        let file_mode = fs::metadata(paths.credentials_file())
            .unwrap()
            .permissions()
            .mode();
        let dir_mode = fs::metadata(&paths.config_dir)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(file_mode & 0o777, 0o600);
        assert_eq!(dir_mode & 0o777, 0o700);
        let loaded = paths.load_credentials().unwrap();
        assert_eq!(
            loaded.registries["https://r.example.com"].token,
            "niso_secret"
        );
    }
}
