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
    let host: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let (dtype, bytes) = match t.dtype() {
                DType::F32 => (Dtype::F32, bytemuck::cast_slice(&t.to_vec()).to_vec()),
                DType::F64 => (Dtype::F64, bytemuck::cast_slice(&t.to_vec_f64()).to_vec()),
            };
            (name.clone(), dtype, t.shape().to_vec(), bytes)
        })
        .collect();
    let views = host
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.as_str(), v))
                .map_err(|e| Error::format(path, format!("tensor {name}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, Some(metadata.clone()))
        .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
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
            other => {
                return Err(Error::format(
                    path,
                    format!("tensor {name} has dtype {other:?}; only F32 and F64 are supported"),
                ))
            }
        };
        tensors.insert(name, t);
    }
    Ok(Checkpoint {
        tensors,
        metadata: meta.metadata().clone().unwrap_or_default(),
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
