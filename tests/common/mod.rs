//! Test harness: a node on port 0 with its own temporary data directory, real DCMTK
//! peers run as child processes, synthetic DICOM built in code, and the shared real CT
//! data found through `SEGNODE_TEST_DATA` (default `../shared/data`).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod orthanc;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use segnode::config::Config;
#[allow(unused_imports)] // each test crate uses some of them
pub use segnode::store::{AuditKind, JobId, JobState, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

pub use segnode::dicom::uid::CT_IMAGE_STORAGE as CT_STORAGE;
pub use segnode::dicom::uid::ts::EXPLICIT_VR_LE as EXPLICIT_LE;
pub const SECONDARY_CAPTURE: &str = "1.2.840.10008.5.1.4.1.1.7";
pub const MR_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.4";

/// The shared real CT data. Fails plainly when it is absent.
pub fn shared_data() -> PathBuf {
    let dir = std::env::var_os("SEGNODE_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data"));
    assert!(
        dir.join("ct-abdomen-j2k").is_dir(),
        "this test needs the shared CT data at {} (set SEGNODE_TEST_DATA to its folder)",
        dir.display()
    );
    dir
}

pub fn real_series() -> PathBuf {
    shared_data().join("ct-abdomen-j2k")
}

/// A DCMTK tool by its full path (pip's pynetdicom installs a `storescu` that would
/// shadow DCMTK's on PATH). Fails plainly when DCMTK is not installed.
pub fn dcmtk(tool: &str) -> PathBuf {
    let path = Path::new("/usr/bin").join(tool);
    assert!(
        path.exists(),
        "{} not found: install DCMTK (apt-get install dcmtk), or run .ci/run",
        path.display()
    );
    path
}

/// A database line for the `[node]` table of a test node with data directory
/// `data_dir`: none (SQLite in the data directory), or, when `SEGNODE_TEST_POSTGRES`
/// names a PostgreSQL server, the data directory's own database there (the suite's
/// PostgreSQL run; the same for every configuration of that data directory).
pub fn test_database(data_dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let Ok(server) = std::env::var("SEGNODE_TEST_POSTGRES") else {
        return String::new();
    };
    let mut hash = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut hash);
    let name = format!("segnode_{:016x}", hash.finish());
    format!("database = \"{}\"", ensure_database(&server, &name))
}

