//! The `[console]` table of the OIDC config file: how the web console signs operators in at the
//! issuer — the OAuth 2.0 authorization code flow with PKCE (RFC 7636,
//! `S256`) as a public client, asking for an OpenID Connect ID token
//! (OpenID Connect Core 1.0 §3.1). The browser sends the operator to the
//! issuer, trades the code for the ID token at the token endpoint itself,
//! and then presents the ID token as its bearer credential; the backend
//! verifies it like any OIDC token. No client secret exists anywhere.

use serde::{Deserialize, Serialize};

use super::error::OidcError;

/// The `[console]` table of the file `--oidc-config` names.
///
/// ```toml
/// [console]
/// authorization_endpoint = "https://login.example.com/realms/ops/protocol/openid-connect/auth"
/// token_endpoint = "https://login.example.com/realms/ops/protocol/openid-connect/token"
/// # client_id = "kanade-console"   # default: the audience
/// # scope = "openid profile"       # default: "openid"
/// # label = "Sign in with Keycloak"
/// ```
///
/// Register the console at the issuer as a public client whose redirect
/// URI is the console's address with a trailing `/`
/// (`https://kanade.example.com/`), and whose ID tokens carry the
/// configured audience.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSignIn {
    /// Where the browser sends the operator to sign in.
    pub authorization_endpoint: String,
    /// Where the browser trades the code for tokens (it must allow this
    /// console's origin: CORS).
    pub token_endpoint: String,
    /// The console's client id at the issuer (default: the audience).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// The scopes asked for (must include `openid`).
    #[serde(default = "default_scope")]
    pub scope: String,
    /// The sign-in button's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

fn default_scope() -> String {
    "openid".to_owned()
}

/// What the console is told at `/console/sign-in.json` (open: endpoints
/// and a client id, nothing secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SignInOffer {
    /// Where to send the operator.
    pub authorization_endpoint: String,
    /// Where to trade the code.
    pub token_endpoint: String,
    /// The client id to name.
    pub client_id: String,
    /// The scopes to ask for.
    pub scope: String,
    /// The button's text.
    pub label: String,
}

impl ConsoleSignIn {
    /// Both endpoints `https://` (plain `http://` only to a loopback host)
    /// and the scope asking for `openid`.
    ///
    /// # Errors
    /// [`OidcError::Config`] naming the first problem.
    pub fn validate(&self) -> Result<(), OidcError> {
        for (name, url) in [
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
        ] {
            if !(url.starts_with("https://") || is_loopback_http(url)) {
                return Err(OidcError::Config(format!(
                    "console.{name} {url:?} must be https:// (plain http:// only to localhost, 127.0.0.1 or [::1])"
                )));
            }
        }
        if self.offer("").token_origin().is_none() {
            return Err(OidcError::Config(format!(
                "console.token_endpoint {:?} is not a plain scheme://host[:port]/path URL (no user info)",
                self.token_endpoint
            )));
        }
        if !self.scope.split_whitespace().any(|s| s == "openid") {
            return Err(OidcError::Config(
                "console.scope must include openid (an ID token is what the console signs in with)"
                    .to_owned(),
            ));
        }
        Ok(())
    }

    /// The offer the console gets, with `audience` as the default client
    /// id.
    pub fn offer(&self, audience: &str) -> SignInOffer {
        SignInOffer {
            authorization_endpoint: self.authorization_endpoint.clone(),
            token_endpoint: self.token_endpoint.clone(),
            client_id: self
                .client_id
                .clone()
                .unwrap_or_else(|| audience.to_owned()),
            scope: self.scope.clone(),
            label: self
                .label
                .clone()
                .unwrap_or_else(|| "Sign in with single sign-on".to_owned()),
        }
    }
}

impl SignInOffer {
    /// The token endpoint's origin (`scheme://host[:port]`): the one place
    /// besides its own the console's Content-Security-Policy lets it
    /// connect to.
    pub fn token_origin(&self) -> Option<String> {
        let (scheme, rest) = self.token_endpoint.split_once("://")?;
        let authority = rest.split(['/', '?', '#']).next()?;
        let safe = !authority.is_empty()
            && authority
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c));
        safe.then(|| format!("{scheme}://{authority}"))
    }
}

/// Whether `url` is plain `http://` to a loopback host (allowed for
/// tests and a local issuer).
pub(super) fn is_loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#', '\\']).next().unwrap_or_default();
    // `user@host` names another host than its first characters suggest.
    if authority.contains('@') {
        return false;
    }
    let host = match authority.strip_prefix("[::1]") {
        Some(port) => return port.is_empty() || port.starts_with(':'),
        None => authority.split(':').next().unwrap_or_default(),
    };
    matches!(host, "localhost" | "127.0.0.1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section() -> ConsoleSignIn {
        ConsoleSignIn {
            authorization_endpoint: "https://idp.example.com/auth".into(),
            token_endpoint: "https://idp.example.com:8443/token?x=1".into(),
            client_id: None,
            scope: default_scope(),
            label: None,
        }
    }

    #[test]
    fn endpoints_must_be_https_and_the_scope_openid() {
        assert!(section().validate().is_ok());
        let mut plain = section();
        plain.token_endpoint = "http://idp.example.com/token".into();
        assert!(plain
            .validate()
            .unwrap_err()
            .to_string()
            .contains("token_endpoint"));
        let mut local = section();
        local.authorization_endpoint = "http://127.0.0.1:9000/auth".into();
        assert!(local.validate().is_ok());
        let mut scope = section();
        scope.scope = "profile".into();
        assert!(scope.validate().unwrap_err().to_string().contains("openid"));
    }

    #[test]
    fn loopback_means_the_host_not_what_precedes_an_at() {
        for ok in [
            "http://127.0.0.1:9000/auth",
            "http://localhost/x",
            "http://[::1]:8080/jwks",
            "http://[::1]",
        ] {
            assert!(is_loopback_http(ok), "{ok}");
        }
        for bad in [
            "http://127.0.0.1:80@evil.example/jwks",
            "http://[::1]@evil.example/",
            "http://localhost.evil.example/",
            "http://[::1]evil/",
            "https://127.0.0.1/",
            "http://10.0.0.1/",
        ] {
            assert!(!is_loopback_http(bad), "{bad}");
        }
        let mut sneaky = section();
        sneaky.token_endpoint = "https://user@idp.example.com/token".into();
        assert!(sneaky.validate().is_err());
    }

    #[test]
    fn the_offer_defaults_the_client_id_and_names_the_token_origin() {
        let offer = section().offer("kanade");
        assert_eq!(offer.client_id, "kanade");
        assert_eq!(
            offer.token_origin().as_deref(),
            Some("https://idp.example.com:8443")
        );
        let mut odd = offer.clone();
        odd.token_endpoint = "https://idp.example.com;script-src *".into();
        assert_eq!(odd.token_origin(), None);
    }
}
