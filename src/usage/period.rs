//! Billing periods: a record counts in the UTC month of its `usageStartTime` (DESIGN.md §9). A
//! month rolls over at 00:00 UTC on the 1st.

use std::fmt;

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

/// A UTC calendar month, shown `YYYY-MM`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    /// 1 to 12.
    month: u32,
}

/// Why a text is not a `YYYY-MM` month.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("{0:?} is not a month written YYYY-MM")]
pub struct NotAMonth(pub String);

impl Month {
    /// The UTC month that contains `time`.
    pub fn of(time: DateTime<Utc>) -> Self {
        Self {
            year: time.year(),
            month: time.month(),
        }
    }

    /// `YYYY-MM`, as `usage report --period` and `status.usage.period` write it.
    pub fn parse(text: &str) -> Result<Self, NotAMonth> {
        let fail = || NotAMonth(text.to_string());
        let (year, month) = text.split_once('-').ok_or_else(fail)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(fail());
        }
        let year: i32 = year.parse().map_err(|_| fail())?;
        let month: u32 = month.parse().map_err(|_| fail())?;
        if !(1..=12).contains(&month) || year < 0 {
            return Err(fail());
        }
        Ok(Self { year, month })
    }

    pub fn previous(self) -> Self {
        match self.month {
            1 => Self {
                year: self.year - 1,
                month: 12,
            },
            m => Self {
                year: self.year,
                month: m - 1,
            },
        }
    }

    pub fn next(self) -> Self {
        match self.month {
            12 => Self {
                year: self.year + 1,
                month: 1,
            },
            m => Self {
                year: self.year,
                month: m + 1,
            },
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for Month {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Month {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Month::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Where a record's quantity is totalled, given the period being totalled (the month of the
/// window's reported time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bucket {
    /// The current period.
    Current,
    /// `previous`, the month before, while its late records still arrive.
    Previous,
    /// Older than the month before: forwarded, not totalled, counted as `late`.
    Late,
    /// Usage time after the window's month (a stamp clock running ahead): forwarded, not
    /// totalled, counted as `late` too; the stamp's reported time is never before usage time.
    Ahead,
}

impl Bucket {
    pub fn of(usage_start: DateTime<Utc>, period: Month) -> Self {
        let month = Month::of(usage_start);
        if month == period {
            Bucket::Current
        } else if month == period.previous() {
            Bucket::Previous
        } else if month < period {
            Bucket::Late
        } else {
            Bucket::Ahead
        }
    }

    /// Whether the record's quantity goes into a month-to-date total.
    pub fn is_totalled(self) -> bool {
        matches!(self, Bucket::Current | Bucket::Previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn months_parse_show_and_step() {
        let cases = [
            ("2026-01", "2025-12", "2026-02"),
            ("2026-12", "2026-11", "2027-01"),
            ("2024-02", "2024-01", "2024-03"),
        ];
        for (text, previous, next) in cases {
            let month = Month::parse(text).unwrap();
            assert_eq!(month.to_string(), text);
            assert_eq!(month.previous().to_string(), previous);
            assert_eq!(month.next().to_string(), next);
            assert_eq!(month.next().previous(), month);
        }
        for bad in [
            "",
            "2026",
            "2026-1",
            "2026-13",
            "2026-00",
            "26-01",
            "2026/01",
            "2026-01-01",
            "abcd-ef",
        ] {
            assert!(Month::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_month_starts_at_midnight_utc_on_the_first() {
        assert_eq!(
            Month::of(at("2026-02-28T23:59:59.999Z")).to_string(),
            "2026-02"
        );
        assert_eq!(Month::of(at("2026-03-01T00:00:00Z")).to_string(), "2026-03");
        // 00:30 on the 1st in UTC+1 is still the last day of the month before in UTC.
        assert_eq!(
            Month::of(at("2026-03-01T00:30:00+01:00")).to_string(),
            "2026-02"
        );
    }

    #[test]
    fn records_are_bucketed_by_the_month_of_their_usage_start() {
        let period = Month::parse("2026-03").unwrap();
        let cases = [
            ("2026-03-01T00:00:00Z", Bucket::Current),
            ("2026-03-31T23:00:00Z", Bucket::Current),
            ("2026-02-28T23:00:00Z", Bucket::Previous),
            ("2026-02-01T00:00:00Z", Bucket::Previous),
            ("2026-01-31T23:00:00Z", Bucket::Late),
            ("2025-03-15T00:00:00Z", Bucket::Late),
            ("2026-04-01T00:00:00Z", Bucket::Ahead),
        ];
        for (start, bucket) in cases {
            assert_eq!(Bucket::of(at(start), period), bucket, "{start}");
            assert_eq!(
                bucket.is_totalled(),
                matches!(bucket, Bucket::Current | Bucket::Previous)
            );
        }
        // January: the month before is the previous year's December.
        let january = Month::parse("2027-01").unwrap();
        assert_eq!(
            Bucket::of(at("2026-12-31T23:00:00Z"), january),
            Bucket::Previous
        );
        assert_eq!(
            Bucket::of(at("2026-11-30T23:00:00Z"), january),
            Bucket::Late
        );
    }

    #[test]
    fn serde_writes_and_reads_yyyy_mm() {
        let month = Month::parse("2026-07").unwrap();
        assert_eq!(serde_json::to_string(&month).unwrap(), "\"2026-07\"");
        assert_eq!(serde_json::from_str::<Month>("\"2026-07\"").unwrap(), month);
        assert!(serde_json::from_str::<Month>("\"2026-7\"").is_err());
    }
}
