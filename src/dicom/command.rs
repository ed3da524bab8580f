//! DIMSE command sets (PS3.7 §9.3, §E.1): encoding and decoding of group 0000 in
//! Implicit VR Little Endian, as every command is sent on the wire. Only the fields the
//! node uses are modelled; unknown fields are skipped when decoding.

use std::fmt;

/// Command Field values (PS3.7 §E.1, Table E.1-1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandField(pub u16);

impl CommandField {
    pub const C_STORE_RQ: Self = Self(0x0001);
    pub const C_STORE_RSP: Self = Self(0x8001);
    pub const C_ECHO_RQ: Self = Self(0x0030);
    pub const C_ECHO_RSP: Self = Self(0x8030);
    pub const C_GET_RQ: Self = Self(0x0010);
    pub const C_FIND_RQ: Self = Self(0x0020);
    pub const C_MOVE_RQ: Self = Self(0x0021);

    /// The response field for a request field (bit 15 set).
    pub fn response(self) -> Self {
        Self(self.0 | 0x8000)
    }

    pub fn is_request(self) -> bool {
        self.0 & 0x8000 == 0
    }
}

/// DIMSE status codes (PS3.7 Annex C; storage specific ones from PS3.4 §B.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DimseStatus(pub u16);

impl DimseStatus {
    pub const SUCCESS: Self = Self(0x0000);
    /// Refused: SOP class not supported.
    pub const SOP_CLASS_NOT_SUPPORTED: Self = Self(0x0122);
    /// Unrecognized operation.
    pub const UNRECOGNIZED_OPERATION: Self = Self(0x0211);
    /// Refused: out of resources (disk watermark, object too large).
    pub const OUT_OF_RESOURCES: Self = Self(0xA700);
    /// Error: data set does not match SOP class.
    pub const DATASET_DOES_NOT_MATCH_SOP_CLASS: Self = Self(0xA900);
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: Self = Self(0xC000);
    /// Referenced Transfer Syntax not supported (a STOW-RS failure reason, PS3.18 I.2.2).
    pub const TRANSFER_SYNTAX_NOT_SUPPORTED: Self = Self(0xC122);

    pub fn is_success(self) -> bool {
        self.0 == 0
    }

    /// Pending (FF00, FF01): more responses of a C-FIND, C-MOVE or C-GET follow.
    pub fn is_pending(self) -> bool {
        self.0 == 0xFF00 || self.0 == 0xFF01
    }

    /// Warnings: 0001, Bxxx (PS3.7 §C.4).
    pub fn is_warning(self) -> bool {
        self.0 == 0x0001 || self.0 & 0xF000 == 0xB000
    }

    /// Refused: out of resources (A7xx), the one failure that sending the same object
    /// again may cure; the others (the object itself) will be refused again.
    pub fn is_out_of_resources(self) -> bool {
        self.0 & 0xFF00 == 0xA700
    }
}

impl fmt::Display for DimseStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{:04X}", self.0)
    }
}

/// Command Data Set Type value meaning "no data set follows" (PS3.7 §E.1).
pub const NO_DATASET: u16 = 0x0101;

/// A DIMSE command set, reduced to the fields the node reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Command {
    pub field: u16,
    pub affected_sop_class: Option<String>,
    pub affected_sop_instance: Option<String>,
    pub message_id: Option<u16>,
    pub message_id_responded_to: Option<u16>,
    pub priority: Option<u16>,
    pub has_dataset: bool,
    pub status: Option<u16>,
    pub error_comment: Option<String>,
    /// The AE a C-MOVE sends its sub-operations to.
    pub move_destination: Option<String>,
    /// Sub-operation counts of a C-MOVE or C-GET response.
    pub sub_operations: SubOperations,
}

