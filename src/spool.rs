//! The durable spool of received instances. A file is written to `tmp/`, fsynced,
//! renamed into `objects/`, and the directory fsynced, before the caller records it
//! and acknowledges the C-STORE. File names are random internal ids, never built from
//! UIDs or any other received text. At start-up `sweep` removes what a crash left
//! behind: temporary files and objects that no database row references (they were
//! never acknowledged).

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
        let id = uuid::Uuid::new_v4().simple().to_string();
        let shard = &id[..2];
        let name = format!("objects/{shard}/{id}.dcm");
        let tmp = self.root.join("tmp").join(format!("{id}.part"));
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        let dir = self.root.join("objects").join(shard);
        fs::create_dir_all(&dir)?;
        fs::rename(&tmp, self.root.join(&name))?;
        File::open(&dir)?.sync_all()?;
        Ok(name)
    }

    /// The full path of a spool-relative name made by [`Spool::write`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
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
}
