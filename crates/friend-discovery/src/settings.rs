//! The friend-discovery service's configuration, from environment variables only.

use std::num::NonZeroU32;

use platform::{
    service::Service as _,
    settings::{Common, SettingsError},
};
use serde::Deserialize;

use crate::FriendDiscovery;

/// Everything the friend-discovery service reads at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Ports, database, broker, subscription, shutdown, telemetry.
    pub common: Common,
    /// `SUGGESTIONS_PER_DAY` (500): suggestions one asker is served per day (UTC); beyond, the answer is
    /// RESOURCE_EXHAUSTED. Bounds how fast anyone can learn who is a member.
    pub suggestions_per_day: i32,
}

impl AsRef<Common> for Settings {
    fn as_ref(&self) -> &Common {
        &self.common
    }
}

#[derive(Deserialize)]
#[serde(default)]
struct Own {
    suggestions_per_day: NonZeroU32,
}

impl Default for Own {
    fn default() -> Self {
        Self { suggestions_per_day: NonZeroU32::new(500).unwrap_or(NonZeroU32::MIN) }
    }
}

impl Settings {
    /// Reads and checks every variable; the first bad one is named in the error.
    pub fn load() -> Result<Self, SettingsError> {
        let own: Own = platform::settings::load()?;
        Ok(Self {
            common: Common::load(FriendDiscovery::NAME, FriendDiscovery::PORTS, true)?,
            suggestions_per_day: i32::try_from(own.suggestions_per_day.get()).unwrap_or(i32::MAX),
        })
    }
}
