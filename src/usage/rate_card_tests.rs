use proptest::prelude::*;

use super::*;
use crate::usage::meter::{BASE_VM_SIZE_HOURS, WINDOWS_VM_SIZE_HOURS};

fn id(text: &str) -> Guid {
    parse_meter_id(text).unwrap()
}

fn dec(text: &str) -> Decimal {
    Decimal::from_str_exact(text).unwrap()
}

const CARD: &str = r#"
currency: EUR
rates:
- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5
  pricePerUnit: 0.0085
  commerceMeterId: 5cfb1fed-0902-49e3-8217-9add946fd624
- meterId: 9cd92d4c-bafd-4492-b278-bedc2de8232a
  pricePerUnit: "0.046"
- meterId: F271A8A388C44D93956A063E1D2FA80B
  pricePerUnit: 3
"#;

#[test]
fn a_rate_card_parses_and_prices_exactly() {
    let card = RateCard::parse(CARD).unwrap();
    assert_eq!(card.currency(), "EUR");
    let base = card.rate(id(BASE_VM_SIZE_HOURS)).unwrap();
    assert_eq!(base.price_per_unit, dec("0.0085"));
    assert_eq!(
        base.commerce_meter_id,
        Some(id("5cfb1fed-0902-49e3-8217-9add946fd624"))
    );
    assert_eq!(
        card.rate(id(WINDOWS_VM_SIZE_HOURS))
            .unwrap()
            .commerce_meter_id,
        None
    );
    let cases = [
        (BASE_VM_SIZE_HOURS, "2", Some("0.017")),
        (BASE_VM_SIZE_HOURS, "0.1", Some("0.00085")),
        (WINDOWS_VM_SIZE_HOURS, "3", Some("0.138")),
        ("F271A8A3-88C4-4D93-956A-063E1D2FA80B", "1.5", Some("4.5")),
        ("00000000-0000-0000-0000-000000000001", "1", None),
    ];
    for (meter, quantity, price) in cases {
        assert_eq!(
            card.price(id(meter), dec(quantity)),
            price.map(dec),
            "{meter} × {quantity}"
        );
    }
    // Where f64 would drift: ten times 0.1 hours at 0.0085 is exactly 0.0085.
    let sum: Decimal = (0..10)
        .filter_map(|_| card.price(id(BASE_VM_SIZE_HOURS), dec("0.1")))
        .sum();
    assert_eq!(sum, dec("0.0085"));
}

#[test]
fn a_price_is_read_digit_for_digit_quoted_or_plain() {
    let cases = [
        ("\"0.12345678901234567890123\"", "0.12345678901234567890123"),
        ("0.12345678901234567890123", "0.12345678901234567890123"),
        ("'0.10'", "0.1"),
        ("1e-3", "0.001"),
        ("7", "7"),
        ("0", "0"),
    ];
    for (written, exact) in cases {
        let card = RateCard::parse(&format!(
            "currency: USD\nrates:\n- meterId: {BASE_VM_SIZE_HOURS}\n  pricePerUnit: {written}\n"
        ))
        .unwrap();
        assert_eq!(
            card.rate(id(BASE_VM_SIZE_HOURS)).unwrap().price_per_unit,
            dec(exact),
            "{written}"
        );
    }
}

#[test]
fn an_empty_rate_list_prices_nothing() {
    let card = RateCard::parse("currency: USD\n").unwrap();
    assert_eq!(card.price(id(BASE_VM_SIZE_HOURS), Decimal::ONE), None);
}

#[test]
fn every_problem_is_named() {
    let cases = [
        (
            "currency: euro\nrates: []\n",
            "currency \"euro\" is not an ISO 4217 code",
        ),
        ("currency: EU\n", "is not an ISO 4217 code"),
        (
            "currency: EUR\nrates:\n- meterId: base\n  pricePerUnit: 1\n",
            "rates[0].meterId \"base\" is not a GUID",
        ),
        (
            "currency: EUR\nrates:\n- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5\n  pricePerUnit: -1\n",
            "rates[0].pricePerUnit -1 is negative",
        ),
        (
            "currency: EUR\nrates:\n- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5\n  pricePerUnit: cheap\n",
            "rates[0].pricePerUnit \"cheap\" is not a decimal number",
        ),
        (
            "currency: EUR\nrates:\n- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5\n  pricePerUnit: 2000000000\n",
            "is above 1000000000",
        ),
        (
            "currency: EUR\nrates:\n- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5\n  pricePerUnit: 1\n  commerceMeterId: x\n",
            "rates[0].commerceMeterId \"x\" is not a GUID",
        ),
        (
            "currency: EUR\nrates:\n- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5\n  pricePerUnit: 1\n- meterId: fab6eb84-500b-4a09-a8ca-7358f8bbaea5\n  pricePerUnit: 2\n",
            "rates[1].meterId fab6eb84-500b-4a09-a8ca-7358f8bbaea5 is priced twice",
        ),
        (
            "currency: EUR\nrates:\n- meterId: FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5\n  price: 1\n",
            "rate card is not valid YAML of the expected shape",
        ),
        (
            "rates: []\n",
            "rate card is not valid YAML of the expected shape",
        ),
        (
            "currency: [EUR\n",
            "rate card is not valid YAML of the expected shape",
        ),
    ];
    for (text, expected) in cases {
        let error = RateCard::parse(text).expect_err(text).to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    // All problems at once, not only the first.
    let error =
        RateCard::parse("currency: eur\nrates:\n- meterId: x\n  pricePerUnit: -1\n").unwrap_err();
    match error {
        RateCardError::Invalid(problems) => assert_eq!(problems.len(), 3, "{problems:?}"),
        other => panic!("{other}"),
    }
}

#[test]
fn a_rate_card_is_read_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rates.yaml");
    std::fs::write(&path, CARD).unwrap();
    assert_eq!(RateCard::from_file(&path).unwrap().currency(), "EUR");
    let error = RateCard::from_file(&dir.path().join("missing.yaml"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("cannot read rate card"), "{error}");
}

proptest! {
    /// Pricing is exact: the price of a sum is the sum of the prices, whatever the split.
    #[test]
    fn the_price_of_a_sum_is_the_sum_of_the_prices(
        cents in 0u64..100_000_000, scale in 0u32..8, parts in proptest::collection::vec(0u64..10_000_000, 1..20),
    ) {
        let price = Decimal::new(cents as i64, scale);
        let card = RateCard::parse(&format!(
            "currency: EUR\nrates:\n- meterId: {BASE_VM_SIZE_HOURS}\n  pricePerUnit: \"{price}\"\n"
        )).unwrap();
        let quantities: Vec<Decimal> = parts.iter().map(|p| Decimal::new(*p as i64, 3)).collect();
        let total: Decimal = quantities.iter().sum();
        let priced: Decimal = quantities.iter().map(|q| card.price(id(BASE_VM_SIZE_HOURS), *q).unwrap()).sum();
        prop_assert_eq!(card.price(id(BASE_VM_SIZE_HOURS), total).unwrap(), priced);
    }
}

#[test]
fn the_example_rate_card_parses() {
    let card = RateCard::parse(include_str!("../../examples/rate-card.yaml")).unwrap();
    assert_eq!(card.currency(), "EUR");
    let base = parse_meter_id(crate::usage::meter::BASE_VM_SIZE_HOURS).unwrap();
    assert_eq!(
        card.price(base, Decimal::from(100)),
        Some(Decimal::new(85, 2))
    );
}
