//! The DICOM Upper Layer on a TCP or TLS stream (PS3.8 §9): PDU framing with length limits
//! and timeouts, P-DATA-TF fragmentation into presentation data values, and the
//! association PDUs, which `dicom_ul::pdu` parses and writes. Used by the SCP
//! (`receive`) and the SCU (`deliver`). Every read has a deadline and every PDU
//! length is checked before anything is allocated for it.

use std::io;
use std::time::Duration;

use dicom_ul::pdu::{MAXIMUM_PDU_SIZE, Pdu};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// What the Upper Layer runs on: a TCP stream, or TLS over one.
pub trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// A TCP stream ready for the Upper Layer: TCP_NODELAY set, since without it every
/// small response waits for the peer's delayed ACK (20-45 ms an object).
pub fn plain(stream: TcpStream) -> TcpStream {
    let _ = stream.set_nodelay(true);
    stream
}

/// PDU type codes (PS3.8 §9.3.1) read after association.
pub mod pdu_type {
    pub const P_DATA_TF: u8 = 0x04;
    pub const RELEASE_RQ: u8 = 0x05;
    pub const RELEASE_RP: u8 = 0x06;
    pub const ABORT: u8 = 0x07;
}

/// The largest association negotiation PDU accepted: generous for a PACS proposing
/// every storage class with several transfer syntaxes each (~40 kB), small enough that
/// a hostile length cannot make the node allocate much.
pub const MAX_ASSOCIATION_PDU: u32 = 1024 * 1024;

