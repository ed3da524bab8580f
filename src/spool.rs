//! The durable spool of received instances. A file is written to `tmp/` (as the data
//! set arrives, see [`Incoming`]), fsynced, renamed into `objects/`, and the directory
//! fsynced, before the C-STORE is acknowledged (the empty files are created ahead by a
//! background thread, [`Spool::keep_ready`]); its database row is committed at the
//! same time and the acknowledgement waits for both. File names are random internal
//! ids, never built from UIDs or any other received text. At start-up `sweep` removes
//! what a crash left behind: temporary files and objects that no database row
//! references (they were never acknowledged); rows whose file did not become durable
//! are found by their checksum (`Store::recent_instances`, [`Spool::holds`]).
//!
//! Several nodes may share the spool, each writing into its own `tmp/<node id>/`. A
//! running node holds that folder ([`TmpLock`], an exclusive `flock` that the kernel
//! releases however the process ends), and only the holder sweeps it: a second
//! process with the same node id cannot take the lock, and so neither sweeps nor
//! writes there. Another node's files are left alone: its folder is never read, and
//! what lies in the shared folders is swept only once older than the minimum age the
//! caller gives.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use crate::dicom::part10;
use crate::store::{JobState, RetentionCandidate, Store, StoreError, now_ms};

/// The retention rule: a series' instances may go once its latest job is delivered,
/// ignored or rejected in review (nothing more will read them) and has not changed
/// since `cutoff_ms`.
pub fn retention_allows(candidate: &RetentionCandidate, cutoff_ms: i64) -> bool {
    matches!(
        candidate.state,
        JobState::Delivered | JobState::Ignored | JobState::Rejected
    ) && candidate.updated_ms < cutoff_ms
}

/// Purges, every `interval`, the spool files that the retention rule lets go.
pub async fn purge_loop(
    store: Store,
    spool: Spool,
    after: std::time::Duration,
    interval: std::time::Duration,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        if let Err(e) = purge(&store, &spool, now_ms() - after.as_millis() as i64).await {
            tracing::error!(error = %e, "retention purge failed");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

async fn purge(store: &Store, spool: &Spool, cutoff_ms: i64) -> Result<(), StoreError> {
    let mut purged = 0;
    for candidate in store.retention_candidates().await? {
        if !retention_allows(&candidate, cutoff_ms) {
            continue;
        }
        for f in store.purge_series(&candidate.job).await? {
            purged += 1;
            if let Err(e) = spool.remove(&f) {
                tracing::warn!(error = %e, "cannot remove a purged spool file (swept at the next start)");
            }
        }
    }
    if purged > 0 {
        tracing::info!(files = purged, "spool files of finished jobs purged");
    }
    Ok(())
}

/// Bytes available to an unprivileged writer on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is a valid NUL-terminated string and `stat` a valid out-pointer.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// The kind of file system at `path`, by its magic number (Linux `statfs`).
fn file_system_kind(path: &Path) -> String {
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "unknown".into();
    };
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a zeroed struct for the kernel to fill.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return "unknown".into();
    }
    match stat.f_type as i64 {
        0xEF53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683E => "btrfs".into(),
        0x0102_1994 => "tmpfs".into(),
        0x6969 => "nfs".into(),
        0x00C3_6400 => "cephfs".into(),
        0x794C_7630 => "overlayfs".into(),
        0x6573_5546 => "fuse".into(),
        0xFF53_4D42 | 0xFE53_4D42 => "cifs/smb (no fsync guarantees: not supported)".into(),
        other => format!("type {other:#x}"),
    }
}

#[derive(Debug, Clone)]
pub struct Spool {
    root: PathBuf,
    /// This node's folder for files being written: `tmp/<node id>/` (nodes sharing the
    /// spool never sweep each other's).
    tmp: PathBuf,
    /// Files created ahead in `tmp/` by [`Spool::keep_ready`], so that a C-STORE does
    /// not wait for the file system to allocate an inode.
    ready: Arc<OnceLock<Mutex<mpsc::Receiver<Incoming>>>>,
}

/// The object files are spread over this many shard directories (`objects/00`..`ff`).
const SHARDS: usize = 256;

