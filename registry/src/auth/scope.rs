//! API key scopes (DESIGN.md §5): parsing and printing `action:pattern` lists, deciding whether
//! a scope allows an action on a package, and whether one scope covers another (a key may only
//! mint keys whose scope its own covers).
//!
//! A scope only ever restricts. Whether the key's user is a member of the namespace is decided
//! elsewhere; this module answers only "does the scope say yes".

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::names;

/// The scope of the keys handed out by register and login.
pub const DEFAULT_USER_SCOPE: &str = "pull:*,push:*,delete:*";

/// A scope string the registry refuses (HTTP 400). The message is meant for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("{0}")]
    Invalid(String),
}

/// What a grant permits. The declaration order is the canonical print order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Pull,
    Push,
    Delete,
    /// Implies every other action, and is the only one that allows chunk upload.
    Admin,
}

impl Action {
    pub const ALL: [Action; 4] = [Action::Pull, Action::Push, Action::Delete, Action::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Push => "push",
            Action::Delete => "delete",
            Action::Admin => "admin",
        }
    }

    /// Whether a grant of `self` permits `action`: the same action, or anything for `admin`.
    pub fn implies(self, action: Action) -> bool {
        self == action || self == Action::Admin
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Action {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| {
                ScopeError::Invalid(format!(
                    "unknown scope action {}: expected pull, push, delete or admin",
                    names::shown(s)
                ))
            })
    }
}

/// Which packages a grant applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    /// `*`: every package.
    Any,
    /// A full package name, `@ns/pkg`.
    Exact(String),
    /// The text before a trailing `*`, e.g. `@alice/` for `@alice/*`.
    Prefix(String),
}

impl Pattern {
    /// Whether `package` falls under this pattern. `@alice/*` keeps the `/` in its prefix, which
    /// is what keeps it from matching `@alicebob/x`.
    pub fn matches(&self, package: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(name) => name == package,
            Pattern::Prefix(prefix) => package.starts_with(prefix.as_str()),
        }
    }

    /// Whether every package `other` matches is also matched by `self`, judged on the patterns
    /// alone. Conservative: a `Prefix` never includes `Any`, even `@*`.
    pub fn includes(&self, other: &Pattern) -> bool {
        match (self, other) {
            (Pattern::Any, _) => true,
            (Pattern::Prefix(p), Pattern::Exact(n) | Pattern::Prefix(n)) => {
                n.starts_with(p.as_str())
            }
            (Pattern::Exact(a), Pattern::Exact(b)) => a == b,
            _ => false,
        }
    }

    /// Used for the canonical order: `*`, then prefixes, then exact names, each alphabetically.
    fn sort_key(&self) -> (u8, &str) {
        match self {
            Pattern::Any => (0, ""),
            Pattern::Prefix(p) => (1, p),
            Pattern::Exact(n) => (2, n),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(name) => f.write_str(name),
            Pattern::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl FromStr for Pattern {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(prefix) = s.strip_suffix('*') {
            if prefix.starts_with('@') && prefix.chars().all(names::is_package_name_char) {
                return Ok(Pattern::Prefix(prefix.to_owned()));
            }
        } else if names::PackageName::parse(s).is_ok() {
            return Ok(Pattern::Exact(s.to_owned()));
        }
        Err(ScopeError::Invalid(format!(
            "invalid scope pattern {}: expected '*', a package name such as @alice/my-app, \
             or a prefix ending in a single '*' such as @alice/*",
            names::shown(s)
        )))
    }
}

/// One `action:pattern` item of a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub action: Action,
    pub pattern: Pattern,
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.action, self.pattern)
    }
}

impl FromStr for Grant {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((action, pattern)) = s.split_once(':') else {
            return Err(ScopeError::Invalid(format!(
                "invalid scope item {}: expected action:pattern, e.g. pull:@alice/*",
                names::shown(s)
            )));
        };
        let in_item = |ScopeError::Invalid(m)| {
            ScopeError::Invalid(format!("{m} (in scope item {})", names::shown(s)))
        };
        Ok(Grant {
            action: action.parse().map_err(in_item)?,
            pattern: pattern.parse().map_err(in_item)?,
        })
    }
}

/// A parsed, non-empty scope.
///
/// Grants are kept in canonical order (by action, then `*`, prefixes, exact names) without
/// duplicates, so two scopes that say the same thing in a different order compare equal and
/// print the same; every check uses them. The scope as its author wrote it (items in their
/// order, blanks around them dropped) is kept too: it is what a key's owner sees again.
#[derive(Debug, Clone)]
pub struct ScopeSet {
    grants: Vec<Grant>,
    written: String,
}

