//! The built-in table of the stamp's documented usage meters (DESIGN.md §9), as Microsoft's
//! "Frequently asked questions about Azure Stack Hub usage" lists them: the stamp's *local*
//! meter ids, with their names and units. Azure's commerce meter ids are not published; a rate
//! card may name them.

use std::{collections::HashMap, fmt::Write as _, sync::LazyLock};

use serde::Serialize;

use crate::guid::Guid;

/// Base VM Size Hours: virtual cores × hours of every VM. Its quantity is `vcoreHours`.
pub const BASE_VM_SIZE_HOURS: &str = "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5";
/// Windows VM Size Hours: the same cores again, for the Windows licence (not vcore-hours).
pub const WINDOWS_VM_SIZE_HOURS: &str = "9CD92D4C-BAFD-4492-B278-BEDC2DE8232A";
/// VM size hours: VM hours, not adjusted for cores.
pub const VM_SIZE_HOURS: &str = "6DAB500F-A4FD-49C4-956D-229BB9C8C793";
/// App Service: the virtual cores running App Service (what Microsoft charges it on).
pub const APP_SERVICE: &str = "190C935E-9ADA-48FF-9AB8-56EA1CF9ADAA";

/// One documented meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Meter {
    /// The local meter id, as the documentation writes it.
    #[serde(rename = "meterId")]
    pub id: &'static str,
    pub name: &'static str,
    pub unit: &'static str,
    /// The resource provider that reports it.
    pub provider: &'static str,
}

const fn meter(
    provider: &'static str,
    id: &'static str,
    name: &'static str,
    unit: &'static str,
) -> Meter {
    Meter {
        id,
        name,
        unit,
        provider,
    }
}

