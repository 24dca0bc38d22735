//! Reader for IDX files, the format of the original MNIST (and Fashion-MNIST) downloads.
//!
//! Layout: a big-endian u32 magic `0x0000_08NN` (element type 0x08 = unsigned byte, `NN` = number
//! of dimensions), one big-endian u32 per dimension, then the elements row-major. Files may be
//! gzip-compressed; that is detected from the content, since downloads are often renamed.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The two bytes every gzip stream starts with.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// IDX element type code for unsigned bytes, the only type MNIST-style data uses.
const IDX_U8: u8 = 0x08;

/// An n-dimensional array of bytes read from an IDX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// Extent of each dimension, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file of unsigned bytes, plain or gzip-compressed.
///
/// Anything that does not match its header exactly (bad magic, short or overlong data) is refused
/// with an error naming the file, so a damaged download never turns into silently wrong data.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    parse_idx(path, read_maybe_gzipped(path)?)
}

/// The bytes of the regular file at `path`, gunzipped if they start with the gzip magic.
pub(crate) fn read_maybe_gzipped(path: &Path) -> Result<Vec<u8>> {
    // A FIFO or a device such as /dev/zero would be read until memory runs out.
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::format(path, "not a regular file"));
    }
    gunzip(std::fs::read(path).map_err(|e| Error::io(path, e))?, path)
}

/// `raw` gunzipped if it starts with the gzip magic, else unchanged (`path` names errors).
pub(crate) fn gunzip(raw: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::format(path, format!("corrupt or truncated gzip data: {e}")))?;
    Ok(out)
}

