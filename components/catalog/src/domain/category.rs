//! Categories form a tree (`parent_id`); a product filter on a category includes its subtree.

use std::collections::{HashMap, HashSet};

use bazaar_platform::FieldError;
use serde_json::Value;

use super::product::{Name, parse_id};

/// A stored category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub id: String,
    pub name: Name,
    pub parent_id: Option<String>,
    pub created_at: i64,
}

impl Category {
    pub fn view(&self) -> Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name.as_str(),
            "parent_id": self.parent_id,
            "created_at": bazaar_platform::time::millis_to_rfc3339(self.created_at),
        })
    }
}

/// A validated `POST /api/v1/categories` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCategory {
    pub name: Name,
    pub parent_id: Option<String>,
}

impl NewCategory {
    pub fn from_json(value: &Value) -> Result<NewCategory, Vec<FieldError>> {
        let Some(object) = value.as_object() else {
            return Err(vec![FieldError::new("body", "must be a JSON object")]);
        };
        let mut errors: Vec<FieldError> = object
            .keys()
            .filter(|k| !["name", "parent_id"].contains(&k.as_str()))
            .map(|k| FieldError::new(k.as_str(), "unknown field"))
            .collect();
        let name = match object.get("name") {
            None | Some(Value::Null) => {
                errors.push(FieldError::new("name", "is required"));
                None
            }
            Some(v) => match v.as_str().map(Name::parse) {
                Some(Ok(n)) => Some(n),
                Some(Err(m)) => {
                    errors.push(FieldError::new("name", m));
                    None
                }
                None => {
                    errors.push(FieldError::new("name", "must be a string"));
                    None
                }
            },
        };
        let parent_id = match object.get("parent_id") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_str().map(parse_id) {
                Some(Ok(id)) => Some(id),
                Some(Err(m)) => {
                    errors.push(FieldError::new("parent_id", m));
                    None
                }
                None => {
                    errors.push(FieldError::new("parent_id", "must be a string"));
                    None
                }
            },
        };
        match name {
            Some(name) if errors.is_empty() => Ok(NewCategory { name, parent_id }),
            _ => Err(errors),
        }
    }
}

/// `root` and every category below it (cycle-safe: each id is visited once). Empty when `root`
/// is not a known category.
pub fn subtree(categories: &[(String, Option<String>)], root: &str) -> Vec<String> {
    if !categories.iter().any(|(id, _)| id == root) {
        return Vec::new();
    }
    let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, parent) in categories {
        if let Some(p) = parent {
            children.entry(p.as_str()).or_default().push(id.as_str());
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    let mut stack = vec![root];
    let mut out = Vec::new();
    while let Some(id) = stack.pop() {
        if seen.insert(id) {
            out.push(id.to_owned());
            if let Some(kids) = children.get(id) {
                stack.extend(kids.iter().copied());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subtree_includes_descendants_only() {
        let c = |id: &str, p: Option<&str>| (id.to_owned(), p.map(str::to_owned));
        let tree = vec![
            c("root", None),
            c("a", Some("root")),
            c("a1", Some("a")),
            c("b", Some("root")),
            c("other", None),
        ];
        let mut a = subtree(&tree, "a");
        a.sort();
        assert_eq!(a, ["a", "a1"]);
        assert_eq!(subtree(&tree, "root").len(), 4);
        assert_eq!(subtree(&tree, "nope"), Vec::<String>::new());
        // A cycle (cannot be created through the API) still terminates.
        let cyclic = vec![c("x", Some("y")), c("y", Some("x"))];
        assert_eq!(subtree(&cyclic, "x").len(), 2);
    }

    #[test]
    fn new_category_validation() {
        let ok = NewCategory::from_json(&json!({"name": "Shoes", "parent_id": "cat_1"})).unwrap();
        assert_eq!(ok.parent_id.as_deref(), Some("cat_1"));
        assert!(NewCategory::from_json(&json!({"name": "Shoes", "parent_id": null})).is_ok());
        for bad in [
            json!({}),
            json!({"name": ""}),
            json!({"name": 1}),
            json!({"name": "x", "parent_id": 2}),
            json!({"name": "x", "extra": 1}),
            json!([]),
        ] {
            assert!(NewCategory::from_json(&bad).is_err(), "{bad}");
        }
    }
}
