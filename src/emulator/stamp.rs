//! The stamp behind the emulator's admin usage APIs (DESIGN.md §10, `emulate --stamp FILE`):
//! local subscriptions, VMs and storage accounts, from which the `subscriberUsageAggregates`
//! records are generated deterministically, and raw extra records for bad-input tests.
//!
//! One record per resource, meter and *whole* hour the resource runs: Base VM Size Hours =
//! vcores, VM size hours = 1, Windows VM Size Hours = vcores (Windows only), the storage kind's
//! capacity meter = capacityGB. A record's reported time is its usageStartTime plus
//! `reportingDelay`; it is served once its usage hour has ended and its reported time has come.
//!
//! Times in the file are RFC 3339, or relative to the hour the emulator started in (`-48h`,
//! `+2h`, `-2d`, `now`): a static file cannot hold "two days ago". A running interval without
//! `to` is still running: its records appear as its hours end.
//!
//! Records are never held: a page is computed from a [`Cursor`] (usage hour, resource and
//! meter slot, or extra record), so a month of a thousand tenants costs what one page does.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::{
    guid::Guid,
    usage::{
        meter::{BASE_VM_SIZE_HOURS, METERS, VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS},
        window::hour_of,
    },
};

/// Records per page, as the stamp's usage API answers.
pub const PAGE_SIZE: usize = 1000;
/// Meter slots per resource in a cursor: a Windows VM has the most meters (three).
const SLOTS_PER_RESOURCE: usize = 3;
const HOUR: TimeDelta = TimeDelta::hours(1);
pub const RECORD_TYPE: &str = "Microsoft.Commerce.Admin/UsageAggregate";
/// What `Subscriptions.Admin` says a subscription is in, as its spec enumerates them.
const STATES: [&str; 6] = [
    "NotDefined",
    "Enabled",
    "Warned",
    "PastDue",
    "Disabled",
    "Deleted",
];

