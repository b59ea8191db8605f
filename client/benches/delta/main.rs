//! Delta figures of the `niso` client against an in-process registry (embedded backend): for a
//! package of 256 MiB (`NISO_BENCH_QUICK=1`: 32 MiB) built with `niso pack` and its next
//! versions with a 1-byte edit, a 4 KiB insertion and one file rewritten, the bytes `niso push`
//! sends and `niso pull` receives as a fraction of the archive, and the delta pull's time
//! against `curl` of the whole archive. Prints figures; asserts nothing.
//!
//! Run: `cargo bench -p niso-client --bench delta --profile dev` (dependencies are optimised in
//! the dev profile; the client's own code is thin).

use std::path::Path;
use std::time::Instant;

use serde_json::Value;

const NAME: &str = "@bench/big";
const ARCH: &str = "x86_64-linux";
const MIB: usize = 1024 * 1024;

/// A next version: its number, what changed, and the change.
type Edit<'a> = (&'a str, &'a str, Box<dyn Fn() + 'a>);

struct Client {
    home: tempfile::TempDir,
    registry: String,
}

impl Client {
    fn run(&self, args: &[&str]) -> Value {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_niso"))
            .args(args)
            .args(["--registry", &self.registry, "--json"])
            .current_dir(self.home.path())
            .env("NISO_CONFIG_DIR", self.home.path().join("config"))
            .env("NISO_CACHE_DIR", self.home.path().join("cache"))
            .env_remove("NISO_TOKEN")
            .env_remove("NISO_CACHE_MAX_BYTES")
            .output()
            .expect("niso runs");
        assert!(
            output.status.success(),
            "niso {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).expect("JSON")
    }

    fn login(&self, username: &str) {
        use std::io::Write;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_niso"))
            .args([
                "login",
                "--username",
                username,
                "--registry",
                &self.registry,
            ])
            .env("NISO_CONFIG_DIR", self.home.path().join("config"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("niso runs");
        writeln!(child.stdin.take().unwrap(), "password-of-{username}").unwrap();
        assert!(child.wait().unwrap().success());
    }
}

fn write_version(tree: &Path, version: &str) {
    std::fs::write(
        tree.join("manifest.toml"),
        niso_test_support::archives::manifest(NAME, version),
    )
    .unwrap();
}

fn percent(part: u64, whole: u64) -> String {
    format!("{:.3} %", part as f64 * 100.0 / whole as f64)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::var("NISO_BENCH_QUICK").is_ok_and(|value| value == "1");
    let total = if quick { 32 * MIB } else { 256 * MIB };
    let app = niso_test_support::TestApp::start(niso_test_support::Backend::Embedded).await;
    app.register("bench").await;
    let registry = app.base.clone();

    let pusher = Client {
        home: tempfile::tempdir().unwrap(),
        registry: registry.clone(),
    };
    pusher.login("bench");
    let puller = Client {
        home: tempfile::tempdir().unwrap(),
        registry: registry.clone(),
    };
    let tree = pusher.home.path().join("tree");
    std::fs::create_dir_all(tree.join("files")).unwrap();
    let files = total / MIB;
    for index in 0..files {
        std::fs::write(
            tree.join(format!("files/{index:04}.bin")),
            niso_test_support::archives::random_bytes(MIB, index as u64 + 1),
        )
        .unwrap();
    }
    write_version(&tree, "1.0.0");
    let tree_arg = tree.to_str().unwrap().to_owned();
    let first = pusher.run(&["push", &tree_arg, "--arch", ARCH]);
    let pulled = puller.run(&[
        "pull",
        &format!("{NAME}@1.0.0"),
        "--arch",
        ARCH,
        "-o",
        "v.niso",
    ]);
    println!(
        "package of {} MiB: first push sent {}, first pull received {}",
        total / MIB,
        percent(
            first["bytes_sent"].as_u64().unwrap(),
            first["size"].as_u64().unwrap()
        ),
        percent(
            pulled["bytes_downloaded"].as_u64().unwrap(),
            pulled["size"].as_u64().unwrap()
        ),
    );

    let middle = tree.join(format!("files/{:04}.bin", files / 2));
    let edits: [Edit; 3] = [
        (
            "1.0.1",
            "1-byte edit",
            Box::new(|| {
                let mut bytes = std::fs::read(&middle).unwrap();
                bytes[MIB / 2] ^= 1;
                std::fs::write(&middle, bytes).unwrap();
            }),
        ),
        (
            "1.0.2",
            "4 KiB insertion",
            Box::new(|| {
                let mut bytes = std::fs::read(&middle).unwrap();
                let insertion = niso_test_support::archives::random_bytes(4096, 999);
                bytes.splice(MIB / 3..MIB / 3, insertion);
                std::fs::write(&middle, bytes).unwrap();
            }),
        ),
        (
            "1.0.3",
            "rebuilt tree, one file rewritten",
            Box::new(|| {
                let other = tree.join(format!("files/{:04}.bin", files / 4));
                std::fs::write(&other, niso_test_support::archives::random_bytes(MIB, 4242))
                    .unwrap();
            }),
        ),
    ];
    println!(
        "\n| next version | archive | push sent | pull received | delta pull | curl (whole) |"
    );
    println!("|---|---|---|---|---|---|");
    for (version, label, edit) in edits {
        edit();
        write_version(&tree, version);
        let pushed = pusher.run(&["push", &tree_arg, "--arch", ARCH]);
        let size = pushed["size"].as_u64().unwrap();
        let started = Instant::now();
        let pulled = puller.run(&[
            "pull",
            &format!("{NAME}@{version}"),
            "--arch",
            ARCH,
            "-o",
            "v.niso",
        ]);
        let delta_seconds = started.elapsed().as_secs_f64();
        let started = Instant::now();
        let curl = std::process::Command::new("curl")
            .args(["-sf", "-o"])
            .arg(puller.home.path().join("curl.niso"))
            .arg(format!("{registry}/v1/packages/{NAME}/{version}/{ARCH}"))
            .status()
            .expect("curl runs");
        let curl_seconds = started.elapsed().as_secs_f64();
        assert!(curl.success());
        println!(
            "| {label} | {:.1} MiB | {} | {} | {:.2} s | {:.2} s |",
            size as f64 / MIB as f64,
            percent(pushed["bytes_sent"].as_u64().unwrap(), size),
            percent(pulled["bytes_downloaded"].as_u64().unwrap(), size),
            delta_seconds,
            curl_seconds,
        );
    }
}
