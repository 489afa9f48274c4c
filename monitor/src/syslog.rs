//! IHE ATNA audit messages over syslog: frames off a TCP stream (RFC 6587) and the RFC 5424
//! message in each, whose MSG is a FHIR `AuditEvent` in JSON.
//!
//! # Framing (RFC 6587 §3.4)
//! A frame starting with a digit is octet-counted (§3.4.1): `MSG-LEN SP SYSLOG-MSG`, the length
//! in decimal without leading zeros. Anything else is non-transparent (§3.4.2): the message runs
//! to the next LF (`logger --tcp` sends this way). A frame over [`MAX_FRAME_BYTES`] is an error
//! and its bytes are skipped up to the frame's end, so one bad frame costs only itself; an
//! octet count that is not a number cannot be resynchronised and ends the stream.
//!
//! # Message (RFC 5424 §6)
//! `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA [SP MSG]`, each header field
//! printable US-ASCII (or `-`) within its §6 length limit; STRUCTURED-DATA is `-` or elements
//! `[id param="value" ...]` whose values escape `"`, `\` and `]` with `\` (§6.3.3). MSG may
//! start with the UTF-8 byte-order mark (§6.4); here it must be UTF-8, as JSON is.
//! Pure: bytes in, frames and messages out.

/// Largest frame accepted, in bytes (RFC 5425 §4.3.1 asks receivers for at least 2,048; an
/// `AuditEvent` is 1 to 2 KiB).
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// Why a frame or a message is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SyslogError {
    /// The frame is longer than [`MAX_FRAME_BYTES`].
    #[error("a frame of {0} bytes or more, over the limit of {MAX_FRAME_BYTES}")]
    TooLong(usize),
    /// The octet count is not a number (the stream cannot be followed past it).
    #[error("bad octet count {0:?} (RFC 6587 §3.4.1)")]
    BadLength(String),
    /// The message does not follow RFC 5424.
    #[error("not an RFC 5424 message: {0}")]
    Header(String),
    /// The MSG part is not UTF-8.
    #[error("MSG is not valid UTF-8 (byte {0})")]
    NotUtf8(usize),
}

impl SyslogError {
    /// Whether the stream can go on after this error.
    pub fn is_fatal(&self) -> bool {
        matches!(self, SyslogError::BadLength(_))
    }
}

/// Splits a TCP byte stream into syslog frames.
///
/// Linear in the bytes pushed: frames are cut at a read cursor (the buffer is compacted once
/// per push, not once per frame), and a search for a line feed resumes where the last one
/// stopped.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
    /// How far past `start` a line feed has been looked for already.
    scanned: usize,
    /// Bytes still to drop from an oversized frame (`usize::MAX`: up to the next LF).
    skipping: usize,
}

impl FrameReader {
    /// A reader at the start of a stream.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet framed.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Moves the cursor past `n` bytes.
    fn consume(&mut self, n: usize) {
        self.start += n;
        self.scanned = 0;
    }

    /// The next complete frame, if one is buffered. Empty frames (blank lines) are skipped.
    pub fn next_frame(&mut self) -> Option<Result<Vec<u8>, SyslogError>> {
        loop {
            if self.skipping > 0 {
                self.skip()?;
            }
            let first = *self.rest().first()?;
            let frame = if first.is_ascii_digit() {
                self.counted()
            } else {
                self.delimited()
            };
            match frame {
                Some(Ok(f)) if f.is_empty() => continue,
                other => return other,
            }
        }
    }

    /// Drops the rest of an oversized frame; `None` while more of it is to come.
    fn skip(&mut self) -> Option<()> {
        if self.skipping == usize::MAX {
            let from = self.scanned;
            match self.rest()[from..].iter().position(|&b| b == b'\n') {
                Some(lf) => {
                    self.consume(from + lf + 1);
                    self.skipping = 0;
                }
                None => {
                    let n = self.buffered();
                    self.consume(n);
                    return None;
                }
            }
        } else {
            let n = self.skipping.min(self.buffered());
            self.consume(n);
            self.skipping -= n;
            if self.skipping > 0 {
                return None;
            }
        }
        Some(())
    }

    fn counted(&mut self) -> Option<Result<Vec<u8>, SyslogError>> {
        let rest = self.rest();
        let Some(space) = rest.iter().take(12).position(|&b| b == b' ') else {
            if rest.len() >= 12 {
                let head = String::from_utf8_lossy(&rest[..12]).into_owned();
                return Some(Err(SyslogError::BadLength(head)));
            }
            return None;
        };
        let digits = &rest[..space];
        let len = std::str::from_utf8(digits)
            .ok()
            .filter(|d| !d.starts_with('0') && d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse::<usize>().ok());
        let Some(len) = len else {
            let head = String::from_utf8_lossy(digits).into_owned();
            return Some(Err(SyslogError::BadLength(head)));
        };
        if len > MAX_FRAME_BYTES {
            self.consume(space + 1);
            self.skipping = len;
            return Some(Err(SyslogError::TooLong(len)));
        }
        let end = space + 1 + len;
        if rest.len() < end {
            return None;
        }
        let frame = rest[space + 1..end].to_vec();
        self.consume(end);
        Some(Ok(frame))
    }

