"""Writes the fuzz targets' seed corpus (fuzz/corpus/<target>/): what real peers send,
made from the shared CT series' headers (pixel data replaced by 8 x 8 synthetic pixels,
so that seeds stay small and no patient image is copied), the model manifests in onnx/,
and the TotalSegmentator plans in ../shared/data. Run it again after a change of what a
target reads:

    .venv/bin/python fuzz/make_corpus.py

The PDUs are written here byte by byte (PS3.8 9.3), as storescu sends them.
"""

import json
import os
import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SEGNODE_TEST_DATA", ROOT.parent / "shared" / "data"))
CORPUS = ROOT / "fuzz" / "corpus"

CT = "1.2.840.10008.5.1.4.1.1.2"
VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG = "1.2.840.10008.1.2.2"
J2K = "1.2.840.10008.1.2.4.90"
# The `dataset` target's first byte: the index of the transfer syntax in this list.
SYNTAXES = [IMPLICIT, EXPLICIT, DEFLATED, BIG, J2K]


def small_instance(encapsulated):
    """A real slice's header (Siemens private tags and all) over 8 x 8 synthetic pixels."""
    ds = pydicom.dcmread(DATA / "ct-abdomen-j2k" / "CT0267.dcm")
    del ds.file_meta
    ds.Rows = ds.Columns = 8
    if encapsulated:
        # A J2K codestream's first markers (SOC, SIZ): the checks at C-STORE time
        # do not decode it.
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51\x00\x29" + bytes(40)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        ds.PixelData = bytes(range(128))
        ds["PixelData"].VR = "OW"
        ds["PixelData"].is_undefined_length = False
    return ds


def encode(ds, syntax):
    """The data set alone, in `syntax`, as a C-STORE carries it."""
    fp = DicomBytesIO()
    fp.is_little_endian = syntax != BIG
    fp.is_implicit_VR = syntax == IMPLICIT
    write_dataset(fp, ds)
    data = fp.getvalue()
    if syntax == DEFLATED:
        deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        data = deflate.compress(data) + deflate.flush()
    return data


def element(tag, value):
    return struct.pack("<HHI", 0, tag, len(value)) + value


def uid(text):
    raw = text.encode()
    return raw + b"\0" * (len(raw) % 2)


def command(field, message_id, sop_class=None, instance=None, has_dataset=False, status=None):
    """A command set in Implicit VR Little Endian, its group length first (PS3.7 6.3)."""
    body = b""
    if sop_class:
        body += element(0x0002, uid(sop_class))
    body += element(0x0100, struct.pack("<H", field))
    body += element(0x0110, struct.pack("<H", message_id))
    if field == 0x0001:
        body += element(0x0700, struct.pack("<H", 0))
    body += element(0x0800, struct.pack("<H", 0x0000 if has_dataset else 0x0101))
    if status is not None:
        body += element(0x0900, struct.pack("<H", status))
    if instance:
        body += element(0x1000, uid(instance))
    return element(0x0000, struct.pack("<I", len(body))) + body


def item(kind, body):
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(contexts, called=b"SEGNODE", calling=b"STORESCU", max_pdu=16384):
    """An A-ASSOCIATE-RQ proposing (abstract syntax, [transfer syntaxes]) per context."""
    body = struct.pack(">HH", 1, 0) + called.ljust(16) + calling.ljust(16) + bytes(32)
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for i, (abstract, syntaxes) in enumerate(contexts):
        context = struct.pack(">BBBB", 2 * i + 1, 0, 0, 0) + item(0x30, abstract.encode())
        context += b"".join(item(0x40, s.encode()) for s in syntaxes)
        body += item(0x20, context)
    user = item(0x51, struct.pack(">I", max_pdu))
    user += item(0x52, b"1.2.276.0.7230010.3.0.3.6.7")
    user += item(0x55, b"OFFIS_DCMTK_367")
    body += item(0x50, user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def p_data(pc_id, data, is_command, chunk=1 << 20):
    """P-DATA-TF PDUs carrying `data` in fragments of at most `chunk` bytes."""
    out = b""
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)] or [b""]
    for n, piece in enumerate(pieces):
        control = (1 if is_command else 0) | (2 if n == len(pieces) - 1 else 0)
        pdv = struct.pack(">IBB", len(piece) + 2, pc_id, control) + piece
        out += struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
    return out


RELEASE_RQ = struct.pack(">BBI", 0x05, 0, 4) + bytes(4)
ABORT = struct.pack(">BBI", 0x07, 0, 4) + bytes([0, 0, 0, 0])


def store(pc_id, ds, syntax, message_id=1, chunk=1 << 20):
    cmd = command(0x0001, message_id, CT, ds.SOPInstanceUID, has_dataset=True)
    return p_data(pc_id, cmd, True) + p_data(pc_id, encode(ds, syntax), False, chunk)


def part10(ds, syntax):
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = "2.25.306991510625265341530301990517899291931"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    pydicom.filewriter.write_file_meta_info(fp, meta, enforce_standard=True)
    return b"\0" * 128 + b"DICM" + fp.getvalue() + encode(ds, syntax)


