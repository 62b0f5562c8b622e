//! Properties of the pure firing decisions.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use chrono::{DateTime, Duration, TimeZone, Timelike, Utc};
use kanade_backend::manifest::When;
use kanade_backend::schedule::{calendar_due, lower, repeat_due, Repeat};
use proptest::prelude::*;

fn start() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
}

fn daily(hour: u32, minute: u32) -> kanade_backend::schedule::Plan {
    lower(&When {
        calendar: Some(serde_json::json!({"at": format!("{hour:02}:{minute:02}")})),
        ..When::default()
    })
    .unwrap()
}

/// Occurrences of hh:mm in (from, to].
fn occurrences(hour: u32, minute: u32, from: DateTime<Utc>, to: DateTime<Utc>) -> usize {
    let mut count = 0;
    let mut day = from.date_naive();
    while day <= to.date_naive() {
        let at = Utc.from_utc_datetime(&day.and_hms_opt(hour, minute, 0).unwrap());
        if at > from && at <= to {
            count += 1;
        }
        day = day.succ_opt().unwrap();
    }
    count
}

proptest! {
    /// With ticks at most ten minutes apart, every occurrence fires exactly
    /// once: none missed, none doubled, whatever the tick spacing.
    #[test]
    fn frequent_ticks_fire_each_occurrence_once(
        hour in 0u32..24,
        minute in 0u32..60,
        steps in prop::collection::vec(1i64..=600, 50..1500),
    ) {
        let plan = daily(hour, minute);
        let mut previous = start();
        let mut fires = Vec::new();
        for step in steps {
            let now = previous + Duration::seconds(step);
            if let Some(due) = calendar_due(&plan, previous, now, false) {
                prop_assert!(due > previous && due <= now);
                prop_assert_eq!((due.hour(), due.minute(), due.second()), (hour, minute, 0));
                fires.push(due);
            }
            previous = now;
        }
        prop_assert_eq!(fires.len(), occurrences(hour, minute, start(), previous));
        let mut unique = fires.clone();
        unique.dedup();
        prop_assert_eq!(unique.len(), fires.len(), "an occurrence fired twice");
    }

    /// With arbitrary gaps (a backend down for days), at most one fire per
    /// tick, never more fires than occurrences, and at least one when any
    /// occurrence was missed (the latest is caught up).
    #[test]
    fn gaps_catch_up_once(steps in prop::collection::vec(1i64..=3 * 86_400, 1..40)) {
        let plan = daily(9, 0);
        let mut previous = start();
        let mut fires = 0;
        for step in steps {
            let now = previous + Duration::seconds(step);
            let missed = occurrences(9, 0, previous, now);
            let due = calendar_due(&plan, previous, now, false);
            prop_assert_eq!(due.is_some(), missed > 0);
            fires += usize::from(due.is_some());
            previous = now;
        }
        prop_assert!(fires <= occurrences(9, 0, start(), previous));
    }

    /// `once` never fires again, whatever the clock and version say.
    #[test]
    fn once_is_once(secs in 0i64..10_000_000, version in "[0-9]{1,3}") {
        let fired = start();
        let now = fired + Duration::seconds(secs);
        prop_assert!(!repeat_due(&Repeat::Once, Some((fired, "1")), &version, now));
        prop_assert!(repeat_due(&Repeat::OncePerVersion, Some((fired, "1")), &version, now) == (version != "1"));
    }
}