/// The file in `tmp/<node id>/` that the running node holds locked ([`TmpLock`]); it
/// names the process that holds or last held it.
const LOCK_FILE: &str = "lock";

/// This process's hold on its node's folder `tmp/<node id>/`: an exclusive `flock` on
/// `tmp/<node id>/lock`, released when dropped or when the process ends, however it
/// ends (on NFS v4 and CephFS the lock is the server's and holds across hosts). Only
/// the holder sweeps the folder ([`Spool::sweep`]).
#[derive(Debug)]
pub struct TmpLock {
    _file: File,
    tmp: PathBuf,
    previous: Option<String>,
}

impl TmpLock {
    /// The token of the process that held the folder before this one (written by
    /// [`Spool::lock_tmp`]) if it ran on this machine's running kernel: that process
    /// has stopped, since the lock was free. One that ran elsewhere is not named: a
    /// free lock proves nothing where a mount keeps locks local to each host (NFS with
    /// `nolock` or `local_lock`).
    pub fn previous(&self) -> Option<&str> {
        self.previous.as_deref()
    }
}

/// This kernel's boot id (Linux): the same for every process and container on this
/// machine until it reboots, which `flock` serialises whatever the file system.
fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    Some(id.trim().to_string()).filter(|id| !id.is_empty())
}

/// What a lock file says: "<boot id> <token>"; the token when the boot id is `ours`.
fn token_of_this_kernel<'a>(content: &'a str, ours: Option<&str>) -> Option<&'a str> {
    let (boot, token) = content.trim().split_once(' ')?;
    (Some(boot) == ours && !token.is_empty()).then_some(token)
}

