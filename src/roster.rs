//! Duty rosters: who holds a role at a branch at a given moment.
//!
//! Pure: everything here takes the instant it is asked about, so the engine
//! resolves a role at the moment it writes a message and tests inject the
//! clock. Turns are counted in the roster's local wall-clock time, so a `1d`
//! shift starts at the same hour every day across daylight-saving changes
//! (that day's turn is 23 or 25 hours long) — a rotation counted in UTC
//! drifts an hour twice a year.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use crate::duration::Calendar;

/// One roster file, checked.
#[derive(Debug, Clone)]
pub struct Roster {
    pub id: String,
    /// `file:line:col` of the roster's `id`, for warnings about it.
    pub at: String,
    pub role: String,
    pub branches: BTreeSet<String>,
    pub tz: Tz,
    pub layers: Vec<Layer>,
    pub overrides: Vec<Override>,
    pub handoff: bool,
}

#[derive(Debug, Clone)]
pub struct Layer {
    pub name: String,
    /// Local time the first turn begins.
    pub start: NaiveDateTime,
    /// Each person's turn, in wall-clock time.
    pub shift: chrono::Duration,
    pub people: Vec<String>,
    pub only: Only,
    /// Nobody is on duty in this layer's window, on purpose: not a gap.
    pub uncovered: bool,
}

/// When a layer applies: on which days, and between which local times.
#[derive(Debug, Clone, Default)]
pub struct Only {
    /// None: every day.
    pub days: Option<BTreeSet<DayKind>>,
    /// `from`..`to` local; `to` before `from` crosses midnight (the night
    /// belongs to the day it started on).
    pub window: Option<(NaiveTime, NaiveTime)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DayKind {
    /// Monday = 0.
    Weekday(u8),
    Holiday,
    Working,
    Weekend,
}

impl DayKind {
    pub fn parse(s: &str) -> Result<DayKind, String> {
        match s {
            "holiday" => Ok(DayKind::Holiday),
            "working" => Ok(DayKind::Working),
            "weekend" => Ok(DayKind::Weekend),
            _ => crate::duration::parse_weekday(s)
                .map(DayKind::Weekday)
                .map_err(|_| {
                    format!(
                        "`{s}`: expected a weekday (Mon … Sun), `working`, `weekend` or `holiday`"
                    )
                }),
        }
    }

    fn holds(self, d: NaiveDate, cal: &Calendar) -> bool {
        let wd = d.weekday().num_days_from_monday() as u8;
        match self {
            DayKind::Weekday(w) => w == wd,
            DayKind::Holiday => cal.holidays.contains(&d),
            DayKind::Working => cal.is_working_day(d),
            DayKind::Weekend => cal.weekend.contains(&wd),
        }
    }
}

/// Someone on duty instead of every layer, for a while.
#[derive(Debug, Clone)]
pub struct Override {
    pub person: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// A person away (leave, sickness): their turns fall to nobody unless an
/// override covers them.
pub type Away = BTreeMap<String, Vec<(DateTime<Utc>, DateTime<Utc>)>>;

/// Who is on duty, and why (for the history and the API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Duty {
    pub person: Option<String>,
    /// `override`, `layer nights`, or why nobody is.
    pub why: String,
    /// Nobody on duty on purpose (an `uncovered` layer): not a gap.
    #[serde(skip)]
    pub intended: bool,
}

/// How many stretches one walk over a roster yields at most.
pub const MAX_SEGMENTS: usize = 20_000;

/// How many instants one walk looks at at most: a roster of one-second turns
/// of one person is not walked for days on a request or the engine thread.
pub const MAX_EDGES: usize = 100_000;

/// Where a walk to the next change of duty ended.
enum Walk {
    Change(DateTime<Utc>, Duty),
    Stopped(DateTime<Utc>),
    Horizon,
}

/// A stretch of time with one duty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub duty: Duty,
}

/// A stretch of time with nobody on duty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
    /// Why nobody: `nobody in any layer`, `sun.hao is away`.
    pub why: String,
}

/// The instant a local time stands for; a time a DST change skips moves to
/// the first instant after it, an hour that repeats takes its first pass.
pub fn to_utc(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    let mut probe = local;
    for _ in 0..=180 {
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return t.with_timezone(&Utc);
        }
        probe += chrono::Duration::minutes(1);
    }
    Utc.from_utc_datetime(&local)
}

impl Layer {
    /// The turn a local time falls in: whose it is and when it began (local).
    fn turn(&self, local: NaiveDateTime) -> Option<(&str, NaiveDateTime)> {
        if local < self.start || self.people.is_empty() {
            return None;
        }
        let step = self.shift.num_seconds().max(1);
        let n = (local - self.start).num_seconds().div_euclid(step);
        let person = self.people[(n as usize) % self.people.len()].as_str();
        Some((person, self.start + chrono::Duration::seconds(n * step)))
    }

    fn day_ok(&self, d: NaiveDate, cal: &Calendar) -> bool {
        self.only
            .days
            .as_ref()
            .is_none_or(|days| days.iter().any(|k| k.holds(d, cal)))
    }

