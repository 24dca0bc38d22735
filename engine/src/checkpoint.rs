//! Checkpoints as safetensors files: named tensors plus string metadata (config, step, …).
//!
//! The format is the one PyTorch and the Hugging Face tools read, so weights saved here load
//! there and back. Files are written to a temporary name and renamed, so an interrupted save
//! never leaves a half-written checkpoint in place; a corrupt file is refused whole.

use crate::error::{Error, Result};
use crate::tensor::{DType, Tensor};
use crate::Device;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// The contents of a checkpoint, tensors on the CPU.
pub struct Checkpoint {
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
    /// Whether the file carried a checksum (and it matched); files written before checksums
    /// existed load with `false`, for the caller to warn about.
    pub checksummed: bool,
}

/// Metadata key of the CRC-32 over every tensor (name, dtype, shape, bytes) and every other
/// metadata entry, in sorted order: a flipped byte anywhere is refused.
const CHECKSUM: &str = "crc32";

fn checksum<'a>(
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>,
    metadata: &HashMap<String, String>,
) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, bytes) in tensors {
        h.update(name.as_bytes());
        h.update(dtype.as_bytes());
        for d in shape {
            h.update(&(*d as u64).to_le_bytes());
        }
        h.update(bytes);
    }
    let mut meta: Vec<_> = metadata.iter().filter(|(k, _)| *k != CHECKSUM).collect();
    meta.sort();
    for (k, v) in meta {
        h.update(k.as_bytes());
        h.update(&[0]);
        h.update(v.as_bytes());
        h.update(&[0]);
    }
    format!("{:08x}", h.finalize())
}

impl Checkpoint {
    /// A metadata entry, or an error naming the file and the missing key.
    pub fn meta(&self, key: &str, source: &Path) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::format(source, format!("checkpoint metadata has no {key:?}")))
    }

    /// The tensors whose names start with `prefix.`, with the prefix removed.
    pub fn with_prefix(&self, prefix: &str) -> HashMap<String, Tensor> {
        let p = format!("{prefix}.");
        self.tensors
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&p).map(|s| (s.to_string(), v.clone())))
            .collect()
    }
}

