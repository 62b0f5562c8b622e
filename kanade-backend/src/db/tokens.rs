//! API tokens (DESIGN §10): 256-bit random secrets, shown once, stored only
//! as a sha256; a token names its principal (name, role, scopes) and may
//! expire or be revoked, both taking effect on the next call.
//!
//! A token reads `kanade_<id>_<secret>`: `id` (12 hex digits) finds the row,
//! `secret` (43 base64url characters, 32 random bytes) is checked against
//! the stored hash in constant time.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::core::{Db, DbError};
use crate::audit::AuditDraft;
use crate::auth::{CredentialKind, Principal, Role, Scopes};

/// The prefix every kanade API token starts with.
pub const TOKEN_PREFIX: &str = "kanade_";

/// A token as listed (never its secret or hash).
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    /// Public id (the part between `kanade_` and the secret).
    pub id: String,
    /// Unique name; the audit trail's actor.
    pub name: String,
    /// Its role.
    pub role: Role,
    /// Its scopes.
    pub scopes: Scopes,
    /// Who created it (a token name, or `kanade-backend` offline).
    pub created_by: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// When it stops working (RFC 3339); `None`: never.
    pub expires_at: Option<String>,
    /// Last successful use (RFC 3339).
    pub last_used_at: Option<String>,
    /// Revoked tokens never authenticate again.
    pub revoked: bool,
}

/// What a new token is for.
#[derive(schemars::JsonSchema, Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// Unique name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Scopes.
    #[serde(default)]
    pub scopes: Scopes,
    /// When it expires; `None`: never.
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenCreateError {
    /// Another token has this name.
    #[error("a token named {0:?} already exists")]
    NameTaken(String),
    /// The name is empty or not printable.
    #[error("invalid token name {0:?}: use 1 to 64 letters, digits, '-', '_', '.', '@' (not 12 hex digits, the shape of a token id)")]
    InvalidName(String),
    /// The system's random source failed.
    #[error("no randomness for a token: {0}")]
    Random(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Why a presented token does not authenticate anyone. The messages say
/// which of these it was, never which tokens exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRejection {
    /// Not of the `kanade_<id>_<secret>` form.
    #[error("the token is malformed")]
    Malformed,
    /// No such token, or the secret does not match (the same answer for
    /// both, so a caller cannot probe for ids).
    #[error("the token is not valid")]
    Invalid,
    /// The token expired.
    #[error("the token has expired")]
    Expired,
    /// The token was revoked.
    #[error("the token has been revoked")]
    Revoked,
}

fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn valid_name(name: &str) -> bool {
    // A name shaped like a token id (12 hex digits) would make revoking
    // by name or id ambiguous.
    let id_shaped = name.len() == 12 && name.bytes().all(|b| b.is_ascii_hexdigit());
    !id_shaped
        && (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

/// Splits `kanade_<id>_<secret>`.
fn parse_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit());
    (id_ok && secret.len() == 43).then_some((id, secret))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], TokenCreateError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| TokenCreateError::Random(e.to_string()))?;
    Ok(bytes)
}

impl Db {
    /// Creates a token; returns its row and the token itself, which is
    /// shown once and stored only as a hash.
    ///
    /// # Errors
    /// [`TokenCreateError`]: a taken or invalid name, no randomness, the
    /// database.
    pub fn create_token(
        &self,
        new: &NewToken,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(TokenRow, String), TokenCreateError> {
        self.create_token_audited(new, created_by, now, None)
    }

    /// [`Db::create_token`] with its audit entry appended in the same
    /// transaction.
    ///
    /// # Errors
    /// As [`Db::create_token`].
    pub fn create_token_audited(
        &self,
        new: &NewToken,
        created_by: &str,
        now: DateTime<Utc>,
        audit: Option<AuditDraft>,
    ) -> Result<(TokenRow, String), TokenCreateError> {
        if !valid_name(&new.name) {
            return Err(TokenCreateError::InvalidName(new.name.clone()));
        }
        let id: String = random_bytes::<6>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let secret = URL_SAFE_NO_PAD.encode(random_bytes::<32>()?);
        let row = TokenRow {
            id: id.clone(),
            name: new.name.clone(),
            role: new.role,
            scopes: new.scopes.clone(),
            created_by: created_by.to_owned(),
            created_at: now.to_rfc3339(),
            expires_at: new.expires_at.map(|at| at.to_rfc3339()),
            last_used_at: None,
            revoked: false,
        };
        let scopes = serde_json::to_string(&row.scopes).unwrap_or_else(|_| "{}".into());
        let mut conn = self.lock();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(DbError::from)?;
        let taken: bool = tx
            .query_row(
                "SELECT 1 FROM api_tokens WHERE name = ?1",
                [&row.name],
                |_| Ok(true),
            )
            .optional()
            .map_err(DbError::from)?
            .unwrap_or(false);
        if taken {
            return Err(TokenCreateError::NameTaken(row.name));
        }
        tx.execute(
            "INSERT INTO api_tokens (id, name, secret_sha256, role, scopes, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                row.id,
                row.name,
                sha256_hex(secret.as_bytes()),
                row.role.as_str(),
                scopes,
                row.created_by,
                row.created_at,
                row.expires_at,
            ],
        )
        .map_err(DbError::from)?;
        self.commit_audited(tx, true, audit)?;
        Ok((row, format!("{TOKEN_PREFIX}{id}_{secret}")))
    }

