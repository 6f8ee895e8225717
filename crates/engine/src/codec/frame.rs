//! The 5-byte gRPC message prefix: a compression flag and a big-endian `u32`
//! length (see the gRPC over HTTP/2 protocol document, "Length-Prefixed-Message").
//!
//! Three tools with different costs:
//! - [`FrameHeader`]: parse or write one prefix.
//! - [`FrameScanner`]: follows message boundaries of a passing byte stream
//!   without keeping any bytes, so one-to-one forwarding can enforce the size
//!   limit and detect truncation without copying a single payload byte.
//! - [`FrameDecoder`]: reassembles whole messages for fan-out, which must edit
//!   them. A message that arrives inside one chunk is sliced, not copied.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

/// Length of the message prefix.
pub const HEADER_LEN: usize = 5;

/// Why a byte stream is not a valid sequence of gRPC messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The compression flag byte was neither 0 nor 1.
    #[error("invalid gRPC message prefix: compression flag {0:#04x} is not 0 or 1")]
    BadFlag(u8),
    /// The declared message length is above the configured limit.
    #[error("message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Declared length.
        len: u64,
        /// Configured limit.
        limit: usize,
    },
    /// The stream ended in the middle of a prefix or a message.
    #[error("stream ended inside a gRPC message ({missing} more bytes were announced)")]
    Truncated {
        /// Bytes that were announced but never arrived (a lower bound while
        /// the prefix itself is incomplete).
        missing: u64,
    },
}

/// One parsed message prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The message is compressed with the stream's `grpc-encoding`.
    pub compressed: bool,
    /// Length of the message that follows the prefix.
    pub len: u32,
}

impl FrameHeader {
    /// Parses a prefix from the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// Returns `Ok(None)` when fewer than five bytes are available.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, FrameError> {
        let Some(head) = buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let compressed = match head[0] {
            0 => false,
            1 => true,
            flag => return Err(FrameError::BadFlag(flag)),
        };
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        Ok(Some(Self { compressed, len }))
    }

    /// Checks the declared length against `limit`.
    pub fn check_limit(self, limit: usize) -> Result<Self, FrameError> {
        if self.len as u64 > limit as u64 {
            return Err(FrameError::TooLarge {
                len: self.len.into(),
                limit,
            });
        }
        Ok(self)
    }

    /// Encodes the prefix.
    pub fn encode(self) -> [u8; HEADER_LEN] {
        let len = self.len.to_be_bytes();
        [u8::from(self.compressed), len[0], len[1], len[2], len[3]]
    }

    /// Prefix for an uncompressed message of `len` bytes, or `TooLarge` when
    /// `len` does not fit the 32-bit length field.
    pub fn uncompressed(len: usize) -> Result<Self, FrameError> {
        let len32 = u32::try_from(len).map_err(|_| FrameError::TooLarge {
            len: len as u64,
            limit: u32::MAX as usize,
        })?;
        Ok(Self {
            compressed: false,
            len: len32,
        })
    }
}

/// Follows message boundaries in a passing stream without storing payload.
#[derive(Debug, Clone)]
pub struct FrameScanner {
    limit: usize,
    prefix: [u8; HEADER_LEN],
    prefix_len: usize,
    payload_left: u64,
}

impl FrameScanner {
    /// A scanner that rejects messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            prefix: [0; HEADER_LEN],
            prefix_len: 0,
            payload_left: 0,
        }
    }

    /// Feeds the next chunk of the stream.
    pub fn observe(&mut self, mut chunk: &[u8]) -> Result<(), FrameError> {
        while !chunk.is_empty() {
            if self.payload_left > 0 {
                let skip = chunk
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                chunk = &chunk[skip..];
                self.payload_left -= skip as u64;
                continue;
            }
            let take = (HEADER_LEN - self.prefix_len).min(chunk.len());
            self.prefix[self.prefix_len..self.prefix_len + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take;
            chunk = &chunk[take..];
            if let Some(header) = FrameHeader::parse(&self.prefix[..self.prefix_len])? {
                self.payload_left = header.check_limit(self.limit)?.len.into();
                self.prefix_len = 0;
            }
        }
        Ok(())
    }

    /// Whether the stream is between two messages (a clean place to end).
    pub fn at_boundary(&self) -> bool {
        self.prefix_len == 0 && self.payload_left == 0
    }

    /// Checks that the stream may end here.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.at_boundary() {
            Ok(())
        } else if self.payload_left > 0 {
            Err(FrameError::Truncated {
                missing: self.payload_left,
            })
        } else {
            Err(FrameError::Truncated {
                missing: (HEADER_LEN - self.prefix_len) as u64,
            })
        }
    }
}