/// Every documented meter, in the documentation's order. The two IP meters are printed without
/// dashes there; they are written here in the GUID form the usage API answers with.
#[rustfmt::skip]
pub const METERS: &[Meter] = &[
    meter("Network", "F271A8A3-88C4-4D93-956A-063E1D2FA80B", "Static IP Address Usage", "IP addresses"),
    meter("Network", "9E2739BA-8674-4796-B465-F64674B822BA", "Dynamic IP Address Usage", "IP addresses"),
    meter("Storage", "B4438D5D-453B-4EE1-B42A-DC72E377F1E4", "TableCapacity", "GB*hours"),
    meter("Storage", "B5C15376-6C94-4FDD-B655-1A69D138ACA3", "PageBlobCapacity", "GB*hours"),
    meter("Storage", "B03C6AE7-B080-4BFA-84A3-22C800F315C6", "QueueCapacity", "GB*hours"),
    meter("Storage", "09F8879E-87E9-4305-A572-4B7BE209F857", "BlockBlobCapacity", "GB*hours"),
    meter("Storage", "B9FF3CD0-28AA-4762-84BB-FF8FBAEA6A90", "TableTransactions", "Request count in 10,000s"),
    meter("Storage", "50A1AEAF-8ECA-48A0-8973-A5B3077FEE0D", "TableDataTransIn", "Ingress data in GB"),
    meter("Storage", "1B8C1DEC-EE42-414B-AA36-6229CF199370", "TableDataTransOut", "Egress in GB"),
    meter("Storage", "43DAF82B-4618-444A-B994-40C23F7CD438", "BlobTransactions", "Request count in 10,000s"),
    meter("Storage", "9764F92C-E44A-498E-8DC1-AAD66587A810", "BlobDataTransIn", "Ingress data in GB"),
    meter("Storage", "3023FEF4-ECA5-4D7B-87B3-CFBC061931E8", "BlobDataTransOut", "Egress in GB"),
    meter("Storage", "EB43DD12-1AA6-4C4B-872C-FAF15A6785EA", "QueueTransactions", "Request count in 10,000s"),
    meter("Storage", "E518E809-E369-4A45-9274-2017B29FFF25", "QueueDataTransIn", "Ingress data in GB"),
    meter("Storage", "DD0A10BA-A5D6-4CB6-88C0-7D585CEF9FC2", "QueueDataTransOut", "Egress in GB"),
    meter("Compute", BASE_VM_SIZE_HOURS, "Base VM Size Hours", "Virtual core hours"),
    meter("Compute", WINDOWS_VM_SIZE_HOURS, "Windows VM Size Hours", "Virtual core hours"),
    meter("Compute", VM_SIZE_HOURS, "VM size hours", "VM hours"),
    meter("Managed Disks", "380874F9-300C-48E0-95A0-D2D9A21ADE8F", "S4", "Count of Disks*month"),
    meter("Managed Disks", "1B77D90F-427B-4435-B4F1-D78ADEC53222", "S6", "Count of Disks*month"),
    meter("Managed Disks", "D5F7731B-F639-404A-89D0-E46186E22C8D", "S10", "Count of Disks*month"),
    meter("Managed Disks", "FF85EF31-DA5B-4EAC-95DD-A69D6F97B18A", "S15", "Count of Disks*month"),
    meter("Managed Disks", "88EA9228-457A-4091-ADC9-AD5194F30B6E", "S20", "Count of Disks*month"),
    meter("Managed Disks", "5B1DB88A-8596-4002-8052-347947C26940", "S30", "Count of Disks*month"),
    meter("Managed Disks", "7660B45B-B29D-49CB-B816-59F30FBAB011", "P4", "Count of Disks*month"),
    meter("Managed Disks", "817007FD-A077-477F-BC01-B876F27205FD", "P6", "Count of Disks*month"),
    meter("Managed Disks", "E554B6BC-96CD-4938-A5B5-0DA990278519", "P10", "Count of Disks*month"),
    meter("Managed Disks", "CDC0F53A-62A9-4472-A06C-E99A23B02907", "P15", "Count of Disks*month"),
    meter("Managed Disks", "B9CB2D1A-84C2-4275-AA8B-70D2145D59AA", "P20", "Count of Disks*month"),
    meter("Managed Disks", "06BDE724-9F94-43C0-84C3-D0FC54538369", "P30", "Count of Disks*month"),
    meter("Managed Disks", "7BA084EC-EF9C-4D64-A179-7732C6CB5E28", "ActualStandardDiskSize", "GB*month"),
    meter("Managed Disks", "DAEF389A-06E5-4684-A7F7-8813D9F792D5", "ActualPremiumDiskSize", "GB*month"),
    meter("Managed Disks", "108FA95B-BE0D-4CD9-96E8-5B0D59505DF1", "ActualStandardSnapshotSize", "GB*month"),
    meter("Managed Disks", "578AE51D-4EF9-42F9-85AE-42B52D3D83AC", "ActualPremiumSnapshotSize", "GB*month"),
    meter("Managed Disks", "5D76E09F-4567-452A-94CC-7D1F097761F0", "S4 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "DC9FC6A9-0782-432A-B8DC-978130457494", "S6 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "E5572FCE-9F58-49D7-840C-B168C0F01FFF", "S10 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "9A8CAEDD-1195-4CD5-80B4-A4C22F9302B8", "S15 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "5938F8DA-0ECD-4C48-8D5A-C7C6C23546BE", "S20 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "7705A158-BD8B-4B2B-B4C2-0782343B81E6", "S30 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "5C105F5F-CBDF-435C-B49B-3C7174856DCC", "P4 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "518B412B-1927-4F25-985F-4AEA24E55C4F", "P6 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "5CFB1FED-0902-49E3-8217-9ADD946FD624", "P10 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "8DE91C94-F740-4D9A-B665-BD5974FA08D4", "P15 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "C7E7839C-293B-4761-AE4C-848EDA91130B", "P20 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "9F502103-ADF4-4488-B494-456C95D23A9F", "P30 (deprecated)", "Count of Disks*hours"),
    meter("Managed Disks", "8A409390-1913-40AE-917B-08D0F16F3C38", "ActualStandardDiskSize (deprecated)", "Byte*hours"),
    meter("Managed Disks", "1273B16F-8458-4C34-8CE2-A515DE551EF6", "ActualPremiumDiskSize (deprecated)", "Byte*hours"),
    meter("Managed Disks", "89009682-DF7F-44FE-AEB1-63FBA3DDBF4C", "ActualStandardSnapshotSize (deprecated)", "Byte*hours"),
    meter("Managed Disks", "95B0C03F-8A82-4524-8961-CCFBF575F536", "ActualPremiumSnapshotSize (deprecated)", "Byte*hours"),
    meter("Managed Disks", "75D4B707-1027-4403-9986-6EC7C05579C8", "ActualStandardSnapshotSize (deprecated)", "GB*month"),
    meter("Managed Disks", "5CA1CBB9-6F14-4E76-8BE8-1CA91547965E", "ActualPremiumSnapshotSize (deprecated)", "GB*month"),
    meter("SQL RP", "CBCFEF9A-B91F-4597-A4D3-01FE334BED82", "DatabaseSizeHourSqlMeter", "MB*hours"),
    meter("MySQL RP", "E6D8CFCD-7734-495E-B1CC-5AB0B9C24BD3", "DatabaseSizeHourMySqlMeter", "MB*hours"),
    meter("Key Vault", "EBF13B9F-B3EA-46FE-BF54-396E93D48AB4", "Key Vault transactions", "Request count in 10,000s"),
    meter("Key Vault", "2C354225-B2FE-42E5-AD89-14F0EA302C87", "Advanced keys transactions", "10K transactions"),
    meter("App Service", APP_SERVICE, "App Service", "Virtual core hours"),
    meter("App Service", "67CC4AFC-0691-48E1-A4B8-D744D1FEDBDE", "Functions Requests", "10 Requests"),
    meter("App Service", "D1D04836-075C-4F27-BF65-0A1130EC60ED", "Functions - Compute", "GB-s"),
    meter("App Service", "957E9F36-2C14-45A1-B6A1-1723EF71A01D", "Shared App Service Hours", "1 hour"),
    meter("App Service", "539CDEC7-B4F5-49F6-AAC4-1F15CFF0EDA9", "Free App Service Hours", "1 hour"),
    meter("App Service", "88039D51-A206-3A89-E9DE-C5117E2D10A6", "Small Standard App Service Hours", "1 hour"),
    meter("App Service", "83A2A13E-4788-78DD-5D55-2831B68ED825", "Medium Standard App Service Hours", "1 hour"),
    meter("App Service", "1083B9DB-E9BB-24BE-A5E9-D6FDD0DDEFE6", "Large Standard App Service Hours", "1 hour"),
    meter("App Service", "264ACB47-AD38-47F8-ADD3-47F01DC4F473", "SNI SSL", "Per SNI SSL Binding"),
    meter("App Service", "60B42D72-DC1C-472C-9895-6C516277EDB4", "IP SSL", "Per IP Based SSL Binding"),
    // The documentation gives no unit; it is "calculated per active site per hour".
    meter("App Service", "73215A6C-FA54-4284-B9C1-7E8EC871CC5B", "Web Process", "Active site hours"),
    meter("App Service", "5887D39B-0253-4E12-83C7-03E1A93DFFD9", "External Egress Bandwidth", "GB"),
];

static BY_ID: LazyLock<HashMap<Guid, &'static Meter>> = LazyLock::new(|| {
    METERS
        .iter()
        .filter_map(|meter| Some((parse_meter_id(meter.id)?, meter)))
        .collect()
});

