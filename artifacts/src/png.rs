//! PNG bytes, the one codec of the house: an 8-bit RGB encoder with text chunks (what the
//! simulated GPU writes, and the fake ComfyUI as `SaveImage` does through Pillow), and readers
//! for the header, the chunks (each CRC checked), the text chunks and the pixels; plus a JPEG's
//! size, for input images. zlib comes from `flate2`, the chunk CRC from `crc32fast`. The readers
//! answer `None` (or nothing) for bytes they cannot vouch for, never panic.

use std::io::{Read, Write};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

/// The eight bytes every PNG starts with.
pub const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// `IHDR` after the size: bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no
/// interlace.
const RGB8: [u8; 5] = [8, 2, 0, 0, 0];

/// Encodes 8-bit RGB pixels (`width * height * 3` bytes, rows top to bottom) as a PNG, with one
/// text chunk per `(keyword, text)` before the image data: `tEXt` when the text is Latin-1,
/// `iTXt` (UTF-8) otherwise, as Pillow's `PngInfo.add_text` chooses. A keyword is made valid
/// (1–79 printable Latin-1 characters, others replaced by `_`). Rows use the Sub filter, which
/// suits smooth pictures.
///
/// # Panics
/// When `rgb` is not `width * height * 3` bytes long.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8], text: &[(&str, &str)]) -> Vec<u8> {
    let row = width as usize * 3;
    assert_eq!(
        rgb.len(),
        row * height as usize,
        "rgb must hold width * height * 3 bytes"
    );
    let mut png = Vec::with_capacity(rgb.len() / 2 + 1024);
    png.extend_from_slice(SIGNATURE);

    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&width.to_be_bytes());
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&RGB8);
    write_chunk(&mut png, b"IHDR", &header);

    for (name, value) in text {
        let mut data = latin1(&keyword(name)).unwrap_or_default();
        data.push(0);
        match latin1(value) {
            Some(bytes) => {
                data.extend_from_slice(&bytes);
                write_chunk(&mut png, b"tEXt", &data);
            }
            None => {
                // Not compressed, no language tag, no translated keyword.
                data.extend_from_slice(&[0, 0, 0, 0]);
                data.extend_from_slice(value.as_bytes());
                write_chunk(&mut png, b"iTXt", &data);
            }
        }
    }

    let mut filtered = Vec::with_capacity(rgb.len() + height as usize);
    for line in rgb.chunks_exact(row.max(1)).take(height as usize) {
        filtered.push(1); // Sub
        for (index, &byte) in line.iter().enumerate() {
            let left = if index >= 3 { line[index - 3] } else { 0 };
            filtered.push(byte.wrapping_sub(left));
        }
    }
    if row == 0 {
        filtered.resize(height as usize, 0);
    }
    let mut zlib = ZlibEncoder::new(
        Vec::with_capacity(filtered.len() / 2),
        Compression::default(),
    );
    zlib.write_all(&filtered)
        .expect("compressing into memory cannot fail");
    let compressed = zlib.finish().expect("compressing into memory cannot fail");
    write_chunk(&mut png, b"IDAT", &compressed);
    write_chunk(&mut png, b"IEND", &[]);
    png
}

fn write_chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&(data.len() as u32).to_be_bytes());
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    png.extend_from_slice(&crc(kind, data).to_be_bytes());
}

fn crc(kind: &[u8; 4], data: &[u8]) -> u32 {
    let mut crc = crc32fast::Hasher::new();
    crc.update(kind);
    crc.update(data);
    crc.finalize()
}

/// A valid PNG keyword: 1–79 Latin-1 printable characters.
fn keyword(keyword: &str) -> String {
    let keyword: String = keyword
        .chars()
        .map(|c| {
            if (' '..='~').contains(&c) || ('\u{a1}'..='\u{ff}').contains(&c) {
                c
            } else {
                '_'
            }
        })
        .take(79)
        .collect();
    if keyword.is_empty() {
        "_".to_owned()
    } else {
        keyword
    }
}

