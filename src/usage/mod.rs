//! Usage attribution and chargeback (DESIGN.md §9): source → validate → attribute → price →
//! sink, one hourly window at a time. This module is the pure core: no client, no clock, no
//! async. The source client, the sink and the controller that moves the checkpoint build on it.
//!
//! - [`borrowed`]: JSON text read without copying it;
//! - [`meter`]: the built-in table of the documented meters (`azs-csp-operator meters`);
//! - [`record`]: the source's records and their validation, every bad-record cause counted;
//! - [`attribution`]: who is billed for a record (tenant, attach time, registration);
//! - [`rate_card`]: `--rate-card` and exact pricing;
//! - [`period`]: the UTC month a record counts in (current, previous, late);
//! - [`window`]: the hourly windows of reported time due after `--usage-delay`;
//! - [`totals`]: month-to-date totals guarded by `through` (a window is added at most once);
//! - [`status`]: those totals in the shape `status.usage` shows, read back exactly;
//! - [`cloudevents`]: the CloudEvents 1.0 batch the sink receives;
//! - [`ingest`]: one window decided record by record: events out, per-party sums kept;
//! - [`catch_up`]: several due windows folded into each party's totals in memory, written once.
//!
//! It sits above `policy` and `conditions` in the layer table: it reads the Ready condition
//! (and its `Attached` reason) of a CustomerSubscription to learn since when a tenant is attached.

pub mod attribution;
pub mod borrowed;
pub mod catch_up;
pub mod cloudevents;
pub mod ingest;
pub mod meter;
pub mod period;
pub mod rate_card;
pub mod record;
pub mod report;
pub mod status;
pub mod totals;
pub mod window;
