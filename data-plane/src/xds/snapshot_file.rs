//! The last good configuration on disk, for static stability: a proxy that
//! restarts while the control plane is unreachable boots from it.
//!
//! JSON, written atomically (temporary file in the same directory, fsync,
//! rename), readable only by the owner on Unix since SDS secrets (private
//! keys) are in it:
//!
//! ```json
//! { "format": 1, "node_id": "...", "written_at_ms": 0, "version": "42",
//!   "system_versions": { "<type url>": "42" },
//!   "resources": { "<type url>": { "<name>": { "version": "...", "any": "<base64 of the Any>" } } } }
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SnapshotFile {
    pub format: u32,
    #[serde(default)]
    pub node_id: String,
    #[serde(default)]
    pub written_at_ms: u64,
    /// The version of the last update applied.
    #[serde(default)]
    pub version: String,
    /// type URL → `system_version_info` of the last update applied of that type.
    #[serde(default)]
    pub system_versions: BTreeMap<String, String>,
    /// type URL → resource name → entry.
    #[serde(default)]
    pub resources: BTreeMap<String, BTreeMap<String, Entry>>,
    /// What refused updates fenced, so a restart does not lift it.
    #[serde(default)]
    pub fences: crate::config::Fences,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The resource's own version (the delta `Resource.version`).
    pub version: String,
    /// Standard base64 (padded) of the protobuf encoding of the `google.protobuf.Any`.
    pub any: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a snapshot file: {reason}")]
    Parse { path: PathBuf, reason: String },
}

/// Reads the snapshot; `Ok(None)` when there is no file.
pub fn read(path: &Path) -> Result<Option<SnapshotFile>, SnapshotError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(SnapshotError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    let file: SnapshotFile = serde_json::from_slice(&bytes).map_err(|e| SnapshotError::Parse {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if file.format != FORMAT {
        return Err(SnapshotError::Parse {
            path: path.to_path_buf(),
            reason: format!("unsupported format {}", file.format),
        });
    }
    Ok(Some(file))
}

/// Writes the snapshot atomically: readers see the old file or the new one.
pub fn write(path: &Path, file: &SnapshotFile) -> Result<(), SnapshotError> {
    let err = |source| SnapshotError::Write {
        path: path.to_path_buf(),
        source,
    };
    let bytes = serde_json::to_vec(file).map_err(|e| err(std::io::Error::other(e)))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(err)?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "snapshot".into());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable (best effort: not every platform
        // lets a directory be opened and synced).
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(err)
}

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

/// Decodes standard base64 (padding optional; whitespace not allowed).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let trimmed = text.trim_end_matches('=');
    if text.len() - trimmed.len() > 2 {
        return Err("too much padding".into());
    }
    let bytes = trimmed.as_bytes();
    if bytes.len() % 4 == 1 {
        return Err("truncated base64".into());
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            let v = value(*c)
                .ok_or_else(|| format!("invalid base64 character {:?}", char::from(*c)))?;
            n |= v << (18 - 6 * i as u32);
        }
        out.push((n >> 16) as u8);
        if chunk.len() > 2 {
            out.push((n >> 8) as u8);
        }
        if chunk.len() > 3 {
            out.push(n as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        let vectors = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            assert_eq!(base64_encode(plain.as_bytes()), encoded);
            assert_eq!(base64_decode(encoded).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        assert!(base64_decode("Zm9v!").is_err());
        assert!(base64_decode("Z").is_err());
    }

    #[test]
    fn write_then_read_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!(
            "gantry-xds-snapshot-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        let path = dir.join("nested").join("snap.json");
        assert!(read(&path).unwrap().is_none());
        let mut file = SnapshotFile {
            format: FORMAT,
            node_id: "n1".into(),
            version: "7".into(),
            ..Default::default()
        };
        file.resources.entry("t".into()).or_default().insert(
            "a".into(),
            Entry {
                version: "v1".into(),
                any: base64_encode(b"hello"),
            },
        );
        write(&path, &file).unwrap();
        assert_eq!(read(&path).unwrap(), Some(file.clone()));
        file.version = "8".into();
        write(&path, &file).unwrap();
        assert_eq!(read(&path).unwrap().unwrap().version, "8");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary files left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::write(&path, b"not json").unwrap();
        assert!(matches!(read(&path), Err(SnapshotError::Parse { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
