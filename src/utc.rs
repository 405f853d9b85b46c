//! Civil time (UTC) of Unix timestamps, for people and for the Clash API's history entries.

use time::OffsetDateTime;

/// `YYYY-MM-DD` and (hour, minute, second) in UTC of `secs` since the Unix epoch. A time past
/// year 9999 (which no clock here reaches) shows as 9999-12-31 23:59:59.
pub fn fields(secs: u64) -> (String, (u8, u8, u8)) {
    let at = i64::try_from(secs)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .unwrap_or_else(|| {
            OffsetDateTime::new_utc(time::Date::MAX, time::Time::from_hms(23, 59, 59).unwrap())
        });
    let date = format!(
        "{:04}-{:02}-{:02}",
        at.year(),
        u8::from(at.month()),
        at.day()
    );
    (date, (at.hour(), at.minute(), at.second()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_fields() {
        assert_eq!(fields(0), ("1970-01-01".to_owned(), (0, 0, 0)));
        assert_eq!(fields(951_782_400), ("2000-02-29".to_owned(), (0, 0, 0)));
        assert_eq!(
            fields(1_795_721_966),
            ("2026-11-26".to_owned(), (19, 39, 26))
        );
        assert_eq!(fields(u64::MAX), ("9999-12-31".to_owned(), (23, 59, 59)));
    }
}
