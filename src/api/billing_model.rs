use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How usage of a registered stamp is billed. Only `PayAsYouUse` allows customer subscriptions;
/// `Capacity` (also the model of disconnected stamps) needs `agreementNumber`, `Custom` needs
/// `msAssetTag`.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BillingModel {
    PayAsYouUse,
    Capacity,
    Development,
    Custom,
    Ruggedized,
}

impl BillingModel {
    pub const ALL: [BillingModel; 5] = [
        BillingModel::PayAsYouUse,
        BillingModel::Capacity,
        BillingModel::Development,
        BillingModel::Custom,
        BillingModel::Ruggedized,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BillingModel::PayAsYouUse => "PayAsYouUse",
            BillingModel::Capacity => "Capacity",
            BillingModel::Development => "Development",
            BillingModel::Custom => "Custom",
            BillingModel::Ruggedized => "Ruggedized",
        }
    }
}

impl fmt::Display for BillingModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