/// Parses the decompressed contents of the IDX file at `path` (the path only names errors).
fn parse_idx(path: &Path, mut bytes: Vec<u8>) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(truncated(path, "header", 4, bytes.len()));
    }
    let magic = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    if bytes[0] != 0 || bytes[1] != 0 || bytes[3] == 0 {
        return Err(Error::format(
            path,
            format!(
                "bad magic 0x{magic:08x}: not an IDX file (expected 0x00000803 for images or \
                 0x00000801 for labels)"
            ),
        ));
    }
    if bytes[2] != IDX_U8 {
        return Err(Error::format(
            path,
            format!(
                "unsupported IDX element type 0x{:02x} (magic 0x{magic:08x}); only unsigned \
                 bytes (0x08) are supported",
                bytes[2]
            ),
        ));
    }
    let ndim = bytes[3] as usize;
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(truncated(path, "header", header, bytes.len()));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dims {dims:?} overflow the address space")))?;
    let got = bytes.len() - header;
    if got < expected {
        return Err(truncated(
            path,
            &format!("data for dims {dims:?}"),
            expected,
            got,
        ));
    }
    if got > expected {
        return Err(Error::format(
            path,
            format!(
                "{} bytes of trailing garbage after the {expected} data bytes for dims {dims:?}",
                got - expected
            ),
        ));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

fn truncated(path: &Path, what: &str, expected: usize, got: usize) -> Error {
    Error::format(
        path,
        format!("truncated {what}: expected {expected} bytes, got {got}"),
    )
}

/// The labels file that goes with an MNIST-style images file.
///
/// Follows the official naming: `…images-idx3-ubyte[.gz]` → `…labels-idx1-ubyte[.gz]` and
/// `…images.idx3-ubyte` → `…labels.idx1-ubyte`. The variant with the same compression suffix is
/// preferred, then the other one, since people often decompress one file and not the other.
pub fn labels_path_for(images: &Path) -> Result<PathBuf> {
    const PAIRS: [(&str, &str); 2] = [
        ("images-idx3-ubyte", "labels-idx1-ubyte"),
        ("images.idx3-ubyte", "labels.idx1-ubyte"),
    ];
    let name = images.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let (stem, gz) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    let labels_stem = PAIRS
        .iter()
        .find_map(|(img, lab)| {
            stem.strip_suffix(img)
                .map(|prefix| format!("{prefix}{lab}"))
        })
        .ok_or_else(|| {
            Error::format(
                images,
                "file name does not follow the MNIST convention `…-images-idx3-ubyte[.gz]`, so \
                 its labels file cannot be found",
            )
        })?;
    let plain = images.with_file_name(&labels_stem);
    let zipped = images.with_file_name(format!("{labels_stem}.gz"));
    let (first, second) = if gz { (zipped, plain) } else { (plain, zipped) };
    if first.is_file() {
        Ok(first)
    } else if second.is_file() {
        Ok(second)
    } else {
        let reason = format!(
            "labels file for {} not found (nor {})",
            images.display(),
            second.display()
        );
        Err(Error::io(
            &first,
            std::io::Error::new(std::io::ErrorKind::NotFound, reason),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::test_util::{shared_data, TempDir};

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, IDX_U8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn err_text(r: Result<IdxArray>) -> String {
        r.expect_err("expected an error").to_string()
    }

    #[test]
    fn reads_real_mnist_images_and_labels() {
        let images = read_idx(&shared_data("mnist9k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(images.dims, vec![9000, 28, 28]);
        assert_eq!(images.data.len(), 9000 * 28 * 28);
        let labels = read_idx(&shared_data("mnist9k-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(labels.dims, vec![9000]);
        assert!(labels.data.iter().all(|&l| l <= 9));
    }

    #[test]
    fn plain_and_gzip_read_identically_whatever_the_extension() {
        let dir = TempDir::new("idx-gz");
        let bytes = idx_bytes(&[2, 3, 2], &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        let plain = dir.write("a-images-idx3-ubyte", &bytes);
        // A gzip file without the `.gz` extension is still recognised by its magic bytes.
        let zipped = dir.write("b-images-idx3-ubyte", &gzip(&bytes));
        let a = read_idx(&plain).unwrap();
        assert_eq!(a.dims, vec![2, 3, 2]);
        assert_eq!(a.data, (1..=12).collect::<Vec<u8>>());
        assert_eq!(a, read_idx(&zipped).unwrap());
    }

    #[test]
    fn truncated_data_is_refused_with_counts() {
        let dir = TempDir::new("idx-trunc");
        let path = dir.write("t-images-idx3-ubyte", &idx_bytes(&[2, 2, 2], &[0; 5]));
        let msg = err_text(read_idx(&path));
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(
            msg.contains("truncated") && msg.contains("expected 8 bytes, got 5"),
            "{msg}"
        );
        let header_only = dir.write("h-images-idx3-ubyte", &[0, 0, 8, 3, 0, 0]);
        assert!(err_text(read_idx(&header_only)).contains("truncated header"));
    }

    #[test]
    fn truncated_gzip_is_refused() {
        let dir = TempDir::new("idx-truncgz");
        let z = gzip(&idx_bytes(&[4, 4], &[7; 16]));
        let path = dir.write("z-labels-idx1-ubyte.gz", &z[..z.len() - 6]);
        let msg = err_text(read_idx(&path));
        assert!(
            msg.contains(&path.display().to_string()) && msg.contains("truncated"),
            "{msg}"
        );
    }

    #[test]
    fn bad_magic_and_other_types_are_refused() {
        let dir = TempDir::new("idx-magic");
        let png = dir.write("x.png", b"\x89PNG\r\n\x1a\n0000000000");
        assert!(err_text(read_idx(&png)).contains("bad magic 0x89504e47"));
        let floats = dir.write("f.idx", &[0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert!(err_text(read_idx(&floats)).contains("unsupported IDX element type 0x0d"));
    }

    #[test]
    fn trailing_garbage_is_refused() {
        let dir = TempDir::new("idx-trail");
        let path = dir.write("g-labels-idx1-ubyte", &idx_bytes(&[3], &[1, 2, 3, 4, 5]));
        let msg = err_text(read_idx(&path));
        assert!(msg.contains("2 bytes of trailing garbage"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_io_error_naming_it() {
        let path = std::env::temp_dir().join("selfsup-no-such-file-idx3-ubyte");
        let err = read_idx(&path).unwrap_err();
        assert!(matches!(err, Error::Io { .. }));
        assert!(err.to_string().contains("selfsup-no-such-file"));
    }

    #[test]
    fn labels_path_follows_mnist_naming() {
        let dir = TempDir::new("idx-names");
        let lab_gz = dir.write("train-labels-idx1-ubyte.gz", b"");
        assert_eq!(
            labels_path_for(&dir.path("train-images-idx3-ubyte.gz")).unwrap(),
            lab_gz
        );
        // Only the compressed labels exist: found from the decompressed images too.
        assert_eq!(
            labels_path_for(&dir.path("train-images-idx3-ubyte")).unwrap(),
            lab_gz
        );
        // Both exist: the same suffix wins.
        let lab = dir.write("train-labels-idx1-ubyte", b"");
        assert_eq!(
            labels_path_for(&dir.path("train-images-idx3-ubyte")).unwrap(),
            lab
        );
        let dotted = dir.write("t10k-labels.idx1-ubyte", b"");
        assert_eq!(
            labels_path_for(&dir.path("t10k-images.idx3-ubyte")).unwrap(),
            dotted
        );
        let msg = labels_path_for(&dir.path("digits.bin"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("digits.bin") && msg.contains("MNIST convention"),
            "{msg}"
        );
        let msg = labels_path_for(&dir.path("fashion-images-idx3-ubyte"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains("fashion-labels-idx1-ubyte") && msg.contains("not found"),
            "{msg}"
        );
    }
}
