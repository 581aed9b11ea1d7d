//! Time as stored (BIGINT microseconds since the epoch, the same on SQLite and PostgreSQL) and as sent
//! (`google.protobuf.Timestamp`).

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in microseconds since the Unix epoch.
pub fn now_micros() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX)).unwrap_or(0)
}

/// Now, in whole seconds since the Unix epoch.
pub fn now_secs() -> i64 {
    now_micros() / 1_000_000
}

/// A stored time as a protobuf timestamp.
pub fn timestamp(micros: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(1_000_000),
        nanos: i32::try_from(micros.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// Microseconds since the epoch of a wire timestamp; `None` when it is out of the stored range.
pub fn micros(t: &prost_types::Timestamp) -> Option<i64> {
    t.seconds.checked_mul(1_000_000)?.checked_add(i64::from(t.nanos / 1_000))
}

/// The period a listing asks for, in stored microseconds, start inclusive and end exclusive, from its optional
/// `start_time` and `end_time` (unset: unbounded on that side); an out-of-range bound, or an end not after the
/// start, is named.
pub fn period(
    start_time: Option<&prost_types::Timestamp>,
    end_time: Option<&prost_types::Timestamp>,
) -> Result<(i64, i64), Vec<crate::error::FieldViolation>> {
    use crate::error::FieldViolation;
    let bound = |field: &str, time: Option<&prost_types::Timestamp>, unset: i64| match time {
        None => Ok(unset),
        Some(time) => micros(time).ok_or_else(|| FieldViolation::new(field, "is out of range")),
    };
    match (bound("start_time", start_time, i64::MIN), bound("end_time", end_time, i64::MAX)) {
        (Ok(start), Ok(end)) if start < end => Ok((start, end)),
        (Ok(_), Ok(_)) => Err(vec![FieldViolation::new("end_time", "must be after the start time")]),
        (start, end) => Err(start.err().into_iter().chain(end.err()).collect()),
    }
}

/// Days since 1970-01-01 of a date of the proleptic Gregorian calendar (H. Hinnant's `days_from_civil`).
pub fn day_from_date(year: i64, month: u32, day: u32) -> i64 {
    let (month, day) = (i64::from(month), i64::from(day));
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The (year, month, day) of a day since the epoch (H. Hinnant's `civil_from_days`).
pub fn date_of_day(day: i64) -> (i64, u32, u32) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day_of_month = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    // Both are within 1..=31 by construction.
    (year, u32::try_from(month).unwrap_or(1), u32::try_from(day_of_month).unwrap_or(1))
}

/// The (year, month, day), in UTC, of a time in microseconds since the epoch.
pub fn date_of_micros(micros: i64) -> (i64, u32, u32) {
    date_of_day(micros.div_euclid(86_400_000_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_are_half_open_and_checked() {
        let at = |seconds: i64| prost_types::Timestamp { seconds, nanos: 0 };
        assert_eq!(period(None, None), Ok((i64::MIN, i64::MAX)));
        assert_eq!(period(Some(&at(10)), Some(&at(20))), Ok((10_000_000, 20_000_000)));
        assert_eq!(period(Some(&at(10)), None), Ok((10_000_000, i64::MAX)));
        let fields = |v: Vec<crate::error::FieldViolation>| v.into_iter().map(|v| v.field).collect::<Vec<_>>();
        assert_eq!(fields(period(Some(&at(20)), Some(&at(20))).expect_err("empty")), ["end_time"]);
        let huge = at(i64::MAX);
        assert_eq!(fields(period(Some(&huge), Some(&huge)).expect_err("huge")), ["start_time", "end_time"]);
    }

    #[test]
    fn micros_become_seconds_and_nanos() {
        let ts = timestamp(1_700_000_000_123_456);
        assert_eq!((ts.seconds, ts.nanos), (1_700_000_000, 123_456_000));
        let before = timestamp(-1);
        assert_eq!((before.seconds, before.nanos), (-1, 999_999_000));
        assert_eq!(micros(&ts), Some(1_700_000_000_123_456), "and back");
        assert_eq!(micros(&before), Some(-1));
        assert_eq!(micros(&prost_types::Timestamp { seconds: i64::MAX, nanos: 0 }), None);
    }

    #[test]
    fn times_fall_on_their_utc_dates() {
        assert_eq!(date_of_micros(0), (1970, 1, 1));
        // 2026-12-31T23:59:59.999999Z and the next microsecond.
        assert_eq!(date_of_micros(1_798_761_599_999_999), (2026, 12, 31));
        assert_eq!(date_of_micros(1_798_761_600_000_000), (2027, 1, 1));
        // 2024-02-29 (a leap day), and before the epoch.
        assert_eq!(date_of_micros(1_709_164_800_000_000), (2024, 2, 29));
        assert_eq!(date_of_micros(-1), (1969, 12, 31));
        // And back, by days.
        for (year, month, day) in [(1970, 1, 1), (2024, 2, 29), (2026, 12, 31), (1969, 12, 31), (2400, 3, 1)] {
            assert_eq!(date_of_day(day_from_date(year, month, day)), (year, month, day));
        }
        assert_eq!(day_from_date(2024, 2, 29), 1_709_164_800 / 86_400);
    }
}
