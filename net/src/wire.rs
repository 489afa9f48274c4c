//! The request-response codec: length-prefixed frames on a libp2p stream.
//!
//! Wire format of one stream (protocol [`PROTOCOL`]):
//! - request: a 4-byte big-endian length `n`, then `n` bytes of [`codec`](crate::codec) output;
//! - response: one byte, `0` = [`Ack::Delivered`], `1` = [`Ack::Refused`].
//!
//! **Invariant:** the length prefix is checked against the configured maximum *before* any body
//! byte is read, and the body buffer grows only as bytes actually arrive, so a peer that claims
//! 4 GiB and sends nothing costs us nothing.
//!
//! Bad input is returned as [`Frame::Malformed`] rather than as an `io::Error`: libp2p's
//! request-response behaviour only logs a failed `read_request` (at debug level) and never tells
//! the swarm owner who sent it, so an error here would make misbehaviour invisible.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response::Codec;
use serde::de::DeserializeOwned;

use crate::codec;

/// The libp2p protocol name of the medfl message bus.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/medfl/msg/1");

/// One request on the wire, seen from the side that holds it.
#[derive(Debug)]
pub(crate) enum Frame<M> {
    /// Outbound: an already encoded message (encoding happens in the caller's task).
    Encoded(Vec<u8>),
    /// Inbound: a message that decoded cleanly.
    Decoded(M),
    /// Inbound: the peer sent something we refuse; the string says what.
    Malformed(String),
}

/// The receiver's answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ack {
    /// The message was handed to the receiving application's event queue.
    Delivered,
    /// The message was not delivered (malformed, sender not allowed, or receiver closing).
    Refused,
}

/// Length-prefixed codec for messages of type `M`.
pub(crate) struct WireCodec<M> {
    /// Largest accepted body, in bytes (at most `u32::MAX` and [`codec::DECODE_LIMIT`]).
    max_message_bytes: usize,
    /// `fn() -> M` keeps the codec `Send + Sync + Clone` whatever `M` is.
    _message: PhantomData<fn() -> M>,
}

impl<M> WireCodec<M> {
    /// A codec accepting bodies of at most `max_message_bytes`.
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Self {
            max_message_bytes,
            _message: PhantomData,
        }
    }
}

impl<M> Clone for WireCodec<M> {
    fn clone(&self) -> Self {
        Self::new(self.max_message_bytes)
    }
}

impl<M: DeserializeOwned + Send + 'static> Codec for WireCodec<M> {
    type Protocol = StreamProtocol;
    type Request = Frame<M>;
    type Response = Ack;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Frame<M>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut prefix = [0u8; 4];
        io.read_exact(&mut prefix).await?;
        let claimed = u64::from(u32::from_be_bytes(prefix));
        let limit = self.max_message_bytes as u64;
        if claimed > limit {
            return Ok(Frame::Malformed(format!(
                "message of {claimed} bytes exceeds the limit of {limit} bytes"
            )));
        }
        let mut body = Vec::new();
        (&mut *io).take(claimed).read_to_end(&mut body).await?;
        if body.len() as u64 != claimed {
            return Ok(Frame::Malformed(format!(
                "stream ended after {} of {claimed} announced bytes",
                body.len()
            )));
        }
        Ok(match codec::decode::<M>(&body) {
            Ok(msg) => Frame::Decoded(msg),
            Err(e) => Frame::Malformed(e.to_string()),
        })
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Ack>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        match byte[0] {
            0 => Ok(Ack::Delivered),
            1 => Ok(Ack::Refused),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unknown acknowledgement byte {other}"),
            )),
        }
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Frame<M>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let Frame::Encoded(body) = req else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "only encoded frames are sent",
            ));
        };
        let len = u32::try_from(body.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
        io.write_all(&len.to_be_bytes()).await?;
        io.write_all(&body).await?;
        io.flush().await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Ack,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let byte = match res {
            Ack::Delivered => 0u8,
            Ack::Refused => 1u8,
        };
        io.write_all(&[byte]).await?;
        io.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::io::Cursor;

    /// Reads one request from `bytes` with a codec limited to `max` bytes.
    fn read(bytes: &[u8], max: usize) -> io::Result<Frame<Vec<u32>>> {
        let mut io = Cursor::new(bytes.to_vec());
        block_on(WireCodec::<Vec<u32>>::new(max).read_request(&PROTOCOL, &mut io))
    }

    /// Frames `body` with a length prefix, as `write_request` does.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut io = Cursor::new(Vec::new());
        let frame = Frame::<Vec<u32>>::Encoded(body.to_vec());
        block_on(WireCodec::<Vec<u32>>::new(1 << 20).write_request(&PROTOCOL, &mut io, frame))
            .unwrap();
        io.into_inner()
    }

    #[test]
    fn round_trip() {
        let body = codec::encode(&vec![1u32, 2, 3]).unwrap();
        assert!(matches!(read(&framed(&body), 1024), Ok(Frame::Decoded(v)) if v == [1, 2, 3]));
    }

    #[test]
    fn oversized_prefix_is_refused_before_reading_the_body() {
        // Claims 4 GiB - 1 and sends no body: refused from the prefix alone.
        let frame = read(&u32::MAX.to_be_bytes(), 1024).unwrap();
        assert!(matches!(frame, Frame::Malformed(r) if r.contains("exceeds")));
    }

    #[test]
    fn lying_prefix_and_garbage_are_malformed() {
        let mut short = 100u32.to_be_bytes().to_vec();
        short.extend_from_slice(&[0; 10]);
        assert!(matches!(read(&short, 1024).unwrap(), Frame::Malformed(r) if r.contains("ended")));
        // A Vec claiming 200 elements with 2 bytes of data.
        assert!(matches!(
            read(&framed(&[200, 1, 2]), 1024).unwrap(),
            Frame::Malformed(_)
        ));
        // A valid value followed by a stray byte.
        let mut body = codec::encode(&vec![5u32]).unwrap();
        body.push(0);
        assert!(
            matches!(read(&framed(&body), 1024).unwrap(), Frame::Malformed(r) if r.contains("trailing"))
        );
    }

    #[test]
    fn acks_round_trip_and_unknown_byte_is_an_error() {
        for ack in [Ack::Delivered, Ack::Refused] {
            let mut io = Cursor::new(Vec::new());
            let mut codec = WireCodec::<u8>::new(16);
            block_on(codec.write_response(&PROTOCOL, &mut io, ack)).unwrap();
            let mut io = Cursor::new(io.into_inner());
            assert_eq!(
                block_on(codec.read_response(&PROTOCOL, &mut io)).unwrap(),
                ack
            );
        }
        let mut io = Cursor::new(vec![7u8]);
        assert!(block_on(WireCodec::<u8>::new(16).read_response(&PROTOCOL, &mut io)).is_err());
    }
}
