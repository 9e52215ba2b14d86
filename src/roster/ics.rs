//! RFC 5545 calendars of turns, for phones and calendar apps. Written by the
//! `icalendar` crate (line folding and text escaping are its job); each
//! turn is one event with a stable UID, so a subscribed calendar updates its
//! events instead of duplicating them.

use chrono::{DateTime, Utc};
use icalendar::{Calendar, Component, Event, EventLike};

/// One person's turn in one roster, clipped to its windows.
#[derive(Debug, Clone)]
pub struct Turn {
    pub roster: String,
    pub role: String,
    pub person: String,
    /// The person's name, for the event's title.
    pub name: String,
    pub from: DateTime<Utc>,
    pub until: DateTime<Utc>,
}

pub fn render(title: &str, turns: &[Turn]) -> String {
    let mut cal = Calendar::new();
    cal.name(title);
    for t in turns {
        cal.push(
            Event::new()
                .uid(&format!(
                    "{}-{}-{}@branchguard",
                    t.roster,
                    t.person,
                    t.from.timestamp()
                ))
                // The turn's own start, not the time of the request: the same
                // turn reads the same on every fetch.
                .timestamp(t.from)
                .summary(&format!("{} on duty: {}", t.role, t.name))
                .description(&format!("roster {}", t.roster))
                .starts(t.from)
                .ends(t.until)
                .done(),
        );
    }
    cal.done().to_string()
}
