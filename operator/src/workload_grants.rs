//! Keyless access from pods: a RegistryNamespace's grants, mirrored into the registry's
//! identity grants (`niso_registry::identity`), so a pod whose ServiceAccount token is
//! exchanged at `POST /v1/auth/token` gets exactly what the cluster admin granted its
//! Kubernetes namespace (or ServiceAccount) — the same grants that decide what an `ApiKey` may
//! hold (`grant.rs`). The owner of the mirrored grants is the RegistryNamespace's uid, so
//! replacing them on every reconcile, or withdrawing them at deletion, revokes the keys minted
//! from grants that went.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use niso_registry::auth::scope::Action as ScopeAction;
use niso_registry::identity::GrantSpec;

use crate::context::Context;
use crate::crd::{GrantAction, RegistryNamespace};
use crate::error::Result;

/// The identity grants `rns` gives for `registry_namespace`, to tokens of `issuer`.
pub fn identity_grants(
    rns: &RegistryNamespace,
    registry_namespace: &str,
    issuer: &str,
) -> Vec<GrantSpec> {
    let mut grants = Vec::new();
    for grant in &rns.spec.grants {
        let actions: BTreeSet<ScopeAction> = grant
            .actions
            .iter()
            .flat_map(|action| match action {
                GrantAction::Pull => vec![ScopeAction::Pull],
                GrantAction::Push => vec![ScopeAction::Push],
                GrantAction::Delete => vec![ScopeAction::Delete],
                // A minted key never holds admin: it stands for what admin implies here.
                GrantAction::Admin => {
                    vec![ScopeAction::Pull, ScopeAction::Push, ScopeAction::Delete]
                }
            })
            .collect();
        let service_accounts: Vec<Option<String>> = if grant.service_accounts.is_empty() {
            vec![None]
        } else {
            grant.service_accounts.iter().cloned().map(Some).collect()
        };
        for namespace in &grant.namespaces {
            for service_account in &service_accounts {
                grants.push(GrantSpec {
                    issuer: issuer.to_owned(),
                    kubernetes_namespace: Some(namespace.clone()),
                    service_account: service_account.clone(),
                    claims: BTreeMap::new(),
                    registry_namespace: registry_namespace.to_owned(),
                    actions: actions.clone(),
                });
            }
        }
    }
    grants
}

/// Makes the registry's identity grants owned by `rns` equal to its spec.
pub async fn mirror(
    rns: &RegistryNamespace,
    registry_namespace: &str,
    ctx: &Context,
) -> Result<()> {
    let Some(owner) = rns.uid() else {
        return Ok(());
    };
    let grants = identity_grants(rns, registry_namespace, &ctx.settings.cluster_issuer);
    let replaced = ctx
        .registry
        .replace_identity_grants(&ctx.authority, &owner, grants)
        .await?;
    if replaced.revoked_keys > 0 {
        tracing::info!(
            registry_namespace,
            revoked = replaced.revoked_keys,
            "withdrawn grants revoked keyless keys"
        );
    }
    Ok(())
}

/// Removes every identity grant `rns` owns (and the keys minted from them).
pub async fn withdraw(rns: &RegistryNamespace, ctx: &Context) -> Result<()> {
    if let Some(owner) = rns.uid() {
        ctx.registry
            .replace_identity_grants(&ctx.authority, &owner, Vec::new())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DeletionPolicy, GrantSpec as CrdGrant, MembersPolicy, RegistryNamespaceSpec};

    #[test]
    fn each_namespace_and_service_account_is_a_grant_and_admin_is_what_it_implies() {
        let rns = RegistryNamespace::new(
            "team",
            RegistryNamespaceSpec {
                name: None,
                owner: "alice".into(),
                members: vec![],
                members_policy: MembersPolicy::Merge,
                adopt: false,
                grants: vec![
                    CrdGrant {
                        namespaces: vec!["ci".into(), "apps".into()],
                        service_accounts: vec![],
                        actions: vec![GrantAction::Pull],
                    },
                    CrdGrant {
                        namespaces: vec!["release".into()],
                        service_accounts: vec!["publisher".into(), "bot".into()],
                        actions: vec![GrantAction::Admin],
                    },
                ],
                deletion_policy: DeletionPolicy::Retain,
            },
        );
        let grants = identity_grants(&rns, "@team", "https://issuer.example");
        assert_eq!(grants.len(), 4);
        assert!(
            grants
                .iter()
                .all(|grant| grant.registry_namespace == "@team"
                    && grant.issuer == "https://issuer.example"
                    && grant.claims.is_empty())
        );
        let ci = &grants[0];
        assert_eq!(ci.kubernetes_namespace.as_deref(), Some("ci"));
        assert_eq!(ci.service_account, None);
        assert_eq!(ci.actions, BTreeSet::from([ScopeAction::Pull]));
        let publisher = &grants[2];
        assert_eq!(publisher.kubernetes_namespace.as_deref(), Some("release"));
        assert_eq!(publisher.service_account.as_deref(), Some("publisher"));
        assert_eq!(
            publisher.actions,
            BTreeSet::from([ScopeAction::Pull, ScopeAction::Push, ScopeAction::Delete])
        );
    }
}