/// A whole message taken out of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The compression flag of its prefix.
    pub compressed: bool,
    /// The message bytes, without prefix.
    pub payload: Bytes,
}

/// Reassembles whole messages from chunks of a stream.
#[derive(Debug)]
pub struct FrameDecoder {
    limit: usize,
    chunks: VecDeque<Bytes>,
    buffered: usize,
    header: Option<FrameHeader>,
}

impl FrameDecoder {
    /// A decoder that rejects messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            chunks: VecDeque::new(),
            buffered: 0,
            header: None,
        }
    }

    /// Adds the next chunk of the stream.
    pub fn push(&mut self, chunk: Bytes) {
        if !chunk.is_empty() {
            self.buffered += chunk.len();
            self.chunks.push_back(chunk);
        }
    }

    /// Takes the next whole message, if one has fully arrived.
    pub fn next_message(&mut self) -> Result<Option<Message>, FrameError> {
        let header = match self.header {
            Some(header) => header,
            None => {
                if self.buffered < HEADER_LEN {
                    return Ok(None);
                }
                let prefix = self.take(HEADER_LEN);
                let header = FrameHeader::parse(&prefix)?
                    .expect("five bytes were taken")
                    .check_limit(self.limit)?;
                self.header = Some(header);
                header
            }
        };
        let len = header.len as usize;
        if self.buffered < len {
            return Ok(None);
        }
        self.header = None;
        Ok(Some(Message {
            compressed: header.compressed,
            payload: self.take(len),
        }))
    }

    /// Checks that no partial message is left once the stream has ended.
    pub fn finish(&self) -> Result<(), FrameError> {
        match self.header {
            Some(header) => Err(FrameError::Truncated {
                missing: (header.len as usize).saturating_sub(self.buffered) as u64,
            }),
            // Unread bytes: a partial prefix, or whole messages nobody took.
            None if self.buffered > 0 => Err(FrameError::Truncated {
                missing: HEADER_LEN.saturating_sub(self.buffered) as u64,
            }),
            None => Ok(()),
        }
    }

    /// Removes `n <= buffered` bytes; slices when they sit in one chunk.
    fn take(&mut self, n: usize) -> Bytes {
        debug_assert!(n <= self.buffered);
        self.buffered -= n;
        if n == 0 {
            return Bytes::new();
        }
        let front = self
            .chunks
            .front_mut()
            .expect("buffered bytes are in chunks");
        if front.len() >= n {
            let out = front.split_to(n);
            if front.is_empty() {
                self.chunks.pop_front();
            }
            return out;
        }
        let mut out = BytesMut::with_capacity(n);
        while out.len() < n {
            let front = self
                .chunks
                .front_mut()
                .expect("buffered bytes are in chunks");
            let step = (n - out.len()).min(front.len());
            out.extend_from_slice(&front[..step]);
            front.advance(step);
            if front.is_empty() {
                self.chunks.pop_front();
            }
        }
        out.freeze()
    }
}

