//! multipart/related bodies (RFC 2046 §5.1, RFC 2387) as DICOMweb uses them: read part
//! by part from a stream without holding more than one part (STOW-RS), and written
//! (WADO-RS). The reader bounds every size a sender controls: the whole body, each
//! part (a larger one is drained and reported with its first bytes, so that the parts
//! after it are still read), and each part's headers.

use axum::body::Bytes;
use futures_util::{Stream, StreamExt};
use memchr::memmem::Finder;

/// How many bytes of a part over the limit are kept to say which instance it was.
const HEAD_BYTES: usize = 64 * 1024;
/// The longest boundary accepted.
const MAX_BOUNDARY: usize = 200;
/// The most bytes of headers one part may have.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The bounds of one body.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub part_bytes: u64,
    pub body_bytes: u64,
}

/// One part.
#[derive(Debug)]
pub struct Part {
    /// Its Content-Type header, if it had one.
    pub content_type: Option<String>,
    pub body: PartBody,
}

#[derive(Debug)]
pub enum PartBody {
    Complete(Vec<u8>),
    /// Larger than the part limit: its first bytes, and its size.
    TooLarge {
        head: Vec<u8>,
        size: u64,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultipartError {
    #[error("the body ended before the closing boundary (truncated, or a wrong boundary)")]
    Truncated,
    #[error("malformed part: {0}")]
    Malformed(String),
    #[error("the body is larger than {0} bytes")]
    BodyTooLarge(u64),
    #[error("cannot read the body: {0}")]
    Read(String),
}

/// Reads the parts of one body in turn.
pub struct Reader<S> {
    stream: S,
    /// Bytes read and not yet consumed, from `pos`.
    buf: Vec<u8>,
    pos: usize,
    /// CRLF, "--", the boundary: what ends a part.
    delimiter: Finder<'static>,
    read: u64,
    limits: Limits,
    eof: bool,
    /// The first boundary was found.
    started: bool,
    done: bool,
}

impl<S, E> Reader<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub fn new(stream: S, boundary: &str, limits: Limits) -> Self {
        Self {
            stream,
            // The first boundary has no CRLF before it: as if it had.
            buf: b"\r\n".to_vec(),
            pos: 0,
            delimiter: Finder::new(format!("\r\n--{boundary}").as_bytes()).into_owned(),
            read: 0,
            limits,
            eof: false,
            started: false,
            done: false,
        }
    }

    /// Reads one more chunk into the buffer, dropping what was consumed; false at the
    /// end of the body.
    async fn fill(&mut self) -> Result<bool, MultipartError> {
        if self.eof {
            return Ok(false);
        }
        match self.stream.next().await {
            None => {
                self.eof = true;
                Ok(false)
            }
            Some(Err(e)) => Err(MultipartError::Read(e.to_string())),
            Some(Ok(chunk)) => {
                self.read += chunk.len() as u64;
                if self.read > self.limits.body_bytes {
                    return Err(MultipartError::BodyTooLarge(self.limits.body_bytes));
                }
                if self.pos > 0 {
                    self.buf.drain(..self.pos);
                    self.pos = 0;
                }
                self.buf.extend_from_slice(&chunk);
                Ok(true)
            }
        }
    }

    /// The offset (from `pos`) of the next delimiter, reading as needed. Each time it
    /// is not in what was read, `on_miss` sees the buffer and `pos` and may drop bytes
    /// after `pos` that are not wanted (it must leave the last `needle - 1`, which may
    /// start a delimiter that straddles two chunks).
    async fn find_delimiter(
        &mut self,
        mut on_miss: impl FnMut(&mut Vec<u8>, usize),
    ) -> Result<usize, MultipartError> {
        let needle = self.delimiter.needle().len();
        let mut from = 0;
        loop {
            if let Some(at) = self.delimiter.find(&self.buf[self.pos + from..]) {
                return Ok(from + at);
            }
            on_miss(&mut self.buf, self.pos);
            // Everything before this was searched; offsets from `pos` survive `fill`.
            from = (self.buf.len() - self.pos).saturating_sub(needle - 1);
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
    }

    /// The next part, or `None` after the closing boundary.
    pub async fn next_part(&mut self) -> Result<Option<Part>, MultipartError> {
        if self.done {
            return Ok(None);
        }
        let needle = self.delimiter.needle().len();
        if !self.started {
            // The preamble, if any, up to the first boundary.
            let at = self
                .find_delimiter(|buf, pos| {
                    let drop = (buf.len() - pos).saturating_sub(needle - 1);
                    buf.drain(pos..pos + drop);
                })
                .await?;
            self.pos += at + needle;
            self.started = true;
        }
        // After a boundary: "--" closes the body; else padding and CRLF.
        while self.buf.len() - self.pos < 2 {
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
        if &self.buf[self.pos..self.pos + 2] == b"--" {
            self.done = true;
            return Ok(None);
        }
        let content_type = self.headers().await?;
        let part_limit = usize::try_from(self.limits.part_bytes).unwrap_or(usize::MAX);
        let mut dropped: u64 = 0;
        let mut head: Option<Vec<u8>> = None;
        let at = self
            .find_delimiter(|buf, pos| {
                let held = buf.len() - pos;
                if head.is_none() && held > part_limit.saturating_add(needle) {
                    head = Some(buf[pos..pos + HEAD_BYTES.min(held)].to_vec());
                }
                if head.is_some() {
                    // Over the limit: keep only what may start the delimiter.
                    let drop = held.saturating_sub(needle - 1);
                    buf.drain(pos..pos + drop);
                    dropped += drop as u64;
                }
            })
            .await?;
        let size = dropped + at as u64;
        let body = match head {
            Some(head) => {
                self.pos += at + needle;
                PartBody::TooLarge { head, size }
            }
            None if size > self.limits.part_bytes => {
                let head = self.buf[self.pos..self.pos + HEAD_BYTES.min(at)].to_vec();
                self.pos += at + needle;
                PartBody::TooLarge { head, size }
            }
            None => {
                let mut body = std::mem::take(&mut self.buf);
                self.buf = body.split_off(self.pos + at);
                body.drain(..self.pos);
                self.pos = needle;
                PartBody::Complete(body)
            }
        };
        Ok(Some(Part { content_type, body }))
    }

    /// Reads the rest of a boundary line and the part's headers; its Content-Type.
    async fn headers(&mut self) -> Result<Option<String>, MultipartError> {
        loop {
            let held = &self.buf[self.pos..];
            // Transport padding after the boundary, then CRLF; then headers and an empty line.
            let padding = held
                .iter()
                .take_while(|b| **b == b' ' || **b == b'\t')
                .count();
            let rest = &held[padding..];
            if rest.len() >= 2 && !rest.starts_with(b"\r\n") {
                return Err(MultipartError::Malformed(
                    "a boundary is followed by something other than a line end".into(),
                ));
            }
            if rest.len() >= 2 {
                let lines = &rest[2..];
                let end = if lines.starts_with(b"\r\n") {
                    Some(0)
                } else {
                    memchr::memmem::find(lines, b"\r\n\r\n").map(|e| e + 2)
                };
                if let Some(end) = end {
                    let mut fields = [httparse::EMPTY_HEADER; 32];
                    let content_type = match httparse::parse_headers(&lines[..end + 2], &mut fields)
                    {
                        Ok(httparse::Status::Complete((_, parsed))) => parsed
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
                            .map(|h| String::from_utf8_lossy(h.value).trim().to_string()),
                        Ok(httparse::Status::Partial) | Err(_) => {
                            return Err(MultipartError::Malformed(
                                "unreadable part headers".into(),
                            ));
                        }
                    };
                    self.pos += padding + 2 + end + 2;
                    return Ok(content_type);
                }
                if lines.len() > MAX_HEADER_BYTES {
                    return Err(MultipartError::Malformed(format!(
                        "part headers longer than {MAX_HEADER_BYTES} bytes"
                    )));
                }
            }
            if !self.fill().await? {
                return Err(MultipartError::Truncated);
            }
        }
    }
}

/// The boundary of a `multipart/related` Content-Type and its `type` parameter, or why
/// the body cannot be read as one.
pub fn related(content_type: &str) -> Result<(String, Option<String>), String> {
    let mut params = content_type.split(';');
    let media = params.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return Err(format!("Content-Type is {media:?}, not multipart/related"));
    }
    let (mut boundary, mut kind) = (None, None);
    for param in params {
        let Some((name, value)) = param.split_once('=') else {
            continue;
        };
        let value = value.trim().trim_matches('"').to_string();
        match name.trim().to_ascii_lowercase().as_str() {
            "boundary" => boundary = Some(value),
            "type" => kind = Some(value),
            _ => {}
        }
    }
    // RFC 2046 says at most 70 characters; Orthanc sends 73.
    match boundary {
        Some(b) if !b.is_empty() && b.len() <= MAX_BOUNDARY => Ok((b, kind)),
        _ => Err(format!(
            "multipart/related without a boundary of 1 to {MAX_BOUNDARY} characters"
        )),
    }
}

/// One part of a body written with `boundary`: its delimiter, Content-Type and bytes
/// (`last`: and the closing delimiter).
pub fn part(boundary: &str, content_type: &str, bytes: &[u8], last: bool) -> Vec<u8> {
    let mut out = format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").into_bytes();
    out.reserve(bytes.len() + boundary.len() + 8);
    out.extend_from_slice(bytes);
    out.extend(b"\r\n");
    if last {
        out.extend(format!("--{boundary}--\r\n").as_bytes());
    }
    out
}

/// A fresh boundary.
pub fn boundary() -> String {
    format!("segnode-{}", uuid::Uuid::new_v4().simple())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(body: &[u8], size: usize) -> impl Stream<Item = Result<Bytes, String>> + Unpin {
        let pieces: Vec<Result<Bytes, String>> = body
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures_util::stream::iter(pieces)
    }

    const LIMITS: Limits = Limits {
        part_bytes: 100,
        body_bytes: 10_000,
    };

    fn body(parts: &[&[u8]]) -> Vec<u8> {
        let mut out = b"preamble\r\n".to_vec();
        for p in parts {
            out.extend(part("XB", "application/dicom", p, false));
        }
        out.extend(b"--XB--");
        out
    }

    async fn read_all(
        body: &[u8],
        chunk: usize,
        limits: Limits,
    ) -> Result<Vec<PartBody>, MultipartError> {
        let mut reader = Reader::new(chunks(body, chunk), "XB", limits);
        let mut parts = Vec::new();
        while let Some(p) = reader.next_part().await? {
            assert_eq!(p.content_type.as_deref(), Some("application/dicom"));
            parts.push(p.body);
        }
        Ok(parts)
    }

    fn complete(parts: &[PartBody]) -> Vec<&[u8]> {
        parts
            .iter()
            .map(|p| match p {
                PartBody::Complete(b) => b.as_slice(),
                PartBody::TooLarge { .. } => b"<too large>",
            })
            .collect()
    }

    #[tokio::test]
    async fn parts_are_read_whatever_the_chunking() {
        let parts: [&[u8]; 3] = [b"first", b"", b"third \r\n--X not a boundary \r\n-"];
        let body = body(&parts);
        for chunk in [1, 2, 3, 7, 64, body.len()] {
            let read = read_all(&body, chunk, LIMITS).await.unwrap();
            assert_eq!(complete(&read), parts.to_vec(), "chunks of {chunk}");
        }
    }

    #[tokio::test]
    async fn a_part_over_the_limit_is_drained_and_the_next_read() {
        let big = vec![b'x'; 1000];
        let body = body(&[b"small", &big, b"after"]);
        for chunk in [5, 64, 4096] {
            let read = read_all(&body, chunk, LIMITS).await.unwrap();
            assert_eq!(read.len(), 3);
            match &read[1] {
                PartBody::TooLarge { head, size } => {
                    assert_eq!(*size, 1000, "chunks of {chunk}");
                    assert!(head.iter().all(|b| *b == b'x') && !head.is_empty());
                }
                other => panic!("{other:?}"),
            }
            assert_eq!(complete(&read)[2], b"after");
        }
    }

    #[tokio::test]
    async fn truncated_wrong_boundary_and_oversized_bodies_are_errors() {
        let full = body(&[b"one", b"two"]);
        for cut in [0, 5, 20, full.len() - 3] {
            let err = read_all(&full[..cut], 4, LIMITS).await.unwrap_err();
            assert_eq!(err, MultipartError::Truncated, "cut at {cut}");
        }
        let mut reader = Reader::new(chunks(&full, 8), "OTHER", LIMITS);
        assert_eq!(
            reader.next_part().await.unwrap_err(),
            MultipartError::Truncated
        );
        let small = Limits {
            part_bytes: 100,
            body_bytes: 20,
        };
        assert_eq!(
            read_all(&full, 8, small).await.unwrap_err(),
            MultipartError::BodyTooLarge(20)
        );
        let bad = b"--XB\r\nno colon here\r\n\r\nx\r\n--XB--".to_vec();
        assert!(matches!(
            read_all(&bad, 4, LIMITS).await.unwrap_err(),
            MultipartError::Malformed(_)
        ));
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            related(r#"multipart/related; type="application/dicom"; boundary="a b""#).unwrap(),
            ("a b".to_string(), Some("application/dicom".to_string()))
        );
        assert!(related("application/dicom").is_err());
        assert!(related("multipart/related; type=application/dicom").is_err());
    }
}
