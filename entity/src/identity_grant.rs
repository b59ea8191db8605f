//! A keyless-access grant: tokens of `issuer` whose identity matches (Kubernetes namespace and
//! optional ServiceAccount, and/or exact claims) may get keys for `actions` in
//! `registry_namespace`. `owner` names who holds the grant (e.g. a Kubernetes object's UID).

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "identity_grants")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub owner: String,
    pub issuer: String,
    pub kubernetes_namespace: Option<String>,
    pub service_account: Option<String>,
    /// A JSON object of exact claim matches.
    pub claims: String,
    pub registry_namespace: String,
    /// Comma-separated actions, e.g. `pull,push`.
    pub actions: String,
    pub created_at: DateTime,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
