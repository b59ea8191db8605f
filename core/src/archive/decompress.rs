//! Push-mode decompression: detects the format by its magic bytes (gzip, zstd or none) and
//! hands the tar stream to [`TarStream`] as it is produced, enforcing the size bounds.
//!
//! Each push does work proportional to its input and to what that input expands to, and the
//! expansion is capped by [`ArchiveLimits::max_expansion_ratio`] /
//! [`ArchiveLimits::ratio_allowance_bytes`], so a small piece cannot make a push run long. The
//! decoder state is small and fixed: gzip keeps a 32 KiB window, zstd a window of at most
//! 2^[`ArchiveLimits::max_zstd_window_log`] bytes (frames needing more are refused before any
//! of it is allocated) plus one output buffer.

use std::io::{self, Write};

use flate2::write::MultiGzDecoder;
use zstd::stream::raw::{DParameter, Decoder as ZstdDecoder, InBuffer, Operation, OutBuffer};

use super::manifest::Manifest;
use super::tar_stream::TarStream;
use super::tree::Tree;
use super::{ArchiveError, ArchiveLimits, DecompressionBudget};

const ZSTD_OUTPUT: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    Gzip,
    Zstd,
}

impl Format {
    fn detect(magic: &[u8]) -> Format {
        if magic.starts_with(&[0x1f, 0x8b]) {
            Format::Gzip
        } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Format::Zstd
        } else {
            Format::Plain
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Plain => "tar",
            Format::Gzip => "gzip",
            Format::Zstd => "zstd",
        }
    }
}

/// Where decompressed bytes go: the size bounds, then the tar stream. Errors are kept here as
/// [`ArchiveError`]s, because the io::Error carrying them through flate2 may be rewrapped.
pub(super) struct Sink {
    stream: TarStream,
    limits: ArchiveLimits,
    format: Format,
    compressed: u64,
    unpacked: u64,
    verdict: Option<ArchiveError>,
}