#[derive(thiserror::Error, Debug)]
pub enum StampError {
    #[error("cannot read the stamp file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the stamp is not YAML of the stamp's shape: {0}")]
    Syntax(String),
    #[error("invalid stamp: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// A list key written without entries (`storage:`) reads as null: an empty list.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StampFile {
    provider_subscription_id: String,
    #[serde(default)]
    reporting_delay: Option<String>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    subscriptions: Option<Vec<SubscriptionEntry>>,
    #[serde(default)]
    virtual_machines: Option<Vec<VmEntry>>,
    #[serde(default)]
    storage: Option<Vec<StorageEntry>>,
    #[serde(default)]
    extra_records: Option<Vec<Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SubscriptionEntry {
    subscription_id: String,
    tenant_id: String,
    #[serde(default)]
    owner: Option<String>,
    #[serde(default)]
    offer_id: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct VmEntry {
    name: String,
    subscription_id: String,
    #[serde(default)]
    resource_group: Option<String>,
    size: String,
    vcores: u32,
    os: Os,
    running: Vec<Interval>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum Os {
    Linux,
    Windows,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Interval {
    from: String,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct StorageEntry {
    account: String,
    subscription_id: String,
    #[serde(default)]
    resource_group: Option<String>,
    kind: StorageKind,
    #[serde(rename = "capacityGB")]
    capacity_gb: f64,
    from: String,
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum StorageKind {
    BlockBlob,
    PageBlob,
    Table,
    Queue,
}

impl StorageKind {
    /// The documented capacity meter of the kind (usage/meter.rs).
    fn meter_name(self) -> &'static str {
        match self {
            StorageKind::BlockBlob => "BlockBlobCapacity",
            StorageKind::PageBlob => "PageBlobCapacity",
            StorageKind::Table => "TableCapacity",
            StorageKind::Queue => "QueueCapacity",
        }
    }
}

fn meter_named(name: &str) -> Option<&'static str> {
    METERS.iter().find(|m| m.name == name).map(|m| m.id)
}

/// A local subscription as `Subscriptions.Admin` lists it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LocalSubscription {
    pub id: String,
    pub subscription_id: String,
    pub delegated_provider_subscription_id: String,
    pub display_name: String,
    pub owner: String,
    pub tenant_id: String,
    pub routing_resource_manager_type: &'static str,
    pub offer_id: String,
    pub state: String,
}

/// One meter of one resource: the record's fixed parts, made once.
#[derive(Debug, Clone)]
struct ResourceMeter {
    meter_id: &'static str,
    quantity: f64,
    /// `/subscriptions/{local}/providers/Microsoft.Commerce.Admin/UsageAggregate/{local}-{meter}`.
    id: String,
    name: String,
}

/// A VM or storage account: whole hours `[start, end)` it runs (`end` `None`: still running).
#[derive(Debug, Clone)]
struct Resource {
    subscription: Guid,
    subscription_id: String,
    instance_data: String,
    meters: Vec<ResourceMeter>,
    hours: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
}

impl Resource {
    fn runs(&self, hour: DateTime<Utc>) -> bool {
        self.hours
            .iter()
            .any(|(start, end)| *start <= hour && end.is_none_or(|end| hour < end))
    }
}

/// A raw record of `extraRecords`, emitted as written (less `reportedTime`).
#[derive(Debug, Clone)]
struct Extra {
    reported: DateTime<Utc>,
    /// Its `properties.subscriptionId`, when that is a GUID (the `subscriberId` filter).
    subscription: Option<Guid>,
    record: Value,
}

/// The stamp, validated, with every relative time resolved.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub provider_subscription_id: Guid,
    pub reporting_delay: TimeDelta,
    /// The hour relative times count from: the emulator's start, rounded down.
    pub origin: DateTime<Utc>,
    subscriptions: Vec<LocalSubscription>,
    resources: Vec<Resource>,
    extras: Vec<Extra>,
}

/// A time of the file: RFC 3339, or `now`, `-48h`, `+2h30m` from `origin`.
fn parse_time(text: &str, origin: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if text == "now" {
        return Ok(origin);
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'-') => (-1, &text[1..]),
        Some(b'+') => (1, &text[1..]),
        _ => {
            return Err(format!(
                "{text:?} is neither an RFC 3339 time nor relative to the start (now, -48h, +2h)"
            ));
        }
    };
    let span = humantime::parse_duration(rest.trim())
        .ok()
        .and_then(|d| TimeDelta::from_std(d).ok())
        .ok_or_else(|| format!("{text:?}: {rest:?} is not a duration such as 48h or 2d"))?;
    origin
        .checked_add_signed(span * sign)
        .ok_or_else(|| format!("{text:?} is out of range"))
}

/// The first whole hour at or after `time`.
fn ceil_hour(time: DateTime<Utc>) -> DateTime<Utc> {
    let hour = hour_of(time);
    if hour == time { hour } else { hour + HOUR }
}

fn rfc3339(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Secs, false)
}

fn serialize_time<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*time))
}

/// Collects the problems of a file, each naming its field and entry.
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, problem: String) {
        self.0.push(problem);
    }
}

fn guid_field(problems: &mut Problems, at: &str, text: &str) -> Option<Guid> {
    let guid = Guid::parse(text.trim());
    if guid.is_none() {
        problems.add(format!("{at} {text:?} is not a GUID"));
    }
    guid
}

/// Whole hours of the running intervals `[from, to)`, checked: each ends after it starts,
/// and they do not overlap.
fn running_hours(
    problems: &mut Problems,
    at: &str,
    intervals: &[(String, Option<String>)],
    origin: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> {
    let mut parsed = Vec::new();
    for (i, (from, to)) in intervals.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let from = parse_time(from, origin).map_err(|e| problems.add(format!("{at}.from {e}")));
        let to = to
            .as_deref()
            .map(|to| parse_time(to, origin))
            .transpose()
            .map_err(|e| problems.add(format!("{at}.to {e}")));
        let (Ok(from), Ok(to)) = (from, to) else {
            continue;
        };
        if to.is_some_and(|to| to <= from) {
            problems.add(format!("{at}: to is not after from"));
            continue;
        }
        parsed.push((i, from, to));
    }
    parsed.sort_by_key(|(_, from, _)| *from);
    for pair in parsed.windows(2) {
        let ((i, _, to), (j, from, _)) = (pair[0], pair[1]);
        if to.is_none_or(|to| to > from) {
            problems.add(format!("{at}[{i}] and {at}[{j}] overlap"));
        }
    }
    parsed
        .into_iter()
        .map(|(_, from, to)| (ceil_hour(from), to.map(hour_of)))
        .filter(|(start, end)| end.is_none_or(|end| *start < end))
        .collect()
}

