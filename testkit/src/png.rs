//! A tiny PNG codec for the fakes: an 8-bit RGB encoder with `tEXt` chunks (what ComfyUI's
//! `SaveImage` writes), and readers for the header and the text chunks. zlib comes from
//! `flate2`, the chunk CRC from `crc32fast`.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

/// The eight bytes every PNG starts with.
pub const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Encodes `rgb` (`width * height * 3` bytes, row by row) as an 8-bit RGB PNG, with one `tEXt`
/// chunk per `(keyword, text)` pair before the image data.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8], text: &[(&str, &str)]) -> Vec<u8> {
    let row = width as usize * 3;
    assert_eq!(
        rgb.len(),
        row * height as usize,
        "rgb is not width * height * 3"
    );

    let mut out = Vec::with_capacity(rgb.len() / 2 + 1024);
    out.extend_from_slice(SIGNATURE);

    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);

    for (keyword, value) in text {
        let mut data = Vec::with_capacity(keyword.len() + 1 + value.len());
        data.extend_from_slice(keyword.as_bytes());
        data.push(0);
        data.extend_from_slice(value.as_bytes());
        chunk(&mut out, b"tEXt", &data);
    }

    let mut encoder = ZlibEncoder::new(Vec::with_capacity(rgb.len() / 2 + 64), Compression::fast());
    let mut scanline = Vec::with_capacity(row + 1);
    for line in rgb.chunks(row.max(1)) {
        scanline.clear();
        scanline.push(0); // filter type: none
        scanline.extend_from_slice(line);
        encoder
            .write_all(&scanline)
            .expect("writing to a Vec cannot fail");
    }
    let compressed = encoder.finish().expect("writing to a Vec cannot fail");
    chunk(&mut out, b"IDAT", &compressed);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finalize().to_be_bytes());
}

/// `(width, height)` from a PNG's `IHDR`, or `None` when `bytes` is not a PNG.
pub fn size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((width, height))
}

/// The chunks of a PNG as `(type, data)`, checking each CRC; `None` when the file is not a
/// well-formed PNG.
pub fn chunks(bytes: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    if bytes.len() < 8 || &bytes[..8] != SIGNATURE {
        return None;
    }
    let mut rest = &bytes[8..];
    let mut out = Vec::new();
    while !rest.is_empty() {
        if rest.len() < 12 {
            return None;
        }
        let length = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        let kind: [u8; 4] = rest[4..8].try_into().ok()?;
        let data = rest.get(8..8 + length)?;
        let stored = u32::from_be_bytes(rest.get(8 + length..12 + length)?.try_into().ok()?);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&kind);
        crc.update(data);
        if crc.finalize() != stored {
            return None;
        }
        out.push((kind, data));
        rest = &rest[12 + length..];
        if &kind == b"IEND" {
            break;
        }
    }
    Some(out)
}

/// The `tEXt` chunks of a PNG as `(keyword, text)` pairs, in file order.
pub fn text_chunks(bytes: &[u8]) -> Vec<(String, String)> {
    chunks(bytes)
        .unwrap_or_default()
        .into_iter()
        .filter(|(kind, _)| kind == b"tEXt")
        .filter_map(|(_, data)| {
            let split = data.iter().position(|&b| b == 0)?;
            Some((
                String::from_utf8_lossy(&data[..split]).into_owned(),
                String::from_utf8_lossy(&data[split + 1..]).into_owned(),
            ))
        })
        .collect()
}

/// Decodes an 8-bit RGB PNG without interlacing written with filter type 0 (as
/// [`encode_rgb`] writes it) back to `(width, height, rgb)`; `None` for anything else.
pub fn decode_rgb(bytes: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let chunks = chunks(bytes)?;
    let (width, height) = size(bytes)?;
    let header = chunks.first().filter(|(kind, _)| kind == b"IHDR")?.1;
    if header.get(8..13)? != [8, 2, 0, 0, 0] {
        return None;
    }
    let compressed: Vec<u8> = chunks
        .iter()
        .filter(|(kind, _)| kind == b"IDAT")
        .flat_map(|(_, data)| data.iter().copied())
        .collect();
    let mut raw = Vec::new();
    ZlibDecoder::new(&compressed[..])
        .read_to_end(&mut raw)
        .ok()?;
    let row = width as usize * 3;
    if raw.len() != (row + 1) * height as usize {
        return None;
    }
    let mut rgb = Vec::with_capacity(row * height as usize);
    for line in raw.chunks(row + 1) {
        if line[0] != 0 {
            return None;
        }
        rgb.extend_from_slice(&line[1..]);
    }
    Some((width, height, rgb))
}

/// `(width, height)` of a baseline or progressive JPEG (from its first SOF marker).
pub(crate) fn jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return None;
    }
    let mut at = 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1;
            continue;
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        let is_sof = matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC);
        if is_sof {
            let frame = bytes.get(at + 4..at + 9)?;
            let height = u16::from_be_bytes([frame[1], frame[2]]) as u32;
            let width = u16::from_be_bytes([frame[3], frame[4]]) as u32;
            return Some((width, height));
        }
        at += 2 + length;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_pixels_and_text() {
        let rgb: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 7) as u8).collect();
        let png = encode_rgb(5, 3, &rgb, &[("prompt", "{\"1\": {}}")]);
        assert_eq!(size(&png), Some((5, 3)));
        assert_eq!(
            text_chunks(&png),
            vec![("prompt".to_owned(), "{\"1\": {}}".to_owned())]
        );
        assert_eq!(decode_rgb(&png), Some((5, 3, rgb)));
    }

    #[test]
    fn rejects_a_corrupt_chunk() {
        let mut png = encode_rgb(2, 2, &[0; 12], &[]);
        let last = png.len() - 13;
        png[last] ^= 0xFF;
        assert!(chunks(&png).is_none());
        assert!(size(b"not a png at all, not at all").is_none());
    }
}
