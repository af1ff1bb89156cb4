//! Hourly windows of *reported* time (DESIGN.md §9): from the checkpoint
//! `status.usage.ingestedThrough` (first: the Registration's creation hour, or
//! `spec.usageSource.startTime`), each processed once it is older than `--usage-delay`.

use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};

/// One hour of reported time, `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

const HOUR: TimeDelta = TimeDelta::hours(1);

/// `time` rounded down to its hour.
pub fn hour_of(time: DateTime<Utc>) -> DateTime<Utc> {
    // Only fails for a span longer than the time's range, which an hour is not.
    time.duration_trunc(HOUR).unwrap_or(time)
}

impl Window {
    /// The hour that starts at `start` rounded down to its hour.
    pub fn starting_at(start: DateTime<Utc>) -> Self {
        let start = hour_of(start);
        Self {
            start,
            end: start + HOUR,
        }
    }

    /// The window after this one.
    pub fn next(self) -> Self {
        Self {
            start: self.end,
            end: self.end + HOUR,
        }
    }

    /// Whether the window is older than `delay` at `now` (reported time lags usage time).
    pub fn is_due(self, now: DateTime<Utc>, delay: Duration) -> bool {
        match TimeDelta::from_std(delay) {
            Ok(delay) => self.end + delay <= now,
            // A delay beyond chrono's range: never due.
            Err(_) => false,
        }
    }
}

/// Where ingestion starts for a Registration that has no checkpoint yet: its
/// `spec.usageSource.startTime` when set, else its creation hour.
pub fn first_checkpoint(
    created: DateTime<Utc>,
    start_time: Option<DateTime<Utc>>,
) -> DateTime<Utc> {
    hour_of(start_time.unwrap_or(created))
}

/// The windows due at `now`, in order, from the checkpoint (`ingestedThrough`, the end of the
/// last window done). Lazy: a checkpoint months behind costs nothing until iterated.
pub fn due_windows(
    ingested_through: DateTime<Utc>,
    now: DateTime<Utc>,
    delay: Duration,
) -> impl Iterator<Item = Window> {
    std::iter::successors(Some(Window::starting_at(ingested_through)), |w| {
        Some(w.next())
    })
    .take_while(move |w| w.is_due(now, delay))
}

/// When the next window becomes due: what the controller waits for once caught up.
pub fn next_due_at(ingested_through: DateTime<Utc>, delay: Duration) -> Option<DateTime<Utc>> {
    let delay = TimeDelta::from_std(delay).ok()?;
    Some(Window::starting_at(ingested_through).end + delay)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    const TWO_HOURS: Duration = Duration::from_secs(7200);

    #[test]
    fn the_first_checkpoint_is_the_start_time_or_the_creation_hour() {
        let created = at("2026-03-04T10:17:33Z");
        assert_eq!(first_checkpoint(created, None), at("2026-03-04T10:00:00Z"));
        assert_eq!(
            first_checkpoint(created, Some(at("2026-03-01T00:30:00Z"))),
            at("2026-03-01T00:00:00Z")
        );
    }

    #[test]
    fn windows_are_due_once_older_than_the_delay() {
        let through = at("2026-03-04T10:00:00Z");
        let cases: [(&str, Duration, usize); 6] = [
            ("2026-03-04T12:59:59Z", TWO_HOURS, 0),
            ("2026-03-04T13:00:00Z", TWO_HOURS, 1),
            ("2026-03-04T14:30:00Z", TWO_HOURS, 2),
            ("2026-03-05T12:00:00Z", TWO_HOURS, 24),
            ("2026-03-04T11:00:00Z", Duration::ZERO, 1),
            ("2026-03-04T10:30:00Z", Duration::ZERO, 0),
        ];
        for (now, delay, count) in cases {
            let windows: Vec<Window> = due_windows(through, at(now), delay).collect();
            assert_eq!(windows.len(), count, "now {now}");
            if let Some(first) = windows.first() {
                assert_eq!(first.start, through);
            }
        }
        assert_eq!(
            next_due_at(through, TWO_HOURS),
            Some(at("2026-03-04T13:00:00Z"))
        );
        assert_eq!(
            due_windows(through, at("2030-01-01T00:00:00Z"), Duration::MAX).count(),
            0
        );
    }

    #[test]
    fn a_checkpoint_inside_an_hour_starts_that_hour_again() {
        let window = Window::starting_at(at("2026-03-04T10:59:00Z"));
        assert_eq!(
            (window.start, window.end),
            (at("2026-03-04T10:00:00Z"), at("2026-03-04T11:00:00Z"))
        );
    }

    proptest! {
        #[test]
        fn due_windows_are_contiguous_hours_ending_before_now_minus_delay(
            through_s in 1_600_000_000i64..1_900_000_000, ahead_s in 0i64..400_000, delay_s in 0u64..20_000,
        ) {
            let through = hour_of(DateTime::from_timestamp(through_s, 0).unwrap());
            let now = through + TimeDelta::seconds(ahead_s);
            let delay = Duration::from_secs(delay_s);
            let windows: Vec<Window> = due_windows(through, now, delay).collect();
            let mut expected_start = through;
            for window in &windows {
                prop_assert_eq!(window.start, expected_start);
                prop_assert_eq!(window.end - window.start, HOUR);
                prop_assert!(window.end + TimeDelta::from_std(delay).unwrap() <= now);
                expected_start = window.end;
            }
            // The first window not returned is not yet due.
            prop_assert!(!Window::starting_at(expected_start).is_due(now, delay));
        }
    }
}