    fn delimited(&mut self) -> Option<Result<Vec<u8>, SyslogError>> {
        let from = self.scanned;
        match self.rest()[from..].iter().position(|&b| b == b'\n') {
            Some(lf) => {
                let lf = from + lf;
                let mut frame = self.rest()[..lf].to_vec();
                self.consume(lf + 1);
                if frame.last() == Some(&b'\r') {
                    frame.pop();
                }
                if frame.len() > MAX_FRAME_BYTES {
                    return Some(Err(SyslogError::TooLong(frame.len())));
                }
                Some(Ok(frame))
            }
            None if self.buffered() > MAX_FRAME_BYTES => {
                let n = self.buffered();
                self.consume(n);
                self.skipping = usize::MAX;
                Some(Err(SyslogError::TooLong(n)))
            }
            None => {
                self.scanned = self.buffered();
                None
            }
        }
    }
}

/// An RFC 5424 message: its header and its MSG.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Facility × 8 + severity.
    pub pri: u8,
    /// TIMESTAMP, or `-`.
    pub timestamp: &'a str,
    /// HOSTNAME, or `-`.
    pub hostname: &'a str,
    /// APP-NAME, or `-`.
    pub app_name: &'a str,
    /// PROCID, or `-`.
    pub procid: &'a str,
    /// MSGID, or `-` (IHE ATNA senders write `IHE+RFC-3881` or the event type here).
    pub msgid: &'a str,
    /// STRUCTURED-DATA as written, or `-`.
    pub structured_data: &'a str,
    /// MSG, without a leading byte-order mark; empty when absent.
    pub msg: &'a str,
}

/// Parses one frame as an RFC 5424 message.
///
/// # Errors
/// [`SyslogError::Header`] naming the field at fault, or [`SyslogError::NotUtf8`].
pub fn parse_message(frame: &[u8]) -> Result<Message<'_>, SyslogError> {
    let bad = |why: &str| SyslogError::Header(why.to_owned());
    let rest = frame.strip_prefix(b"<").ok_or_else(|| bad("no <PRI>"))?;
    let close = rest
        .iter()
        .take(4)
        .position(|&b| b == b'>')
        .ok_or_else(|| bad("PRI is not closed by '>' within 3 digits"))?;
    let pri = std::str::from_utf8(&rest[..close])
        .ok()
        .filter(|p| !p.is_empty() && (p.len() == 1 || !p.starts_with('0')))
        .and_then(|p| p.parse::<u8>().ok())
        .filter(|&p| p <= 191)
        .ok_or_else(|| bad("PRI is not a number from 0 to 191"))?;
    let rest = rest[close + 1..]
        .strip_prefix(b"1 ")
        .ok_or_else(|| bad("VERSION is not 1"))?;
    let mut rest = rest;
    let mut fields = [""; 5];
    let limits = [
        ("TIMESTAMP", 64),
        ("HOSTNAME", 255),
        ("APP-NAME", 48),
        ("PROCID", 128),
        ("MSGID", 32),
    ];
    for (slot, (name, max)) in fields.iter_mut().zip(limits) {
        let end = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or_else(|| SyslogError::Header(format!("the header ends before {name}")))?;
        let field = &rest[..end];
        if field.is_empty() || field.len() > max || !field.iter().all(|b| (33..=126).contains(b)) {
            return Err(SyslogError::Header(format!(
                "{name} is empty, over {max} bytes or not printable US-ASCII"
            )));
        }
        // Printable US-ASCII, checked just above, is UTF-8.
        *slot = std::str::from_utf8(field).map_err(|_| bad("header not ASCII"))?;
        rest = &rest[end + 1..];
    }
    let sd_len = structured_data_len(rest)?;
    let structured_data =
        std::str::from_utf8(&rest[..sd_len]).map_err(|e| SyslogError::NotUtf8(e.valid_up_to()))?;
    let msg = match &rest[sd_len..] {
        [] => &[][..],
        [b' ', msg @ ..] => msg,
        _ => return Err(bad("no space between STRUCTURED-DATA and MSG")),
    };
    let msg = msg.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(msg);
    let offset = frame.len() - msg.len();
    let msg =
        std::str::from_utf8(msg).map_err(|e| SyslogError::NotUtf8(offset + e.valid_up_to()))?;
    Ok(Message {
        pri,
        timestamp: fields[0],
        hostname: fields[1],
        app_name: fields[2],
        procid: fields[3],
        msgid: fields[4],
        structured_data,
        msg,
    })
}

