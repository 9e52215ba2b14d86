//! Loading and checking `branchguard.yaml`, `playbooks/*.yaml` and `drills/*.yaml`.
//!
//! [`load`] is the one way configuration enters the program: `check`, `match`,
//! start-up and every reload go through it. It reads all files, collects every
//! problem it finds (not just the first) and returns either a consistent
//! [`Loaded`] set or the full list of [`Diagnostics`].
//!
//! **Invariant:** loading does no I/O besides reading the files; it never touches
//! the store or the network.

mod coverage;
mod database;
mod files;
mod model;
mod validate;

pub use coverage::CoverageGap;
pub use database::{Database, PgTarget, PgUrl, pg_target};
pub use model::*;
pub use validate::{Records, is_yaml_file, load, records};
