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

#[cfg(test)]
mod tests {
    use super::*;

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
}
