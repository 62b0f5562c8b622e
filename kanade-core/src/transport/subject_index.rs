//! A token trie of subscription patterns: finding the subscribers of a
//! subject costs the subject's length, not the number of subscriptions
//! (the in-memory bus of a 10,000-agent simulation holds tens of thousands).

use std::collections::HashMap;

/// Subscribers keyed by pattern (`a.b`, `a.*`, `a.>`).
pub(crate) struct SubjectIndex<T> {
    root: Node<T>,
    len: usize,
}

struct Node<T> {
    literal: HashMap<String, Node<T>>,
    star: Option<Box<Node<T>>>,
    /// Subscribers whose pattern ends here with `>`.
    rest: Vec<T>,
    /// Subscribers whose pattern ends exactly here.
    here: Vec<T>,
    /// `rest` / `here` are pruned on insert once this long.
    rest_prune_at: usize,
    here_prune_at: usize,
}

/// The shortest list an insert prunes.
const PRUNE_FLOOR: usize = 4;

impl<T> Default for Node<T> {
    fn default() -> Self {
        Self {
            literal: HashMap::new(),
            star: None,
            rest: Vec::new(),
            here: Vec::new(),
            rest_prune_at: PRUNE_FLOOR,
            here_prune_at: PRUNE_FLOOR,
        }
    }
}

impl<T> Node<T> {
    fn is_empty(&self) -> bool {
        self.literal.is_empty()
            && self.star.is_none()
            && self.rest.is_empty()
            && self.here.is_empty()
    }
}

impl<T> Default for SubjectIndex<T> {
    fn default() -> Self {
        Self {
            root: Node::default(),
            len: 0,
        }
    }
}

impl<T> SubjectIndex<T> {
    /// Adds a subscriber for `pattern` (already validated).
    pub(crate) fn insert(&mut self, pattern: &str, item: T) {
        self.insert_pruning(pattern, item, |_| false);
    }

    /// [`SubjectIndex::insert`], first dropping the subscribers of the same
    /// pattern that `gone` says have left — whenever their list has doubled
    /// since it was last pruned (amortised O(1)). Without it a subscriber
    /// that leaves is removed only when a message for it finds it gone,
    /// and a pattern that rarely sees one (a pc's ping subject, resubscribed
    /// after each reconnect) keeps every old subscriber.
    pub(crate) fn insert_pruning(&mut self, pattern: &str, item: T, gone: impl Fn(&T) -> bool) {
        let mut node = &mut self.root;
        let tokens: Vec<&str> = pattern.split('.').collect();
        let mut rest = false;
        for (i, token) in tokens.iter().enumerate() {
            if *token == ">" && i + 1 == tokens.len() {
                rest = true;
                break;
            }
            node = if *token == "*" {
                node.star.get_or_insert_with(Box::default)
            } else {
                node.literal.entry((*token).to_owned()).or_default()
            };
        }
        let (list, prune_at) = if rest {
            (&mut node.rest, &mut node.rest_prune_at)
        } else {
            (&mut node.here, &mut node.here_prune_at)
        };
        if list.len() >= *prune_at {
            let before = list.len();
            list.retain(|t| !gone(t));
            self.len -= before - list.len();
            *prune_at = (list.len() * 2).max(PRUNE_FLOOR);
        }
        list.push(item);
        self.len += 1;
    }

    /// Calls `deliver` for every subscriber of `subject`; a subscriber for
    /// which it returns `false` (gone) is removed.
    pub(crate) fn dispatch(&mut self, subject: &str, mut deliver: impl FnMut(&T) -> bool) {
        let tokens: Vec<&str> = subject.split('.').collect();
        let removed = visit(&mut self.root, &tokens, &mut deliver);
        self.len -= removed;
    }

    /// Number of subscribers.
    /// An item whose pattern matches `subject`, found without allocating.
    /// Meant for an index whose patterns do not overlap (a transport's
    /// streams), where it is the only one; with overlapping patterns,
    /// which of the matches is unspecified.
    pub(crate) fn first_match(&self, subject: &str) -> Option<&T> {
        first_match_in(&self.root, Some(subject))
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// Delivers to the matching subscribers under `node`; prunes gone ones and
/// empty branches; returns how many were removed.
/// [`SubjectIndex::first_match`] below `node`; `rest` is what is left of
/// the subject (`None` once every token is consumed).
fn first_match_in<'a, T>(node: &'a Node<T>, rest: Option<&str>) -> Option<&'a T> {
    let Some(rest) = rest else {
        return node.here.first();
    };
    if let Some(item) = node.rest.first() {
        return Some(item);
    }
    let (first, after) = match rest.split_once('.') {
        Some((first, after)) => (first, Some(after)),
        None => (rest, None),
    };
    node.literal
        .get(first)
        .and_then(|child| first_match_in(child, after))
        .or_else(|| {
            node.star
                .as_deref()
                .and_then(|star| first_match_in(star, after))
        })
}

