//! Short clips: a scene's animated frames (AnimateDiff's, or the simulated GPU's) encoded as an
//! H.264 MP4 the way VideoHelperSuite writes them, and any picture or clip decoded back into RGB
//! frames with its frame rate.

use std::path::Path;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::{Dictionary, Packet, Rational, codec, encoder, format, frame, media};
use ffmpeg_next as ffmpeg;

use crate::error::{AssemblyError, ff, init};

/// The most frames a clip is decoded to: a scene loops its clip, it never needs more.
pub const MAX_FRAMES: usize = 1_000;

/// A picture's or a clip's frames as RGB24, and the clip's rate (frames a second; a still's is
/// its container's, or 1).
pub struct Frames {
    pub frames: Vec<frame::Video>,
    pub fps: f64,
}

/// Decodes up to `max` frames of `path` (a still, or a clip) as RGB24.
pub fn decode(path: &Path, max: usize) -> Result<Frames, String> {
    init().map_err(|err| err.to_string())?;
    let name = || path.display().to_string();
    let mut input = format::input(&path).map_err(|err| format!("{}: {err}", name()))?;
    let stream = input
        .streams()
        .best(media::Type::Video)
        .ok_or_else(|| format!("{} holds no picture", name()))?;
    let index = stream.index();
    let rate = stream.avg_frame_rate();
    let fps = if rate.numerator() > 0 && rate.denominator() > 0 {
        f64::from(rate.numerator()) / f64::from(rate.denominator())
    } else {
        1.0
    };
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|context| context.decoder().video())
        .map_err(|err| format!("{}: {err}", name()))?;
    let mut frames = Vec::new();
    let mut decoded = frame::Video::empty();
    let to_rgb = |decoded: &frame::Video, frames: &mut Vec<frame::Video>| {
        let mut rgb = frame::Video::empty();
        scaling::Context::get(
            decoded.format(),
            decoded.width(),
            decoded.height(),
            Pixel::RGB24,
            decoded.width(),
            decoded.height(),
            scaling::Flags::BILINEAR,
        )
        .and_then(|mut sws| sws.run(decoded, &mut rgb))
        .map_err(|err| format!("{}: {err}", name()))?;
        frames.push(rgb);
        Ok::<(), String>(())
    };
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        decoder
            .send_packet(&packet)
            .map_err(|err| format!("{}: {err}", name()))?;
        while frames.len() < max && decoder.receive_frame(&mut decoded).is_ok() {
            to_rgb(&decoded, &mut frames)?;
        }
        if frames.len() >= max {
            break;
        }
    }
    if frames.len() < max {
        let _ = decoder.send_eof();
        while frames.len() < max && decoder.receive_frame(&mut decoded).is_ok() {
            to_rgb(&decoded, &mut frames)?;
        }
    }
    if frames.is_empty() {
        return Err(format!("{} could not be decoded", name()));
    }
    Ok(Frames { frames, fps })
}

