//! The `--rate-card` YAML (DESIGN.md §9) and pricing. Money is an exact decimal, never a float:
//! a price is quantity × pricePerUnit, added up without rounding.
//!
//! ```yaml
//! currency: EUR                   # ISO 4217 code
//! rates:
//! - meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5   # the stamp's local meter id
//!   pricePerUnit: 0.0085          # read digit for digit, quoted or plain
//!   commerceMeterId: ...          # optional: Azure's commerce meter, a GUID
//! ```

use std::{collections::HashMap, fmt, path::Path, str::FromStr};

use rust_decimal::Decimal;
use serde::Deserialize;

use super::meter::parse_meter_id;
use crate::guid::Guid;

/// A validated rate card.
#[derive(Clone, Debug, PartialEq)]
pub struct RateCard {
    currency: String,
    rates: HashMap<Guid, Rate>,
}

/// The price of one meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rate {
    pub price_per_unit: Decimal,
    pub commerce_meter_id: Option<Guid>,
}

/// What is wrong with a rate card: every problem, each naming where it is.
#[derive(thiserror::Error, Debug)]
pub enum RateCardError {
    #[error("cannot read rate card {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("rate card is not valid YAML of the expected shape: {0}")]
    Syntax(String),
    #[error("invalid rate card: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// The largest price per unit a rate card may name, so that no price overflows.
const MAX_PRICE_PER_UNIT: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    currency: String,
    #[serde(default)]
    rates: Vec<RateEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RateEntry {
    meter_id: String,
    price_per_unit: PriceText,
    #[serde(default)]
    commerce_meter_id: Option<String>,
}

/// A price as written: the YAML parser hands a plain scalar's text to a string visitor, so
/// no digit passes through a float.
struct PriceText(String);

impl<'de> Deserialize<'de> for PriceText {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = PriceText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a decimal number")
            }
            fn visit_str<E>(self, v: &str) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            // The shortest text that reads back as the same float: the decimal that was written.
            fn visit_f64<E>(self, v: f64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<PriceText, E> {
                Ok(PriceText(v.to_string()))
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

fn parse_price(text: &str) -> Option<Decimal> {
    let text = text.trim();
    Decimal::from_str_exact(text)
        .or_else(|_| Decimal::from_scientific(text))
        .ok()
}

impl RateCard {
    pub fn from_file(path: &Path) -> Result<Self, RateCardError> {
        let text = std::fs::read_to_string(path).map_err(|source| RateCardError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, RateCardError> {
        let document: Document = serde_saphyr::from_str(text)
            .map_err(|error| RateCardError::Syntax(error.to_string()))?;
        let mut problems = Vec::new();
        let currency = document.currency.trim().to_string();
        if !(currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase())) {
            problems.push(format!(
                "currency {:?} is not an ISO 4217 code such as EUR or USD",
                document.currency
            ));
        }
        let mut rates = HashMap::new();
        for (i, entry) in document.rates.iter().enumerate() {
            let at = format!("rates[{i}]");
            let meter_id = parse_meter_id(entry.meter_id.trim());
            if meter_id.is_none() {
                problems.push(format!("{at}.meterId {:?} is not a GUID", entry.meter_id));
            }
            let price = parse_price(&entry.price_per_unit.0);
            match price {
                None => problems.push(format!(
                    "{at}.pricePerUnit {:?} is not a decimal number",
                    entry.price_per_unit.0
                )),
                Some(p) if p.is_sign_negative() && !p.is_zero() => {
                    problems.push(format!("{at}.pricePerUnit {p} is negative"))
                }
                Some(p) if p > MAX_PRICE_PER_UNIT => problems.push(format!(
                    "{at}.pricePerUnit {p} is above {MAX_PRICE_PER_UNIT}"
                )),
                Some(_) => {}
            }
            let commerce_meter_id = match entry.commerce_meter_id.as_deref() {
                None => None,
                Some(text) => match parse_meter_id(text.trim()) {
                    Some(id) => Some(id),
                    None => {
                        problems.push(format!("{at}.commerceMeterId {text:?} is not a GUID"));
                        None
                    }
                },
            };
            if let (Some(meter_id), Some(price)) = (meter_id, price) {
                let rate = Rate {
                    price_per_unit: price.abs().normalize(),
                    commerce_meter_id,
                };
                if rates.insert(meter_id, rate).is_some() {
                    problems.push(format!("{at}.meterId {meter_id} is priced twice"));
                }
            }
        }
        if problems.is_empty() {
            Ok(Self { currency, rates })
        } else {
            Err(RateCardError::Invalid(problems))
        }
    }

    pub fn currency(&self) -> &str {
        &self.currency
    }

    pub fn rate(&self, meter_id: Guid) -> Option<&Rate> {
        self.rates.get(&meter_id)
    }

    /// The price of `quantity` units of `meter_id`, `None` for a meter without a rate.
    pub fn price(&self, meter_id: Guid, quantity: Decimal) -> Option<Decimal> {
        let rate = self.rates.get(&meter_id)?;
        // Quantities are at most 1e15 and prices 1e9: the product fits, exactly or rounded in
        // the 28th digit only.
        rate.price_per_unit
            .checked_mul(quantity)
            .map(|price| price.normalize())
    }
}

impl FromStr for RateCard {
    type Err = RateCardError;
    fn from_str(text: &str) -> Result<Self, RateCardError> {
        Self::parse(text)
    }
}

#[cfg(test)]
#[path = "rate_card_tests.rs"]
mod tests;
