//! `cargo xtask test [ARGS…]`: the README's test command. It prepares what the suite needs on a
//! fresh machine, then runs `cargo test --workspace --locked --no-fail-fast ARGS…`:
//!
//! - PostgreSQL server binaries (`initdb`, `pg_ctl`): the suite starts a throwaway cluster from
//!   them. Missing, they are installed with `apt-get` when we are root on Debian; otherwise the
//!   task stops and says what to install. `NISO_TEST_DATABASE_URL` (an existing server) skips this.
//! - A Python virtual environment under `target/test-venv` with the pinned packages of
//!   `charts/niso/tests/requirements.txt` (the chart and CRD tests validate manifests with them),
//!   created once and re-created when that file changes. The tests find it through
//!   `NISO_TEST_PYTHON`.
//!
//! Nothing is skipped: a missing tool is a failure with a message, never a silently green run.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const REQUIREMENTS: &str = "charts/niso/tests/requirements.txt";

fn main() -> ExitCode {
    let arguments: Vec<String> = std::env::args().skip(1).collect();
    let result = match arguments.first().map(String::as_str) {
        Some("test") => test(&arguments[1..]),
        _ => Err("usage: cargo xtask test [ARGS passed to cargo test…]".to_owned()),
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn test(cargo_test_arguments: &[String]) -> Result<ExitCode, String> {
    let root = workspace_root();
    if std::env::var_os("NISO_TEST_DATABASE_URL").is_none() {
        ensure_postgresql()?;
    }
    let python = ensure_python_environment(&root)?;
    eprintln!(
        "xtask: cargo test --workspace --locked --no-fail-fast {}",
        cargo_test_arguments.join(" ")
    );
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        // Every test binary runs even when one fails, so one run shows every failure.
        .args(["test", "--workspace", "--locked", "--no-fail-fast"])
        .args(cargo_test_arguments)
        .env("NISO_TEST_PYTHON", &python)
        .status()
        .map_err(|error| format!("cannot run cargo: {error}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn has_postgresql() -> bool {
    std::fs::read_dir("/usr/lib/postgresql")
        .map(|versions| {
            versions
                .flatten()
                .any(|version| version.path().join("bin/initdb").is_file())
        })
        .unwrap_or(false)
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|line| line.starts_with("Uid:"))?;
            Some(line.split_whitespace().nth(1)? == "0")
        })
        .unwrap_or(false)
}

fn ensure_postgresql() -> Result<(), String> {
    if has_postgresql() {
        return Ok(());
    }
    let apt = Path::new("/usr/bin/apt-get");
    if !is_root() || !apt.is_file() {
        return Err("the suite needs PostgreSQL's server binaries under \
             /usr/lib/postgresql/*/bin (Debian: `apt-get install postgresql`), or \
             NISO_TEST_DATABASE_URL pointing at a server"
            .to_owned());
    }
    eprintln!("xtask: installing PostgreSQL (apt-get install postgresql)");
    run(Command::new(apt).args(["update", "-qq"]))?;
    run(Command::new(apt)
        .args(["install", "-y", "-qq", "postgresql"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if has_postgresql() {
        Ok(())
    } else {
        Err("apt-get installed postgresql but no initdb appeared under /usr/lib/postgresql".into())
    }
}

/// The virtual environment's interpreter, with the pinned requirements installed. A stamp file
/// holding the requirements' text makes this a no-op until they change.
fn ensure_python_environment(root: &Path) -> Result<PathBuf, String> {
    let requirements_path = root.join(REQUIREMENTS);
    let requirements = std::fs::read_to_string(&requirements_path)
        .map_err(|error| format!("cannot read {}: {error}", requirements_path.display()))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let environment = target.join("test-venv");
    let python = environment.join("bin/python3");
    let stamp = environment.join("requirements.installed");
    if python.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&requirements) {
        return Ok(python);
    }
    eprintln!(
        "xtask: creating {} with {REQUIREMENTS}",
        environment.display()
    );
    if environment.exists() {
        std::fs::remove_dir_all(&environment)
            .map_err(|error| format!("cannot remove {}: {error}", environment.display()))?;
    }
    let system_python = std::env::var("NISO_XTASK_PYTHON").unwrap_or_else(|_| "python3".into());
    run(Command::new(&system_python)
        .args(["-m", "venv"])
        .arg(&environment))
    .map_err(|error| {
        format!("{error} (the suite needs Python ≥ 3.11 with venv; Debian: apt-get install python3-venv)")
    })?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements_path))?;
    std::fs::write(&stamp, &requirements)
        .map_err(|error| format!("cannot write {}: {error}", stamp.display()))?;
    Ok(python)
}

fn run(command: &mut Command) -> Result<(), String> {
    let description = format!("{command:?}");
    let status = command
        .status()
        .map_err(|error| format!("cannot run {description}: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{description} failed ({status})"))
    }
}
