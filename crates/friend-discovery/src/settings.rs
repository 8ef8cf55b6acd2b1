//! The friend-discovery service's own configuration, from environment variables only (the shared part is
//! `platform::settings::Common`).

use std::num::NonZeroU32;

use platform::settings::{Load, SettingsError};
use serde::Deserialize;

/// What the friend-discovery service reads at start beyond what every service reads.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// `SUGGESTIONS_PER_DAY` (500): suggestions one asker is served per day (UTC); beyond, the answer is
    /// RESOURCE_EXHAUSTED. Bounds how fast anyone can learn who is a member.
    pub suggestions_per_day: NonZeroU32,
    /// `SUGGESTION_SOURCES` (1000): of the members who have the asker in their contacts, the newest this many who
    /// may be shown are matched per page (reading at most ten times as many), which bounds a page's work.
    pub suggestion_sources: NonZeroU32,
}

impl Load for Settings {
    fn load() -> Result<Self, SettingsError> {
        platform::settings::load()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            suggestions_per_day: NonZeroU32::new(500).unwrap_or(NonZeroU32::MIN),
            suggestion_sources: NonZeroU32::new(1000).unwrap_or(NonZeroU32::MIN),
        }
    }
}
