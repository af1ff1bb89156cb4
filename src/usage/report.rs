//! `azs-csp-operator usage report`: the chargeback table from the totals in status (DESIGN.md
//! §9), one row per customer and one for each Registration's own share, as a table, CSV or
//! JSON. Pure: the command lists the objects, this renders them.

use serde::Serialize;

use crate::{
    api::{CustomerSubscription, Registration, UsageTotals},
    guid::GuidText,
};

/// One row of the report.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    /// The CustomerSubscription, or the Registration for its own share.
    pub name: String,
    /// `customer` or `registration`.
    pub billed_to: &'static str,
    pub registration: String,
    /// The Azure subscription billed.
    pub subscription_id: String,
    /// The customer's tenant; empty for the registration's share.
    pub tenant_id: String,
    pub period: String,
    pub vcore_hours: String,
    pub charge: String,
    pub currency: String,
    pub through: String,
}

/// The totals of `period` (the current one, or `previous` when it is that month); `None`
/// shows the current period.
fn totals_of(
    usage: &UsageTotals,
    period: Option<&str>,
) -> Option<(String, String, String, String)> {
    match period {
        None => Some((
            usage.period.clone(),
            usage.vcore_hours.clone(),
            usage.estimated_charge.clone().unwrap_or_default(),
            usage.currency.clone().unwrap_or_default(),
        )),
        Some(p) if p == usage.period => totals_of(usage, None),
        Some(p) => usage
            .previous
            .as_ref()
            .filter(|prev| prev.period == p)
            .map(|prev| {
                (
                    prev.period.clone(),
                    prev.vcore_hours.clone(),
                    prev.estimated_charge.clone().unwrap_or_default(),
                    prev.currency.clone().unwrap_or_default(),
                )
            }),
    }
}

/// The rows, customers by namespace and name, each Registration's share after its customers.
pub fn rows(
    registrations: &[Registration],
    customers: &[CustomerSubscription],
    registration_filter: Option<&str>,
    period: Option<&str>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    for customer in customers {
        let registration = &customer.spec.registration_ref.name;
        if registration_filter.is_some_and(|r| r != registration) {
            continue;
        }
        let status = customer.status.as_ref();
        let Some(usage) = status.and_then(|s| s.usage.as_ref()) else {
            continue;
        };
        let Some((period, vcore_hours, charge, currency)) = totals_of(usage, period) else {
            continue;
        };
        rows.push(Row {
            namespace: customer.metadata.namespace.clone().unwrap_or_default(),
            name: customer.metadata.name.clone().unwrap_or_default(),
            billed_to: "customer",
            registration: registration.clone(),
            subscription_id: GuidText::parse(&customer.spec.subscription_id).to_string(),
            tenant_id: GuidText::parse(
                status
                    .and_then(|s| s.tenant_id.as_deref())
                    .or(customer.spec.tenant_id.as_deref())
                    .unwrap_or_default(),
            )
            .to_string(),
            period,
            vcore_hours,
            charge,
            currency,
            through: usage.through.clone(),
        });
    }
    for registration in registrations {
        let name = registration.metadata.name.clone().unwrap_or_default();
        if registration_filter.is_some_and(|r| r != name) {
            continue;
        }
        let Some(usage) = registration
            .status
            .as_ref()
            .and_then(|s| s.usage.as_ref())
            .and_then(|u| u.registration_subscription.as_ref())
        else {
            continue;
        };
        let Some((period, vcore_hours, charge, currency)) = totals_of(usage, period) else {
            continue;
        };
        rows.push(Row {
            namespace: registration.metadata.namespace.clone().unwrap_or_default(),
            name: name.clone(),
            billed_to: "registration",
            registration: name,
            subscription_id: GuidText::parse(&registration.spec.subscription_id).to_string(),
            tenant_id: String::new(),
            period,
            vcore_hours,
            charge,
            currency,
            through: usage.through.clone(),
        });
    }
    rows.sort_by(|a, b| {
        (&a.namespace, &a.registration, a.billed_to, &a.name).cmp(&(
            &b.namespace,
            &b.registration,
            b.billed_to,
            &b.name,
        ))
    });
    rows
}

const HEADERS: [&str; 11] = [
    "NAMESPACE",
    "NAME",
    "BILLED-TO",
    "REGISTRATION",
    "SUBSCRIPTION",
    "TENANT",
    "PERIOD",
    "VCORE-HOURS",
    "CHARGE",
    "CURRENCY",
    "THROUGH",
];

fn cells(row: &Row) -> [&str; 11] {
    [
        &row.namespace,
        &row.name,
        row.billed_to,
        &row.registration,
        &row.subscription_id,
        &row.tenant_id,
        &row.period,
        &row.vcore_hours,
        &row.charge,
        &row.currency,
        &row.through,
    ]
}

/// Aligned columns, as `kubectl get` prints them.
pub fn render_table(rows: &[Row]) -> String {
    let mut widths = HEADERS.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(cells(row)) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |cells: [&str; 11]| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<width$}   "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(HEADERS);
    for row in rows {
        out.push_str(&line(cells(row)));
    }
    out
}

fn csv_field(cell: &str) -> String {
    if cell.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", cell.replace('"', "\"\""))
    } else {
        cell.to_string()
    }
}