/// Number of Remaining, Completed, Failed and Warning Sub-operations (0000,1020-1023).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubOperations {
    pub remaining: Option<u16>,
    pub completed: Option<u16>,
    pub failed: Option<u16>,
    pub warning: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("command set truncated at byte {offset}")]
    Truncated { offset: usize },
    #[error("command element ({group:04X},{element:04X}) is outside group 0000")]
    WrongGroup { group: u16, element: u16 },
    #[error("command element (0000,{element:04X}) has length {length}, expected {expected}")]
    BadLength {
        element: u16,
        length: usize,
        expected: usize,
    },
    #[error("command set has no Command Field (0000,0100)")]
    MissingCommandField,
}

const AFFECTED_SOP_CLASS: u16 = 0x0002;
const COMMAND_FIELD: u16 = 0x0100;
const MESSAGE_ID: u16 = 0x0110;
const MESSAGE_ID_RESPONDED_TO: u16 = 0x0120;
const PRIORITY: u16 = 0x0700;
const DATASET_TYPE: u16 = 0x0800;
const STATUS: u16 = 0x0900;
const ERROR_COMMENT: u16 = 0x0902;
const MOVE_DESTINATION: u16 = 0x0600;
const AFFECTED_SOP_INSTANCE: u16 = 0x1000;
const REMAINING: u16 = 0x1020;
const COMPLETED: u16 = 0x1021;
const FAILED: u16 = 0x1022;
const WARNING: u16 = 0x1023;

impl Command {
    /// A C-ECHO-RQ.
    pub fn echo_rq(message_id: u16) -> Self {
        Self {
            field: CommandField::C_ECHO_RQ.0,
            affected_sop_class: Some(super::uid::VERIFICATION.to_string()),
            message_id: Some(message_id),
            ..Self::default()
        }
    }

    /// A C-STORE-RQ with medium priority.
    pub fn store_rq(message_id: u16, sop_class: &str, sop_instance: &str) -> Self {
        Self {
            field: CommandField::C_STORE_RQ.0,
            affected_sop_class: Some(sop_class.to_string()),
            affected_sop_instance: Some(sop_instance.to_string()),
            message_id: Some(message_id),
            priority: Some(0),
            has_dataset: true,
            ..Self::default()
        }
    }

    /// A C-FIND-RQ, C-GET-RQ or C-MOVE-RQ (`field`) in the information model
    /// `sop_class`, with medium priority; its identifier follows as the data set.
    pub fn query_rq(
        field: CommandField,
        message_id: u16,
        sop_class: &str,
        move_destination: Option<&str>,
    ) -> Self {
        Self {
            field: field.0,
            affected_sop_class: Some(sop_class.to_string()),
            message_id: Some(message_id),
            priority: Some(0),
            has_dataset: true,
            move_destination: move_destination.map(str::to_string),
            ..Self::default()
        }
    }

    /// The response to this request with the given status.
    pub fn response(&self, status: DimseStatus, error_comment: Option<String>) -> Self {
        Self {
            field: CommandField(self.field).response().0,
            affected_sop_class: self.affected_sop_class.clone(),
            affected_sop_instance: self.affected_sop_instance.clone(),
            message_id_responded_to: self.message_id,
            status: Some(status.0),
            // Error Comment is only defined for failures (PS3.7 §C.4.2).
            error_comment: error_comment.filter(|_| !status.is_success()),
            ..Self::default()
        }
    }

    pub fn command_field(&self) -> CommandField {
        CommandField(self.field)
    }

    pub fn dimse_status(&self) -> Option<DimseStatus> {
        self.status.map(DimseStatus)
    }

