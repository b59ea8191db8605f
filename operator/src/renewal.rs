//! Keys that renew themselves (cert-manager's `duration` / `renewBefore`): a key lives for
//! `duration` from its minting and is replaced once less than `renewBefore` of it is left, so
//! workloads reading the Secret never hold an expired key.
//!
//! Durations are written as Go durations of hours, minutes and seconds (`2160h`, `90m`,
//! `1h30m`), as in cert-manager.

use chrono::{NaiveDateTime, TimeDelta};

use crate::crd::ApiKeySpec;
use crate::error::{Error, Result};

/// The shortest `duration` accepted: renewal is not a way to hammer the registry.
pub const MIN_DURATION: TimeDelta = TimeDelta::hours(1);
/// The longest `duration` accepted (ten years): beyond it, leave the key without expiry.
pub const MAX_DURATION: TimeDelta = TimeDelta::days(3650);

/// How a key renews: its lifetime, and how long before its end it is replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub duration: TimeDelta,
    pub renew_before: TimeDelta,
}

impl Validity {
    /// The validity `spec` asks for, or None (no renewal: a fixed `expiresAt`, or no expiry).
    /// `renewBefore` defaults to a third of `duration` and must be shorter than it.
    pub fn of(spec: &ApiKeySpec) -> Result<Option<Validity>> {
        let Some(duration) = &spec.duration else {
            if spec.renew_before.is_some() {
                return Err(Error::InvalidSpec("renewBefore needs duration".into()));
            }
            return Ok(None);
        };
        if spec.expires_at.is_some() {
            return Err(Error::InvalidSpec(
                "set either expiresAt (a fixed end) or duration (renewed), not both".into(),
            ));
        }
        let duration = parse("duration", duration)?;
        if !(MIN_DURATION..=MAX_DURATION).contains(&duration) {
            return Err(Error::InvalidSpec(format!(
                "duration must be between 1h and {}h",
                MAX_DURATION.num_hours()
            )));
        }
        let renew_before = match &spec.renew_before {
            Some(text) => parse("renewBefore", text)?,
            None => duration / 3,
        };
        if renew_before <= TimeDelta::zero() || renew_before >= duration {
            return Err(Error::InvalidSpec(
                "renewBefore must be positive and shorter than duration".into(),
            ));
        }
        Ok(Some(Validity {
            duration,
            renew_before,
        }))
    }

    /// When a key minted now stops working.
    pub fn not_after(&self, now: NaiveDateTime) -> NaiveDateTime {
        now + self.duration
    }

    /// When a key that stops working at `not_after` is replaced.
    pub fn renewal_time(&self, not_after: NaiveDateTime) -> NaiveDateTime {
        not_after - self.renew_before
    }
}

/// Parses `1h30m`, `45m`, `90s`, `2160h` (what `field` holds; named in the error).
pub fn parse(field: &str, text: &str) -> Result<TimeDelta> {
    let invalid = || {
        Error::InvalidSpec(format!(
            "{field}: {text:?} is not a duration such as 2160h, 90m or 1h30m"
        ))
    };
    let mut total = TimeDelta::zero();
    let mut digits = String::new();
    let mut units = 0;
    for character in text.chars() {
        if character.is_ascii_digit() {
            // More digits than any sensible duration: refuse rather than overflow.
            if digits.len() >= 9 {
                return Err(invalid());
            }
            digits.push(character);
            continue;
        }
        let amount: i64 = digits.parse().map_err(|_| invalid())?;
        digits.clear();
        let part = match character {
            'h' => TimeDelta::hours(amount),
            'm' => TimeDelta::minutes(amount),
            's' => TimeDelta::seconds(amount),
            _ => return Err(invalid()),
        };
        total = total.checked_add(&part).ok_or_else(invalid)?;
        units += 1;
    }
    if !digits.is_empty() || units == 0 {
        return Err(invalid());
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(duration: Option<&str>, renew_before: Option<&str>) -> ApiKeySpec {
        ApiKeySpec {
            user: None,
            scope: "pull:*".into(),
            secret_name: None,
            expires_at: None,
            duration: duration.map(str::to_owned),
            renew_before: renew_before.map(str::to_owned),
            secret_template: None,
        }
    }

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse("d", "2160h").unwrap(), TimeDelta::hours(2160));
        assert_eq!(parse("d", "1h30m").unwrap(), TimeDelta::minutes(90));
        assert_eq!(parse("d", "90s").unwrap(), TimeDelta::seconds(90));
        for bad in ["", "h", "10", "10d", "1.5h", "-1h", "1h 30m", "9999999999h"] {
            let error = parse("duration", bad).unwrap_err().to_string();
            assert!(error.contains("duration"), "{bad}: {error}");
        }
    }

    #[test]
    fn renew_before_defaults_to_a_third_and_must_be_shorter() {
        let validity = Validity::of(&spec(Some("720h"), None)).unwrap().unwrap();
        assert_eq!(validity.renew_before, TimeDelta::hours(240));
        let now = chrono::DateTime::from_timestamp(1_800_000_000, 0)
            .unwrap()
            .naive_utc();
        let not_after = validity.not_after(now);
        assert_eq!(not_after - now, TimeDelta::hours(720));
        assert_eq!(
            not_after - validity.renewal_time(not_after),
            TimeDelta::hours(240)
        );
        assert_eq!(Validity::of(&spec(None, None)).unwrap(), None);
        for (duration, renew_before) in [
            (Some("720h"), Some("720h")),
            (Some("720h"), Some("0s")),
            (Some("30m"), None),
            (None, Some("1h")),
            (Some("100000h"), None),
        ] {
            assert!(
                Validity::of(&spec(duration, renew_before)).is_err(),
                "{duration:?} {renew_before:?}"
            );
        }
        let mut both = spec(Some("720h"), None);
        both.expires_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(1_900_000_000).unwrap(),
        ));
        assert!(Validity::of(&both).is_err());
    }
}
