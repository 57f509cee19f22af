//! RFC 3339 timestamps, as Okta writes them, to `google.protobuf.Timestamp`.
//!
//! Okta's `published` and `eventTime` carry 0 to 9 fraction digits (`…T13:29:21Z`, `…03.49Z`,
//! milliseconds, microseconds, nanoseconds) and, in principle, any UTC offset. The parser is
//! strict about the shape and the calendar: Okta's own docs contain `2017-09-31T…`, which must
//! be rejected, not rolled over into October.

use prost_types::Timestamp;

/// Seconds of 0001-01-01T00:00:00Z, the earliest instant a `Timestamp` may hold.
const MIN_SECONDS: i64 = -62_135_596_800;
/// Seconds of 9999-12-31T23:59:59Z, the latest instant a `Timestamp` may hold.
const MAX_SECONDS: i64 = 253_402_300_799;

/// Parses `YYYY-MM-DD(T|t| )hh:mm:ss[.fraction](Z|z|±hh:mm)`.
///
/// More than 9 fraction digits are truncated to nanoseconds; a leap second (`:60`) is held at
/// the last nanosecond of the previous second. Returns `None` for anything else, including
/// impossible dates and instants outside 0001–9999 UTC.
pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let year = digits(b, 0, 4)?;
    expect(b, 4, b'-')?;
    let month = digits(b, 5, 2)?;
    expect(b, 7, b'-')?;
    let day = digits(b, 8, 2)?;
    if !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    let hour = digits(b, 11, 2)?;
    expect(b, 13, b':')?;
    let minute = digits(b, 14, 2)?;
    expect(b, 16, b':')?;
    let mut second = digits(b, 17, 2)?;

    let mut at = 19;
    let mut nanos: u32 = 0;
    if b.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while at < b.len() && b[at].is_ascii_digit() {
            if at - start < 9 {
                nanos = nanos * 10 + u32::from(b[at] - b'0');
            }
            at += 1;
        }
        let count = at - start;
        if count == 0 {
            return None;
        }
        if count < 9 {
            nanos *= 10u32.pow(9 - count as u32);
        }
    }

    let offset_seconds: i64 = match b.get(at)? {
        b'Z' | b'z' if at + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if at + 6 == b.len() => {
            let hours = digits(b, at + 1, 2)?;
            expect(b, at + 3, b':')?;
            let minutes = digits(b, at + 4, 2)?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'+' { offset } else { -offset }
        }
        _ => return None,
    };

    if second == 60 {
        second = 59;
        nanos = 999_999_999;
    }
    let local = Timestamp::date_time_nanos(
        i64::from(year),
        u8::try_from(month).ok()?,
        u8::try_from(day).ok()?,
        u8::try_from(hour).ok()?,
        u8::try_from(minute).ok()?,
        u8::try_from(second).ok()?,
        nanos,
    )
    .ok()?;
    let seconds = local.seconds.checked_sub(offset_seconds)?;
    if !(MIN_SECONDS..=MAX_SECONDS).contains(&seconds) {
        return None;
    }
    Some(Timestamp {
        seconds,
        nanos: local.nanos,
    })
}

/// The `len` ASCII digits at `at` as a number.
fn digits(b: &[u8], at: usize, len: usize) -> Option<u32> {
    let slice = b.get(at..at + len)?;
    slice.iter().try_fold(0u32, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
    })
}

/// `Some(())` when the byte at `at` is `c`.
fn expect(b: &[u8], at: usize, c: u8) -> Option<()> {
    (b.get(at) == Some(&c)).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(seconds: i64, nanos: i32) -> Option<Timestamp> {
        Some(Timestamp { seconds, nanos })
    }

    #[test]
    fn accepts_every_fraction_length_okta_sends() {
        // 2021-11-22T18:07:13Z = 1637604433
        let cases = [
            ("2021-11-22T18:07:13Z", ts(1_637_604_433, 0)),
            ("2021-11-22T18:07:13.4Z", ts(1_637_604_433, 400_000_000)),
            ("2021-11-22T18:07:13.49Z", ts(1_637_604_433, 490_000_000)),
            ("2021-11-22T18:07:13.125Z", ts(1_637_604_433, 125_000_000)),
            (
                "2021-11-22T18:07:13.123456Z",
                ts(1_637_604_433, 123_456_000),
            ),
            (
                "2021-11-22T18:07:13.123456789Z",
                ts(1_637_604_433, 123_456_789),
            ),
            (
                "2021-11-22T18:07:13.1234567891Z",
                ts(1_637_604_433, 123_456_789),
            ),
            ("2021-11-22t18:07:13z", ts(1_637_604_433, 0)),
            ("2021-11-22 18:07:13Z", ts(1_637_604_433, 0)),
            ("2021-11-22T20:07:13+02:00", ts(1_637_604_433, 0)),
            (
                "2021-11-22T13:07:13.5-05:00",
                ts(1_637_604_433, 500_000_000),
            ),
            ("2016-12-31T23:59:60Z", ts(1_483_228_799, 999_999_999)),
            ("0001-01-01T00:00:00Z", ts(MIN_SECONDS, 0)),
            (
                "9999-12-31T23:59:59.999999999Z",
                ts(MAX_SECONDS, 999_999_999),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_rfc3339(text), want, "{text}");
        }
    }

    #[test]
    fn rejects_what_is_not_an_instant() {
        for text in [
            "",
            "2017-09-31T22:23:07.777Z", // Okta's doc sample: September has 30 days
            "2021-02-29T00:00:00Z",
            "2021-13-01T00:00:00Z",
            "2021-11-22T24:00:00Z",
            "2021-11-22T18:60:00Z",
            "2021-11-22T18:07:13",   // no offset
            "2021-11-22T18:07:13.Z", // empty fraction
            "2021-11-22",
            "2021-11-22T18:07Z",
            "2021-11-22T18:07:13+0200",
            "2021-11-22T18:07:13+24:00",
            "2021-11-22T18:07:13Zjunk",
            "0000-12-31T23:59:59Z",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:59:59-00:01",
            "２０２１-11-22T18:07:13Z",
            "1637604433",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
