//! Integration tests: the real application over HTTP, on SQLite and on
//! PostgreSQL, against a wiremock Roundtable.

mod errors;
mod evaluations;
mod health;
mod helpers;
mod idempotency;
mod operability;
mod proxy;
mod resilience;
mod reviews;
mod store;
mod upstream;
mod waiting;
mod webhooks;
