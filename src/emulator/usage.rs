//! The stamp's admin APIs (DESIGN.md §9, §10) under `/subscriptions/{providerSubscriptionId}`:
//! `Microsoft.Commerce.Admin/subscriberUsageAggregates` (api-version `2015-06-01-preview`)
//! and `Microsoft.Subscriptions.Admin/subscriptions` (`2015-11-01`), answered from the
//! [`Stamp`](super::stamp::Stamp). Reached through [`super::arm::dispatch`] after its bearer
//! check, as the stamp's admin ARM authenticates every caller.
//!
//! A usage page carries both `nextLink` (what the published spec, azsadmin `Commerce.json`,
//! pages by: a URL with `&continuationToken=`) and `continuationToken` (what DESIGN.md §9
//! names), each pointing at the same next page.

use std::collections::HashMap;

use axum::{
    Json,
    http::{Method, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Timelike, Utc};
use serde::Serialize;

use super::{
    Emulator,
    arm::ArmError,
    stamp::{Cursor, Item, LocalSubscription, PAGE_SIZE, Query},
};
use crate::guid::Guid;

pub const COMMERCE_PROVIDER: &str = "Microsoft.Commerce.Admin";
pub const COMMERCE_API_VERSION: &str = "2015-06-01-preview";
pub const SUBSCRIPTIONS_PROVIDER: &str = "Microsoft.Subscriptions.Admin";
pub const SUBSCRIPTIONS_API_VERSION: &str = "2015-11-01";

/// Which admin API a path under `/subscriptions/{sid}` names, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdminApi {
    UsageAggregates,
    Subscriptions,
}

impl AdminApi {
    pub fn of(segments: &[&str]) -> Option<Self> {
        let is = |segment: &str, word: &str| segment.eq_ignore_ascii_case(word);
        match segments {
            [p, ns, r]
                if is(p, "providers")
                    && is(ns, COMMERCE_PROVIDER)
                    && is(r, "subscriberUsageAggregates") =>
            {
                Some(AdminApi::UsageAggregates)
            }
            [p, ns, r]
                if is(p, "providers")
                    && is(ns, SUBSCRIPTIONS_PROVIDER)
                    && is(r, "subscriptions") =>
            {
                Some(AdminApi::Subscriptions)
            }
            _ => None,
        }
    }

    fn api_version(self) -> &'static str {
        match self {
            AdminApi::UsageAggregates => COMMERCE_API_VERSION,
            AdminApi::Subscriptions => SUBSCRIPTIONS_API_VERSION,
        }
    }
}

fn bad_request(code: &str, message: String) -> ArmError {
    ArmError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Answers an admin API call of an authenticated caller.
pub fn answer(
    emulator: &Emulator,
    api: AdminApi,
    method: &Method,
    path: &str,
    subscription: &str,
    query: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<Response, ArmError> {
    let Some(stamp) = emulator.stamp.as_deref() else {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "InvalidResourceType",
            format!(
                "The resource type could not be found for {path}: the emulator runs without a stamp (--stamp)."
            ),
        ));
    };
    if Guid::parse(subscription) != Some(stamp.provider_subscription_id) {
        return Err(ArmError::new(
            StatusCode::NOT_FOUND,
            "SubscriptionNotFound",
            format!("The subscription '{subscription}' is not the stamp's provider subscription."),
        ));
    }
    if method != Method::GET {
        return Err(ArmError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            format!("The {method} method is not supported for {path}."),
        ));
    }
    let wanted = api.api_version();
    match query.get("api-version").map(String::as_str) {
        None => {
            return Err(bad_request(
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests."
                    .to_owned(),
            ));
        }
        Some(version) if version != wanted => {
            return Err(bad_request(
                "NoRegisteredProviderFound",
                format!(
                    "No registered resource provider found for api version '{version}'. The supported api-versions are '{wanted}'."
                ),
            ));
        }
        Some(_) => {}
    }
    match api {
        AdminApi::Subscriptions => Ok(Json(SubscriptionList {
            value: stamp.subscriptions(),
        })
        .into_response()),
        AdminApi::UsageAggregates => {
            let (query_window, cursor) = usage_query(query)?;
            let page = stamp.page(&query_window, cursor, now, PAGE_SIZE);
            let token = page.next.map(Cursor::token);
            let next_link = token
                .as_ref()
                .map(|token| next_link(&emulator.base_url, path, query, token));
            Ok(Json(UsagePage {
                value: page.records,
                continuation_token: token,
                next_link,
            })
            .into_response())
        }
    }
}

