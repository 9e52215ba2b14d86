//! branchguard: incident response and drills for a bank's branch network.
//!
//! See `docs/ARCHITECTURE.md` for the map. Data flows one way:
//! sources (intake, drills) → core (matching, incidents, timers) → sinks (outbox, metrics).
#![forbid(unsafe_code)]

pub mod alertmanager;
pub mod api;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod duration;
pub mod engine;
pub mod event;
pub mod links_page;
pub mod matching;
pub mod metrics;
pub mod notify;
pub mod schedule;
pub mod store;
pub mod target;
pub mod template;
