//! The reconcilers' error type. Every variant has a `reason`: the `Ready` condition's reason in
//! status, the Event's reason, and the `reason` label of the failure metric.

/// Why a reconcile did not reach the desired state.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The spec is invalid in a way the CRD schema could not express.
    #[error("{0}")]
    InvalidSpec(String),
    /// The scope does not parse (the registry's parser is the authority).
    #[error("{0}")]
    InvalidScope(String),
    /// The owner, a member or the key's user has no account (yet).
    #[error("{0}")]
    UserNotFound(String),
    /// The registry name belongs to a user or to another owner.
    #[error("{0}")]
    NameTaken(String),
    /// The namespace exists, owned by someone else than `spec.owner`.
    #[error("{0}")]
    OwnerMismatch(String),
    /// The ApiKey asks for more than its Kubernetes namespace is granted (names what is missing).
    #[error("{0}")]
    Forbidden(String),
    /// Another resource claims the registry namespace.
    #[error("{0}")]
    Conflict(String),
    /// The namespace exists, managed by no resource, and `adopt` is not set.
    #[error("{0}")]
    AdoptionRequired(String),
    /// The grants are not known yet (the RegistryNamespace cache is still loading).
    #[error("{0}")]
    GrantsNotLoaded(String),
    /// `deletionPolicy: Delete` but the namespace still has packages.
    #[error("{0}")]
    HasPackages(String),
    /// The registry refused or failed an operation.
    #[error("registry: {0}")]
    Registry(#[source] niso_registry::Error),
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// Adding or removing the finalizer failed, or the cleanup did.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The CamelCase reason shown in status, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::InvalidScope(_) => "InvalidScope",
            Error::UserNotFound(_) => "UserNotFound",
            Error::NameTaken(_) => "NameTaken",
            Error::OwnerMismatch(_) => "OwnerMismatch",
            Error::HasPackages(_) => "HasPackages",
            Error::Forbidden(_) => "Forbidden",
            Error::Conflict(_) => "Conflict",
            Error::AdoptionRequired(_) => "AdoptionRequired",
            Error::GrantsNotLoaded(_) => "GrantsNotLoaded",
            Error::Registry(niso_registry::Error::Unavailable(_)) => "RegistryUnavailable",
            Error::Registry(_) => "RegistryError",
            Error::Kube(_) => "KubernetesError",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.reason(),
                _ => "FinalizerError",
            },
        }
    }

    /// Whether the message may be shown in status and Events (internal causes are not).
    pub fn public_message(&self) -> String {
        match self {
            Error::Registry(error) => error.public_message(),
            Error::Kube(_) => "the Kubernetes API failed; retrying".to_owned(),
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(error)
                | kube::runtime::finalizer::Error::CleanupFailed(error) => error.public_message(),
                other => other.to_string(),
            },
            other => other.to_string(),
        }
    }
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(error)
    }
}

impl From<niso_registry::Error> for Error {
    fn from(error: niso_registry::Error) -> Self {
        Error::Registry(error)
    }
}
