//! A video assembled in process with FFmpeg's own libraries (ffmpeg-next on Debian's libav*):
//! each scene a still (PNG, JPEG, PPM…) scaled and cropped to the format with a slow Ken Burns
//! move, or a clip (an AnimateDiff MP4) cropped the same way and looped at its own rate, the narration's sentences burned in as subtitles (libass, through libavfilter's
//! `subtitles`) and written beside it as SRT, encoded as H.264; the narration as AAC; one MP4,
//! written aside and renamed into place only when whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::{ChannelLayout, Dictionary, Packet, Rational, codec, encoder, format, frame};
use ffmpeg_next as ffmpeg;

use crate::tts::{Speech, Timed};

/// How far the Ken Burns move zooms across a scene.
const ZOOM: f64 = 0.15;

pub(crate) use crate::error::ff;
pub use crate::error::{AssemblyError, init};

/// The video's frame: its size and rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

/// How a still moves across its scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Motion {
    Still,
    ZoomIn,
    ZoomOut,
}

/// One scene: a picture (moved by `motion`) or a clip (played at its own rate, looped) shown
/// for `duration`.
#[derive(Debug, Clone)]
pub struct Scene {
    /// A still, or a clip: whatever decodes to more than one frame is played as a clip.
    pub image: PathBuf,
    pub duration: Duration,
    pub motion: Motion,
}

/// What to make.
#[derive(Debug, Clone)]
pub struct Assembly<'a> {
    pub frame: Frame,
    pub scenes: Vec<Scene>,
    pub narration: Option<&'a Speech>,
    /// Burned in, and written beside the video as `<name>.srt` (none: no subtitles).
    pub subtitles: Vec<Timed>,
    /// Each cut between scenes a cross-fade this long (zero: hard cuts).
    pub fade: Duration,
    /// Music under the narration, ducked while it speaks.
    pub music: Option<crate::audio::Music>,
    /// The MP4 to write.
    pub output: PathBuf,
}

/// What was made.
#[derive(Debug, Clone, PartialEq)]
pub struct Assembled {
    pub frames: u64,
    pub duration: Duration,
    pub audio_samples: u64,
}

/// The crop of a `src_w`×`src_h` picture that fills an `out_w`×`out_h` frame (centered, the
/// output's aspect), zoomed by `zoom` (≥ 1): x, y, width, height, even.
pub fn crop(src_w: u32, src_h: u32, out_w: u32, out_h: u32, zoom: f64) -> (u32, u32, u32, u32) {
    let (sw, sh) = (f64::from(src_w), f64::from(src_h));
    let aspect = f64::from(out_w) / f64::from(out_h);
    let (mut w, mut h) = if sw / sh > aspect {
        (sh * aspect, sh)
    } else {
        (sw, sw / aspect)
    };
    let zoom = zoom.max(1.0);
    w /= zoom;
    h /= zoom;
    let even = |v: f64, max: u32| ((v.round() as u32).clamp(2, max.max(2))) & !1;
    let (w, h) = (even(w, src_w), even(h, src_h));
    let x = (src_w.saturating_sub(w) / 2) & !1;
    let y = (src_h.saturating_sub(h) / 2) & !1;
    (x, y, w, h)
}

fn zoom_at(motion: Motion, t: f64) -> f64 {
    match motion {
        Motion::Still => 1.0,
        Motion::ZoomIn => 1.0 + ZOOM * t,
        Motion::ZoomOut => 1.0 + ZOOM * (1.0 - t),
    }
}

/// Decodes the first picture of `path` as RGB24.
pub(crate) fn load_rgb(path: &Path) -> Result<frame::Video, String> {
    let mut decoded = crate::clip::decode(path, 1)?;
    Ok(decoded.frames.swap_remove(0))
}

/// The `(x, y, w, h)` part of an RGB24 picture, as a picture of its own.
pub(crate) fn cut(rgb: &frame::Video, (x, y, w, h): (u32, u32, u32, u32)) -> frame::Video {
    let mut part = frame::Video::new(Pixel::RGB24, w, h);
    let (src_stride, dst_stride) = (rgb.stride(0), part.stride(0));
    let (x, w) = (x as usize * 3, w as usize * 3);
    let src = rgb.data(0);
    let dst = part.data_mut(0);
    for row in 0..h as usize {
        let from = (y as usize + row) * src_stride + x;
        dst[row * dst_stride..row * dst_stride + w].copy_from_slice(&src[from..from + w]);
    }
    part
}

