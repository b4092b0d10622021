//! All SQL that catalyst-dr runs against the Catalyst Auth database lives in this module: the
//! reference schema ([`schema`]), the deterministic data generator the tests and drills use
//! ([`generate`]), and the queries the functions need. Every value reaches PostgreSQL as a bind
//! parameter or through `COPY ... FROM STDIN`; SQL text is only ever built from constants, never
//! from data. The one exception is [`introspect`] (logical backups), which must name tables and
//! replay schema: it builds statements from catalog identifiers, always double-quoted, and from
//! the definitions PostgreSQL itself renders (`pg_get_constraintdef`, `pg_get_indexdef`, ...). The documented schema is `docs/schema.md`.

pub mod admin;
pub mod deliveries;
pub mod error;
pub mod introspect;
pub mod long_ddl;
pub mod parity;
pub mod roles;
pub mod schema;
pub mod smoke;
pub mod staging;

pub use error::CatalystDbError;
pub use schema::{DeliveryStatus, SCHEMA_SQL, TABLES, apply};
pub use staging::{
    mark_restoring, mark_staging, require_staging, restoring_backup, staging_marker,
};