    /// Encodes the command set, Command Group Length first (PS3.7 §6.3.1).
    pub fn encode(&self) -> Vec<u8> {
        let mut body = Vec::with_capacity(256);
        if let Some(v) = &self.affected_sop_class {
            put_uid(&mut body, AFFECTED_SOP_CLASS, v);
        }
        put_us(&mut body, COMMAND_FIELD, self.field);
        if let Some(v) = self.message_id {
            put_us(&mut body, MESSAGE_ID, v);
        }
        if let Some(v) = self.message_id_responded_to {
            put_us(&mut body, MESSAGE_ID_RESPONDED_TO, v);
        }
        if let Some(v) = &self.move_destination {
            let mut bytes = v.as_bytes().to_vec();
            if bytes.len() % 2 == 1 {
                bytes.push(b' ');
            }
            put_raw(&mut body, MOVE_DESTINATION, &bytes);
        }
        if let Some(v) = self.priority {
            put_us(&mut body, PRIORITY, v);
        }
        put_us(
            &mut body,
            DATASET_TYPE,
            if self.has_dataset { 0x0000 } else { NO_DATASET },
        );
        if let Some(v) = self.status {
            put_us(&mut body, STATUS, v);
        }
        if let Some(v) = &self.error_comment {
            // LO: at most 64 printable characters without backslash, trailing spaces
            // insignificant, padded to even length with a space.
            let text: String = v
                .chars()
                .filter(|c| (c.is_ascii_graphic() || *c == ' ') && *c != '\\')
                .take(64)
                .collect();
            let mut text = text.trim_end().to_string();
            if text.len() % 2 == 1 {
                text.push(' ');
            }
            put_raw(&mut body, ERROR_COMMENT, text.as_bytes());
        }
        if let Some(v) = &self.affected_sop_instance {
            put_uid(&mut body, AFFECTED_SOP_INSTANCE, v);
        }
        let counts = &self.sub_operations;
        for (element, count) in [
            (REMAINING, counts.remaining),
            (COMPLETED, counts.completed),
            (FAILED, counts.failed),
            (WARNING, counts.warning),
        ] {
            if let Some(v) = count {
                put_us(&mut body, element, v);
            }
        }
        let mut out = Vec::with_capacity(body.len() + 12);
        put_raw(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
        out.extend_from_slice(&body);
        out
    }

    /// Decodes a command set; elements this type does not model are skipped.
    pub fn decode(bytes: &[u8]) -> Result<Self, CommandError> {
        let mut cmd = Command::default();
        let mut field = None;
        let mut offset = 0;
        while offset < bytes.len() {
            let header = bytes
                .get(offset..offset + 8)
                .ok_or(CommandError::Truncated { offset })?;
            let group = u16::from_le_bytes([header[0], header[1]]);
            let element = u16::from_le_bytes([header[2], header[3]]);
            let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if group != 0x0000 {
                return Err(CommandError::WrongGroup { group, element });
            }
            let start = offset + 8;
            let value = start
                .checked_add(length)
                .and_then(|end| bytes.get(start..end))
                .ok_or(CommandError::Truncated { offset })?;
            match element {
                AFFECTED_SOP_CLASS => cmd.affected_sop_class = Some(text(value)),
                AFFECTED_SOP_INSTANCE => cmd.affected_sop_instance = Some(text(value)),
                ERROR_COMMENT => cmd.error_comment = Some(text(value)),
                COMMAND_FIELD => field = Some(us(element, value)?),
                MESSAGE_ID => cmd.message_id = Some(us(element, value)?),
                MESSAGE_ID_RESPONDED_TO => cmd.message_id_responded_to = Some(us(element, value)?),
                PRIORITY => cmd.priority = Some(us(element, value)?),
                DATASET_TYPE => cmd.has_dataset = us(element, value)? != NO_DATASET,
                STATUS => cmd.status = Some(us(element, value)?),
                MOVE_DESTINATION => cmd.move_destination = Some(text(value)),
                REMAINING => cmd.sub_operations.remaining = Some(us(element, value)?),
                COMPLETED => cmd.sub_operations.completed = Some(us(element, value)?),
                FAILED => cmd.sub_operations.failed = Some(us(element, value)?),
                WARNING => cmd.sub_operations.warning = Some(us(element, value)?),
                _ => {}
            }
            offset = start + length;
        }
        cmd.field = field.ok_or(CommandError::MissingCommandField)?;
        Ok(cmd)
    }
}

fn put_raw(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn put_us(out: &mut Vec<u8>, element: u16, value: u16) {
    put_raw(out, element, &value.to_le_bytes());
}

fn put_uid(out: &mut Vec<u8>, element: u16, value: &str) {
    let mut bytes = value.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    put_raw(out, element, &bytes);
}

fn us(element: u16, value: &[u8]) -> Result<u16, CommandError> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(CommandError::BadLength {
            element,
            length: value.len(),
            expected: 2,
        }),
    }
}

