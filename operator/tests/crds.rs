//! `crds/` holds exactly what the Rust types generate, and passes strict offline validation
//! as a Kubernetes CustomResourceDefinition (the `kubernetes-validate` package from PyPI).
//!
//! After changing `operator/src/crd.rs`, regenerate with
//! `NISO_UPDATE_CRDS=1 cargo test -p niso-operator --test crds`.

use std::path::PathBuf;
use std::process::Command;

use niso_operator::crd::crd_documents;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn crds_directory_matches_the_types() {
    let dir = crds_dir();
    let update = std::env::var_os("NISO_UPDATE_CRDS").is_some();
    let mut stale = Vec::new();
    for (file, yaml) in crd_documents() {
        let path = dir.join(file);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != yaml {
            if update {
                std::fs::create_dir_all(&dir).expect("create crds/");
                std::fs::write(&path, &yaml).expect("write CRD");
            } else {
                stale.push(file);
            }
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is out of date ({stale:?}); regenerate with \
         `NISO_UPDATE_CRDS=1 cargo test -p niso-operator --test crds`"
    );
    let expected: Vec<&str> = crd_documents().into_iter().map(|(file, _)| file).collect();
    let mut extra: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yaml") && !expected.contains(&name.as_str()))
        .collect();
    extra.sort();
    assert!(
        extra.is_empty(),
        "crds/ holds files the types do not generate: {extra:?}"
    );
}

/// Validates every checked-in CRD strictly against the Kubernetes OpenAPI schema of
/// CustomResourceDefinition, and checks the schema's patterns against sample values. Fails
/// (never skips) when Python or kubernetes-validate is missing: `cargo xtask test` prepares a
/// virtual environment with it and names it in `NISO_TEST_PYTHON`.
#[test]
fn crds_pass_strict_offline_validation() {
    let script = r#"
import glob, re, sys
import yaml
import kubernetes_validate

files = sorted(glob.glob(sys.argv[1] + "/*.yaml"))
assert len(files) == 2, files
kinds = {}
for path in files:
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    assert len(docs) == 1, path
    crd = docs[0]
    for version in ("1.33.0", kubernetes_validate.latest_version()):
        kubernetes_validate.validate(crd, version, strict=True)
    kinds[crd["spec"]["names"]["kind"]] = crd

def schema(kind):
    return kinds[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]

def matches(pattern, text):
    return re.search(pattern, text) is not None

scope = schema("ApiKey")["spec"]["properties"]["scope"]["pattern"]
for good in ["pull:*", "pull:*, push:@alice/*,delete:@alice/my-app , admin:@al*",
             "push:@team/tool", "admin:*"]:
    assert matches(scope, good), good
for bad in ["", "pull", "read:*", "pull:@Alice/x", "pull:*,", ",pull:*", "pull:alice/x", "pull:**x"]:
    assert not matches(scope, bad), bad

rns = schema("RegistryNamespace")["spec"]
owner = rns["properties"]["owner"]["pattern"]
assert matches(owner, "alice") and matches(owner, "a-1")
assert not matches(owner, "Alice") and not matches(owner, "-a") and not matches(owner, "a" * 40)
name = rns["properties"]["name"]["pattern"]
assert matches(name, "@team") and not matches(name, "team") and not matches(name, "@Team")
role = rns["properties"]["members"]["items"]["properties"]["role"]
assert sorted(role["enum"]) == ["admin", "member"], role
assert rns["properties"]["members"]["x-kubernetes-list-type"] == "map"
assert sorted(rns["properties"]["deletionPolicy"]["enum"]) == ["Delete", "Retain"]
assert kinds["RegistryNamespace"]["spec"]["scope"] == "Cluster"
assert kinds["RegistryNamespace"]["spec"]["names"]["shortNames"] == ["rns"]
assert kinds["ApiKey"]["spec"]["scope"] == "Namespaced"
print("ok", len(files))
"#;
    let python = std::env::var("NISO_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
    let output = Command::new(&python)
        .arg("-c")
        .arg(script)
        .arg(crds_dir())
        .output()
        .unwrap_or_else(|error| {
            panic!("cannot run {python} ({error}): run the suite with `cargo xtask test`")
        });
    assert!(
        output.status.success(),
        "CRD validation failed (run the suite with `cargo xtask test`, which installs \
         kubernetes-validate):\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok 2"));
}

#[test]
fn the_crd_subcommand_prints_the_checked_in_files() {
    let output = Command::new(env!("CARGO_BIN_EXE_niso-operator"))
        .arg("crd")
        .output()
        .expect("run niso-operator crd");
    assert!(output.status.success());
    let mut expected = String::new();
    for (file, _) in crd_documents() {
        expected.push_str(&std::fs::read_to_string(crds_dir().join(file)).expect("CRD file"));
    }
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
}
