//! Setting status conditions the way Kubernetes tools expect: `lastTransitionTime` moves only
//! when the status flips, `observedGeneration` always follows the object's generation.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::{api::Condition, policy::Reason};

/// The `Ready` condition type of both kinds.
pub const READY: &str = "Ready";
/// The Registration's `MultitenancyApproved` condition type.
pub const MULTITENANCY_APPROVED: &str = "MultitenancyApproved";
/// The Registration's `InSync` condition (azure mode): Azure holds no undeclared tenants.
pub const IN_SYNC: &str = "InSync";
/// The Registration's `Usage` condition (DESIGN.md §9): usage ingestion is current. Written by
/// the usage controller only.
pub const USAGE: &str = "Usage";

/// A source of "now", injected so that tests control time.
pub trait Clock: Send + Sync {
    fn now(&self) -> Time;
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Time {
        Time(k8s_openapi::jiff::Timestamp::now())
    }
}

/// Upserts a condition of `type_` into `conditions`, keeping `lastTransitionTime` unless the
/// status changes, and always setting `observedGeneration`.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: Reason,
    message: &str,
    observed_generation: Option<i64>,
    clock: &dyn Clock,
) {
    set_condition_status(
        conditions,
        type_,
        reason.status(),
        reason,
        message,
        observed_generation,
        clock,
    );
}

/// [`set_condition`] with a status other than the reason's own: azure mode's
/// `AzureRequestFailed` is Unknown for a code Azure may accept on a later try.
pub fn set_condition_status(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: crate::api::ConditionStatus,
    reason: Reason,
    message: &str,
    observed_generation: Option<i64>,
    clock: &dyn Clock,
) {
    let existing = conditions.iter_mut().find(|c| c.type_ == type_);
    let last_transition_time = match &existing {
        Some(old) if old.status == status && old.last_transition_time.is_some() => {
            old.last_transition_time.clone()
        }
        _ => Some(clock.now()),
    };
    let condition = Condition {
        type_: type_.to_string(),
        status,
        reason: reason.as_str().to_string(),
        message: message.to_string(),
        last_transition_time,
        observed_generation,
    };
    match existing {
        Some(slot) => *slot = condition,
        None => conditions.push(condition),
    }
}

/// The condition of `type_`, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The reason of the condition of `type_` when it was written for `generation` (the object's
/// current one); `None` when the object has not been decided since it last changed.
pub fn current_reason<'a>(
    conditions: &'a [Condition],
    type_: &str,
    generation: Option<i64>,
) -> Option<&'a str> {
    find(conditions, type_)
        .filter(|c| c.observed_generation == generation)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ConditionStatus;

    struct FixedClock(i64);

    impl Clock for FixedClock {
        fn now(&self) -> Time {
            Time(k8s_openapi::jiff::Timestamp::from_second(self.0).unwrap())
        }
    }

    fn ts(seconds: i64) -> Option<Time> {
        Some(FixedClock(seconds).now())
    }

    #[test]
    fn new_condition_gets_now_and_generation() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            READY,
            Reason::Attached,
            "ok",
            Some(3),
            &FixedClock(10),
        );
        assert_eq!(conditions.len(), 1);
        let c = &conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status, c.reason.as_str()),
            ("Ready", ConditionStatus::True, "Attached")
        );
        assert_eq!(c.last_transition_time, ts(10));
        assert_eq!(c.observed_generation, Some(3));
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        // (first reason, second reason, expected lastTransitionTime after the second)
        let cases = [
            (Reason::Attached, Reason::Attached, 10),
            // Same status (False), other reason: the transition time stays.
            (
                Reason::BadCustomerSubscriptionId,
                Reason::InvalidCSPSubscription,
                10,
            ),
            (Reason::Attached, Reason::BadCustomerSubscriptionId, 20),
            (
                Reason::MetadataResolverBadGatewayError,
                Reason::Attached,
                20,
            ),
            (
                Reason::BadCustomerSubscriptionId,
                Reason::MetadataResolverBadGatewayError,
                20,
            ),
        ];
        for (first, second, want) in cases {
            let mut conditions = vec![];
            set_condition(&mut conditions, READY, first, "a", Some(1), &FixedClock(10));
            set_condition(
                &mut conditions,
                READY,
                second,
                "b",
                Some(2),
                &FixedClock(20),
            );
            assert_eq!(conditions.len(), 1);
            assert_eq!(
                conditions[0].last_transition_time,
                ts(want),
                "{first} -> {second}"
            );
            assert_eq!(conditions[0].observed_generation, Some(2));
            assert_eq!(conditions[0].reason, second.as_str());
            assert_eq!(conditions[0].message, "b");
        }
    }

    #[test]
    fn other_types_are_left_alone() {
        let mut conditions = vec![];
        set_condition(
            &mut conditions,
            READY,
            Reason::Registered,
            "a",
            Some(1),
            &FixedClock(10),
        );
        set_condition(
            &mut conditions,
            MULTITENANCY_APPROVED,
            Reason::Approved,
            "b",
            Some(1),
            &FixedClock(20),
        );
        set_condition(
            &mut conditions,
            READY,
            Reason::DuplicateCloudId,
            "c",
            Some(2),
            &FixedClock(30),
        );
        assert_eq!(conditions.len(), 2);
        let approved = find(&conditions, MULTITENANCY_APPROVED).unwrap();
        assert_eq!(approved.last_transition_time, ts(20));
        assert_eq!(approved.observed_generation, Some(1));
        assert_eq!(
            find(&conditions, READY).unwrap().last_transition_time,
            ts(30)
        );
    }

    #[test]
    fn condition_without_transition_time_gets_one() {
        let mut conditions = vec![Condition {
            type_: READY.into(),
            status: ConditionStatus::True,
            reason: "Attached".into(),
            message: "x".into(),
            last_transition_time: None,
            observed_generation: None,
        }];
        set_condition(
            &mut conditions,
            READY,
            Reason::Attached,
            "x",
            Some(1),
            &FixedClock(5),
        );
        assert_eq!(conditions[0].last_transition_time, ts(5));
    }
}