// Equality is meaning: the order an author wrote the items in does not matter.
impl PartialEq for ScopeSet {
    fn eq(&self, other: &ScopeSet) -> bool {
        self.grants == other.grants
    }
}

impl Eq for ScopeSet {}

impl ScopeSet {
    /// Builds a scope from grants, putting them in canonical order. Fails only when empty.
    pub fn from_grants(mut grants: Vec<Grant>) -> Result<ScopeSet, ScopeError> {
        if grants.is_empty() {
            return Err(empty_scope());
        }
        let written = grants
            .iter()
            .map(Grant::to_string)
            .collect::<Vec<_>>()
            .join(",");
        grants.sort_by(|a, b| {
            a.action
                .cmp(&b.action)
                .then_with(|| a.pattern.sort_key().cmp(&b.pattern.sort_key()))
        });
        grants.dedup();
        Ok(ScopeSet { grants, written })
    }

    /// The scope in its author's order (see the type's documentation); it parses back to an
    /// equal scope.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// Whether the scope allows `action` on `package` (a full `@ns/pkg` name).
    pub fn allows(&self, action: Action, package: &str) -> bool {
        self.grants
            .iter()
            .any(|g| g.action.implies(action) && g.pattern.matches(package))
    }

    /// Whether the scope allows `action` on every package (a `*` grant of it or of `admin`).
    pub fn allows_everywhere(&self, action: Action) -> bool {
        self.covers_pattern(action, &Pattern::Any)
    }

    /// Whether a single grant of `action` (or `admin`) includes everything `pattern` matches.
    /// Grants are not combined: `pull:@a/b*,pull:@a/c*` does not cover `pull:@a/*`.
    pub fn covers_pattern(&self, action: Action, pattern: &Pattern) -> bool {
        self.grants
            .iter()
            .any(|g| g.action.implies(action) && g.pattern.includes(pattern))
    }

    /// Whether every grant of `other` is covered by this scope, i.e. a key with this scope may
    /// mint a key with scope `other`. An `admin:X` grant in `other` needs `admin` covering `X`.
    pub fn covers(&self, other: &ScopeSet) -> bool {
        other
            .grants
            .iter()
            .all(|g| self.covers_pattern(g.action, &g.pattern))
    }

    /// Whether any grant is `admin`, whatever its pattern.
    pub fn has_admin(&self) -> bool {
        self.grants.iter().any(|g| g.action == Action::Admin)
    }

    pub fn grants(&self) -> &[Grant] {
        &self.grants
    }
}

fn empty_scope() -> ScopeError {
    ScopeError::Invalid(
        "invalid scope: it is empty; expected a comma-separated list of action:pattern, \
         e.g. pull:*,push:@alice/*"
            .to_owned(),
    )
}

impl FromStr for ScopeSet {
    type Err = ScopeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(empty_scope());
        }
        let grants = s
            .split(',')
            .map(|item| {
                let item = item.trim();
                if item.is_empty() {
                    Err(ScopeError::Invalid(
                        "invalid scope: empty item (a comma at the start or end, or two in a row)"
                            .to_owned(),
                    ))
                } else {
                    item.parse::<Grant>()
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        ScopeSet::from_grants(grants)
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, grant) in self.grants.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{grant}")?;
        }
        Ok(())
    }
}