/// Creates a database with a fresh name on the PostgreSQL server at `server` (a
/// superuser's URL); returns its URL.
pub fn create_database(server: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let name = format!(
        "segnode_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    );
    ensure_database(server, &name)
}

/// Database `name` on the server at `server`, created unless it exists; its URL.
fn ensure_database(server: &str, name: &str) -> String {
    let exists = psql(
        server,
        &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'"),
    );
    if exists.trim() != "1" {
        psql(server, &format!("CREATE DATABASE {name}"));
    }
    let (base, _) = server.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// Runs one SQL statement with `psql` on `server`; returns its unaligned output.
pub fn psql(server: &str, sql: &str) -> String {
    let out = std::process::Command::new("psql")
        .args([server, "-v", "ON_ERROR_STOP=1", "-qtAc", sql])
        .output()
        .expect("psql (PostgreSQL's client) is installed");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `scripts/postgres COMMAND DIR`; its standard output.
fn postgres_script(command: &str, dir: &Path) -> std::io::Result<String> {
    let out =
        std::process::Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/postgres"))
            .arg(command)
            .arg(dir)
            .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A PostgreSQL server of Debian's package in a temporary folder on a free port
/// (`scripts/postgres`), stopped when dropped.
pub struct Postgres {
    pub url: String,
    dir: tempfile::TempDir,
}

impl Postgres {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = postgres_script("start", dir.path())
            .unwrap_or_else(|e| panic!("cannot start PostgreSQL: {e}"));
        Self { url, dir }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = postgres_script("stop", self.dir.path());
    }
}

/// `segnode serve` with the configuration file `config`, its log appended to `log`.
pub fn spawn_node(config: &Path, log: &Path) -> std::process::Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(["--config", config.to_str().unwrap(), "serve"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

/// Waits (20 s at most) until a node answers C-ECHO on `port`.
pub async fn wait_until_serving(port: u16) {
    use segnode::deliver::{self, Association, PeerAddress, ScuTimeouts};
    let peer: PeerAddress = format!("SEGNODE@127.0.0.1:{port}").parse().unwrap();
    let calling = segnode::dicom::AeTitle::parse("TESTSCU").unwrap();
    let up = wait_for(Duration::from_secs(20), || async {
        let mut a = Association::connect(
            &peer,
            &calling,
            &deliver::echo_pairs(),
            ScuTimeouts::default(),
        )
        .await
        .ok()?;
        let ok = a.echo().await.ok()?.is_success();
        a.release().await.ok()?;
        ok.then_some(())
    })
    .await;
    assert!(up.is_some(), "node did not start serving on port {port}");
}

/// The node's configuration for a test: port 0, temporary paths, stable age 1 s.
pub fn test_config(data_dir: &Path, extra_dicom: &str) -> String {
    format!(
        r#"
[node]
ae_title = "SEGNODE"
data_dir = "{}"
{}
[dicom]
listen = "127.0.0.1:0"
artim_timeout_seconds = 2
dimse_timeout_seconds = 5
{extra_dicom}
[[dicom.allowed_peers]]
ae_title = "STORESCU"
[[dicom.allowed_peers]]
ae_title = "ECHOSCU"
[[dicom.allowed_peers]]
ae_title = "TESTSCU"
[[dicom.allowed_peers]]
ae_title = "ORTHANC"
host = "127.0.0.1"
[series]
stable_seconds = 2
[eligibility]
min_slices = 10
[http]
listen = "127.0.0.1:0"
[model]
path = "{}"
intra_threads = 1
"#,
        data_dir.display(),
        test_database(data_dir),
        test_model().display()
    )
}

/// A `[[destinations]]` table: `ae_title` on loopback at `port`, named after it in
/// lower case, receiving the results of series sent by `route_from`; `extra` adds keys.
pub fn destination(ae_title: &str, port: u16, route_from: &str, extra: &str) -> String {
    format!(
        "\n[[destinations]]\nname = \"{}\"\nae_title = \"{ae_title}\"\nhost = \"127.0.0.1\"\nport = {port}\nroute_from = [\"{route_from}\"]\n{extra}",
        ae_title.to_lowercase()
    )
}

/// The tiny test cascade committed in onnx/test-cascade.
pub fn test_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("onnx/test-cascade")
}

/// The test cascade's label type lines in its manifest, to recode its labels with.
pub const SOFT_TISSUE_TYPE: &str =
    r#"type = { scheme = "SCT", value = "87784001", meaning = "Soft tissue" }"#;
pub const BONE_TYPE: &str = r#"type = { scheme = "SCT", value = "272673000", meaning = "Bone" }"#;

/// The test cascade copied to `dir/model` with its soft tissue label coded by the
/// manifest lines `soft_tissue` and its bone label by `bone` (other structures).
pub fn recoded_test_model(dir: &Path, soft_tissue: &str, bone: &str) -> PathBuf {
    let model = dir.join("model");
    std::fs::create_dir(&model).unwrap();
    for f in ["stage1.onnx", "stage2.onnx"] {
        std::fs::copy(test_model().join(f), model.join(f)).unwrap();
    }
    let manifest = std::fs::read_to_string(test_model().join("model.toml"))
        .unwrap()
        .replace(SOFT_TISSUE_TYPE, soft_tissue)
        .replace(BONE_TYPE, bone);
    std::fs::write(model.join("model.toml"), manifest).unwrap();
    model
}

pub struct TestNode {
    pub addr: SocketAddr,
    /// The DICOM TLS listener, when the configuration has one.
    pub tls_addr: Option<SocketAddr>,
    pub http: SocketAddr,
    pub config: std::sync::Arc<Config>,
    pub store: Store,
    pub dir: tempfile::TempDir,
    shutdown: CancellationToken,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestNode {
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// Starts a node; `extra_dicom` adds keys to its `[dicom]` table.
    pub async fn start_with(extra_dicom: &str) -> Self {
        Self::start_with_tail(extra_dicom, "").await
    }

    /// Starts a node with `tail` appended to its configuration (more tables).
    pub async fn start_with_tail(extra_dicom: &str, tail: &str) -> Self {
        Self::start_text(|data| format!("{}\n{tail}", test_config(data, extra_dicom))).await
    }

    /// Starts a node with the configuration `make` writes for its data directory.
    pub async fn start_text(make: impl FnOnce(&Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = make(&dir.path().join("data"));
        let config = Config::from_toml(&text, &BTreeMap::new()).unwrap();
        let shared = std::sync::Arc::new(config.clone());
        let shutdown = CancellationToken::new();
        let node = segnode::node::start(config, shutdown.clone())
            .await
            .unwrap();
        let addr = node.dicom_addr;
        let tls_addr = node.dicom_tls_addr;
        let http = node.http_addr;
        let store = node.store.clone();
        let handle = tokio::spawn(node.wait());
        Self {
            addr,
            tls_addr,
            http,
            config: shared,
            store,
            dir,
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn spool(&self) -> PathBuf {
        self.config.spool_dir()
    }

    /// A receiver over the node's store and spool, for an API router of its own.
    pub fn receiver(&self) -> std::sync::Arc<segnode::Receiver> {
        let spool = segnode::Spool::open(&self.spool(), &self.config.membership.node_id).unwrap();
        std::sync::Arc::new(segnode::Receiver {
            config: self.config.clone(),
            store: self.store.clone(),
            spool,
        })
    }

    /// The API token the node created in its data directory.
    pub fn token(&self) -> String {
        std::fs::read_to_string(&self.config.http.token_file)
            .unwrap()
            .trim()
            .to_string()
    }

    /// Starts stopping the node (what SIGTERM does) without waiting for it.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// Stops the node gracefully and waits for it; returns its directory, which lives
    /// as long as the caller keeps it.
    pub async fn stop(mut self) -> tempfile::TempDir {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
        std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap())
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Runs a DCMTK tool; returns (success, combined output).
pub async fn run_tool(tool: &str, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(dcmtk(tool))
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// DCMTK `echoscu` calling the node as ECHOSCU.
pub async fn echoscu(port: &str) -> (bool, String) {
    run_tool(
        "echoscu",
        &["-aet", "ECHOSCU", "-aec", "SEGNODE", "127.0.0.1", port],
    )
    .await
}

/// `storescu` sending files or folders (`+sd +r`) unchanged: `-xv` proposes JPEG 2000
/// Lossless and every uncompressed syntax, so both kinds go as they are.
pub async fn storescu(port: &str, paths: &[&Path]) -> (bool, String) {
    storescu_as("STORESCU", port, paths).await
}

/// [`storescu`] with `calling_ae` as its AE title.
pub async fn storescu_as(calling_ae: &str, port: &str, paths: &[&Path]) -> (bool, String) {
    let mut args = vec![
        "-aet",
        calling_ae,
        "-aec",
        "SEGNODE",
        "+sd",
        "+r",
        "-xv",
        "127.0.0.1",
        port,
    ];
    let owned: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    args.extend(owned.iter().map(String::as_str));
    run_tool("storescu", &args).await
}

/// Polls `check` until it returns Some or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A synthetic axial CT series of `slices` slices of `size`x`size` 16-bit pixels,
/// written as Part 10 files (Explicit VR Little Endian) into `dir`. Returns the paths.
pub fn synthetic_series(dir: &Path, series_no: u32, slices: u32, size: u16) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let study = format!("1.2.826.0.1.3680043.10.1.{series_no}");
    let series = format!("{study}.1");
    (0..slices)
        .map(|i| {
            let sop = format!("{series}.{}", i + 1);
            let obj = ct_slice(&study, &series, &sop, i, size);
            let path = dir.join(format!("slice{i:04}.dcm"));
            write_part10(obj, CT_STORAGE, &sop, &path);
            path
        })
        .collect()
}

/// One CT slice data set.
pub fn ct_slice(study: &str, series: &str, sop: &str, index: u32, size: u16) -> InMemDicomObject {
    let mut o = InMemDicomObject::new_empty();
    let mut put = |tag, vr, value: PrimitiveValue| o.put(DataElement::new(tag, vr, value));
    put(tags::SOP_CLASS_UID, VR::UI, CT_STORAGE.into());
    put(tags::SOP_INSTANCE_UID, VR::UI, sop.into());
    put(tags::STUDY_INSTANCE_UID, VR::UI, study.into());
    put(tags::SERIES_INSTANCE_UID, VR::UI, series.into());
    put(
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        format!("{study}.9").into(),
    );
    put(tags::MODALITY, VR::CS, "CT".into());
    put(tags::PATIENT_ID, VR::LO, "SYNTH-0001".into());
    put(tags::PATIENT_NAME, VR::PN, "Synthetic^Patient".into());
    put(tags::ACCESSION_NUMBER, VR::SH, "SYNACC1".into());
    put(tags::SERIES_DESCRIPTION, VR::LO, "Abdomen synthetic".into());
    put(tags::IMAGE_TYPE, VR::CS, "ORIGINAL\\PRIMARY\\AXIAL".into());
    put(
        tags::INSTANCE_NUMBER,
        VR::IS,
        format!("{}", index + 1).into(),
    );
    put(
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        "1\\0\\0\\0\\1\\0".into(),
    );
    put(
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        format!("-100\\-100\\{}", f64::from(index) * 3.0).into(),
    );
    put(tags::SLICE_THICKNESS, VR::DS, "3".into());
    put(tags::PIXEL_SPACING, VR::DS, "0.8\\0.8".into());
    put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
    put(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2".into(),
    );
    put(tags::ROWS, VR::US, PrimitiveValue::from(size));
    put(tags::COLUMNS, VR::US, PrimitiveValue::from(size));
    put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
    put(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16));
    put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16));
    put(
        tags::PIXEL_REPRESENTATION,
        VR::US,
        PrimitiveValue::from(0u16),
    );
    put(tags::RESCALE_INTERCEPT, VR::DS, "-1024".into());
    put(tags::RESCALE_SLOPE, VR::DS, "1".into());
    let pixels: Vec<u16> = (0..u32::from(size) * u32::from(size))
        .map(|p| ((p + index * 7) % 2000) as u16)
        .collect();
    put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into()));
    o
}

/// Writes a data set as a Part 10 file whose meta says `sop_class`/`sop_instance`.
pub fn write_part10(obj: InMemDicomObject, sop_class: &str, sop_instance: &str, path: &Path) {
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(sop_class)
                .media_storage_sop_instance_uid(sop_instance)
                .transfer_syntax(EXPLICIT_LE),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
}

/// A minimal Secondary Capture object (what a PACS may route along with a CT study).
pub fn secondary_capture(path: &Path) {
    let mut o = ct_slice(
        "1.2.826.0.1.3680043.10.9",
        "1.2.826.0.1.3680043.10.9.7",
        "1.2.826.0.1.3680043.10.9.7.1",
        0,
        8,
    );
    o.put(DataElement::new(
        tags::SOP_CLASS_UID,
        VR::UI,
        PrimitiveValue::from(SECONDARY_CAPTURE),
    ));
    o.put(DataElement::new(
        tags::MODALITY,
        VR::CS,
        PrimitiveValue::from("OT"),
    ));
    write_part10(o, SECONDARY_CAPTURE, "1.2.826.0.1.3680043.10.9.7.1", path);
}

/// Every regular file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// The files a node's spool holds, leaving out the empty files it keeps ready in
/// `tmp/` for the next C-STOREs (a partial write there would not be empty) and the
/// lock it holds on its `tmp/<node id>/`.
pub fn spooled_files(spool: &Path) -> Vec<PathBuf> {
    files_under(spool)
        .into_iter()
        .filter(|f| !is_ready_file(f) && !is_node_lock(f))
        .collect()
}

/// `tmp/<node id>/lock`: the running node's hold on its folder.
pub fn is_node_lock(f: &Path) -> bool {
    let tmp = f.parent().and_then(Path::parent);
    tmp.and_then(Path::file_name) == Some("tmp".as_ref()) && f.file_name() == Some("lock".as_ref())
}

/// An empty file in the spool's `tmp/`: made ahead for an incoming C-STORE.
pub fn is_ready_file(f: &Path) -> bool {
    // tmp/<node id>/<id>.part, empty.
    let tmp = f.parent().and_then(Path::parent);
    tmp.and_then(Path::file_name) == Some("tmp".as_ref())
        && std::fs::metadata(f).is_ok_and(|m| m.len() == 0)
}

/// The spool files of the jobs' results: each job with a SEG also has its measurement
/// report and its key images.
pub fn result_files(jobs: &[segnode::store::JobRow]) -> usize {
    jobs.iter()
        .filter(|j| j.seg_sop_instance_uid.is_some())
        .map(|j| {
            let summary: serde_json::Value =
                serde_json::from_str(j.summary.as_deref().unwrap_or("{}")).unwrap();
            2 + summary["key_images"].as_array().map_or(0, Vec::len)
        })
        .sum()
}

/// Every job, newest first.
pub async fn all_jobs(store: &Store) -> Vec<segnode::store::JobRow> {
    let query = segnode::store::JobQuery {
        limit: 10_000,
        ..segnode::store::JobQuery::default()
    };
    store.jobs(&query).await.unwrap()
}

/// Waits until at least `n` jobs exist and none is queued or running; returns them,
/// newest first.
pub async fn settled_jobs(store: &Store, n: usize) -> Vec<segnode::store::JobRow> {
    wait_for(Duration::from_secs(30), || async {
        let jobs = all_jobs(store).await;
        let busy = jobs
            .iter()
            .any(|j| j.state == JobState::Queued || j.state == JobState::Running);
        (jobs.len() >= n && !busy).then_some(jobs)
    })
    .await
    .unwrap_or_else(|| panic!("expected {n} settled jobs"))
}

/// A free TCP port on loopback (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed (and reaped) when dropped: no peer outlives its test.
pub struct KillOnDrop(pub std::process::Child);

impl KillOnDrop {
    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// DCMTK storescp on `port`, writing into `dir`, killed on drop.
pub struct StoreScp(pub KillOnDrop);

impl StoreScp {
    pub fn start(port: u16, dir: &Path, extra: &[&str]) -> Self {
        let child = std::process::Command::new(dcmtk("storescp"))
            .args(["-aet", "PACS", "-od"])
            .arg(dir)
            .args(extra)
            .arg(port.to_string())
            .env("TCP_NODELAY", "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it listens.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Self(KillOnDrop(child))
    }

    pub fn stop(mut self) {
        self.0.kill();
    }
}

/// A synthetic series with a soft-tissue body (a disk at 100 HU in air), which the test
/// cascade segments: `slices` slices of `size`x`size`.
pub fn tissue_series(dir: &Path, series_no: u32, slices: u32, size: u16) -> Vec<PathBuf> {
    let files = synthetic_series(dir, series_no, slices, size);
    let study = format!("1.2.826.0.1.3680043.10.1.{series_no}");
    let series = format!("{study}.1");
    let c = f64::from(size) / 2.0;
    let pixels: Vec<u16> = (0..u32::from(size) * u32::from(size))
        .map(|p| {
            let (y, x) = (
                f64::from(p / u32::from(size)),
                f64::from(p % u32::from(size)),
            );
            if (y - c).hypot(x - c) < 0.45 * f64::from(size) {
                1124
            } else {
                0
            }
        })
        .collect();
    for (i, f) in files.iter().enumerate() {
        let sop = format!("{series}.{}", i + 1);
        let mut obj = ct_slice(&study, &series, &sop, i as u32, size);
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(pixels.clone().into()),
        ));
        write_part10(obj, CT_STORAGE, &sop, f);
    }
    files
}

/// `segnode jobs --json` with the configuration file `config`.
pub fn jobs_json(config: &Path) -> serde_json::Value {
    serde_json::from_slice(&segnode_ok([
        "--config",
        config.to_str().unwrap(),
        "jobs",
        "--json",
    ]))
    .unwrap()
}

/// Runs the `segnode` binary with `args`, fails the test (with its stderr) unless it
/// succeeds, and returns its stdout.
pub fn segnode_ok<S: AsRef<std::ffi::OsStr>>(args: impl IntoIterator<Item = S>) -> Vec<u8> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_segnode"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The project's Python environment (scripts/setup makes it).
pub fn venv_python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} missing: run scripts/setup",
        python.display()
    );
    python
}

/// dciodvfy's error lines (the bar: none).
pub fn dciodvfy_errors(file: &Path) -> Vec<String> {
    let tool = Path::new("/usr/bin/dciodvfy");
    assert!(
        tool.exists(),
        "dciodvfy not found: install dicom3tools (scripts/setup)"
    );
    let o = std::process::Command::new(tool).arg(file).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    text.lines()
        .filter(|l| l.starts_with("Error"))
        .map(String::from)
        .collect()
}

/// Reads a SEG back with highdicom and dcmqi (scripts/check_seg.py) onto its source
/// series; fails unless both give `labels` voxel for voxel. Returns the report.
pub fn check_seg(seg: &Path, series: &Path, labels: &Path) -> serde_json::Value {
    let (ok, report) = script_json("check_seg.py", &[seg, series, labels, "--dcmqi".as_ref()]);
    assert!(ok, "SEG does not read back equal: {report}");
    report
}

/// One of the project's `scripts/`.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// Runs one of `scripts/` in the `.venv` with `args`; returns whether it succeeded and
/// the JSON report it printed.
pub fn script_json(name: &str, args: &[&Path]) -> (bool, serde_json::Value) {
    let o = std::process::Command::new(venv_python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap();
    let report = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|_| panic!("{name} failed: {}", String::from_utf8_lossy(&o.stderr)));
    (o.status.success(), report)
}

/// A CA and certificates it signs, in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    pub fn new() -> Self {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
        };
        pki.self_signed("ca", "segnode test CA", None);
        pki
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let tool = Path::new("/usr/bin/openssl");
        assert!(tool.exists(), "openssl not found (apt-get install openssl)");
        let out = std::process::Command::new(tool)
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn self_signed(&self, name: &str, common_name: &str, extension: Option<&str>) {
        let (key, crt, subject) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("/CN={common_name}"),
        );
        let mut args = vec![
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", &subject,
        ];
        args.extend(extension.map(|e| ["-addext", e]).into_iter().flatten());
        args.extend(["-keyout", &key, "-out", &crt]);
        self.openssl(&args);
    }

    /// `name.key` and `name.crt` for `subject_alt_name` (e.g. "DNS:pacs.test"), signed
    /// by this CA, or self-signed with `self_signed`.
    pub fn issue(&self, name: &str, subject_alt_name: &str, self_signed: bool) {
        let ext = format!("subjectAltName={subject_alt_name}");
        if self_signed {
            return self.self_signed(name, name, Some(&ext));
        }
        let (key, crt, csr) = (
            format!("{name}.key"),
            format!("{name}.crt"),
            format!("{name}.csr"),
        );
        let subject = format!("/CN={name}");
        self.openssl(&[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", &subject, "-addext", &ext, "-keyout",
            &key, "-out", &csr,
        ]);
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-copy_extensions",
            "copy",
            "-out",
            &crt,
        ]);
    }

    /// A `[dicom.tls]` table: the node presents `name`'s certificate and requires
    /// client certificates from this CA.
    pub fn dicom_tls(&self, name: &str) -> String {
        format!(
            "[dicom.tls]\nlisten = \"127.0.0.1:0\"\ncert_file = {:?}\nkey_file = {:?}\nca_file = {:?}\nrequire_client_cert = true\n",
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
            self.path("ca.crt")
        )
    }

    /// A destination's TLS keys: this CA trusted, `name`'s certificate presented.
    pub fn destination_tls(&self, name: &str) -> String {
        format!(
            "tls = true\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n",
            self.path("ca.crt"),
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key"))
        )
    }
}

