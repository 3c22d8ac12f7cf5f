//! The donate page's settings, kept in `localStorage` so they survive reloads.

use distributivecom_protocol::browser::Settings;
use serde::{Deserialize, Serialize};

/// The `localStorage` key.
pub const STORAGE_KEY: &str = "distributivecom.donate.settings";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DonateSettings {
    pub threads: u32,
    pub throttle_percent: u32,
    pub pause_when_hidden: bool,
    pub pause_on_battery: bool,
}

impl DonateSettings {
    /// `navigator.hardwareConcurrency - 1` threads (at least 1), 50% throttle, no automatic pauses.
    pub fn defaults(cores: u32) -> DonateSettings {
        let volunteer = Settings::default_for(cores);
        DonateSettings {
            threads: volunteer.threads,
            throttle_percent: volunteer.throttle_percent,
            pause_when_hidden: false,
            pause_on_battery: false,
        }
    }

    /// Saved settings, or the defaults where nothing (or something unreadable) was saved.
    pub fn from_saved(saved: Option<&str>, cores: u32) -> DonateSettings {
        saved
            .and_then(|text| serde_json::from_str::<DonateSettings>(text).ok())
            .map(DonateSettings::clamped)
            .unwrap_or_else(|| DonateSettings::defaults(cores))
    }

    pub fn to_saved(self) -> String {
        serde_json::to_string(&self).unwrap_or_default()
    }

    pub fn clamped(self) -> DonateSettings {
        let volunteer = self.volunteer();
        DonateSettings { threads: volunteer.threads, throttle_percent: volunteer.throttle_percent, ..self }
    }

    /// What the volunteer needs to know.
    pub fn volunteer(self) -> Settings {
        Settings { threads: self.threads, throttle_percent: self.throttle_percent }.clamped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_leave_a_core_for_the_visitor() {
        assert_eq!(DonateSettings::defaults(8).threads, 7);
        assert_eq!(DonateSettings::defaults(1).threads, 1);
        assert_eq!(DonateSettings::defaults(8).throttle_percent, 50);
    }

    #[test]
    fn saved_settings_round_trip_and_bad_ones_fall_back_to_defaults() {
        let settings =
            DonateSettings { threads: 3, throttle_percent: 80, pause_when_hidden: true, pause_on_battery: false };
        assert_eq!(DonateSettings::from_saved(Some(&settings.to_saved()), 8), settings);
        assert_eq!(DonateSettings::from_saved(Some("{not json"), 4), DonateSettings::defaults(4));
        assert_eq!(DonateSettings::from_saved(None, 4), DonateSettings::defaults(4));
        let wild = r#"{"threads": 0, "throttle_percent": 500, "pause_when_hidden": false, "pause_on_battery": true}"#;
        let clamped = DonateSettings::from_saved(Some(wild), 4);
        assert_eq!((clamped.threads, clamped.throttle_percent, clamped.pause_on_battery), (1, 100, true));
    }
}