struct Output {
    context: format::context::Output,
    video: encoder::Video,
    video_index: usize,
    video_time_base: Rational,
    audio: Option<(encoder::Audio, usize, Rational)>,
}

impl Output {
    /// Drains the encoder's packets into the file.
    fn drain_video(&mut self) -> Result<(), AssemblyError> {
        let stream_time_base = self
            .context
            .stream(self.video_index)
            .map_or(self.video_time_base, |s| s.time_base());
        let mut packet = Packet::empty();
        while self.video.receive_packet(&mut packet).is_ok() {
            packet.set_stream(self.video_index);
            packet.set_duration(1);
            packet.rescale_ts(self.video_time_base, stream_time_base);
            packet
                .write_interleaved(&mut self.context)
                .map_err(ff("writing video"))?;
        }
        Ok(())
    }

    fn drain_audio(&mut self) -> Result<(), AssemblyError> {
        let Some((audio, index, time_base)) = self.audio.as_mut() else {
            return Ok(());
        };
        let stream_time_base = self
            .context
            .stream(*index)
            .map_or(*time_base, |s| s.time_base());
        let mut packet = Packet::empty();
        while audio.receive_packet(&mut packet).is_ok() {
            packet.set_stream(*index);
            packet.rescale_ts(*time_base, stream_time_base);
            packet
                .write_interleaved(&mut self.context)
                .map_err(ff("writing audio"))?;
        }
        Ok(())
    }
}

/// Assembles `assembly`, calling `progress` with the share done (0‥1) now and then.
pub fn assemble(
    assembly: &Assembly<'_>,
    mut progress: impl FnMut(f64),
) -> Result<Assembled, AssemblyError> {
    init()?;
    if assembly.scenes.is_empty() {
        return Err(AssemblyError::NoScenes);
    }
    let Frame { width, height, fps } = assembly.frame;
    let (width, height, fps) = (width & !1, height & !1, fps.max(1));
    // Every picture is read before anything is written.
    let mut pictures = Vec::with_capacity(assembly.scenes.len());
    for (n, scene) in assembly.scenes.iter().enumerate() {
        let frames =
            crate::clip::decode(&scene.image, crate::clip::MAX_FRAMES).map_err(|reason| {
                AssemblyError::Scene {
                    scene: n + 1,
                    reason,
                }
            })?;
        pictures.push(frames);
    }
    let partial = assembly.output.with_extension("part.mp4");
    // The subtitles' text for the burn-in, in a file of a name the filter can always read.
    let scratch = tempfile::tempdir()?;
    let srt = (!assembly.subtitles.is_empty()).then(|| {
        let wrap = (width as usize / 18).clamp(16, 60);
        crate::subtitles::srt(&assembly.subtitles, wrap)
    });
    let srt_path = scratch.path().join("subtitles.srt");
    if let Some(text) = &srt {
        std::fs::write(&srt_path, text)?;
    }
    let burn = srt.as_ref().map(|_| srt_path.as_path());
    let result = write(
        assembly,
        &pictures,
        &partial,
        (width, height, fps),
        burn,
        &mut progress,
    );
    match result {
        Ok(done) => {
            if let Some(text) = &srt {
                std::fs::write(assembly.output.with_extension("srt"), text)?;
            }
            std::fs::rename(&partial, &assembly.output)?;
            progress(1.0);
            Ok(done)
        }
        Err(err) => {
            let _ = std::fs::remove_file(&partial);
            Err(err)
        }
    }
}

/// A video filter graph: frames in at `in`, out at `out`.
pub(crate) struct Filter {
    graph: ffmpeg::filter::Graph,
}

impl Filter {
    /// `spec` over frames of `format`, `width`×`height` at `fps`.
    pub(crate) fn new(
        spec: &str,
        format: Pixel,
        (width, height, fps): (u32, u32, u32),
    ) -> Result<Filter, AssemblyError> {
        let mut graph = ffmpeg::filter::Graph::new();
        let pixel: ffmpeg::ffi::AVPixelFormat = format.into();
        let args = format!(
            "video_size={width}x{height}:pix_fmt={}:time_base=1/{fps}:pixel_aspect=1/1",
            pixel as i32
        );
        let buffer = ffmpeg::filter::find("buffer").ok_or(AssemblyError::NoFilter("buffer"))?;
        let sink =
            ffmpeg::filter::find("buffersink").ok_or(AssemblyError::NoFilter("buffersink"))?;
        graph
            .add(&buffer, "in", &args)
            .map_err(ff("the filter's input"))?;
        graph
            .add(&sink, "out", "")
            .map_err(ff("the filter's output"))?;
        if let Some(mut out) = graph.get("out") {
            out.set_pixel_format(format);
        }
        graph
            .output("in", 0)
            .and_then(|parser| parser.input("out", 0))
            .and_then(|parser| parser.parse(spec))
            .map_err(ff("the filter graph"))?;
        graph.validate().map_err(ff("the filter graph"))?;
        Ok(Filter { graph })
    }

