//! Whole messages from a WebSocket's frames (RFC 6455 §5.4, §5.6, §8.1), for the socket layer.
//!
//! actix-http's codec decodes single frames; a message may arrive in fragments (a text or
//! binary frame without FIN, then continuation frames), with control frames (ping, pong,
//! close) between them. The [`Assembler`] turns that sequence into whole messages, so a
//! session never sees a fragment:
//!
//! - the message limit applies to the reassembled message, and is checked against each
//!   frame's *declared* length before its payload is buffered ([`Assembler::check_header`]),
//!   so a client cannot make the server hold more than the limit by announcing a huge frame
//!   or by sending endless fragments;
//! - text must be valid UTF-8, checked fragment by fragment as it arrives: a fragment that
//!   cannot be the start of valid UTF-8 fails the connection at once (1007) rather than after
//!   the whole message;
//! - a continuation without a started message, or a new message inside a fragmented one, is
//!   a protocol error (1002).
//!
//! Pure: no socket, no clock, so every rule is a table-driven unit test.

use std::io;

use actix_http::ws::{CloseReason as WsCloseReason, Frame, Item, Message, ProtocolError};
use bytes::{Bytes, BytesMut};
use bytestring::ByteString;

use super::protocol::CloseReason;

/// Why a connection is failed while reading; each maps to its RFC 6455 close code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// The frames break RFC 6455 (bad opcode, reserved bits, unmasked frame, bad close
    /// payload, a continuation out of sequence, a fragmented control frame): 1002.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A text message (or a fragment of one) is not valid UTF-8: 1007.
    #[error("text message is not valid UTF-8")]
    InvalidUtf8,
    /// A frame, or the message its fragments add up to, is larger than the limit: 1009.
    #[error("message larger than {limit} bytes")]
    TooLarge {
        /// The limit in force.
        limit: usize,
    },
    /// The socket itself failed (reset, broken pipe): nothing more can be sent.
    #[error("socket error: {0}")]
    Io(io::Error),
}

impl Failure {
    /// The close code RFC 6455 gives this failure.
    pub fn close_code(&self) -> u16 {
        self.reason().code()
    }

    /// The reason a session closes the connection with.
    pub fn reason(&self) -> CloseReason {
        match self {
            Failure::Protocol(_) | Failure::Io(_) => CloseReason::ProtocolError,
            Failure::InvalidUtf8 => CloseReason::InvalidPayload,
            Failure::TooLarge { .. } => CloseReason::FrameTooLarge,
        }
    }
}

impl Failure {
    /// The failure for an error of actix-http's frame codec, whose frame limit is `limit`.
    pub fn from_codec(error: ProtocolError, limit: usize) -> Self {
        match error {
            ProtocolError::Overflow => Failure::TooLarge { limit },
            // The codec reports non-zero reserved bits as `InvalidData` I/O errors: they are
            // the peer's protocol error, not a socket failure.
            other => Failure::Protocol(other.to_string()),
        }
    }
}

/// A control frame's payload limit (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A message being reassembled from its fragments.
struct Partial {
    /// Text (validated as UTF-8) or binary.
    text: bool,
    bytes: BytesMut,
    /// Bytes at the start of `bytes` known to be complete, valid UTF-8; what follows is at
    /// most an incomplete character waiting for the next fragment.
    checked: usize,
}

/// Turns a connection's frames into whole messages; one per connection.
pub struct Assembler {
    /// Largest message, in bytes, reassembled or not.
    max_message: usize,
    partial: Option<Partial>,
}

impl Assembler {
    /// An assembler refusing messages over `max_message` bytes.
    pub fn new(max_message: usize) -> Self {
        Self {
            max_message,
            partial: None,
        }
    }

    /// The largest message accepted, in bytes.
    pub fn limit(&self) -> usize {
        self.max_message
    }

    /// Bytes held for a message still being reassembled.
    pub fn buffered(&self) -> usize {
        self.partial.as_ref().map_or(0, |p| p.bytes.len())
    }

    /// Checks the header of the frame at the start of `buf` (if it is complete enough to
    /// read its length) before its payload is read: a data frame that would take the
    /// message over the limit, or a control frame over 125 bytes, fails now instead of after
    /// the reader buffered it.
    pub fn check_header(&self, buf: &[u8]) -> Result<(), Failure> {
        let Some((opcode, length)) = declared(buf) else {
            return Ok(());
        };
        let is_control = opcode & 0x8 != 0;
        if is_control {
            if length > MAX_CONTROL_PAYLOAD {
                return Err(Failure::Protocol(format!(
                    "control frame of {length} bytes (at most {MAX_CONTROL_PAYLOAD})"
                )));
            }
            return Ok(());
        }
        // A continuation adds to what is buffered; a new message starts from nothing (an
        // out-of-sequence one is refused when the frame is decoded).
        let already = if opcode == 0 { self.buffered() } else { 0 } as u64;
        if already.saturating_add(length) > self.max_message as u64 {
            return Err(self.too_large());
        }
        Ok(())
    }

