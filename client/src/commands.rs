//! Each command: arguments checked locally (a usage error before any request), the API call,
//! the result for people or as JSON.

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use niso_core::names::PackageName;
use reqwest::Method;
use serde_json::{Value, json};

use crate::api::{self, Api, Idempotency};
use crate::cache::ChunkCache;
use crate::cli::{Command, KeysCommand, NamespaceCommand};
use crate::config::{ConfigFile, Credential, Paths, Session};
use crate::error::{CliError, Result};
use crate::output::{Output, human_bytes};
use crate::{install, pull, push};

/// `@ns/pkg`, `@ns/pkg@1.2.0` or `@ns/pkg@stable`: the name and the reference (default
/// `latest`). The name's own leading `@` is not a separator.
pub fn parse_package_reference(text: &str) -> Result<(PackageName, String)> {
    let (name, reference) = match text.get(1..).and_then(|rest| rest.find('@')) {
        Some(at) => (&text[..at + 1], &text[at + 2..]),
        None => (text, "latest"),
    };
    let name = PackageName::parse(name)
        .map_err(|error| CliError::usage(format!("`{name}` is not a package name: {error}")))?;
    if reference.is_empty() {
        return Err(CliError::usage(format!(
            "`{text}`: a version or tag must follow `@`"
        )));
    }
    if niso_core::names::Reference::parse(reference).is_err() {
        return Err(CliError::usage(format!(
            "`{reference}` is neither a version nor a tag"
        )));
    }
    Ok((name, reference.to_owned()))
}

fn parse_name(text: &str) -> Result<PackageName> {
    PackageName::parse(text)
        .map_err(|error| CliError::usage(format!("`{text}` is not a package name: {error}")))
}

fn check_arch(arch: &str) -> Result<()> {
    niso_core::names::Arch::parse(arch)
        .map(drop)
        .map_err(|error| CliError::usage(format!("`{arch}` is not an architecture: {error}")))
}

