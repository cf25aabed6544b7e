//! Just enough of the ZIP format to read the ECB's historical archive: stored or deflated entries,
//! located through the central directory, checked against their CRC-32.
//!
//! Rationale: the `zip` crate brings a dozen compression back-ends we never need; one archive with
//! one deflated CSV needs the central directory, an inflater (`miniz_oxide`) and a CRC.

/// Entries larger than this are refused: the ECB history is about 2 MB uncompressed.
pub const ENTRY_SIZE_MAX_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZipError {
    #[error("not a ZIP archive (no end-of-central-directory record)")]
    NotZip,
    #[error("ZIP archive is truncated or malformed: {0}")]
    Malformed(&'static str),
    #[error("ZIP entry {name:?} uses compression method {method}; only stored (0) and deflate (8) are supported")]
    Method { name: String, method: u16 },
    #[error("ZIP entry {name:?} is larger than {ENTRY_SIZE_MAX_BYTES} bytes")]
    TooLarge { name: String },
    #[error("ZIP entry {name:?} failed to inflate")]
    Inflate { name: String },
    #[error("ZIP entry {name:?} is corrupt (CRC-32 mismatch)")]
    Checksum { name: String },
}

/// One file read from an archive.
pub struct Entry {
    pub name: String,
    pub data: Vec<u8>,
}

fn u16_at(bytes: &[u8], offset: usize) -> Result<u16, ZipError> {
    let slice = bytes.get(offset..offset + 2).ok_or(ZipError::Malformed("short read"))?;
    Ok(u16::from_le_bytes([slice[0], slice[1]]))
}

fn u32_at(bytes: &[u8], offset: usize) -> Result<u32, ZipError> {
    let slice = bytes.get(offset..offset + 4).ok_or(ZipError::Malformed("short read"))?;
    Ok(u32::from_le_bytes([slice[0], slice[1], slice[2], slice[3]]))
}

/// Every file entry of an archive, decompressed and checked.
pub fn read_entries(archive: &[u8]) -> Result<Vec<Entry>, ZipError> {
    const EOCD_SIGNATURE: u32 = 0x0605_4b50;
    const CENTRAL_SIGNATURE: u32 = 0x0201_4b50;
    const LOCAL_SIGNATURE: u32 = 0x0403_4b50;
    // The end-of-central-directory record is 22 bytes plus a comment of up to 65535 bytes.
    let search_start = archive.len().saturating_sub(22 + 65_535);
    let eocd = (search_start..archive.len().saturating_sub(21))
        .rev()
        .find(|&offset| u32_at(archive, offset).ok() == Some(EOCD_SIGNATURE))
        .ok_or(ZipError::NotZip)?;
    let count = usize::from(u16_at(archive, eocd + 10)?);
    let mut cursor = u32_at(archive, eocd + 16)? as usize;
    let mut entries = Vec::with_capacity(count);
    for _ in 0..count {
        if u32_at(archive, cursor)? != CENTRAL_SIGNATURE {
            return Err(ZipError::Malformed("bad central directory entry"));
        }
        let method = u16_at(archive, cursor + 10)?;
        let crc = u32_at(archive, cursor + 16)?;
        let compressed_size = u32_at(archive, cursor + 20)? as usize;
        let size = u32_at(archive, cursor + 24)? as usize;
        let name_length = usize::from(u16_at(archive, cursor + 28)?);
        let extra_length = usize::from(u16_at(archive, cursor + 30)?);
        let comment_length = usize::from(u16_at(archive, cursor + 32)?);
        let local = u32_at(archive, cursor + 42)? as usize;
        let name_bytes = archive.get(cursor + 46..cursor + 46 + name_length).ok_or(ZipError::Malformed("name"))?;
        let name = String::from_utf8_lossy(name_bytes).into_owned();
        cursor += 46 + name_length + extra_length + comment_length;
        if name.ends_with('/') {
            continue;
        }
        if size > ENTRY_SIZE_MAX_BYTES {
            return Err(ZipError::TooLarge { name });
        }
        if u32_at(archive, local)? != LOCAL_SIGNATURE {
            return Err(ZipError::Malformed("bad local header"));
        }
        let data_start =
            local + 30 + usize::from(u16_at(archive, local + 26)?) + usize::from(u16_at(archive, local + 28)?);
        let raw = archive.get(data_start..data_start + compressed_size).ok_or(ZipError::Malformed("entry data"))?;
        let data = match method {
            0 => raw.to_vec(),
            8 => miniz_oxide::inflate::decompress_to_vec_with_limit(raw, ENTRY_SIZE_MAX_BYTES)
                .map_err(|_| ZipError::Inflate { name: name.clone() })?,
            _ => return Err(ZipError::Method { name, method }),
        };
        if data.len() != size || crc32(&data) != crc {
            return Err(ZipError::Checksum { name });
        }
        entries.push(Entry { name, data });
    }
    Ok(entries)
}

/// CRC-32 (IEEE 802.3), as ZIP uses it.
pub fn crc32(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0_u32; 256];
        for (index, slot) in table.iter_mut().enumerate() {
            let mut value = index as u32;
            for _ in 0..8 {
                value = if value & 1 == 1 { 0xEDB8_8320 ^ (value >> 1) } else { value >> 1 };
            }
            *slot = value;
        }
        table
    });
    let mut crc = 0xFFFF_FFFF_u32;
    for &byte in data {
        crc = table[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_of_known_input() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(read_entries(b"").err(), Some(ZipError::NotZip));
        assert_eq!(read_entries(b"PK\x05\x06").err(), Some(ZipError::NotZip));
        let mut fake = vec![0_u8; 22];
        fake[..4].copy_from_slice(&0x0605_4b50_u32.to_le_bytes());
        fake[10] = 1;
        fake[16] = 200;
        assert!(read_entries(&fake).is_err());
    }
}
