//! Mooncake's configuration mechanisms, owned here once for every component:
//!
//! - [`units`]: the one parser and printer of human-written sizes (`1.5GiB`, `64KB`) and
//!   durations (`500ms`, `2s`), used by every flag, configuration file and the Python module.
//! - [`layer`]: the one configuration layer, defaults < TOML file < environment
//!   (`MOONCAKE_<COMPONENT>_<FIELD>` and the reference's names) < flags, over a serde struct.
//!
//! This crate is at the bottom of the workspace: it depends on no other Mooncake crate.

pub mod layer;
pub mod units;

pub use layer::{Alias, ConfigError, Layers, NoFlags};
pub use units::{format_size, parse_duration, parse_size, parse_size_usize, UnitError};
