//! Reader for the binary version of CIFAR-10 (`cifar-10-binary.tar.gz`, extracted).
//!
//! Each file is a run of 3,073-byte records: one label byte (0–9), then 1,024 red, 1,024 green and
//! 1,024 blue bytes, each plane a row-major 32×32 image. That is already channel-major, so records
//! map straight onto [`Dataset`] images.

use std::path::{Path, PathBuf};

use super::dataset::Dataset;
use crate::error::{Error, Result};

const SIDE: usize = 32;
const PIXELS: usize = 3 * SIDE * SIDE;
const RECORD: usize = 1 + PIXELS;
const CLASSES: usize = 10;

/// Loads and concatenates CIFAR-10 binary batch files, in the order given.
pub fn load_cifar10(paths: &[PathBuf]) -> Result<Dataset> {
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for path in paths {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        if bytes.is_empty() || bytes.len() % RECORD != 0 {
            return Err(Error::format(
                path,
                format!(
                    "size {} bytes is not a positive multiple of the {RECORD}-byte CIFAR-10 \
                     record (1 label byte + {PIXELS} pixel bytes)",
                    bytes.len()
                ),
            ));
        }
        for (i, record) in bytes.chunks_exact(RECORD).enumerate() {
            let label = record[0];
            if usize::from(label) >= CLASSES {
                return Err(Error::format(
                    path,
                    format!("record {i}: label {label} out of range 0..=9"),
                ));
            }
            labels.push(u32::from(label));
            images.extend(record[1..].iter().map(|&b| f32::from(b) / 255.0));
        }
    }
    Ok(Dataset {
        images,
        n: labels.len(),
        labels,
        c: 3,
        h: SIDE,
        w: SIDE,
        classes: CLASSES,
    })
}

/// Loads the training set (`data_batch_1.bin` … `data_batch_5.bin`) or the test set
/// (`test_batch.bin`) from `dir`, or from `dir/cifar-10-batches-bin` where the archive was
/// extracted into `dir` as it comes.
pub fn load_cifar10_dir(dir: &Path, train: bool) -> Result<Dataset> {
    let nested = dir.join("cifar-10-batches-bin");
    let dir = if !dir.join("test_batch.bin").is_file() && nested.is_dir() {
        nested.as_path()
    } else {
        dir
    };
    let paths: Vec<PathBuf> = if train {
        (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect()
    } else {
        vec![dir.join("test_batch.bin")]
    };
    load_cifar10(&paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::TempDir;

    /// A record whose pixels encode (record, channel, position) so layout mistakes show.
    fn record(label: u8, seed: usize) -> Vec<u8> {
        let mut r = vec![label];
        r.extend((0..PIXELS).map(|p| ((p * 7 + seed * 13) % 256) as u8));
        r
    }

    #[test]
    fn records_round_trip_in_order() {
        let dir = TempDir::new("cifar-rt");
        let a: Vec<u8> = [record(3, 0), record(9, 1)].concat();
        let b = record(0, 2);
        let pa = dir.write("a.bin", &a);
        let pb = dir.write("b.bin", &b);
        let ds = load_cifar10(&[pa, pb]).unwrap();
        assert_eq!((ds.n, ds.c, ds.h, ds.w, ds.classes), (3, 3, 32, 32, 10));
        assert_eq!(ds.labels, vec![3, 9, 0]);
        for (i, rec) in [record(3, 0), record(9, 1), record(0, 2)]
            .iter()
            .enumerate()
        {
            let expect: Vec<f32> = rec[1..].iter().map(|&v| f32::from(v) / 255.0).collect();
            assert_eq!(ds.image(i), expect.as_slice());
        }
        // Channel-major: green plane of image 1 starts 1024 values in.
        assert_eq!(
            ds.image(1)[1024],
            f32::from(((1024 * 7 + 13) % 256) as u8) / 255.0
        );
    }

    #[test]
    fn bad_size_is_refused_naming_the_file() {
        let dir = TempDir::new("cifar-size");
        let mut bytes = record(1, 0);
        bytes.push(0);
        let path = dir.write("odd.bin", &bytes);
        let msg = load_cifar10(&[path]).unwrap_err().to_string();
        assert!(
            msg.contains("odd.bin") && msg.contains("3074 bytes"),
            "{msg}"
        );
        let empty = dir.write("empty.bin", &[]);
        assert!(load_cifar10(&[empty]).is_err());
    }

    #[test]
    fn out_of_range_label_is_refused() {
        let dir = TempDir::new("cifar-label");
        let path = dir.write("bad.bin", &[record(2, 0), record(10, 1)].concat());
        let msg = load_cifar10(&[path]).unwrap_err().to_string();
        assert!(
            msg.contains("bad.bin") && msg.contains("record 1: label 10"),
            "{msg}"
        );
    }

    #[test]
    fn directory_layout_is_found() {
        let dir = TempDir::new("cifar-dir");
        let inner = dir.path("cifar-10-batches-bin");
        std::fs::create_dir(&inner).unwrap();
        for i in 1..=5 {
            std::fs::write(
                inner.join(format!("data_batch_{i}.bin")),
                record(i as u8, i),
            )
            .unwrap();
        }
        std::fs::write(inner.join("test_batch.bin"), record(7, 0)).unwrap();
        let train = load_cifar10_dir(dir.root(), true).unwrap();
        assert_eq!(train.labels, vec![1, 2, 3, 4, 5]);
        let test = load_cifar10_dir(&inner, false).unwrap();
        assert_eq!(test.labels, vec![7]);
        std::fs::remove_file(inner.join("data_batch_3.bin")).unwrap();
        let msg = load_cifar10_dir(&inner, true).unwrap_err().to_string();
        assert!(msg.contains("data_batch_3.bin"), "{msg}");
    }
}
