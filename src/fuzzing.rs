//! What the coverage-guided fuzz targets in `fuzz/` call: every function that parses
//! bytes a peer (or a site's model folder) controls, driven as the node drives it.
//! Each entry takes the fuzzer's bytes and panics only on a defect: a parser that
//! panics, or an invariant that does not hold (an encoded command that does not decode
//! to itself, a multipart body read differently in other chunks, an imported manifest
//! that does not load back). Not a stable API; hidden from the documentation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Bytes;
use dicom_ul::pdu::Pdu;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::cascade::manifest::{Manifest, ManifestText};
use crate::config::Config;
use crate::dicom::uid::ts;
use crate::dicom::{Command, DimseStatus, lengths, part10};
use crate::dicomweb::multipart::{self, Limits, Reader};
use crate::receive::Receiver;
use crate::receive::negotiation::negotiate;
use crate::spool::Spool;
use crate::store::{Membership, Store};
use crate::ul::{Event, UlStream};

/// The largest single allocation each target may make, from the limits the node is
/// configured with in [`config`] (twice the limit: a `Vec` grows by doubling). The fuzz
/// targets' allocator ([`Limited`]) aborts on anything larger.
pub mod allocation_limit {
    /// The same, for the Upper Layer alone.
    pub const PDU: usize = ASSOCIATION;
    /// An association PDU (1 MiB) or a P-DATA PDU (`max_pdu_length`, 256 KiB), and a
    /// data set up to `max_object_mb` (16 MiB here).
    pub const ASSOCIATION: usize = 2 * 16 * 1024 * 1024;
    /// A command set: at most 64 KiB as the SCP reads it; the fuzzer's input here.
    pub const COMMAND: usize = 2 * 1024 * 1024;
    /// A data set: deflated ones inflate to at most 16 MiB (or 20 times their size).
    pub const DATASET: usize = 2 * 16 * 1024 * 1024 + 2 * 1024 * 1024;
    /// A Part 10 file read whole: the fuzzer's input.
    pub const PART10: usize = 2 * 1024 * 1024;
    /// A part of at most [`MULTIPART_PART`](super::MULTIPART_PART) bytes.
    pub const MULTIPART: usize = 2 * 1024 * 1024;
    /// A manifest or an export's output.
    pub const MODEL: usize = 2 * 1024 * 1024;
}

const MULTIPART_PART: u64 = 64 * 1024;

/// The system allocator, aborting on any single allocation over its limit (one of
/// [`allocation_limit`]): a length a peer controls that reaches an allocation unchecked
/// is then a crash the fuzzer saves, and a failure when the corpus is replayed.
pub struct Limited(pub usize);

impl Limited {
    fn check(&self, size: usize) {
        // A panic's report (its backtrace's symbols) is not the code under test.
        if size > self.0 && !std::thread::panicking() {
            let message = b"segnode fuzzing: an allocation exceeded the limit\n";
            // SAFETY: a static buffer written to the standard error descriptor; nothing
            // is allocated on the way to the abort.
            unsafe { libc::write(2, message.as_ptr().cast(), message.len()) };
            std::process::abort();
        }
    }
}

// SAFETY: every call goes to the system allocator unchanged once its size is checked.
unsafe impl std::alloc::GlobalAlloc for Limited {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        self.check(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        self.check(layout.size());
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        self.check(new_size);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
}

/// The node's configuration in the fuzz targets: the defaults, any calling AE title,
/// objects up to 16 MiB, its data under `data_dir`.
fn config(data_dir: &Path) -> Config {
    let text = format!(
        r#"
[node]
ae_title = "SEGNODE"
data_dir = {:?}
[dicom]
listen = "127.0.0.1:0"
allow_any_calling_ae = true
max_object_mb = 16
min_free_disk_mb = 1
[http]
listen = "127.0.0.1:0"
[model]
path = "onnx/test-cascade"
"#,
        data_dir.display().to_string()
    );
    Config::from_toml(&text, &Default::default()).expect("the fuzz configuration is valid")
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// The SCP of one node for every input: SQLite and the spool under
/// `SEGNODE_FUZZ_DIR` (`scripts/fuzz` makes one in /dev/shm, where a commit's fsync
/// costs little), else a folder in the temporary directory.
fn receiver() -> &'static Receiver {
    static RECEIVER: OnceLock<Receiver> = OnceLock::new();
    RECEIVER.get_or_init(|| {
        let dir = std::env::var_os("SEGNODE_FUZZ_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| {
                std::env::temp_dir().join(format!("segnode-fuzz-{}", std::process::id()))
            });
        std::fs::create_dir_all(&dir).expect("the fuzz data folder");
        let config = config(&dir);
        let membership = Membership::solo("fuzz");
        let store = runtime()
            .block_on(Store::open(&config.database, &membership))
            .expect("the fuzz database");
        let spool = Spool::open(&config.spool_dir(), "fuzz").expect("the fuzz spool");
        Receiver {
            config: Arc::new(config),
            store,
            spool,
        }
    })
}