#[derive(Serialize)]
struct SubscriptionList<'a> {
    value: &'a [LocalSubscription],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UsagePage<'a> {
    value: Vec<Item<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    continuation_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_link: Option<String>,
}

/// The same request with `continuationToken` set to `token`.
fn next_link(base_url: &str, path: &str, query: &HashMap<String, String>, token: &str) -> String {
    let mut pairs: Vec<(&str, &str)> = query
        .iter()
        .filter(|(k, _)| k.as_str() != "continuationToken")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    pairs.sort();
    pairs.push(("continuationToken", token));
    let encoded: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}={}", encode(k), encode(v)))
        .collect();
    format!("{base_url}{path}?{}", encoded.join("&"))
}

/// Percent-encoding of a query component (RFC 3986 unreserved characters kept).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The window, subscriber and cursor a usage request asks for, or ARM's 400 naming the
/// parameter.
fn usage_query(query: &HashMap<String, String>) -> Result<(Query, Cursor), ArmError> {
    let time = |name: &str| -> Result<DateTime<Utc>, ArmError> {
        let text = query.get(name).ok_or_else(|| {
            bad_request(
                "InvalidParameter",
                format!("The query parameter '{name}' is required."),
            )
        })?;
        let time = DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| {
                bad_request(
                    "InvalidParameter",
                    format!("The query parameter '{name}' value '{text}' is not an ISO 8601 time."),
                )
            })?;
        if time.minute() != 0 || time.second() != 0 || time.nanosecond() != 0 {
            return Err(bad_request(
                "InvalidParameter",
                format!(
                    "The query parameter '{name}' value '{text}' must be at the beginning of an hour for hourly aggregation."
                ),
            ));
        }
        Ok(time)
    };
    let start = time("reportedStartTime")?;
    let end = time("reportedEndTime")?;
    if end <= start {
        return Err(bad_request(
            "InvalidParameter",
            "The reportedEndTime must be after the reportedStartTime.".to_owned(),
        ));
    }
    match query.get("aggregationGranularity").map(String::as_str) {
        Some(g) if g.eq_ignore_ascii_case("Hourly") => {}
        other => {
            return Err(bad_request(
                "InvalidParameter",
                format!(
                    "The aggregationGranularity '{}' is not served: the emulator aggregates Hourly only (the API's default is Daily).",
                    other.unwrap_or("")
                ),
            ));
        }
    }
    let subscriber = match query.get("subscriberId").map(|s| s.trim()) {
        None | Some("") => None,
        Some(text) => Some(Guid::parse(text).ok_or_else(|| {
            bad_request(
                "InvalidParameter",
                format!("The subscriberId '{text}' is not a GUID."),
            )
        })?),
    };
    let cursor = match query.get("continuationToken").map(|s| s.trim()) {
        None | Some("") => Cursor::Start,
        Some(token) => Cursor::parse(token).ok_or_else(|| {
            bad_request(
                "InvalidContinuationToken",
                format!("The continuationToken '{token}' was not issued by this stamp."),
            )
        })?,
    };
    Ok((
        Query {
            start,
            end,
            subscriber,
        },
        cursor,
    ))
}

#[cfg(test)]
#[path = "usage_tests.rs"]
mod tests;