/// A meter id as the usage API or a rate card writes it: a GUID in any letter case, with or
/// without its dashes (the documentation prints some without).
pub fn parse_meter_id(text: &str) -> Option<Guid> {
    if text.len() == 32 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
        let dashed = format!(
            "{}-{}-{}-{}-{}",
            &text[..8],
            &text[8..12],
            &text[12..16],
            &text[16..20],
            &text[20..]
        );
        return Guid::parse(&dashed);
    }
    Guid::parse(text)
}

/// Whether `id` is Base VM Size Hours, the one meter whose quantity is `vcoreHours`.
pub fn is_vcore_meter(id: Guid) -> bool {
    static BASE: LazyLock<Option<Guid>> = LazyLock::new(|| parse_meter_id(BASE_VM_SIZE_HOURS));
    *BASE == Some(id)
}

/// The documented meter with this id, `None` for a meter the table does not know.
pub fn lookup(id: Guid) -> Option<&'static Meter> {
    BY_ID.get(&id).copied()
}

/// The table for `azs-csp-operator meters`: id, name, unit, one meter a line.
pub fn render_table() -> String {
    let name_width = METERS.iter().map(|m| m.name.len()).max().unwrap_or(0);
    let mut out = format!("{:<36}  {:<name_width$}  UNIT\n", "METER ID", "NAME");
    for meter in METERS {
        let _ = writeln!(
            out,
            "{:<36}  {:<name_width$}  {}",
            meter.id, meter.name, meter.unit
        );
    }
    out
}

