//! Recipients' preferences: which channels and lanes they opted out of.

use super::{Channel, EpochMillis, Lane};

/// One recipient's choice for one channel and lane (`None`: every lane).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Preference {
    pub channel: Channel,
    pub lane: Option<Lane>,
    pub opted_out: bool,
    pub updated_at: EpochMillis,
}

/// Everything one recipient of one customer has set, and its version: every change bumps the
/// version, so a cache keeps only the newest set it has seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecipientPreferences {
    pub version: i64,
    pub preferences: Vec<Preference>,
}

impl RecipientPreferences {
    /// Why a notification on `channel` in `lane` must not be sent, if the recipient refused it.
    /// A preference for the lane itself wins over one for every lane.
    pub fn refusal(&self, channel: Channel, lane: Lane) -> Option<String> {
        let for_lane = |wanted: Option<Lane>| {
            self.preferences
                .iter()
                .find(|p| p.channel == channel && p.lane == wanted)
        };
        let preference = for_lane(Some(lane)).or_else(|| for_lane(None))?;
        preference.opted_out.then(|| {
            let scope = match preference.lane {
                Some(lane) => format!("{} notifications", lane.as_str()),
                None => "all notifications".to_owned(),
            };
            format!(
                "suppressed: the recipient opted out of {scope} on the {} channel",
                channel.as_str()
            )
        })
    }
}
