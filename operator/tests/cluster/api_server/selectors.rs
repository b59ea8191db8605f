//! Label selectors as the API server reads them from `?labelSelector=`: `key`, `!key`,
//! `key=value`, `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, joined by commas
//! (AND). Like Kubernetes, `!=` and `notin` also match objects without the label. Field
//! selectors: only `metadata.name` and `metadata.namespace` with `=`/`==`/`!=` (all kube's
//! watchers ask for); anything else is refused.

use std::collections::BTreeSet;

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Exists(String),
    Absent(String),
    Equals(String, String),
    NotEquals(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Requirement>);

/// Splits on commas outside parentheses.
fn terms(text: &str) -> Result<Vec<&str>, String> {
    let mut terms = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (index, character) in text.char_indices() {
        match character {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return Err(format!("unbalanced parentheses in {text:?}"));
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in {text:?}"));
    }
    terms.push(&text[start..]);
    Ok(terms)
}

fn valid_key(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key.len() <= 316
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'));
    if ok {
        Ok(key.to_owned())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn valid_value(value: &str) -> Result<String, String> {
    let ok = value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn value_set(text: &str) -> Result<BTreeSet<String>, String> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .ok_or_else(|| format!("expected (values), got {text:?}"))?;
    inner
        .split(',')
        .map(|value| valid_value(value.trim()))
        .collect()
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, String> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(requirements));
        }
        for term in terms(text)? {
            let term = term.trim();
            let requirement = if let Some(key) = term.strip_prefix('!') {
                Requirement::Absent(valid_key(key.trim())?)
            } else if let Some((key, value)) = term.split_once("!=") {
                Requirement::NotEquals(valid_key(key.trim())?, valid_value(value.trim())?)
            } else if let Some((key, value)) = term.split_once("==") {
                Requirement::Equals(valid_key(key.trim())?, valid_value(value.trim())?)
            } else if let Some((key, value)) = term.split_once('=') {
                Requirement::Equals(valid_key(key.trim())?, valid_value(value.trim())?)
            } else if let Some((key, values)) = term.split_once(" notin ") {
                Requirement::NotIn(valid_key(key.trim())?, value_set(values)?)
            } else if let Some((key, values)) = term.split_once(" in ") {
                Requirement::In(valid_key(key.trim())?, value_set(values)?)
            } else {
                Requirement::Exists(valid_key(term)?)
            };
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object (its `metadata.labels`) satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let label = |key: &str| labels.get(key).and_then(Value::as_str);
        self.0.iter().all(|requirement| match requirement {
            Requirement::Exists(key) => label(key).is_some(),
            Requirement::Absent(key) => label(key).is_none(),
            Requirement::Equals(key, value) => label(key) == Some(value.as_str()),
            Requirement::NotEquals(key, value) => label(key) != Some(value.as_str()),
            Requirement::In(key, values) => label(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => !label(key).is_some_and(|v| values.contains(v)),
        })
    }
}

/// A field selector over `metadata.name` / `metadata.namespace`.
#[derive(Debug, Clone, Default)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, String> {
        let mut requirements = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, equal, value) = if let Some((f, v)) = term.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, true, v)
            } else {
                return Err(format!("invalid field selector {term:?}"));
            };
            if !matches!(field, "metadata.name" | "metadata.namespace") {
                return Err(format!("field label not supported: {field}"));
            }
            requirements.push((field.to_owned(), equal, value.to_owned()));
        }
        Ok(FieldSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(field, equal, value)| {
            let actual = match field.as_str() {
                "metadata.name" => object["metadata"]["name"].as_str(),
                _ => object["metadata"]["namespace"].as_str(),
            }
            .unwrap_or_default();
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn every_operator() {
        let object = labelled(json!({"app": "niso", "tier": "web", "a.b/c": "d"}));
        let bare = labelled(json!({}));
        let cases = [
            ("", true, true),
            ("app", true, false),
            ("!app", false, true),
            ("app=niso", true, false),
            ("app==niso", true, false),
            ("app=other", false, false),
            ("app!=other", true, true),
            ("app!=niso", false, true),
            ("tier in (web, db)", true, false),
            ("tier in (db)", false, false),
            ("tier notin (db)", true, true),
            ("tier notin (web,db)", false, true),
            ("app=niso,tier in (web),a.b/c=d", true, false),
            ("app=niso,!tier", false, false),
        ];
        for (text, on_object, on_bare) in cases {
            let selector = LabelSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(selector.matches(&object), on_object, "{text} on labelled");
            assert_eq!(selector.matches(&bare), on_bare, "{text} on bare");
        }
    }

    #[test]
    fn malformed_selectors_are_refused() {
        for text in [
            "a in (b", "a in b)", "=x", "a=b c", "a in ()x", "a=(b)", "k!",
        ] {
            assert!(LabelSelector::parse(text).is_err(), "{text:?} was accepted");
        }
        assert!(FieldSelector::parse("spec.x=1").is_err());
    }

    #[test]
    fn field_selectors_on_name_and_namespace() {
        let object = json!({"metadata": {"name": "a", "namespace": "n"}});
        assert!(
            FieldSelector::parse("metadata.name=a")
                .unwrap()
                .matches(&object)
        );
        assert!(
            !FieldSelector::parse("metadata.name!=a")
                .unwrap()
                .matches(&object)
        );
        assert!(
            FieldSelector::parse("metadata.namespace==n,metadata.name!=b")
                .unwrap()
                .matches(&object)
        );
    }
}
