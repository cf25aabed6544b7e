//! When a rail accepts payments: 24/7, or weekly windows in a time zone with a cut-off and holidays.
//!
//! Times are minutes after local midnight; a window is `[open, close)` and `close` may be 24:00. A
//! window that would cross midnight is written as two windows. Instants are converted from UTC to
//! the rail's zone, which is always unambiguous, so daylight-saving changes need no special case.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc, Weekday};
use chrono_tz::Tz;
use serde::Serialize;

/// Minutes in a day; `close` may equal it ("24:00").
pub const DAY_MINUTES: u16 = 24 * 60;

/// A set of weekdays, Monday = bit 0.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct Days(u8);

impl Days {
    pub const ALL: Days = Days(0b111_1111);

    pub fn contains(self, day: Weekday) -> bool {
        self.0 & (1 << day.num_days_from_monday()) != 0
    }

    pub fn intersects(self, other: Days) -> bool {
        self.0 & other.0 != 0
    }

    pub fn iter(self) -> impl Iterator<Item = Weekday> {
        (0..7).filter(move |bit| self.0 & (1 << bit) != 0).map(weekday_from_index)
    }

    /// Parses "mon-fri", "sat,sun", "fri-mon" (wrapping), "daily".
    pub fn parse(text: &str) -> Result<Days, String> {
        if text == "daily" {
            return Ok(Days::ALL);
        }
        let mut days = 0_u8;
        for part in text.split(',') {
            let part = part.trim();
            let (first, last) = match part.split_once('-') {
                Some((first, last)) => (day_index(first)?, day_index(last)?),
                None => (day_index(part)?, day_index(part)?),
            };
            let mut day = first;
            loop {
                days |= 1 << day;
                if day == last {
                    break;
                }
                day = (day + 1) % 7;
            }
        }
        Ok(Days(days))
    }
}

fn day_index(name: &str) -> Result<u8, String> {
    const NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
    NAMES.iter().position(|candidate| *candidate == name).map(|index| index as u8).ok_or_else(|| {
        format!("unknown day {name:?}; use mon, tue, wed, thu, fri, sat, sun, ranges such as mon-fri, or daily")
    })
}

fn weekday_from_index(index: u8) -> Weekday {
    match index {
        0 => Weekday::Mon,
        1 => Weekday::Tue,
        2 => Weekday::Wed,
        3 => Weekday::Thu,
        4 => Weekday::Fri,
        5 => Weekday::Sat,
        _ => Weekday::Sun,
    }
}

impl fmt::Debug for Days {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.iter().map(|day| day.to_string().to_lowercase()).collect();
        write!(f, "{}", names.join(","))
    }
}

/// One opening window on some weekdays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub days: Days,
    /// Minutes after local midnight.
    pub open_minute: u16,
    /// Minutes after local midnight, greater than `open_minute`, at most [`DAY_MINUTES`].
    pub close_minute: u16,
}

/// A rail's operating hours.
#[derive(Debug, Clone, PartialEq)]
pub enum OperatingHours {
    AlwaysOpen,
    Weekly(WeeklyHours),
}

#[derive(Debug, Clone, PartialEq)]
pub struct WeeklyHours {
    pub timezone: Tz,
    pub windows: Vec<Window>,
    /// Minutes after local midnight after which no new payment is accepted that day.
    pub cutoff_minute: Option<u16>,
    pub holidays: BTreeSet<NaiveDate>,
}

/// Whether a rail takes a payment at an instant, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Availability {
    Open,
    Closed { reason: String },
}

