//! Whether a moment falls inside a user's quiet hours, read in the user's
//! own time zone (so "22:00 to 07:00" follows them across daylight-saving
//! changes).

use chat_protocol::notify::QuietHours;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// Whether `zone` names a time zone this node knows.
pub fn known_zone(zone: &str) -> bool {
    TimeZone::get(zone).is_ok()
}

/// Whether `at_ms` (Unix ms) is inside `quiet`. An unknown zone (settings
/// written by a node with a newer zone database) counts as UTC rather than
/// silencing the user for good.
pub fn is_quiet(quiet: &QuietHours, at_ms: u64) -> bool {
    let Ok(at) = Timestamp::from_millisecond(at_ms as i64) else {
        return false;
    };
    let zone = TimeZone::get(&quiet.tz).unwrap_or(TimeZone::UTC);
    let local = at.to_zoned(zone);
    let minute = local.hour() as u16 * 60 + local.minute() as u16;
    quiet.contains(minute)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quiet(tz: &str) -> QuietHours {
        QuietHours {
            start: "22:00".into(),
            end: "07:00".into(),
            tz: tz.into(),
        }
    }

    #[test]
    fn the_window_is_read_in_the_users_zone() {
        // 2026-07-01 21:30 UTC is 23:30 in Paris (summer time) and 14:30
        // in Los Angeles.
        let t = 1_782_941_400_000;
        assert!(is_quiet(&quiet("Europe/Paris"), t));
        assert!(!is_quiet(&quiet("America/Los_Angeles"), t));
        assert!(!is_quiet(&quiet("UTC"), t));
        // 2026-01-15 21:30 UTC is 22:30 in Paris (winter time).
        assert!(is_quiet(&quiet("Europe/Paris"), 1_768_512_600_000));
        assert!(known_zone("Asia/Kolkata"));
        assert!(!known_zone("Mars/Olympus_Mons"));
    }
}
