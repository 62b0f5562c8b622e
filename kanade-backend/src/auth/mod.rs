//! Who may do what (DESIGN §10): principals with roles and scopes, API
//! tokens, optional OIDC, and the pure decisions that allow or refuse a
//! call.

pub mod decide;
pub mod oidc;
pub mod principal;

pub use decide::{
    job_in_scope, require_job, require_role, require_target, require_within, scopes_within, Denial,
};
pub use oidc::{looks_like_jwt, JwksSource, OidcConfig, OidcError, OidcVerifier};
pub use principal::{CredentialKind, Principal, Role, Scopes, UnknownRole};