    /// The failure for a message over this assembler's limit.
    pub fn too_large(&self) -> Failure {
        Failure::TooLarge {
            limit: self.max_message,
        }
    }

    /// Takes a decoded frame: a whole message when one is complete, `None` while a
    /// fragmented one goes on.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Message>, Failure> {
        match frame {
            Frame::Text(bytes) => {
                self.not_inside_a_message()?;
                self.within_limit(bytes.len())?;
                Ok(Some(Message::Text(text(bytes)?)))
            }
            Frame::Binary(bytes) => {
                self.not_inside_a_message()?;
                self.within_limit(bytes.len())?;
                Ok(Some(Message::Binary(bytes)))
            }
            Frame::Ping(bytes) => Ok(Some(Message::Ping(bytes))),
            Frame::Pong(bytes) => Ok(Some(Message::Pong(bytes))),
            Frame::Close(reason) => Ok(Some(Message::Close(reason))),
            Frame::Continuation(Item::FirstText(bytes)) => self.start(true, bytes),
            Frame::Continuation(Item::FirstBinary(bytes)) => self.start(false, bytes),
            Frame::Continuation(Item::Continue(bytes)) => {
                self.append(&bytes)?;
                Ok(None)
            }
            Frame::Continuation(Item::Last(bytes)) => {
                self.append(&bytes)?;
                self.finish().map(Some)
            }
        }
    }

    fn not_inside_a_message(&self) -> Result<(), Failure> {
        if self.partial.is_some() {
            return Err(Failure::Protocol(
                "a new message started inside a fragmented one".into(),
            ));
        }
        Ok(())
    }

    fn within_limit(&self, len: usize) -> Result<(), Failure> {
        if len > self.max_message {
            return Err(self.too_large());
        }
        Ok(())
    }

    fn start(&mut self, text: bool, bytes: Bytes) -> Result<Option<Message>, Failure> {
        self.not_inside_a_message()?;
        self.partial = Some(Partial {
            text,
            bytes: BytesMut::new(),
            checked: 0,
        });
        self.append(&bytes)?;
        Ok(None)
    }

    fn append(&mut self, fragment: &[u8]) -> Result<(), Failure> {
        let limit = self.max_message;
        let Some(partial) = self.partial.as_mut() else {
            return Err(Failure::Protocol(
                "a continuation frame without a message to continue".into(),
            ));
        };
        if partial.bytes.len().saturating_add(fragment.len()) > limit {
            return Err(Failure::TooLarge { limit });
        }
        partial.bytes.extend_from_slice(fragment);
        if partial.text {
            // Only the unchecked tail is validated: the whole message is checked once.
            match std::str::from_utf8(&partial.bytes[partial.checked..]) {
                Ok(_) => partial.checked = partial.bytes.len(),
                // Invalid bytes, not merely a character cut by the fragment's end.
                Err(error) if error.error_len().is_some() => return Err(Failure::InvalidUtf8),
                Err(error) => partial.checked += error.valid_up_to(),
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<Message, Failure> {
        let Some(partial) = self.partial.take() else {
            return Err(Failure::Protocol(
                "a continuation frame without a message to continue".into(),
            ));
        };
        let bytes = partial.bytes.freeze();
        if !partial.text {
            return Ok(Message::Binary(bytes));
        }
        if partial.checked != bytes.len() {
            // The message ends inside a character.
            return Err(Failure::InvalidUtf8);
        }
        Ok(Message::Text(text(bytes)?))
    }
}

fn text(bytes: Bytes) -> Result<ByteString, Failure> {
    ByteString::try_from(bytes).map_err(|_| Failure::InvalidUtf8)
}

/// The opcode and declared payload length of the frame at the start of `buf`, once its
/// header has arrived that far (RFC 6455 §5.2).
fn declared(buf: &[u8]) -> Option<(u8, u64)> {
    let (&first, rest) = buf.split_first()?;
    let (&second, rest) = rest.split_first()?;
    let opcode = first & 0x0F;
    let length = match second & 0x7F {
        126 => u64::from(u16::from_be_bytes(rest.get(..2)?.try_into().ok()?)),
        127 => u64::from_be_bytes(rest.get(..8)?.try_into().ok()?),
        short => u64::from(short),
    };
    Some((opcode, length))
}

/// The close frame a connection answers a peer's close with (RFC 6455 §5.5.1): the peer's
/// code echoed, or an empty close if the peer sent none.
pub fn echo_close(peer: &Option<WsCloseReason>) -> Option<WsCloseReason> {
    peer.as_ref().map(|reason| WsCloseReason {
        code: reason.code,
        description: None,
    })
}

#[cfg(test)]
mod tests {
    use actix_http::ws::CloseCode;

    use super::*;

    const LIMIT: usize = 16;

    fn b(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    /// What feeding a sequence of frames yields, as a short readable trace.
    fn run(frames: Vec<Frame>) -> Vec<String> {
        let mut assembler = Assembler::new(LIMIT);
        let mut out = Vec::new();
        for frame in frames {
            match assembler.push(frame) {
                Ok(None) => {}
                Ok(Some(Message::Text(t))) => out.push(format!("text:{t}")),
                Ok(Some(Message::Binary(b))) => out.push(format!("binary:{}", b.len())),
                Ok(Some(Message::Ping(_))) => out.push("ping".into()),
                Ok(Some(Message::Pong(_))) => out.push("pong".into()),
                Ok(Some(Message::Close(_))) => out.push("close".into()),
                Ok(Some(other)) => out.push(format!("unexpected:{other:?}")),
                Err(failure) => {
                    out.push(format!("fail:{}", failure.close_code()));
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn frame_sequences_become_whole_messages_or_fail_with_the_rfc_code() {
        use Item::{Continue, FirstBinary, FirstText, Last};
        let cases: Vec<(&str, Vec<Frame>, Vec<&str>)> = vec![
            (
                "an unfragmented text message passes",
                vec![Frame::Text(b(b"hello"))],
                vec!["text:hello"],
            ),
            (
                "fragments are joined",
                vec![
                    Frame::Continuation(FirstText(b(b"he"))),
                    Frame::Continuation(Continue(b(b"ll"))),
                    Frame::Continuation(Last(b(b"o"))),
                ],
                vec!["text:hello"],
            ),
            (
                "empty fragments are allowed",
                vec![
                    Frame::Continuation(FirstText(b(b""))),
                    Frame::Continuation(Continue(b(b""))),
                    Frame::Continuation(Last(b(b""))),
                ],
                vec!["text:"],
            ),
            (
                "control frames between fragments are delivered at once",
                vec![
                    Frame::Continuation(FirstText(b(b"he"))),
                    Frame::Ping(b(b"p")),
                    Frame::Continuation(Continue(b(b"ll"))),
                    Frame::Pong(b(b"")),
                    Frame::Continuation(Last(b(b"o"))),
                ],
                vec!["ping", "pong", "text:hello"],
            ),
            (
                "a close inside a fragmented message is delivered",
                vec![Frame::Continuation(FirstText(b(b"he"))), Frame::Close(None)],
                vec!["close"],
            ),
            (
                "binary fragments are joined",
                vec![
                    Frame::Continuation(FirstBinary(b(&[0, 1]))),
                    Frame::Continuation(Last(b(&[0xFF]))),
                ],
                vec!["binary:3"],
            ),
            (
                "a character split across fragments is valid",
                vec![
                    Frame::Continuation(FirstText(b(&[0xCE]))),
                    Frame::Continuation(Continue(b(&[0xBA, 0xE1]))),
                    Frame::Continuation(Last(b(&[0xBD, 0xB9]))),
                ],
                vec!["text:\u{3ba}\u{1f79}"],
            ),
            (
                "a continuation without a start fails with 1002",
                vec![Frame::Continuation(Continue(b(b"x")))],
                vec!["fail:1002"],
            ),
            (
                "a final continuation without a start fails with 1002",
                vec![Frame::Continuation(Last(b(b"x")))],
                vec!["fail:1002"],
            ),
            (
                "a new fragmented message inside one fails with 1002",
                vec![
                    Frame::Continuation(FirstText(b(b"a"))),
                    Frame::Continuation(FirstText(b(b"b"))),
                ],
                vec!["fail:1002"],
            ),
            (
                "a whole text message inside a fragmented one fails with 1002",
                vec![
                    Frame::Continuation(FirstBinary(b(b"a"))),
                    Frame::Text(b(b"b")),
                ],
                vec!["fail:1002"],
            ),
            (
                "a whole binary message inside a fragmented one fails with 1002",
                vec![
                    Frame::Continuation(FirstText(b(b"a"))),
                    Frame::Binary(b(b"b")),
                ],
                vec!["fail:1002"],
            ),
            (
                "invalid UTF-8 in a whole message fails with 1007",
                vec![Frame::Text(b(&[0xC0, 0xAF]))],
                vec!["fail:1007"],
            ),
            (
                "invalid UTF-8 fails at its fragment, before the message ends",
                vec![
                    Frame::Continuation(FirstText(b(b"ok"))),
                    Frame::Continuation(Continue(b(&[0xED, 0xA0, 0x80]))),
                    Frame::Ping(b(b"never seen")),
                ],
                vec!["fail:1007"],
            ),
            (
                "a message ending inside a character fails with 1007",
                vec![
                    Frame::Continuation(FirstText(b(b"a"))),
                    Frame::Continuation(Last(b(&[0xE2, 0x82]))),
                ],
                vec!["fail:1007"],
            ),
            (
                "binary messages are not checked as UTF-8",
                vec![Frame::Binary(b(&[0xFF, 0xFE]))],
                vec!["binary:2"],
            ),
            (
                "a message at the limit passes",
                vec![Frame::Text(b(&[b'a'; LIMIT]))],
                vec!["text:aaaaaaaaaaaaaaaa"],
            ),
            (
                "a frame over the limit fails with 1009",
                vec![Frame::Text(b(&[b'a'; LIMIT + 1]))],
                vec!["fail:1009"],
            ),
            (
                "fragments adding up to more than the limit fail with 1009",
                vec![
                    Frame::Continuation(FirstBinary(b(&[0; 10]))),
                    Frame::Continuation(Continue(b(&[0; 6]))),
                    Frame::Continuation(Last(b(&[0; 1]))),
                ],
                vec!["fail:1009"],
            ),
            (
                "a message after a completed fragmented one starts afresh",
                vec![
                    Frame::Continuation(FirstText(b(b"a"))),
                    Frame::Continuation(Last(b(b"b"))),
                    Frame::Text(b(b"c")),
                ],
                vec!["text:ab", "text:c"],
            ),
        ];
        for (name, frames, expected) in cases {
            assert_eq!(run(frames), expected, "{name}");
        }
    }

    /// A header as a client sends it (masked, so the server's codec accepts it).
    fn header(fin: bool, opcode: u8, length: u64) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match length {
            0..=125 => out.push(0x80 | length as u8),
            126..=0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(length as u16).to_be_bytes());
            }
            _ => {
                out.push(0x80 | 127);
                out.extend_from_slice(&length.to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out
    }

    #[test]
    fn declared_lengths_are_refused_before_the_payload_is_read() {
        let mut buffering = Assembler::new(LIMIT);
        buffering
            .push(Frame::Continuation(Item::FirstText(b(&[b'a'; 10]))))
            .unwrap();
        let fresh = Assembler::new(LIMIT);
        let cases: Vec<(&str, &Assembler, Vec<u8>, Option<u16>)> = vec![
            (
                "a text frame at the limit",
                &fresh,
                header(true, 1, 16),
                None,
            ),
            (
                "a text frame over the limit",
                &fresh,
                header(true, 1, 17),
                Some(1009),
            ),
            (
                "a 16-bit length over the limit",
                &fresh,
                header(true, 2, 300),
                Some(1009),
            ),
            (
                "a 64-bit length",
                &fresh,
                header(true, 2, 1 << 40),
                Some(1009),
            ),
            (
                "a continuation within the rest",
                &buffering,
                header(false, 0, 6),
                None,
            ),
            (
                "a continuation past the rest",
                &buffering,
                header(true, 0, 7),
                Some(1009),
            ),
            (
                "a new message ignores what is buffered",
                &buffering,
                header(true, 1, 16),
                None,
            ),
            ("a ping of 125 bytes", &fresh, header(true, 9, 125), None),
            (
                "a ping of 126 bytes",
                &fresh,
                header(true, 9, 126),
                Some(1002),
            ),
            (
                "a close of 2^40 bytes",
                &fresh,
                header(true, 8, 1 << 40),
                Some(1002),
            ),
            (
                "a header not yet complete",
                &fresh,
                header(true, 1, 1 << 40)[..5].to_vec(),
                None,
            ),
            ("nothing yet", &fresh, Vec::new(), None),
        ];
        for (name, assembler, bytes, expected) in cases {
            let got = assembler.check_header(&bytes).err().map(|f| f.close_code());
            assert_eq!(got, expected, "{name}");
        }
    }

    #[test]
    fn a_peers_close_is_echoed_with_its_code_and_an_empty_close_with_none() {
        let peer = Some(WsCloseReason {
            code: CloseCode::Other(4321),
            description: Some("bye".into()),
        });
        assert_eq!(echo_close(&peer).map(|r| u16::from(r.code)), Some(4321));
        assert!(echo_close(&None).is_none());
    }
}
