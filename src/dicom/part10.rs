//! DICOM Part 10 files (PS3.10 §7): the 128-byte preamble, `DICM`, the File Meta
//! Information group in Explicit VR Little Endian, then the data set in its transfer
//! syntax, byte for byte as it came off the wire.

use crate::checksum::sha256_hex;
use dicom_object::meta::{FileMetaTable, FileMetaTableBuilder};

use super::uid::{IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME};

#[derive(Debug, thiserror::Error)]
pub enum Part10Error {
    #[error("not a DICOM Part 10 file (no DICM prefix)")]
    NoPrefix,
    #[error("file meta group is truncated or malformed")]
    BadMeta,
    #[error("cannot build the file meta group")]
    Build(#[source] Box<dicom_object::meta::Error>),
    #[error("cannot write the file meta group")]
    Write(#[source] Box<dicom_object::meta::Error>),
}

/// The preamble, `DICM` and the meta group, in a buffer with room for `dataset_len`
/// more bytes: the caller writes the data set right after it.
pub fn header(
    sop_class: &str,
    sop_instance: &str,
    transfer_syntax: &str,
    source_ae: &str,
    dataset_len: usize,
) -> Result<Vec<u8>, Part10Error> {
    let meta = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(sop_class)
        .media_storage_sop_instance_uid(sop_instance)
        .transfer_syntax(transfer_syntax)
        .implementation_class_uid(IMPLEMENTATION_CLASS_UID)
        .implementation_version_name(IMPLEMENTATION_VERSION_NAME)
        .source_application_entity_title(source_ae)
        .build()
        .map_err(|e| Part10Error::Build(Box::new(e)))?;
    let mut out = Vec::with_capacity(dataset_len + 512);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    meta.write(&mut out)
        .map_err(|e| Part10Error::Write(Box::new(e)))?;
    Ok(out)
}

/// The byte offset where the data set starts in a Part 10 file: after the preamble,
/// `DICM` and the meta group whose length (0002,0000) comes first.
pub fn dataset_offset(file: &[u8]) -> Result<usize, Part10Error> {
    if file.get(128..132) != Some(b"DICM") {
        return Err(Part10Error::NoPrefix);
    }
    // (0002,0000) UL, explicit VR: tag 4, VR 2, length 2, value 4.
    let element = file.get(132..144).ok_or(Part10Error::BadMeta)?;
    if element[..6] != [0x02, 0x00, 0x00, 0x00, b'U', b'L'] {
        return Err(Part10Error::BadMeta);
    }
    let group_length =
        u32::from_le_bytes([element[8], element[9], element[10], element[11]]) as usize;
    let offset = 144usize
        .checked_add(group_length)
        .ok_or(Part10Error::BadMeta)?;
    if offset > file.len() {
        return Err(Part10Error::BadMeta);
    }
    Ok(offset)
}

/// The file meta information of a Part 10 file, and where its data set starts. Every
/// element of the group is first checked to fit in it, walked as the parser walks it:
/// the parser would allocate what a length announces before reading it.
pub fn meta(file: &[u8]) -> Result<(FileMetaTable, usize), Part10Error> {
    let offset = dataset_offset(file)?;
    super::lengths::check_meta_group(&file[144..offset]).map_err(|_| Part10Error::BadMeta)?;
    let meta = FileMetaTable::from_reader(&file[128..offset]).map_err(|_| Part10Error::BadMeta)?;
    Ok((meta, offset))
}

/// The identity of a Part 10 file's content: the SOP Instance UID of its meta group
/// and the SHA-256 (hex) of its data set, the bytes as the sender sent them, whatever
/// header a writer wrapped them in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub sop_instance_uid: String,
    pub sha256: String,
}

pub fn content(file: &[u8]) -> Result<Content, Part10Error> {
    let (meta, offset) = meta(file)?;
    Ok(Content {
        sop_instance_uid: meta
            .media_storage_sop_instance_uid()
            .trim_end_matches(['\0', ' '])
            .to_string(),
        sha256: sha256_hex(&file[offset..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_then_find_dataset() {
        let dataset = b"\x08\x00\x16\x00\x04\x00\x00\x001.2\0";
        let mut file = header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2",
            "PACS",
            dataset.len(),
        )
        .unwrap();
        file.extend_from_slice(dataset);
        let offset = dataset_offset(&file).unwrap();
        assert_eq!(&file[offset..], dataset);
        let meta = dicom_object::meta::FileMetaTable::from_reader(&file[128..]).unwrap();
        assert_eq!(meta.media_storage_sop_instance_uid(), "1.2.3");
        assert_eq!(meta.transfer_syntax(), "1.2.840.10008.1.2");

        // The same data set under another sender's header is the same content.
        let mut other = header(
            "1.2.840.10008.5.1.4.1.1.2",
            "1.2.3",
            "1.2.840.10008.1.2",
            "ANOTHER_SENDER",
            dataset.len(),
        )
        .unwrap();
        other.extend_from_slice(dataset);
        assert_ne!(other.len(), file.len());
        let c = content(&file).unwrap();
        assert_eq!(c, content(&other).unwrap());
        assert_eq!(c.sop_instance_uid, "1.2.3");
        assert_eq!(c.sha256, sha256_hex(dataset));
    }

    #[test]
    fn garbage_is_refused() {
        assert!(matches!(
            dataset_offset(b"short"),
            Err(Part10Error::NoPrefix)
        ));
        let mut fake = vec![0u8; 132];
        fake[128..].copy_from_slice(b"DICM");
        fake.extend_from_slice(&[0x02, 0, 0, 0, b'U', b'L', 4, 0, 0xff, 0xff, 0xff, 0x7f]);
        assert!(matches!(dataset_offset(&fake), Err(Part10Error::BadMeta)));
    }
}
