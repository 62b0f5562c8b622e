//! Key files: generating a command-signing key, reading secrets that must
//! stay owner-only, choosing the newest signing key.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kanade_core::policy::signature::CommandSigner;

/// Writes a new signing key to `out` (0600, never over an existing file)
/// and prints its ring entry.
pub(crate) fn keygen(
    out: &Path,
    kid: Option<String>,
    label: Option<String>,
    max_age: Option<std::time::Duration>,
    break_glass: bool,
) -> Result<ExitCode, String> {
    use std::io::Write;
    let kid = kid.unwrap_or_else(|| format!("k-{}", chrono::Utc::now().format("%Y%m%d")));
    let signer = CommandSigner::generate(kid)
        .map_err(|e| e.to_string())?
        .with_break_glass(break_glass);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(out)
        .map_err(|e| format!("{}: {e} (keygen never overwrites a key)", out.display()))?;
    file.write_all(signer.to_file_text().as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    let entry = signer.ring_entry(label, max_age.map(|d| d.as_secs()));
    eprintln!(
        "wrote the private key {} (mode 0600); add this entry to the agents' key ring:",
        out.display()
    );
    println!(
        "{}",
        serde_json::to_string_pretty(&entry).map_err(|e| e.to_string())?
    );
    Ok(ExitCode::SUCCESS)
}

/// Reads a file holding a secret, refusing one others can read.
pub(crate) fn read_secret(path: &Path, what: &str) -> Result<String, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "{what} {} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                mode & 0o777
            ));
        }
    }
    std::fs::read_to_string(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// Loads every listed signing key (each must read) and returns the one
/// whose file is newest: during a rotation the old and new keys are both
/// listed, and the new one signs.
pub(crate) fn newest_signer(paths: &[PathBuf]) -> Result<Option<CommandSigner>, String> {
    let mut newest: Option<(std::time::SystemTime, CommandSigner)> = None;
    for path in paths {
        let signer = load_signer(path)?;
        let modified = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("signing key {}: {e}", path.display()))?;
        if newest.as_ref().is_none_or(|(at, _)| modified >= *at) {
            newest = Some((modified, signer));
        }
    }
    Ok(newest.map(|(_, signer)| signer))
}

/// Reads the signing key, refusing a file others can read.
fn load_signer(path: &Path) -> Result<CommandSigner, String> {
    let text = read_secret(path, "signing key")?;
    CommandSigner::from_file_text(&text).map_err(|e| format!("signing key {}: {e}", path.display()))
}
