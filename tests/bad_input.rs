//! Hostile and broken input: each gets an error status, a refusal or an abort; the node
//! keeps serving, nothing already received is lost, and no file appears outside the
//! spool.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use dicom_ul::pdu::{AssociationRQ, Pdu, PresentationContextProposed, UserVariableItem};
use segnode::deliver::{self, Association, OutgoingFile, PeerAddress, ScuTimeouts};
use segnode::dicom::uid::ts::DEFLATED_EXPLICIT_VR_LE as DEFLATED;
use segnode::dicom::{AeTitle, DimseStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn peer(node: &TestNode) -> PeerAddress {
    format!("SEGNODE@127.0.0.1:{}", node.port())
        .parse()
        .unwrap()
}

async fn send_one(node: &TestNode, file: OutgoingFile) -> (DimseStatus, Option<String>) {
    let calling = AeTitle::parse("TESTSCU").unwrap();
    let files = [file];
    let mut assoc = Association::connect(
        &peer(node),
        &calling,
        &deliver::context_pairs(&files),
        ScuTimeouts::default(),
    )
    .await
    .unwrap();
    let result = assoc.store(&files[0]).await.unwrap();
    assoc.release().await.unwrap();
    result
}

async fn assert_still_serving(node: &TestNode) {
    let calling = AeTitle::parse("TESTSCU").unwrap();
    let mut assoc = Association::connect(
        &peer(node),
        &calling,
        &deliver::echo_pairs(),
        ScuTimeouts::default(),
    )
    .await
    .expect("node still accepts associations");
    assert!(assoc.echo().await.unwrap().is_success());
    assoc.release().await.unwrap();
}

/// A CT slice whose data set has `sop_instance` and `dataset_class`, sent with a
/// C-STORE request that says CT Image Storage and `sop_instance`.
fn crafted(dir: &Path, sop_instance: &str, dataset_class: &str) -> OutgoingFile {
    let valid = "1.2.826.0.1.3680043.10.5.1.99";
    let mut obj = ct_slice(
        "1.2.826.0.1.3680043.10.5",
        "1.2.826.0.1.3680043.10.5.1",
        valid,
        0,
        16,
    );
    let path = dir.join("crafted.dcm");
    write_part10(obj.clone(), CT_STORAGE, valid, &path);
    let header_len =
        segnode::dicom::part10::dataset_offset(&std::fs::read(&path).unwrap()).unwrap();
    let put = |obj: &mut dicom_object::InMemDicomObject, tag, value: &str| {
        obj.put(dicom_core::DataElement::new(
            tag,
            dicom_core::VR::UI,
            dicom_core::PrimitiveValue::from(value),
        ));
    };
    put(
        &mut obj,
        dicom_dictionary_std::tags::SOP_CLASS_UID,
        dataset_class,
    );
    put(
        &mut obj,
        dicom_dictionary_std::tags::SOP_INSTANCE_UID,
        sop_instance,
    );
    let mut dataset = Vec::new();
    let ts = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    obj.write_dataset_with_ts(&mut dataset, &ts).unwrap();
    let mut bytes = std::fs::read(&path).unwrap()[..header_len].to_vec();
    bytes.extend_from_slice(&dataset);
    OutgoingFile {
        sop_class: CT_STORAGE.into(),
        sop_instance: sop_instance.into(),
        ..OutgoingFile::from_bytes("crafted".into(), bytes).unwrap()
    }
}

fn no_file_outside_spool(node: &TestNode) {
    for f in files_under(node.dir.path()) {
        if is_ready_file(&f) || is_node_lock(&f) {
            continue;
        }
        let rel = f
            .strip_prefix(node.dir.path())
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            rel.starts_with("data/spool/objects/")
                || rel.starts_with("data/segnode.db")
                || rel == "data/api-token",
            "unexpected file {rel}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sop_instance_uid_with_path_characters_is_refused() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    for evil in ["../../escape", "1.2/3", "..", "1.2.3\\4"] {
        let (status, comment) = send_one(&node, crafted(dir.path(), evil, CT_STORAGE)).await;
        assert_eq!(status, DimseStatus::CANNOT_UNDERSTAND, "{evil:?}");
        assert!(comment.unwrap().contains("SOP Instance UID"), "{evil:?}");
    }
    no_file_outside_spool(&node);
    assert!(spooled_files(&node.spool()).is_empty());
    assert_eq!(
        node.store
            .audit_rows(Some(AuditKind::InstanceRefused))
            .await
            .unwrap()
            .len(),
        4
    );
    assert_still_serving(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataset_not_matching_the_request_gets_a900() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (status, comment) = send_one(
        &node,
        crafted(dir.path(), "1.2.826.0.1.3680043.10.5.1.1", MR_STORAGE),
    )
    .await;
    assert_eq!(status, DimseStatus::DATASET_DOES_NOT_MATCH_SOP_CLASS);
    assert!(comment.unwrap().contains("does not match"));
    assert!(spooled_files(&node.spool()).is_empty());
    assert_still_serving(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_absurd_datasets_get_c000_and_earlier_data_stays() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let good = synthetic_series(&dir.path().join("good"), 7, 12, 32);
    let (ok, out) = storescu(&node.port(), &[&dir.path().join("good")]).await;
    assert!(ok, "{out}");

    let whole = std::fs::read(&good[0]).unwrap();
    let offset = segnode::dicom::part10::dataset_offset(&whole).unwrap();
    // Cut inside the pixel data, and cut just before it (a data set that ends cleanly
    // but has lost its pixels).
    let pixel_tag = [0xE0, 0x7F, 0x10, 0x00];
    let pixel_at = whole.windows(4).rposition(|w| w == pixel_tag).unwrap();
    for cut in [whole.len() - 100, pixel_at] {
        let mut bytes = whole[..cut].to_vec();
        // A different instance, so the good one is not replaced.
        let file = OutgoingFile {
            sop_instance: "1.2.826.0.1.3680043.10.1.7.1.1".into(),
            ..OutgoingFile::from_bytes("cut".into(), std::mem::take(&mut bytes)).unwrap()
        };
        let (status, comment) = send_one(&node, file).await;
        assert_eq!(
            status,
            DimseStatus::CANNOT_UNDERSTAND,
            "cut at {cut}: {comment:?}"
        );
    }
    // An element announcing an absurd length.
    let mut absurd = whole[..pixel_at].to_vec();
    absurd.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 0xF0, 0xFF, 0xFF, 0x7F, 1, 2,
    ]);
    let file = OutgoingFile::from_bytes("absurd".into(), absurd).unwrap();
    let (status, comment) = send_one(&node, file).await;
    assert!(comment.unwrap().contains("malformed data set"));
    assert_eq!(status, DimseStatus::CANNOT_UNDERSTAND);
    assert!(offset < pixel_at);

    // The good series is intact and gets its job.
    let jobs = settled_jobs(&node.store, 1).await;
    assert_eq!(jobs[0].instance_count, 12);
    assert_eq!(jobs[0].state, JobState::Succeeded);
    let objects = files_under(&node.spool().join("objects")).len();
    assert_eq!(objects, 12 + result_files(&jobs));
    no_file_outside_spool(&node);
    node.stop().await;
}

/// Reads until the node aborts (A-ABORT PDU) or closes; returns whether that happened
/// within `within`.
async fn node_hangs_up(socket: &mut TcpStream, within: Duration) -> bool {
    let read = async {
        let mut buf = [0u8; 1024];
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(n) if buf[..n].contains(&0x07) => return true,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, read).await.unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_pdus_and_silent_peers_are_dropped_and_the_node_keeps_serving() {
    let node = TestNode::start_with("idle_timeout_seconds = 2").await;

    // Absurd PDU length: aborted at once, nothing allocated for it.
    let mut s = raw_association(&node).await;
    s.write_all(&[0x04, 0, 0xFF, 0xFF, 0xFF, 0xF0])
        .await
        .unwrap();
    assert!(
        node_hangs_up(&mut s, Duration::from_secs(3)).await,
        "absurd PDU length not refused"
    );

    // Truncated PDU, then the peer goes away.
    let mut s = raw_association(&node).await;
    s.write_all(&[0x04, 0, 0, 0, 0x10, 0x00, 0, 0, 0x0f])
        .await
        .unwrap();
    drop(s);

    // Malformed presentation data value (item longer than its PDU).
    let mut s = raw_association(&node).await;
    s.write_all(&[0x04, 0, 0, 0, 0, 8, 0, 0, 0x10, 0, 1, 3, 0, 0])
        .await
        .unwrap();
    assert!(
        node_hangs_up(&mut s, Duration::from_secs(3)).await,
        "malformed PDV not refused"
    );

    // Garbage instead of an A-ASSOCIATE-RQ.
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert!(
        node_hangs_up(&mut s, Duration::from_secs(3)).await,
        "garbage not refused"
    );

    // A connection that sends nothing is dropped after the ARTIM timeout (2 s here).
    let mut s = TcpStream::connect(node.addr).await.unwrap();
    assert!(
        node_hangs_up(&mut s, Duration::from_secs(6)).await,
        "silent peer kept"
    );

    // An association that goes silent after negotiation is dropped by the idle timeout.
    let mut s = raw_association(&node).await;
    assert!(
        node_hangs_up(&mut s, Duration::from_secs(6)).await,
        "idle association kept"
    );

    assert_still_serving(&node).await;
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "{out}");
    let counts = node.store.instance_counts().await.unwrap();
    assert_eq!(counts[0].instances, 20);
    no_file_outside_spool(&node);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_disk_and_oversized_objects_get_a700() {
    // A watermark no disk can meet.
    let node = TestNode::start_with("min_free_disk_mb = 1000000000").await;
    let dir = tempfile::tempdir().unwrap();
    let files = synthetic_series(dir.path(), 3, 1, 16);
    let file = OutgoingFile::from_bytes("x".into(), std::fs::read(&files[0]).unwrap()).unwrap();
    let (status, comment) = send_one(&node, file).await;
    assert_eq!(status, DimseStatus::OUT_OF_RESOURCES);
    assert!(comment.unwrap().contains("free-space watermark"));
    assert!(spooled_files(&node.spool()).is_empty());
    node.stop().await;

    let node = TestNode::start_with("max_object_mb = 1").await;
    let big = synthetic_series(&dir.path().join("big"), 4, 1, 1024); // 2 MiB of pixels
    let file = OutgoingFile::from_bytes("big".into(), std::fs::read(&big[0]).unwrap()).unwrap();
    let (status, comment) = send_one(&node, file).await;
    assert_eq!(status, DimseStatus::OUT_OF_RESOURCES);
    assert!(comment.unwrap().contains("max_object_mb"));
    assert_still_serving(&node).await;
    node.stop().await;
}

/// Sends an A-ASSOCIATE-RQ for Verification with `protocol_version` and `max_pdu`;
/// returns the socket and the answer PDU (type, body).
async fn associate(
    node: &TestNode,
    protocol_version: u16,
    max_pdu: u32,
) -> (TcpStream, u8, Vec<u8>) {
    let mut socket = TcpStream::connect(node.addr).await.unwrap();
    let rq = Pdu::AssociationRQ(AssociationRQ {
        protocol_version,
        calling_ae_title: "TESTSCU".into(),
        called_ae_title: "SEGNODE".into(),
        application_context_name: segnode::dicom::uid::APPLICATION_CONTEXT.into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: segnode::dicom::uid::VERIFICATION.into(),
            transfer_syntaxes: vec![segnode::dicom::uid::ts::IMPLICIT_VR_LE.into()],
        }],
        user_variables: vec![UserVariableItem::MaxLength(max_pdu)],
    });
    let mut bytes = Vec::new();
    dicom_ul::pdu::write_pdu(&mut bytes, &rq).unwrap();
    socket.write_all(&bytes).await.unwrap();
    let (kind, body) = read_pdu(&mut socket).await;
    (socket, kind, body)
}

