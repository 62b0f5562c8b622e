//! What is due, and what stops a schedule from firing — pure decisions
//! shared by the backend's scheduler and the agent's own (for
//! `runs_on: agent` schedules): the next cron occurrence in a zone, the
//! latest calendar occurrence in an interval, whether a repeat is due
//! after its last fire, and the schedule-level gates (enabled, freeze,
//! active dates, skip dates, time window). [`super::when`] lowers a
//! `when:` to the [`Plan`] these take.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Timelike, Utc};
use croner::Cron;

use super::when::{Plan, Repeat};

/// The next cron occurrence strictly after `after`, in local time when
/// `local` (the host's zone), else UTC.
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

/// The latest calendar occurrence in `(since, now]`, if any (a one-shot
/// date's occurrences count only in its year).
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

/// A day in `active` or `skip_dates`: RFC 3339, or `YYYY-MM-DD` (midnight
/// UTC).
pub fn parse_day(text: &str) -> Option<DateTime<Utc>> {
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

/// The schedule-level gates of a schedule (its `enabled`, `active`,
/// `constraints.skip_dates` and `constraints.window`, and `tz`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScheduleGates<'a> {
    /// `enabled`.
    pub enabled: bool,
    /// `active.from`.
    pub active_from: Option<&'a str>,
    /// `active.until`.
    pub active_until: Option<&'a str>,
    /// `constraints.skip_dates` (`YYYY-MM-DD`, in the schedule's zone).
    pub skip_dates: &'a [String],
    /// `constraints.window` (`HH:MM-HH:MM`, may wrap midnight).
    pub window: Option<&'a str>,
    /// `tz: local`: dates and times are the host's local ones.
    pub local: bool,
}

/// Why a schedule may not fire at `now` (`None`: it may), in this order:
/// disabled, the fleet-wide freeze, before `active.from`, at or after
/// `active.until`, a skip date, outside the window.
pub fn blocked(gates: &ScheduleGates<'_>, now: DateTime<Utc>, frozen: bool) -> Option<String> {
    if !gates.enabled {
        return Some("disabled".into());
    }
    if frozen {
        return Some("fleet-wide freeze".into());
    }
    if let Some(from) = gates.active_from.and_then(parse_day) {
        if now < from {
            return Some(format!("not active before {from}"));
        }
    }
    if let Some(until) = gates.active_until.and_then(parse_day) {
        if now >= until {
            return Some(format!("not active after {until}"));
        }
    }
    let (date, time) = if gates.local {
        let t = now.with_timezone(&chrono::Local);
        (t.date_naive(), t.time())
    } else {
        (now.date_naive(), now.time())
    };
    if gates
        .skip_dates
        .iter()
        .any(|d| d == &date.format("%Y-%m-%d").to_string())
    {
        return Some(format!("{date} is a skip date"));
    }
    if let Some((from, to)) = gates.window.and_then(|w| w.split_once('-')) {
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
    None
}

/// What an agent remembers of one `runs_on: agent` schedule's fires. It
/// is written before a fire starts, so a crash never fires twice.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FireRecord {
    /// Calendar forms: occurrences up to this time were considered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<DateTime<Utc>>,
    /// Repeats: the last fire and the job version it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<(DateTime<Utc>, String)>,
    /// `on: [startup]`: the boot it last fired in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<String>,
}

/// Whether an agent fires a schedule at `now`: the occurrence to fire (if
/// any) and the record to keep. The forms:
///
/// - calendar: the latest occurrence since the record's cursor (the first
///   evaluation only sets the cursor: the past never fires). An occurrence
///   missed while the host was off fires late, and the command's start
///   deadline (the occurrence plus `starting_deadline`) then skips it with
///   125 rather than run it late;
/// - `per_pc` / `per_target` (per agent): [`repeat_due`] after the last
///   fire, at `now`;
/// - `on: [startup]`: once per `boot` (the host's boot id).
///
/// A gate ([`blocked`]: disabled, freeze, active dates, skip dates,
/// window) holds a repeat or a startup fire until it lifts, and drops a
/// calendar occurrence, as the backend's scheduler does.
pub fn agent_fire(
    plan: &Plan,
    gates: &ScheduleGates<'_>,
    version: &str,
    record: &FireRecord,
    now: DateTime<Utc>,
    boot: &str,
    frozen: bool,
) -> (Option<DateTime<Utc>>, FireRecord) {
    let mut next = record.clone();
    let open = blocked(gates, now, frozen).is_none();
    match plan {
        Plan::Calendar { .. } => {
            next.cursor = Some(now);
            let Some(since) = record.cursor else {
                return (None, next);
            };
            let due = calendar_due(plan, since, now, gates.local).filter(|_| open);
            (due, next)
        }
        Plan::PerPc(repeat) | Plan::PerTarget(repeat) => {
            let last = record.last.as_ref().map(|(at, v)| (*at, v.as_str()));
            if open && repeat_due(repeat, last, version, now) {
                next.last = Some((now, version.to_owned()));
                (Some(now), next)
            } else {
                (None, next)
            }
        }
        Plan::AgentSide => {
            if open && record.boot.as_deref() != Some(boot) {
                next.boot = Some(boot.to_owned());
                (Some(now), next)
            } else {
                (None, next)
            }
        }
    }
}

