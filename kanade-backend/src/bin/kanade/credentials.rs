//! Where the CLI's bearer token comes from: `--token`, then
//! `KANADE_TOKEN`, then the file `kanade login` writes
//! (`$XDG_CONFIG_HOME/kanade/credentials`, else `~/.config/kanade/credentials`),
//! created with mode 0600 in a 0700 directory.

use std::io::Write;
use std::path::PathBuf;

/// The credentials file's path.
pub fn path() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(
            std::env::var_os("HOME").ok_or("neither XDG_CONFIG_HOME nor HOME is set")?,
        )
        .join(".config"),
    };
    Ok(base.join("kanade").join("credentials"))
}

/// The token saved by `kanade login`, if any (a file readable by others is
/// refused: it would leak the token).
pub fn load() -> Result<Option<String>, String> {
    let path = path()?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{} is readable by others (mode {:o}): chmod 600 it, or log in again",
                path.display(),
                mode & 0o777
            ));
        }
    }
    let token = text.trim();
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

/// Saves `token` (mode 0600; the directory 0700); returns the path.
pub fn save(token: &str) -> Result<PathBuf, String> {
    let path = path()?;
    let dir = path.parent().ok_or("no directory for the credentials")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        options.mode(0o600);
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let mut file = options
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    file.write_all(format!("{token}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}
