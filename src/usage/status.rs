//! Month-to-date totals in the shape `status.usage` shows them (DESIGN.md §9): `{period,
//! through, vcoreHours, estimatedCharge?, currency?, meters: [{meterId, name, unit, quantity}],
//! previous?}`. Quantities and charges are decimal strings, so that totals read back from
//! status after a restart are exactly the ones written, and the `through` guard holds.

use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use rust_decimal::Decimal;

use super::{
    meter::{lookup, parse_meter_id},
    period::Month,
    totals::{MonthToDate, PeriodTotals},
};

pub use crate::api::{MeterTotal, PreviousTotals, UsageTotals};

/// Why totals read from status cannot be trusted (edited by hand, or another writer).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("status.usage {field} is {value:?}, which this operator does not write")]
pub struct UnreadableTotals {
    pub field: &'static str,
    pub value: String,
}

fn decimal(value: Decimal) -> String {
    value.normalize().to_string()
}

fn read_decimal(field: &'static str, text: &str) -> Result<Decimal, UnreadableTotals> {
    Decimal::from_str_exact(text).map_err(|_| UnreadableTotals {
        field,
        value: text.to_string(),
    })
}

fn meters_of(totals: &PeriodTotals) -> Vec<MeterTotal> {
    totals
        .meters
        .iter()
        .map(|(id, quantity)| {
            let meter = lookup(*id);
            MeterTotal {
                meter_id: id.to_string(),
                name: meter.map_or_else(String::new, |m| m.name.to_string()),
                unit: meter.map_or_else(String::new, |m| m.unit.to_string()),
                quantity: decimal(*quantity),
            }
        })
        .collect()
}

fn read_month(text: &str) -> Result<Month, UnreadableTotals> {
    Month::parse(text).map_err(|_| UnreadableTotals {
        field: "period",
        value: text.to_string(),
    })
}

fn period_of(
    period: &str,
    vcore_hours: &str,
    estimated_charge: Option<&str>,
    meters: &[MeterTotal],
) -> Result<PeriodTotals, UnreadableTotals> {
    let mut totals = PeriodTotals::empty(read_month(period)?);
    totals.vcore_hours = read_decimal("vcoreHours", vcore_hours)?;
    totals.estimated_charge = estimated_charge
        .map(|c| read_decimal("estimatedCharge", c))
        .transpose()?;
    for meter in meters {
        let id = parse_meter_id(&meter.meter_id).ok_or_else(|| UnreadableTotals {
            field: "meters[].meterId",
            value: meter.meter_id.clone(),
        })?;
        totals
            .meters
            .insert(id, read_decimal("meters[].quantity", &meter.quantity)?);
    }
    Ok(totals)
}

impl UsageTotals {
    /// The status form of `totals`; `currency` is the rate card's, shown with a charge.
    pub fn new(totals: &MonthToDate, currency: Option<&str>) -> Self {
        let currency_with = |charge: &Option<Decimal>| charge.and(currency.map(str::to_string));
        Self {
            period: totals.current.period.to_string(),
            through: totals.through.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            vcore_hours: decimal(totals.current.vcore_hours),
            estimated_charge: totals.current.estimated_charge.map(decimal),
            currency: currency_with(&totals.current.estimated_charge),
            meters: meters_of(&totals.current),
            previous: totals.previous.as_ref().map(|previous| PreviousTotals {
                period: previous.period.to_string(),
                vcore_hours: decimal(previous.vcore_hours),
                estimated_charge: previous.estimated_charge.map(decimal),
                currency: currency_with(&previous.estimated_charge),
                meters: meters_of(previous),
            }),
        }
    }

    /// The totals this status holds, to add the next window to.
    pub fn totals(&self) -> Result<MonthToDate, UnreadableTotals> {
        let through = DateTime::parse_from_rfc3339(&self.through)
            .map_err(|_| UnreadableTotals {
                field: "through",
                value: self.through.clone(),
            })?
            .with_timezone(&Utc);
        Ok(MonthToDate {
            through,
            current: period_of(
                &self.period,
                &self.vcore_hours,
                self.estimated_charge.as_deref(),
                &self.meters,
            )?,
            previous: self
                .previous
                .as_ref()
                .map(|p| {
                    period_of(
                        &p.period,
                        &p.vcore_hours,
                        p.estimated_charge.as_deref(),
                        &p.meters,
                    )
                })
                .transpose()?,
        })
    }
}

impl FromStr for UsageTotals {
    type Err = serde_json::Error;
    fn from_str(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
