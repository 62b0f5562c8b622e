//! Command-line pieces both binaries share (the `cli` feature): what a new
//! API token is, as `kanade-backend token create` and `kanade token create`
//! take it.

use crate::auth::{Role, Scopes};
use crate::db::NewToken;

/// `--name --role [--jobs] [--tags] [--groups] [--pcs] [--expires]`.
#[derive(Debug, Clone, clap::Args)]
pub struct TokenSpec {
    /// Unique name (the audit trail's actor).
    #[arg(long)]
    pub name: String,
    /// viewer, operator or admin.
    #[arg(long)]
    pub role: Role,
    /// Only these jobs (ids, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub jobs: Vec<String>,
    /// Only jobs with these tags.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Only these agent groups as targets.
    #[arg(long, value_delimiter = ',')]
    pub groups: Vec<String>,
    /// Only these pcs as targets.
    #[arg(long, value_delimiter = ',')]
    pub pcs: Vec<String>,
    /// Lifetime (`90d`, `12h`); without it the token does not expire.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub expires: Option<std::time::Duration>,
}

impl TokenSpec {
    /// The token to create, expiring `expires` after `now`.
    ///
    /// # Errors
    /// A lifetime too long to add to `now`, naming it.
    pub fn new_token(self, now: chrono::DateTime<chrono::Utc>) -> Result<NewToken, String> {
        let expires_at = match self.expires {
            Some(life) => Some(
                now + chrono::Duration::from_std(life)
                    .map_err(|_| format!("--expires {life:?} is too long"))?,
            ),
            None => None,
        };
        Ok(NewToken {
            name: self.name,
            role: self.role,
            scopes: Scopes {
                jobs: self.jobs,
                tags: self.tags,
                groups: self.groups,
                pcs: self.pcs,
            },
            expires_at,
        })
    }
}