/// `text` as Latin-1 bytes; `None` when a character is not Latin-1 (or is NUL).
fn latin1(text: &str) -> Option<Vec<u8>> {
    text.chars()
        .map(|c| u8::try_from(u32::from(c)).ok().filter(|&b| b != 0))
        .collect()
}

fn from_latin1(bytes: &[u8]) -> String {
    bytes.iter().map(|&b| char::from(b)).collect()
}

/// `(width, height)` from a PNG's `IHDR`, or `None` when `bytes` does not start like a PNG.
pub fn size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.len() < 24 || &bytes[..8] != SIGNATURE || &bytes[12..16] != b"IHDR" {
        return None;
    }
    let width = u32::from_be_bytes(bytes[16..20].try_into().ok()?);
    let height = u32::from_be_bytes(bytes[20..24].try_into().ok()?);
    Some((width, height))
}

/// The chunks of a PNG as `(type, data)` up to and including `IEND` (bytes after it are
/// ignored), checking each CRC; `None` when `bytes` is not a well-formed PNG: no signature, a
/// chunk cut short or with a wrong CRC, or no `IEND`.
pub fn chunks(bytes: &[u8]) -> Option<Vec<([u8; 4], &[u8])>> {
    let mut rest = bytes.strip_prefix(SIGNATURE)?;
    let mut out = Vec::new();
    loop {
        let length = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let kind: [u8; 4] = rest.get(4..8)?.try_into().ok()?;
        let data = rest.get(8..8 + length)?;
        let stored = u32::from_be_bytes(rest.get(8 + length..12 + length)?.try_into().ok()?);
        if crc(&kind, data) != stored {
            return None;
        }
        out.push((kind, data));
        if &kind == b"IEND" {
            return Some(out);
        }
        rest = &rest[12 + length..];
    }
}

/// The text chunks of a PNG as `(keyword, text)`, in file order: `tEXt` (Latin-1) and `iTXt`
/// (UTF-8, compressed or not). Nothing when the PNG is not well formed; a text chunk that is
/// not is skipped.
pub fn text_chunks(bytes: &[u8]) -> Vec<(String, String)> {
    chunks(bytes)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(kind, data)| text_chunk(&kind, data))
        .collect()
}

fn text_chunk(kind: &[u8; 4], data: &[u8]) -> Option<(String, String)> {
    let (keyword, rest) = split_nul(data)?;
    let keyword = from_latin1(keyword);
    match kind {
        b"tEXt" => Some((keyword, from_latin1(rest))),
        b"iTXt" => {
            let (&compressed, rest) = rest.split_first()?;
            let (&method, rest) = rest.split_first()?;
            let (_language, rest) = split_nul(rest)?;
            let (_translated, text) = split_nul(rest)?;
            let text = match (compressed, method) {
                (0, _) => text.to_vec(),
                (1, 0) => {
                    let mut inflated = Vec::new();
                    ZlibDecoder::new(text).read_to_end(&mut inflated).ok()?;
                    inflated
                }
                _ => return None,
            };
            Some((keyword, String::from_utf8(text).ok()?))
        }
        _ => None,
    }
}

/// `(before, after)` the first NUL byte.
fn split_nul(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = data.iter().position(|&b| b == 0)?;
    Some((&data[..nul], &data[nul + 1..]))
}