/// The table as a JSON array of `{meterId, name, unit, provider}`.
pub fn render_json() -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(METERS).map(|json| json + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_is_a_guid_and_appears_once() {
        let mut seen = std::collections::HashSet::new();
        for meter in METERS {
            let id =
                parse_meter_id(meter.id).unwrap_or_else(|| panic!("{} is not a GUID", meter.id));
            assert!(seen.insert(id), "{} is listed twice", meter.id);
            assert!(
                !meter.name.is_empty() && !meter.unit.is_empty(),
                "{meter:?}"
            );
        }
        assert_eq!(BY_ID.len(), METERS.len());
    }

    #[test]
    fn the_meters_design_names_are_there() {
        let cases = [
            (
                BASE_VM_SIZE_HOURS,
                "Base VM Size Hours",
                "Virtual core hours",
            ),
            (
                WINDOWS_VM_SIZE_HOURS,
                "Windows VM Size Hours",
                "Virtual core hours",
            ),
            (VM_SIZE_HOURS, "VM size hours", "VM hours"),
            (APP_SERVICE, "App Service", "Virtual core hours"),
            (
                "F271A8A3-88C4-4D93-956A-063E1D2FA80B",
                "Static IP Address Usage",
                "IP addresses",
            ),
            (
                "9E2739BA-8674-4796-B465-F64674B822BA",
                "Dynamic IP Address Usage",
                "IP addresses",
            ),
            (
                "09F8879E-87E9-4305-A572-4B7BE209F857",
                "BlockBlobCapacity",
                "GB*hours",
            ),
            (
                "CBCFEF9A-B91F-4597-A4D3-01FE334BED82",
                "DatabaseSizeHourSqlMeter",
                "MB*hours",
            ),
            (
                "E6D8CFCD-7734-495E-B1CC-5AB0B9C24BD3",
                "DatabaseSizeHourMySqlMeter",
                "MB*hours",
            ),
            (
                "EBF13B9F-B3EA-46FE-BF54-396E93D48AB4",
                "Key Vault transactions",
                "Request count in 10,000s",
            ),
            (
                "7BA084EC-EF9C-4D64-A179-7732C6CB5E28",
                "ActualStandardDiskSize",
                "GB*month",
            ),
        ];
        for (id, name, unit) in cases {
            let meter = parse_meter_id(id)
                .and_then(lookup)
                .unwrap_or_else(|| panic!("{id} missing"));
            assert_eq!((meter.name, meter.unit), (name, unit), "{id}");
        }
    }

    #[test]
    fn meter_ids_parse_in_any_case_with_or_without_dashes() {
        let cases = [
            (
                "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5",
                Some("Base VM Size Hours"),
            ),
            (
                "fab6eb84-500b-4a09-a8ca-7358f8bbaea5",
                Some("Base VM Size Hours"),
            ),
            (
                "F271A8A388C44D93956A063E1D2FA80B",
                Some("Static IP Address Usage"),
            ),
            (
                "f271a8a388c44d93956a063e1d2fa80b",
                Some("Static IP Address Usage"),
            ),
            ("00000000-0000-0000-0000-000000000000", None),
        ];
        for (text, name) in cases {
            let id = parse_meter_id(text).unwrap_or_else(|| panic!("{text} should parse"));
            assert_eq!(lookup(id).map(|m| m.name), name, "{text}");
        }
        for bad in [
            "",
            "FAB6EB84",
            "FAB6EB84-500B-4A09-A8CA-7358F8BBAEA",
            "G271A8A388C44D93956A063E1D2FA80B",
            "{FAB6EB84-500B-4A09-A8CA-7358F8BBAEA5}",
        ] {
            assert_eq!(parse_meter_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_table_has_a_header_and_one_line_per_meter() {
        let table = render_table();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), METERS.len() + 1);
        assert!(
            lines[0].starts_with("METER ID") && lines[0].ends_with("UNIT"),
            "{}",
            lines[0]
        );
        assert!(
            lines.iter().any(|l| l.starts_with(BASE_VM_SIZE_HOURS)
                && l.contains("Base VM Size Hours")
                && l.ends_with("Virtual core hours")),
            "{table}"
        );
    }

    #[test]
    fn the_json_lists_id_name_and_unit() {
        let json: serde_json::Value = serde_json::from_str(&render_json().unwrap()).unwrap();
        let meters = json.as_array().unwrap();
        assert_eq!(meters.len(), METERS.len());
        assert!(meters.contains(&serde_json::json!({
            "meterId": BASE_VM_SIZE_HOURS, "name": "Base VM Size Hours",
            "unit": "Virtual core hours", "provider": "Compute"
        })));
    }
}