/// Opens a raw association (a CT context, Explicit VR Little Endian, 16 KiB PDUs) and
/// returns the socket.
pub async fn raw_association(node: &TestNode) -> tokio::net::TcpStream {
    let mut socket = tokio::net::TcpStream::connect(node.addr).await.unwrap();
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "TESTSCU".into(),
        called_ae_title: "SEGNODE".into(),
        application_context_name: segnode::dicom::uid::APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: CT_STORAGE.into(),
            transfer_syntaxes: vec![EXPLICIT_LE.into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::pdu::write_pdu(&mut bytes, &rq).unwrap();
    socket.write_all(&bytes).await.unwrap();
    let mut header = [0u8; 6];
    socket.read_exact(&mut header).await.unwrap();
    assert_eq!(header[0], 0x02, "expected A-ASSOCIATE-AC");
    let len = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
    let mut body = vec![0u8; len];
    socket.read_exact(&mut body).await.unwrap();
    socket
}

/// Reads one PDU: (type, body).
pub async fn read_pdu(socket: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
    let mut header = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), socket.read_exact(&mut header))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let mut body = vec![0u8; u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize];
    socket.read_exact(&mut body).await.unwrap();
    (header[0], body)
}

/// Runs scripts/check_key_image.py on a key image (DICOM or PNG) against the label map
/// `segnode run` wrote in `output`.
pub fn check_key_image(image: &Path, output: &Path, slice: u64) -> serde_json::Value {
    let slice = PathBuf::from(slice.to_string());
    let labels = [output.join("labels.u8"), output.join("labels.json")];
    let (ok, report) = script_json(
        "check_key_image.py",
        &[image, &labels[0], &labels[1], &slice],
    );
    assert!(ok, "{report}");
    report
}