fn visit<T>(node: &mut Node<T>, tokens: &[&str], deliver: &mut impl FnMut(&T) -> bool) -> usize {
    let mut removed = 0;
    if !tokens.is_empty() {
        let before = node.rest.len();
        node.rest.retain(|item| deliver(item));
        removed += before - node.rest.len();
    }
    let Some((first, rest)) = tokens.split_first() else {
        let before = node.here.len();
        node.here.retain(|item| deliver(item));
        return removed + before - node.here.len();
    };
    if let Some(child) = node.literal.get_mut(*first) {
        removed += visit(child, rest, deliver);
        if child.is_empty() {
            node.literal.remove(*first);
        }
    }
    if let Some(star) = node.star.as_deref_mut() {
        removed += visit(star, rest, deliver);
        if star.is_empty() {
            node.star = None;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::subject::matches;

    fn delivered(index: &mut SubjectIndex<usize>, subject: &str) -> Vec<usize> {
        let mut got = Vec::new();
        index.dispatch(subject, |i| {
            got.push(*i);
            true
        });
        got.sort_unstable();
        got
    }

    #[test]
    fn the_first_match_is_one_the_pattern_matcher_accepts() {
        let patterns = ["a.b", "a.*.c", "b.>", "*.x", "c"];
        let subjects = [
            "a.b", "a.q.c", "b.1.2", "b", "z.x", "c", "c.d", "a.b.c", "q",
        ];
        let mut index = SubjectIndex::default();
        for (i, p) in patterns.iter().enumerate() {
            index.insert(p, i);
        }
        for subject in subjects {
            let expected: Vec<usize> = (0..patterns.len())
                .filter(|i| matches(patterns[*i], subject))
                .collect();
            let found = index.first_match(subject).copied();
            // The patterns do not overlap: at most one matches.
            assert_eq!(found.into_iter().collect::<Vec<_>>(), expected, "{subject}");
        }
    }

    #[test]
    fn agrees_with_the_pattern_matcher() {
        let patterns = [
            "a", "a.b", "a.*", "a.>", ">", "*", "*.b", "a.*.c", "a.b.c", "b.>", "*.*.c",
        ];
        let subjects = ["a", "b", "a.b", "a.c", "a.b.c", "b.b.c", "a.b.c.d", "c.b"];
        let mut index = SubjectIndex::default();
        for (i, p) in patterns.iter().enumerate() {
            index.insert(p, i);
        }
        for subject in subjects {
            let expected: Vec<usize> = patterns
                .iter()
                .enumerate()
                .filter(|(_, p)| matches(p, subject))
                .map(|(i, _)| i)
                .collect();
            assert_eq!(delivered(&mut index, subject), expected, "{subject}");
        }
    }

    #[test]
    fn gone_subscribers_are_pruned() {
        let mut index = SubjectIndex::default();
        index.insert("kill.*", 1);
        index.insert("kill.*", 2);
        index.insert("kill.>", 3);
        index.dispatch("kill.x", |i| *i != 2);
        assert_eq!(index.len(), 2);
        assert_eq!(delivered(&mut index, "kill.y"), vec![1, 3]);
        index.dispatch("kill.y", |_| false);
        assert_eq!(index.len(), 0);
        assert!(index.root.is_empty());
    }

    /// A pc resubscribing its ping subject after every reconnect, with no
    /// ping in between: the subscribers that left do not pile up.
    #[test]
    fn subscribers_that_left_are_pruned_on_insert() {
        let mut index = SubjectIndex::default();
        let gone = |i: &usize| *i < 990; // all but the last ten have left
        for i in 0..1000 {
            index.insert_pruning("agents.pc-1.ping", i, gone);
        }
        assert!(index.len() < 40, "{} kept", index.len());
        let live = delivered(&mut index, "agents.pc-1.ping");
        assert_eq!(live.iter().filter(|i| !gone(i)).count(), 10);
        // `>` patterns too.
        for i in 0..1000 {
            index.insert_pruning("obs.>", i, gone);
        }
        assert!(index.len() < 80, "{} kept", index.len());
    }
}