    /// Whether the layer's `only` lets it apply at this local time.
    fn applies(&self, local: NaiveDateTime, cal: &Calendar) -> bool {
        if local < self.start {
            return false;
        }
        let d = local.date();
        let t = local.time();
        match self.only.window {
            None => self.day_ok(d, cal),
            Some((from, to)) if from < to => t >= from && t < to && self.day_ok(d, cal),
            Some((from, to)) if from > to => {
                (t >= from && self.day_ok(d, cal))
                    || (t < to && d.pred_opt().is_some_and(|p| self.day_ok(p, cal)))
            }
            Some(_) => self.day_ok(d, cal),
        }
    }

    /// The local instants near `local` where this layer may change: its next
    /// turn and the edges of its window on the days around.
    fn edges(&self, local: NaiveDateTime, out: &mut Vec<NaiveDateTime>) {
        if local < self.start {
            out.push(self.start);
        } else if let Some((_, began)) = self.turn(local) {
            out.push(began + self.shift.max(chrono::Duration::seconds(1)));
        }
        if self.only.days.is_none() && self.only.window.is_none() {
            return;
        }
        let today = local.date();
        for back in 0..=1u64 {
            for ahead in 0..=2u64 {
                let Some(d) = today
                    .checked_sub_days(Days::new(back))
                    .and_then(|d| d.checked_add_days(Days::new(ahead)))
                else {
                    continue;
                };
                if self.only.days.is_some() {
                    out.push(d.and_time(NaiveTime::MIN));
                }
                if let Some((from, to)) = self.only.window {
                    out.push(d.and_time(from));
                    out.push(d.and_time(to));
                }
            }
        }
    }
}

impl Roster {
    pub fn covers(&self, role: &str, branch: &str) -> bool {
        self.role == role && self.branches.contains(branch)
    }

    /// Who is on duty at `at`: an override first, then the last layer that
    /// applies; an away person's turn falls to nobody.
    pub fn on_duty(&self, at: DateTime<Utc>, cal: &Calendar, away: &Away) -> Duty {
        if let Some(o) = self
            .overrides
            .iter()
            .rev()
            .find(|o| o.from <= at && at < o.to)
        {
            return Duty {
                person: Some(o.person.clone()),
                why: "override".into(),
                intended: false,
            };
        }
        let local = at.with_timezone(&self.tz).naive_local();
        let mut uncovered = None;
        for layer in self.layers.iter().rev() {
            if !layer.applies(local, cal) {
                continue;
            }
            if layer.uncovered {
                uncovered.get_or_insert(layer);
                continue;
            }
            let Some((person, _)) = layer.turn(local) else {
                continue;
            };
            let is_away = away
                .get(person)
                .is_some_and(|spans| spans.iter().any(|(f, t)| *f <= at && at < *t));
            if is_away {
                return Duty {
                    person: None,
                    why: format!("{person} is away (layer {})", layer.name),
                    intended: false,
                };
            }
            return Duty {
                person: Some(person.to_string()),
                why: format!("layer {}", layer.name),
                intended: false,
            };
        }
        match uncovered {
            Some(l) => Duty {
                person: None,
                why: format!("uncovered on purpose (layer {})", l.name),
                intended: true,
            },
            None => Duty {
                person: None,
                why: "nobody in any layer".into(),
                intended: false,
            },
        }
    }

    /// The first instant after `at` where the answer may change.
    fn next_edge(&self, at: DateTime<Utc>, away: &Away) -> Option<DateTime<Utc>> {
        let local = at.with_timezone(&self.tz).naive_local();
        let mut locals = Vec::new();
        for l in &self.layers {
            l.edges(local, &mut locals);
        }
        let fixed = self
            .overrides
            .iter()
            .flat_map(|o| [o.from, o.to])
            .chain(away.values().flatten().flat_map(|(f, t)| [*f, *t]));
        locals
            .into_iter()
            .map(|l| to_utc(self.tz, l))
            .chain(fixed)
            .filter(|t| *t > at)
            .min()
    }

    /// When the duty at `at` ends, and the duty after it (none within
    /// `horizon`: the same person to the end of it).
    pub fn until(
        &self,
        at: DateTime<Utc>,
        horizon: DateTime<Utc>,
        cal: &Calendar,
        away: &Away,
    ) -> Option<(DateTime<Utc>, Duty)> {
        match self.walk_to_change(at, horizon, cal, away) {
            Walk::Change(t, d) => Some((t, d)),
            Walk::Stopped(_) | Walk::Horizon => None,
        }
    }

    /// When to look at the roster again after `at`: its next change, or,
    /// for a roster of many short turns of one person, where a bounded walk
    /// stopped (the engine thread never walks for long).
    pub fn recheck(
        &self,
        at: DateTime<Utc>,
        horizon: DateTime<Utc>,
        cal: &Calendar,
        away: &Away,
    ) -> DateTime<Utc> {
        match self.walk_to_change(at, horizon, cal, away) {
            Walk::Change(t, _) | Walk::Stopped(t) => t,
            Walk::Horizon => horizon,
        }
    }

