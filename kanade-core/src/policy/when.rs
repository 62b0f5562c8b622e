//! A schedule's `when:` and its lowering to a [`Plan`]: the per-pc and
//! per-target repeats, and the calendar forms as cron expressions. Shared
//! by the backend (which validates `when` while parsing a schedule and
//! fires backend-side schedules) and the agent (which fires
//! `runs_on: agent` schedules on its own); the decisions of what is due
//! are in [`super::firing`].

use std::time::Duration;

use chrono::{Datelike, NaiveTime, Timelike};
use croner::Cron;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `when:` of a schedule (fired by the scheduler; stored and validated
/// with the schedule). Exactly one form is set.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// Per pc: `once`, `once_per_version` or `{every: 1h}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_pc: Option<Value>,
    /// Per target: `once` or `{every: 1h}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_target: Option<Value>,
    /// `{at: "09:00" | "2026-06-10 09:00", days: [mon-fri, tue#2, friL]}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Value>,
    /// Agent-side triggers (`[startup, …]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on: Option<Vec<String>>,
}

impl When {
    /// How many forms are set (valid: exactly one).
    pub fn forms(&self) -> usize {
        [
            self.per_pc.is_some(),
            self.per_target.is_some(),
            self.calendar.is_some(),
            self.on.is_some(),
        ]
        .iter()
        .filter(|set| **set)
        .count()
    }
}

/// Why a `when` (or a fire-time preview of it) is refused. The messages
/// are the ones manifest validation reports under `when`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WhenError {
    /// Not exactly one of `per_pc`, `per_target`, `calendar`, `on` is set.
    #[error("set exactly one of per_pc, per_target, calendar, on")]
    Forms,
    /// `on:` names no trigger, or one other than `startup`.
    #[error("on: {0:?} — the agent-side triggers are [startup]")]
    Triggers(Vec<String>),
    /// A repeat is neither `once` (nor, per pc, `once_per_version`) nor
    /// `{every: <duration>}`.
    #[error("{value} is not once{} or {{every: <duration>}}", or_per_version(.per_version))]
    Repeat {
        /// The value given, as JSON.
        value: String,
        /// Whether `once_per_version` would have been accepted.
        per_version: bool,
    },
    /// `every:` is not a duration.
    #[error(
        "every: {value:?} is not a duration: write a number and a unit, like 30s, 5m or 1h 30m"
    )]
    EveryNotDuration {
        /// The text given.
        value: String,
        /// Why it does not parse.
        source: humantime::DurationError,
    },
    /// `every:` is shorter than a second.
    #[error("every: must be at least 1s")]
    EveryTooShort,
    /// A `days:` item names no day.
    #[error("{item:?}: {name:?} is not a day (mon..sun)")]
    NotADay {
        /// The whole item.
        item: String,
        /// The part that is not a day.
        name: String,
    },
    /// The `#n` of a `days:` item is not 1..5.
    #[error("{item:?}: #{nth} is not 1..5")]
    NotAnNth {
        /// The whole item.
        item: String,
        /// The `n` given.
        nth: String,
    },
    /// A calendar without `at`.
    #[error("calendar needs at: \"HH:MM\" or \"YYYY-MM-DD HH:MM\"")]
    MissingAt,
    /// A `days:` entry that is not text.
    #[error("days: {0} is not a day")]
    DayNotText(String),
    /// `days:` is not a list.
    #[error("days: {0} is not a list")]
    DaysNotList(String),
    /// A calendar key other than `at` and `days`.
    #[error("calendar: unknown key {0:?}")]
    UnknownKey(String),
    /// `at:` is neither a time of day nor a date and time.
    #[error("at: {0:?} is not HH:MM or YYYY-MM-DD HH:MM")]
    BadAt(String),
    /// A one-shot date with `days:`.
    #[error("a one-shot date (at: YYYY-MM-DD HH:MM) takes no days")]
    OneShotWithDays,
    /// The lowered cron expression is refused.
    #[error("calendar: {0}")]
    Cron(#[source] croner::errors::CronError),
    /// An interval too long to count in (a preview of an `every`).
    #[error(transparent)]
    OutOfRange(#[from] chrono::OutOfRangeError),
}

fn or_per_version(per_version: &bool) -> &'static str {
    if *per_version {
        ", once_per_version"
    } else {
        ""
    }
}

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