/// `frames` (RGB24, `width`×`height` each, packed rows) as an H.264 MP4 at `fps`, in memory,
/// with `metadata` tags (`comment`, `title`, …). One encoding thread: the same frames always
/// give the same bytes.
pub fn encode_rgb(
    width: u32,
    height: u32,
    fps: u32,
    frames: &[Vec<u8>],
    metadata: &[(&str, &str)],
) -> Result<Vec<u8>, AssemblyError> {
    init()?;
    if frames.is_empty() {
        return Err(AssemblyError::NoScenes);
    }
    let (out_w, out_h, fps) = (width.max(2) & !1, height.max(2) & !1, fps.max(1));
    let scratch = tempfile::tempdir()?;
    let path = scratch.path().join("clip.mp4");
    let mut context = format::output(&path).map_err(ff("the clip"))?;
    let mut tags = Dictionary::new();
    for (key, value) in metadata {
        tags.set(key, value);
    }
    context.set_metadata(tags);
    let global = context
        .format()
        .flags()
        .contains(format::Flags::GLOBAL_HEADER);
    let h264 = encoder::find(codec::Id::H264).ok_or(AssemblyError::NoEncoder("H.264"))?;
    let index = context
        .add_stream(h264)
        .map_err(ff("the clip's stream"))?
        .index();
    let mut video = codec::context::Context::new_with_codec(h264)
        .encoder()
        .video()
        .map_err(ff("the H.264 encoder"))?;
    let time_base = Rational::new(1, fps as i32);
    video.set_width(out_w);
    video.set_height(out_h);
    video.set_format(Pixel::YUV420P);
    video.set_time_base(time_base);
    video.set_frame_rate(Some(Rational::new(fps as i32, 1)));
    if global {
        video.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut options = Dictionary::new();
    options.set("preset", "veryfast");
    options.set("crf", "19");
    options.set("threads", "1");
    let mut video = video
        .open_as_with(h264, options)
        .map_err(ff("opening H.264"))?;
    if let Some(mut stream) = context.stream_mut(index) {
        stream.set_parameters(&video);
        stream.set_time_base(time_base);
    }
    context.write_header().map_err(ff("the clip's header"))?;
    let mut sws = scaling::Context::get(
        Pixel::RGB24,
        width,
        height,
        Pixel::YUV420P,
        out_w,
        out_h,
        scaling::Flags::BILINEAR,
    )
    .map_err(ff("scaling a frame"))?;
    let drain = |video: &mut encoder::Video,
                 context: &mut format::context::Output|
     -> Result<(), AssemblyError> {
        let stream_time_base = context.stream(index).map_or(time_base, |s| s.time_base());
        let mut packet = Packet::empty();
        while video.receive_packet(&mut packet).is_ok() {
            packet.set_stream(index);
            packet.set_duration(1);
            packet.rescale_ts(time_base, stream_time_base);
            packet
                .write_interleaved(context)
                .map_err(ff("writing the clip"))?;
        }
        Ok(())
    };
    let row = width as usize * 3;
    for (n, rgb) in frames.iter().enumerate() {
        if rgb.len() != row * height as usize {
            return Err(AssemblyError::Scene {
                scene: n + 1,
                reason: format!(
                    "frame {} has {} bytes, not {width}×{height}×3",
                    n + 1,
                    rgb.len()
                ),
            });
        }
        let mut picture = frame::Video::new(Pixel::RGB24, width, height);
        let stride = picture.stride(0);
        let data = picture.data_mut(0);
        for y in 0..height as usize {
            data[y * stride..y * stride + row].copy_from_slice(&rgb[y * row..(y + 1) * row]);
        }
        let mut yuv = frame::Video::empty();
        sws.run(&picture, &mut yuv).map_err(ff("scaling a frame"))?;
        yuv.set_pts(Some(n as i64));
        video.send_frame(&yuv).map_err(ff("encoding a frame"))?;
        drain(&mut video, &mut context)?;
    }
    video.send_eof().map_err(ff("finishing the clip"))?;
    drain(&mut video, &mut context)?;
    context.write_trailer().map_err(ff("the clip's trailer"))?;
    drop(context);
    Ok(std::fs::read(&path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_encodes_and_decodes_to_its_frames_at_its_rate() {
        let (w, h) = (64u32, 48u32);
        let frames: Vec<Vec<u8>> = (0..12u8)
            .map(|n| {
                (0..w * h)
                    .flat_map(|_| [n.wrapping_mul(20), 128, 255 - n.wrapping_mul(20)])
                    .collect()
            })
            .collect();
        let mp4 = encode_rgb(w, h, 8, &frames, &[("comment", "made here")]).unwrap();
        assert_eq!(&mp4[4..8], b"ftyp");
        // Deterministic: the same frames, the same bytes.
        assert_eq!(
            mp4,
            encode_rgb(w, h, 8, &frames, &[("comment", "made here")]).unwrap()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.mp4");
        std::fs::write(&path, &mp4).unwrap();
        let decoded = decode(&path, MAX_FRAMES).unwrap();
        assert_eq!(decoded.frames.len(), 12);
        assert!((decoded.fps - 8.0).abs() < 1e-6, "{}", decoded.fps);
        assert_eq!(
            (decoded.frames[0].width(), decoded.frames[0].height()),
            (w, h)
        );
        // The first frame is red-poor, the last red-rich: the frames kept their order.
        let red = |f: &frame::Video| f.data(0)[3 * 10 + f.stride(0) * 10];
        assert!(red(&decoded.frames[0]) < 40 && red(&decoded.frames[11]) > 180);
        // A still decodes to one frame; at most `max` are taken.
        assert_eq!(decode(&path, 3).unwrap().frames.len(), 3);
        // A frame of the wrong size is refused, naming it.
        let err = encode_rgb(w, h, 8, &[vec![0; 10]], &[]).unwrap_err();
        assert!(err.to_string().contains("frame 1"), "{err}");
    }
}
