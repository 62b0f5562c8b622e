//! Scheduling decisions, all pure: the schedule-level gates (enabled,
//! freeze, active window, skip dates, time window), whether a plan is due,
//! and a preview of the next fire times. Lowering `when` forms to plans
//! (calendar forms to cron expressions) lives in [`crate::when`] and is
//! re-exported here; the I/O lives in [`crate::scheduler`].

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use croner::Cron;

use crate::manifest::Schedule;
pub use crate::when::{calendar_pattern, day_field, lower, Plan, Repeat, WhenError};

/// Whether the schedule is in local time.
pub fn is_local(schedule: &Schedule) -> bool {
    schedule.tz.as_deref() == Some("local")
}

/// The next cron occurrence strictly after `after`, in the schedule's zone.
pub fn next_occurrence(cron: &Cron, after: DateTime<Utc>, local: bool) -> Option<DateTime<Utc>> {
    // Occurrences are whole seconds; croner would carry `after`'s fraction.
    let after = after.with_nanosecond(0).unwrap_or(after);
    if local {
        cron.find_next_occurrence(&after.with_timezone(&chrono::Local), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    } else {
        cron.find_next_occurrence(&after, false).ok()
    }
}

/// The latest calendar occurrence in `(since, now]`, if any.
pub fn calendar_due(
    plan: &Plan,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
    local: bool,
) -> Option<DateTime<Utc>> {
    let Plan::Calendar { cron, year, .. } = plan else {
        return None;
    };
    let mut due = None;
    let mut cursor = since;
    while let Some(next) = next_occurrence(cron, cursor, local) {
        if next > now {
            break;
        }
        if year.is_none_or(|y| next.year() == y) {
            due = Some(next);
        }
        cursor = next;
    }
    due
}

/// Whether a per-pc or per-target plan is due, given the last fire (and the
/// version it fired) for that pc or target.
pub fn repeat_due(
    repeat: &Repeat,
    last: Option<(DateTime<Utc>, &str)>,
    version: &str,
    now: DateTime<Utc>,
) -> bool {
    match (repeat, last) {
        (_, None) => true,
        (Repeat::Once, Some(_)) => false,
        (Repeat::OncePerVersion, Some((_, fired_version))) => fired_version != version,
        (Repeat::Every(every), Some((at, _))) => (now - at).to_std().is_ok_and(|age| age >= *every),
    }
}

fn parse_day(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map(|t| Utc.from_utc_datetime(&t))
        })
}

/// Why a schedule may not fire now (None: it may).
pub fn schedule_blocked(schedule: &Schedule, now: DateTime<Utc>, frozen: bool) -> Option<String> {
    if !schedule.enabled {
        return Some("disabled".into());
    }
    if frozen {
        return Some("fleet-wide freeze".into());
    }
    if let Some(active) = &schedule.active {
        if let Some(from) = active.from.as_deref().and_then(parse_day) {
            if now < from {
                return Some(format!("not active before {from}"));
            }
        }
        if let Some(until) = active.until.as_deref().and_then(parse_day) {
            if now >= until {
                return Some(format!("not active after {until}"));
            }
        }
    }
    let local = is_local(schedule);
    let (date, time) = if local {
        let t = now.with_timezone(&chrono::Local);
        (t.date_naive(), t.time())
    } else {
        (now.date_naive(), now.time())
    };
    if let Some(constraints) = &schedule.constraints {
        if constraints
            .skip_dates
            .iter()
            .any(|d| d == &date.format("%Y-%m-%d").to_string())
        {
            return Some(format!("{date} is a skip date"));
        }
        if let Some((from, to)) = constraints
            .window
            .as_deref()
            .and_then(|w| w.split_once('-'))
        {
            if let (Ok(from), Ok(to)) = (
                NaiveTime::parse_from_str(from, "%H:%M"),
                NaiveTime::parse_from_str(to, "%H:%M"),
            ) {
                let inside = if from <= to {
                    time >= from && time < to
                } else {
                    time >= from || time < to
                };
                if !inside {
                    return Some(format!("outside the window {from}-{to}"));
                }
            }
        }
    }
    None
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