/// Prefixes `payload` as one uncompressed message, in a fresh buffer.
pub fn encode_message(payload: &[u8]) -> Result<Bytes, FrameError> {
    let header = FrameHeader::uncompressed(payload.len())?;
    let mut out = BytesMut::with_capacity(HEADER_LEN + payload.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(payload);
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frames(msgs: &[(bool, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (compressed, m) in msgs {
            out.extend_from_slice(
                &FrameHeader {
                    compressed: *compressed,
                    len: m.len() as u32,
                }
                .encode(),
            );
            out.extend_from_slice(m);
        }
        out
    }

    fn split_at_points(data: &[u8], cuts: &[usize]) -> Vec<Bytes> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
        points.sort_unstable();
        let mut out = Vec::new();
        let mut last = 0;
        for p in points {
            out.push(Bytes::copy_from_slice(&data[last..p]));
            last = p;
        }
        out.push(Bytes::copy_from_slice(&data[last..]));
        out
    }

    #[test]
    fn header_round_trip_and_short_input() {
        let h = FrameHeader {
            compressed: true,
            len: 0x0102_0304,
        };
        assert_eq!(h.encode(), [1, 1, 2, 3, 4]);
        assert_eq!(FrameHeader::parse(&h.encode()).unwrap(), Some(h));
        assert_eq!(FrameHeader::parse(&[0, 0, 0]).unwrap(), None);
        assert_eq!(
            FrameHeader::parse(&[2, 0, 0, 0, 0]),
            Err(FrameError::BadFlag(2))
        );
    }

    #[test]
    fn scanner_rejects_oversize_before_payload_arrives() {
        let mut s = FrameScanner::new(10);
        assert_eq!(
            s.observe(&[0, 0, 0, 0, 11]),
            Err(FrameError::TooLarge { len: 11, limit: 10 })
        );
    }

    #[test]
    fn decoder_slices_single_chunk_messages() {
        let data = Bytes::from(frames(&[
            (false, b"hello".to_vec()),
            (false, b"world".to_vec()),
        ]));
        let mut d = FrameDecoder::new(100);
        d.push(data.clone());
        let m = d.next_message().unwrap().unwrap();
        assert_eq!(&m.payload[..], b"hello");
        // Same backing buffer: the payload was sliced, not copied.
        assert_eq!(m.payload.as_ptr(), data[5..].as_ptr());
        assert_eq!(&d.next_message().unwrap().unwrap().payload[..], b"world");
        assert_eq!(d.next_message().unwrap(), None);
        d.finish().unwrap();
    }

    #[test]
    fn decoder_reports_truncation() {
        let mut d = FrameDecoder::new(100);
        d.push(Bytes::from_static(&[0, 0, 0, 0, 9, 1, 2]));
        assert_eq!(d.next_message().unwrap(), None);
        assert_eq!(d.finish(), Err(FrameError::Truncated { missing: 7 }));
        let mut d = FrameDecoder::new(100);
        d.push(Bytes::from_static(&[0, 0]));
        assert_eq!(d.finish(), Err(FrameError::Truncated { missing: 3 }));
    }

    proptest! {
        #[test]
        fn decoder_round_trips_any_split(
            msgs in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..300)), 0..8),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let data = frames(&msgs);
            let mut d = FrameDecoder::new(1000);
            let mut s = FrameScanner::new(1000);
            let mut got = Vec::new();
            for chunk in split_at_points(&data, &cuts) {
                s.observe(&chunk).unwrap();
                d.push(chunk);
                while let Some(m) = d.next_message().unwrap() {
                    got.push((m.compressed, m.payload.to_vec()));
                }
            }
            d.finish().unwrap();
            s.finish().unwrap();
            prop_assert_eq!(got, msgs);
        }

        #[test]
        fn truncated_streams_are_detected(
            msgs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..100), 1..5),
            cut in any::<usize>(),
        ) {
            let data = frames(&msgs.iter().map(|m| (false, m.clone())).collect::<Vec<_>>());
            let cut = cut % data.len(); // strictly shorter than the full stream
            let boundaries: Vec<usize> = msgs.iter().scan(0, |acc, m| { *acc += HEADER_LEN + m.len(); Some(*acc) }).collect();
            let mut d = FrameDecoder::new(1000);
            let mut s = FrameScanner::new(1000);
            s.observe(&data[..cut]).unwrap();
            d.push(Bytes::copy_from_slice(&data[..cut]));
            while d.next_message().unwrap().is_some() {}
            let clean = cut == 0 || boundaries.contains(&cut);
            prop_assert_eq!(d.finish().is_ok(), clean);
            prop_assert_eq!(s.finish().is_ok(), clean);
            prop_assert_eq!(s.at_boundary(), clean);
        }

        #[test]
        fn oversized_lengths_are_rejected(len in 11u32.., flag in 0u8..2) {
            let h = [flag, (len >> 24) as u8, (len >> 16) as u8, (len >> 8) as u8, len as u8];
            let mut d = FrameDecoder::new(10);
            d.push(Bytes::copy_from_slice(&h));
            prop_assert_eq!(d.next_message(), Err(FrameError::TooLarge { len: len.into(), limit: 10 }));
            let mut s = FrameScanner::new(10);
            prop_assert_eq!(s.observe(&h), Err(FrameError::TooLarge { len: len.into(), limit: 10 }));
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64), limit in 0usize..64) {
            let mut d = FrameDecoder::new(limit);
            d.push(Bytes::from(data.clone()));
            while let Ok(Some(_)) = d.next_message() {}
            let _ = d.finish();
            let mut s = FrameScanner::new(limit);
            let _ = s.observe(&data);
            let _ = s.finish();
        }
    }
}