/// Fragment size cap when the peer announces "no limit" (0).
const UNLIMITED_PEER_PDU: u32 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum UlError {
    #[error("network error")]
    Io(#[from] io::Error),
    #[error("timed out after {seconds:.0} s waiting for {waiting_for}")]
    Timeout {
        waiting_for: &'static str,
        seconds: f64,
    },
    #[error("peer closed the connection")]
    Closed,
    #[error("PDU of {length} bytes exceeds the limit of {limit} bytes")]
    PduTooLarge { length: u32, limit: u32 },
    #[error("malformed PDU: {0}")]
    Malformed(String),
    #[error("unexpected PDU type 0x{0:02X}")]
    UnexpectedPdu(u8),
}

/// The Maximum Length a peer announced in its user information (0 = no limit).
pub fn announced_max_pdu(items: &[dicom_ul::pdu::UserVariableItem]) -> u32 {
    items
        .iter()
        .find_map(|v| match v {
            dicom_ul::pdu::UserVariableItem::MaxLength(len) => Some(*len),
            _ => None,
        })
        .unwrap_or(0)
}

/// Whether a peer's maximum PDU length can carry data: 0 (no limit), or room for a
/// PDV item header (6 bytes) and at least one byte of data.
pub fn max_pdu_is_usable(length: u32) -> bool {
    length == 0 || length > PDV_HEADER
}

/// Length of a PDV item's header inside a P-DATA-TF PDU: item length (4), presentation
/// context id (1), message control header (1).
const PDV_HEADER: u32 = 6;

/// One presentation data value, located in the current PDU body.
#[derive(Debug, Clone, Copy)]
pub struct Pdv {
    pub pc_id: u8,
    pub is_command: bool,
    pub is_last: bool,
    start: usize,
    end: usize,
}

/// What the next read brought.
#[derive(Debug)]
pub enum Event {
    Pdv(Pdv),
    ReleaseRq,
    ReleaseRp,
    Abort,
}

pub struct UlStream {
    stream: Box<dyn Transport>,
    /// The largest P-DATA PDU we accept (announced to the peer).
    max_incoming: u32,
    /// The largest PDU the peer accepts.
    max_outgoing: u32,
    body: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
}

impl UlStream {
    /// The Upper Layer on `stream` (a [`plain`] TCP stream or TLS over one).
    pub fn new(stream: impl Transport + 'static, max_incoming: u32) -> Self {
        Self {
            stream: Box::new(stream),
            max_incoming,
            max_outgoing: UNLIMITED_PEER_PDU,
            body: Vec::new(),
            pos: 0,
            out: Vec::new(),
        }
    }

    /// Sets the peer's maximum PDU length from its negotiation (0 = no limit): any
    /// value that [`max_pdu_is_usable`] is honoured, however small.
    pub fn set_peer_max_pdu(&mut self, length: u32) {
        self.max_outgoing = if length == 0 {
            UNLIMITED_PEER_PDU
        } else {
            length.clamp(PDV_HEADER + 1, UNLIMITED_PEER_PDU)
        };
    }

    async fn read_raw(
        &mut self,
        limit: u32,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<u8, UlError> {
        let read = async {
            let mut header = [0u8; 6];
            match self.stream.read_exact(&mut header).await {
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(UlError::Closed),
                r => r?,
            };
            let length = u32::from_be_bytes([header[2], header[3], header[4], header[5]]);
            if length > limit {
                return Err(UlError::PduTooLarge { length, limit });
            }
            self.body.clear();
            self.body.resize(length as usize, 0);
            self.stream
                .read_exact(&mut self.body)
                .await
                .map_err(|e| match e.kind() {
                    io::ErrorKind::UnexpectedEof => {
                        UlError::Malformed(format!("PDU truncated: {length} bytes announced"))
                    }
                    _ => UlError::Io(e),
                })?;
            self.pos = 0;
            Ok(header[0])
        };
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| UlError::Timeout {
                waiting_for,
                seconds: timeout.as_secs_f64(),
            })?
    }

    /// Reads an association-phase PDU (A-ASSOCIATE-RQ/AC/RJ, A-ABORT, release).
    pub async fn read_control_pdu(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Pdu, UlError> {
        let kind = self
            .read_raw(MAX_ASSOCIATION_PDU, timeout, waiting_for)
            .await?;
        let mut bytes = Vec::with_capacity(self.body.len() + 6);
        bytes.push(kind);
        bytes.push(0);
        bytes.extend_from_slice(&(self.body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&self.body);
        self.body.clear();
        match dicom_ul::pdu::read_pdu(&bytes[..], MAXIMUM_PDU_SIZE, false) {
            Ok(Some(pdu)) => Ok(pdu),
            Ok(None) => Err(UlError::Malformed("empty PDU".into())),
            Err(e) => Err(UlError::Malformed(e.to_string())),
        }
    }

    /// The next presentation data value, or the release/abort PDU that came instead.
    pub async fn next_event(
        &mut self,
        timeout: Duration,
        waiting_for: &'static str,
    ) -> Result<Event, UlError> {
        if self.pos >= self.body.len() {
            let kind = self
                .read_raw(self.max_incoming, timeout, waiting_for)
                .await?;
            match kind {
                pdu_type::P_DATA_TF => {}
                pdu_type::RELEASE_RQ => return Ok(Event::ReleaseRq),
                pdu_type::RELEASE_RP => return Ok(Event::ReleaseRp),
                pdu_type::ABORT => return Ok(Event::Abort),
                other => return Err(UlError::UnexpectedPdu(other)),
            }
            if self.body.is_empty() {
                return Err(UlError::Malformed(
                    "P-DATA-TF without presentation data values".into(),
                ));
            }
        }
        let rest = &self.body[self.pos..];
        if rest.len() < 6 {
            return Err(UlError::Malformed(
                "presentation data value header truncated".into(),
            ));
        }
        let item_length = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if item_length < 2 || item_length > rest.len() - 4 {
            return Err(UlError::Malformed(format!(
                "presentation data value length {item_length} does not fit its PDU"
            )));
        }
        let control = rest[5];
        let pdv = Pdv {
            pc_id: rest[4],
            is_command: control & 0x01 != 0,
            is_last: control & 0x02 != 0,
            start: self.pos + 6,
            end: self.pos + 4 + item_length,
        };
        self.pos = pdv.end;
        Ok(Event::Pdv(pdv))
    }

    /// The bytes of a PDV returned by the latest [`UlStream::next_event`].
    pub fn pdv_data(&self, pdv: &Pdv) -> &[u8] {
        &self.body[pdv.start..pdv.end]
    }

    pub async fn send_pdu(&mut self, pdu: &Pdu, timeout: Duration) -> Result<(), UlError> {
        self.out.clear();
        dicom_ul::pdu::write_pdu(&mut self.out, pdu)
            .map_err(|e| UlError::Malformed(e.to_string()))?;
        self.flush_out(timeout).await
    }

    /// Sends a DIMSE message: the command set, then the data set if any, each split
    /// into P-DATA-TF PDUs that fit the peer's maximum PDU length.
    pub async fn send_message(
        &mut self,
        pc_id: u8,
        command: &[u8],
        dataset: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<(), UlError> {
        self.send_fragments(pc_id, command, true, timeout).await?;
        if let Some(data) = dataset {
            self.send_fragments(pc_id, data, false, timeout).await?;
        }
        Ok(())
    }

    async fn send_fragments(
        &mut self,
        pc_id: u8,
        bytes: &[u8],
        is_command: bool,
        timeout: Duration,
    ) -> Result<(), UlError> {
        let chunk = (self.max_outgoing - PDV_HEADER) as usize;
        let mut chunks = bytes.chunks(chunk).peekable();
        if bytes.is_empty() {
            return Err(UlError::Malformed("empty DIMSE fragment".into()));
        }
        while let Some(part) = chunks.next() {
            let last = chunks.peek().is_none();
            let control = u8::from(is_command) | (u8::from(last) << 1);
            self.out.clear();
            self.out.push(pdu_type::P_DATA_TF);
            self.out.push(0);
            self.out
                .extend_from_slice(&(part.len() as u32 + 6).to_be_bytes());
            self.out
                .extend_from_slice(&(part.len() as u32 + 2).to_be_bytes());
            self.out.push(pc_id);
            self.out.push(control);
            self.out.extend_from_slice(part);
            self.flush_out(timeout).await?;
        }
        Ok(())
    }

    async fn flush_out(&mut self, timeout: Duration) -> Result<(), UlError> {
        let write = async {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(timeout, write)
            .await
            .map_err(|_| UlError::Timeout {
                waiting_for: "the peer to accept data",
                seconds: timeout.as_secs_f64(),
            })??;
        Ok(())
    }

    /// Sends an A-ABORT (service provider) and closes, ignoring errors: the peer may
    /// already be gone.
    pub async fn abort(mut self) {
        let pdu = Pdu::AbortRQ {
            source: dicom_ul::pdu::AbortRQSource::ServiceProvider(
                dicom_ul::pdu::AbortRQServiceProviderReason::ReasonNotSpecified,
            ),
        };
        let _ = self.send_pdu(&pdu, Duration::from_secs(2)).await;
        let _ = self.stream.shutdown().await;
    }

    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}
