//! Uncompressed sizes of layer blobs, for the catalog's image page: a
//! manifest only says how many bytes a layer takes compressed. The size is
//! found once by streaming the blob through a gzip decoder (memory flat
//! whatever the layer) and cached in `_berth/uncompressed/<hex>`; the
//! content is addressed by its digest, so the answer never changes.

use std::fs::File;
use std::io::{self, BufReader, Read};

use super::atomic::write_atomic;
use super::{read_optional, Store};
use crate::names::Digest;

/// The first bytes of a zstd frame: such layers are not decoded here (the
/// server carries no zstd decoder), so their uncompressed size is unknown.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

impl Store {
    /// The uncompressed size of pool blob `digest`: a gzip stream's decoded
    /// length, a plain tar's own size, `None` for zstd or a missing blob.
    /// Computed on first call (blocking; call from the blocking pool), then
    /// read from the cache.
    pub fn uncompressed_size(&self, digest: &Digest) -> io::Result<Option<u64>> {
        let cache = self.paths().uncompressed_size(digest);
        if let Some(raw) = read_optional(&cache)? {
            if let Ok(size) = String::from_utf8_lossy(&raw).trim().parse::<u64>() {
                return Ok(Some(size));
            }
        }
        let file = match File::open(self.paths().blob(digest)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let size = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(256 << 10, file);
        let mut magic = [0u8; 4];
        let got = read_up_to(&mut reader, &mut magic)?;
        let head = &magic[..got];
        let size = if head.starts_with(&[0x1f, 0x8b]) {
            let prefixed = io::Cursor::new(head.to_vec()).chain(reader);
            let mut decoder = flate2::read::MultiGzDecoder::new(prefixed);
            io::copy(&mut decoder, &mut io::sink())?
        } else if head == ZSTD_MAGIC {
            return Ok(None);
        } else {
            size
        };
        write_atomic(&cache, size.to_string().as_bytes())?;
        Ok(Some(size))
    }
}

/// Reads until `buf` is full or the stream ends; returns how many bytes.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_plain_and_zstd_layers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let plain = vec![7u8; 300_000];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let d_gz = store.put_small_blob(&gz).unwrap();
        let d_plain = store.put_small_blob(&plain).unwrap();
        let mut zst = ZSTD_MAGIC.to_vec();
        zst.extend_from_slice(b"rest");
        let d_zst = store.put_small_blob(&zst).unwrap();
        assert_eq!(store.uncompressed_size(&d_gz).unwrap(), Some(300_000));
        assert!(store.paths().uncompressed_size(&d_gz).exists());
        assert_eq!(store.uncompressed_size(&d_gz).unwrap(), Some(300_000));
        assert_eq!(store.uncompressed_size(&d_plain).unwrap(), Some(300_000));
        assert_eq!(store.uncompressed_size(&d_zst).unwrap(), None);
        let absent = Digest::parse(&format!("sha256:{}", "0".repeat(64))).unwrap();
        assert_eq!(store.uncompressed_size(&absent).unwrap(), None);
    }
}