fn instance_data(resource_uri: &str, location: &str, additional_info: Value) -> String {
    serde_json::json!({
        "Microsoft.Resources": {
            "resourceUri": resource_uri,
            "location": location,
            "tags": null,
            "additionalInfo": additional_info,
        }
    })
    .to_string()
}

fn resource_meters(subscription_id: &str, meters: &[(&'static str, f64)]) -> Vec<ResourceMeter> {
    meters
        .iter()
        .map(|(meter_id, quantity)| ResourceMeter {
            meter_id,
            quantity: *quantity,
            id: format!(
                "/subscriptions/{subscription_id}/providers/{RECORD_TYPE}/{subscription_id}-{meter_id}"
            ),
            name: format!("{subscription_id}-{meter_id}"),
        })
        .collect()
}

impl Stamp {
    pub fn from_file(path: &std::path::Path, started: DateTime<Utc>) -> Result<Self, StampError> {
        let text = std::fs::read_to_string(path).map_err(|source| StampError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, started)
    }

    /// The stamp of `text`, relative times counted from the hour `started` is in.
    pub fn parse(text: &str, started: DateTime<Utc>) -> Result<Self, StampError> {
        let file: StampFile =
            serde_saphyr::from_str(text).map_err(|e| StampError::Syntax(e.to_string()))?;
        let origin = hour_of(started);
        let mut problems = Problems(Vec::new());
        let provider = guid_field(
            &mut problems,
            "providerSubscriptionId",
            &file.provider_subscription_id,
        );
        let reporting_delay = match file.reporting_delay.as_deref() {
            None => TimeDelta::zero(),
            Some(text) => humantime::parse_duration(text.trim())
                .ok()
                .and_then(|d| TimeDelta::from_std(d).ok())
                .unwrap_or_else(|| {
                    problems.add(format!(
                        "reportingDelay {text:?} is not a duration such as 1h or 90m"
                    ));
                    TimeDelta::zero()
                }),
        };
        let location = file.location.unwrap_or_else(|| "local".to_owned());
        let provider_text = provider.map(|g| g.to_string()).unwrap_or_default();

        let mut known = HashMap::new();
        let mut subscriptions = Vec::new();
        for (i, entry) in file.subscriptions.iter().flatten().enumerate() {
            let at = format!("subscriptions[{i}]");
            let id = guid_field(
                &mut problems,
                &format!("{at}.subscriptionId"),
                &entry.subscription_id,
            );
            let tenant = guid_field(&mut problems, &format!("{at}.tenantId"), &entry.tenant_id);
            let state = entry.state.clone().unwrap_or_else(|| "Enabled".to_owned());
            if !STATES.contains(&state.as_str()) {
                problems.add(format!(
                    "{at}.state {state:?} is not one of {}",
                    STATES.join(", ")
                ));
            }
            let (Some(id), Some(tenant)) = (id, tenant) else {
                continue;
            };
            if known.insert(id, i).is_some() {
                problems.add(format!("{at}.subscriptionId {id} is listed twice"));
            }
            subscriptions.push(LocalSubscription {
                id: format!(
                    "/subscriptions/{provider_text}/providers/Microsoft.Subscriptions.Admin/subscriptions/{id}"
                ),
                subscription_id: id.to_string(),
                delegated_provider_subscription_id: provider_text.clone(),
                display_name: entry.display_name.clone().unwrap_or_else(|| id.to_string()),
                owner: entry.owner.clone().unwrap_or_default(),
                tenant_id: tenant.to_string(),
                routing_resource_manager_type: "Default",
                offer_id: entry.offer_id.clone().unwrap_or_else(|| {
                    format!("/subscriptions/{provider_text}/resourceGroups/default/providers/Microsoft.Subscriptions.Admin/offers/default")
                }),
                state,
            });
        }
        let subscription_of = |problems: &mut Problems, at: &str, text: &str| {
            let id = guid_field(problems, at, text)?;
            if !known.contains_key(&id) {
                problems.add(format!("{at} {id} is not in subscriptions"));
                return None;
            }
            Some(id)
        };

        let mut resources = Vec::new();
        let mut names = BTreeSet::new();
        for (i, vm) in file.virtual_machines.iter().flatten().enumerate() {
            let at = format!("virtualMachines[{i}] ({})", vm.name);
            let subscription = subscription_of(
                &mut problems,
                &format!("{at}.subscriptionId"),
                &vm.subscription_id,
            );
            if vm.name.trim().is_empty() {
                problems.add(format!("{at}.name is empty"));
            }
            if vm.vcores == 0 {
                problems.add(format!("{at}.vcores must be at least 1"));
            }
            let intervals: Vec<(String, Option<String>)> = vm
                .running
                .iter()
                .map(|r| (r.from.clone(), r.to.clone()))
                .collect();
            let hours = running_hours(&mut problems, &format!("{at}.running"), &intervals, origin);
            let Some(subscription) = subscription else {
                continue;
            };
            let group = vm.resource_group.as_deref().unwrap_or("default");
            let uri = format!(
                "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{}",
                vm.name
            );
            if !names.insert(uri.to_lowercase()) {
                problems.add(format!("{at}: another entry has the resource {uri}"));
            }
            let vcores = f64::from(vm.vcores);
            let mut meters = vec![(BASE_VM_SIZE_HOURS, vcores), (VM_SIZE_HOURS, 1.0)];
            if vm.os == Os::Windows {
                meters.push((WINDOWS_VM_SIZE_HOURS, vcores));
            }
            let image = match vm.os {
                Os::Linux => "Linux",
                Os::Windows => "Windows Server",
            };
            let subscription_id = subscription.to_string();
            resources.push(Resource {
                subscription,
                instance_data: instance_data(
                    &uri,
                    &location,
                    serde_json::json!({"ServiceType": vm.size, "ImageType": image}),
                ),
                meters: resource_meters(&subscription_id, &meters),
                subscription_id,
                hours,
            });
        }
        for (i, account) in file.storage.iter().flatten().enumerate() {
            let at = format!("storage[{i}] ({})", account.account);
            let subscription = subscription_of(
                &mut problems,
                &format!("{at}.subscriptionId"),
                &account.subscription_id,
            );
            if account.account.trim().is_empty() {
                problems.add(format!("{at}.account is empty"));
            }
            if !(account.capacity_gb.is_finite() && account.capacity_gb >= 0.0) {
                problems.add(format!(
                    "{at}.capacityGB {} is not a non-negative number",
                    account.capacity_gb
                ));
            }
            let hours = running_hours(
                &mut problems,
                &at,
                &[(account.from.clone(), account.to.clone())],
                origin,
            );
            let (Some(subscription), Some(meter_id)) =
                (subscription, meter_named(account.kind.meter_name()))
            else {
                continue;
            };
            let group = account.resource_group.as_deref().unwrap_or("default");
            let uri = format!(
                "/subscriptions/{subscription}/resourceGroups/{group}/providers/Microsoft.Storage/storageAccounts/{}",
                account.account
            );
            if !names.insert(uri.to_lowercase()) {
                problems.add(format!("{at}: another entry has the resource {uri}"));
            }
            let subscription_id = subscription.to_string();
            resources.push(Resource {
                subscription,
                instance_data: instance_data(&uri, &location, Value::Null),
                meters: resource_meters(&subscription_id, &[(meter_id, account.capacity_gb)]),
                subscription_id,
                hours,
            });
        }

        let mut extras = Vec::new();
        for (i, record) in file.extra_records.into_iter().flatten().enumerate() {
            let at = format!("extraRecords[{i}]");
            let Value::Object(mut record) = record else {
                problems.add(format!("{at} is not a mapping"));
                continue;
            };
            let reported = match record.remove("reportedTime") {
                Some(Value::String(text)) => {
                    parse_time(&text, origin).map_err(|e| format!("{at}.reportedTime {e}"))
                }
                Some(_) => Err(format!("{at}.reportedTime is not a string")),
                None => record
                    .get("properties")
                    .and_then(|p| p.get("usageStartTime"))
                    .and_then(Value::as_str)
                    .and_then(|text| parse_time(text, origin).ok())
                    .map(|start| start + reporting_delay)
                    .ok_or_else(|| {
                        format!(
                            "{at}: properties.usageStartTime is no time, so reportedTime must say when it is reported"
                        )
                    }),
            };
            let subscription = record
                .get("properties")
                .and_then(|p| p.get("subscriptionId"))
                .and_then(Value::as_str)
                .and_then(Guid::parse);
            match reported {
                Ok(reported) => extras.push(Extra {
                    reported,
                    subscription,
                    record: Value::Object(record),
                }),
                Err(problem) => problems.add(problem),
            }
        }

        match provider {
            Some(provider) if problems.0.is_empty() => Ok(Self {
                provider_subscription_id: provider,
                reporting_delay,
                origin,
                subscriptions,
                resources,
                extras,
            }),
            _ => Err(StampError::Invalid(problems.0)),
        }
    }

    /// `Subscriptions.Admin`'s list, in file order.
    pub fn subscriptions(&self) -> &[LocalSubscription] {
        &self.subscriptions
    }

    /// A line for the log: what the stamp holds.
    pub fn summary(&self) -> String {
        format!(
            "{} subscriptions, {} resources, {} extra records, reporting delay {} s, relative times from {}",
            self.subscriptions.len(),
            self.resources.len(),
            self.extras.len(),
            self.reporting_delay.num_seconds(),
            rfc3339(self.origin)
        )
    }

    /// The page of `query` that starts at `cursor`, as known at `now`: at most `limit`
    /// records, and where the next page starts when there is one.
    pub fn page(
        &self,
        query: &Query,
        cursor: Cursor,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Page<'_> {
        let limit = limit.max(1);
        let mut records = Vec::new();
        let served = |reported: DateTime<Utc>| {
            query.start <= reported && reported < query.end && reported <= now
        };
        let wanted = |subscription: Option<Guid>| {
            query
                .subscriber
                .is_none_or(|wanted| subscription == Some(wanted))
        };
        let first_hour = ceil_hour(query.start - self.reporting_delay);
        let (mut hour, mut slot, first_extra) = match cursor {
            Cursor::Start => (Some(first_hour), 0, 0),
            Cursor::Generated { hour, slot } => (Some(hour.max(first_hour)), slot, 0),
            Cursor::Extra { index } => (None, 0, index),
        };
        let slots = self.resources.len() * SLOTS_PER_RESOURCE;
        // An hour is served once it has ended and its reported time has come (a token can
        // name any hour: out of chrono's range is past every window).
        let due = |hour: DateTime<Utc>| {
            hour.checked_add_signed(HOUR).is_some_and(|end| end <= now)
                && hour
                    .checked_add_signed(self.reporting_delay)
                    .is_some_and(served)
        };
        while let Some(current) = hour.filter(|h| due(*h)) {
            let hour_end = current + HOUR;
            while slot < slots {
                let resource = &self.resources[slot / SLOTS_PER_RESOURCE];
                let meter = slot % SLOTS_PER_RESOURCE;
                if meter >= resource.meters.len()
                    || !wanted(Some(resource.subscription))
                    || !resource.runs(current)
                {
                    slot = (slot / SLOTS_PER_RESOURCE + 1) * SLOTS_PER_RESOURCE;
                    continue;
                }
                if records.len() == limit {
                    return Page {
                        records,
                        next: Some(Cursor::Generated {
                            hour: current,
                            slot,
                        }),
                    };
                }
                let m = &resource.meters[meter];
                records.push(Item::Generated(Record {
                    id: &m.id,
                    name: &m.name,
                    type_: RECORD_TYPE,
                    properties: Properties {
                        subscription_id: &resource.subscription_id,
                        usage_start_time: current,
                        usage_end_time: hour_end,
                        instance_data: &resource.instance_data,
                        quantity: m.quantity,
                        meter_id: m.meter_id,
                    },
                }));
                slot += 1;
            }
            hour = Some(hour_end);
            slot = 0;
        }
        for (index, extra) in self.extras.iter().enumerate().skip(first_extra) {
            if !(served(extra.reported) && wanted(extra.subscription)) {
                continue;
            }
            if records.len() == limit {
                return Page {
                    records,
                    next: Some(Cursor::Extra { index }),
                };
            }
            records.push(Item::Raw(&extra.record));
        }
        Page {
            records,
            next: None,
        }
    }

    /// Every record of `query` known at `now`, page after page (what a client that follows
    /// every continuation gets).
    pub fn records(&self, query: &Query, now: DateTime<Utc>) -> Vec<Item<'_>> {
        let mut all = Vec::new();
        let mut cursor = Cursor::Start;
        loop {
            let page = self.page(query, cursor, now, PAGE_SIZE);
            all.extend(page.records);
            match page.next {
                Some(next) => cursor = next,
                None => return all,
            }
        }
    }
}

/// A window of reported time `[start, end)`, optionally of one local subscription
/// (`subscriberId`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Query {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub subscriber: Option<Guid>,
}