impl Spool {
    /// Opens the spool for node `node_id`, creating `tmp/<node_id>/` and every
    /// `objects/<shard>/` (their entries made durable here, once, so that persisting a
    /// file only has its own directory to sync).
    pub fn open(root: &Path, node_id: &str) -> io::Result<Self> {
        let tmp = root.join("tmp").join(node_id);
        fs::create_dir_all(&tmp)?;
        let objects = root.join("objects");
        for shard in 0..SHARDS {
            fs::create_dir_all(objects.join(format!("{shard:02x}")))?;
        }
        let parent = match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        for dir in [&objects, root, parent] {
            File::open(dir)?.sync_all()?;
        }
        Ok(Self {
            root: root.to_path_buf(),
            tmp,
            ready: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file whose lock holds this node's folder: `tmp/<node id>/lock`.
    pub fn tmp_lock_path(&self) -> PathBuf {
        self.tmp.join(LOCK_FILE)
    }

    /// Takes this node's folder `tmp/<node id>/` for this process, recording `instance`
    /// (the process's token, without spaces) and this kernel's boot id in its lock
    /// file; `None` while another process holds it (a second node with the same node id
    /// on this spool).
    pub fn lock_tmp(&self, instance: &str) -> io::Result<Option<TmpLock>> {
        use std::io::{Read, Seek};
        use std::os::fd::AsRawFd;
        let path = self.tmp_lock_path();
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        // SAFETY: a valid open file descriptor; flock does not touch memory.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EWOULDBLOCK) => Ok(None),
                _ => Err(e),
            };
        }
        let mut previous = String::new();
        file.read_to_string(&mut previous)?;
        let boot = boot_id();
        let previous = token_of_this_kernel(&previous, boot.as_deref()).map(str::to_string);
        file.set_len(0)?;
        file.rewind()?;
        let unknown = "unknown-boot";
        write!(file, "{} {instance}", boot.as_deref().unwrap_or(unknown))?;
        file.sync_all()?;
        Ok(Some(TmpLock {
            _file: file,
            tmp: self.tmp.clone(),
            previous,
        }))
    }

    /// Keeps up to `count` empty files ready in `tmp/` for [`Spool::create`], made by a
    /// background thread that stops once every clone of this spool is gone. Call after
    /// [`Spool::sweep`], which removes whatever is in `tmp/`; only the first call counts.
    pub fn keep_ready(&self, count: usize) -> io::Result<()> {
        let (sender, receiver) = mpsc::sync_channel(count);
        if self.ready.set(Mutex::new(receiver)).is_err() {
            return Ok(());
        }
        let (root, tmp) = (self.root.clone(), self.tmp.clone());
        std::thread::Builder::new()
            .name("spool-ready".into())
            .spawn(move || {
                let mut failing = false;
                loop {
                    match Incoming::create(&root, &tmp) {
                        Ok(file) => {
                            if failing {
                                tracing::info!("spool files can be created ahead again");
                                failing = false;
                            }
                            // Fails once the spool is gone; the file is removed on drop.
                            if sender.send(file).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            // C-STOREs try on their own meanwhile and are refused if
                            // that fails too; one warning per failing spell.
                            if !failing {
                                tracing::warn!(error = %e, "cannot create spool files ahead");
                                failing = true;
                            }
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                }
            })?;
        Ok(())
    }

    /// Writes `bytes` durably and returns the spool-relative name. Blocking.
    pub fn write(&self, bytes: &[u8]) -> io::Result<String> {
        let mut incoming = self.create()?;
        incoming.write(bytes)?;
        incoming.persist()
    }

    /// A spool file in `tmp/` under a new internal id (one made ahead if there is
    /// one); see [`Incoming`].
    pub fn create(&self) -> io::Result<Incoming> {
        let ready = self.ready.get().and_then(|r| {
            r.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .try_recv()
                .ok()
        });
        match ready {
            Some(file) => Ok(file),
            None => Incoming::create(&self.root, &self.tmp),
        }
    }

    /// The full path of a spool-relative name made by [`Spool::write`] or [`Incoming`].
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether a spool file holds the content recorded for it: the SHA-256 of its data
    /// set, or of the whole file for rows recorded before data set checksums (0.1).
    /// A missing or unreadable file holds nothing. Blocking.
    pub fn holds(&self, name: &str, sha256: &str) -> bool {
        let Ok(bytes) = fs::read(self.path(name)) else {
            return false;
        };
        part10::content(&bytes).is_ok_and(|c| c.sha256 == sha256)
            || crate::checksum::sha256_hex(&bytes) == sha256
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
        free_bytes(&self.root)
    }

    /// Checks what the spool needs of its file system, the way a C-STORE uses it: a
    /// file written, fsynced, renamed into `objects/`, its directory fsynced, read back
    /// whole, removed; and `tmp/` on the same file system as `objects/` (a rename
    /// cannot cross file systems). Returns the file system's kind.
    pub fn probe(&self) -> io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let content = format!("segnode spool probe {}", uuid::Uuid::new_v4());
        let mut file = self.create()?;
        file.write(content.as_bytes())?;
        let name = file.persist()?;
        let back = fs::read(self.path(&name));
        fs::remove_file(self.path(&name))?;
        if back? != content.as_bytes() {
            return Err(io::Error::other(
                "a file renamed into objects/ read back different",
            ));
        }
        if fs::metadata(&self.tmp)?.dev() != fs::metadata(self.root.join("objects"))?.dev() {
            return Err(io::Error::other(
                "tmp/ and objects/ are on different file systems: renames would fail",
            ));
        }
        Ok(file_system_kind(&self.root))
    }

    /// Removes this node's temporary files (the caller holds its folder: `held`), and
    /// the files an older version left directly in `tmp/` and the objects not in
    /// `referenced` that were last modified at least `min_age` ago (on a spool that
    /// other nodes share, an object is renamed into place moments before its row
    /// commits); returns how many. Other nodes' folders are never read.
    pub fn sweep(
        &self,
        held: &TmpLock,
        referenced: &HashSet<String>,
        min_age: Duration,
    ) -> io::Result<usize> {
        debug_assert_eq!(held.tmp, self.tmp, "the lock of this spool's node folder");
        let old_enough = |entry: &fs::DirEntry| -> io::Result<bool> {
            let modified = entry.metadata()?.modified()?;
            Ok(modified.elapsed().unwrap_or_default() >= min_age)
        };
        let mut removed = 0;
        for entry in fs::read_dir(&self.tmp)? {
            let entry = entry?;
            if entry.file_type()?.is_file() && entry.file_name() != LOCK_FILE {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            if entry.file_type()?.is_file() && old_enough(&entry)? {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
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
                if !referenced.contains(&name) && old_enough(&entry)? {
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
    /// The spool-relative name it will have once persisted.
    name: String,
    file: File,
    tmp: PathBuf,
    target: PathBuf,
}

impl Incoming {
    fn create(root: &Path, tmp_dir: &Path) -> io::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let tmp = tmp_dir.join(format!("{id}.part"));
        let file = File::create(&tmp)?;
        let name = format!("objects/{}/{id}.dcm", &id[..2]);
        Ok(Self {
            target: root.join(&name),
            name,
            file,
            tmp,
        })
    }

    /// The spool-relative name the file gets from [`Incoming::persist`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Appends bytes (to the page cache; durability comes with `persist`).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)
    }

    /// fsync, rename into `objects/<shard>/`, fsync that directory; returns the name.
    /// Blocking.
    pub fn persist(mut self) -> io::Result<String> {
        self.file.sync_all()?;
        fs::rename(&self.tmp, &self.target)?;
        let dir = self
            .target
            .parent()
            .expect("objects/<shard>/<id>.dcm has a parent");
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
            let _ = fs::remove_file(&self.target);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_is_durable_named_internally_and_swept_when_unreferenced() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "node").unwrap();
        let a = spool.write(b"first").unwrap();
        let b = spool.write(b"second").unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with("objects/") && a.ends_with(".dcm"));
        assert_eq!(fs::read(spool.path(&a)).unwrap(), b"first");
        fs::write(dir.path().join("tmp/leftover.part"), b"x").unwrap();
        let held = spool.lock_tmp("me").unwrap().unwrap();
        let removed = spool
            .sweep(&held, &HashSet::from([a.clone()]), Duration::ZERO)
            .unwrap();
        assert_eq!(removed, 2);
        assert!(spool.path(&a).exists());
        assert!(!spool.path(&b).exists());
        spool.remove(&b).unwrap();
        assert!(spool.free_bytes().unwrap() > 0);
    }

    #[test]
    fn an_incoming_file_is_written_in_pieces_and_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "node").unwrap();
        let mut kept = spool.create().unwrap();
        let name = kept.name().to_string();
        kept.write(b"DICM ").unwrap();
        kept.write(b"data").unwrap();
        assert!(!spool.path(&name).exists(), "not visible before persist");
        assert_eq!(kept.persist().unwrap(), name);
        assert_eq!(fs::read(spool.path(&name)).unwrap(), b"DICM data");
        let whole_file = "fe79fad15774562682bf518419c10044a5b487ad66a6cbcb47a3b6c26bfbef2c";
        assert!(spool.holds(&name, whole_file));
        assert!(!spool.holds(&name, "0"));
        assert!(!spool.holds("objects/00/missing", whole_file));
        let mut dropped = spool.create().unwrap();
        dropped.write(b"partial").unwrap();
        drop(dropped);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp/node")).unwrap().count(),
            0
        );
    }

