//! HL7 v2.5.1 results for the RIS: one ORU^R01 per finished job, written with the
//! job's other result objects (so that every attempt sends the same message) and sent
//! by the outbox over MLLP, which waits for the ACK: AA is delivered, AE (an error at
//! the receiver) is retried, AR (rejected) is not; no ACK within the time-out is
//! retried. Every field is escaped by the HL7 rules (§2.7): a patient name with
//! `|^~\&` stays one field.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::config::Hl7Destination;
use crate::sr::Organ;

/// MLLP's frame: a start block, the message, an end block and a carriage return.
const START_BLOCK: u8 = 0x0B;
const END_BLOCK: [u8; 2] = [0x1C, 0x0D];

/// The largest ACK read back.
const MAX_ACK_BYTES: usize = 64 * 1024;

/// What the message is about: the patient and the order, from the source series, and
/// the job.
#[derive(Debug, Clone, Default)]
pub struct Order {
    pub patient_id: String,
    /// As DICOM writes it: `Family^Given^Middle^Prefix^Suffix`.
    pub patient_name: String,
    pub birth_date: String,
    pub sex: String,
    pub accession_number: String,
    pub study_uid: String,
    pub series_uid: String,
    pub job_id: i64,
}

impl Order {
    /// The patient and order of a source instance (its header up to the pixel data);
    /// fields it lacks stay empty.
    pub fn read(path: &std::path::Path, job_id: i64) -> Self {
        use dicom_dictionary_std::tags;
        let object = dicom_object::OpenFileOptions::new()
            .read_until(tags::PIXEL_DATA)
            .open_file(path);
        let Ok(object) = object else {
            return Self {
                job_id,
                ..Self::default()
            };
        };
        let text = |tag| {
            object
                .element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|v| v.trim_end_matches(['\0', ' ']).to_string())
                .unwrap_or_default()
        };
        Self {
            patient_id: text(tags::PATIENT_ID),
            patient_name: text(tags::PATIENT_NAME),
            birth_date: text(tags::PATIENT_BIRTH_DATE),
            sex: text(tags::PATIENT_SEX),
            accession_number: text(tags::ACCESSION_NUMBER),
            study_uid: text(tags::STUDY_INSTANCE_UID),
            series_uid: text(tags::SERIES_INSTANCE_UID),
            job_id,
        }
    }
}

/// What the job found: its organs and the SOP Instance UIDs of its SEG and report.
#[derive(Debug, Clone, Default)]
pub struct Findings<'a> {
    pub organs: &'a [Organ],
    pub seg_uid: Option<&'a str>,
    pub sr_uid: Option<&'a str>,
}

/// Escapes text for an HL7 field with the default delimiters `|^~\&`: the escape
/// character first, then the others; line breaks become `\.br\`, other control
/// characters are dropped.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' | '\n' => out.push_str("\\.br\\"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A DICOM person name as an HL7 XPN: family, given, middle, suffix, prefix (DICOM
/// puts the prefix before the suffix), each component escaped.
fn person_name(dicom: &str) -> String {
    let c: Vec<&str> = dicom.split('^').collect();
    let at = |i: usize| escape(c.get(i).copied().unwrap_or("").trim());
    let mut name = [at(0), at(1), at(2), at(4), at(3)].join("^");
    while name.ends_with('^') {
        name.pop();
    }
    name
}

/// An HL7 timestamp (DTM) in UTC.
fn timestamp(ms: i64) -> String {
    let format = time::macros::format_description!("[year][month][day][hour][minute][second]");
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .map_or_else(String::new, |t| t + "+0000")
}

/// A number as an NM value: at most one decimal, no exponent.
fn number(v: f64) -> String {
    format!("{v:.1}")
}

