//! The Helm chart's tests (charts/niso/tests/test_chart.py): lint and render on a real Helm
//! engine (helm-python-sdk) and strict offline Kubernetes schema validation
//! (kubernetes-validate). Run from here so the suite covers the chart. Missing Python or
//! packages is a failure, never a skip: `cargo xtask test` (the README's test command) creates a
//! virtual environment with the pinned packages and names its interpreter in `NISO_TEST_PYTHON`.

use std::path::PathBuf;
use std::process::Command;

const INSTALL_HINT: &str =
    "run the suite with `cargo xtask test`, which installs charts/niso/tests/requirements.txt";

fn python() -> String {
    std::env::var("NISO_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

#[test]
fn helm_chart_lints_renders_and_validates() {
    let repository = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf();
    let script = repository.join("charts/niso/tests/test_chart.py");
    assert!(script.is_file(), "{} is missing", script.display());

    let probe = Command::new(python())
        .args(["-c", "import helm_python, kubernetes_validate, yaml"])
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run {} ({error}): the chart tests need Python ≥ 3.10 with the \
                 helm-python-sdk and kubernetes-validate packages: {INSTALL_HINT}",
                python()
            )
        });
    assert!(
        probe.status.success(),
        "the chart tests need the helm-python-sdk and kubernetes-validate Python packages: \
         {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );

    let output = Command::new(python())
        .arg(&script)
        .current_dir(&repository)
        .output()
        .expect("run the chart tests");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "chart tests failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains(" passed, 0 failed"),
        "the chart tests ran no test:\n{stdout}"
    );
}
