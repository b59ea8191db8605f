//! Who in the cluster may hold registry power, and how much: the grant model owned by cluster
//! admins (the `grants` of a cluster-scoped `RegistryNamespace`, and the operator's list of
//! privileged Kubernetes namespaces).
//!
//! Creating an `ApiKey` is an ordinary namespaced permission; it must not turn into registry
//! power the cluster admin never gave. So a key gets what it asks only when every item of its
//! scope is granted to the Kubernetes namespace it lives in:
//!
//! - an item confined to one registry namespace (`push:@team/app`, `pull:@team/*`) needs a
//!   grant of that action (or of `admin`) to the Kubernetes namespace in the `RegistryNamespace`
//!   that manages `@team`;
//! - an item reaching over every registry namespace (`*`, or a prefix such as `@te*` that is not
//!   confined to one namespace), and a key acting as a registry user (`spec.user`), need the
//!   Kubernetes namespace to be privileged (a list in the chart's values).
//!
//! The decision is all or nothing: a key asking for more than it is granted is refused as a
//! whole and none is minted, with a message naming every missing grant.
//!
//! The same question — which Kubernetes namespace, and optionally which ServiceAccount, may do
//! what in which registry namespace — is what keyless in-cluster access will ask later; hence
//! the [`Requester`] carries an optional ServiceAccount. A rule naming ServiceAccounts applies
//! only to requesters that are one of them (an `ApiKey` is none).

use std::collections::BTreeSet;
use std::sync::Arc;

use niso_registry::auth::scope::{Action, Pattern, ScopeSet};

use crate::conditions;
use crate::crd::{GrantAction, RegistryNamespace};
use crate::namespace::registry_name;

impl From<&GrantAction> for Action {
    fn from(action: &GrantAction) -> Action {
        match action {
            GrantAction::Pull => Action::Pull,
            GrantAction::Push => Action::Push,
            GrantAction::Delete => Action::Delete,
            GrantAction::Admin => Action::Admin,
        }
    }
}

/// Who asks: a Kubernetes namespace and, for workload identity, a ServiceAccount in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub namespace: String,
    pub service_account: Option<String>,
}

impl Requester {
    /// An object in `namespace` (an `ApiKey`): no ServiceAccount.
    pub fn namespace(namespace: impl Into<String>) -> Requester {
        Requester {
            namespace: namespace.into(),
            service_account: None,
        }
    }
}

/// One rule of a registry namespace: these Kubernetes namespaces (and, if listed, only these
/// ServiceAccounts in them) may hold these actions on the registry namespace's packages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub actions: Vec<Action>,
}

impl Rule {
    fn applies_to(&self, requester: &Requester) -> bool {
        self.namespaces.contains(&requester.namespace)
            && (self.service_accounts.is_empty()
                || requester
                    .service_account
                    .as_ref()
                    .is_some_and(|account| self.service_accounts.contains(account)))
    }

    fn allows(&self, action: Action) -> bool {
        self.actions.iter().any(|granted| granted.implies(action))
    }
}

/// Every grant in force: the rules of each registry namespace, and the privileged Kubernetes
/// namespaces.
#[derive(Debug, Clone, Default)]
pub struct Grants {
    /// `(registry namespace such as "@team", its rules)`; a namespace may appear more than once
    /// (every entry counts).
    pub namespaces: Vec<(String, Vec<Rule>)>,
    /// Kubernetes namespaces that may hold registry-wide scopes and user-linked keys.
    pub privileged: Vec<String>,
}

/// What a request asks that is not granted, one line per missing grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<String>);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("; "))
    }
}

/// The registry namespace a pattern is confined to (`@team` for `@team/app` and `@team/*`),
/// or None when it may match packages of more than one namespace (`*`, `@te*`, `@team*`).
pub fn confined_to(pattern: &Pattern) -> Option<&str> {
    let text = match pattern {
        Pattern::Any => return None,
        Pattern::Exact(name) => name.as_str(),
        Pattern::Prefix(prefix) => prefix.as_str(),
    };
    // A namespace ends at the first '/': a prefix holding one cannot leave its namespace.
    text.split_once('/').map(|(namespace, _)| namespace)
}

