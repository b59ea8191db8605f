//! Streaming content-defined chunking (FastCDC 2020).
//!
//! The upload body arrives in arbitrary pieces; the chunker keeps at most one maximum-size
//! chunk buffered, so memory per upload is bounded whatever the archive size. A
//! cut depends only on the bytes from the chunk's start, so cutting as bytes arrive gives exactly
//! the chunks a whole-file pass would (a test checks it), which is what makes dedup work.

use bytes::Bytes;
use fastcdc::v2020::{Normalization, cut, select_masks};

/// Content-defined chunking parameters. Fixed per deployment: changing them ruins dedup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkingSettings {
    pub min_size: u32,
    pub avg_size: u32,
    pub max_size: u32,
}

impl Default for ChunkingSettings {
    fn default() -> Self {
        ChunkingSettings {
            min_size: 64 * 1024,
            avg_size: 256 * 1024,
            max_size: 1024 * 1024,
        }
    }
}

pub struct StreamChunker {
    min_size: usize,
    avg_size: usize,
    max_size: usize,
    mask_s: u64,
    mask_l: u64,
    /// Bytes not yet cut: `buffer[start..]`. A fixed allocation, compacted in place, so an
    /// upload holds one buffer of 1.125 × the maximum chunk size for its whole life (a growing
    /// `BytesMut` reached 4 MiB per upload under the memory benchmark). The slack above the
    /// maximum trades memory (these buffers were 40 % of the heap at 16 concurrent uploads)
    /// against how often compaction moves the pending bytes (a memmove, cheap next to hashing).
    buffer: Vec<u8>,
    start: usize,
}

impl StreamChunker {
    pub fn new(settings: ChunkingSettings) -> Self {
        let avg_size = settings.avg_size as usize;
        let max_size = settings.max_size as usize;
        let (mask_s, mask_l) = select_masks(avg_size, Normalization::Level1);
        StreamChunker {
            min_size: settings.min_size as usize,
            avg_size,
            max_size,
            mask_s,
            mask_l,
            buffer: Vec::with_capacity(max_size + max_size / 8),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Cuts the next chunk off the front of the pending bytes and copies it out, so the chunk
    /// costs only its own size while it is hashed and stored.
    fn take_chunk(&mut self) -> Bytes {
        let pending = self.pending();
        let (_, length) = cut(
            pending,
            self.min_size,
            self.avg_size,
            self.max_size,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        let length = length.max(1).min(pending.len());
        let chunk = Bytes::copy_from_slice(&pending[..length]);
        self.start += length;
        chunk
    }

    /// Adds bytes; returns the chunks that are now complete.
    pub fn push(&mut self, mut data: &[u8]) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while !data.is_empty() {
            let room = self.max_size - self.pending().len();
            let (head, rest) = data.split_at(room.min(data.len()));
            if self.buffer.len() + head.len() > self.buffer.capacity() {
                self.buffer.copy_within(self.start.., 0);
                self.buffer.truncate(self.buffer.len() - self.start);
                self.start = 0;
            }
            self.buffer.extend_from_slice(head);
            data = rest;
            // With max_size bytes pending the next cut can no longer move.
            while self.pending().len() >= self.max_size {
                chunks.push(self.take_chunk());
            }
        }
        chunks
    }

    /// Ends the stream: the remaining bytes as final chunks.
    pub fn finish(mut self) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        while !self.pending().is_empty() {
            chunks.push(self.take_chunk());
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
    fn the_buffer_never_grows_whatever_the_piece_sizes() {
        let settings = ChunkingSettings::default();
        let data = random_bytes(6 * 1024 * 1024, 11);
        let mut chunker = StreamChunker::new(settings);
        let capacity = chunker.buffer.capacity();
        let mut pieces = data.chunks(3 * 1024 * 1024 + 17).chain(data.chunks(4_099));
        pieces
            .try_for_each(|piece| {
                chunker.push(piece);
                (chunker.buffer.capacity() == capacity).then_some(())
            })
            .expect("the chunker's buffer was reallocated");
    }

    #[test]
    fn empty_input_has_no_chunks() {
        let chunker = StreamChunker::new(ChunkingSettings::default());
        assert!(chunker.finish().is_empty());
    }
}
