//! The `grpc-timeout` header: 1 to 8 ASCII digits and a unit
//! (`H`ours, `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos).

use std::time::Duration;

/// Largest value the header can carry.
const MAX_DIGITS_VALUE: u64 = 99_999_999;

/// Why a `grpc-timeout` value is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid grpc-timeout {0:?}: expected 1 to 8 digits and a unit out of H M S m u n")]
pub struct TimeoutError(pub String);

/// Parses a `grpc-timeout` value.
pub fn parse(value: &[u8]) -> Result<Duration, TimeoutError> {
    let err = || TimeoutError(String::from_utf8_lossy(value).into_owned());
    let (unit, digits) = value.split_last().ok_or_else(err)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(err());
    }
    let n = digits
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(err()),
    })
}

/// Encodes `d` with the finest unit whose value fits eight digits, rounding
/// up so a forwarded deadline is never shorter than the original.
pub fn encode(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, per) in [
        ('n', 1u128),
        ('u', 1_000),
        ('m', 1_000_000),
        ('S', 1_000_000_000),
        ('M', 60_000_000_000),
        ('H', 3_600_000_000_000),
    ] {
        let v = nanos.div_ceil(per);
        if v <= u128::from(MAX_DIGITS_VALUE) {
            return format!("{v}{unit}");
        }
    }
    format!("{MAX_DIGITS_VALUE}H")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_every_unit_and_rejects_garbage() {
        assert_eq!(parse(b"1H").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse(b"2M").unwrap(), Duration::from_secs(120));
        assert_eq!(parse(b"3S").unwrap(), Duration::from_secs(3));
        assert_eq!(parse(b"40m").unwrap(), Duration::from_millis(40));
        assert_eq!(
            parse(b"99999999u").unwrap(),
            Duration::from_micros(99_999_999)
        );
        assert_eq!(parse(b"7n").unwrap(), Duration::from_nanos(7));
        for bad in [
            &b""[..],
            b"S",
            b"123456789S",
            b"1x",
            b"-1S",
            b"1 S",
            b"1.5S",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn encode_round_trips_without_shortening(nanos in 0u64..(1u64 << 50)) {
            let d = Duration::from_nanos(nanos);
            let text = encode(d);
            let back = parse(text.as_bytes()).unwrap();
            prop_assert!(back >= d);
            // Rounding up never adds more than one unit of the chosen scale (well under 0.01%).
            prop_assert!(back - d <= d / 100_000 + Duration::from_nanos(1));
        }
    }
}