/// The ORU^R01 for a job: MSH, PID, ORC, OBR, then per organ three OBX sharing a
/// sub-ID (volume in mL, mean attenuation in HU, the quality verdict with its reasons),
/// then a reference to the SEG and to the report. Segments end with a carriage return.
pub fn oru_r01(
    dest: &Hl7Destination,
    control_id: &str,
    at_ms: i64,
    order: &Order,
    findings: &Findings<'_>,
) -> String {
    let now = timestamp(at_ms);
    let accession = escape(&order.accession_number);
    let filler = format!("{}^SEGNODE", order.job_id);
    let mut segments = vec![
        format!(
            "MSH|^~\\&|{}|{}|{}|{}|{now}||ORU^R01^ORU_R01|{}|P|2.5.1|||AL|NE||UNICODE UTF-8",
            escape(&dest.sending_application),
            escape(&dest.sending_facility),
            escape(&dest.receiving_application),
            escape(&dest.receiving_facility),
            escape(control_id),
        ),
        format!(
            "PID|1||{}^^^^PI||{}||{}|{}",
            escape(&order.patient_id),
            person_name(&order.patient_name),
            escape(&order.birth_date),
            escape(&order.sex),
        ),
        format!("ORC|RE|{accession}|{filler}||CM"),
        format!(
            "OBR|1|{accession}|{filler}|SEGNODE^Organ segmentation^L|||{now}|||||||||||{}|{}|||{now}||CT|F",
            escape(&order.study_uid),
            escape(&order.series_uid),
        ),
    ];
    let mut n = 0;
    let mut obx = |value_type: &str, id: String, sub: usize, value: String, unit: &str| {
        n += 1;
        segments.push(format!(
            "OBX|{n}|{value_type}|{id}|{sub}|{value}|{unit}|||||F|||{now}"
        ));
    };
    for (i, o) in findings.organs.iter().filter(|o| !o.left_out).enumerate() {
        let sub = i + 1;
        let name = escape(&o.name);
        let label = escape(&o.name.replace('_', " "));
        obx(
            "NM",
            format!("{name}.volume^{label} volume^99SEGNODE"),
            sub,
            number(o.ml),
            "mL^millilitre^UCUM",
        );
        obx(
            "NM",
            format!("{name}.attenuation^{label} mean attenuation^99SEGNODE"),
            sub,
            number(o.hu_mean),
            "[hnsf'U]^Hounsfield unit^UCUM",
        );
        let reasons: Vec<String> =
            o.qa.reasons
                .iter()
                .map(|r| format!("{}: {}", r.code.as_str(), r.detail))
                .collect();
        let verdict = o.qa.verdict.as_str();
        obx(
            "ST",
            format!("{name}.quality^{label} quality verdict^99SEGNODE"),
            sub,
            escape(&if reasons.is_empty() {
                verdict.to_string()
            } else {
                format!("{verdict} ({})", reasons.join("; "))
            }),
            "",
        );
    }
    let base = findings.organs.len() + 1;
    for (k, (uid, what)) in [
        (findings.seg_uid, "SEG^DICOM Segmentation"),
        (findings.sr_uid, "SR^DICOM measurement report"),
    ]
    .into_iter()
    .enumerate()
    {
        if let Some(uid) = uid {
            obx(
                "RP",
                format!("{what}^99SEGNODE"),
                base + k,
                format!(
                    "{}^SEGNODE^Application^DICOM",
                    escape(&format!("{}/{uid}", order.study_uid))
                ),
                "",
            );
        }
    }
    segments.join("\r") + "\r"
}

/// What the receiver answered (MSA-1), with MSA-3's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// AA (or CA): accepted.
    Accepted,
    /// AE (or CE): an error at the receiver; sending again may succeed.
    Error(String),
    /// AR (or CR): rejected; sending the same message again will not help.
    Rejected(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Hl7Error {
    #[error("cannot connect to {peer}")]
    Connect {
        peer: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{peer} did not acknowledge within {seconds} s")]
    NoAck { peer: String, seconds: f64 },
    #[error("{peer}: {message}")]
    Exchange { peer: String, message: String },
}

/// Sends one framed message over MLLP and reads its ACK, within the destination's
/// time-out.
pub async fn send(dest: &Hl7Destination, message: &[u8]) -> Result<Ack, Hl7Error> {
    let peer = dest.address();
    let exchange = |message: String| Hl7Error::Exchange {
        peer: peer.clone(),
        message,
    };
    let mut stream = tokio::time::timeout(
        dest.timeout,
        TcpStream::connect((dest.host.as_str(), dest.port)),
    )
    .await
    .map_err(|_| Hl7Error::NoAck {
        peer: peer.clone(),
        seconds: dest.timeout.as_secs_f64(),
    })?
    .map_err(|source| Hl7Error::Connect {
        peer: peer.clone(),
        source,
    })?;
    let mut frame = Vec::with_capacity(message.len() + 3);
    frame.push(START_BLOCK);
    frame.extend_from_slice(message);
    frame.extend_from_slice(&END_BLOCK);
    let answer = tokio::time::timeout(dest.timeout, async {
        stream.write_all(&frame).await?;
        read_frame(&mut stream).await
    })
    .await
    .map_err(|_| Hl7Error::NoAck {
        peer: peer.clone(),
        seconds: dest.timeout.as_secs_f64(),
    })?
    .map_err(|e| exchange(e.to_string()))?;
    let _ = stream.shutdown().await;
    ack(&answer, control_id(message).unwrap_or_default()).map_err(exchange)
}

/// One MLLP frame's content.
async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the connection closed before the ACK's end block",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(2).position(|w| w == END_BLOCK) {
            let start = buf
                .iter()
                .position(|&b| b == START_BLOCK)
                .map_or(0, |s| s + 1);
            return Ok(buf[start.min(end)..end].to_vec());
        }
        if buf.len() > MAX_ACK_BYTES {
            return Err(std::io::Error::other("an ACK over 64 KiB"));
        }
    }
}

/// MSH-10 of a message.
fn control_id(message: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(message).ok()?;
    let msh = text.split('\r').next()?;
    msh.split('|').nth(9).map(str::to_string)
}

