//! The durable spool of received instances. A file is written to `tmp/` (as the data
//! set arrives, see [`Incoming`]), fsynced, renamed into `objects/`, and the directory
//! fsynced, before the C-STORE is acknowledged; its database row is committed at the
//! same time and the acknowledgement waits for both. File names are random internal
//! ids, never built from UIDs or any other received text. At start-up `sweep` removes
//! what a crash left behind: temporary files and objects that no database row
//! references (they were never acknowledged); rows whose file did not become durable
//! are found by their checksum (`Store::verify_recent_instances`).

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// Purges, every `interval`, the spool files that retention allows to go.
pub async fn purge_loop(
    store: crate::store::Store,
    spool: Spool,
    after: std::time::Duration,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let cutoff = crate::store::now_ms() - after.as_millis() as i64;
        match store.purge_instances(cutoff).await {
            Ok(files) => {
                for f in &files {
                    if let Err(e) = spool.remove(f) {
                        tracing::warn!(error = %e, "cannot remove a purged spool file (swept at the next start)");
                    }
                }
                if !files.is_empty() {
                    tracing::info!(files = files.len(), "spool files of finished jobs purged");
                }
            }
            Err(e) => tracing::error!(error = %e, "retention purge failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
}

impl Spool {
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root.join("tmp"))?;
        fs::create_dir_all(root.join("objects"))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` durably and returns the spool-relative name. Blocking.
    pub fn write(&self, bytes: &[u8]) -> io::Result<String> {
        let mut incoming = self.create()?;
        incoming.write(bytes)?;
        incoming.persist()
    }

    /// Starts a spool file in `tmp/` under a new internal id; see [`Incoming`].
    pub fn create(&self) -> io::Result<Incoming> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp = self.root.join("tmp").join(format!("{id}.part"));
        let file = File::create(&tmp)?;
        Ok(Incoming {
            spool: self.clone(),
            name: format!("objects/{}/{id}.dcm", &id[..2]),
            file,
            tmp,
        })
    }

    /// The full path of a spool-relative name made by [`Spool::write`] or [`Incoming`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The SHA-256 (hex) of a spool file's content. Blocking.
    pub fn checksum(&self, name: &str) -> io::Result<String> {
        use sha2::{Digest, Sha256};
        let mut sha = Sha256::new();
        io::copy(&mut File::open(self.path(name))?, &mut sha)?;
        Ok(format!("{:x}", sha.finalize()))
    }

    /// Removes a file no longer referenced (an instance replaced by a new copy, or a
    /// write whose record failed). Missing files are not an error.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Bytes available to an unprivileged writer on the spool's file system.
    pub fn free_bytes(&self) -> io::Result<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out-pointer.
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Removes temporary files and objects not in `referenced`; returns how many.
    pub fn sweep(&self, referenced: &HashSet<String>) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("tmp"))? {
            fs::remove_file(entry?.path())?;
            removed += 1;
        }
        for shard in fs::read_dir(self.root.join("objects"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = format!(
                    "objects/{}/{}",
                    shard.file_name().to_string_lossy(),
                    entry.file_name().to_string_lossy()
                );
                if !referenced.contains(&name) {
                    fs::remove_file(entry.path())?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

/// A spool file being written, in `tmp/` until [`Incoming::persist`] makes it durable
/// under its final name; removed if dropped before that.
#[derive(Debug)]
pub struct Incoming {
    spool: Spool,
    /// The spool-relative name it will have once persisted.
    name: String,
    file: File,
    tmp: PathBuf,
}

impl Incoming {
    /// The spool-relative name the file gets from [`Incoming::persist`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends bytes (to the page cache; durability comes with `persist`).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// fsync, rename into `objects/`, fsync the directory; returns the name. Blocking.
    pub fn persist(mut self) -> io::Result<String> {
        self.file.sync_all()?;
        let target = self.spool.path(&self.name);
        let dir = target
            .parent()
            .expect("objects/<shard>/<id>.dcm has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(&self.tmp, &target)?;
        File::open(dir)?.sync_all()?;
        Ok(std::mem::take(&mut self.name))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        // `persist` empties the name once the file is durable in place; otherwise
        // (dropped, or persisting failed part-way) the file goes, wherever it got to.
        if !self.name.is_empty() {
            let _ = fs::remove_file(&self.tmp);
            let _ = fs::remove_file(self.spool.path(&self.name));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_durable_named_internally_and_swept_when_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = spool.write(b"first").unwrap();
        let b = spool.write(b"second").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("objects/") && a.ends_with(".dcm"));
        assert_eq!(fs::read(spool.path(&a)).unwrap(), b"first");
        fs::write(dir.path().join("tmp/leftover.part"), b"x").unwrap();
        let removed = spool.sweep(&HashSet::from([a.clone()])).unwrap();
        assert_eq!(removed, 2);
        assert!(spool.path(&a).exists());
        assert!(!spool.path(&b).exists());
        spool.remove(&b).unwrap();
        assert!(spool.free_bytes().unwrap() > 0);
    }

    #[test]
    fn an_incoming_file_is_written_in_pieces_and_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut kept = spool.create().unwrap();
        let name = kept.name().to_string();
        kept.write(b"DICM ").unwrap();
        kept.write(b"data").unwrap();
        assert!(!spool.path(&name).exists(), "not visible before persist");
        assert_eq!(kept.persist().unwrap(), name);
        assert_eq!(fs::read(spool.path(&name)).unwrap(), b"DICM data");
        assert_eq!(
            spool.checksum(&name).unwrap(),
            "fe79fad15774562682bf518419c10044a5b487ad66a6cbcb47a3b6c26bfbef2c"
        );
        let mut dropped = spool.create().unwrap();
        dropped.write(b"partial").unwrap();
        drop(dropped);
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
