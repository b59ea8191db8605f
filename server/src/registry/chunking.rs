//! Streaming content-defined chunking (FastCDC 2020).
//!
//! The upload body arrives in arbitrary pieces; the chunker keeps at most one maximum-size
//! chunk plus one piece buffered, so memory per upload is bounded whatever the archive size. A
//! cut depends only on the bytes from the chunk's start, so cutting as bytes arrive gives exactly
//! the chunks a whole-file pass would (a test checks it), which is what makes dedup work.

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::{Normalization, cut, select_masks};

use crate::config::ChunkingSettings;

pub struct StreamChunker {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    buffer: BytesMut,
}

impl StreamChunker {
    pub fn new(settings: ChunkingSettings) -> Self {
        let avg_size = settings.avg_size as usize;
        let (mask_s, mask_l) = select_masks(avg_size, Normalization::Level1);
        StreamChunker {
            min_size: settings.min_size as usize,
            avg_size,
            max_size: settings.max_size as usize,
            mask_s,
            mask_l,
            buffer: BytesMut::with_capacity(settings.max_size as usize * 2),
        }
    }

    /// Length of the next chunk at the front of the buffer.
    fn next_cut(&self) -> usize {
        let (_, length) = cut(
            &self.buffer,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        length.max(1).min(self.buffer.len())
    }

    /// Adds bytes; returns the chunks that are now complete.
    pub fn push(&mut self, data: &[u8]) -> Vec<Bytes> {
        self.buffer.extend_from_slice(data);
        let mut chunks = Vec::new();
        // With at least max_size bytes buffered the next cut can no longer move.
        while self.buffer.len() >= self.max_size {
            let length = self.next_cut();
            chunks.push(self.buffer.split_to(length).freeze());
        }
        chunks
    }

    /// Ends the stream: the remaining bytes as final chunks.
    pub fn finish(mut self) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while !self.buffer.is_empty() {
            let length = self.next_cut();
            chunks.push(self.buffer.split_to(length).freeze());
        }
        chunks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random_bytes(length: usize, seed: u64) -> Vec<u8> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut data = vec![0u8; length];
        rng.fill(&mut data[..]);
        data
    }

    #[test]
    fn streaming_cuts_equal_whole_buffer_cuts() {
        let settings = ChunkingSettings::default();
        let data = random_bytes(5 * 1024 * 1024 + 123, 7);
        let expected: Vec<usize> = fastcdc::v2020::FastCDC::new(
            &data,
            settings.min_size as usize,
            settings.avg_size as usize,
            settings.max_size as usize,
        )
        .map(|chunk| chunk.length)
        .collect();
        for piece_size in [1000, 65_536, 3 * 1024 * 1024] {
            let mut chunker = StreamChunker::new(settings);
            let mut lengths = Vec::new();
            for piece in data.chunks(piece_size) {
                lengths.extend(chunker.push(piece).iter().map(Bytes::len));
            }
            lengths.extend(chunker.finish().iter().map(Bytes::len));
            assert_eq!(lengths, expected, "piece size {piece_size}");
        }
    }

    #[test]
    fn chunks_respect_the_bounds_and_reassemble() {
        let settings = ChunkingSettings::default();
        let data = random_bytes(3 * 1024 * 1024, 9);
        let mut chunker = StreamChunker::new(settings);
        let mut chunks = chunker.push(&data);
        chunks.extend(chunker.finish());
        let (last, rest) = chunks.split_last().unwrap();
        assert!(rest.iter().all(|c| c.len() >= settings.min_size as usize));
        assert!(chunks.iter().all(|c| c.len() <= settings.max_size as usize));
        assert!(!last.is_empty());
        assert_eq!(chunks.concat(), data);
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let chunker = StreamChunker::new(ChunkingSettings::default());
        assert!(chunker.finish().is_empty());
    }
}
