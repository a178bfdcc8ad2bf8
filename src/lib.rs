//! riskgate: fetches a Roundtable session report, applies a rules engine and
//! answers allow / review / block, storing every verdict.
//!
//! Layout: [`engine`] decides (pure), [`report`] reads upstream bodies,
//! [`policy`] compiles the policy, [`roundtable`] fetches reports,
//! [`store`] keeps evaluations, [`evaluation`] ties them together,
//! [`api`] speaks HTTP, [`startup`] wires it all.
#![forbid(unsafe_code)]

pub mod api;
pub mod config;
pub mod domain;
pub mod engine;
pub mod evaluation;
pub mod metrics;
pub mod policy;
pub mod report;
pub mod review;
pub mod roundtable;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod webhooks;