/// Dice between label `ours` of `a` and label `theirs` of `b` (label maps of one grid).
/// Two maps that both lack the label agree: 1.
pub fn dice(a: &[u8], ours: u8, b: &[u8], theirs: u8) -> f64 {
    assert_eq!(a.len(), b.len(), "label maps of different grids");
    let (mut both, mut x, mut y) = (0u64, 0u64, 0u64);
    for (p, q) in a.iter().zip(b) {
        let (p, q) = (*p == ours, *q == theirs);
        both += u64::from(p && q);
        x += u64::from(p);
        y += u64::from(q);
    }
    if x + y == 0 {
        1.0
    } else {
        2.0 * both as f64 / (x + y) as f64
    }
}

/// The test configuration for a data directory under `dir`, with `model` added to its
/// `[model]` table and `tail` after it.
pub fn configured(dir: &Path, model: &str, tail: &str) -> PathBuf {
    let file = dir.join("segnode.toml");
    let text = format!("{}{model}\n{tail}", test_config(&dir.join("data"), ""));
    std::fs::write(&file, text).unwrap();
    file
}

/// `segnode run` (with `config`, if given) of `model` on one series folder; the
/// summary of the series.
pub fn run_offline(
    config: Option<&Path>,
    model: &Path,
    series: &Path,
    out: &Path,
) -> serde_json::Value {
    let mut args = vec!["run".as_ref()];
    if let Some(config) = config {
        args.extend(["--config".as_ref(), config.as_os_str()]);
    }
    args.extend([
        "--model".as_ref(),
        model.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        series.as_os_str(),
    ]);
    let summary: serde_json::Value = serde_json::from_slice(&segnode_ok(args)).unwrap();
    summary["series"][0].clone()
}