fn repeat(value: &Value, allow_per_version: bool) -> Result<Repeat, WhenError> {
    match value {
        Value::String(s) if s == "once" => Ok(Repeat::Once),
        Value::String(s) if s == "once_per_version" && allow_per_version => {
            Ok(Repeat::OncePerVersion)
        }
        Value::Object(map) => match map.get("every").and_then(Value::as_str) {
            Some(every) => humantime::parse_duration(every)
                .map_err(|source| WhenError::EveryNotDuration {
                    value: every.to_owned(),
                    source,
                })
                .and_then(|d| {
                    if d < Duration::from_secs(1) {
                        Err(WhenError::EveryTooShort)
                    } else {
                        Ok(Repeat::Every(d))
                    }
                }),
            None => Err(WhenError::Repeat {
                value: value.to_string(),
                per_version: allow_per_version,
            }),
        },
        other => Err(WhenError::Repeat {
            value: other.to_string(),
            per_version: allow_per_version,
        }),
    }
}

const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One `days:` item as a cron day-of-week field: `mon`, `mon-fri`, `tue#2`
/// (second Tuesday), `friL` (last Friday).
///
/// A range names days from its first to its last, forward through the
/// week: it may end on Sunday (`sat-sun`, `mon-sun`) or wrap past it
/// (`fri-mon` = Fri, Sat, Sun, Mon); it is spelled out as a list of day
/// numbers, so no cron library's idea of range bounds can refuse it. A
/// range from a day to itself is that day.
pub fn day_field(item: &str) -> Result<String, WhenError> {
    let lower = item.trim().to_ascii_lowercase();
    let number = |name: &str| {
        DAYS.iter()
            .position(|d| *d == name)
            .ok_or_else(|| WhenError::NotADay {
                item: item.to_owned(),
                name: name.to_owned(),
            })
    };
    if let Some((from, to)) = lower.split_once('-') {
        let (from, to) = (number(from.trim())?, number(to.trim())?);
        let span = (to + 7 - from) % 7;
        return Ok((0..=span)
            .map(|step| ((from + step) % 7).to_string())
            .collect::<Vec<_>>()
            .join(","));
    }
    if let Some((day, nth)) = lower.split_once('#') {
        let nth: u8 = nth.parse().map_err(|_| WhenError::NotAnNth {
            item: item.to_owned(),
            nth: nth.to_owned(),
        })?;
        if !(1..=5).contains(&nth) {
            return Err(WhenError::NotAnNth {
                item: item.to_owned(),
                nth: nth.to_string(),
            });
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
pub fn calendar_pattern(value: &Value) -> Result<(String, Option<i32>), WhenError> {
    let at = value
        .get("at")
        .and_then(Value::as_str)
        .ok_or(WhenError::MissingAt)?;
    let days: Vec<String> = match value.get("days") {
        None => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|d| {
                d.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| WhenError::DayNotText(d.to_string()))
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(WhenError::DaysNotList(other.to_string())),
    };
    if let Some(extra) = value
        .as_object()
        .and_then(|m| m.keys().find(|k| *k != "at" && *k != "days"))
    {
        return Err(WhenError::UnknownKey(extra.clone()));
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
        .map_err(|_| WhenError::BadAt(at.to_owned()))?;
    if !days.is_empty() {
        return Err(WhenError::OneShotWithDays);
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

/// Lowers a `when` to a plan.
pub fn lower(when: &When) -> Result<Plan, WhenError> {
    match (&when.per_pc, &when.per_target, &when.calendar, &when.on) {
        (Some(v), None, None, None) => Ok(Plan::PerPc(repeat(v, true)?)),
        (None, Some(v), None, None) => Ok(Plan::PerTarget(repeat(v, false)?)),
        (None, None, Some(v), None) => {
            let (pattern, year) = calendar_pattern(v)?;
            let cron: Cron = pattern.parse().map_err(WhenError::Cron)?;
            Ok(Plan::Calendar {
                pattern,
                cron: Box::new(cron),
                year,
            })
        }
        (None, None, None, Some(on)) => {
            if on.is_empty() || on.iter().any(|t| t != "startup") {
                return Err(WhenError::Triggers(on.clone()));
            }
            Ok(Plan::AgentSide)
        }
        _ => Err(WhenError::Forms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_startup_is_an_agent_side_trigger() {
        let on = |items: &[&str]| When {
            on: Some(items.iter().map(|s| s.to_string()).collect()),
            ..When::default()
        };
        assert!(matches!(lower(&on(&["startup"])), Ok(Plan::AgentSide)));
        for bad in [&[][..], &["logon"], &["startup", "shutdown"]] {
            assert!(
                matches!(lower(&on(bad)), Err(WhenError::Triggers(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn day_items_lower_to_cron_fields() {
        assert_eq!(day_field("mon").unwrap(), "1");
        assert_eq!(day_field("mon-fri").unwrap(), "1,2,3,4,5");
        assert_eq!(day_field("tue#2").unwrap(), "2#2");
        assert_eq!(day_field("friL").unwrap(), "5#L");
        assert!(day_field("funday").is_err());
        assert!(day_field("tue#9").is_err());
    }

    #[test]
    fn case_5_any_range_of_day_names_is_a_list_of_days() {
        assert_eq!(day_field("sat-sun").unwrap(), "6,0");
        assert_eq!(day_field("mon-sun").unwrap(), "1,2,3,4,5,6,0");
        assert_eq!(day_field("sun-sat").unwrap(), "0,1,2,3,4,5,6");
        assert_eq!(day_field("fri-mon").unwrap(), "5,6,0,1");
        assert_eq!(day_field("Wed-Wed").unwrap(), "3");
        assert_eq!(day_field(" sat - sun ").unwrap(), "6,0");
        let err = day_field("sat-funday").unwrap_err().to_string();
        assert!(
            err.contains("sat-funday") && err.contains("funday"),
            "{err}"
        );
        // Every range the rule accepts makes a pattern croner parses.
        for from in DAYS {
            for to in DAYS {
                let (pattern, _) =
                    calendar_pattern(&json!({"at": "09:00", "days": [format!("{from}-{to}")]}))
                        .unwrap();
                assert!(pattern.parse::<Cron>().is_ok(), "{from}-{to}: {pattern}");
            }
        }
    }

    #[test]
    fn calendar_forms_lower_to_patterns() {
        assert_eq!(
            calendar_pattern(&json!({"at": "09:05", "days": ["mon-fri"]})).unwrap(),
            ("5 9 * * 1,2,3,4,5".into(), None)
        );
        assert_eq!(
            calendar_pattern(&json!({"at": "2026-06-10 09:00"})).unwrap(),
            ("0 9 10 6 *".into(), Some(2026))
        );
        assert!(calendar_pattern(&json!({"at": "25:00"})).is_err());
        assert!(calendar_pattern(&json!({"at": "09:00", "dayz": []})).is_err());
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

    /// The typed errors say exactly what the string errors said (manifest
    /// validation and the simulation's traces show them).
    #[test]
    fn messages_are_unchanged() {
        let message = |when: When| lower(&when).err().map(|e| e.to_string());
        let per_pc = |v: Value| When {
            per_pc: Some(v),
            ..When::default()
        };
        let per_target = |v: Value| When {
            per_target: Some(v),
            ..When::default()
        };
        let calendar = |v: Value| When {
            calendar: Some(v),
            ..When::default()
        };
        assert_eq!(
            message(When::default()).unwrap(),
            "set exactly one of per_pc, per_target, calendar, on"
        );
        assert_eq!(
            message(per_pc(json!("twice"))).unwrap(),
            "\"twice\" is not once, once_per_version or {every: <duration>}"
        );
        assert_eq!(
            message(per_target(json!({"each": "1h"}))).unwrap(),
            "{\"each\":\"1h\"} is not once or {every: <duration>}"
        );
        assert_eq!(
            message(per_pc(json!({"every": "soon"}))).unwrap(),
            "every: \"soon\" is not a duration: write a number and a unit, like 30s, 5m or 1h 30m"
        );
        assert_eq!(
            message(per_pc(json!({"every": "10ms"}))).unwrap(),
            "every: must be at least 1s"
        );
        assert_eq!(
            message(calendar(json!({"days": ["mon"]}))).unwrap(),
            "calendar needs at: \"HH:MM\" or \"YYYY-MM-DD HH:MM\""
        );
        assert_eq!(
            message(calendar(json!({"at": "09:00", "days": [1]}))).unwrap(),
            "days: 1 is not a day"
        );
        assert_eq!(
            message(calendar(json!({"at": "09:00", "days": "mon"}))).unwrap(),
            "days: \"mon\" is not a list"
        );
        assert_eq!(
            message(calendar(json!({"at": "09:00", "dayz": []}))).unwrap(),
            "calendar: unknown key \"dayz\""
        );
        assert_eq!(
            message(calendar(json!({"at": "25:00"}))).unwrap(),
            "at: \"25:00\" is not HH:MM or YYYY-MM-DD HH:MM"
        );
        assert_eq!(
            message(calendar(json!({"at": "2026-06-10 09:00", "days": ["mon"]}))).unwrap(),
            "a one-shot date (at: YYYY-MM-DD HH:MM) takes no days"
        );
        assert_eq!(
            day_field("Funday").unwrap_err().to_string(),
            "\"Funday\": \"funday\" is not a day (mon..sun)"
        );
        assert_eq!(
            day_field("tue#x").unwrap_err().to_string(),
            "\"tue#x\": #x is not 1..5"
        );
        assert_eq!(
            day_field("tue#09").unwrap_err().to_string(),
            "\"tue#09\": #9 is not 1..5"
        );
    }
}