def write(target, name, data):
    # The Upper Layer target (pdu) starts from the association's exchanges too.
    for t in [target, "pdu"] if target == "association" else [target]:
        folder = CORPUS / t
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def main():
    native = small_instance(encapsulated=False)
    j2k = small_instance(encapsulated=True)
    storage = (CT, [EXPLICIT, IMPLICIT, DEFLATED, BIG, J2K])
    echo = (VERIFICATION, [IMPLICIT])

    # association: whole exchanges of a peer.
    rq = associate_rq([echo, storage])
    write("association", "echo", rq + p_data(1, command(0x0030, 1, VERIFICATION), True) + RELEASE_RQ)
    write("association", "store-explicit", rq + store(3, native, EXPLICIT, chunk=300) + RELEASE_RQ)
    for syntax, name in [(IMPLICIT, "implicit"), (DEFLATED, "deflated"), (BIG, "big"), (J2K, "j2k")]:
        one = associate_rq([echo, (CT, [syntax])])
        ds = j2k if syntax == J2K else native
        write("association", f"store-{name}", one + store(3, ds, syntax) + RELEASE_RQ)
    write("association", "store-abort", rq + store(3, native, EXPLICIT) + ABORT)
    write("association", "find", rq + p_data(3, command(0x0020, 2, CT, has_dataset=True), True)
          + p_data(3, encode(native, EXPLICIT)[:200], False) + RELEASE_RQ)
    write("association", "wrong-called", associate_rq([storage], called=b"OTHER"))
    write("association", "tiny-max-pdu", associate_rq([echo], max_pdu=8)
          + p_data(1, command(0x0030, 1, VERIFICATION), True, chunk=2) + RELEASE_RQ)

    # command: the command sets those exchanges carry, and responses.
    write("command", "echo-rq", command(0x0030, 1, VERIFICATION))
    write("command", "store-rq", command(0x0001, 7, CT, native.SOPInstanceUID, has_dataset=True))
    write("command", "store-rsp", command(0x8001, 7, CT, native.SOPInstanceUID, status=0xA700)
          + element(0x0902, b"Out of resources"))
    write("command", "find-rq", command(0x0020, 3, CT, has_dataset=True))

    # dataset: the first byte picks the transfer syntax (segnode::fuzzing::dataset).
    for i, syntax in enumerate(SYNTAXES):
        write("dataset", f"ct-{i}", bytes([i]) + encode(j2k if syntax == J2K else native, syntax))

    # part10: files as the spool holds them and offline input brings them.
    write("part10", "explicit", part10(native, EXPLICIT))
    write("part10", "implicit", part10(native, IMPLICIT))
    write("part10", "j2k", part10(j2k, J2K))

    # multipart: a Content-Type line, then a STOW-RS body.
    boundary = "0f3cf5c0-0a6b-4d1e-8d4e-5a1c2b3d4e5f"
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}\n'
    parts = [part10(native, EXPLICIT), part10(j2k, J2K)]
    body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
                    for p in parts) + f"--{boundary}--\r\n".encode()
    write("multipart", "two-parts", content_type.encode() + body)
    write("multipart", "preamble", content_type.encode() + b"preamble\r\n" + body[:400]
          + f"\r\n--{boundary}--".encode())

    # model_files: 0 then a model.toml; 1 then an export's output, one line per part.
    for manifest in sorted((ROOT / "onnx").glob("*/model.toml")):
        write("model_files", f"manifest-{manifest.parent.name}", b"\0" + manifest.read_bytes())
    lines = [export_line(d) for d in sorted((DATA / "totalsegmentator-plans").glob("Dataset*"))]
    write("model_files", "export-one", b"\1" + lines[0].encode())
    write("model_files", "export-parts", b"\1" + "\n".join(lines).encode())


def export_line(folder):
    """What scripts/nnunet_export.py prints for a results folder with these plans."""
    plans = json.loads((folder / "plans.json").read_text())
    dataset = json.loads((folder / "dataset.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    intensity = plans["foreground_intensity_properties_per_channel"]["0"]
    return json.dumps({
        "dataset": plans["dataset_name"],
        "plans": plans["plans_name"],
        "configuration": "3d_fullres",
        "trainer": "nnUNetTrainer",
        "folder": "nnUNetTrainer__nnUNetPlans__3d_fullres",
        "folds": [{"fold": 0, "file": "fold_0.onnx", "max_abs_difference": 1.2e-5}],
        "patch_size": config["patch_size"],
        "spacing": config["spacing"],
        "transpose_forward": plans["transpose_forward"],
        "transpose_backward": plans["transpose_backward"],
        "normalization": config["normalization_schemes"][0],
        "clip": [intensity["percentile_00_5"], intensity["percentile_99_5"]],
        "mean": intensity["mean"],
        "std": intensity["std"],
        "mirror_axes": [0, 1, 2],
        "labels": dataset["labels"],
        "channel": {"0": "CT"},
        "num_classes": len(dataset["labels"]),
    })


if __name__ == "__main__":
    main()
