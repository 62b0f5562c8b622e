//! Scheduling decisions, all pure: `when` forms lowered to plans (calendar
//! forms to cron expressions), the schedule-level gates (enabled, freeze,
//! active window, skip dates, time window), whether a plan is due, and a
//! preview of the next fire times. The I/O lives in [`crate::scheduler`].

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use croner::Cron;
use serde_json::Value;

use crate::manifest::{Schedule, When};

/// How often a per-pc or per-target schedule repeats.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repeat {
    /// Once, ever.
    Once,
    /// Once for each job version.
    OncePerVersion,
    /// Again after this long.
    Every(Duration),
}

/// A lowered `when`.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Fire at cron occurrences (in the schedule's time zone), to the target.
    Calendar {
        /// The cron expression (5 fields).
        pattern: String,
        /// Parsed.
        cron: Box<Cron>,
        /// For a one-shot date: the only year it fires in.
        year: Option<i32>,
    },
    /// Once / every, counted for the target as a whole.
    PerTarget(Repeat),
    /// Once / every, counted for each pc.
    PerPc(Repeat),
    /// Triggers that run on the agent (`on: [startup]`); the backend does
    /// not fire these.
    AgentSide,
}

fn repeat(value: &Value, allow_per_version: bool) -> Result<Repeat, String> {
    match value {
        Value::String(s) if s == "once" => Ok(Repeat::Once),
        Value::String(s) if s == "once_per_version" && allow_per_version => {
            Ok(Repeat::OncePerVersion)
        }
        Value::Object(map) => match map.get("every").and_then(Value::as_str) {
            Some(every) => humantime::parse_duration(every)
                .map_err(|e| format!("every: {every:?} is not a duration: {e}"))
                .and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err("every: must be at least 1s".into())
                    } else {
                        Ok(Repeat::Every(d))
                    }
                }),
            None => Err(format!(
                "{value} is not once{} or {{every: <duration>}}",
                if allow_per_version {
                    ", once_per_version"
                } else {
                    ""
                }
            )),
        },
        other => Err(format!(
            "{other} is not once{} or {{every: <duration>}}",
            if allow_per_version {
                ", once_per_version"
            } else {
                ""
            }
        )),
    }
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One `days:` item as a cron day-of-week field: `mon`, `mon-fri`, `tue#2`
/// (second Tuesday), `friL` (last Friday).
pub fn day_field(item: &str) -> Result<String, String> {
    let lower = item.trim().to_ascii_lowercase();
    let number = |name: &str| {
        DAYS.iter()
            .position(|d| *d == name)
            .ok_or_else(|| format!("{item:?}: {name:?} is not a day (mon..sun)"))
    };
    if let Some((from, to)) = lower.split_once('-') {
        return Ok(format!("{}-{}", number(from)?, number(to)?));
    }
    if let Some((day, nth)) = lower.split_once('#') {
        let nth: u8 = nth
            .parse()
            .map_err(|_| format!("{item:?}: #{nth} is not 1..5"))?;
        if !(1..=5).contains(&nth) {
            return Err(format!("{item:?}: #{nth} is not 1..5"));
        }
        return Ok(format!("{}#{nth}", number(day)?));
    }
    if let Some(day) = lower.strip_suffix('l') {
        if DAYS.contains(&day) {
            return Ok(format!("{}#L", number(day)?));
        }
    }
    Ok(number(&lower)?.to_string())
}

/// A calendar `{at, days}` as a cron pattern, and the year of a one-shot date.
pub fn calendar_pattern(value: &Value) -> Result<(String, Option<i32>), String> {
    let at = value
        .get("at")
        .and_then(Value::as_str)
        .ok_or("calendar needs at: \"HH:MM\" or \"YYYY-MM-DD HH:MM\"")?;
    let days: Vec<String> = match value.get("days") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|d| {
                d.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| format!("days: {d} is not a day"))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(format!("days: {other} is not a list")),
    };
    if let Some(extra) = value
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "at" && *k != "days"))
    {
        return Err(format!("calendar: unknown key {extra:?}"));
    }
    let dow = if days.is_empty() {
        "*".to_owned()
    } else {
        days.iter()
            .map(|d| day_field(d))
            .collect::<Result<Vec<_>, _>>()?
            .join(",")
    };
    if let Ok(time) = NaiveTime::parse_from_str(at, "%H:%M") {
        return Ok((
            format!("{} {} * * {dow}", time.format("%-M"), time.format("%-H")),
            None,
        ));
    }
    let moment = chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%d %H:%M")
        .map_err(|_| format!("at: {at:?} is not HH:MM or YYYY-MM-DD HH:MM"))?;
    if !days.is_empty() {
        return Err("a one-shot date (at: YYYY-MM-DD HH:MM) takes no days".into());
    }
    Ok((
        format!(
            "{} {} {} {} *",
            moment.minute(),
            moment.hour(),
            moment.day(),
            moment.month()
        ),
        Some(moment.year()),
    ))
}

use chrono::Timelike;

/// Lowers a `when` to a plan.
pub fn lower(when: &When) -> Result<Plan, String> {
    match (&when.per_pc, &when.per_target, &when.calendar, &when.on) {
        (Some(v), None, None, None) => Ok(Plan::PerPc(repeat(v, true)?)),
        (None, Some(v), None, None) => Ok(Plan::PerTarget(repeat(v, false)?)),
        (None, None, Some(v), None) => {
            let (pattern, year) = calendar_pattern(v)?;
            let cron: Cron = pattern.parse().map_err(|e| format!("calendar: {e}"))?;
            Ok(Plan::Calendar {
                pattern,
                cron: Box::new(cron),
                year,
            })
        }
        (None, None, None, Some(_)) => Ok(Plan::AgentSide),
        _ => Err("set exactly one of per_pc, per_target, calendar, on".into()),
    }
}

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
) -> Result<Vec<DateTime<Utc>>, String> {
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
            let step = chrono::Duration::from_std(*every).map_err(|e| e.to_string())?;
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
    use serde_json::json;

    #[test]
    fn day_items_lower_to_cron_fields() {
        assert_eq!(day_field("mon").unwrap(), "1");
        assert_eq!(day_field("mon-fri").unwrap(), "1-5");
        assert_eq!(day_field("tue#2").unwrap(), "2#2");
        assert_eq!(day_field("friL").unwrap(), "5#L");
        assert!(day_field("funday").is_err());
        assert!(day_field("tue#9").is_err());
    }

    #[test]
    fn calendar_forms_lower_to_patterns() {
        assert_eq!(
            calendar_pattern(&json!({"at": "09:05", "days": ["mon-fri"]})).unwrap(),
            ("5 9 * * 1-5".into(), None)
        );
        assert_eq!(
            calendar_pattern(&json!({"at": "2026-06-10 09:00"})).unwrap(),
            ("0 9 10 6 *".into(), Some(2026))
        );
        assert!(calendar_pattern(&json!({"at": "25:00"})).is_err());
        assert!(calendar_pattern(&json!({"at": "09:00", "dayz": []})).is_err());
    }

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

    #[test]
    fn unknown_forms_are_refused() {
        assert!(lower(&When::default()).is_err());
        assert!(lower(&When {
            per_pc: Some(json!("twice")),
            ..When::default()
        })
        .is_err());
        assert!(lower(&When {
            per_target: Some(json!("once_per_version")),
            ..When::default()
        })
        .is_err());
    }
}