impl Grants {
    /// The grants stated by `resources`, and the operator's privileged namespaces. A resource
    /// that lost the claim on its registry namespace (`Ready=False`, reason `Conflict`) grants
    /// nothing: it does not manage that namespace.
    pub fn from_resources(resources: &[Arc<RegistryNamespace>], privileged: &[String]) -> Grants {
        let namespaces = resources
            .iter()
            .filter(|resource| {
                !resource.status.as_ref().is_some_and(|status| {
                    conditions::find_ready(&status.conditions)
                        .is_some_and(|ready| ready.status == "False" && ready.reason == "Conflict")
                })
            })
            .filter_map(|resource| {
                let name = registry_name(resource).ok()?;
                let rules = resource
                    .spec
                    .grants
                    .iter()
                    .map(|grant| Rule {
                        namespaces: grant.namespaces.clone(),
                        service_accounts: grant.service_accounts.clone(),
                        actions: grant.actions.iter().map(|action| action.into()).collect(),
                    })
                    .collect();
                Some((name, rules))
            })
            .collect();
        Grants {
            namespaces,
            privileged: privileged.to_vec(),
        }
    }

    fn is_privileged(&self, requester: &Requester) -> bool {
        self.privileged.contains(&requester.namespace)
    }

    fn granted(&self, requester: &Requester, namespace: &str, action: Action) -> bool {
        self.namespaces
            .iter()
            .filter(|(name, _)| name == namespace)
            .flat_map(|(_, rules)| rules)
            .any(|rule| rule.applies_to(requester) && rule.allows(action))
    }