/// Writes `tensors` and `metadata` to `path` atomically.
pub fn save(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: &HashMap<String, String>,
) -> Result<()> {
    // A device failure refuses the save, so the file on disk keeps the last good state.
    let host: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = match t.dtype() {
                DType::F32 => (Dtype::F32, bytemuck::cast_slice(&t.try_to_vec()?).to_vec()),
                DType::F64 => (
                    Dtype::F64,
                    bytemuck::cast_slice(&t.try_to_vec_f64()?).to_vec(),
                ),
                DType::F16 => {
                    let halves: Vec<u16> = (t.try_to_vec()?.into_iter())
                        .map(|v| half::f16::from_f32(v).to_bits())
                        .collect();
                    (Dtype::F16, bytemuck::cast_slice(&halves).to_vec())
                }
            };
            Ok((name.clone(), dtype, t.shape().to_vec(), bytes))
        })
        .collect::<Result<_>>()
        .map_err(|e| Error::format(path, format!("not saved: {e}")))?;
    let views = host
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut metadata = metadata.clone();
    let sum = checksum(
        host.iter()
            .map(|(n, d, s, b)| (n.as_str(), format!("{d:?}"), s.as_slice(), b.as_slice())),
        &metadata,
    );
    metadata.insert(CHECKSUM.into(), sum);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    // Unique per process and call, so two runs writing into one folder never share a file.
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("safetensors.{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

/// Reads a checkpoint, validating the whole file before returning anything.
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| Error::format(path, format!("not a valid safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let checksummed = match metadata.get(CHECKSUM) {
        None => false,
        Some(stored) => {
            let views = st.tensors();
            let sum = checksum(
                views
                    .iter()
                    .map(|(n, v)| (n.as_str(), format!("{:?}", v.dtype()), v.shape(), v.data())),
                &metadata,
            );
            if *stored != sum {
                return Err(Error::format(
                    path,
                    format!(
                        "checksum mismatch (stored {stored}, computed {sum}): the file is corrupt"
                    ),
                ));
            }
            true
        }
    };
    let mut tensors = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let t = match view.dtype() {
            Dtype::F32 => Tensor::from_vec(
                bytemuck::pod_collect_to_vec(view.data()),
                &shape,
                &Device::Cpu,
            ),
            Dtype::F64 => Tensor::from_vec_f64(bytemuck::pod_collect_to_vec(view.data()), &shape),
            // f16 storage is GPU-only: loaded widened (exactly) to f32, to be cast where needed.
            Dtype::F16 => {
                let halves: Vec<u16> = bytemuck::pod_collect_to_vec(view.data());
                let data = halves.into_iter().map(|h| half::f16::from_bits(h).to_f32());
                Tensor::from_vec(data.collect(), &shape, &Device::Cpu)
            }
            other => {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor {name} has dtype {other:?}; only F32, F64 and F16 are supported"
                    ),
                ))
            }
        };
        tensors.insert(name, t);
    }
    Ok(Checkpoint {
        tensors,
        metadata,
        checksummed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("selfsup-ckpt-{}-{name}", std::process::id()))
    }

    #[test]
    fn round_trip_keeps_names_shapes_values_and_metadata() {
        let path = temp("rt.safetensors");
        let a = Tensor::randn(&[3, 5], 1, &Device::Cpu);
        let b = Tensor::from_vec_f64(vec![1.5, -2.25], &[2]);
        let meta = HashMap::from([("step".to_string(), "42".to_string())]);
        save(
            &path,
            &[("enc.a".into(), a.clone()), ("b".into(), b.clone())],
            &meta,
        )
        .unwrap();
        let ck = load(&path).unwrap();
        assert_eq!(ck.tensors["enc.a"].shape(), [3, 5]);
        assert_eq!(ck.tensors["enc.a"].to_vec(), a.to_vec());
        assert_eq!(ck.tensors["b"].to_vec_f64(), b.to_vec_f64());
        assert_eq!(ck.meta("step", &path).unwrap(), "42");
        assert_eq!(ck.with_prefix("enc").keys().collect::<Vec<_>>(), ["a"]);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_flipped_byte_is_refused_and_files_without_a_checksum_load_unverified() {
        let path = temp("flip.safetensors");
        let a = Tensor::randn(&[64], 1, &Device::Cpu);
        let meta = HashMap::from([("step".to_string(), "7".to_string())]);
        save(&path, &[("a".into(), a.clone())], &meta).unwrap();
        assert!(load(&path).unwrap().checksummed);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 5;
        bytes[last] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let err = load(&path)
            .err()
            .expect("a flipped byte must be refused")
            .to_string();
        assert!(
            err.contains("flip.safetensors") && err.contains("checksum"),
            "{err}"
        );
        // A file written without a checksum (by an older selfsup, or by PyTorch) still loads.
        let data: Vec<u8> = bytemuck::cast_slice(&a.to_vec()).to_vec();
        let view = TensorView::new(Dtype::F32, vec![64], &data).unwrap();
        std::fs::write(&path, safetensors::serialize([("a", view)], None).unwrap()).unwrap();
        let ck = load(&path).unwrap();
        assert!(!ck.checksummed);
        assert_eq!(ck.tensors["a"].to_vec(), a.to_vec());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn corrupt_or_truncated_files_are_refused_with_the_file_name() {
        let path = temp("bad.safetensors");
        let a = Tensor::randn(&[64], 1, &Device::Cpu);
        save(&path, &[("a".into(), a)], &HashMap::new()).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let err = load(&path)
            .err()
            .expect("truncated file must be refused")
            .to_string();
        assert!(
            err.contains("bad.safetensors") && err.contains("not a valid safetensors"),
            "{err}"
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(load(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        let err = load(&path).err().unwrap().to_string();
        assert!(err.contains("bad.safetensors"), "{err}");
    }
}