fn text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_request_round_trips() {
        let rq = Command::store_rq(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.45");
        let decoded = Command::decode(&rq.encode()).unwrap();
        assert_eq!(decoded, rq);
        assert_eq!(decoded.command_field(), CommandField::C_STORE_RQ);
    }

    /// Found by the `command` fuzz target: an Error Comment with control characters
    /// and trailing NULs changed again at its second encoding. LO keeps printable
    /// characters only, without trailing spaces: one encoding is final.
    #[test]
    fn an_error_comment_is_final_after_one_encoding() {
        let found = [
            0x00, 0x00, 0x02, 0x09, 0x08, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x80, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let decoded = Command::decode(&found).unwrap();
        let once = decoded.encode();
        assert_eq!(Command::decode(&once).unwrap().encode(), once);
        let rsp = Command::store_rq(1, "1.2", "3.4").response(
            DimseStatus::CANNOT_UNDERSTAND,
            Some("a\0b\x01c\\d  é ".into()),
        );
        let decoded = Command::decode(&rsp.encode()).unwrap();
        assert_eq!(decoded.error_comment.as_deref(), Some("abcd"));
    }

    #[test]
    fn a_move_request_and_its_counts_round_trip() {
        let rq = Command::query_rq(
            CommandField::C_MOVE_RQ,
            3,
            "1.2.840.10008.5.1.4.1.2.2.2",
            Some("SEGNODE"),
        );
        let decoded = Command::decode(&rq.encode()).unwrap();
        assert_eq!(decoded, rq);
        assert_eq!(decoded.move_destination.as_deref(), Some("SEGNODE"));
        let mut rsp = rq.response(DimseStatus(0xFF00), None);
        rsp.sub_operations = SubOperations {
            remaining: Some(2),
            completed: Some(5),
            failed: Some(1),
            warning: Some(0),
        };
        let decoded = Command::decode(&rsp.encode()).unwrap();
        assert_eq!(decoded.sub_operations, rsp.sub_operations);
        assert!(decoded.dimse_status().unwrap().is_pending());
    }

    #[test]
    fn response_carries_ids_and_status() {
        let rq = Command::store_rq(9, "1.2.3", "4.5.6");
        let rsp = rq.response(DimseStatus::CANNOT_UNDERSTAND, Some("bad thing".into()));
        let decoded = Command::decode(&rsp.encode()).unwrap();
        assert_eq!(decoded.field, 0x8001);
        assert_eq!(decoded.message_id_responded_to, Some(9));
        assert_eq!(decoded.dimse_status(), Some(DimseStatus::CANNOT_UNDERSTAND));
        assert_eq!(decoded.error_comment.as_deref(), Some("bad thing"));
        assert_eq!(decoded.affected_sop_instance.as_deref(), Some("4.5.6"));
        assert!(!decoded.has_dataset);
    }

    #[test]
    fn group_length_matches_body() {
        let bytes = Command::echo_rq(1).encode();
        let glen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
        assert_eq!(glen, bytes.len() - 12);
    }

    #[test]
    fn truncated_and_absurd_lengths_are_errors() {
        let bytes = Command::echo_rq(1).encode();
        assert!(matches!(
            Command::decode(&bytes[..bytes.len() - 1]),
            Err(CommandError::Truncated { .. })
        ));
        let mut absurd = bytes.clone();
        absurd[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Command::decode(&absurd),
            Err(CommandError::Truncated { .. })
        ));
        let mut wrong_group = bytes;
        wrong_group[0] = 0x08;
        assert!(matches!(
            Command::decode(&wrong_group),
            Err(CommandError::WrongGroup { .. })
        ));
    }

    #[test]
    fn warning_classification() {
        assert!(DimseStatus(0xB000).is_warning());
        assert!(DimseStatus(0x0001).is_warning());
        assert!(!DimseStatus::OUT_OF_RESOURCES.is_warning());
    }
}