/// The bytes a peer sends on one association, as the SCP serves it: the A-ASSOCIATE-RQ
/// read and decided on, then every P-DATA-TF, release or abort until the bytes end
/// (C-ECHO and C-STORE answered, data sets checked and kept, refusals audited).
pub fn association(data: &[u8]) {
    let rx = receiver();
    let dicom = &rx.config.dicom;
    let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 104);
    let permits = Arc::new(Semaphore::new(1));
    let shutdown = CancellationToken::new();
    runtime().block_on(async {
        let stream = tokio::io::join(std::io::Cursor::new(data.to_vec()), tokio::io::sink());
        let mut ul = UlStream::new(stream, dicom.max_pdu_length);
        let request = ul
            .read_control_pdu(dicom.artim_timeout, "A-ASSOCIATE-RQ")
            .await;
        crate::receive::converse(rx, ul, request, peer, None, &permits, &shutdown).await;
    });
}

/// The Upper Layer alone, without the node behind it (many times faster than
/// [`association`]): the A-ASSOCIATE-RQ read and negotiated, the answer written, then
/// every PDU framed into presentation data values until the bytes end.
pub fn pdu(data: &[u8]) {
    let config = node_config();
    let dicom = &config.dicom;
    runtime().block_on(async {
        let stream = tokio::io::join(std::io::Cursor::new(data.to_vec()), tokio::io::sink());
        let mut ul = UlStream::new(stream, dicom.max_pdu_length);
        let timeout = Duration::from_secs(1);
        let Ok(Pdu::AssociationRQ(rq)) = ul.read_control_pdu(timeout, "A-ASSOCIATE-RQ").await
        else {
            return;
        };
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let answer = match negotiate(&config.ae_title, dicom, &rq, localhost, None) {
            Ok(accepted) => {
                ul.set_peer_max_pdu(accepted.peer_max_pdu);
                Pdu::AssociationAC(accepted.response)
            }
            Err(rejected) => Pdu::AssociationRJ(rejected.response),
        };
        ul.send_pdu(&answer, timeout)
            .await
            .expect("the answer is written");
        while let Ok(event) = ul.next_event(timeout, "a PDU").await {
            if let Event::Pdv(pdv) = event {
                std::hint::black_box(ul.pdv_data(&pdv));
            }
        }
    });
}

/// The configuration of the targets without a node behind them (no data folder is made).
fn node_config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| config(&std::env::temp_dir()))
}

/// A DIMSE command set as [`Command::decode`] reads it. What a decoded command, and
/// the response to it, encode to must decode and encode to the same bytes again
/// (encoding may drop what a value representation does not allow, once).
pub fn command(data: &[u8]) {
    let Ok(command) = Command::decode(data) else {
        return;
    };
    let response = command.response(DimseStatus::SUCCESS, Some("fuzz".into()));
    for command in [command, response] {
        let bytes = command.encode();
        let decoded = Command::decode(&bytes).expect("an encoded command decodes");
        assert_eq!(decoded.encode(), bytes, "a command's encoding is stable");
    }
}

