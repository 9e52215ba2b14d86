//! [`Pairs`]: an incident's group and labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A few text pairs, sorted by key, in one allocation. An incident's group
/// and labels hold a handful of entries; a `BTreeMap` allocates a node with
/// room for eleven (about 540 bytes) even for one, which at 100,000 open
/// incidents was about 100 MB of the engine's memory (storm benchmark).
/// Serialized as a JSON object, exactly like the map it replaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pairs(Box<[(String, String)]>);

impl Pairs {
    pub fn get(&self, key: &str) -> Option<&String> {
        self.0
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> PairsIter<'_> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

pub type PairsIter<'a> = std::iter::Map<
    std::slice::Iter<'a, (String, String)>,
    fn(&'a (String, String)) -> (&'a String, &'a String),
>;

impl<'a> IntoIterator for &'a Pairs {
    type Item = (&'a String, &'a String);
    type IntoIter = PairsIter<'a>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl FromIterator<(String, String)> for Pairs {
    /// Sorted by key; of two equal keys the later wins, as in a map.
    fn from_iter<I: IntoIterator<Item = (String, String)>>(iter: I) -> Self {
        iter.into_iter().collect::<BTreeMap<_, _>>().into()
    }
}

impl From<BTreeMap<String, String>> for Pairs {
    fn from(m: BTreeMap<String, String>) -> Self {
        Pairs(m.into_iter().collect())
    }
}

impl Serialize for Pairs {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Pairs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        BTreeMap::<String, String>::deserialize(d).map(Pairs::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_sorts_and_serializes_like_a_map() {
        let p: Pairs = [("b", "2"), ("a", "1"), ("b", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(p.len(), 2);
        assert_eq!(p.get("b").map(String::as_str), Some("3"));
        assert_eq!(p.get("c"), None);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, r#"{"a":"1","b":"3"}"#);
        assert_eq!(serde_json::from_str::<Pairs>(&json).unwrap(), p);
    }
}
