//! The `RegistryNamespace` controller: makes an org namespace of the registry exist, owned by
//! `spec.owner`, claimed by this resource's uid, with `spec.members` (merged with the members
//! managed through the API, or exactly these with `membersPolicy: Exact`, which also marks it
//! managed so the API refuses member changes); on deletion (finalizer) it gives the namespace
//! back to the API (`Retain`) or removes it if it has no packages (`Delete`).
//!
//! A namespace another resource claims is never touched (`Conflict`); one that exists but no
//! resource claims is taken over only with `spec.adopt` (`AdoptionRequired`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};

use niso_registry::managed::{Claim, MemberChanges};
use niso_registry::names::{validate_namespace, validate_username};
use niso_registry::permissions::Role;

use crate::conditions::{self, RECONCILED};
use crate::context::Context;
use crate::crd::{
    DeletionPolicy, MemberRole, MembersPolicy, RegistryNamespace, RegistryNamespaceStatus,
};
use crate::error::{Error, Result};
use crate::reconciler::{Reconciled, fail, write_status};

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "registrynamespace";

impl Reconciled for RegistryNamespace {
    const CONTROLLER: &'static str = CONTROLLER;

    fn api(&self, ctx: &Context) -> Result<Api<Self>> {
        Ok(Api::all(ctx.client.clone()))
    }

    fn conditions(status: &RegistryNamespaceStatus) -> &[Condition] {
        &status.conditions
    }

    fn failed_status(
        &self,
        previous: &RegistryNamespaceStatus,
        ready: Condition,
    ) -> RegistryNamespaceStatus {
        RegistryNamespaceStatus {
            conditions: vec![ready],
            observed_generation: self.metadata.generation,
            registry_name: registry_name(self)
                .ok()
                .or_else(|| previous.registry_name.clone()),
            member_count: previous.member_count,
        }
    }

    async fn apply(&self, ctx: &Context) -> Result<Action> {
        apply(self, ctx).await
    }

    async fn cleanup(&self, ctx: &Context) -> Result<Action> {
        cleanup(self, ctx).await
    }
}

/// The registry namespace of a resource: `spec.name`, else `@` + metadata.name.
pub fn registry_name(rns: &RegistryNamespace) -> Result<String> {
    let name = match &rns.spec.name {
        Some(name) => name.clone(),
        None => format!("@{}", rns.name_any()),
    };
    validate_namespace(&name).map_err(|error| {
        Error::InvalidSpec(format!(
            "{error}{}",
            if rns.spec.name.is_none() {
                "; set spec.name, since metadata.name is not a valid registry name"
            } else {
                ""
            }
        ))
    })?;
    Ok(name)
}

/// What a successful convergence did.
#[derive(Debug, Default)]
struct Outcome {
    created: bool,
    adopted: bool,
    changes: MemberChanges,
    member_count: i64,
}

async fn apply(rns: &RegistryNamespace, ctx: &Context) -> Result<Action> {
    let previous = rns.status.clone().unwrap_or_default();
    let generation = rns.metadata.generation;
    let name = registry_name(rns);
    let converged = match &name {
        Ok(name) => converge(rns, name, ctx).await,
        Err(error) => Err(Error::InvalidSpec(error.to_string())),
    };
    match converged {
        Ok(outcome) => {
            let name = name.expect("converged, so the name is valid");
            let message = format!(
                "{name} is owned by {} and has {} member{}",
                rns.spec.owner,
                outcome.member_count,
                if outcome.member_count == 1 { "" } else { "s" }
            );
            let status = RegistryNamespaceStatus {
                conditions: vec![conditions::ready(
                    true,
                    RECONCILED,
                    message,
                    generation,
                    &previous.conditions,
                )],
                observed_generation: generation,
                registry_name: Some(name.clone()),
                member_count: Some(outcome.member_count),
            };
            write_status(rns, ctx, &previous, &status).await?;
            publish_outcome(rns, ctx, &name, &outcome).await;
            Ok(Action::requeue(ctx.settings.resync))
        }
        Err(error) => fail(rns, ctx, &previous, error).await,
    }
}

