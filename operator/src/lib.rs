//! niso-operator: turns `RegistryNamespace` and `ApiKey` custom resources into registry state
//! through the registry domain (niso-registry; no SQL here), and collects orphan chunks while
//! holding a Lease. See DESIGN.md §7.

pub mod apikey;
pub mod conditions;
pub mod context;
pub mod controllers;
pub mod crd;
pub mod error;
pub mod gc;
pub mod grant;
pub mod http;
pub mod metrics;
pub mod namespace;
pub mod reconciler;
pub mod renewal;
pub mod run;
pub mod secret;
pub mod workload_grants;

pub use error::{Error, Result};
