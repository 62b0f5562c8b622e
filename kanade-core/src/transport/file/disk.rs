//! Small durable-I/O helpers: errors naming paths, atomic writes, directory
//! fsync, inter-process locks and segmented logs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::record::{scan, Damage, Record, Scan};
use crate::transport::TransportError;

/// An I/O failure with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{action} {path}: {source}")]
pub(super) struct DiskError {
    action: &'static str,
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// Maps an `io::Error` on `path` into a [`TransportError`].
pub(super) fn io_error(
    action: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> TransportError {
    let path = path.to_path_buf();
    move |source| {
        if source.kind() == io::ErrorKind::NotFound {
            TransportError::not_found(path.display().to_string())
        } else {
            TransportError::Backend(Box::new(DiskError {
                action,
                path,
                source,
            }))
        }
    }
}

/// fsyncs a directory so renames and creations in it are durable.
pub(super) fn sync_dir(dir: &Path) -> Result<(), TransportError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("syncing directory", dir))
}

/// Writes `bytes` to `path` atomically and durably: temp file, fsync,
/// rename, fsync the directory.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TransportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let mut file = File::create(&tmp).map_err(io_error("creating", &tmp))?;
    file.write_all(bytes).map_err(io_error("writing", &tmp))?;
    file.sync_all().map_err(io_error("syncing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("renaming into place", path))?;
    sync_dir(dir)
}

/// A unique temp name next to `path`.
pub(super) fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".tmp-{}-{n}-{name}", std::process::id()))
}

/// Creates a directory (and parents) and makes the creation durable.
pub(super) fn create_dir_durable(dir: &Path) -> Result<(), TransportError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_error("creating directory", dir))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// An exclusive inter-process lock held until dropped (an OS `flock` on
/// `<dir>/lock`; the kernel releases it if the process dies).
pub(super) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Blocks until the lock on `dir` is held.
    pub(super) fn acquire(dir: &Path) -> Result<Self, TransportError> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("opening lock", &path))?;
        file.lock().map_err(io_error("locking", &path))?;
        Ok(Self { _file: file })
    }

    /// Takes the lock on `dir` only if it is free right now.
    pub(super) fn try_acquire(dir: &Path) -> Result<Option<Self>, TransportError> {
        let path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_error("opening lock", &path))?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Self { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error("locking", &path)(e)),
        }
    }
}

/// A log kept as numbered segments `data-<generation>.log` in a directory;
/// compaction writes the next generation and removes the old one.
#[derive(Debug, Clone)]
pub(super) struct SegmentedLog {
    pub dir: PathBuf,
}

/// A reader's position in a [`SegmentedLog`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Position {
    pub generation: u64,
    pub offset: u64,
}

/// What [`SegmentedLog::read_new`] found.
pub(super) struct NewRecords {
    /// `true` when the generation changed: the caller must rebuild from scratch.
    pub reset: bool,
    /// The records, with their offsets in the current segment.
    pub scan: Scan,
}

impl SegmentedLog {
    pub(super) fn segment_path(&self, generation: u64) -> PathBuf {
        self.dir.join(format!("data-{generation}.log"))
    }

