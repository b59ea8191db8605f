//! Schema migrations of the niso registry. Every migration runs on PostgreSQL and SQLite, and
//! spells its identifiers itself (never through the live entities), so later entity changes
//! cannot rewrite history.

pub use sea_orm_migration::prelude::*;

mod m20261125_000001_initial;
mod m20261130_000001_upload_sessions;
mod m20261130_000002_namespace_claim;
mod m20261130_000003_identity_grants;
mod m20261130_000005_package_search;
mod m20261130_000010_gc_candidates;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_initial::Migration),
            Box::new(m20261130_000001_upload_sessions::Migration),
            Box::new(m20261130_000002_namespace_claim::Migration),
            Box::new(m20261130_000003_identity_grants::Migration),
            Box::new(m20261130_000005_package_search::Migration),
            Box::new(m20261130_000010_gc_candidates::Migration),
        ]
    }
}