/// The checks of a data set at C-STORE time, in the order the SCP runs them: bounded
/// inflation (deflated transfer syntax), the element length walk, parsing up to the
/// Pixel Data with the pixel description checked, then the instance's attributes. The
/// first byte chooses the transfer syntax.
pub fn dataset(data: &[u8]) {
    let Some((&choice, dataset)) = data.split_first() else {
        return;
    };
    let syntaxes = [
        ts::IMPLICIT_VR_LE,
        ts::EXPLICIT_VR_LE,
        ts::DEFLATED_EXPLICIT_VR_LE,
        ts::EXPLICIT_VR_BE,
        ts::JPEG_2000_LOSSLESS,
    ];
    let syntax = syntaxes[usize::from(choice) % syntaxes.len()];
    let max_object_bytes = node_config().dicom.max_object_bytes;
    let (dataset, syntax) = if syntax == ts::DEFLATED_EXPLICIT_VR_LE {
        match crate::receive::inflate_bounded(dataset, max_object_bytes) {
            Ok(inflated) => (inflated, ts::EXPLICIT_VR_LE),
            Err(_) => return,
        }
    } else {
        (dataset.to_vec(), syntax)
    };
    let Ok(pixel_data) = lengths::check(&dataset, syntax) else {
        return;
    };
    let header = part10::header(
        crate::dicom::uid::CT_IMAGE_STORAGE,
        "1.2.3",
        syntax,
        "FUZZ",
        0,
    )
    .expect("a Part 10 header");
    if let Ok(object) = crate::receive::parse_instance(&header, &dataset, pixel_data) {
        let _ = crate::store::InstanceMeta::from_object(&object);
    }
}

/// A Part 10 file as the start-up check and offline input read it (its meta group, as
/// STOW-RS parts and `segnode send` read it too).
pub fn part10(data: &[u8]) {
    let _ = part10::content(data);
}

/// A STOW-RS request: the first line is its Content-Type, the rest its body. The body
/// is read as one chunk and again in chunks of 1 to 256 bytes (the second byte): both
/// reads must give the same parts and the same error.
pub fn multipart(data: &[u8]) {
    let Some(newline) = data.iter().position(|&b| b == b'\n') else {
        return;
    };
    let Ok(content_type) = std::str::from_utf8(&data[..newline]) else {
        return;
    };
    let Ok((boundary, _)) = multipart::related(content_type) else {
        return;
    };
    let body = &data[newline + 1..];
    let chunk = usize::from(body.first().copied().unwrap_or(0)) + 1;
    let whole = read_parts(&boundary, vec![Bytes::copy_from_slice(body)]);
    let chunked = read_parts(
        &boundary,
        body.chunks(chunk).map(Bytes::copy_from_slice).collect(),
    );
    assert_eq!(whole, chunked, "a body reads the same in chunks of {chunk}");
}

/// The parts of a body that arrives in `chunks`, then the error that ended it (as text).
fn read_parts(boundary: &str, chunks: Vec<Bytes>) -> (Vec<String>, Option<String>) {
    let limits = Limits {
        part_bytes: MULTIPART_PART,
        body_bytes: 4 * MULTIPART_PART,
    };
    let stream = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, std::io::Error>));
    let mut reader = Reader::new(stream, boundary, limits);
    runtime().block_on(async {
        let mut parts = Vec::new();
        loop {
            match reader.next_part().await {
                Ok(Some(part)) => parts.push(format!("{part:?}")),
                Ok(None) => return (parts, None),
                Err(e) => return (parts, Some(e.to_string())),
            }
        }
    })
}

/// A site's model files: with a first byte of 0 the rest is a `model.toml` (parsed and
/// validated as the node loads it); otherwise it is what the nnU-Net export printed,
/// (one line per part), made into a manifest as `segnode import-nnunet` makes one,
/// whose TOML must parse back.
pub fn model_files(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if kind == 0 {
        let _ = Manifest::from_toml(text);
        return;
    }
    if let Ok(manifest) = crate::import::manifest_from_export(text) {
        // `import` writes this TOML and loads it back: it may be refused as invalid,
        // with the reason, but it must parse.
        let toml = toml::to_string(&manifest).expect("a manifest writes as TOML");
        if let Err(ManifestText::Parse(e)) = Manifest::from_toml(&toml) {
            panic!("an imported manifest does not parse back: {e}\n{toml}");
        }
    }
}