    /// Every token, oldest first.
    pub fn tokens(&self) -> Result<Vec<TokenRow>, DbError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT id, name, role, scopes, created_by, created_at, expires_at, last_used_at, revoked
             FROM api_tokens ORDER BY created_at, name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(TokenRow {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    role: r.get::<_, String>(2)?.parse().unwrap_or(Role::Viewer),
                    scopes: serde_json::from_str(&r.get::<_, String>(3)?).unwrap_or_default(),
                    created_by: r.get(4)?,
                    created_at: r.get(5)?,
                    expires_at: r.get(6)?,
                    last_used_at: r.get(7)?,
                    revoked: r.get(8)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// Revokes the token with this name or id; `false` when none matched.
    pub fn revoke_token(&self, name_or_id: &str) -> Result<bool, DbError> {
        self.revoke_token_audited(name_or_id, None)
    }

    /// [`Db::revoke_token`] with its audit entry appended in the same
    /// transaction (only when a token was revoked).
    pub fn revoke_token_audited(
        &self,
        name_or_id: &str,
        audit: Option<AuditDraft>,
    ) -> Result<bool, DbError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let changed = tx.execute(
            "UPDATE api_tokens SET revoked = 1 WHERE name = ?1 OR id = ?1",
            [name_or_id],
        )? > 0;
        self.commit_audited(tx, changed, audit)?;
        Ok(changed)
    }

    /// Who created the token named `name` (`None`: no such token).
    pub fn token_creator(&self, name: &str) -> Result<Option<String>, DbError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT created_by FROM api_tokens WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Whether any token could authenticate someone now (not revoked, not
    /// expired): the backend refuses to start without one (or OIDC).
    pub fn has_usable_token(&self, now: DateTime<Utc>) -> Result<bool, DbError> {
        let count: i64 = self.lock().query_row(
            "SELECT COUNT(*) FROM api_tokens WHERE revoked = 0 AND (expires_at IS NULL OR expires_at > ?1)",
            [now.to_rfc3339()],
            |r| r.get(0),
        )?;
        Ok(count > 0)
    }

    /// The principal `token` names, checked now: the secret compared in
    /// constant time against the stored hash, then revocation and expiry.
    /// Records the use.
    ///
    /// # Errors
    /// `Ok(Err(rejection))` when the token does not authenticate;
    /// `Err(DbError)` when the database fails.
    pub fn authenticate_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Result<Principal, TokenRejection>, DbError> {
        let Some((id, secret)) = parse_token(token) else {
            return Ok(Err(TokenRejection::Malformed));
        };
        let conn = self.lock();
        let row = conn
            .query_row(
                "SELECT name, secret_sha256, role, scopes, expires_at, revoked FROM api_tokens WHERE id = ?1",
                [id],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, Option<String>>(4)?,
                        r.get::<_, bool>(5)?,
                    ))
                },
            )
            .optional()?;
        let presented = sha256_hex(secret.as_bytes());
        let Some((name, stored, role, scopes, expires_at, revoked)) = row else {
            return Ok(Err(TokenRejection::Invalid));
        };
        if !bool::from(presented.as_bytes().ct_eq(stored.as_bytes())) {
            return Ok(Err(TokenRejection::Invalid));
        }
        if revoked {
            return Ok(Err(TokenRejection::Revoked));
        }
        // Stored data that does not read fails closed.
        let expired = match expires_at.as_deref().map(DateTime::parse_from_rfc3339) {
            None => false,
            Some(Ok(at)) => at <= now,
            Some(Err(_)) => true,
        };
        if expired {
            return Ok(Err(TokenRejection::Expired));
        }
        let Ok(scopes) = serde_json::from_str::<Scopes>(&scopes) else {
            return Ok(Err(TokenRejection::Invalid));
        };
        conn.execute(
            "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
            params![id, now.to_rfc3339()],
        )?;
        let Ok(role) = role.parse::<Role>() else {
            return Ok(Err(TokenRejection::Invalid));
        };
        Ok(Ok(Principal {
            name,
            role,
            scopes,
            kind: CredentialKind::Token,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        (dir, db)
    }

    fn new(name: &str, role: Role) -> NewToken {
        NewToken {
            name: name.into(),
            role,
            scopes: Scopes::default(),
            expires_at: None,
        }
    }

    #[test]
    fn a_token_authenticates_until_revoked_and_is_stored_only_as_a_hash() {
        let (dir, db) = db();
        let now = Utc::now();
        assert!(!db.has_usable_token(now).unwrap());
        let (row, token) = db
            .create_token(&new("ci", Role::Operator), "kanade-backend", now)
            .unwrap();
        assert!(
            token.starts_with("kanade_") && token.len() == 7 + 12 + 1 + 43,
            "{token}"
        );
        assert!(db.has_usable_token(now).unwrap());
        let principal = db.authenticate_token(&token, now).unwrap().unwrap();
        assert_eq!(
            (principal.name.as_str(), principal.role),
            ("ci", Role::Operator)
        );
        // The secret is nowhere in the database file.
        // After `kanade_<12 hex>_` (the secret's base64url may hold '_').
        let secret = &token[7 + 12 + 1..];
        assert_eq!(secret.len(), 43);
        let bytes = std::fs::read(dir.path().join("t.db")).unwrap();
        let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap_or_default();
        for file in [&bytes, &wal] {
            assert!(!file.windows(secret.len()).any(|w| w == secret.as_bytes()));
        }
        assert!(db.revoke_token(&row.id).unwrap());
        assert_eq!(
            db.authenticate_token(&token, now).unwrap(),
            Err(TokenRejection::Revoked)
        );
        assert!(!db.revoke_token("nobody").unwrap());
    }

    #[test]
    fn wrong_secrets_unknown_ids_and_garbage_are_refused_alike() {
        let (_dir, db) = db();
        let now = Utc::now();
        let (_, token) = db.create_token(&new("a", Role::Admin), "x", now).unwrap();
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(
            db.authenticate_token(&forged, now).unwrap(),
            Err(TokenRejection::Invalid)
        );
        let unknown = format!("kanade_000000000000_{}", &token[20..]);
        assert_eq!(
            db.authenticate_token(&unknown, now).unwrap(),
            Err(TokenRejection::Invalid)
        );
        for garbage in ["", "Bearer", "kanade_", "kanade_zz_zz", &token[..30]] {
            assert_eq!(
                db.authenticate_token(garbage, now).unwrap(),
                Err(TokenRejection::Malformed),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn expiry_takes_effect_at_once_and_names_are_unique() {
        let (_dir, db) = db();
        let now = Utc::now();
        let mut short = new("short", Role::Viewer);
        short.expires_at = Some(now + chrono::Duration::seconds(60));
        let (_, token) = db.create_token(&short, "x", now).unwrap();
        assert!(db.authenticate_token(&token, now).unwrap().is_ok());
        assert_eq!(
            db.authenticate_token(&token, now + chrono::Duration::seconds(61))
                .unwrap(),
            Err(TokenRejection::Expired)
        );
        assert!(matches!(
            db.create_token(&short, "x", now),
            Err(TokenCreateError::NameTaken(_))
        ));
        assert!(matches!(
            db.create_token(&new("bad name", Role::Viewer), "x", now),
            Err(TokenCreateError::InvalidName(_))
        ));
    }
}