    /// The newest generation present (0 when none).
    pub(super) fn current_generation(&self) -> Result<u64, TransportError> {
        let entries = fs::read_dir(&self.dir).map_err(io_error("listing", &self.dir))?;
        let mut newest = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(generation) = name
                .strip_prefix("data-")
                .and_then(|rest| rest.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                newest = newest.max(generation);
            }
        }
        Ok(newest)
    }

    /// Reads every complete record after `position`, moving it forward.
    ///
    /// With `locked` (the caller holds the directory lock), a torn tail is
    /// truncated and reported in `warnings`; without it, an incomplete tail
    /// is left alone (a writer may be appending right now).
    pub(super) fn read_new(
        &self,
        position: &mut Position,
        locked: bool,
        warnings: &mut Vec<String>,
    ) -> Result<NewRecords, TransportError> {
        let generation = self.current_generation()?;
        let reset = generation != position.generation;
        if reset {
            *position = Position {
                generation,
                offset: 0,
            };
        }
        let path = self.segment_path(generation);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(NewRecords {
                    reset,
                    scan: Scan {
                        valid_end: position.offset,
                        ..Scan::default()
                    },
                })
            }
            Err(e) => return Err(io_error("opening", &path)(e)),
        };
        file.seek(SeekFrom::Start(position.offset))
            .map_err(io_error("seeking", &path))?;
        let mut data = Vec::new();
        file.read_to_end(&mut data)
            .map_err(io_error("reading", &path))?;
        let scan = scan(&data, position.offset);
        position.offset = scan.valid_end;
        if let Some(damage) = &scan.damage {
            if locked {
                repair(&path, damage, scan.valid_end, warnings)?;
            }
        }
        Ok(NewRecords { reset, scan })
    }

    /// Appends records to the current segment and (optionally) fsyncs.
    /// Returns the offset of each record. The caller holds the lock and has
    /// read up to the end, so `position` is the end of the segment.
    pub(super) fn append(
        &self,
        position: &mut Position,
        records: &[Record],
        durable: bool,
    ) -> Result<Vec<u64>, TransportError> {
        let path = self.segment_path(position.generation);
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io_error("opening for append", &path))?;
        let mut buffer = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for record in records {
            offsets.push(position.offset + buffer.len() as u64);
            buffer.extend_from_slice(&record.encode());
        }
        file.write_all(&buffer)
            .map_err(io_error("appending to", &path))?;
        if durable {
            file.sync_data().map_err(io_error("syncing", &path))?;
            if created {
                sync_dir(&self.dir)?;
            }
        }
        position.offset += buffer.len() as u64;
        Ok(offsets)
    }

    /// Writes `records` as the next generation and removes the current one.
    pub(super) fn rewrite(
        &self,
        position: &mut Position,
        records: &[Record],
    ) -> Result<Vec<u64>, TransportError> {
        let next = position.generation + 1;
        let path = self.segment_path(next);
        let mut buffer = Vec::new();
        let mut offsets = Vec::with_capacity(records.len());
        for record in records {
            offsets.push(buffer.len() as u64);
            buffer.extend_from_slice(&record.encode());
        }
        write_atomic(&path, &buffer)?;
        let old = self.segment_path(position.generation);
        match fs::remove_file(&old) {
            Ok(()) => sync_dir(&self.dir)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing", &old)(e)),
        }
        *position = Position {
            generation: next,
            offset: buffer.len() as u64,
        };
        Ok(offsets)
    }

    /// Reads the record at `offset` of `generation`.
    pub(super) fn read_at(
        &self,
        generation: u64,
        offset: u64,
    ) -> Result<Option<Record>, TransportError> {
        let path = self.segment_path(generation);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("opening", &path)(e)),
        };
        file.seek(SeekFrom::Start(offset))
            .map_err(io_error("seeking", &path))?;
        let mut header = [0u8; super::record::HEADER_LEN];
        if file.read_exact(&mut header).is_err() {
            return Ok(None);
        }
        let body_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let mut data = header.to_vec();
        data.resize(super::record::HEADER_LEN + body_len, 0);
        if file
            .read_exact(&mut data[super::record::HEADER_LEN..])
            .is_err()
        {
            return Ok(None);
        }
        Ok(scan(&data, offset)
            .records
            .into_iter()
            .next()
            .map(|(_, r)| r))
    }
}

/// Truncates a torn tail (or a corrupt last record); refuses to touch
/// corruption followed by more data.
fn repair(
    path: &Path,
    damage: &Damage,
    valid_end: u64,
    warnings: &mut Vec<String>,
) -> Result<(), TransportError> {
    let (offset, truncatable) = match damage {
        Damage::TornTail { offset, .. } => (*offset, true),
        Damage::Corrupt { offset, at_end } => (*offset, *at_end),
    };
    if !truncatable {
        return Err(TransportError::Backend(
            format!(
                "{}: corrupt record at offset {offset} followed by more data; refusing to repair",
                path.display()
            )
            .into(),
        ));
    }
    let warning = format!(
        "{}: skipped a torn record at offset {offset} (incomplete write from a crash); truncating to {valid_end} bytes",
        path.display()
    );
    tracing::warn!("{warning}");
    warnings.push(warning);
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_error("opening for repair", path))?;
    file.set_len(valid_end)
        .map_err(io_error("truncating", path))?;
    file.sync_all().map_err(io_error("syncing", path))
}