/// The length of the STRUCTURED-DATA at the start of `s` (RFC 5424 §6.3).
fn structured_data_len(s: &[u8]) -> Result<usize, SyslogError> {
    let bad = |why: &str| SyslogError::Header(format!("STRUCTURED-DATA: {why}"));
    if s.first() == Some(&b'-') {
        return Ok(1);
    }
    let mut i = 0;
    while s.get(i) == Some(&b'[') {
        i += 1;
        let mut in_value = false;
        loop {
            match s.get(i) {
                None => return Err(bad("an element is not closed")),
                Some(b'\\') if in_value => i += 2,
                Some(b'"') => {
                    in_value = !in_value;
                    i += 1;
                }
                Some(b']') if !in_value => {
                    i += 1;
                    break;
                }
                Some(_) => i += 1,
            }
        }
    }
    if i == 0 {
        return Err(bad("neither '-' nor an element"));
    }
    Ok(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `logger --tcp --rfc5424` sends (util-linux 2.38).
    const LOGGER: &[u8] = b"<13>1 2026-11-30T10:24:26.982176+00:00 vm medfl-test - - [timeQuality tzKnown=\"1\" isSynced=\"0\"] {\"a\":1}";

    fn frames(r: &mut FrameReader) -> Vec<Result<Vec<u8>, SyslogError>> {
        std::iter::from_fn(|| r.next_frame()).collect()
    }

    #[test]
    fn both_framings_split_a_stream_fed_byte_by_byte() {
        let mut stream = Vec::new();
        stream.extend_from_slice(LOGGER);
        stream.push(b'\n');
        stream.extend_from_slice(format!("{} ", LOGGER.len()).as_bytes());
        stream.extend_from_slice(LOGGER);
        stream.extend_from_slice(b"<14>1 - - - - - -\r\n");
        let mut r = FrameReader::new();
        let mut got = Vec::new();
        for b in &stream {
            r.push(std::slice::from_ref(b));
            got.extend(frames(&mut r));
        }
        let got: Vec<Vec<u8>> = got.into_iter().map(Result::unwrap).collect();
        assert_eq!(
            got,
            vec![
                LOGGER.to_vec(),
                LOGGER.to_vec(),
                b"<14>1 - - - - - -".to_vec()
            ]
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn an_oversized_frame_is_skipped_and_the_next_one_read() {
        let mut r = FrameReader::new();
        let big = MAX_FRAME_BYTES + 10;
        r.push(format!("{big} ").as_bytes());
        r.push(&vec![b'x'; big]);
        r.push(b"5 <1>1 ");
        let got = frames(&mut r);
        assert_eq!(got[0], Err(SyslogError::TooLong(big)));
        assert_eq!(got[1], Ok(b"<1>1 ".to_vec()));
        let mut r = FrameReader::new();
        r.push(&vec![b'<'; MAX_FRAME_BYTES + 1]);
        assert!(matches!(r.next_frame(), Some(Err(SyslogError::TooLong(_)))));
        r.push(b"still the long frame\n<1>1 - - - - - -\n");
        assert_eq!(frames(&mut r), vec![Ok(b"<1>1 - - - - - -".to_vec())]);
        let mut r = FrameReader::new();
        r.push(b"0012 <1>1 - - - - - -");
        assert!(r.next_frame().unwrap().unwrap_err().is_fatal());
    }

    #[test]
    fn a_logger_message_parses() {
        let m = parse_message(LOGGER).unwrap();
        assert_eq!(m.pri, 13);
        assert_eq!(m.hostname, "vm");
        assert_eq!(m.app_name, "medfl-test");
        assert_eq!(m.msgid, "-");
        assert_eq!(
            m.structured_data,
            "[timeQuality tzKnown=\"1\" isSynced=\"0\"]"
        );
        assert_eq!(m.msg, "{\"a\":1}");
        let bom = b"<85>1 2026-01-05T00:00:00Z h app 12 IHE+RFC-3881 [x@1 a=\"q\\\"]\"][y@1] \xEF\xBB\xBF{}";
        let m = parse_message(bom).unwrap();
        assert_eq!(m.structured_data, "[x@1 a=\"q\\\"]\"][y@1]");
        assert_eq!(m.msg, "{}");
        assert_eq!(parse_message(b"<1>1 - - - - - -").unwrap().msg, "");
    }

    #[test]
    fn malformed_messages_say_what_is_wrong() {
        for (frame, says) in [
            (&b"13>1 - - - - - -"[..], "PRI"),
            (b"<192>1 - - - - - -", "PRI"),
            (b"<13>2 - - - - - -", "VERSION"),
            (b"<13>1 - - -", "header ends"),
            (b"<13>1 - h\x01 - - - -", "HOSTNAME"),
            (b"<13>1 - - - - - [a", "not closed"),
            (b"<13>1 - - - - - x", "neither"),
            (b"<13>1 - - - - - -x", "no space"),
        ] {
            let err = parse_message(frame).unwrap_err();
            assert!(err.to_string().contains(says), "{err} for {frame:?}");
        }
        assert_eq!(
            parse_message(b"<13>1 - - - - - - {\xff}").unwrap_err(),
            SyslogError::NotUtf8(19)
        );
    }
}
