//! A video's thumbnail: its most detailed picture cropped to the frame, the title drawn on it
//! (libavfilter's `drawtext`), encoded as PNG — all in process.

use std::path::{Path, PathBuf};

use ffmpeg::format::Pixel;
use ffmpeg::software::scaling;
use ffmpeg::{Packet, Rational, codec, encoder, frame};
use ffmpeg_next as ffmpeg;

use crate::assemble::{AssemblyError, Filter, Frame, crop, cut, ff, filter_path, init, load_rgb};

/// Debian's DejaVu Sans Bold (fonts-dejavu-core).
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

/// How much a picture varies (the variance of its brightness, sampled): more is more detail.
fn detail(rgb: &frame::Video) -> f64 {
    let (w, h, stride) = (rgb.width() as usize, rgb.height() as usize, rgb.stride(0));
    let data = rgb.data(0);
    let (mut sum, mut squares, mut n) = (0.0, 0.0, 0.0);
    for y in (0..h).step_by(2) {
        for x in (0..w).step_by(2) {
            let at = y * stride + x * 3;
            let luma = 0.299 * f64::from(data[at])
                + 0.587 * f64::from(data[at + 1])
                + 0.114 * f64::from(data[at + 2]);
            sum += luma;
            squares += luma * luma;
            n += 1.0;
        }
    }
    if n == 0.0 {
        return 0.0;
    }
    squares / n - (sum / n) * (sum / n)
}

/// Which of `images` shows the most (the thumbnail's picture).
pub fn best_picture(images: &[PathBuf]) -> Result<usize, AssemblyError> {
    init()?;
    let mut best = None;
    for (n, image) in images.iter().enumerate() {
        let rgb = load_rgb(image).map_err(|reason| AssemblyError::Scene {
            scene: n + 1,
            reason,
        })?;
        let score = detail(&rgb);
        if best.is_none_or(|(_, most)| score > most) {
            best = Some((n, score));
        }
    }
    best.map(|(n, _)| n).ok_or(AssemblyError::NoScenes)
}

/// Writes `image` cropped to `frame`'s size with `title` drawn across its lower part (in
/// `font`; no title: the picture alone) as a PNG at `out` (written aside, renamed when whole).
pub fn thumbnail(
    image: &Path,
    frame: Frame,
    title: &str,
    font: &Path,
    out: &Path,
) -> Result<(), AssemblyError> {
    init()?;
    let (width, height) = (frame.width & !1, frame.height & !1);
    let rgb = load_rgb(image).map_err(|reason| AssemblyError::Scene { scene: 1, reason })?;
    let rect = crop(rgb.width(), rgb.height(), width, height, 1.0);
    let part = cut(&rgb, rect);
    let mut picture = frame::Video::empty();
    scaling::Context::get(
        Pixel::RGB24,
        rect.2,
        rect.3,
        Pixel::RGB24,
        width,
        height,
        scaling::Flags::BICUBIC,
    )
    .and_then(|mut sws| sws.run(&part, &mut picture))
    .map_err(ff("scaling the picture"))?;
    picture.set_pts(Some(0));

    let scratch = tempfile::tempdir()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    if !title.is_empty() {
        // The title from a file (no escaping to get wrong), wrapped to the frame, shown as is.
        // A bold face is about 0.6 of its size wide a letter; lines fill 85% of the width.
        let size = (height / 12).max(12);
        let per_line = ((f64::from(width) * 0.85 / (f64::from(size) * 0.6)) as usize).max(10);
        let textfile = scratch.path().join("title.txt");
        std::fs::write(
            &textfile,
            crate::subtitles::wrap(&title, per_line).join("\n"),
        )?;
        if !font.exists() {
            return Err(AssemblyError::Font(font.to_path_buf()));
        }
        let spec = format!(
            "drawtext=fontfile={}:textfile={}:expansion=none:fontsize={}:fontcolor=white:line_spacing={}:box=1:boxcolor=black@0.55:boxborderw={}:x=(w-text_w)/2:y=h-text_h-h/8",
            filter_path(font)?,
            filter_path(&textfile)?,
            size,
            (height / 80).max(2),
            (height / 50).max(4),
        );
        let mut filter = Filter::new(&spec, Pixel::RGB24, (width, height, 1))?;
        filter.push(&picture)?;
        filter.finish()?;
        picture = filter.pull().ok_or(AssemblyError::NoFilter("drawtext"))?;
    }

    let png = encoder::find(codec::Id::PNG).ok_or(AssemblyError::NoEncoder("PNG"))?;
    let mut context = codec::context::Context::new_with_codec(png)
        .encoder()
        .video()
        .map_err(ff("the PNG encoder"))?;
    context.set_width(width);
    context.set_height(height);
    context.set_format(Pixel::RGB24);
    context.set_time_base(Rational::new(1, 1));
    let mut encoder = context.open_as(png).map_err(ff("opening PNG"))?;
    encoder
        .send_frame(&picture)
        .map_err(ff("encoding the thumbnail"))?;
    encoder.send_eof().map_err(ff("finishing the thumbnail"))?;
    let mut packet = Packet::empty();
    encoder
        .receive_packet(&mut packet)
        .map_err(ff("the thumbnail's bytes"))?;
    let bytes = packet.data().ok_or(AssemblyError::NoEncoder("PNG"))?;
    let partial = out.with_extension("part.png");
    std::fs::write(&partial, bytes)?;
    std::fs::rename(&partial, out)?;
    Ok(())
}