/// RFC 4180 CSV with a header line.
pub fn render_csv(rows: &[Row]) -> String {
    let header = [
        "namespace",
        "name",
        "billedTo",
        "registration",
        "subscriptionId",
        "tenantId",
        "period",
        "vcoreHours",
        "charge",
        "currency",
        "through",
    ];
    let mut out = header.join(",") + "\r\n";
    for row in rows {
        let line: Vec<String> = cells(row).iter().map(|c| csv_field(c)).collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

/// `{"rows": [...]}`, decimal strings kept exact.
pub fn render_json(rows: &[Row]) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(&serde_json::json!({ "rows": rows })).map(|s| s + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        BillingModel, CustomerSubscriptionSpec, CustomerSubscriptionStatus, PreviousTotals,
        RegistrationRef, RegistrationSpec, RegistrationStatus, RegistrationUsageStatus,
    };

    fn totals(period: &str, vcore: &str, charge: Option<&str>) -> UsageTotals {
        UsageTotals {
            period: period.to_string(),
            through: "2026-03-02T10:00:00Z".to_string(),
            vcore_hours: vcore.to_string(),
            estimated_charge: charge.map(str::to_string),
            currency: charge.map(|_| "EUR".to_string()),
            meters: Vec::new(),
            previous: Some(PreviousTotals {
                period: "2026-02".to_string(),
                vcore_hours: "7".to_string(),
                estimated_charge: None,
                currency: None,
                meters: Vec::new(),
            }),
        }
    }

    fn customer(name: &str, usage: Option<UsageTotals>) -> CustomerSubscription {
        let mut c = CustomerSubscription::new(
            name,
            CustomerSubscriptionSpec {
                registration_ref: RegistrationRef {
                    name: "stack".to_string(),
                },
                subscription_id: "E09A4E93-29A7-4EBA-A7F2-3B2C1D0E9F8A".to_string(),
                tenant_id: None,
            },
        );
        c.metadata.namespace = Some("partner".to_string());
        c.status = Some(CustomerSubscriptionStatus {
            tenant_id: Some("2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f".to_string()),
            usage,
            ..Default::default()
        });
        c
    }

    fn registration() -> Registration {
        let mut r = Registration::new(
            "stack",
            RegistrationSpec {
                subscription_id: "6d3c4b9e-1f3a-4c6e-9b7a-2d1e0f9a8b7c".to_string(),
                resource_group: "rg".to_string(),
                registration_name: None,
                cloud_id: "5f1c2d3e-4b5a-4c6d-8e7f-9a0b1c2d3e4f".to_string(),
                billing_model: BillingModel::PayAsYouUse,
                agreement_number: None,
                ms_asset_tag: None,
                prune_unmanaged: None,
                usage_source: None,
            },
        );
        r.metadata.namespace = Some("partner".to_string());
        r.status = Some(RegistrationStatus {
            usage: Some(RegistrationUsageStatus {
                ingested_through: Some("2026-03-02T10:00:00Z".to_string()),
                rejected_records: None,
                registration_subscription: Some(totals("2026-03", "12.5", None)),
            }),
            ..Default::default()
        });
        r
    }

    fn sample() -> Vec<Row> {
        rows(
            &[registration()],
            &[
                customer("zeta", Some(totals("2026-03", "96", Some("4.80")))),
                customer("alpha", Some(totals("2026-03", "48", Some("2.4")))),
                customer("no-usage", None),
            ],
            None,
            None,
        )
    }

    #[test]
    fn rows_per_customer_then_the_registration_share() {
        let rows = sample();
        let names: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.name.as_str(), r.billed_to))
            .collect();
        assert_eq!(
            names,
            [
                ("alpha", "customer"),
                ("zeta", "customer"),
                ("stack", "registration")
            ]
        );
        assert_eq!(
            rows[0].subscription_id,
            "e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a"
        );
        assert_eq!(rows[0].tenant_id, "2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f");
        assert_eq!(
            (rows[1].charge.as_str(), rows[1].currency.as_str()),
            ("4.80", "EUR")
        );
        assert_eq!(
            (rows[2].vcore_hours.as_str(), rows[2].charge.as_str()),
            ("12.5", "")
        );
    }

    #[test]
    fn filters_by_registration_and_period() {
        let customers = [customer("alpha", Some(totals("2026-03", "48", None)))];
        let regs = [registration()];
        assert!(rows(&regs, &customers, Some("other"), None).is_empty());
        let previous = rows(&regs, &customers, None, Some("2026-02"));
        assert_eq!(previous.len(), 2);
        assert!(
            previous
                .iter()
                .all(|r| r.period == "2026-02" && r.vcore_hours == "7")
        );
        assert!(rows(&regs, &customers, None, Some("2025-12")).is_empty());
    }

    #[test]
    fn the_three_formats() {
        let rows = sample();
        let table = render_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines[0].starts_with("NAMESPACE   NAME    BILLED-TO"),
            "{table}"
        );
        assert!(
            lines[1].contains(" 48 ") && lines[1].contains(" 2.4 "),
            "{table}"
        );
        let column = lines[0].find("VCORE-HOURS").unwrap();
        assert!(
            lines
                .iter()
                .skip(1)
                .all(|l| l[column..].starts_with(|c: char| c.is_ascii_digit())),
            "{table}"
        );

        let csv = render_csv(&rows);
        assert_eq!(
            csv.lines().next(),
            Some(
                "namespace,name,billedTo,registration,subscriptionId,tenantId,period,vcoreHours,charge,currency,through"
            )
        );
        assert!(csv.contains("\r\npartner,zeta,customer,stack,e09a4e93-29a7-4eba-a7f2-3b2c1d0e9f8a,2b7e0c1d-3a4b-4c5d-8e6f-7a8b9c0d1e2f,2026-03,96,4.80,EUR,2026-03-02T10:00:00Z\r\n"), "{csv}");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");

        let json: serde_json::Value = serde_json::from_str(&render_json(&rows).unwrap()).unwrap();
        assert_eq!(json["rows"][1]["vcoreHours"], "96");
        assert_eq!(json["rows"][2]["billedTo"], "registration");
        assert_eq!(render_table(&[]).lines().count(), 1);
    }
}
