//! Optional OIDC authentication (DESIGN §10): operators may present a JWT
//! from an issuer the admin configures instead of a kanade API token. The
//! token's signature is checked against the issuer's JWKS, then `iss`,
//! `aud`, `exp` / `nbf` (with leeway) and the algorithm; a claim maps to a
//! [`Role`](crate::auth::Role) and another, optionally, to
//! [`Scopes`](crate::auth::Scopes).
//!
//! No network here: the binary reads [`OidcConfig`] from its config file,
//! loads the JWKS from [`OidcConfig::jwks_source`] (a file, or a URL it
//! fetches) and hands the JSON to [`OidcVerifier::new`]. To pick up a key
//! rotation it builds a new verifier from a fresh JWKS.
//!
//! Errors say what was wrong (expired, wrong audience, unknown key…) and
//! never repeat the token or its claim values.
//!
//! Layout: [`OidcConfig`] and [`JwksSource`] (the `[oidc]` section and its
//! checks) live in `config`, JWK parsing in `jwks`, [`OidcVerifier`] and
//! the claim → principal mapping in `verify`, [`OidcError`] in `error`,
//! the console's sign-in flow ([`ConsoleSignIn`]) in `console`.

mod config;
mod console;
mod error;
mod jwks;
mod verify;

pub use config::{JwksSource, OidcConfig};
pub use console::{ConsoleSignIn, SignInOffer};
pub use error::OidcError;
pub use verify::{looks_like_jwt, OidcVerifier, MAX_TOKEN_LEN, OIDC_NAME_PREFIX};

#[cfg(test)]
mod tests;
