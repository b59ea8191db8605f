//! A bounded fuzz run of the validator: random mutations of the corpus (byte flips, header
//! fields rewritten with their checksum fixed so the mutation reaches the parser behind it,
//! blocks duplicated, dropped or swapped, truncation, pieces of other archives spliced in).
//! The validator must never panic, and every mutant it accepts goes through the same
//! differential check as the corpus. Seeded; `NISO_TEST_SEED` replays a run.

use crate::craft::set_checksum;
use crate::{Outcome, corpus, differential, keep_failing_input, seed, validate};

const ITERATIONS: usize = 3000;
/// Accepted mutants unpacked by the readers (the slow part), at most.
const MAX_DIFFERENTIAL: usize = 150;

/// xorshift64*: enough randomness for mutations, replayable from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

/// Bytes worth trying in header fields.
const INTERESTING: &[u8] = b"\0 /.\\0127xgLKS5\x80\xff=\n";

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, donors: &[Vec<u8>]) {
    let blocks = bytes.len() / 512;
    match rng.below(7) {
        0 => {
            let at = rng.below(bytes.len());
            bytes[at] ^= 1 << rng.below(8);
        }
        1 | 2 => {
            // A header field rewritten, checksum fixed.
            let block = rng.below(blocks) * 512;
            let field = rng.below(512);
            let len = 1 + rng.below(4);
            for offset in field..(field + len).min(512) {
                bytes[block + offset] = INTERESTING[rng.below(INTERESTING.len())];
            }
            set_checksum(&mut bytes[block..block + 512]);
        }
        3 => {
            let from = rng.below(blocks) * 512;
            let block = bytes[from..from + 512].to_vec();
            let to = rng.below(blocks + 1) * 512;
            bytes.splice(to..to, block);
        }
        4 => {
            let at = rng.below(blocks) * 512;
            if blocks > 1 {
                bytes.drain(at..at + 512);
            }
        }
        5 => {
            let cut = rng.below(bytes.len());
            bytes.truncate(cut);
        }
        _ => {
            // Splice a run of blocks from another archive of the corpus.
            let donor = &donors[rng.below(donors.len())];
            let donor_blocks = donor.len() / 512;
            let from = rng.below(donor_blocks) * 512;
            let len = (1 + rng.below(3)) * 512;
            let piece = donor[from..(from + len).min(donor.len())].to_vec();
            let to = rng.below(blocks + 1) * 512;
            bytes.splice(to..to, piece);
        }
    }
}

#[test]
fn mutated_archives_never_panic_and_unpack_as_validated() {
    let seed = seed("mutated_archives_never_panic_and_unpack_as_validated");
    let mut rng = Rng(seed | 1);
    let mut seeds: Vec<Vec<u8>> = corpus::accepted().into_iter().map(|(_, b)| b).collect();
    seeds.extend(corpus::attacks().into_iter().map(|(_, bytes)| bytes));
    let (mut accepted, mut unpacked) = (0, 0);
    for iteration in 0..ITERATIONS {
        let mut bytes = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            if bytes.len() < 512 {
                break;
            }
            mutate(&mut rng, &mut bytes, &seeds);
        }
        let replay = || {
            format!(
                "iteration {iteration}, NISO_TEST_SEED={seed}, input kept at {}",
                keep_failing_input("fuzz", &bytes)
            )
        };
        let outcome = validate(&bytes).unwrap_or_else(|error| panic!("{error}: {}", replay()));
        if let Outcome::Accepted(_) = outcome {
            accepted += 1;
            if unpacked < MAX_DIFFERENTIAL {
                unpacked += 1;
                match differential(&bytes) {
                    Ok(true) => {}
                    Ok(false) => panic!("accepted once, refused the second time: {}", replay()),
                    Err(error) => panic!("{error}: {}", replay()),
                }
            }
        }
    }
    println!("{ITERATIONS} mutants: {accepted} accepted, {unpacked} unpacked by both readers");
}