/// Sends a command set on context 1 and collects the response's command bytes,
/// checking that no PDU exceeds `max_pdu`.
async fn exchange(
    socket: &mut TcpStream,
    command: &[u8],
    max_pdu: usize,
) -> segnode::dicom::Command {
    let mut pdu = vec![0x04, 0];
    pdu.extend_from_slice(&(command.len() as u32 + 6).to_be_bytes());
    pdu.extend_from_slice(&(command.len() as u32 + 2).to_be_bytes());
    pdu.extend_from_slice(&[1, 0x03]);
    pdu.extend_from_slice(command);
    socket.write_all(&pdu).await.unwrap();
    let mut response = Vec::new();
    loop {
        let (kind, body) = read_pdu(socket).await;
        assert_eq!(kind, 0x04, "expected P-DATA-TF");
        assert!(
            body.len() <= max_pdu,
            "PDU of {} bytes over the peer's {max_pdu}",
            body.len()
        );
        response.extend_from_slice(&body[6..]);
        if body[5] & 0x02 != 0 {
            return segnode::dicom::Command::decode(&response).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_version_peer_pdu_length_and_echo_class_are_honoured() {
    let node = TestNode::start().await;
    // Protocol versions without bit 0 (version 1): A-ASSOCIATE-RJ, source "service
    // provider (ACSE)", reason "protocol-version not supported" (PS3.8 9.3.4).
    for version in [0u16, 2] {
        let (_, kind, body) = associate(&node, version, 16384).await;
        assert_eq!(
            kind, 0x03,
            "protocol version {version}: expected A-ASSOCIATE-RJ"
        );
        assert_eq!(&body[1..4], &[1, 2, 2], "protocol version {version}");
    }
    // A peer that takes PDUs of at most 40 bytes gets its C-ECHO response in pieces
    // that fit.
    let (mut s, kind, _) = associate(&node, 1, 40).await;
    assert_eq!(kind, 0x02);
    let rsp = exchange(&mut s, &segnode::dicom::Command::echo_rq(1).encode(), 40).await;
    assert_eq!(rsp.dimse_status(), Some(DimseStatus::SUCCESS));
    // A C-ECHO that names another SOP class is not answered success.
    let mut wrong = segnode::dicom::Command::echo_rq(2);
    wrong.affected_sop_class = Some(CT_STORAGE.into());
    let rsp = exchange(&mut s, &wrong.encode(), 40).await;
    assert_eq!(
        rsp.dimse_status(),
        Some(DimseStatus::SOP_CLASS_NOT_SUPPORTED)
    );
    // A length that cannot carry a PDV at all is refused at negotiation.
    let (_, kind, _) = associate(&node, 1, 6).await;
    assert_eq!(kind, 0x03);
    assert_still_serving(&node).await;
    node.stop().await;
}

/// A 32x32 CT slice file whose description is then changed by `change`.
fn mismatched(
    dir: &Path,
    n: u32,
    change: impl FnOnce(&mut dicom_object::InMemDicomObject),
) -> PathBuf {
    let sop = format!("1.2.826.0.1.3680043.10.6.1.{n}");
    let mut obj = ct_slice(
        "1.2.826.0.1.3680043.10.6",
        "1.2.826.0.1.3680043.10.6.1",
        &sop,
        n,
        32,
    );
    change(&mut obj);
    let path = dir.join(format!("mismatch{n}.dcm"));
    write_part10(obj, CT_STORAGE, &sop, &path);
    path
}

fn put_us(obj: &mut dicom_object::InMemDicomObject, tag: dicom_core::Tag, v: u16) {
    let _ = obj.put(dicom_core::DataElement::new(
        tag,
        dicom_core::VR::US,
        dicom_core::PrimitiveValue::from(v),
    ));
}

/// Rows = 16 with 32 rows of data; Bits Allocated = 8 with 16-bit data; PALETTE COLOR;
/// Bits Stored 17 of 16 allocated. Slices `first` to `first + 3`.
fn pixel_mismatches(dir: &Path, first: u32) -> Vec<(PathBuf, DimseStatus, &'static str)> {
    use dicom_dictionary_std::tags;
    vec![
        (
            mismatched(dir, first, |o| put_us(o, tags::ROWS, 16)),
            DimseStatus::CANNOT_UNDERSTAND,
            "Pixel Data has 2048 bytes, its description needs 1024",
        ),
        (
            mismatched(dir, first + 1, |o| {
                put_us(o, tags::BITS_ALLOCATED, 8);
                put_us(o, tags::BITS_STORED, 8);
                put_us(o, tags::HIGH_BIT, 7);
            }),
            DimseStatus::CANNOT_UNDERSTAND,
            "Pixel Data has 2048 bytes, its description needs 1024",
        ),
        (
            mismatched(dir, first + 2, |o| {
                o.put(dicom_core::DataElement::new(
                    tags::PHOTOMETRIC_INTERPRETATION,
                    dicom_core::VR::CS,
                    dicom_core::PrimitiveValue::from("PALETTE COLOR"),
                ));
            }),
            DimseStatus::DATASET_DOES_NOT_MATCH_SOP_CLASS,
            "PALETTE COLOR",
        ),
        (
            mismatched(dir, first + 3, |o| {
                put_us(o, tags::BITS_STORED, 17);
                put_us(o, tags::HIGH_BIT, 16);
            }),
            DimseStatus::CANNOT_UNDERSTAND,
            "Bits Stored 17 exceeds Bits Allocated 16",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pixel_data_that_contradicts_its_description_is_refused_at_c_store() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    for (path, status, needle) in pixel_mismatches(dir.path(), 1) {
        let file =
            OutgoingFile::from_bytes(path.display().to_string(), std::fs::read(&path).unwrap())
                .unwrap();
        let (got, comment) = send_one(&node, file).await;
        assert_eq!(got, status, "{}: {comment:?}", path.display());
        assert!(
            comment.as_deref().unwrap_or_default().contains(needle),
            "{comment:?}"
        );
    }
    assert_eq!(
        files_under(&node.spool().join("objects")).len(),
        0,
        "nothing kept"
    );
    assert_still_serving(&node).await;
    node.stop().await;
}

/// DCMTK's storescu, a real sender, is refused (0xC000, a failure it does not retry)
/// when Bits Stored exceeds Bits Allocated; nothing is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storescu_is_refused_an_image_storing_more_bits_than_allocated() {
    let node = TestNode::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = pixel_mismatches(dir.path(), 21).remove(3);
    let path = path.display().to_string();
    let args = ["-v", "-aet", "STORESCU", "-aec", "SEGNODE", "127.0.0.1"];
    let (_, out) = run_tool("storescu", &[&args[..], &[&node.port(), &path]].concat()).await;
    assert!(
        out.contains("Received Store Response (Error: CannotUnderstand)"),
        "storescu: {out}"
    );
    assert!(spooled_files(&node.spool()).is_empty(), "nothing kept");
    assert_still_serving(&node).await;
    node.stop().await;
}

#[test]
fn pixel_data_that_contradicts_its_description_fails_assembly_with_its_code() {
    let dir = tempfile::tempdir().unwrap();
    // Two slices of each kind, so that the stack itself is fine.
    let codes: Vec<&str> = pixel_mismatches(dir.path(), 1)
        .into_iter()
        .zip(pixel_mismatches(dir.path(), 11))
        .map(|((a, _, _), (b, _, _))| {
            let tolerances = segnode::volume::Tolerances::default();
            let err = segnode::volume::assemble(&[a, b], 2, &tolerances).unwrap_err();
            err.code()
        })
        .collect();
    assert_eq!(
        codes,
        [
            "decode_failed",
            "decode_failed",
            "unsupported_pixel_format",
            "unsupported_pixel_format"
        ]
    );
}

/// Peak resident memory of this process (which runs the node), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deflate_bomb_is_refused_without_inflating_it() {
    use std::io::Write;
    let node = TestNode::start().await;
    // A CT data set whose Pixel Data is 1 GiB of zeros, deflated to about 1 MiB.
    let sop = "1.2.826.0.1.3680043.10.7.1.1";
    let bytes = deflate_bomb("1.2.826.0.1.3680043.10.7", sop, 1 << 30);
    assert!(bytes.len() < 2 << 20, "{} bytes", bytes.len());
    let file = OutgoingFile::from_bytes("bomb".into(), bytes).unwrap();

    let before = peak_rss();
    let (status, comment) = send_one(&node, file).await;
    let grown = peak_rss().saturating_sub(before);
    // Sending it again cannot help: a failure that peers do not retry (not A7xx).
    assert_eq!(status, DimseStatus::CANNOT_UNDERSTAND, "{comment:?}");
    assert!(comment.unwrap_or_default().contains("inflates beyond"));
    assert!(grown < 64 << 20, "peak RSS grew by {} MiB", grown >> 20);
    assert_eq!(
        files_under(&node.spool().join("objects")).len(),
        0,
        "nothing spooled"
    );

    // A genuine deflated CT slice is still received and kept.
    let sop = "1.2.826.0.1.3680043.10.7.1.2";
    let obj = ct_slice(
        "1.2.826.0.1.3680043.10.7",
        "1.2.826.0.1.3680043.10.7.1",
        sop,
        1,
        64,
    );
    let mut plain = Vec::new();
    let explicit = dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN.erased();
    obj.write_dataset_with_ts(&mut plain, &explicit).unwrap();
    let mut deflate =
        flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    deflate.write_all(&plain).unwrap();
    let mut bytes =
        segnode::dicom::part10::header(CT_STORAGE, sop, DEFLATED, "TESTSCU", 0).unwrap();
    bytes.extend_from_slice(&deflate.finish().unwrap());
    let file = OutgoingFile::from_bytes("deflated".into(), bytes).unwrap();
    let (status, comment) = send_one(&node, file).await;
    assert_eq!(status, DimseStatus::SUCCESS, "{comment:?}");
    assert_eq!(files_under(&node.spool().join("objects")).len(), 1);
    assert_still_serving(&node).await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_sockets_do_not_lock_out_a_peer_that_speaks() {
    // Default limits (64 waiting, 8 per address) and an ARTIM timer of 60 s: a node
    // that let idle sockets hold its association slots would keep the peer out for a
    // minute, longer than DCMTK waits for an association (30 s).
    let node = TestNode::start_text(|data| {
        test_config(data, "").replace("artim_timeout_seconds = 2", "artim_timeout_seconds = 60")
    })
    .await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(node.addr).await.unwrap());
    }
    let (ok, out) = echoscu(&node.port()).await;
    assert!(ok, "C-ECHO behind 200 idle sockets: {out}");
    let (ok, out) = storescu(&node.port(), &[&real_series()]).await;
    assert!(ok, "C-STORE behind 200 idle sockets: {out}");
    let counts = node.store.instance_counts().await.unwrap();
    assert_eq!(counts[0].instances, 20);
    // All but the last 8 (the per-address share) were dropped from the queue.
    let mut closed = 0;
    for mut s in idle {
        if node_hangs_up(&mut s, Duration::from_millis(200)).await {
            closed += 1;
        }
    }
    assert!(closed >= 190, "{closed} of 200 idle sockets dropped");
    node.stop().await;
}