/// When [`agent_fire`] may next fire `plan` without a change of schedule
/// (`None`: not by time alone — once-forms and startup).
pub fn agent_next_due(
    plan: &Plan,
    record: &FireRecord,
    now: DateTime<Utc>,
    local: bool,
) -> Option<DateTime<Utc>> {
    match plan {
        Plan::Calendar { cron, .. } => {
            next_occurrence(cron, record.cursor.unwrap_or(now).max(now), local)
        }
        Plan::PerPc(Repeat::Every(every)) | Plan::PerTarget(Repeat::Every(every)) => {
            let every = chrono::Duration::from_std(*every).ok()?;
            Some(record.last.as_ref().map_or(now, |(at, _)| *at + every))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::when::{lower, When};
    use proptest::prelude::*;

    fn plan(when: serde_json::Value) -> Plan {
        lower(&serde_json::from_value::<When>(when).unwrap()).unwrap()
    }

    fn open() -> ScheduleGates<'static> {
        ScheduleGates {
            enabled: true,
            ..ScheduleGates::default()
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_780_000_000 + secs, 0).unwrap()
    }

    proptest! {
        /// Evaluated at any increasing times, with the record kept between
        /// evaluations (as on disk), a calendar schedule fires only cron
        /// occurrences, each at most once, in order, never one before the
        /// first evaluation, and never one the backend's `calendar_due`
        /// would not give for the same interval.
        #[test]
        fn calendar_fires_are_distinct_occurrences(steps in prop::collection::vec(1i64..20_000, 1..40)) {
            let plan = plan(serde_json::json!({"calendar": {"at": "09:00"}}));
            let mut record = FireRecord::default();
            let mut now = at(0);
            let first = now;
            let mut fired: Vec<DateTime<Utc>> = Vec::new();
            for step in steps {
                let (fire, next) = agent_fire(&plan, &open(), "1", &record, now, "boot", false);
                if let Some(fire) = fire {
                    prop_assert!(fire > first && fire <= now);
                    prop_assert_eq!(Some(fire), calendar_due(&plan, record.cursor.unwrap(), now, false));
                    prop_assert!(fired.last().is_none_or(|last| fire > *last));
                    fired.push(fire);
                }
                // The same evaluation again (a crash after the record was
                // written) fires nothing.
                prop_assert_eq!(agent_fire(&plan, &open(), "1", &next, now, "boot", false).0, None);
                record = next;
                now += chrono::Duration::seconds(step * 7);
            }
        }

        /// A repeat fires again only after its interval, a startup once per
        /// boot, and a frozen fleet fires nothing.
        #[test]
        fn repeats_and_startups_follow_their_rule(gaps in prop::collection::vec(0i64..7_200, 1..30), frozen in any::<bool>()) {
            let every = plan(serde_json::json!({"per_pc": {"every": "1h"}}));
            let startup = plan(serde_json::json!({"on": ["startup"]}));
            let (mut r1, mut r2) = (FireRecord::default(), FireRecord::default());
            let mut now = at(0);
            let mut fires: Vec<DateTime<Utc>> = Vec::new();
            let mut startups = 0;
            for (i, gap) in gaps.iter().enumerate() {
                now += chrono::Duration::seconds(*gap);
                let (fire, next) = agent_fire(&every, &open(), "1", &r1, now, "b", frozen);
                if let Some(fire) = fire {
                    prop_assert!(fires.last().is_none_or(|last| fire - *last >= chrono::Duration::hours(1)));
                    fires.push(fire);
                }
                r1 = next;
                let boot = if i < gaps.len() / 2 { "boot-1" } else { "boot-2" };
                let (fire, next) = agent_fire(&startup, &open(), "1", &r2, now, boot, frozen);
                startups += usize::from(fire.is_some());
                r2 = next;
            }
            if frozen {
                prop_assert!(fires.is_empty() && startups == 0);
            } else {
                prop_assert!(!fires.is_empty());
                prop_assert_eq!(startups, if gaps.len() >= 2 { 2 } else { 1 });
            }
        }
    }

    #[test]
    fn once_per_version_fires_again_for_a_new_version() {
        let plan = plan(serde_json::json!({"per_pc": "once_per_version"}));
        let (fire, record) = agent_fire(
            &plan,
            &open(),
            "1",
            &FireRecord::default(),
            at(0),
            "b",
            false,
        );
        assert_eq!(fire, Some(at(0)));
        assert_eq!(
            agent_fire(&plan, &open(), "1", &record, at(60), "b", false).0,
            None
        );
        assert_eq!(
            agent_fire(&plan, &open(), "2", &record, at(60), "b", false).0,
            Some(at(60))
        );
    }

    #[test]
    fn a_missed_occurrence_fires_late_once_for_its_deadline_to_judge() {
        let plan = plan(serde_json::json!({"calendar": {"at": "09:00"}}));
        // Seen at 08:00, then the host was off until 10:30.
        let eight = DateTime::parse_from_rfc3339("2026-06-10T08:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let (_, record) = agent_fire(
            &plan,
            &open(),
            "1",
            &FireRecord::default(),
            eight,
            "b",
            false,
        );
        let half_ten = eight + chrono::Duration::minutes(150);
        let (fire, record) = agent_fire(&plan, &open(), "1", &record, half_ten, "b", false);
        assert_eq!(fire, Some(eight + chrono::Duration::hours(1)));
        assert_eq!(
            agent_fire(&plan, &open(), "1", &record, half_ten, "b", false).0,
            None
        );
        assert_eq!(
            agent_next_due(&plan, &record, half_ten, false),
            Some(eight + chrono::Duration::hours(25))
        );
    }
}
