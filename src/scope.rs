//! What a principal may see and act on, by branch: the one answer that
//! intake, the store's list queries, every HTTP handler, the dashboard and
//! the event stream ask for.
//!
//! **Invariant:** branch scope is decided here and nowhere else: callers ask
//! a [`Scope`] (`sees`, `covers`, `list` for a query), never compare branch
//! lists or roles themselves (`tests/architecture.rs` looks for such
//! comparisons; `tests/trust.rs` tries every scoped route with another
//! branch's ids).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::config::Config;

/// The branches a principal may see and act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope(Option<Arc<BTreeSet<String>>>);

impl Scope {
    /// Every branch.
    pub fn all() -> Scope {
        Scope(None)
    }

    /// These branches only (none: nothing at all).
    pub fn branches<I, S>(branches: I) -> Scope
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Scope(Some(Arc::new(
            branches.into_iter().map(Into::into).collect(),
        )))
    }

    /// A person's: the operations centre (role `ops`) sees every branch,
    /// anyone else their own branches. `None` for an unknown person.
    pub fn of_person(cfg: &Config, person: &str) -> Option<Scope> {
        let p = cfg.people.get(person)?;
        Some(if p.roles.contains("ops") {
            Scope::all()
        } else {
            Scope::branches(p.branches.iter().cloned())
        })
    }

    pub fn is_all(&self) -> bool {
        self.0.is_none()
    }

    pub fn sees(&self, branch: &str) -> bool {
        self.0.as_ref().is_none_or(|b| b.contains(branch))
    }

    /// Whether every one of `branches` is within the scope (and there is one).
    pub fn covers<'a>(&self, branches: impl IntoIterator<Item = &'a String>) -> bool {
        let mut any = false;
        for b in branches {
            any = true;
            if !self.sees(b) {
                return false;
            }
        }
        any
    }

    /// The branches a list query is limited to; `None`: all of them.
    pub fn list(&self) -> Option<Vec<String>> {
        self.0.as_ref().map(|b| b.iter().cloned().collect())
    }

    /// Of `candidates`, those within the scope, in their order.
    pub fn pick<'a>(&self, candidates: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        candidates
            .into_iter()
            .filter(|b| self.sees(b))
            .cloned()
            .collect()
    }

    /// Whether the two scopes share a branch (every branch meets any
    /// non-empty scope).
    pub fn meets(&self, other: &Scope) -> bool {
        match (&self.0, &other.0) {
            (None, Some(b)) | (Some(b), None) => !b.is_empty(),
            (None, None) => true,
            (Some(a), Some(b)) => a.intersection(b).next().is_some(),
        }
    }

    /// The narrower of two scopes.
    pub fn and(&self, other: &Scope) -> Scope {
        match (&self.0, &other.0) {
            (None, _) => other.clone(),
            (_, None) => self.clone(),
            (Some(a), Some(b)) => Scope::branches(a.intersection(b).cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_meet_when_they_share_a_branch() {
        let one = Scope::branches(["sh-001"]);
        let two = Scope::branches(["sh-002", "sh-003"]);
        assert!(!one.meets(&two) && !two.meets(&one));
        assert!(one.meets(&Scope::branches(["sh-001", "sh-002"])));
        assert!(Scope::all().meets(&one) && one.meets(&Scope::all()));
        assert!(!Scope::all().meets(&Scope::branches(Vec::<String>::new())));
    }

    #[test]
    fn a_scope_sees_its_branches_and_covers_only_what_is_all_inside() {
        let all = Scope::all();
        let one = Scope::branches(["sh-001"]);
        let b = |x: &[&str]| -> Vec<String> { x.iter().map(|s| s.to_string()).collect() };
        assert!(all.sees("sh-002") && one.sees("sh-001") && !one.sees("sh-002"));
        assert!(one.covers(&b(&["sh-001"])));
        assert!(!one.covers(&b(&["sh-001", "sh-002"])));
        assert!(!one.covers(&b(&[])), "nothing is not covered");
        assert!(all.covers(&b(&["x"])));
        assert_eq!(one.list(), Some(b(&["sh-001"])));
        assert_eq!(all.list(), None);
        assert_eq!(one.pick(&b(&["sh-002", "sh-001"])), b(&["sh-001"]));
        assert_eq!(all.and(&one), one);
        assert_eq!(
            Scope::branches(["a", "b"]).and(&Scope::branches(["b", "c"])),
            Scope::branches(["b"])
        );
        assert!(!Scope::branches(Vec::<String>::new()).sees("sh-001"));
    }
}
