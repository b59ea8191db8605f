//! The text of a package search (`GET /v1/packages?q=`) turned into what the queries bind: a
//! `LIKE` pattern with the wildcards escaped, and on SQLite an FTS5 trigram phrase. Both are
//! values bound to the statement, never SQL text.

use sea_orm::sea_query::LikeExpr;

use crate::names::is_package_name_char;

/// The fewest characters the trigram indexes can look up; shorter queries scan the names.
pub const TRIGRAM: usize = 3;

/// A search query, lowercased (names are lowercase, so the match ignores case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameSearch(String);

impl NameSearch {
    /// None when no package name can contain `query`: a character outside the names' alphabet
    /// (`%`, `\`, a quote, a control or non-ASCII character) rules every name out, so such a
    /// query needs no database work, and nothing else reaches the FTS5 query parser.
    pub fn new(query: &str) -> Option<NameSearch> {
        let lowered = query.to_lowercase();
        lowered
            .chars()
            .all(is_package_name_char)
            .then_some(NameSearch(lowered))
    }

    /// The lowercased query: names contain it or not, with no wildcard in it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `%query%` with `\`, `%` and `_` escaped, so they match only themselves.
    pub fn like_pattern(&self) -> LikeExpr {
        LikeExpr::new(self.like_text()).escape('\\')
    }

    /// The text of [`NameSearch::like_pattern`], for a statement that says `ESCAPE '\'`.
    pub fn like_text(&self) -> String {
        let mut escaped = String::with_capacity(self.0.len() + 2);
        escaped.push('%');
        for c in self.0.chars() {
            if matches!(c, '\\' | '%' | '_') {
                escaped.push('\\');
            }
            escaped.push(c);
        }
        escaped.push('%');
        escaped
    }

    /// The FTS5 phrase that finds names containing the query (a phrase of trigrams is a
    /// substring), or None when the query is too short to hold a trigram. The alphabet has no
    /// `"`, so quoting cannot be broken out of.
    pub fn trigram_phrase(&self) -> Option<String> {
        (self.0.chars().count() >= TRIGRAM).then(|| format!("\"{}\"", self.0))
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::sea_query::{Expr, ExprTrait, Query, SqliteQueryBuilder};

    use super::*;

    #[test]
    fn lowercases_and_refuses_what_no_name_contains() {
        assert_eq!(NameSearch::new("My_App"), Some(NameSearch("my_app".into())));
        assert_eq!(
            NameSearch::new("@ns/a.b-c"),
            Some(NameSearch("@ns/a.b-c".into()))
        );
        for impossible in ["%", "a%b", "\\", "a\"b", "a b", "é", "\0", "a*"] {
            assert_eq!(NameSearch::new(impossible), None, "{impossible:?}");
        }
    }

    #[test]
    fn like_pattern_escapes_wildcards() {
        let pattern = NameSearch::new("my_app").unwrap().like_pattern();
        let sql = Query::select()
            .expr(Expr::val("x").like(pattern))
            .to_string(SqliteQueryBuilder);
        assert!(sql.contains(r"'%my\_app%' ESCAPE '\'"), "{sql}");
    }

    #[test]
    fn trigram_phrase_needs_three_characters() {
        assert_eq!(NameSearch::new("ab").unwrap().trigram_phrase(), None);
        assert_eq!(
            NameSearch::new("abc").unwrap().trigram_phrase(),
            Some("\"abc\"".into())
        );
    }
}