impl Sink {
    fn accept(&mut self, data: &[u8]) -> Result<(), ArchiveError> {
        self.unpacked += data.len() as u64;
        let limits = &self.limits;
        if self.format == Format::Plain {
            if self.unpacked > limits.max_unpacked_bytes {
                return Err(ArchiveError::TooLarge(format!(
                    "archive is larger than the limit of {} bytes",
                    limits.max_unpacked_bytes
                )));
            }
        } else {
            let allowed = limits
                .ratio_allowance_bytes
                .saturating_add(limits.max_expansion_ratio.saturating_mul(self.compressed));
            if self.unpacked > limits.max_unpacked_bytes || self.unpacked > allowed {
                return Err(ArchiveError::TooLarge(
                    "archive expands too much when decompressed".to_owned(),
                ));
            }
        }
        self.stream.write(data)
    }
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        match self.accept(data) {
            Ok(()) => Ok(data.len()),
            Err(error) => {
                let message = error.to_string();
                self.verdict.get_or_insert(error);
                Err(io::Error::other(message))
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum State {
    /// Fewer than 4 bytes seen: the format is not known yet.
    Detecting {
        sink: Box<Sink>,
        magic: Vec<u8>,
    },
    Plain(Box<Sink>),
    Gzip(Box<MultiGzDecoder<Sink>>),
    Zstd {
        decoder: Box<ZstdDecoder<'static>>,
        sink: Box<Sink>,
        output: Vec<u8>,
        /// The last frame seen was complete (zstd returned 0).
        frame_done: bool,
        /// This upload's share of the server's decoder memory, given back on drop.
        _reservation: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Done,
}

pub(super) struct Decompressor {
    state: State,
    budget: Option<DecompressionBudget>,
}

impl Decompressor {
    pub(super) fn new(limits: ArchiveLimits, budget: Option<DecompressionBudget>) -> Decompressor {
        Decompressor {
            budget,
            state: State::Detecting {
                sink: Box::new(Sink {
                    stream: TarStream::new(limits),
                    limits,
                    format: Format::Plain,
                    compressed: 0,
                    unpacked: 0,
                    verdict: None,
                }),
                magic: Vec::with_capacity(4),
            },
        }
    }

    pub(super) fn push(&mut self, mut piece: &[u8]) -> Result<(), ArchiveError> {
        if let State::Detecting { magic, .. } = &mut self.state {
            let taken = (4 - magic.len()).min(piece.len());
            magic.extend_from_slice(&piece[..taken]);
            piece = &piece[taken..];
            if magic.len() < 4 {
                return Ok(());
            }
            self.start()?;
        }
        self.decode(piece)
    }

    pub(super) fn finish(mut self) -> Result<(Manifest, Tree), ArchiveError> {
        if let State::Detecting { .. } = self.state {
            self.start()?;
        }
        let sink = match std::mem::replace(&mut self.state, State::Done) {
            State::Plain(sink) => *sink,
            State::Gzip(mut decoder) => {
                if let Err(error) = decoder.try_finish() {
                    return Err(decoder_error(decoder.get_mut(), Format::Gzip, error));
                }
                // try_finish succeeded, so finish only hands the sink back.
                match decoder.finish() {
                    Ok(sink) => sink,
                    Err(error) => return Err(corrupt(Format::Gzip, &error)),
                }
            }
            State::Zstd {
                mut decoder,
                mut sink,
                mut output,
                frame_done,
                ..
            } => {
                let frame_done = zstd_run(&mut decoder, &mut sink, &mut output, &[], frame_done)?;
                if !frame_done {
                    return Err(corrupt(
                        Format::Zstd,
                        &io::Error::other("the last frame is incomplete"),
                    ));
                }
                *sink
            }
            State::Detecting { .. } | State::Done => {
                unreachable!("started above, and finish consumes the decompressor")
            }
        };
        sink.stream.finish()
    }

    /// Leaves `Detecting` for the format its magic bytes name, and decodes them.
    fn start(&mut self) -> Result<(), ArchiveError> {
        let State::Detecting { mut sink, magic } = std::mem::replace(&mut self.state, State::Done)
        else {
            return Ok(());
        };
        let format = Format::detect(&magic);
        sink.format = format;
        self.state = match format {
            Format::Plain => State::Plain(sink),
            Format::Gzip => State::Gzip(Box::new(MultiGzDecoder::new(*sink))),
            Format::Zstd => {
                let window_log = sink.limits.max_zstd_window_log;
                let reservation = match &self.budget {
                    Some(budget) => Some(budget.reserve(1u64 << window_log)?),
                    None => None,
                };
                let decoder = ZstdDecoder::new()
                    .and_then(|mut decoder| {
                        decoder.set_parameter(DParameter::WindowLogMax(window_log))?;
                        Ok(decoder)
                    })
                    .map_err(|error| {
                        ArchiveError::Invalid(format!("cannot start the zstd decoder: {error}"))
                    })?;
                State::Zstd {
                    decoder: Box::new(decoder),
                    sink,
                    output: vec![0; ZSTD_OUTPUT],
                    frame_done: false,
                    _reservation: reservation,
                }
            }
        };
        self.decode(&magic)
    }

    fn decode(&mut self, piece: &[u8]) -> Result<(), ArchiveError> {
        if piece.is_empty() {
            return Ok(());
        }
        match &mut self.state {
            State::Plain(sink) => sink.accept(piece),
            State::Gzip(decoder) => {
                decoder.get_mut().compressed += piece.len() as u64;
                match decoder.write_all(piece) {
                    Ok(()) => Ok(()),
                    Err(error) => Err(decoder_error(decoder.get_mut(), Format::Gzip, error)),
                }
            }
            State::Zstd {
                decoder,
                sink,
                output,
                frame_done,
                ..
            } => {
                sink.compressed += piece.len() as u64;
                *frame_done = zstd_run(decoder, sink, output, piece, *frame_done)?;
                Ok(())
            }
            State::Detecting { .. } | State::Done => unreachable!("decode runs after start"),
        }
    }
}

/// Decodes `input` (all of it, and everything zstd holds back when `input` is empty); returns
/// whether the last frame is complete.
fn zstd_run(
    decoder: &mut ZstdDecoder<'static>,
    sink: &mut Sink,
    output: &mut [u8],
    input: &[u8],
    mut frame_done: bool,
) -> Result<bool, ArchiveError> {
    let window_log = sink.limits.max_zstd_window_log;
    let input_len = input.len();
    let mut input = InBuffer::around(input);
    loop {
        let mut out = OutBuffer::around(&mut *output);
        let hint = decoder
            .run(&mut input, &mut out)
            .map_err(|error| zstd_error(window_log, &error))?;
        let produced = out.pos();
        if input.pos() > 0 || produced > 0 {
            frame_done = hint == 0;
        }
        sink.accept(&output[..produced])?;
        if input.pos() == input_len && produced < output.len() {
            return Ok(frame_done);
        }
    }
}

fn zstd_error(window_log: u32, error: &io::Error) -> ArchiveError {
    // zstd's own name for ZSTD_error_frameParameter_windowTooLarge.
    if error.to_string().contains("Frame requires too much memory") {
        return ArchiveError::Invalid(format!(
            "zstd frame needs a window larger than the limit of {} MiB (2^{window_log} bytes); \
             recompress without --long (zstd levels 1-19 stay within it)",
            (1u64 << window_log) >> 20
        ));
    }
    corrupt(Format::Zstd, error)
}

/// The verdict the sink recorded, if the error came from there; else the decoder's own.
fn decoder_error(sink: &mut Sink, format: Format, error: io::Error) -> ArchiveError {
    sink.verdict
        .take()
        .unwrap_or_else(|| corrupt(format, &error))
}

fn corrupt(format: Format, error: &io::Error) -> ArchiveError {
    ArchiveError::Invalid(format!(
        "{} stream is corrupt or truncated: {error}",
        format.name()
    ))
}
