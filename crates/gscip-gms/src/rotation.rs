//! The key rotation schedule: daily at a fixed UTC time. Pure functions of the time passed in,
//! so the schedule is tested in virtual time; the GMS records each slot it has rotated for, so
//! rotation is idempotent across restarts and across GMS instances sharing one database.

use crate::error::{GmsError, Result};

pub const DAY: u64 = 86_400;

/// Daily at `minute_of_day` (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailySchedule {
    pub minute_of_day: u32,
}

impl Default for DailySchedule {
    /// 03:00, the default of issue "gmsd".
    fn default() -> Self {
        DailySchedule { minute_of_day: 3 * 60 }
    }
}

impl DailySchedule {
    /// Parses "HH:MM" (24-hour, UTC).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || GmsError::Configuration(format!("rotation time {s:?}: expected HH:MM (24-hour, UTC), e.g. 03:00"));
        let (h, m) = s.split_once(':').ok_or_else(bad)?;
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 || s.len() != 5 {
            return Err(bad());
        }
        Ok(DailySchedule { minute_of_day: h * 60 + m })
    }

    pub fn display(&self) -> String {
        format!("{:02}:{:02}", self.minute_of_day / 60, self.minute_of_day % 60)
    }

    fn offset(&self) -> u64 {
        u64::from(self.minute_of_day) * 60
    }

    /// The latest scheduled moment at or before `now` (Unix seconds).
    pub fn latest_slot(&self, now: u64) -> u64 {
        let day_start = now - now % DAY;
        let today = day_start + self.offset();
        if today <= now {
            today
        } else {
            today.saturating_sub(DAY)
        }
    }

    /// The first scheduled moment after `now`.
    pub fn next_slot(&self, now: u64) -> u64 {
        self.latest_slot(now) + DAY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots() {
        let s = DailySchedule::default();
        let midnight = 20_000 * DAY;
        assert_eq!(s.latest_slot(midnight + 3 * 3600), midnight + 3 * 3600);
        assert_eq!(s.latest_slot(midnight + 3 * 3600 - 1), midnight - DAY + 3 * 3600);
        assert_eq!(s.next_slot(midnight + 3 * 3600), midnight + DAY + 3 * 3600);
        assert_eq!(s.next_slot(midnight), midnight + 3 * 3600);
        assert_eq!(DailySchedule::parse("23:59").unwrap().minute_of_day, 23 * 60 + 59);
        for bad in ["24:00", "3:00", "03-00", "", "03:60", "aa:bb"] {
            assert!(DailySchedule::parse(bad).is_err(), "{bad}");
        }
    }
}
