//! branchguard: incident response and drills for a bank's branch network.
//!
//! See `docs/ARCHITECTURE.md` for the map. Data flows one way:
//! sources (HTTP intake, Alertmanager) → the engine's one door → the engine
//! (pure decisions) → the store (one writer, group commit) → sinks (email,
//! webhooks, metrics). One reload path publishes the configuration to every part.
#![forbid(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod diag;
pub mod duration;
pub mod engine;
pub mod event;
pub mod export;
pub mod ha;
pub mod html;
pub mod http;
pub mod incident_report;
pub mod matching;
pub mod metrics;
pub mod notify;
pub mod private;
pub mod reload;
pub mod report;
pub mod response;
pub mod roster;
pub mod schedule;
pub mod scope;
pub mod show;
pub mod sources;
pub mod store;
pub mod target;
pub mod template;
