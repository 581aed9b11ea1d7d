//! The shared runtime of every Mercato service.
//!
//! - [`config`]: typed settings from `MERCATO_*` variables, validated at start.
//! - [`telemetry`]: JSON logs with the request and trace ids of the call being served; OpenTelemetry traces.
//! - [`trace_context`]: W3C trace context in and out of headers, gRPC metadata and event envelopes.
//! - [`grpc`]: the gRPC server (health, reflection, access checks, metrics, graceful shutdown) and clients.
//! - [`auth`]: access-token claims and their verification against the auth service's keys.
//! - [`descriptors`]: the contracts as data (descriptor pool, access rules of methods).
//! - [`db`]: SQLite or PostgreSQL per service, with embedded migrations.
//! - [`blob`]: files kept beside the database (product images, attachments), in a directory or S3.
//! - [`media`]: media types of uploads, and whether a file's bytes are the type it claims.
//! - [`error`]: rich gRPC errors (field violations, reasons).
//! - [`address`]: postal addresses checked the same way by checkout and the address book.
//! - [`money`]: amounts of minor units as people read them (`EUR 19.99`), and currency codes.
//! - [`events`]: transactional outbox, relay, in-process bus, inbox.
//! - [`paging`]: page sizes and page tokens of listings, the same in every service.
//! - [`metrics`]: the Prometheus recorder, `/metrics`, `/healthz`, `/readyz`.
//! - [`shutdown`]: signals to a cancellation token.
//! - [`tls`]: certificates and keys from PEM files (the gateway's HTTPS, TLS between services).
//! - [`testkit`]: helpers for tests that need a real PostgreSQL or RabbitMQ, and a test token issuer.
//!
//! `platform` knows nothing about any particular service.

pub mod address;
pub mod auth;
pub mod blob;
pub mod config;
pub mod db;
pub mod descriptors;
pub mod error;
pub mod events;
pub mod grpc;
pub mod media;
pub mod metrics;
pub mod money;
pub mod paging;
pub mod shutdown;
pub mod telemetry;
pub mod testkit;
pub mod time;
pub mod tls;
pub mod trace_context;
mod trace_ids;

pub use config::Settings;
pub use db::Db;