pub async fn run(
    command: Command,
    paths: Paths,
    registry: Option<&str>,
    output: &Output,
) -> Result<()> {
    if let Command::Pack {
        directory,
        output: file,
    } = &command
    {
        // The only command that needs no registry.
        return pack(directory, file.as_deref(), output);
    }
    let session = Session::resolve(paths, registry)?;
    let api = Api::new(&session.registry, session.token.clone())?;
    match command {
        Command::Pack { .. } => unreachable!("handled above"),
        Command::Login {
            oidc_token_file: Some(file),
            scope,
            ..
        } => login_keyless(&session, &api, &file, scope, output).await,
        Command::Login {
            token_stdin,
            username,
            ..
        } => login(&session, &api, token_stdin, username, output).await,
        Command::Logout => logout(&session, output),
        Command::Whoami => {
            api.require_token()?;
            let me: Value = api.get_json("/v1/auth/me").await?;
            let text = me["username"].as_str().unwrap_or_default().to_owned();
            output.result(&text, me);
            Ok(())
        }
        Command::Push { path, arch, tag } => push_command(&api, &path, &arch, tag, output).await,
        Command::Pull {
            package,
            arch,
            output: file,
        } => {
            let (name, reference) = parse_package_reference(&package)?;
            check_arch(&arch)?;
            let cache = open_cache(&session)?;
            let file = match file {
                Some(file) => file,
                None => {
                    let manifest = pull::chunk_manifest(&api, &name, &reference, &arch).await?;
                    PathBuf::from(format!(
                        "{}-{}-{}.niso",
                        name.short_name(),
                        manifest.version,
                        manifest.arch
                    ))
                }
            };
            let summary = pull::pull(&api, &cache, &name, &reference, &arch, &file, output).await?;
            output.result(
                &format!(
                    "pulled {}@{} ({}) to {}: {}, {} chunks ({} cached, {} fetched: {})",
                    summary.name,
                    summary.version,
                    summary.arch,
                    summary.path.display(),
                    human_bytes(summary.size),
                    summary.chunks,
                    summary.chunks_reused,
                    summary.chunks_downloaded,
                    human_bytes(summary.bytes_downloaded)
                ),
                serde_json::to_value(&summary).expect("summaries serialise"),
            );
            Ok(())
        }
        Command::Install {
            packages,
            arch,
            into,
        } => install_command(&session, &api, &packages, &arch, &into, output).await,
        Command::Search { query } => {
            let path = match &query {
                Some(query) => format!(
                    "/v1/packages?q={}",
                    percent_encoding::utf8_percent_encode(
                        query,
                        percent_encoding::NON_ALPHANUMERIC
                    )
                ),
                None => "/v1/packages".to_owned(),
            };
            let packages: Vec<Value> = api.get_json(&path).await?;
            let text = lines(&packages, |package| {
                format!(
                    "{}\t{}\t{}",
                    text_of(&package["name"]),
                    text_of(&package["latest_version"]),
                    text_of(&package["description"])
                )
            });
            output.result(&text, Value::Array(packages));
            Ok(())
        }
        Command::Versions { name } => {
            let name = parse_name(&name)?;
            let versions: Vec<Value> = api
                .get_json(&format!("{}/versions", api::package_path(&name)))
                .await?;
            let text = lines(&versions, |version| {
                format!(
                    "{}\t{}\t{}\t{}",
                    text_of(&version["version"]),
                    text_of(&version["arch"]),
                    version["size"],
                    text_of(&version["uploaded_at"])
                )
            });
            output.result(&text, Value::Array(versions));
            Ok(())
        }
        Command::Tag { name, tag, version } => {
            let name = parse_name(&name)?;
            match (tag, version) {
                (None, None) => {
                    let tags: Vec<Value> = api
                        .get_json(&format!("{}/tags", api::package_path(&name)))
                        .await?;
                    let text = lines(&tags, |tag| {
                        format!("{}\t{}", text_of(&tag["tag"]), text_of(&tag["version"]))
                    });
                    output.result(&text, Value::Array(tags));
                    Ok(())
                }
                (Some(tag), Some(version)) => {
                    api.require_token()?;
                    push::set_tag(&api, &name, &tag, &version).await?;
                    output.result(
                        &format!("{name}: {tag} -> {version}"),
                        json!({"name": name.as_str(), "tag": tag, "version": version}),
                    );
                    Ok(())
                }
                _ => Err(CliError::usage("give both TAG and VERSION to set a tag")),
            }
        }
        Command::Delete { package, arch } => {
            let (name, version) = parse_package_reference(&package)?;
            if niso_core::names::Version::parse(&version).is_err() {
                return Err(CliError::usage(
                    "delete takes NAME@VERSION with an exact version",
                ));
            }
            check_arch(&arch)?;
            api.require_token()?;
            api.delete(&format!(
                "{}/{}/{}",
                api::package_path(&name),
                api::segment(&version),
                api::segment(&arch)
            ))
            .await?;
            output.result(
                &format!("deleted {name}@{version} ({arch})"),
                json!({"name": name.as_str(), "version": version, "arch": arch}),
            );
            Ok(())
        }
        Command::Keys(command) => keys(&api, command, output).await,
        Command::Namespace(command) => namespaces(&api, command, output).await,
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.chars().filter(|c| !c.is_control()).collect(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn lines(values: &[Value], line: impl Fn(&Value) -> String) -> String {
    values.iter().map(line).collect::<Vec<_>>().join("\n")
}

fn open_cache(session: &Session) -> Result<ChunkCache> {
    ChunkCache::open(&session.paths.cache_dir, session.cache_max_bytes()?).map_err(|error| {
        CliError::io(
            format!(
                "opening the chunk cache in {}",
                session.paths.cache_dir.display()
            ),
            error,
        )
    })
}

/// Reads one line from stdin (without its line ending).
fn read_line(prompt: Option<&str>) -> Result<String> {
    if let Some(prompt) = prompt
        && std::io::stdin().is_terminal()
    {
        eprint!("{prompt}");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| CliError::io("reading stdin", error))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// Where `--oidc-token-file in-pod` reads the projected token.
const IN_POD_TOKEN_FILE: &str = "/var/run/secrets/niso/token";

/// Keyless login: the identity token is exchanged at `POST /v1/auth/token` for a short-lived
/// key, stored like any other (it stops working at its `expires_at`; log in again then).
async fn login_keyless(
    session: &Session,
    api: &Api,
    file: &std::path::Path,
    scope: Option<String>,
    output: &Output,
) -> Result<()> {
    let file = if file == std::path::Path::new("in-pod") {
        std::path::Path::new(IN_POD_TOKEN_FILE)
    } else {
        file
    };
    let identity_token = std::fs::read_to_string(file)
        .map_err(|error| CliError::io(format!("reading {}", file.display()), error))?
        .trim()
        .to_owned();
    if identity_token.is_empty() {
        return Err(CliError::usage(format!("{} is empty", file.display())));
    }
    let mut request = json!({ "token": identity_token });
    if let Some(scope) = &scope {
        request["scope"] = json!(scope);
    }
    let response: Value = api
        .send_json(Method::POST, "/v1/auth/token", &request, Idempotency::Once)
        .await?;
    let token = response["api_key"]
        .as_str()
        .ok_or_else(|| CliError::server("the registry's token answer has no api_key"))?
        .to_owned();
    let mut credentials = session.paths.load_credentials()?;
    credentials.registries.insert(
        session.registry.clone(),
        Credential {
            token,
            username: None,
        },
    );
    session.paths.save_credentials(&credentials)?;
    let mut config = session.paths.load_config()?;
    config.registry = Some(session.registry.clone());
    session.paths.save_config(&config)?;
    let scope = response["scope"].as_str().unwrap_or_default().to_owned();
    let expires_at = response["expires_at"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    output.result(
        &format!(
            "logged in to {} with a key for {scope} until {expires_at}",
            session.registry
        ),
        json!({ "registry": session.registry, "scope": scope, "expires_at": expires_at }),
    );
    Ok(())
}

async fn login(
    session: &Session,
    api: &Api,
    token_stdin: bool,
    username: Option<String>,
    output: &Output,
) -> Result<()> {
    let (token, username) = if token_stdin {
        let token = read_line(None)?.trim().to_owned();
        if token.is_empty() {
            return Err(CliError::usage("no key on stdin"));
        }
        // Checked before it is stored: 401 is a key the registry does not know; 403 is a key
        // not linked to a user (it cannot read /me), which is still a key.
        let checker = Api::new(api.base(), Some(token.clone()))?;
        let response = checker
            .request(Method::GET, "/v1/auth/me")
            .send()
            .await
            .map_err(|error| api::network_error(api.base(), &error))?;
        let username = match response.status() {
            status if status.is_success() => {
                let me: Value = response.json().await.map_err(|error| {
                    CliError::server(format!("the registry's answer is not JSON: {error}"))
                })?;
                me["username"].as_str().map(str::to_owned)
            }
            reqwest::StatusCode::FORBIDDEN => None,
            _ => return Err(api::error_from_response(response).await),
        };
        (token, username)
    } else {
        let username = match username {
            Some(username) => username,
            None => read_line(Some("Username: "))?,
        };
        let password = if std::io::stdin().is_terminal() {
            rpassword::prompt_password("Password: ")
                .map_err(|error| CliError::io("reading the password", error))?
        } else {
            read_line(None)?
        };
        let response: Value = api
            .send_json(
                Method::POST,
                "/v1/auth/login",
                &json!({ "username": username, "password": password }),
                Idempotency::Once,
            )
            .await?;
        let token = response["api_key"]
            .as_str()
            .ok_or_else(|| CliError::server("the registry's login answer has no api_key"))?
            .to_owned();
        (token, Some(username))
    };
    let mut credentials = session.paths.load_credentials()?;
    credentials.registries.insert(
        session.registry.clone(),
        Credential {
            token,
            username: username.clone(),
        },
    );
    session.paths.save_credentials(&credentials)?;
    let mut config = session.paths.load_config()?;
    config.registry = Some(session.registry.clone());
    session.paths.save_config(&config)?;
    let who = username.clone().unwrap_or_else(|| "a key".into());
    output.result(
        &format!("logged in to {} as {who}", session.registry),
        json!({"registry": session.registry, "username": username}),
    );
    Ok(())
}

fn logout(session: &Session, output: &Output) -> Result<()> {
    let mut credentials = session.paths.load_credentials()?;
    let removed = credentials.registries.remove(&session.registry).is_some();
    session.paths.save_credentials(&credentials)?;
    let mut config = session.paths.load_config()?;
    if config.registry.as_deref() == Some(session.registry.as_str()) {
        config = ConfigFile {
            registry: None,
            ..config
        };
        session.paths.save_config(&config)?;
    }
    let text = if removed {
        format!("logged out of {}", session.registry)
    } else {
        format!("no key was stored for {}", session.registry)
    };
    output.result(
        &text,
        json!({"registry": session.registry, "removed": removed}),
    );
    Ok(())
}

fn pack(directory: &Path, file: Option<&Path>, output: &Output) -> Result<()> {
    let into = match file.and_then(Path::parent) {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let archive = push::pack_to_temporary(directory, &into)?;
    let name =
        parse_name(&archive.manifest.name).map_err(|error| CliError::failed(error.message))?;
    let target = match file {
        Some(file) => file.to_path_buf(),
        None => PathBuf::from(format!(
            "{}-{}.niso",
            name.short_name(),
            archive.manifest.version
        )),
    };
    std::fs::rename(&archive.path, &target)
        .map_err(|error| CliError::io(format!("writing {}", target.display()), error))?;
    output.result(
        &format!(
            "packed {}@{} into {} ({}, sha256 {})",
            archive.manifest.name,
            archive.manifest.version,
            target.display(),
            human_bytes(archive.size),
            archive.checksum
        ),
        json!({
            "name": archive.manifest.name,
            "version": archive.manifest.version,
            "path": target,
            "size": archive.size,
            "checksum": archive.checksum,
        }),
    );
    Ok(())
}

async fn push_command(
    api: &Api,
    path: &Path,
    arch: &str,
    tag: Option<String>,
    output: &Output,
) -> Result<()> {
    check_arch(arch)?;
    if let Some(tag) = &tag {
        niso_core::names::Tag::parse(tag)
            .map_err(|error| CliError::usage(format!("`{tag}` is not a tag: {error}")))?;
    }
    api.require_token()?;
    let metadata = std::fs::metadata(path)
        .map_err(|error| CliError::io(format!("reading {}", path.display()), error))?;
    let archive = if metadata.is_dir() {
        output.note(&format!("packing {}", path.display()));
        let directory = std::env::temp_dir();
        tokio::task::block_in_place(|| push::pack_to_temporary(path, &directory))?
    } else {
        tokio::task::block_in_place(|| push::inspect(path))?
    };
    let (published, transfer) = push::publish(api, &archive, arch, output).await?;
    if let Some(tag) = &tag {
        let name = parse_name(&published.name)?;
        push::set_tag(api, &name, tag, &published.version).await?;
    }
    output.result(
        &format!(
            "pushed {}@{} ({}): {} (sent {}), sha256 {}{}",
            published.name,
            published.version,
            published.arch,
            human_bytes(published.size),
            human_bytes(transfer.bytes_sent),
            published.checksum,
            tag.as_ref()
                .map(|tag| format!(", tagged {tag}"))
                .unwrap_or_default()
        ),
        json!({
            "name": published.name,
            "version": published.version,
            "arch": published.arch,
            "size": published.size,
            "checksum": published.checksum,
            "tag": tag,
            "session": transfer.session,
            "chunks": transfer.chunks,
            "chunks_sent": transfer.chunks_sent,
            "bytes_sent": transfer.bytes_sent,
        }),
    );
    Ok(())
}

async fn install_command(
    session: &Session,
    api: &Api,
    packages: &[String],
    arch: &str,
    into: &Path,
    output: &Output,
) -> Result<()> {
    check_arch(arch)?;
    let references = packages
        .iter()
        .map(|package| parse_package_reference(package))
        .collect::<Result<Vec<_>>>()?;
    let cache = open_cache(session)?;
    std::fs::create_dir_all(into)
        .map_err(|error| CliError::io(format!("creating {}", into.display()), error))?;
    let mut installed = Vec::new();
    for (name, reference) in references {
        let download = tempfile::Builder::new()
            .prefix(".niso-download-")
            .tempdir_in(into)
            .map_err(|error| {
                CliError::io(format!("creating a directory in {}", into.display()), error)
            })?;
        let file = download.path().join("package.niso");
        let summary = pull::pull(api, &cache, &name, &reference, arch, &file, output).await?;
        let destination = into.join(name.namespace()).join(name.short_name());
        let result = tokio::task::block_in_place(|| install::install_archive(&file, &destination))?;
        if result.name != name.as_str() {
            return Err(CliError::failed(format!(
                "{name} contains a manifest for {}; not installed",
                result.name
            )));
        }
        output.note(&format!(
            "installed {}@{} into {}",
            summary.name,
            summary.version,
            destination.display()
        ));
        installed.push(json!({
            "name": summary.name,
            "version": summary.version,
            "arch": summary.arch,
            "path": destination,
            "entries": result.entries,
            "chunks_reused": summary.chunks_reused,
            "chunks_downloaded": summary.chunks_downloaded,
        }));
    }
    let text = lines(&installed, |package| {
        format!(
            "{}@{}\t{}",
            text_of(&package["name"]),
            text_of(&package["version"]),
            text_of(&package["path"])
        )
    });
    output.result(&text, Value::Array(installed));
    Ok(())
}

async fn keys(api: &Api, command: KeysCommand, output: &Output) -> Result<()> {
    api.require_token()?;
    match command {
        KeysCommand::Create { name, scope } => {
            let key: Value = api
                .send_json(
                    Method::POST,
                    "/v1/auth/keys",
                    &json!({"name": name, "scope": scope}),
                    Idempotency::Once,
                )
                .await?;
            output.result(&text_of(&key["key"]), key);
        }
        KeysCommand::List => {
            let keys: Vec<Value> = api.get_json("/v1/auth/keys").await?;
            let text = lines(&keys, |key| {
                format!(
                    "{}\t{}\t{}\t{}",
                    key["id"],
                    text_of(&key["name"]),
                    text_of(&key["scope"]),
                    text_of(&key["last_used_at"])
                )
            });
            output.result(&text, Value::Array(keys));
        }
        KeysCommand::Revoke { id } => {
            api.delete(&format!("/v1/auth/keys/{id}")).await?;
            output.result(
                &format!("revoked key {id}"),
                json!({"id": id, "revoked": true}),
            );
        }
    }
    Ok(())
}

async fn namespaces(api: &Api, command: NamespaceCommand, output: &Output) -> Result<()> {
    let check = |name: &str| {
        niso_core::names::validate_namespace(name)
            .map_err(|error| CliError::usage(format!("`{name}` is not a namespace: {error}")))
    };
    match command {
        NamespaceCommand::Create { name } => {
            check(&name)?;
            api.require_token()?;
            let created: Value = api
                .send_json(
                    Method::POST,
                    "/v1/namespaces",
                    &json!({"name": name}),
                    Idempotency::Once,
                )
                .await?;
            output.result(&format!("created {name}"), created);
        }
        NamespaceCommand::Show { name } => {
            check(&name)?;
            let namespace: Value = api
                .get_json(&format!("/v1/namespaces/{}", api::segment(&name)))
                .await?;
            let members = namespace["members"].as_array().cloned().unwrap_or_default();
            let text = format!(
                "{} ({})\n{}",
                text_of(&namespace["name"]),
                text_of(&namespace["ns_type"]),
                lines(&members, |member| format!(
                    "  {}\t{}",
                    text_of(&member["username"]),
                    text_of(&member["role"])
                ))
            );
            output.result(text.trim_end(), namespace);
        }
        NamespaceCommand::AddMember {
            namespace,
            username,
            role,
        } => {
            check(&namespace)?;
            api.require_token()?;
            let added: Value = api
                .send_json(
                    Method::POST,
                    &format!("/v1/namespaces/{}/members", api::segment(&namespace)),
                    &json!({"username": username, "role": role}),
                    Idempotency::Idempotent,
                )
                .await?;
            output.result(&format!("added {username} to {namespace} as {role}"), added);
        }
        NamespaceCommand::RemoveMember {
            namespace,
            username,
        } => {
            check(&namespace)?;
            api.require_token()?;
            api.delete(&format!(
                "/v1/namespaces/{}/members/{}",
                api::segment(&namespace),
                api::segment(&username)
            ))
            .await?;
            output.result(
                &format!("removed {username} from {namespace}"),
                json!({"namespace": namespace, "username": username, "removed": true}),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error::ErrorKind;

    #[test]
    fn references_split_after_the_name() {
        let (name, reference) = parse_package_reference("@acme/tool").unwrap();
        assert_eq!(
            (name.as_str(), reference.as_str()),
            ("@acme/tool", "latest")
        );
        let (name, reference) = parse_package_reference("@acme/tool@1.2.3").unwrap();
        assert_eq!((name.as_str(), reference.as_str()), ("@acme/tool", "1.2.3"));
        let (_, reference) = parse_package_reference("@acme/tool@stable").unwrap();
        assert_eq!(reference, "stable");
        for bad in ["@acme/tool@", "acme", "@acme/tool@../x", ""] {
            let error = parse_package_reference(bad).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Usage, "{bad}");
        }
    }
}
