//! End-to-end tests of the `niso` binary against a real registry served in-process on both
//! backends (embedded: SQLite + local files; production: PostgreSQL + S3), and against a
//! hostile registry for what a client must refuse.

mod account;
mod hostile;
mod packages;
mod sessions;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// One user's `niso`: its own config and cache directories, talking to `registry`.
pub struct Niso {
    pub home: tempfile::TempDir,
    pub registry: String,
}

/// What one run of `niso` did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:?}"))
    }
}

impl Niso {
    pub fn new(registry: &str) -> Niso {
        Niso {
            home: tempfile::tempdir().expect("temp dir"),
            registry: registry.to_owned(),
        }
    }

    pub fn config_dir(&self) -> PathBuf {
        self.home.path().join("config")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.path().join("cache")
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.home.path().join(relative)
    }

    /// Runs `niso ARGS --registry URL` with `stdin`, and no NISO_* variables but the directories.
    pub async fn run_with(&self, args: &[&str], stdin: &str, extra_env: &[(&str, &str)]) -> Run {
        let mut all = args.to_vec();
        all.extend(["--registry", &self.registry]);
        self.run_bare_with(&all, stdin, extra_env).await
    }

    /// Runs `niso ARGS` without `--registry`.
    pub async fn run_bare(&self, args: &[&str], extra_env: &[(&str, &str)]) -> Run {
        self.run_bare_with(args, "", extra_env).await
    }

    async fn run_bare_with(&self, args: &[&str], stdin: &str, extra_env: &[(&str, &str)]) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_niso"));
        command
            .args(args)
            .current_dir(self.home.path())
            .env_remove("NISO_TOKEN")
            .env_remove("NISO_REGISTRY")
            .env_remove("NISO_CACHE_MAX_BYTES")
            .env("NISO_CONFIG_DIR", self.config_dir())
            .env("NISO_CACHE_DIR", self.cache_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in extra_env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("spawn niso");
        let mut input = child.stdin.take().expect("stdin");
        input.write_all(stdin.as_bytes()).await.expect("stdin");
        drop(input);
        let output = child.wait_with_output().await.expect("niso ran");
        Run {
            code: output.status.code().expect("exited"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        self.run_with(args, "", &[]).await
    }

    /// Runs with `--json` and expects success.
    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let run = self.run(&all).await;
        assert_eq!(run.code, 0, "niso {args:?} failed: {run:?}");
        run.json()
    }

    /// Logs in as a user registered with the harness (password `password-of-USERNAME`).
    pub async fn login(&self, username: &str) {
        let password = format!("password-of-{username}\n");
        let run = self
            .run_with(&["login", "--username", username, "--json"], &password, &[])
            .await;
        assert_eq!(run.code, 0, "login: {run:?}");
    }
}

/// A package directory: manifest, a small script and `blobs` random files of `blob_size` bytes.
pub fn package_tree(root: &Path, name: &str, version: &str, blobs: u64, blob_size: usize) {
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("data")).unwrap();
    set_version(root, name, version);
    std::fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").unwrap();
    for index in 0..blobs {
        std::fs::write(
            root.join(format!("data/blob-{index}.bin")),
            niso_test_support::archives::random_bytes(blob_size, index + 1),
        )
        .unwrap();
    }
}

pub fn set_version(root: &Path, name: &str, version: &str) {
    std::fs::write(
        root.join("manifest.toml"),
        niso_test_support::archives::manifest(name, version),
    )
    .unwrap();
}