    pub(crate) fn push(&mut self, frame: &frame::Video) -> Result<(), AssemblyError> {
        let mut source = self
            .graph
            .get("in")
            .ok_or(AssemblyError::NoFilter("buffer"))?;
        source.source().add(frame).map_err(ff("filtering a frame"))
    }

    pub(crate) fn finish(&mut self) -> Result<(), AssemblyError> {
        let mut source = self
            .graph
            .get("in")
            .ok_or(AssemblyError::NoFilter("buffer"))?;
        source.source().flush().map_err(ff("finishing the filter"))
    }

    /// The next filtered frame, if one is ready.
    pub(crate) fn pull(&mut self) -> Option<frame::Video> {
        let mut sink = self.graph.get("out")?;
        let mut filtered = frame::Video::empty();
        sink.sink().frame(&mut filtered).ok().map(|()| filtered)
    }
}

/// A path as a filter graph option's value: only names that need no escaping.
pub(crate) fn filter_path(path: &Path) -> Result<String, AssemblyError> {
    let text = path.to_string_lossy().into_owned();
    if !text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        return Err(AssemblyError::Path(text));
    }
    Ok(text)
}

/// The `subtitles` filter over the SRT at `path` (libass, its style fit to the frame).
fn subtitles_spec(path: &Path) -> Result<String, AssemblyError> {
    let text = filter_path(path)?;
    Ok(format!(
        "subtitles=filename={text}:force_style='FontName=DejaVu Sans,FontSize=13,Bold=1,Outline=2,Shadow=0,MarginV=24,Alignment=2'"
    ))
}

