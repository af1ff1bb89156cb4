use std::collections::BTreeSet;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

const PROVIDER: &str = "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c";
const LOCAL: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const OTHER: &str = "aaaaaaaa-0000-4000-8000-000000000002";
const TENANT: &str = "bbbbbbbb-0000-4000-8000-000000000001";
const BLOCK_BLOB: &str = "09F8879E-87E9-4305-A572-4B7BE209F857";
const TABLE: &str = "B4438D5D-453B-4EE1-B42A-DC72E377F1E4";

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// The emulator "started" at 12:34 on 2026-03-10: relative times count from 12:00.
fn started() -> DateTime<Utc> {
    at("2026-03-10T12:34:56Z")
}

fn stamp(body: &str) -> Stamp {
    Stamp::parse(&yaml(body), started()).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

fn yaml(body: &str) -> String {
    format!(
        "providerSubscriptionId: {PROVIDER}\nsubscriptions:\n- {{subscriptionId: {LOCAL}, tenantId: {TENANT}, owner: a@b, displayName: one}}\n- {{subscriptionId: {OTHER}, tenantId: {TENANT}}}\n{body}"
    )
}

fn window(start: &str, end: &str) -> Query {
    Query {
        start: at(start),
        end: at(end),
        subscriber: None,
    }
}

/// Every record as JSON (what the API serializes).
fn all(stamp: &Stamp, query: &Query, now: DateTime<Utc>) -> Vec<Value> {
    stamp
        .records(query, now)
        .iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

/// (usageStartTime, meterId, quantity) of each record.
fn rows(records: &[Value]) -> Vec<(String, String, f64)> {
    records
        .iter()
        .map(|r| {
            let p = &r["properties"];
            (
                p["usageStartTime"].as_str().unwrap().to_owned(),
                p["meterId"].as_str().unwrap().to_owned(),
                p["quantity"].as_f64().unwrap(),
            )
        })
        .collect()
}

const LATE: &str = "2026-04-01T00:00:00Z";

/// (usageStartTime, meterId, quantity) wanted.
type Rows<'a> = Vec<(String, &'a str, f64)>;
/// A VM of the random stamps: vcores, Windows, minute it starts, minutes it runs (open: none).
type RandomVm = (u32, bool, i64, Option<i64>);

#[test]
fn records_per_resource_meter_and_whole_hour() {
    let vm = |os: &str, running: &str| {
        format!(
            "virtualMachines:\n- {{name: vm1, subscriptionId: {LOCAL}, size: Standard_D2_v2, vcores: 2, os: {os}, running: [{running}]}}\n"
        )
    };
    let base = BASE_VM_SIZE_HOURS;
    let size = VM_SIZE_HOURS;
    let win = WINDOWS_VM_SIZE_HOURS;
    let h = |hour: u32| format!("2026-03-01T{hour:02}:00:00+00:00");
    let cases: Vec<(&str, String, Rows)> = vec![
        (
            "a Linux VM: base = vcores, size hours = 1",
            vm(
                "Linux",
                "{from: '2026-03-01T10:00:00Z', to: '2026-03-01T12:00:00Z'}",
            ),
            vec![
                (h(10), base, 2.0),
                (h(10), size, 1.0),
                (h(11), base, 2.0),
                (h(11), size, 1.0),
            ],
        ),
        (
            "a Windows VM: the licence meter counts the cores again",
            vm(
                "Windows",
                "{from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}",
            ),
            vec![(h(10), base, 2.0), (h(10), size, 1.0), (h(10), win, 2.0)],
        ),
        (
            "partial hours are not whole hours",
            vm(
                "Linux",
                "{from: '2026-03-01T10:30:00Z', to: '2026-03-01T12:15:00Z'}",
            ),
            vec![(h(11), base, 2.0), (h(11), size, 1.0)],
        ),
        (
            "less than an hour inside one hour: nothing",
            vm(
                "Linux",
                "{from: '2026-03-01T10:05:00Z', to: '2026-03-01T10:55:00Z'}",
            ),
            vec![],
        ),
        (
            "two intervals, a gap between",
            vm(
                "Linux",
                "{from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}, {from: '2026-03-01T13:00:00Z', to: '2026-03-01T14:00:00Z'}",
            ),
            vec![
                (h(10), base, 2.0),
                (h(10), size, 1.0),
                (h(13), base, 2.0),
                (h(13), size, 1.0),
            ],
        ),
        (
            "storage: the kind's capacity meter = capacityGB",
            format!(
                "storage:\n- {{account: acct1, subscriptionId: {LOCAL}, kind: BlockBlob, capacityGB: 1.5, from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}}\n- {{account: acct2, subscriptionId: {LOCAL}, kind: Table, capacityGB: 3, from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}}\n"
            ),
            vec![(h(10), BLOCK_BLOB, 1.5), (h(10), TABLE, 3.0)],
        ),
    ];
    for (what, body, want) in cases {
        let stamp = stamp(&body);
        let got = rows(&all(
            &stamp,
            &window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z"),
            at(LATE),
        ));
        let want: Vec<(String, String, f64)> = want
            .into_iter()
            .map(|(t, m, q)| (t, m.to_owned(), q))
            .collect();
        assert_eq!(got, want, "{what}");
    }
}

#[test]
fn a_record_has_the_documented_shape() {
    let stamp = stamp(&format!(
        "virtualMachines:\n- {{name: vm1, subscriptionId: {LOCAL}, resourceGroup: rg1, size: Standard_D2_v2, vcores: 2, os: Windows, running: [{{from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}}]}}\n"
    ));
    let records = all(
        &stamp,
        &window("2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z"),
        at(LATE),
    );
    assert_eq!(
        records[0],
        json!({
            "id": format!("/subscriptions/{LOCAL}/providers/Microsoft.Commerce.Admin/UsageAggregate/{LOCAL}-{BASE_VM_SIZE_HOURS}"),
            "name": format!("{LOCAL}-{BASE_VM_SIZE_HOURS}"),
            "type": "Microsoft.Commerce.Admin/UsageAggregate",
            "properties": {
                "subscriptionId": LOCAL,
                "usageStartTime": "2026-03-01T10:00:00+00:00",
                "usageEndTime": "2026-03-01T11:00:00+00:00",
                "instanceData": records[0]["properties"]["instanceData"],
                "quantity": 2.0,
                "meterId": BASE_VM_SIZE_HOURS,
            }
        })
    );
    let instance: Value = serde_json::from_str(
        records[0]["properties"]["instanceData"]
            .as_str()
            .expect("instanceData is a JSON string"),
    )
    .unwrap();
    assert_eq!(
        instance,
        json!({"Microsoft.Resources": {
            "resourceUri": format!("/subscriptions/{LOCAL}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/vm1"),
            "location": "local",
            "tags": null,
            "additionalInfo": {"ServiceType": "Standard_D2_v2", "ImageType": "Windows Server"},
        }})
    );
}

#[test]
fn reported_time_is_usage_time_plus_the_delay_and_served_once_come() {
    let stamp = stamp(&format!(
        "reportingDelay: 2h\nvirtualMachines:\n- {{name: vm1, subscriptionId: {LOCAL}, size: A1, vcores: 1, os: Linux, running: [{{from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}}]}}\n"
    ));
    let cases = [
        ("2026-03-01T10:00:00Z", "2026-03-01T12:00:00Z", LATE, 0),
        ("2026-03-01T12:00:00Z", "2026-03-01T13:00:00Z", LATE, 2),
        ("2026-03-01T11:00:00Z", "2026-03-02T00:00:00Z", LATE, 2),
        // Not yet reported at 11:59, reported at 12:00.
        (
            "2026-03-01T12:00:00Z",
            "2026-03-01T13:00:00Z",
            "2026-03-01T11:59:59Z",
            0,
        ),
        (
            "2026-03-01T12:00:00Z",
            "2026-03-01T13:00:00Z",
            "2026-03-01T12:00:00Z",
            2,
        ),
    ];
    for (start, end, now, count) in cases {
        assert_eq!(
            all(&stamp, &window(start, end), at(now)).len(),
            count,
            "[{start}, {end}) at {now}"
        );
    }
}

#[test]
fn a_vm_still_running_reports_each_hour_once_it_has_ended() {
    let stamp = stamp(&format!(
        "virtualMachines:\n- {{name: vm1, subscriptionId: {LOCAL}, size: A1, vcores: 4, os: Linux, running: [{{from: -3h}}]}}\n"
    ));
    // From 09:00 (three hours before the 12:00 start hour); at 13:30 hours 9..=12 have ended.
    let records = all(
        &stamp,
        &window("2026-03-10T00:00:00Z", "2026-03-11T00:00:00Z"),
        at("2026-03-10T13:30:00Z"),
    );
    let hours: BTreeSet<String> = rows(&records).into_iter().map(|r| r.0).collect();
    let want: BTreeSet<String> = (9..=12)
        .map(|h| format!("2026-03-10T{h:02}:00:00+00:00"))
        .collect();
    assert_eq!(hours, want);
}

#[test]
fn relative_times_count_from_the_start_hour() {
    for (text, want) in [
        ("now", "2026-03-10T12:00:00Z"),
        ("-48h", "2026-03-08T12:00:00Z"),
        ("-2d", "2026-03-08T12:00:00Z"),
        ("+90m", "2026-03-10T13:30:00Z"),
        ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
        ("2026-01-01T01:00:00+01:00", "2026-01-01T00:00:00Z"),
    ] {
        assert_eq!(parse_time(text, hour_of(started())), Ok(at(want)), "{text}");
    }
    for bad in ["yesterday", "-", "-48x", "48h", "2026-01-01"] {
        assert!(parse_time(bad, hour_of(started())).is_err(), "{bad}");
    }
}

#[test]
fn the_subscriber_filter_keeps_one_local_subscription() {
    let stamp = stamp(&format!(
        "virtualMachines:\n- {{name: vm1, subscriptionId: {LOCAL}, size: A1, vcores: 1, os: Linux, running: [{{from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}}]}}\n- {{name: vm2, subscriptionId: {OTHER}, size: A1, vcores: 1, os: Linux, running: [{{from: '2026-03-01T10:00:00Z', to: '2026-03-01T11:00:00Z'}}]}}\n"
    ));
    let mut query = window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
    assert_eq!(all(&stamp, &query, at(LATE)).len(), 4);
    query.subscriber = Guid::parse(OTHER);
    let records = all(&stamp, &query, at(LATE));
    assert_eq!(records.len(), 2);
    assert!(
        records
            .iter()
            .all(|r| r["properties"]["subscriptionId"] == OTHER)
    );
}

#[test]
fn extra_records_are_emitted_as_written_in_their_reported_hour() {
    let stamp = stamp(
        r#"reportingDelay: 1h
extraRecords:
- {id: bad-meter, properties: {subscriptionId: aaaaaaaa-0000-4000-8000-000000000001, usageStartTime: '2026-03-01T10:00:00Z', usageEndTime: '2026-03-01T11:00:00Z', meterId: not-a-guid, quantity: 1, instanceData: '{}'}}
- {id: bad-time, reportedTime: '2026-03-01T15:00:00Z', properties: {usageStartTime: yesterday, quantity: NaN}}
"#,
    );
    let eleven = all(
        &stamp,
        &window("2026-03-01T11:00:00Z", "2026-03-01T12:00:00Z"),
        at(LATE),
    );
    assert_eq!(eleven.len(), 1);
    assert_eq!(eleven[0]["id"], "bad-meter");
    assert_eq!(eleven[0]["properties"]["meterId"], "not-a-guid");
    let fifteen = all(
        &stamp,
        &window("2026-03-01T15:00:00Z", "2026-03-01T16:00:00Z"),
        at(LATE),
    );
    assert_eq!(
        fifteen,
        [
            json!({"id": "bad-time", "properties": {"usageStartTime": "yesterday", "quantity": "NaN"}})
        ],
        "reportedTime is not part of the record"
    );
}

#[test]
fn a_bad_stamp_names_the_field_and_the_entry() {
    let vm = |fields: &str| {
        format!(
            "virtualMachines:\n- {{name: vm1, subscriptionId: {LOCAL}, size: A1, os: Linux, {fields}}}\n"
        )
    };
    let cases = [
        (
            vm("vcores: 0, running: [{from: -1h}]"),
            "virtualMachines[0] (vm1).vcores must be at least 1",
        ),
        (
            vm("vcores: 1, running: [{from: -1h, to: -2h}]"),
            "virtualMachines[0] (vm1).running[0]: to is not after from",
        ),
        (
            vm("vcores: 1, running: [{from: -5h, to: -1h}, {from: -2h}]"),
            "virtualMachines[0] (vm1).running[0] and virtualMachines[0] (vm1).running[1] overlap",
        ),
        (
            vm("vcores: 1, running: [{from: soon}]"),
            "virtualMachines[0] (vm1).running[0].from \"soon\" is neither",
        ),
        (
            "virtualMachines:\n- {name: vm1, subscriptionId: cccccccc-0000-4000-8000-000000000001, size: A1, vcores: 1, os: Linux, running: []}\n".to_owned(),
            "virtualMachines[0] (vm1).subscriptionId cccccccc-0000-4000-8000-000000000001 is not in subscriptions",
        ),
        (
            format!(
                "storage:\n- {{account: a, subscriptionId: {LOCAL}, kind: BlockBlob, capacityGB: -1, from: -1h}}\n"
            ),
            "storage[0] (a).capacityGB -1 is not a non-negative number",
        ),
        (
            format!(
                "storage:\n- {{account: a, subscriptionId: {LOCAL}, kind: BlockBlob, capacityGB: 1, from: -1h}}\n- {{account: A, subscriptionId: {LOCAL}, kind: Table, capacityGB: 1, from: -1h}}\n"
            ),
            "storage[1] (A): another entry has the resource",
        ),
        (
            "reportingDelay: soon\n".to_owned(),
            "reportingDelay \"soon\" is not a duration",
        ),
        (
            "extraRecords:\n- {id: x, properties: {usageStartTime: never}}\n".to_owned(),
            "extraRecords[0]: properties.usageStartTime is no time, so reportedTime must say",
        ),
        (
            "extraRecords:\n- 7\n".to_owned(),
            "extraRecords[0] is not a mapping",
        ),
    ];
    for (body, want) in cases {
        let error = Stamp::parse(&yaml(&body), started())
            .expect_err(&body)
            .to_string();
        assert!(error.contains(want), "{body}\n{error}\nwanted: {want}");
    }
    for (text, want) in [
        (
            "providerSubscriptionId: nope\n".to_owned(),
            "providerSubscriptionId \"nope\" is not a GUID",
        ),
        (
            format!(
                "providerSubscriptionId: {PROVIDER}\nsubscriptions:\n- {{subscriptionId: {LOCAL}, tenantId: {TENANT}}}\n- {{subscriptionId: {LOCAL}, tenantId: x, state: Happy}}\n"
            ),
            "subscriptions[1].tenantId \"x\" is not a GUID; subscriptions[1].state \"Happy\" is not one of",
        ),
        (
            format!(
                "providerSubscriptionId: {PROVIDER}\nsubscriptions:\n- {{subscriptionId: {LOCAL}, tenantId: {TENANT}}}\n- {{subscriptionId: {LOCAL}, tenantId: {TENANT}}}\n"
            ),
            "subscriptions[1].subscriptionId aaaaaaaa-0000-4000-8000-000000000001 is listed twice",
        ),
        (
            format!("providerSubscriptionId: {PROVIDER}\nvms: []\n"),
            "unknown field",
        ),
    ] {
        let error = Stamp::parse(&text, started()).expect_err(&text).to_string();
        assert!(error.contains(want), "{text}\n{error}\nwanted: {want}");
    }
}

#[test]
fn the_subscription_list_has_the_admin_shape() {
    let stamp = stamp("");
    let list = serde_json::to_value(stamp.subscriptions()).unwrap();
    assert_eq!(
        list[0],
        json!({
            "id": format!("/subscriptions/{PROVIDER}/providers/Microsoft.Subscriptions.Admin/subscriptions/{LOCAL}"),
            "subscriptionId": LOCAL,
            "delegatedProviderSubscriptionId": PROVIDER,
            "displayName": "one",
            "owner": "a@b",
            "tenantId": TENANT,
            "routingResourceManagerType": "Default",
            "offerId": format!("/subscriptions/{PROVIDER}/resourceGroups/default/providers/Microsoft.Subscriptions.Admin/offers/default"),
            "state": "Enabled",
        })
    );
    assert_eq!(list[1]["displayName"], OTHER);
}

#[test]
fn tokens_read_back_and_others_are_refused() {
    for cursor in [
        Cursor::Start,
        Cursor::Generated {
            hour: at("2026-03-01T10:00:00Z"),
            slot: 17,
        },
        Cursor::Extra { index: 3 },
    ] {
        assert_eq!(Cursor::parse(&cursor.token()), Some(cursor));
    }
    for bad in [
        "",
        "g",
        "g.1",
        "g.x.1",
        "x.",
        "x.1.2",
        "g.99999999999999999.1",
        "y.1",
    ] {
        assert_eq!(Cursor::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn pages_hold_a_thousand_and_say_where_the_next_starts() {
    // 600 VMs × 2 meters × 2 hours = 2,400 records: pages of 1,000, 1,000, 400.
    let mut body = String::from("virtualMachines:\n");
    for i in 0..600 {
        body.push_str(&format!(
            "- {{name: vm{i}, subscriptionId: {LOCAL}, size: A1, vcores: 1, os: Linux, running: [{{from: '2026-03-01T10:00:00Z', to: '2026-03-01T12:00:00Z'}}]}}\n"
        ));
    }
    let stamp = stamp(&body);
    let query = window("2026-03-01T00:00:00Z", "2026-03-02T00:00:00Z");
    let mut sizes = Vec::new();
    let mut cursor = Cursor::Start;
    loop {
        let page = stamp.page(&query, cursor, at(LATE), PAGE_SIZE);
        sizes.push(page.records.len());
        match page.next {
            Some(next) => cursor = Cursor::parse(&next.token()).unwrap(),
            None => break,
        }
    }
    assert_eq!(sizes, [1000, 1000, 400]);
}

/// A small random stamp: VMs and storage with random whole-or-partial intervals in a day.
fn arbitrary_stamp() -> impl Strategy<Value = (String, Vec<RandomVm>)> {
    let resource = (
        1u32..4,
        any::<bool>(),
        0i64..1440,
        proptest::option::of(1i64..1440),
    );
    (0u32..3, proptest::collection::vec(resource, 0..6)).prop_map(|(delay, resources)| {
        let mut body = format!("reportingDelay: {delay}h\nvirtualMachines:\n");
        let base = at("2026-03-01T00:00:00Z");
        let minutes = |m: i64| (base + TimeDelta::minutes(m)).to_rfc3339();
        for (i, (vcores, windows, from, length)) in resources.iter().enumerate() {
            let os = if *windows { "Windows" } else { "Linux" };
            let to = length.map_or(String::new(), |l| format!(", to: '{}'", minutes(from + l)));
            body.push_str(&format!(
                "- {{name: vm{i}, subscriptionId: {LOCAL}, size: A1, vcores: {vcores}, os: {os}, running: [{{from: '{}'{to}}}]}}\n",
                minutes(*from)
            ));
        }
        body.push_str("extraRecords:\n");
        for i in 0..resources.len() {
            body.push_str(&format!(
                "- {{id: extra{i}, reportedTime: '{}'}}\n",
                minutes(i as i64 * 200)
            ));
        }
        (body, resources)
    })
}

proptest! {
    /// Pages concatenated are every record of the window, each once, whatever the page size
    /// and wherever the window starts and ends; and they are exactly the records the stamp
    /// describes, counted here without the generator.
    #[test]
    fn pages_concatenated_are_the_window_without_duplicates(
        (body, resources) in arbitrary_stamp(),
        limit in 1usize..40,
        start in 0i64..30,
        length in 1i64..30,
        now_hours in 0i64..60,
    ) {
        let stamp = stamp(&body);
        let day = at("2026-03-01T00:00:00Z");
        let query = Query {
            start: day + TimeDelta::hours(start),
            end: day + TimeDelta::hours(start + length),
            subscriber: None,
        };
        let now = day + TimeDelta::hours(now_hours) + TimeDelta::minutes(7);
        let mut paged = Vec::new();
        let mut cursor = Cursor::Start;
        let mut pages = 0;
        loop {
            let page = stamp.page(&query, cursor, now, limit);
            prop_assert!(page.records.len() <= limit);
            prop_assert!(!page.records.is_empty() || page.next.is_none(), "an empty page says there is no next");
            paged.extend(page.records.iter().map(|r| serde_json::to_value(r).unwrap()));
            pages += 1;
            prop_assert!(pages < 10_000);
            match page.next {
                Some(next) => cursor = Cursor::parse(&next.token()).unwrap(),
                None => break,
            }
        }
        let keys: Vec<String> = paged.iter().map(|r| {
            let p = &r["properties"];
            format!("{}|{}|{}|{}", r["id"], p["instanceData"], p["meterId"], p["usageStartTime"])
        }).collect();
        let unique: BTreeSet<&String> = keys.iter().collect();
        prop_assert_eq!(unique.len(), keys.len(), "no record twice");

        // Independently: whole hours inside [from, to), ended by now, reported in the window.
        let delay = stamp.reporting_delay;
        let mut want = 0usize;
        for (vcores, windows, from, length) in &resources {
            let _ = vcores;
            let from = day + TimeDelta::minutes(*from);
            let to = length.map(|l| from + TimeDelta::minutes(l));
            let mut hour = ceil_hour(from);
            while to.is_none_or(|to| hour + HOUR <= to) && hour + HOUR <= now {
                let reported = hour + delay;
                if query.start <= reported && reported < query.end && reported <= now {
                    want += if *windows { 3 } else { 2 };
                }
                hour += HOUR;
            }
        }
        for i in 0..resources.len() {
            let reported = day + TimeDelta::minutes(i as i64 * 200);
            if query.start <= reported && reported < query.end && reported <= now {
                want += 1;
            }
        }
        prop_assert_eq!(paged.len(), want);
    }
}

#[test]
fn the_example_stamp_is_valid_and_has_two_days_of_past_usage() {
    let stamp = Stamp::parse(include_str!("../../examples/stamp.yaml"), started())
        .unwrap_or_else(|e| panic!("{e}"));
    let query = Query {
        start: hour_of(started()) - TimeDelta::hours(48),
        end: hour_of(started()) + TimeDelta::hours(1),
        subscriber: None,
    };
    let records = all(&stamp, &query, hour_of(started()));
    let first = records
        .iter()
        .filter_map(|r| r["properties"]["usageStartTime"].as_str())
        .min()
        .expect("records");
    assert_eq!(first, "2026-03-08T12:00:00+00:00");
    assert_eq!(stamp.subscriptions().len(), 4);
}