/// Decodes an 8-bit RGB PNG without interlacing (any of the five row filters) to
/// `(width, height, rgb)`; `None` for any other kind of PNG or for bytes that are not one.
pub fn decode_rgb(bytes: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let chunks = chunks(bytes)?;
    let (&(kind, header), _) = chunks.split_first()?;
    if &kind != b"IHDR" || header.len() != 13 || header[8..] != RGB8 {
        return None;
    }
    let width = u32::from_be_bytes(header[0..4].try_into().ok()?);
    let height = u32::from_be_bytes(header[4..8].try_into().ok()?);
    let row = (width as usize).checked_mul(3)?;
    let expected = row.checked_add(1)?.checked_mul(height as usize)?;
    let compressed: Vec<u8> = chunks
        .iter()
        .filter(|(kind, _)| kind == b"IDAT")
        .flat_map(|(_, data)| data.iter().copied())
        .collect();
    // One byte more than a right-sized stream holds, so a longer one is caught unread.
    let mut raw = Vec::new();
    ZlibDecoder::new(&compressed[..])
        .take(expected as u64 + 1)
        .read_to_end(&mut raw)
        .ok()?;
    if raw.len() != expected {
        return None;
    }

    let mut rgb = vec![0; row * height as usize];
    for (y, line) in raw.chunks_exact(row + 1).enumerate() {
        let (filter, line) = (line[0], &line[1..]);
        if filter > 4 {
            return None;
        }
        let (done, current) = rgb.split_at_mut(y * row);
        let above = done
            .get(done.len().saturating_sub(row)..)
            .unwrap_or_default();
        let current = &mut current[..row];
        for index in 0..row {
            let left = if index >= 3 { current[index - 3] } else { 0 };
            let up = above.get(index).copied().unwrap_or(0);
            let up_left = if index >= 3 {
                above.get(index - 3).copied().unwrap_or(0)
            } else {
                0
            };
            let predicted = match filter {
                0 => 0,
                1 => left,
                2 => up,
                3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
                _ => paeth(left, up, up_left),
            };
            current[index] = line[index].wrapping_add(predicted);
        }
    }
    Some((width, height, rgb))
}

/// The Paeth predictor of the PNG specification.
fn paeth(left: u8, up: u8, up_left: u8) -> u8 {
    let estimate = i16::from(left) + i16::from(up) - i16::from(up_left);
    let distance = |value: u8| (estimate - i16::from(value)).abs();
    if distance(left) <= distance(up) && distance(left) <= distance(up_left) {
        left
    } else if distance(up) <= distance(up_left) {
        up
    } else {
        up_left
    }
}