    /// Whether `requester` may hold a key with `scope`, acting as `user` when set. Ok only if
    /// every item is granted; otherwise every missing grant is named.
    pub fn authorize(
        &self,
        requester: &Requester,
        scope: &ScopeSet,
        user: Option<&str>,
    ) -> Result<(), Missing> {
        let privileged = self.is_privileged(requester);
        let who = match &requester.service_account {
            Some(account) => format!("ServiceAccount {}/{account}", requester.namespace),
            None => format!("Kubernetes namespace {}", requester.namespace),
        };
        let mut missing: BTreeSet<String> = BTreeSet::new();
        if let Some(user) = user
            && !privileged
        {
            missing.insert(format!(
                "{who} may not hold keys acting as registry user {user} (only the operator's \
                 privileged namespaces may)"
            ));
        }
        // A privileged namespace may hold anything.
        for item in scope.grants().iter().filter(|_| !privileged) {
            match confined_to(&item.pattern) {
                None => {
                    missing.insert(format!(
                        "{who} may not hold the registry-wide scope {item} (only the operator's \
                         privileged namespaces may)"
                    ));
                }
                Some(namespace) if !self.granted(requester, namespace, item.action) => {
                    missing.insert(format!(
                        "{who} has no grant of {} on {namespace} (needed by {item})",
                        item.action
                    ));
                }
                Some(_) => {}
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Missing(missing.into_iter().collect()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(namespaces: &[&str], actions: &[Action]) -> Rule {
        Rule {
            namespaces: namespaces.iter().map(|n| n.to_string()).collect(),
            service_accounts: vec![],
            actions: actions.to_vec(),
        }
    }

    fn grants() -> Grants {
        Grants {
            namespaces: vec![
                (
                    "@team".into(),
                    vec![
                        rule(&["team-a"], &[Action::Pull, Action::Push]),
                        rule(&["team-a-ops"], &[Action::Admin]),
                    ],
                ),
                (
                    "@shared".into(),
                    vec![rule(&["team-a", "team-b"], &[Action::Pull])],
                ),
            ],
            privileged: vec!["niso-system".into()],
        }
    }

    fn check(namespace: &str, scope: &str, user: Option<&str>) -> Result<(), Missing> {
        grants().authorize(
            &Requester::namespace(namespace),
            &scope.parse().unwrap(),
            user,
        )
    }

    #[test]
    fn confinement_of_patterns() {
        let of = |text: &str| confined_to(&text.parse().unwrap()).map(str::to_owned);
        assert_eq!(of("@team/app"), Some("@team".into()));
        assert_eq!(of("@team/*"), Some("@team".into()));
        assert_eq!(of("@team/ap*"), Some("@team".into()));
        assert_eq!(of("*"), None);
        assert_eq!(of("@team*"), None, "also matches @teamster/x");
        assert_eq!(of("@*"), None);
    }

    #[test]
    fn granted_items_pass() {
        assert_eq!(check("team-a", "pull:@team/*,push:@team/app", None), Ok(()));
        assert_eq!(check("team-a", "pull:@shared/lib", None), Ok(()));
        assert_eq!(check("team-b", "pull:@shared/*", None), Ok(()));
        // admin implies every action.
        assert_eq!(
            check("team-a-ops", "delete:@team/*,admin:@team/*", None),
            Ok(())
        );
    }

    #[test]
    fn anything_beyond_the_grant_is_refused_and_named() {
        let Missing(missing) = check("team-a", "pull:@team/*,delete:@team/*", None).unwrap_err();
        assert_eq!(
            missing,
            [
                "Kubernetes namespace team-a has no grant of delete on @team (needed by delete:@team/*)"
            ]
        );
        let Missing(missing) = check("team-b", "push:@team/app,pull:@shared/*", None).unwrap_err();
        assert_eq!(missing.len(), 1, "{missing:?}");
        assert!(missing[0].contains("push on @team"), "{missing:?}");
        // A namespace with no RegistryNamespace at all grants nothing.
        assert!(check("team-a", "pull:@other/*", None).is_err());
        // Nor does a namespace of a similar name.
        assert!(check("team-a2", "pull:@team/*", None).is_err());
    }

    #[test]
    fn registry_wide_scopes_and_users_need_a_privileged_namespace() {
        for scope in ["pull:*", "admin:*", "pull:@team*", "pull:@*"] {
            let Missing(missing) = check("team-a", scope, None).unwrap_err();
            assert!(missing[0].contains("registry-wide"), "{scope}: {missing:?}");
        }
        let Missing(missing) = check("team-a", "pull:@team/*", Some("alice")).unwrap_err();
        assert!(missing[0].contains("registry user alice"), "{missing:?}");
        assert_eq!(check("niso-system", "admin:*", Some("alice")), Ok(()));
        assert_eq!(check("niso-system", "push:@anything/*", None), Ok(()));
    }

    #[test]
    fn rules_naming_service_accounts_apply_only_to_them() {
        let grants = Grants {
            namespaces: vec![(
                "@team".into(),
                vec![Rule {
                    namespaces: vec!["team-a".into()],
                    service_accounts: vec!["deployer".into()],
                    actions: vec![Action::Push],
                }],
            )],
            privileged: vec![],
        };
        let scope: ScopeSet = "push:@team/*".parse().unwrap();
        assert!(
            grants
                .authorize(&Requester::namespace("team-a"), &scope, None)
                .is_err()
        );
        let deployer = Requester {
            namespace: "team-a".into(),
            service_account: Some("deployer".into()),
        };
        assert_eq!(grants.authorize(&deployer, &scope, None), Ok(()));
        let other = Requester {
            service_account: Some("web".into()),
            ..deployer
        };
        let Missing(missing) = grants.authorize(&other, &scope, None).unwrap_err();
        assert!(
            missing[0].starts_with("ServiceAccount team-a/web"),
            "{missing:?}"
        );
    }
}