impl OperatingHours {
    /// Whether a payment submitted at `at` is accepted the same day.
    pub fn availability(&self, at: DateTime<Utc>) -> Availability {
        let OperatingHours::Weekly(hours) = self else {
            return Availability::Open;
        };
        let local = at.with_timezone(&hours.timezone);
        let date = local.date_naive();
        let minute = (local.hour() * 60 + local.minute()) as u16;
        let zone = hours.timezone.name();
        if hours.holidays.contains(&date) {
            return Availability::Closed { reason: format!("{date} is a holiday ({zone})") };
        }
        if let Some(cutoff) = hours.cutoff_minute
            && minute >= cutoff
        {
            return Availability::Closed {
                reason: format!("past the {} cut-off ({zone}, local time {})", clock(cutoff), clock(minute)),
            };
        }
        let weekday = local.weekday();
        let open = hours.windows.iter().any(|window| {
            window.days.contains(weekday) && window.open_minute <= minute && minute < window.close_minute
        });
        if open {
            Availability::Open
        } else {
            Availability::Closed { reason: format!("outside operating hours ({weekday} {} {zone})", clock(minute)) }
        }
    }

    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.availability(at) == Availability::Open
    }

    /// The first minute at or after `at` when the rail is open, looking at most 14 days ahead.
    pub fn next_open(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.is_open(at) {
            return Some(at);
        }
        let OperatingHours::Weekly(hours) = self else {
            return Some(at);
        };
        // Candidates are the window openings of each local day; check them in time order.
        let local = at.with_timezone(&hours.timezone);
        let mut candidates: Vec<DateTime<Utc>> = Vec::new();
        for offset in 0..15 {
            let date = local.date_naive() + Duration::days(offset);
            for window in &hours.windows {
                if !window.days.contains(date.weekday()) {
                    continue;
                }
                let Some(time) =
                    date.and_hms_opt(u32::from(window.open_minute / 60), u32::from(window.open_minute % 60), 0)
                else {
                    continue;
                };
                if let Some(instant) = time.and_local_timezone(hours.timezone).earliest() {
                    let instant = instant.with_timezone(&Utc);
                    if instant > at {
                        candidates.push(instant);
                    }
                }
            }
        }
        candidates.sort();
        candidates.into_iter().find(|candidate| self.is_open(*candidate))
    }
}

/// "HH:MM" for minutes after midnight.
pub fn clock(minute: u16) -> String {
    format!("{:02}:{:02}", minute / 60, minute % 60)
}

/// Parses "HH:MM" (00:00 to 24:00).
pub fn parse_clock(text: &str) -> Result<u16, String> {
    let error = || format!("{text:?} is not a time of day; write HH:MM between 00:00 and 24:00");
    let (hours, minutes) = text.split_once(':').ok_or_else(error)?;
    if hours.len() != 2 || minutes.len() != 2 {
        return Err(error());
    }
    let hours: u16 = hours.parse().map_err(|_| error())?;
    let minutes: u16 = minutes.parse().map_err(|_| error())?;
    if minutes >= 60 || hours > 24 || (hours == 24 && minutes != 0) {
        return Err(error());
    }
    Ok(hours * 60 + minutes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    fn berlin_business_days() -> OperatingHours {
        OperatingHours::Weekly(WeeklyHours {
            timezone: "Europe/Berlin".parse().unwrap(),
            windows: vec![Window { days: Days::parse("mon-fri").unwrap(), open_minute: 7 * 60, close_minute: 18 * 60 }],
            cutoff_minute: Some(17 * 60 + 30),
            holidays: [NaiveDate::from_ymd_opt(2026, 12, 25).unwrap()].into_iter().collect(),
        })
    }

    #[test]
    fn availability_table() {
        let hours = berlin_business_days();
        // instant (UTC), open?
        let rows = [
            ("2026-11-24T06:00:00Z", true),  // Tuesday 07:00 in Berlin (UTC+1)
            ("2026-11-24T05:59:00Z", false), // 06:59 local
            ("2026-11-24T16:29:00Z", true),  // 17:29 local, before the cut-off
            ("2026-11-24T16:30:00Z", false), // 17:30 local, cut-off
            ("2026-11-28T10:00:00Z", false), // Saturday
            ("2026-12-25T10:00:00Z", false), // holiday (a Friday)
            ("2026-07-01T05:00:00Z", true),  // summer time: 07:00 local is 05:00 UTC
        ];
        for (instant, open) in rows {
            assert_eq!(hours.is_open(at(instant)), open, "{instant}: {:?}", hours.availability(at(instant)));
        }
        assert!(OperatingHours::AlwaysOpen.is_open(at("2026-12-25T03:00:00Z")));
    }

    #[test]
    fn next_opening_skips_weekends_and_holidays() {
        let hours = berlin_business_days();
        assert_eq!(hours.next_open(at("2026-11-28T10:00:00Z")), Some(at("2026-11-30T06:00:00Z")));
        assert_eq!(hours.next_open(at("2026-12-24T17:00:00Z")), Some(at("2026-12-28T06:00:00Z")));
    }

    #[test]
    fn clocks_and_days() {
        assert_eq!(parse_clock("07:30"), Ok(450));
        assert_eq!(parse_clock("24:00"), Ok(DAY_MINUTES));
        for bad in ["7:30", "24:01", "12:60", "noon", "12-00"] {
            assert!(parse_clock(bad).is_err(), "{bad}");
        }
        assert_eq!(format!("{:?}", Days::parse("fri-mon").unwrap()), "mon,fri,sat,sun");
        assert!(Days::parse("someday").is_err());
    }
}
