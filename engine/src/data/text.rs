//! Text corpora for language models: UTF-8 files (plain or gzipped) and seeded random blocks of
//! token ids, as nanoGPT samples them.

use super::idx::{gunzip, read_maybe_gzipped};
use crate::error::{Error, Result};
use crate::SeededRng;
use rand::{Rng, SeedableRng};
use std::path::Path;

/// The whole of a UTF-8 text file, gunzipped if it starts with the gzip magic.
pub fn read_text(path: &Path) -> Result<String> {
    utf8(read_maybe_gzipped(path)?, path)
}

/// `raw` (the contents of `path`, which only names errors) as UTF-8 text, gunzipped if it starts
/// with the gzip magic.
pub fn decode_text(raw: Vec<u8>, path: &Path) -> Result<String> {
    utf8(gunzip(raw, path)?, path)
}

fn utf8(bytes: Vec<u8>, path: &Path) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| {
        Error::format(
            path,
            format!(
                "not UTF-8 text (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// nanoGPT's split: the first `train_fraction` of the ids for training, the rest for validation.
pub fn split_ids(ids: &[u32], train_fraction: f64) -> (Vec<u32>, Vec<u32>) {
    let n = (ids.len() as f64 * train_fraction) as usize;
    (ids[..n].to_vec(), ids[n..].to_vec())
}

/// `batch` random contiguous windows of `ctx + 1` tokens: inputs are the first `ctx`, targets
/// the last `ctx` (the next token at every position).
///
/// Batch `k` depends only on (`seed`, `k`), so a resumed run draws exactly the batches the
/// uninterrupted one would have, with no loader state to save.
#[derive(Clone, Debug)]
pub struct TokenBlocks {
    pub ids: Vec<u32>,
    pub ctx: usize,
    pub batch: usize,
    pub seed: u64,
}

/// A batch of next-token examples, row-major `(batch, ctx)`.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenBatch {
    pub inputs: Vec<u32>,
    pub targets: Vec<i64>,
}

impl TokenBlocks {
    /// Windows of `ctx + 1` tokens from `ids`, or an error if `ids` is too short for one.
    pub fn new(
        ids: Vec<u32>,
        ctx: usize,
        batch: usize,
        seed: u64,
    ) -> std::result::Result<Self, String> {
        if ids.len() <= ctx {
            return Err(format!(
                "{} tokens are too few for one block of ctx {ctx} + 1",
                ids.len()
            ));
        }
        Ok(TokenBlocks {
            ids,
            ctx,
            batch,
            seed,
        })
    }

    /// Batch number `k`.
    pub fn batch(&self, k: u64) -> TokenBatch {
        // Distinct streams per batch: seed and batch index mixed, then ChaCha.
        let mut rng = SeededRng::seed_from_u64(self.seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let span = self.ids.len() - self.ctx;
        let mut inputs = Vec::with_capacity(self.batch * self.ctx);
        let mut targets = Vec::with_capacity(self.batch * self.ctx);
        for _ in 0..self.batch {
            let start = rng.random_range(0..span);
            let w = &self.ids[start..start + self.ctx + 1];
            inputs.extend_from_slice(&w[..self.ctx]);
            targets.extend(w[1..].iter().map(|&t| t as i64));
        }
        TokenBatch { inputs, targets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_inputs_shifted_by_one() {
        let ids: Vec<u32> = (0..100).collect();
        let blocks = TokenBlocks::new(ids, 8, 4, 7).unwrap();
        let b = blocks.batch(3);
        for row in 0..4 {
            let x = &b.inputs[row * 8..(row + 1) * 8];
            let y = &b.targets[row * 8..(row + 1) * 8];
            for i in 0..8 {
                assert_eq!(y[i], x[i] as i64 + 1);
            }
            assert!(
                x.windows(2).all(|w| w[1] == w[0] + 1),
                "a contiguous window"
            );
        }
    }

    #[test]
    fn batches_depend_only_on_seed_and_index() {
        let ids: Vec<u32> = (0..1000).map(|i| i % 97).collect();
        let a = TokenBlocks::new(ids.clone(), 16, 8, 1).unwrap();
        let b = TokenBlocks::new(ids, 16, 8, 1).unwrap();
        assert_eq!(a.batch(5), b.batch(5));
        assert_ne!(a.batch(5), a.batch(6));
        let c = TokenBlocks {
            seed: 2,
            ..a.clone()
        };
        assert_ne!(a.batch(5), c.batch(5));
    }

    #[test]
    fn every_start_is_reachable() {
        // ctx + 1 = len: the only window is the whole sequence.
        let blocks = TokenBlocks::new(vec![1, 2, 3], 2, 5, 0).unwrap();
        assert_eq!(blocks.batch(0).inputs, vec![1, 2, 1, 2, 1, 2, 1, 2, 1, 2]);
        assert!(TokenBlocks::new(vec![1, 2], 2, 1, 0).is_err());
    }

    #[test]
    fn split_keeps_order() {
        let ids: Vec<u32> = (0..10).collect();
        let (t, v) = split_ids(&ids, 0.9);
        assert_eq!((t.len(), v), (9, vec![9]));
    }

    #[test]
    fn reads_gzip_and_refuses_bad_utf8() {
        use std::io::Write;
        let dir = std::env::temp_dir().join(format!("selfsup-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let gz = dir.join("a.txt.gz");
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all("héllo".as_bytes()).unwrap();
        std::fs::write(&gz, enc.finish().unwrap()).unwrap();
        assert_eq!(read_text(&gz).unwrap(), "héllo");
        let bad = dir.join("bad.txt");
        std::fs::write(&bad, [b'a', 0xff, b'b']).unwrap();
        let e = read_text(&bad).unwrap_err().to_string();
        assert!(e.contains("bad.txt") && e.contains("offset 1"), "{e}");
        assert!(read_text(&dir)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