fn check_spec(rns: &RegistryNamespace) -> Result<Vec<(String, Role)>> {
    let spec = &rns.spec;
    validate_username(&spec.owner)
        .map_err(|error| Error::InvalidSpec(format!("owner: {error}")))?;
    let mut desired: Vec<(String, Role)> = Vec::with_capacity(spec.members.len());
    for member in &spec.members {
        validate_username(&member.username)
            .map_err(|error| Error::InvalidSpec(format!("members: {error}")))?;
        if member.username == spec.owner {
            return Err(Error::InvalidSpec(format!(
                "{} is the owner; do not list it in members",
                member.username
            )));
        }
        if desired
            .iter()
            .any(|(username, _)| *username == member.username)
        {
            return Err(Error::InvalidSpec(format!(
                "{} is listed more than once in members",
                member.username
            )));
        }
        let role = match member.role {
            MemberRole::Admin => Role::Admin,
            MemberRole::Member => Role::Member,
        };
        desired.push((member.username.clone(), role));
    }
    Ok(desired)
}

async fn converge(rns: &RegistryNamespace, name: &str, ctx: &Context) -> Result<Outcome> {
    let desired = check_spec(rns)?;
    let registry = &ctx.registry;
    let owner = &rns.spec.owner;
    // Every user must exist before anything changes: no partial convergence.
    let mut usernames: Vec<&str> = vec![owner.as_str()];
    usernames.extend(desired.iter().map(|(username, _)| username.as_str()));
    let missing = registry.missing_users(&usernames).await?;
    if !missing.is_empty() {
        return Err(Error::UserNotFound(format!(
            "no registry user {}; retrying until {} registered",
            missing.join(", "),
            if missing.len() == 1 {
                "it is"
            } else {
                "they are"
            }
        )));
    }
    let uid = rns
        .uid()
        .ok_or_else(|| Error::InvalidSpec("the RegistryNamespace has no uid yet".into()))?;
    let mut outcome = Outcome::default();
    match registry.namespace_view(name).await {
        Ok(view) => {
            if view.ns_type != "org" {
                return Err(Error::NameTaken(format!(
                    "{name} is a user's own namespace, not an organisation"
                )));
            }
            // Another resource's namespace is not looked at any further, let alone changed.
            if let Some(claimant) = registry.namespace_claimant(name).await?
                && claimant != uid
            {
                return Err(conflict(name, &claimant));
            }
            let current_owner = view
                .members
                .iter()
                .find(|member| member.role == Role::Owner.as_str())
                .map(|member| member.username.clone())
                .unwrap_or_default();
            if current_owner != *owner {
                return Err(Error::OwnerMismatch(format!(
                    "{name} exists and is owned by {current_owner}, not {owner}"
                )));
            }
        }
        Err(niso_registry::Error::NotFound(_)) => {
            let owner_user = match registry
                .user_permit_by_authority(&ctx.authority, owner)
                .await
            {
                Ok(permit) => permit,
                Err(niso_registry::Error::NotFound(_)) => {
                    return Err(Error::UserNotFound(format!("no registry user {owner}")));
                }
                Err(error) => return Err(error.into()),
            };
            match registry.create_org(&owner_user, name).await {
                Ok(_) => outcome.created = true,
                Err(niso_registry::Error::Conflict(message)) => {
                    return Err(Error::NameTaken(message));
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(error) => return Err(error.into()),
    }
    // What this resource created is its own; anything else needs `adopt` (or a claim made
    // before: then this is a no-op).
    let adopt = outcome.created || rns.spec.adopt;
    match registry
        .claim_namespace(&ctx.authority, name, &uid, adopt)
        .await?
    {
        Claim::Claimed { adopted } => outcome.adopted = adopted && !outcome.created,
        Claim::ClaimedByOther(claimant) => return Err(conflict(name, &claimant)),
        Claim::AdoptionRequired => {
            return Err(Error::AdoptionRequired(format!(
                "{name} exists in the registry and no resource manages it; set spec.adopt: true \
                 to take it over (its members are then {})",
                match rns.spec.members_policy {
                    MembersPolicy::Merge => "kept, with spec.members added",
                    MembersPolicy::Exact => "replaced by spec.members",
                }
            )));
        }
    }
    let exact = rns.spec.members_policy == MembersPolicy::Exact;
    registry
        .set_namespace_managed(&ctx.authority, name, exact)
        .await?;
    outcome.changes = match registry
        .converge_members(&ctx.authority, name, &desired, exact)
        .await
    {
        Ok(changes) => changes,
        Err(niso_registry::Error::NotFound(message)) => return Err(Error::UserNotFound(message)),
        Err(niso_registry::Error::Invalid(message)) => return Err(Error::InvalidSpec(message)),
        Err(error) => return Err(error.into()),
    };
    crate::workload_grants::mirror(rns, name, ctx).await?;
    outcome.member_count = if exact {
        desired.len() as i64 + 1
    } else {
        registry.namespace_view(name).await?.members.len() as i64
    };
    Ok(outcome)
}

fn conflict(name: &str, claimant: &str) -> Error {
    Error::Conflict(format!(
        "{name} is managed by another RegistryNamespace (uid {claimant}); this one changes nothing"
    ))
}

async fn publish_outcome(rns: &RegistryNamespace, ctx: &Context, name: &str, outcome: &Outcome) {
    let reference = rns.object_ref(&());
    if outcome.created {
        ctx.event(
            &reference,
            EventType::Normal,
            "Created",
            "Create",
            format!("created {name}, owned by {}", rns.spec.owner),
        )
        .await;
    } else if outcome.adopted {
        ctx.event(
            &reference,
            EventType::Normal,
            "Adopted",
            "Adopt",
            format!("{name} is now managed by this resource"),
        )
        .await;
    }
    let changes = &outcome.changes;
    if !changes.is_empty() {
        let mut parts = Vec::new();
        for (label, names) in [
            ("added", &changes.added),
            ("role changed", &changes.updated),
            ("removed", &changes.removed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{label}: {}", names.join(", ")));
            }
        }
        ctx.event(
            &reference,
            EventType::Normal,
            "MembersChanged",
            "UpdateMembers",
            format!("{name}: {}", parts.join("; ")),
        )
        .await;
    }
}

async fn cleanup(rns: &RegistryNamespace, ctx: &Context) -> Result<Action> {
    // Nothing was ever made for an invalid name.
    let Ok(name) = registry_name(rns) else {
        return Ok(Action::await_change());
    };
    let (registry, authority) = (&ctx.registry, &ctx.authority);
    // Only what this resource claims is released or deleted: never another's namespace, a
    // user's, or one that was never taken over.
    let Some(uid) = rns.uid() else {
        return Ok(Action::await_change());
    };
    if registry.namespace_claimant(&name).await?.as_deref() != Some(uid.as_str()) {
        return Ok(Action::await_change());
    }
    // Keys minted from this resource's grants go with it, whatever the deletion policy.
    crate::workload_grants::withdraw(rns, ctx).await?;
    let reference = rns.object_ref(&());
    match rns.spec.deletion_policy {
        DeletionPolicy::Retain => {
            registry.release_namespace(authority, &name, &uid).await?;
            ctx.event(
                &reference,
                EventType::Normal,
                "Released",
                "Release",
                format!("{name} is kept in the registry and managed through the API again"),
            )
            .await;
        }
        DeletionPolicy::Delete => match registry
            .delete_empty_namespace(authority, &name, &uid)
            .await
        {
            Ok(_) => {
                ctx.event(
                    &reference,
                    EventType::Normal,
                    "Deleted",
                    "Delete",
                    format!("deleted {name} from the registry"),
                )
                .await;
            }
            Err(niso_registry::Error::Conflict(message)) => {
                let error = Error::HasPackages(format!(
                    "{message}, or set deletionPolicy: Retain to keep it"
                ));
                let previous = rns.status.clone().unwrap_or_default();
                return fail(rns, ctx, &previous, error).await;
            }
            Err(error) => return Err(error.into()),
        },
    }
    Ok(Action::await_change())
}