/// The test cascade's soft tissue colour (its manifest's `color`), as the viewer draws it.
pub const SOFT_TISSUE: &str = "230,150,120";

/// Runs scripts/view_seg.py on `url`; its JSON report, after asserting it passed.
pub fn view_seg(url: &str, screenshot: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(venv_python())
        .arg(script("view_seg.py"))
        .arg(url)
        .arg("--screenshot")
        .arg(screenshot)
        .args(["--timeout", "150"])
        .args(args)
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "view_seg.py printed no report ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out.status.success(),
        "the SEG is not drawn over the image: {report:#}"
    );
    report
}

/// A copy of the installed viewer (its files linked, not copied) whose configuration
/// reads the DICOMweb service at `root` instead of the node's own.
pub fn viewer_reading(installed: &Path, root: &str, dir: &Path) {
    for entry in std::fs::read_dir(installed).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "app-config.js" {
            std::os::unix::fs::symlink(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    let config = std::fs::read_to_string(installed.join("app-config.js"))
        .unwrap()
        .replace("'/dicom-web'", &format!("'{root}'"));
    assert!(config.contains(root));
    std::fs::write(dir.join("app-config.js"), config).unwrap();
}

/// A Part 10 file of a deflated CT data set in study `study` whose Pixel Data is
/// `pixel_bytes` of zeros: a decompression bomb, about a thousandth of that in size.
pub fn deflate_bomb(study: &str, sop: &str, pixel_bytes: u32) -> Vec<u8> {
    use std::io::Write;
    let mut obj = ct_slice(study, &format!("{study}.1"), sop, 0, 16);
    obj.remove_element(tags::PIXEL_DATA);
    let mut plain = Vec::new();
    let explicit = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    obj.write_dataset_with_ts(&mut plain, &explicit).unwrap();
    plain.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    plain.extend_from_slice(&pixel_bytes.to_le_bytes());
    let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    deflate.write_all(&plain).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(pixel_bytes >> 20) {
        deflate.write_all(&zeros).unwrap();
    }
    let syntax = segnode::dicom::uid::ts::DEFLATED_EXPLICIT_VR_LE;
    let class = segnode::dicom::uid::CT_IMAGE_STORAGE;
    let mut bytes = segnode::dicom::part10::header(class, sop, syntax, "TESTSCU", 0).unwrap();
    bytes.extend_from_slice(&deflate.finish().unwrap());
    bytes
}

/// A worklist's webhook endpoint on loopback: every POST is answered 204 and its head
/// and body are sent on the channel. Returns the port and the channel.
pub async fn webhook_receiver() -> (u16, tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = receiver.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, Vec<u8>)>();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = receiver.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read the head, then Content-Length bytes of body.
            let (head, body) = loop {
                let n = s.read(&mut chunk).await.unwrap();
                buf.extend_from_slice(&chunk[..n]);
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..i]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap();
                    while buf.len() < i + 4 + len {
                        let n = s.read(&mut chunk).await.unwrap();
                        buf.extend_from_slice(&chunk[..n]);
                    }
                    break (head, buf[i + 4..i + 4 + len].to_vec());
                }
            };
            s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .await
                .unwrap();
            let _ = tx.send((head, body));
        }
    });
    (port, rx)
}