fn write(
    assembly: &Assembly<'_>,
    pictures: &[crate::clip::Frames],
    path: &Path,
    (width, height, fps): (u32, u32, u32),
    burn: Option<&Path>,
    progress: &mut impl FnMut(f64),
) -> Result<Assembled, AssemblyError> {
    let mut filter = match burn {
        Some(srt) => Some(Filter::new(
            &subtitles_spec(srt)?,
            Pixel::YUV420P,
            (width, height, fps),
        )?),
        None => None,
    };
    let mut context = format::output(&path).map_err(ff("the output"))?;
    let global = context
        .format()
        .flags()
        .contains(format::Flags::GLOBAL_HEADER);

    let h264 = encoder::find(codec::Id::H264).ok_or(AssemblyError::NoEncoder("H.264"))?;
    let video_index = context
        .add_stream(h264)
        .map_err(ff("the video stream"))?
        .index();
    let mut video = codec::context::Context::new_with_codec(h264)
        .encoder()
        .video()
        .map_err(ff("the H.264 encoder"))?;
    let video_time_base = Rational::new(1, fps as i32);
    video.set_width(width);
    video.set_height(height);
    video.set_format(Pixel::YUV420P);
    video.set_time_base(video_time_base);
    video.set_frame_rate(Some(Rational::new(fps as i32, 1)));
    if global {
        video.set_flags(codec::Flags::GLOBAL_HEADER);
    }
    let mut options = Dictionary::new();
    options.set("preset", "veryfast");
    options.set("crf", "21");
    let video = video
        .open_as_with(h264, options)
        .map_err(ff("opening H.264"))?;
    if let Some(mut stream) = context.stream_mut(video_index) {
        stream.set_parameters(&video);
        stream.set_time_base(video_time_base);
    }

    // The soundtrack: the narration with the music under it, at the narration's rate.
    let total: Duration = assembly.scenes.iter().map(|s| s.duration).sum();
    let track = soundtrack(assembly, total)?;
    let audio = match &track {
        None => None,
        Some((rate, _)) => {
            let aac = encoder::find(codec::Id::AAC).ok_or(AssemblyError::NoEncoder("AAC"))?;
            let index = context
                .add_stream(aac)
                .map_err(ff("the audio stream"))?
                .index();
            let mut audio = codec::context::Context::new_with_codec(aac)
                .encoder()
                .audio()
                .map_err(ff("the AAC encoder"))?;
            let rate = *rate as i32;
            let time_base = Rational::new(1, rate);
            audio.set_rate(rate);
            audio.set_channel_layout(ChannelLayout::MONO);
            audio.set_channels(1);
            audio.set_format(format::Sample::F32(format::sample::Type::Planar));
            audio.set_bit_rate(96_000);
            audio.set_time_base(time_base);
            if global {
                audio.set_flags(codec::Flags::GLOBAL_HEADER);
            }
            let audio = audio.open_as(aac).map_err(ff("opening AAC"))?;
            if let Some(mut stream) = context.stream_mut(index) {
                stream.set_parameters(&audio);
                stream.set_time_base(time_base);
            }
            Some((audio, index, time_base))
        }
    };
    context.write_header().map_err(ff("the MP4 header"))?;
    let mut out = Output {
        context,
        video,
        video_index,
        video_time_base,
        audio,
    };

    // Where each scene starts, in frames, so the whole lasts what the scenes add up to (each at
    // least a frame).
    let mut starts = Vec::with_capacity(assembly.scenes.len() + 1);
    let mut elapsed = Duration::ZERO;
    let mut at = 0u64;
    for scene in &assembly.scenes {
        starts.push(at);
        elapsed += scene.duration;
        at = ((elapsed.as_secs_f64() * f64::from(fps)).round() as u64).max(at + 1);
    }
    starts.push(at);
    let total_frames = at;
    // A cross-fade spans `half` frames each side of a cut.
    let half = ((assembly.fade.as_secs_f64() * f64::from(fps) / 2.0).round() as u64).min(
        starts
            .windows(2)
            .map(|w| (w[1] - w[0]) / 2)
            .min()
            .unwrap_or(0),
    );
    let scene_frame = |n: usize, f: u64| -> Result<frame::Video, AssemblyError> {
        let (first, length) = (starts[n], starts[n + 1] - starts[n]);
        let local = f.clamp(first, first + length - 1) - first;
        let t = if length > 1 {
            local as f64 / (length - 1) as f64
        } else {
            0.0
        };
        let frames = &pictures[n].frames;
        let (picture, zoom) = if frames.len() > 1 {
            // A clip: the frame due at this moment of the scene, at the clip's own rate.
            let secs = local as f64 / f64::from(fps);
            let due = (secs * pictures[n].fps + 1e-6).floor() as usize;
            (&frames[due % frames.len()], 1.0)
        } else {
            (&frames[0], zoom_at(assembly.scenes[n].motion, t))
        };
        let rect = crop(picture.width(), picture.height(), width, height, zoom);
        let part = cut(picture, rect);
        let mut yuv = frame::Video::empty();
        scaling::Context::get(
            Pixel::RGB24,
            rect.2,
            rect.3,
            Pixel::YUV420P,
            width,
            height,
            scaling::Flags::BICUBIC,
        )
        .and_then(|mut sws| sws.run(&part, &mut yuv))
        .map_err(ff("scaling a frame"))?;
        Ok(yuv)
    };
    let mut pts: u64 = 0;
    for f in 0..total_frames {
        let scene = starts.partition_point(|start| *start <= f) - 1;
        // Near a cut: the scenes either side of it, blended.
        let cut_near = (1..assembly.scenes.len())
            .find(|k| half > 0 && f + half >= starts[*k] && f < starts[*k] + half);
        let mut yuv = match cut_near {
            Some(k) => {
                let alpha = ((f + half - starts[k]) as f32 + 0.5) / (2 * half) as f32;
                blend(&scene_frame(k - 1, f)?, &scene_frame(k, f)?, alpha)
            }
            None => scene_frame(scene, f)?,
        };
        yuv.set_pts(Some(pts as i64));
        match filter.as_mut() {
            Some(filter) => {
                filter.push(&yuv)?;
                while let Some(filtered) = filter.pull() {
                    out.video
                        .send_frame(&filtered)
                        .map_err(ff("encoding a frame"))?;
                    out.drain_video()?;
                }
            }
            None => {
                out.video.send_frame(&yuv).map_err(ff("encoding a frame"))?;
                out.drain_video()?;
            }
        }
        pts += 1;
        if pts % u64::from(fps) == 0 {
            progress(pts as f64 / total_frames as f64 * 0.95);
        }
    }
    if let Some(filter) = filter.as_mut() {
        filter.finish()?;
        while let Some(filtered) = filter.pull() {
            out.video
                .send_frame(&filtered)
                .map_err(ff("encoding a frame"))?;
            out.drain_video()?;
        }
    }
    out.video.send_eof().map_err(ff("finishing the video"))?;
    out.drain_video()?;

    let mut audio_samples = 0;
    if let (Some((rate, track)), Some((encoder, _, _))) = (&track, out.audio.as_ref()) {
        let frame_size = (encoder.frame_size() as usize).max(1);
        let mut sent = 0;
        for chunk in track.chunks(frame_size) {
            let mut samples = frame::Audio::new(
                format::Sample::F32(format::sample::Type::Planar),
                frame_size,
                ChannelLayout::MONO,
            );
            samples.set_rate(*rate);
            let plane = samples.plane_mut::<f32>(0);
            for (to, from) in plane
                .iter_mut()
                .zip(chunk.iter().copied().chain(std::iter::repeat(0.0)))
            {
                *to = from;
            }
            samples.set_pts(Some(sent as i64));
            if let Some((encoder, _, _)) = out.audio.as_mut() {
                encoder.send_frame(&samples).map_err(ff("encoding audio"))?;
            }
            out.drain_audio()?;
            sent += frame_size;
        }
        audio_samples = track.len() as u64;
        if let Some((encoder, _, _)) = out.audio.as_mut() {
            encoder.send_eof().map_err(ff("finishing the audio"))?;
        }
        out.drain_audio()?;
    }
    out.context.write_trailer().map_err(ff("the MP4 trailer"))?;
    Ok(Assembled {
        frames: pts,
        duration: Duration::from_secs_f64(pts as f64 / f64::from(fps)),
        audio_samples,
    })
}