    fn walk_to_change(
        &self,
        at: DateTime<Utc>,
        horizon: DateTime<Utc>,
        cal: &Calendar,
        away: &Away,
    ) -> Walk {
        let now = self.on_duty(at, cal, away);
        let mut t = at;
        for _ in 0..MAX_EDGES {
            let Some(next) = self.next_edge(t, away).filter(|n| *n <= horizon) else {
                return Walk::Horizon;
            };
            let d = self.on_duty(next, cal, away);
            if d.person != now.person {
                return Walk::Change(next, d);
            }
            t = next;
        }
        Walk::Stopped(t)
    }

    /// When the duty at `at` began, looked for as far back as `back`
    /// (none: it began before that).
    pub fn since(
        &self,
        at: DateTime<Utc>,
        back: chrono::Duration,
        cal: &Calendar,
        away: &Away,
    ) -> Option<DateTime<Utc>> {
        let stretches = self.segments(at - back, at + chrono::Duration::milliseconds(1), cal, away);
        match stretches.as_slice() {
            // A walk cut off before `at` claims nothing; one stretch began
            // before the look-back.
            [.., last] if last.until <= at => None,
            [_, .., last] => Some(last.from),
            _ => None,
        }
    }

    /// `from..until` cut where the person on duty changes: each stretch
    /// with its duty (at most `MAX_SEGMENTS`; a roster of seconds-long
    /// turns is cut off there rather than walked for ever).
    pub fn segments(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        cal: &Calendar,
        away: &Away,
    ) -> Vec<Segment> {
        let mut out: Vec<Segment> = Vec::new();
        let mut t = from;
        let mut cur = self.on_duty(t, cal, away);
        let mut began = from;
        let mut edges = 0;
        // Where the walk ended: `until`, or earlier when cut off (what lies
        // beyond is not claimed either way).
        let mut end = t;
        loop {
            if out.len() >= MAX_SEGMENTS || edges >= MAX_EDGES {
                break;
            }
            edges += 1;
            let next = match self.next_edge(t, away) {
                Some(n) if n < until => n,
                _ => {
                    end = until;
                    break;
                }
            };
            let d = self.on_duty(next, cal, away);
            if d.person != cur.person || d.intended != cur.intended {
                let duty = std::mem::replace(&mut cur, d);
                out.push(Segment {
                    from: began,
                    until: next,
                    duty,
                });
                began = next;
            }
            t = next;
            end = t;
        }
        out.push(Segment {
            from: began,
            until: end,
            duty: cur,
        });
        out
    }

    /// Every stretch in `from..until` with nobody on duty (not counting
    /// windows left uncovered on purpose).
    pub fn gaps(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        cal: &Calendar,
        away: &Away,
    ) -> Vec<Gap> {
        self.segments(from, until, cal, away)
            .into_iter()
            .filter(|s| s.duty.person.is_none() && !s.duty.intended)
            .map(|s| Gap {
                from: s.from,
                until: s.until,
                why: s.duty.why,
            })
            .collect()
    }
}

impl Roster {
    /// The turns in `from..until`, for a calendar: each stretch someone is
    /// on duty, with the person's name from `name_of`.
    pub fn turns(
        &self,
        from: DateTime<Utc>,
        until: DateTime<Utc>,
        cal: &Calendar,
        away: &Away,
        name_of: impl Fn(&str) -> String,
    ) -> Vec<ics::Turn> {
        // The turn under way keeps its real start (and so its UID) from
        // one fetch to the next: walk from a week before.
        self.segments(from - chrono::Duration::days(8), until, cal, away)
            .into_iter()
            .filter(|s| s.until > from)
            .filter_map(|s| {
                let person = s.duty.person?;
                Some(ics::Turn {
                    roster: self.id.clone(),
                    role: self.role.clone(),
                    name: name_of(&person),
                    person,
                    from: s.from,
                    until: s.until,
                })
            })
            .collect()
    }
}

/// The roster that covers (role, branch), if any.
pub fn covering<'a>(
    rosters: &'a [std::sync::Arc<Roster>],
    role: &str,
    branch: &str,
) -> Option<(usize, &'a Roster)> {
    rosters
        .iter()
        .enumerate()
        .find(|(_, r)| r.covers(role, branch))
        .map(|(i, r)| (i, &**r))
}

/// `YYYY-MM-DDTHH:MM[:SS]`, or a date alone (its midnight).
pub fn parse_local(s: &str) -> Result<NaiveDateTime, String> {
    for f in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t);
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_time(NaiveTime::MIN))
        .map_err(|_| {
            format!("`{s}`: expected a local time as YYYY-MM-DDTHH:MM[:SS] or a date YYYY-MM-DD")
        })
}

/// `HH:MM`.
pub fn parse_clock(s: &str) -> Result<NaiveTime, String> {
    NaiveTime::parse_from_str(s, "%H:%M")
        .map_err(|_| format!("`{s}`: expected a time of day as HH:MM"))
}

pub mod ics;
#[cfg(test)]
mod tests;