    /// Polls until `tmp/node/` holds a count that satisfies `ok` (the ready thread is
    /// asynchronous), failing after 10 s.
    fn wait_for_tmp(dir: &Path, ok: impl Fn(usize) -> bool) -> usize {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let n = fs::read_dir(dir.join("tmp/node")).unwrap().count();
            if ok(n) || std::time::Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn files_made_ahead_are_handed_out_and_removed_with_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path(), "node").unwrap();
        assert!(dir.path().join("objects/00").is_dir() && dir.path().join("objects/ff").is_dir());
        spool.keep_ready(3).unwrap();
        spool.keep_ready(5).unwrap(); // only the first call counts
        // Three wait in the channel and the thread holds a fourth it cannot hand over.
        assert_eq!(wait_for_tmp(dir.path(), |n| n >= 4), 4);
        let mut file = spool.create().unwrap();
        file.write(b"made ahead").unwrap();
        let name = file.persist().unwrap();
        assert_eq!(fs::read(spool.path(&name)).unwrap(), b"made ahead");
        assert_eq!(wait_for_tmp(dir.path(), |n| n >= 4), 4, "refilled");
        let held = spool.create().unwrap();
        drop(spool);
        assert_eq!(
            wait_for_tmp(dir.path(), |n| n == 1),
            1,
            "only the file still held"
        );
        drop(held);
        assert_eq!(
            fs::read_dir(dir.path().join("tmp/node")).unwrap().count(),
            0
        );
        assert!(dir.path().join(&name).exists());
    }
    #[test]
    fn a_node_folder_is_held_by_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let first = Spool::open(dir.path(), "n").unwrap();
        let second = Spool::open(dir.path(), "n").unwrap();
        let held = first.lock_tmp("first").unwrap().expect("a free folder");
        assert_eq!(held.previous(), None);
        assert!(
            second.lock_tmp("second").unwrap().is_none(),
            "a second process with the same node id"
        );
        let other = Spool::open(dir.path(), "other").unwrap();
        assert!(
            other.lock_tmp("other").unwrap().is_some(),
            "another node id"
        );
        drop(held); // the first process stops (or dies)
        let held = second.lock_tmp("second").unwrap().expect("free again");
        assert_eq!(held.previous(), Some("first"));
        drop(held);
        // A holder on another machine's kernel is not named: its lock may not have
        // reached this one.
        fs::write(first.tmp_lock_path(), "another-boot elsewhere").unwrap();
        let held = first.lock_tmp("third").unwrap().unwrap();
        assert_eq!(held.previous(), None);
    }

    #[test]
    fn a_lock_file_names_a_holder_of_this_kernel_only() {
        assert_eq!(token_of_this_kernel("b1 t1\n", Some("b1")), Some("t1"));
        assert_eq!(token_of_this_kernel("b2 t1", Some("b1")), None);
        assert_eq!(token_of_this_kernel("b1 t1", None), None);
        assert_eq!(token_of_this_kernel("t1", Some("b1")), None);
        assert_eq!(token_of_this_kernel("", Some("b1")), None);
        assert!(boot_id().is_some(), "Linux names its boot");
    }

    fn set_age(path: &Path, age: Duration) {
        let file = File::options().write(true).open(path).unwrap();
        file.set_modified(std::time::SystemTime::now() - age)
            .unwrap();
    }

    /// Node `b` starts on a spool where node `a` is running: `b`'s sweep removes its
    /// own leftovers and what is old and unreferenced in the shared folders, and none
    /// of `a`'s files: those made ahead, one being written, an object just persisted
    /// whose row is not yet committed.
    #[test]
    fn the_sweep_leaves_a_live_second_nodes_files_alone() {
        let dir = tempfile::tempdir().unwrap();
        let min_age = Duration::from_secs(600);
        let a = Spool::open(dir.path(), "a").unwrap();
        let _a_held = a.lock_tmp("a").unwrap().unwrap();
        a.keep_ready(3).unwrap();
        let tmp_a = dir.path().join("tmp/a");
        let count = |d: &Path| fs::read_dir(d).unwrap().count();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count(&tmp_a) < 5 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut writing = a.create().unwrap();
        writing.write(b"half an instance").unwrap();
        let just_persisted = a.write(b"an instance").unwrap();
        let old_object = a.write(b"never acknowledged").unwrap();
        set_age(&a.path(&old_object), Duration::from_secs(3600));
        let a_files: Vec<PathBuf> = files_under(dir.path())
            .into_iter()
            .filter(|f| *f != a.path(&old_object))
            .collect();
        let old_tmp = dir.path().join("tmp/old.part");
        fs::write(&old_tmp, b"x").unwrap();
        set_age(&old_tmp, Duration::from_secs(3600));
        let fresh_tmp = dir.path().join("tmp/fresh.part");
        fs::write(&fresh_tmp, b"x").unwrap();

        let b = Spool::open(dir.path(), "b").unwrap();
        fs::write(dir.path().join("tmp/b/leftover.part"), b"x").unwrap();
        let b_held = b.lock_tmp("b").unwrap().unwrap();
        let removed = b.sweep(&b_held, &HashSet::new(), min_age).unwrap();
        assert_eq!(removed, 3, "b's leftover, the old object, the old tmp file");
        assert!(!a.path(&old_object).exists() && !old_tmp.exists());
        assert!(fresh_tmp.exists());
        assert!(dir.path().join("tmp/b/lock").exists());
        for f in &a_files {
            assert!(f.exists(), "{} of the live node a was removed", f.display());
        }
        assert!(a.path(&just_persisted).exists());
        assert_eq!(writing.persist().unwrap().len(), just_persisted.len());
    }

    fn files_under(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
        out
    }
}
