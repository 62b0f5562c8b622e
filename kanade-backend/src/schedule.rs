//! Scheduling decisions, all pure: the schedule-level gates (enabled,
//! freeze, active window, skip dates, time window), whether a plan is due,
//! and a preview of the next fire times. The decisions the agent shares
//! (`kanade_core::policy::firing`) and the lowering of `when` forms
//! (`kanade_core::policy::when`) are re-exported here; the I/O lives in
//! [`crate::scheduler`].

use chrono::{DateTime, Datelike, Utc};

use crate::manifest::Schedule;
pub use crate::when::{calendar_pattern, day_field, lower, Plan, Repeat, WhenError};
pub use kanade_core::policy::firing::{calendar_due, next_occurrence, repeat_due, ScheduleGates};

/// Whether the schedule is in local time.
pub fn is_local(schedule: &Schedule) -> bool {
    schedule.tz.as_deref() == Some("local")
}

/// A schedule's gates, for [`kanade_core::policy::firing::blocked`].
pub fn gates_of(schedule: &Schedule) -> ScheduleGates<'_> {
    let constraints = schedule.constraints.as_ref();
    ScheduleGates {
        enabled: schedule.enabled,
        active_from: schedule.active.as_ref().and_then(|a| a.from.as_deref()),
        active_until: schedule.active.as_ref().and_then(|a| a.until.as_deref()),
        skip_dates: constraints.map_or(&[], |c| c.skip_dates.as_slice()),
        window: constraints.and_then(|c| c.window.as_deref()),
        local: is_local(schedule),
    }
}

/// Why a schedule may not fire now (None: it may).
pub fn schedule_blocked(schedule: &Schedule, now: DateTime<Utc>, frozen: bool) -> Option<String> {
    kanade_core::policy::firing::blocked(&gates_of(schedule), now, frozen)
}

/// What a fire of `schedule` due at `due_at` lowers onto its command: the
/// start deadline (`due_at` + `starting_deadline`), `on_failure.retry`,
/// `jitter`, and its rollout (without an execution id: the caller names
/// the execution).
pub fn fire_options(schedule: &Schedule, due_at: DateTime<Utc>) -> crate::FireOptions {
    let duration = |text: &Option<String>| {
        text.as_deref()
            .and_then(|t| humantime::parse_duration(t).ok())
    };
    crate::FireOptions {
        deadline_at: duration(&schedule.starting_deadline)
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| due_at + d),
        retry: schedule
            .on_failure
            .as_ref()
            .map(|f| kanade_core::wire::RetrySpec {
                max: f.retry.max,
                backoff_secs: humantime::parse_duration(&f.retry.backoff)
                    .map_or(1, |d| d.as_secs().max(1)),
            }),
        jitter_secs: duration(&schedule.jitter).map(|d| d.as_secs()),
        exec_id: None,
        schedule_id: Some(schedule.id.clone()),
        // `consider` fires a schedule of a job that requires approval
        // only once its current version is approved; later rollout
        // waves belong to such a fire.
        approved: true,
        // A self-stopping rollout (the reference's timed waves are
        // planned by the scheduler instead).
        rollout: schedule.rollout.clone().filter(|r| !r.is_timed_waves()),
    }
}

/// The next `n` fire times after `after` (for `schedule preview`).
pub fn preview(
    schedule: &Schedule,
    after: DateTime<Utc>,
    n: usize,
) -> Result<Vec<DateTime<Utc>>, WhenError> {
    let plan = lower(&schedule.when)?;
    let local = is_local(schedule);
    let mut out = Vec::new();
    match &plan {
        Plan::Calendar { cron, year, .. } => {
            let mut cursor = after;
            while out.len() < n {
                let Some(next) = next_occurrence(cron, cursor, local) else {
                    break;
                };
                if let Some(y) = year {
                    if next.year() > *y {
                        break;
                    }
                }
                if year.is_none_or(|y| next.year() == y) {
                    out.push(next);
                }
                cursor = next;
            }
        }
        Plan::PerPc(Repeat::Every(every)) | Plan::PerTarget(Repeat::Every(every)) => {
            let step = chrono::Duration::from_std(*every)?;
            out.extend((1..=n as i32).map(|k| after + step * k));
        }
        Plan::PerPc(_) | Plan::PerTarget(_) => out.push(after),
        Plan::AgentSide => {}
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::when::When;
    use serde_json::json;
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn second_tuesday_and_last_friday_fire_on_the_right_days() {
        let plan = lower(&When {
            calendar: Some(json!({"at": "10:00", "days": ["tue#2", "friL"]})),
            ..When::default()
        })
        .unwrap();
        let Plan::Calendar { cron, .. } = &plan else {
            panic!()
        };
        let mut cursor = utc("2026-06-01T00:00:00Z");
        let mut hits = Vec::new();
        for _ in 0..2 {
            let next = next_occurrence(cron, cursor, false).unwrap();
            hits.push(next.to_rfc3339());
            cursor = next;
        }
        // June 2026: second Tuesday is the 9th, last Friday the 26th.
        assert_eq!(
            hits,
            ["2026-06-09T10:00:00+00:00", "2026-06-26T10:00:00+00:00"]
        );
    }

    #[test]
    fn occurrences_are_whole_seconds() {
        let plan = lower(&When {
            calendar: Some(json!({"at": "09:00"})),
            ..When::default()
        })
        .unwrap();
        let Plan::Calendar { cron, .. } = &plan else {
            panic!()
        };
        let next = next_occurrence(cron, utc("2026-06-01T08:00:00.644Z"), false).unwrap();
        assert_eq!(next, utc("2026-06-01T09:00:00Z"));
    }

    #[test]
    fn calendar_due_finds_the_occurrence_in_the_interval() {
        let plan = lower(&When {
            calendar: Some(json!({"at": "09:00"})),
            ..When::default()
        })
        .unwrap();
        let due = calendar_due(
            &plan,
            utc("2026-06-01T08:59:00Z"),
            utc("2026-06-01T09:00:30Z"),
            false,
        );
        assert_eq!(due, Some(utc("2026-06-01T09:00:00Z")));
        assert_eq!(
            calendar_due(
                &plan,
                utc("2026-06-01T09:00:00Z"),
                utc("2026-06-01T09:30:00Z"),
                false
            ),
            None
        );
        let once = lower(&When {
            calendar: Some(json!({"at": "2026-06-10 09:00"})),
            ..When::default()
        })
        .unwrap();
        assert!(calendar_due(
            &once,
            utc("2027-06-10T08:00:00Z"),
            utc("2027-06-10T10:00:00Z"),
            false
        )
        .is_none());
    }

    #[test]
    fn repeat_rules() {
        let now = utc("2026-06-01T12:00:00Z");
        assert!(repeat_due(&Repeat::Once, None, "1", now));
        assert!(!repeat_due(&Repeat::Once, Some((now, "1")), "2", now));
        assert!(!repeat_due(
            &Repeat::OncePerVersion,
            Some((now, "1")),
            "1",
            now
        ));
        assert!(repeat_due(
            &Repeat::OncePerVersion,
            Some((now, "1")),
            "2",
            now
        ));
        let hour = Repeat::Every(Duration::from_secs(3600));
        assert!(!repeat_due(
            &hour,
            Some((utc("2026-06-01T11:30:00Z"), "1")),
            "1",
            now
        ));
        assert!(repeat_due(
            &hour,
            Some((utc("2026-06-01T11:00:00Z"), "1")),
            "1",
            now
        ));
    }
}