/// The narration with the music (if any) under it: its rate and samples, as long as the
/// narration or the video, whichever is longer.
fn soundtrack(
    assembly: &Assembly<'_>,
    video: Duration,
) -> Result<Option<(u32, Vec<f32>)>, AssemblyError> {
    let rate = assembly
        .narration
        .map_or(44_100, |speech| speech.sample_rate);
    let narration: &[i16] = assembly.narration.map_or(&[], |speech| &speech.samples);
    let len = narration
        .len()
        .max((video.as_secs_f64() * f64::from(rate)).round() as usize);
    let Some(music) = &assembly.music else {
        return Ok(assembly
            .narration
            .map(|_| (rate, crate::audio::mix(narration, None, len))));
    };
    let samples = crate::audio::decode(&music.path, rate).map_err(AssemblyError::Music)?;
    let spoken = assembly
        .narration
        .map_or(&[][..], |speech| &speech.sentences[..]);
    let gains = crate::audio::duck_gains(
        len,
        rate,
        spoken,
        music.volume,
        music.ducked.min(music.volume),
    );
    Ok(Some((
        rate,
        crate::audio::mix(narration, Some((&samples, &gains)), len),
    )))
}

/// `a` and `b` (YUV 4:2:0 of one size) mixed: `alpha` of `b`.
fn blend(a: &frame::Video, b: &frame::Video, alpha: f32) -> frame::Video {
    let (width, height) = (a.width() as usize, a.height() as usize);
    let mut out = frame::Video::new(Pixel::YUV420P, a.width(), a.height());
    let alpha = alpha.clamp(0.0, 1.0);
    for plane in 0..3 {
        let (w, h) = if plane == 0 {
            (width, height)
        } else {
            (width.div_ceil(2), height.div_ceil(2))
        };
        let (sa, sb, so) = (a.stride(plane), b.stride(plane), out.stride(plane));
        let (da, db) = (a.data(plane), b.data(plane));
        let target = out.data_mut(plane);
        for row in 0..h {
            for col in 0..w {
                let (x, y) = (f32::from(da[row * sa + col]), f32::from(db[row * sb + col]));
                target[row * so + col] = (x + (y - x) * alpha).round() as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_crop_fills_the_frame_and_zooms_in_its_middle() {
        // A landscape picture into a portrait frame: full height, the middle strip.
        assert_eq!(crop(1920, 1080, 1080, 1920, 1.0), (656, 0, 608, 1080));
        // Same aspect: all of it; zoomed: a centered part.
        assert_eq!(crop(640, 360, 1280, 720, 1.0), (0, 0, 640, 360));
        let (x, y, w, h) = crop(640, 360, 1280, 720, 1.15);
        assert_eq!((w, h), (556, 312));
        assert_eq!((x, y), (42, 24));
        // Never past the picture, never odd, never empty.
        for zoom in [1.0, 1.07, 1.15, 0.5] {
            let (x, y, w, h) = crop(333, 777, 1080, 1080, zoom);
            assert!(x + w <= 333 && y + h <= 777 && w >= 2 && h >= 2);
            assert_eq!((x % 2, y % 2, w % 2, h % 2), (0, 0, 0, 0));
        }
    }
}