/// Reads an ACK: its MSA segment, which must acknowledge `control_id`.
fn ack(answer: &[u8], control_id: String) -> Result<Ack, String> {
    let text = String::from_utf8_lossy(answer);
    let msa = text
        .split(['\r', '\n'])
        .find(|s| s.starts_with("MSA|"))
        .ok_or_else(|| "the answer has no MSA segment".to_string())?;
    let fields: Vec<&str> = msa.split('|').collect();
    let code = fields.get(1).copied().unwrap_or_default();
    let acknowledged = fields.get(2).copied().unwrap_or_default();
    if acknowledged != control_id {
        return Err(format!(
            "the ACK is for message {acknowledged:?}, not {control_id:?}"
        ));
    }
    let detail = fields.get(3).copied().unwrap_or_default().to_string();
    match code {
        "AA" | "CA" => Ok(Ack::Accepted),
        "AE" | "CE" => Ok(Ack::Error(detail)),
        "AR" | "CR" => Ok(Ack::Rejected(detail)),
        other => Err(format!("the ACK code {other:?} is not AA, AE or AR")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn dest() -> Hl7Destination {
        Hl7Destination {
            name: "ris".into(),
            host: "127.0.0.1".into(),
            port: 1,
            sending_application: "SEGNODE".into(),
            sending_facility: "RAD".into(),
            receiving_application: "RIS".into(),
            receiving_facility: "HOSP".into(),
            timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn delimiters_in_text_are_escaped_and_the_escape_first() {
        assert_eq!(escape(r"a|b^c~d\e&f"), r"a\F\b\S\c\R\d\E\e\T\f");
        assert_eq!(escape("two\r\nlines\u{7}"), r"two\.br\\.br\lines");
        assert_eq!(
            person_name("O|Brien^Ann~Marie&Co^^Dr"),
            r"O\F\Brien^Ann\R\Marie\T\Co^^^Dr"
        );
        assert_eq!(person_name("Doe^John"), "Doe^John");
    }

    #[test]
    fn the_message_has_a_segment_per_line_and_the_name_in_one_field() {
        let order = Order {
            patient_id: "P|1".into(),
            patient_name: r"O|Brien^Ann~Marie&Co\X".into(),
            accession_number: "ACC^1".into(),
            study_uid: "1.2.3".into(),
            series_uid: "1.2.3.4".into(),
            job_id: 7,
            ..Order::default()
        };
        let m = oru_r01(&dest(), "2.25.9", 0, &order, &Findings::default());
        let segments: Vec<&str> = m.trim_end_matches('\r').split('\r').collect();
        assert_eq!(segments[0].split('|').count(), 18, "{}", segments[0]);
        assert!(segments[0].starts_with(
            "MSH|^~\\&|SEGNODE|RAD|RIS|HOSP|19700101000000+0000||ORU^R01^ORU_R01|2.25.9|P|2.5.1"
        ));
        let pid: Vec<&str> = segments[1].split('|').collect();
        assert_eq!(pid[3], r"P\F\1^^^^PI");
        assert_eq!(pid[5], r"O\F\Brien^Ann\R\Marie\T\Co\E\X");
        assert_eq!(control_id(m.as_bytes()).as_deref(), Some("2.25.9"));
        let obr: Vec<&str> = segments[3].split('|').collect();
        assert_eq!(
            (obr[18], obr[19], obr[24], obr[25]),
            ("1.2.3", "1.2.3.4", "CT", "F")
        );
        let findings = Findings {
            seg_uid: Some("1.2.3.9"),
            ..Findings::default()
        };
        let m = oru_r01(&dest(), "2.25.9", 0, &order, &findings);
        let rp: Vec<&str> = m
            .trim_end()
            .rsplit('\r')
            .next()
            .unwrap()
            .split('|')
            .collect();
        assert_eq!((rp[0], rp[2], rp[11]), ("OBX", "RP", "F"));
        assert_eq!(rp[5], "1.2.3/1.2.3.9^SEGNODE^Application^DICOM");
    }

    #[test]
    fn acks_are_read_by_code_and_must_name_the_message() {
        let ack_of = |code: &str, id: &str| {
            format!(
                "MSH|^~\\&|RIS|HOSP|SEGNODE|RAD|20261207||ACK^R01|A1|P|2.5.1\rMSA|{code}|{id}|why\r"
            )
        };
        let id = || "2.25.9".to_string();
        assert_eq!(
            ack(ack_of("AA", "2.25.9").as_bytes(), id()),
            Ok(Ack::Accepted)
        );
        assert_eq!(
            ack(ack_of("AE", "2.25.9").as_bytes(), id()),
            Ok(Ack::Error("why".into()))
        );
        assert_eq!(
            ack(ack_of("AR", "2.25.9").as_bytes(), id()),
            Ok(Ack::Rejected("why".into()))
        );
        assert!(ack(ack_of("AA", "2.25.8").as_bytes(), id()).is_err());
        assert!(ack(b"MSH|^~\\&|\r", id()).is_err());
    }
}
