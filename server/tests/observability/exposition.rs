//! A parser of the Prometheus text exposition format (version 0.0.4), strict enough to catch
//! a malformed line: `# HELP` / `# TYPE` comments and `name{label="value",…} number` samples.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: HashMap<SeriesKey, f64>,
    /// Metric family name → `counter`, `gauge`, `histogram`…
    pub types: HashMap<String, String>,
}

impl Scrape {
    pub fn parse(text: &str) -> Result<Scrape, String> {
        let mut scrape = Scrape::default();
        for (number, line) in text.lines().enumerate() {
            let context = |reason: &str| format!("line {}: {reason}: {line:?}", number + 1);
            let line = line.trim_end();
            if line.is_empty() {
                continue;
            }
            if let Some(comment) = line.strip_prefix('#') {
                let mut words = comment.trim_start().splitn(3, ' ');
                match (words.next(), words.next(), words.next()) {
                    (Some("TYPE"), Some(name), Some(kind)) => {
                        let kind = kind.trim();
                        if !matches!(
                            kind,
                            "counter" | "gauge" | "histogram" | "summary" | "untyped"
                        ) {
                            return Err(context("unknown metric type"));
                        }
                        if scrape
                            .types
                            .insert(name.to_owned(), kind.to_owned())
                            .is_some()
                        {
                            return Err(context("second TYPE line for a family"));
                        }
                    }
                    (Some("HELP"), Some(_), _) => {}
                    _ => {}
                }
                continue;
            }
            let (key, rest) = parse_series(line).map_err(|reason| context(&reason))?;
            let value_text = rest
                .split_whitespace()
                .next()
                .ok_or_else(|| context("no value"))?;
            let value = match value_text {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                "NaN" => f64::NAN,
                text => text.parse().map_err(|_| context("bad value"))?,
            };
            if scrape.samples.insert(key, value).is_some() {
                return Err(context("duplicate series"));
            }
        }
        Ok(scrape)
    }

    /// The value of one series (0 when absent: a labelled counter appears on first use).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = SeriesKey {
            name: name.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self.samples.get(&key).copied().unwrap_or(0.0)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(key, _)| {
                key.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| key.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// The family a sample belongs to (`x_bucket`, `x_sum`, `x_count` → `x` for histograms).
    pub fn family_of<'a>(&self, name: &'a str) -> &'a str {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && self.types.get(base).map(String::as_str) == Some("histogram")
            {
                return base;
            }
        }
        name
    }
}

fn parse_series(line: &str) -> Result<(SeriesKey, &str), String> {
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err("bad metric name".into());
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after_brace) = rest.strip_prefix('{') {
        let mut chars = after_brace.char_indices().peekable();
        let mut consumed = None;
        loop {
            // Skip separators.
            while let Some((_, c)) = chars.peek() {
                if *c == ',' || *c == ' ' {
                    chars.next();
                } else {
                    break;
                }
            }
            match chars.peek() {
                Some((index, '}')) => {
                    consumed = Some(index + 1);
                    break;
                }
                None => break,
                _ => {}
            }
            let mut label = String::new();
            for (_, c) in chars.by_ref() {
                if c == '=' {
                    break;
                }
                label.push(c);
            }
            if label.is_empty() || !label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("bad label name {label:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            let mut closed = false;
            while let Some((_, c)) = chars.next() {
                match c {
                    '\\' => match chars.next().map(|(_, c)| c) {
                        Some('n') => value.push('\n'),
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        _ => return Err("bad escape in a label value".into()),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return Err("unterminated label value".into());
            }
            if labels.insert(label, value).is_some() {
                return Err("duplicate label".into());
            }
        }
        let consumed = consumed.ok_or("unterminated label set")?;
        rest = &after_brace[consumed..];
    }
    if !rest.starts_with(' ') {
        return Err("no space before the value".into());
    }
    Ok((
        SeriesKey {
            name: name.to_owned(),
            labels,
        },
        rest.trim_start(),
    ))
}

#[test]
fn the_parser_reads_the_format_and_rejects_garbage() {
    let scrape = Scrape::parse(
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"uote\"} 3\n\
         # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\nplain 1.5e3\n",
    )
    .unwrap();
    assert_eq!(
        scrape.value("a_total", &[("x", "1"), ("y", "q\"uote")]),
        3.0
    );
    assert_eq!(scrape.value("h_bucket", &[("le", "+Inf")]), 2.0);
    assert_eq!(scrape.value("plain", &[]), 1500.0);
    assert_eq!(scrape.family_of("h_count"), "h");
    assert_eq!(scrape.family_of("a_total"), "a_total");
    for bad in [
        "a{x=1} 1",
        "a{x=\"1\" 1",
        "a 1\na 2",
        "a{x=\"1\"}1",
        "a notanumber",
        "# TYPE a countr",
    ] {
        assert!(Scrape::parse(bad).is_err(), "accepted {bad:?}");
    }
}
