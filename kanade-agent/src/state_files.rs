//! Where the agent keeps its state files (ledger entries, outbox messages,
//! its registration, cached scripts): [`DiskFiles`], the default, writes
//! whole files durably (temp, fsync, rename, fsync the directory); and
//! [`MemoryFiles`] keeps them in a map, for simulations whose "crash" is a
//! task stopping and whose agents number in the thousands (DESIGN §8:
//! the simulation runs the real agent, only its disk is virtual).
//!
//! Both give the same guarantees the agent relies on: a write is whole or
//! absent, a listing sees only finished files, a rename moves one file.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file operations the agent's state needs. Paths are absolute or
/// relative to the process; directories are created with
/// [`StateFiles::create_dir_all`] before files go into them.
pub trait StateFiles: Send + Sync + std::fmt::Debug {
    /// Creates `dir` and its parents.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The whole file (`NotFound` if absent).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Replaces `path` with `bytes`, whole or not at all; durably (it
    /// survives a machine crash once this returns) when `durable`, else
    /// it survives a crash of the process only.
    fn write(&self, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()>;
    /// Removes `path` (`NotFound` if absent).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Moves `from` to `to`, replacing it.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The finished files directly in `dir` (no temporaries, no
    /// directories), in no particular order.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>>;
    /// Removes what writes interrupted by a crash left in `dir` (call it
    /// when opening a directory, before writing to it); returns how many.
    fn remove_temporaries(&self, dir: &Path) -> io::Result<usize>;
}

/// Whether `path` names a temporary file of [`DiskFiles::write`].
fn is_temporary(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with(".tmp-"))
}

/// The temporary file `path` is written to before its rename.
fn temp_path(path: &Path) -> PathBuf {
    let dir = path.parent().unwrap_or(Path::new("."));
    dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ))
}

/// Writes a file whole or not at all (temp, rename), without waiting for
/// the disk: for what only an agent *process* crash must find — the page
/// cache outlives the process.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Writes a file durably: temp, fsync, rename, fsync the directory.
pub fn write_durably(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_durably_with_mode(path, bytes, None)
}

/// [`write_durably`], the file created with Unix permissions `mode` (from
/// its first byte: it is never readable wider than that), when given.
pub fn write_durably_with_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    sync_dir(dir)
}

/// Syncs directory `dir` (a rename in it survives a machine crash).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir).and_then(|d| d.sync_all())
}

/// State files on the local disk (the default).
#[derive(Debug, Default, Clone, Copy)]
pub struct DiskFiles;

impl StateFiles for DiskFiles {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write(&self, path: &Path, bytes: &[u8], durable: bool) -> io::Result<()> {
        if durable {
            write_durably(path, bytes)
        } else {
            write_atomically(path, bytes)
        }
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Ok(std::fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| !is_temporary(p) && p.is_file())
            .collect())
    }

    fn remove_temporaries(&self, dir: &Path) -> io::Result<usize> {
        let mut removed = 0;
        for path in std::fs::read_dir(dir)?.flatten().map(|e| e.path()) {
            if is_temporary(&path) && path.is_file() && std::fs::remove_file(&path).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// State files in memory: they outlive the agent that wrote them as long
/// as this value lives (a simulated crash-restart keeps it), not the
/// process.
#[derive(Debug, Default)]
pub struct MemoryFiles {
    /// By the path's bytes: compared as bytes, not component by component
    /// (a simulated fleet writes these thousands of times a second).
    files: Mutex<BTreeMap<OsString, Vec<u8>>>,
}

impl MemoryFiles {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<OsString, Vec<u8>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl StateFiles for MemoryFiles {
    fn create_dir_all(&self, _dir: &Path) -> io::Result<()> {
        Ok(())
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.lock()
            .get(path.as_os_str())
            .cloned()
            .ok_or_else(|| not_found(path))
    }

    fn write(&self, path: &Path, bytes: &[u8], _durable: bool) -> io::Result<()> {
        self.lock()
            .insert(path.as_os_str().to_owned(), bytes.to_vec());
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.lock()
            .remove(path.as_os_str())
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.lock();
        let bytes = files
            .remove(from.as_os_str())
            .ok_or_else(|| not_found(from))?;
        files.insert(to.as_os_str().to_owned(), bytes);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        // Everything under `dir` sorts right after it, byte by byte; its
        // entries are the keys `dir` + separator + a name without one.
        let prefix = dir.as_os_str().as_encoded_bytes();
        let separator = std::path::MAIN_SEPARATOR as u8;
        Ok(self
            .lock()
            .range(dir.as_os_str().to_owned()..)
            .map(|(path, _)| path)
            .take_while(|path| path.as_encoded_bytes().starts_with(prefix))
            .filter(|path| {
                path.as_encoded_bytes()[prefix.len()..]
                    .split_first()
                    .is_some_and(|(first, name)| {
                        *first == separator && !name.is_empty() && !name.contains(&separator)
                    })
            })
            .map(PathBuf::from)
            .collect())
    }

    /// A write here is one map insert: nothing is ever left half-done.
    fn remove_temporaries(&self, _dir: &Path) -> io::Result<usize> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same sequence of operations gives the same view on both stores.
    fn exercise(files: &dyn StateFiles, root: &Path) -> Vec<String> {
        let dir = root.join("outbox");
        files.create_dir_all(&dir.join("stuck")).unwrap();
        files.write(&dir.join("b.json"), b"2", true).unwrap();
        files.write(&dir.join("a.json"), b"1", false).unwrap();
        files.write(&dir.join("a.json"), b"1bis", true).unwrap();
        files
            .rename(&dir.join("b.json"), &dir.join("stuck").join("b.json"))
            .unwrap();
        files.write(&root.join("outbox2"), b"x", true).unwrap();
        assert_eq!(
            files.read(&dir.join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        assert_eq!(
            files.remove(&dir.join("missing")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
        let mut seen = Vec::new();
        for listed in [dir.clone(), dir.join("stuck")] {
            let mut names: Vec<PathBuf> = files.list(&listed).unwrap();
            names.sort();
            for path in names {
                let bytes = files.read(&path).unwrap();
                seen.push(format!(
                    "{}={}",
                    path.strip_prefix(root).unwrap().display(),
                    String::from_utf8_lossy(&bytes)
                ));
            }
        }
        files.remove(&dir.join("a.json")).unwrap();
        seen.push(format!("after remove: {}", files.list(&dir).unwrap().len()));
        seen
    }

    #[test]
    fn leftovers_of_interrupted_writes_are_removed() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".tmp-42-a.json"), b"{\"half").unwrap();
        DiskFiles
            .write(&tmp.path().join("a.json"), b"{}", true)
            .unwrap();
        assert_eq!(DiskFiles.remove_temporaries(tmp.path()).unwrap(), 1);
        let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].file_name(), "a.json");
    }

    #[test]
    fn memory_files_behave_like_the_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let disk = exercise(&DiskFiles, tmp.path());
        let memory = exercise(&MemoryFiles::new(), Path::new("/virtual"));
        assert_eq!(
            disk,
            vec![
                "outbox/a.json=1bis",
                "outbox/stuck/b.json=2",
                "after remove: 0"
            ]
        );
        assert_eq!(memory, disk);
    }
}
