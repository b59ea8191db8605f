//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

const AFTER_HELP: &str = "\
Environment: NISO_REGISTRY (registry URL), NISO_TOKEN (API key), NISO_CONFIG_DIR, NISO_CACHE_DIR,
NISO_CACHE_MAX_BYTES (chunk cache limit, default 2 GiB).

Exit codes: 0 success; 1 the operation failed (refused by the registry, or a local file or
archive problem); 2 usage; 3 authentication or permission; 4 not found; 5 server or network.";

#[derive(Debug, Parser)]
#[command(name = "niso", version, about = "The niso package registry client", after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// The registry's URL (default: NISO_REGISTRY, else the one `niso login` saved)
    #[arg(long, global = true)]
    pub registry: Option<String>,
    /// Print results as JSON on stdout, and no progress
    #[arg(long, global = true)]
    pub json: bool,
    /// No progress or notes, only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Log in: exchange a username and password (prompted) for an API key, or store a key
    Login {
        /// Read an API key from stdin instead of prompting for a password
        #[arg(long, conflicts_with = "oidc_token_file")]
        token_stdin: bool,
        /// Keyless: exchange the OIDC identity token in this file (a projected ServiceAccount
        /// token, a CI job's token) for a short-lived key. In a pod, `in-pod` reads
        /// /var/run/secrets/niso/token, the path the chart's example projects it to.
        #[arg(long, value_name = "PATH")]
        oidc_token_file: Option<PathBuf>,
        /// With --oidc-token-file: the scope to ask for (default: everything granted)
        #[arg(long, requires = "oidc_token_file")]
        scope: Option<String>,
        /// The username (prompted when missing)
        #[arg(long, short)]
        username: Option<String>,
    },
    /// Forget the stored key for the registry
    Logout,
    /// Show who the key belongs to
    Whoami,
    /// Build a reproducible .niso archive from a directory with manifest.toml
    Pack {
        directory: PathBuf,
        /// Output file (default: NAME-VERSION.niso in the current directory)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Publish a directory (packed first) or a .niso file
    Push {
        path: PathBuf,
        #[arg(long)]
        arch: String,
        /// Also point this tag at the pushed version
        #[arg(long)]
        tag: Option<String>,
    },
    /// Download an archive, fetching only the chunks not already cached
    Pull {
        /// NAME, NAME@VERSION or NAME@TAG (default: latest)
        package: String,
        #[arg(long)]
        arch: String,
        /// Output file (default: NAME-VERSION-ARCH.niso in the current directory)
        #[arg(short, long)]
        output: Option<PathBuf>,
    },
    /// Pull, validate and extract packages into DIR/@namespace/name
    Install {
        #[arg(required = true)]
        packages: Vec<String>,
        #[arg(long)]
        arch: String,
        #[arg(long)]
        into: PathBuf,
    },
    /// Search packages by name
    Search { query: Option<String> },
    /// List a package's versions and architectures
    Versions { name: String },
    /// List a package's tags, or point TAG at VERSION
    Tag {
        name: String,
        tag: Option<String>,
        version: Option<String>,
    },
    /// Delete one version of a package for one architecture
    Delete {
        /// NAME@VERSION
        package: String,
        #[arg(long)]
        arch: String,
    },
    /// API keys
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Namespaces
    #[command(subcommand, name = "ns")]
    Namespace(NamespaceCommand),
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; its value is printed once
    Create {
        #[arg(long)]
        name: String,
        /// e.g. push:@alice/*,pull:*
        #[arg(long)]
        scope: String,
    },
    List,
    Revoke {
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Create an organisation namespace (@name)
    Create {
        name: String,
    },
    Show {
        name: String,
    },
    AddMember {
        namespace: String,
        username: String,
        #[arg(long, default_value = "member")]
        role: String,
    },
    RemoveMember {
        namespace: String,
        username: String,
    },
}