// A scope travels as its canonical string in JSON and in the operator's custom resources.
impl Serialize for ScopeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ScopeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(s: &str) -> ScopeSet {
        s.parse()
            .unwrap_or_else(|e| panic!("{s:?} should parse: {e}"))
    }

    fn error(s: &str) -> String {
        match s.parse::<ScopeSet>() {
            Err(ScopeError::Invalid(m)) => m,
            Ok(set) => panic!("{s:?} should be refused, parsed as {set}"),
        }
    }

    #[test]
    fn parses_good_scopes() {
        let s = scope("pull:*, push:@alice/*,delete:@alice/my-app , admin:@al*");
        assert_eq!(
            s.grants(),
            &[
                Grant {
                    action: Action::Pull,
                    pattern: Pattern::Any
                },
                Grant {
                    action: Action::Push,
                    pattern: Pattern::Prefix("@alice/".into())
                },
                Grant {
                    action: Action::Delete,
                    pattern: Pattern::Exact("@alice/my-app".into())
                },
                Grant {
                    action: Action::Admin,
                    pattern: Pattern::Prefix("@al".into())
                },
            ]
        );
        for ok in [
            "pull:*",
            "admin:*",
            "push:@alice/my-*",
            "pull:@*",
            "pull:@alice/a.b_c-d",
            "push:@alice/my.*",
            DEFAULT_USER_SCOPE,
        ] {
            scope(ok);
        }
    }

    #[test]
    fn refuses_bad_scopes() {
        for bad in [
            "",
            "   ",
            ",",
            "pull:*,",
            ",pull:*",
            "pull:*,,push:*",
            "pull",
            "pull:",
            ":*",
            "read:*",
            "PULL:*",
            "Pull:*",
            "pull :*",
            "pull: *",
            "pull:**",
            "pull:*@alice",
            "pull:@alice/*/*",
            "pull:@al*ce/*",
            "pull:alice/*",
            "pull:alice",
            "pull:@alice",
            "pull:@Alice/*",
            "pull:@alice/App",
            "pull:@alice/a b",
            "pull:@alice/é*",
            "pull:/*",
            "pull:@alice/x:y",
            "pull:*;push:*",
        ] {
            error(bad);
        }
        assert!(error("").contains("empty"));
        assert!(error("pull:*,,push:*").contains("empty item"));
        let m = error("read:*");
        assert!(
            m.contains("\"read\"") && m.contains("pull, push, delete or admin"),
            "{m}"
        );
        let m = error("pull:@Alice/*");
        assert!(m.contains("\"@Alice/*\""), "{m}");
        assert!(error("pull").contains("action:pattern"));
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        for s in [
            "pull:*",
            "pull:*,push:*,delete:*",
            "pull:*,push:@alice/*,push:@bob/app,admin:@al*",
            "delete:@a/b,pull:@a/*,push:*,pull:*,pull:*",
        ] {
            let parsed = scope(s);
            let shown = parsed.to_string();
            assert_eq!(scope(&shown), parsed, "{s} -> {shown}");
            assert_eq!(scope(&shown).to_string(), shown);
        }
        assert_eq!(scope(DEFAULT_USER_SCOPE).to_string(), DEFAULT_USER_SCOPE);
        assert_eq!(
            scope(" admin:* , pull:@a/x,pull:@a/*,pull:*, pull:* ").to_string(),
            "pull:*,pull:@a/*,pull:@a/x,admin:*"
        );
        assert_eq!(scope("push:*,pull:*"), scope("pull:*,push:*"));
    }

    #[test]
    fn the_written_order_is_kept_beside_the_canonical_one() {
        let s = scope(" push:@alice/* , pull:*,delete:@alice/app");
        assert_eq!(s.as_written(), "push:@alice/*,pull:*,delete:@alice/app");
        assert_eq!(s.to_string(), "pull:*,push:@alice/*,delete:@alice/app");
        assert_eq!(scope(s.as_written()), s);
        assert_eq!(scope(s.as_written()).as_written(), s.as_written());
        // Duplicates are what the author wrote; they change nothing the scope allows.
        let twice = scope("pull:*,pull:*");
        assert_eq!(twice.as_written(), "pull:*,pull:*");
        assert_eq!(twice, scope("pull:*"));
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let s = scope("push:@alice/*,pull:*");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"pull:*,push:@alice/*\""
        );
        let back: ScopeSet = serde_json::from_str("\"pull:*,push:@alice/*\"").unwrap();
        assert_eq!(back, s);
        assert!(serde_json::from_str::<ScopeSet>("\"read:*\"").is_err());
    }

    #[test]
    fn prefix_keeps_the_slash() {
        let s = scope("push:@alice/*");
        assert!(s.allows(Action::Push, "@alice/x"));
        assert!(!s.allows(Action::Push, "@alicebob/x"));
        assert!(!s.allows(Action::Pull, "@alice/x"));
        let loose = scope("push:@alice*");
        assert!(loose.allows(Action::Push, "@alicebob/x"));
        let partial = scope("pull:@alice/my-*");
        assert!(partial.allows(Action::Pull, "@alice/my-app"));
        assert!(!partial.allows(Action::Pull, "@alice/other"));
    }

    #[test]
    fn exact_and_any_patterns() {
        let s = scope("delete:@alice/app,pull:*");
        assert!(s.allows(Action::Delete, "@alice/app"));
        assert!(!s.allows(Action::Delete, "@alice/app2"));
        assert!(!s.allows(Action::Delete, "@alice/ap"));
        assert!(s.allows(Action::Pull, "@anyone/anything"));
        assert!(!s.allows(Action::Push, "@alice/app"));
    }

    #[test]
    fn admin_implies_every_action() {
        let s = scope("admin:@alice/*");
        for action in Action::ALL {
            assert!(s.allows(action, "@alice/x"), "{action}");
            assert!(!s.allows(action, "@bob/x"), "{action}");
        }
        let push = scope("push:*");
        assert!(!push.allows(Action::Admin, "@alice/x"));
        assert!(s.has_admin());
        assert!(!scope(DEFAULT_USER_SCOPE).has_admin());
    }

    #[test]
    fn allows_everywhere() {
        let s = scope("pull:*,push:@alice/*");
        assert!(s.allows_everywhere(Action::Pull));
        assert!(!s.allows_everywhere(Action::Push));
        assert!(!s.allows_everywhere(Action::Admin));
        let admin = scope("admin:*");
        for action in Action::ALL {
            assert!(admin.allows_everywhere(action), "{action}");
        }
        // "@*" matches every valid name but is not "*": stay conservative.
        assert!(!scope("pull:@*").allows_everywhere(Action::Pull));
    }

    #[test]
    fn covers_narrower_scopes() {
        let user = scope(DEFAULT_USER_SCOPE);
        assert!(user.covers(&user));
        assert!(user.covers(&scope("pull:*")));
        assert!(user.covers(&scope("push:@alice/*,pull:@bob/app")));
        assert!(user.covers(&scope("delete:@alice/my-*")));

        let ci = scope("push:@alice/*,pull:@alice/*");
        assert!(ci.covers(&scope("push:@alice/app")));
        assert!(ci.covers(&scope("push:@alice/my-*")));
        assert!(ci.covers(&scope("pull:@alice/*")));
    }

    #[test]
    fn refuses_wider_scopes() {
        let ci = scope("push:@alice/*,pull:@alice/*");
        assert!(!ci.covers(&scope("push:*")));
        assert!(!ci.covers(&scope("push:@al*")));
        assert!(!ci.covers(&scope("push:@alicebob/x")));
        assert!(!ci.covers(&scope("delete:@alice/app")));
        assert!(!ci.covers(&scope("push:@alice/app,delete:@alice/app")));

        let exact = scope("push:@alice/app");
        assert!(exact.covers(&scope("push:@alice/app")));
        assert!(!exact.covers(&scope("push:@alice/app*")));
        assert!(!exact.covers(&scope("push:@alice/ap")));
        assert!(!scope("pull:@*").covers(&scope("pull:*")));
    }

    #[test]
    fn admin_is_needed_to_grant_admin() {
        let user = scope(DEFAULT_USER_SCOPE);
        assert!(!user.covers(&scope("admin:@alice/*")));
        assert!(!scope("pull:*,push:*,delete:*").covers(&scope("admin:@alice/app")));

        let admin = scope("admin:@alice/*");
        assert!(admin.covers(&scope("admin:@alice/app")));
        assert!(admin.covers(&scope("pull:@alice/*,push:@alice/x,delete:@alice/y*")));
        assert!(!admin.covers(&scope("admin:*")));
        assert!(!admin.covers(&scope("pull:@bob/x")));
        assert!(scope("admin:*").covers(&scope("admin:*,pull:*")));
    }

    #[test]
    fn prefix_in_prefix() {
        let s = scope("push:@alice/*");
        assert!(s.covers_pattern(Action::Push, &Pattern::Prefix("@alice/my-".into())));
        assert!(s.covers_pattern(Action::Push, &Pattern::Prefix("@alice/".into())));
        assert!(!s.covers_pattern(Action::Push, &Pattern::Prefix("@alice".into())));
        assert!(!s.covers_pattern(Action::Push, &Pattern::Any));
        let wide = scope("push:@al*");
        assert!(wide.covers(&scope("push:@alice/*")));
        assert!(wide.covers(&scope("push:@alicebob/x")));
        assert!(!scope("push:@alice/*").covers(&wide));
    }

    #[test]
    fn grants_are_not_combined() {
        let split = scope("pull:@a/b*,pull:@a/c*");
        assert!(!split.covers(&scope("pull:@a/*")));
        assert!(split.covers(&scope("pull:@a/b*,pull:@a/cd")));
    }
}
