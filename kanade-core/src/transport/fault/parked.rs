//! Messages a subscription or consumer wrapper has taken from the inner
//! transport but not handed out yet (duplicates, delayed and reordered
//! messages), kept in the wrapper so a dropped `next()` loses nothing.

use std::collections::VecDeque;
use std::time::Duration;

/// How long a reordered message waits for a successor before it is released.
const REORDER_WINDOW: Duration = Duration::from_millis(100);

/// A message whose delivery fault is decided but which is not handed out
/// yet.
pub(super) enum Held<M> {
    /// Delayed: handed out at `until`.
    Delayed {
        item: M,
        until: tokio::time::Instant,
    },
    /// Reordered: handed out after the next arrival, or at `until` if none
    /// comes first.
    Reordered {
        item: M,
        until: tokio::time::Instant,
    },
}

impl<M> Held<M> {
    pub(super) fn delayed(item: M, pause: Duration) -> Self {
        Held::Delayed {
            item,
            until: tokio::time::Instant::now() + pause,
        }
    }

    pub(super) fn reordered(item: M) -> Self {
        Held::Reordered {
            item,
            until: tokio::time::Instant::now() + REORDER_WINDOW,
        }
    }

    pub(super) fn into_item(self) -> M {
        match self {
            Held::Delayed { item, .. } | Held::Reordered { item, .. } => item,
        }
    }
}

/// What a subscription or consumer wrapper has taken from the inner
/// transport but not handed out yet. It lives in the wrapper, so a dropped
/// `next()` loses none of it (the contract's cancel safety).
pub(super) struct Parked<M> {
    /// Ready to hand out, in order (duplicates, a reordered message's
    /// predecessor).
    pub(super) ready: VecDeque<M>,
    /// A delayed or reordered message still waiting.
    pub(super) held: Option<Held<M>>,
}

impl<M> Parked<M> {
    pub(super) fn new() -> Self {
        Self {
            ready: VecDeque::new(),
            held: None,
        }
    }

    /// The held message's due instant and whether it waits for a
    /// successor (reorder) rather than just for time (delay).
    pub(super) fn held_until(&self) -> Option<(tokio::time::Instant, bool)> {
        match &self.held {
            Some(Held::Delayed { until, .. }) => Some((*until, false)),
            Some(Held::Reordered { until, .. }) => Some((*until, true)),
            None => None,
        }
    }
}
