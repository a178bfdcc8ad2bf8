//! Integration tests: the real application over HTTP, on SQLite and on
//! PostgreSQL, against a wiremock Roundtable.

mod errors;
mod evaluations;
mod health;
mod helpers;
mod proxy;
mod upstream;
