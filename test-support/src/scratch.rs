//! Free ports and per-process scratch directories.
//!
//! A test process can die without running destructors (killed, or aborted by a timeout), and
//! statics never run them at all, so directories are named `<prefix><pid>-…`: whoever makes
//! the next one with the same prefix removes those whose process is gone.

use std::path::{Path, PathBuf};

/// A TCP port on 127.0.0.1 that was free a moment ago. Somebody else may take it before the
/// caller binds it: callers that spawn a process on it retry on "cannot listen".
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A new directory in `parent` named after `prefix` and this process, after removing the ones
/// of the same prefix that processes no longer running left behind.
pub fn process_dir(parent: &Path, prefix: &str) -> tempfile::TempDir {
    remove_dirs_of_dead_processes(parent, prefix);
    tempfile::Builder::new()
        .prefix(&format!("{prefix}{}-", std::process::id()))
        .tempdir_in(parent)
        .unwrap_or_else(|error| {
            panic!(
                "create a {prefix}… directory in {}: {error}",
                parent.display()
            )
        })
}

/// cargo's per-target scratch directory (`target/tmp`, what `CARGO_TARGET_TMPDIR` names for
/// integration tests and benches, which this crate, a library, is not told). Test and bench
/// executables live in `target/<profile>/deps/`; from anywhere else, the system's temp dir.
pub fn target_tmp() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let target = exe
        .parent()
        .filter(|dir| dir.ends_with("deps"))
        .and_then(Path::parent)
        .and_then(Path::parent);
    match target {
        Some(target) => {
            let tmp = target.join("tmp");
            std::fs::create_dir_all(&tmp)
                .unwrap_or_else(|error| panic!("create {}: {error}", tmp.display()));
            tmp
        }
        None => std::env::temp_dir(),
    }
}

/// Only where `/proc` tells which processes run; elsewhere the directories stay until removed
/// by hand (or `cargo clean`, for those under the target directory).
fn remove_dirs_of_dead_processes(parent: &Path, prefix: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(prefix))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