/// `(width, height)` of a baseline or progressive JPEG, from its first SOF marker; `None` when
/// `bytes` is not a JPEG or ends before one.
pub fn jpeg_size(bytes: &[u8]) -> Option<(u32, u32)> {
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
            at += 1; // fill byte
            continue;
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        if length < 2 {
            return None;
        }
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

    fn pixels(width: u32, height: u32) -> Vec<u8> {
        (0..width * height * 3)
            .map(|i| (i * 37 % 251) as u8)
            .collect()
    }

    fn kinds(png: &[u8]) -> Vec<String> {
        chunks(png)
            .expect("a well-formed PNG")
            .iter()
            .map(|(kind, _)| String::from_utf8_lossy(kind).into_owned())
            .collect()
    }

    #[test]
    fn round_trips_pixels_and_text() {
        let rgb = pixels(7, 5);
        let json = r#"{"1": {"inputs": {"text": "caf\u00e9"}}}"#;
        let png = encode_rgb(
            7,
            5,
            &rgb,
            &[
                ("Software", "Nebula"),
                ("prompt", json),
                ("Title", "Café ☕"),
            ],
        );
        assert_eq!(&png[..8], SIGNATURE);
        assert_eq!(
            kinds(&png),
            ["IHDR", "tEXt", "tEXt", "iTXt", "IDAT", "IEND"]
        );
        assert_eq!(
            chunks(&png).unwrap()[0].1,
            [0, 0, 0, 7, 0, 0, 0, 5, 8, 2, 0, 0, 0]
        );
        assert_eq!(size(&png), Some((7, 5)));
        assert_eq!(
            text_chunks(&png),
            [
                ("Software".to_owned(), "Nebula".to_owned()),
                ("prompt".to_owned(), json.to_owned()),
                ("Title".to_owned(), "Café ☕".to_owned()),
            ]
        );
        assert_eq!(decode_rgb(&png), Some((7, 5, rgb)));
        // One pixel.
        assert_eq!(
            decode_rgb(&encode_rgb(1, 1, &[9, 8, 7], &[])),
            Some((1, 1, vec![9, 8, 7]))
        );
    }

    #[test]
    fn every_chunk_carries_its_crc() {
        let png = encode_rgb(3, 2, &pixels(3, 2), &[("prompt", "{}")]);
        let mut rest = &png[8..];
        while !rest.is_empty() {
            let length = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let stored = u32::from_be_bytes(rest[8 + length..12 + length].try_into().unwrap());
            let mut expected = crc32fast::Hasher::new();
            expected.update(&rest[4..8 + length]);
            assert_eq!(stored, expected.finalize());
            rest = &rest[12 + length..];
        }
        // A flipped bit anywhere in a chunk's type, data or CRC is caught.
        for at in [12, 20, 29, png.len() - 20, png.len() - 1] {
            let mut corrupt = png.clone();
            corrupt[at] ^= 0x01;
            assert!(chunks(&corrupt).is_none(), "byte {at}");
            assert!(decode_rgb(&corrupt).is_none(), "byte {at}");
            assert!(text_chunks(&corrupt).is_empty(), "byte {at}");
        }
    }

    #[test]
    fn text_keywords_are_valid_and_text_latin1_or_utf8() {
        let long = "k".repeat(100);
        let png = encode_rgb(
            1,
            1,
            &[0; 3],
            &[
                ("bad\nkey", "x"),
                ("", "empty"),
                (&long, "long"),
                ("naïve 日本", "café"),
            ],
        );
        assert_eq!(
            kinds(&png),
            ["IHDR", "tEXt", "tEXt", "tEXt", "tEXt", "IDAT", "IEND"]
        );
        let texts = text_chunks(&png);
        let keywords: Vec<&str> = texts.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keywords, ["bad_key", "_", &"k".repeat(79), "naïve __"]);
        // Latin-1 on the wire: é is one byte.
        let chunks = chunks(&png).unwrap();
        assert!(chunks[4].1.ends_with(b"\0caf\xe9"));
        assert_eq!(texts[3].1, "café");
        // Beyond Latin-1 (or with a NUL), iTXt in UTF-8.
        let png = encode_rgb(1, 1, &[0; 3], &[("a", "☕"), ("b", "x\0y")]);
        assert_eq!(kinds(&png), ["IHDR", "iTXt", "iTXt", "IDAT", "IEND"]);
        assert_eq!(text_chunks(&png)[0], ("a".to_owned(), "☕".to_owned()));
        assert_eq!(text_chunks(&png)[1], ("b".to_owned(), "x\0y".to_owned()));
    }

    /// A PNG whose rows use each of the five filters in turn, filtered here the plain way.
    fn filtered_png(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
        let row = width as usize * 3;
        let at = |y: Option<usize>, x: Option<usize>| match (y, x) {
            (Some(y), Some(x)) => rgb[y * row + x],
            _ => 0,
        };
        let mut raw = Vec::new();
        for y in 0..height as usize {
            let filter = (y % 5) as u8;
            raw.push(filter);
            for x in 0..row {
                let up_row = y.checked_sub(1);
                let left_x = x.checked_sub(3);
                let (left, up, up_left) =
                    (at(Some(y), left_x), at(up_row, Some(x)), at(up_row, left_x));
                let predicted = match filter {
                    0 => 0,
                    1 => left,
                    2 => up,
                    3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
                    _ => paeth(left, up, up_left),
                };
                raw.push(rgb[y * row + x].wrapping_sub(predicted));
            }
        }
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::fast());
        zlib.write_all(&raw).unwrap();
        let mut png = SIGNATURE.to_vec();
        let mut header = [width.to_be_bytes(), height.to_be_bytes()].concat();
        header.extend_from_slice(&RGB8);
        write_chunk(&mut png, b"IHDR", &header);
        write_chunk(&mut png, b"IDAT", &zlib.finish().unwrap());
        write_chunk(&mut png, b"IEND", &[]);
        png
    }

    #[test]
    fn decodes_all_five_row_filters() {
        let rgb: Vec<u8> = (0..6 * 10 * 3).map(|i| (i * i % 253) as u8).collect();
        assert_eq!(decode_rgb(&filtered_png(6, 10, &rgb)), Some((6, 10, rgb)));
        // Whichever neighbour is nearest to left + up - up_left, ties to left, then up.
        assert_eq!(paeth(10, 20, 30), 10);
        assert_eq!(paeth(10, 20, 8), 20);
        assert_eq!(paeth(10, 20, 15), 15);
        assert_eq!(paeth(10, 10, 10), 10);
    }

    #[test]
    fn malformed_input_is_none() {
        let png = encode_rgb(4, 3, &pixels(4, 3), &[("prompt", "{}")]);
        assert!(size(b"not a png at all, not at all").is_none());
        assert!(chunks(b"").is_none());
        assert!(decode_rgb(b"\x89PNG\r\n\x1a\n").is_none());
        // Cut anywhere, even right after a whole chunk: no IEND, not a PNG.
        for length in [8, 20, 33, png.len() - 12, png.len() - 1] {
            assert!(chunks(&png[..length]).is_none(), "cut at {length}");
            assert!(decode_rgb(&png[..length]).is_none(), "cut at {length}");
        }
        // Bytes after IEND are ignored.
        let mut trailing = png.clone();
        trailing.extend_from_slice(b"junk");
        assert_eq!(decode_rgb(&trailing), decode_rgb(&png));

        let rebuilt = |kind: &[u8; 4], data: &[u8]| {
            let mut out = SIGNATURE.to_vec();
            for (k, d) in chunks(&png).unwrap() {
                write_chunk(&mut out, &k, if &k == kind { data } else { d });
            }
            out
        };
        // Another colour type (RGBA), and an IHDR claiming more pixels than the data holds.
        assert!(decode_rgb(&rebuilt(b"IHDR", &[0, 0, 0, 4, 0, 0, 0, 3, 8, 6, 0, 0, 0])).is_none());
        let bigger = rebuilt(b"IHDR", &[0, 0, 0, 4, 0, 0, 0, 4, 8, 2, 0, 0, 0]);
        assert!(decode_rgb(&bigger).is_none());
        // Image data with more bytes than the header says, or an unknown row filter.
        let more = rebuilt(b"IHDR", &[0, 0, 0, 4, 0, 0, 0, 2, 8, 2, 0, 0, 0]);
        assert!(decode_rgb(&more).is_none());
        let mut zlib = ZlibEncoder::new(Vec::new(), Compression::fast());
        zlib.write_all(&[5; 13 * 3]).unwrap();
        assert!(decode_rgb(&rebuilt(b"IDAT", &zlib.finish().unwrap())).is_none());
        assert!(decode_rgb(&rebuilt(b"IDAT", b"not zlib")).is_none());
        // A text chunk without its NUL is skipped, the others are read.
        assert!(text_chunks(&rebuilt(b"tEXt", b"no separator")).is_empty());
    }

    #[test]
    fn jpeg_size_reads_the_first_frame_header() {
        let jfif = [
            &[0xFF, 0xD8][..],
            &[0xFF, 0xE0, 0x00, 0x10],
            b"JFIF\0\x01\x01\0\0\x01\0\x01\0\0",
            &[0xFF, 0xC4, 0x00, 0x03, 0x00],
            &[0xFF, 0xFF],
            &[0xFF, 0xC2, 0x00, 0x11, 0x08, 0x00, 0x30, 0x00, 0x40, 0x03],
            &[0; 9],
        ]
        .concat();
        assert_eq!(jpeg_size(&jfif), Some((64, 48)));
        assert_eq!(jpeg_size(&jfif[..jfif.len() - 14]), None);
        assert_eq!(jpeg_size(&jfif[..30]), None);
        assert_eq!(jpeg_size(&encode_rgb(1, 1, &[0; 3], &[])), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x00, 0xFF]), None);
        assert_eq!(jpeg_size(&[0xFF, 0xD8, 0x12, 0x34, 0x00]), None);
    }
}