/// Where a page starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cursor {
    Start,
    /// At this usage hour's resource-and-meter slot.
    Generated {
        hour: DateTime<Utc>,
        slot: usize,
    },
    /// At this extra record (every generated record is behind).
    Extra {
        index: usize,
    },
}

impl Cursor {
    /// The `continuationToken` text.
    pub fn token(self) -> String {
        match self {
            Cursor::Start => "s".to_owned(),
            Cursor::Generated { hour, slot } => format!("g.{}.{slot}", hour.timestamp() / 3600),
            Cursor::Extra { index } => format!("x.{index}"),
        }
    }

    /// The cursor a token names, `None` for a text [`Cursor::token`] did not write.
    pub fn parse(token: &str) -> Option<Self> {
        let mut parts = token.split('.');
        let cursor = match (parts.next()?, parts.next(), parts.next()) {
            ("s", None, None) => Cursor::Start,
            ("g", Some(hours), Some(slot)) => Cursor::Generated {
                hour: DateTime::from_timestamp(hours.parse::<i64>().ok()?.checked_mul(3600)?, 0)?,
                slot: slot.parse().ok()?,
            },
            ("x", Some(index), None) => Cursor::Extra {
                index: index.parse().ok()?,
            },
            _ => return None,
        };
        parts.next().is_none().then_some(cursor)
    }
}

/// One page of records, and where the next one starts.
#[derive(Debug, Serialize)]
pub struct Page<'a> {
    pub records: Vec<Item<'a>>,
    #[serde(skip)]
    pub next: Option<Cursor>,
}

/// A record of a page: generated from a resource, or an extra record as written.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Item<'a> {
    Generated(Record<'a>),
    Raw(&'a Value),
}

/// A generated record, in the shape the published spec declares (`UsageAggregate`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record<'a> {
    pub id: &'a str,
    pub name: &'a str,
    #[serde(rename = "type")]
    pub type_: &'static str,
    pub properties: Properties<'a>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Properties<'a> {
    pub subscription_id: &'a str,
    #[serde(serialize_with = "serialize_time")]
    pub usage_start_time: DateTime<Utc>,
    #[serde(serialize_with = "serialize_time")]
    pub usage_end_time: DateTime<Utc>,
    /// `{"Microsoft.Resources":{resourceUri,location,tags,additionalInfo}}` as a JSON string.
    pub instance_data: &'a str,
    pub quantity: f64,
    pub meter_id: &'static str,
}

#[cfg(test)]
#[path = "stamp_tests.rs"]
mod tests;
