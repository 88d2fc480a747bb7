//! Label and field selectors as the API server parses them from `labelSelector` and
//! `fieldSelector` query parameters.
//!
//! Label selectors: comma-separated requirements, each `k=v`, `k==v`, `k!=v`, `k` (exists),
//! `!k` (does not exist), `k in (a,b)` or `k notin (a,b)`. Field selectors: `path=v`,
//! `path==v` or `path!=v` for `metadata.name`, `metadata.namespace`, and for pods
//! `status.phase`, `spec.nodeName`, for PVCs `spec.volumeName`.

use crate::error::SimError;
use crate::util;
use serde_json::Value;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    Exists(String),
    NotExists(String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

fn valid_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.'))
    });
    name_ok && prefix_ok
}

fn valid_value(value: &str) -> bool {
    value.is_empty()
        || (value.len() <= 63
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && value.starts_with(|c: char| c.is_ascii_alphanumeric())
            && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Splits on commas that are not inside parentheses.
fn split_top_level(s: &str) -> Result<Vec<String>, SimError> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c);
            }
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SimError::BadRequest(format!(
                        "unable to parse requirement: unbalanced ')' in {s:?}"
                    )));
                }
                cur.push(c);
            }
            ',' if depth == 0 => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if depth != 0 {
        return Err(SimError::BadRequest(format!(
            "unable to parse requirement: unbalanced '(' in {s:?}"
        )));
    }
    parts.push(cur);
    Ok(parts)
}

fn bad(sel: &str, why: &str) -> SimError {
    SimError::BadRequest(format!(
        "unable to parse requirement: invalid label selector {sel:?}: {why}"
    ))
}

impl LabelSelector {
    /// Parses a `labelSelector` query value; a malformed selector is a `BadRequest`.
    pub fn parse(s: &str) -> Result<LabelSelector, SimError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(LabelSelector { requirements });
        }
        for part in split_top_level(s)? {
            let part = part.trim();
            if part.is_empty() {
                return Err(bad(s, "empty requirement"));
            }
            let check_key = |k: &str| -> Result<String, SimError> {
                let k = k.trim();
                if valid_key(k) {
                    Ok(k.to_string())
                } else {
                    Err(bad(s, &format!("invalid key {k:?}")))
                }
            };
            let check_value = |v: &str| -> Result<String, SimError> {
                let v = v.trim();
                if valid_value(v) {
                    Ok(v.to_string())
                } else {
                    Err(bad(s, &format!("invalid value {v:?}")))
                }
            };
            let set_op = |rest: &str| -> Result<Vec<String>, SimError> {
                let rest = rest.trim();
                let inner = rest
                    .strip_prefix('(')
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| bad(s, "expected '(' values ')'"))?;
                inner.split(',').map(check_value).collect()
            };
            let req = if let Some(k) = part.strip_prefix('!') {
                Requirement::NotExists(check_key(k)?)
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(check_key(k)?, check_value(v)?)
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(check_key(k)?, check_value(v)?)
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(check_key(k)?, check_value(v)?)
            } else if let Some((k, rest)) = part.split_once(" notin ") {
                Requirement::NotIn(check_key(k)?, set_op(rest)?)
            } else if let Some((k, rest)) = part.split_once(" in ") {
                Requirement::In(check_key(k)?, set_op(rest)?)
            } else {
                Requirement::Exists(check_key(part)?)
            };
            requirements.push(req);
        }
        Ok(LabelSelector { requirements })
    }

    /// Whether an object's labels satisfy every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        if self.requirements.is_empty() {
            return true;
        }
        let labels = util::labels(object);
        self.requirements.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::NotExists(k) => !labels.contains_key(k),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|v| vs.contains(v)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|v| !vs.contains(v)),
        })
    }
}

/// A parsed field selector.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    requirements: Vec<(String, bool, String)>,
}

const SUPPORTED_FIELDS: &[&str] = &[
    "metadata.name",
    "metadata.namespace",
    "status.phase",
    "spec.nodeName",
    "spec.volumeName",
];

impl FieldSelector {
    /// Parses a `fieldSelector` query value; unknown fields are a `BadRequest`.
    pub fn parse(s: &str) -> Result<FieldSelector, SimError> {
        let mut requirements = Vec::new();
        if s.trim().is_empty() {
            return Ok(FieldSelector { requirements });
        }
        for part in s.split(',') {
            let part = part.trim();
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, true, v)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, true, v)
            } else {
                return Err(SimError::BadRequest(format!(
                    "invalid field selector: {s:?}: {part:?} is not an equality requirement"
                )));
            };
            let field = field.trim();
            if !SUPPORTED_FIELDS.contains(&field) {
                return Err(SimError::BadRequest(format!(
                    "field label not supported: {field}"
                )));
            }
            requirements.push((field.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector { requirements })
    }

    /// Whether an object satisfies every requirement.
    pub fn matches(&self, object: &Value) -> bool {
        self.requirements.iter().all(|(field, equal, value)| {
            let actual = util::path_str(object, field).unwrap_or("");
            (actual == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors() {
        let o = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        for (sel, want) in [
            ("", true),
            ("a=1", true),
            ("a==1,b=2", true),
            ("a!=1", false),
            ("c", false),
            ("!c", true),
            ("a in (1,3)", true),
            ("a notin (1,3)", false),
            ("c notin (1)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&o),
                want,
                "{sel}"
            );
        }
        for bad in ["a=(", "=x", "a in 1", "!", "a,,b", "a=b c", "a in (1"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors() {
        let o = json!({"metadata": {"name": "x", "namespace": "ns"}});
        assert!(FieldSelector::parse("metadata.name=x").unwrap().matches(&o));
        assert!(!FieldSelector::parse("metadata.name!=x")
            .unwrap()
            .matches(&o));
        assert!(FieldSelector::parse("spec.foo=x").is_err());
    }
}
