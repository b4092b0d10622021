//! Turns a segment's COPY text into the parts of its object: the text is gathered into batches,
//! each batch hashed into the rowset checksum and compressed as one zstd frame, and the frames
//! appended to a part buffer that is handed out once it reaches the part size. A stored object
//! is a sequence of zstd frames, which any zstd decoder reads as one stream (`zstd -d` too).
//! Compressing a whole contiguous batch at once keeps zstd on its fast path; the streaming
//! encoder, fed row by row, spent most of its time in its wrapped-window path.

use super::rowset::{RowsetHasher, RowsetSummary};

/// COPY text per zstd frame. Larger frames compress slightly better and cost this much memory
/// (twice: the batch and its frame) per segment in flight.
pub const FRAME_INPUT_BYTES: usize = 1024 * 1024;

pub struct SegmentEncoder {
    compressor: zstd::bulk::Compressor<'static>,
    batch: Vec<u8>,
    frame: Vec<u8>,
    part: Vec<u8>,
    part_size: usize,
    frames: u64,
    content: RowsetHasher,
}

impl SegmentEncoder {
    pub fn new(level: i32, part_size: usize) -> std::io::Result<Self> {
        Ok(Self {
            compressor: zstd::bulk::Compressor::new(level)?,
            batch: Vec::with_capacity(FRAME_INPUT_BYTES),
            frame: Vec::with_capacity(zstd::zstd_safe::compress_bound(FRAME_INPUT_BYTES)),
            part: Vec::new(),
            part_size,
            frames: 0,
            content: RowsetHasher::new(),
        })
    }

    /// Takes the next piece of COPY text; returns a full part when one is ready to upload.
    pub fn push(&mut self, text: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        self.batch.extend_from_slice(text);
        if self.batch.len() < FRAME_INPUT_BYTES {
            return Ok(None);
        }
        self.compress_batch()?;
        if self.part.len() >= self.part_size {
            return Ok(Some(std::mem::take(&mut self.part)));
        }
        Ok(None)
    }

    /// The last part (possibly smaller than the part size) and what the text held. An empty
    /// segment still gets one (empty) frame, so every object is a valid zstd stream.
    pub fn finish(mut self) -> std::io::Result<(Vec<u8>, RowsetSummary)> {
        if !self.batch.is_empty() || self.frames == 0 {
            self.compress_batch()?;
        }
        Ok((self.part, self.content.finish()))
    }

    fn compress_batch(&mut self) -> std::io::Result<()> {
        self.content.update(&self.batch);
        self.frame.clear();
        self.compressor
            .compress_to_buffer(&self.batch, &mut self.frame)?;
        if self.part.capacity() == 0 {
            // Room for a full part and the frame that crosses the part size.
            self.part
                .reserve_exact(self.part_size + self.frame.capacity());
        }
        self.part.extend_from_slice(&self.frame);
        self.batch.clear();
        self.frames += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Rows that do not compress to nothing: a counter and a pseudo-random number.
    fn rows(n: u64) -> Vec<u8> {
        (0..n)
            .map(|i| {
                format!(
                    "{i}\t{:016x}\t\\N\n",
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17)
                )
            })
            .collect::<String>()
            .into_bytes()
    }

    #[test]
    fn parts_concatenate_to_a_zstd_stream_of_the_text() {
        let text = rows(200_000);
        let mut encoder = SegmentEncoder::new(3, 256 * 1024).unwrap();
        let mut object = Vec::new();
        let mut parts = 0;
        for piece in text.chunks(300) {
            if let Some(part) = encoder.push(piece).unwrap() {
                assert!(part.len() >= 256 * 1024);
                object.extend_from_slice(&part);
                parts += 1;
            }
        }
        let (last, content) = encoder.finish().unwrap();
        object.extend_from_slice(&last);
        assert!(parts >= 1 && text.len() > 2 * FRAME_INPUT_BYTES);
        assert_eq!(content.rows, 200_000);
        assert_eq!(content.bytes, text.len() as u64);
        let mut decoded = Vec::new();
        zstd::stream::read::Decoder::new(&object[..])
            .unwrap()
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, text);
        assert_eq!(zstd::stream::decode_all(&object[..]).unwrap(), text);
    }

    #[test]
    fn an_empty_segment_is_one_empty_frame() {
        let (last, content) = SegmentEncoder::new(3, 5 << 20).unwrap().finish().unwrap();
        assert!(!last.is_empty());
        assert_eq!(content.rows, 0);
        assert!(zstd::stream::decode_all(&last[..]).unwrap().is_empty());
    }
}
