//! A narrated three-scene video assembled with the real FFmpeg libraries and espeak-ng, then
//! checked with `ffprobe` and `ffmpeg` (Debian's command-line tools, as a user's player would
//! see it): its streams, its length, its burned subtitles and SRT; and its thumbnail.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use media::assemble::{Assembly, AssemblyError, Frame, Motion, Scene, assemble};
use media::audio::Music;
use media::thumbnail::{DEFAULT_FONT, best_picture, thumbnail};
use media::tts::{EspeakNg, Tts};
use serde_json::Value;

/// A `w`×`h` PPM picture: a gradient of `color`.
fn picture(path: &Path, w: usize, h: usize, color: [u8; 3]) {
    let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            let shade = ((x + y) * 255 / (w + h)) as u16;
            for c in color {
                bytes.push(((u16::from(c) + shade) / 2) as u8);
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Frame `n` of a video (or a picture) as gray bytes, row by row.
fn gray_frame(path: &Path, n: u32) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args([
            "-vf",
            &format!("select=eq(n\\,{n})"),
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "gray",
            "-",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The mean difference of two gray frames `width` wide over rows `rows`.
fn difference(a: &[u8], b: &[u8], width: usize, rows: std::ops::Range<usize>) -> f64 {
    let (from, to) = (rows.start * width, rows.end * width);
    let sum: u64 = a[from..to]
        .iter()
        .zip(&b[from..to])
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / (to - from) as f64
}

fn probe(path: &Path) -> Value {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
        ])
        .arg(path)
        .output()
        .expect("ffprobe (Debian's ffmpeg) is installed by cargo xtask");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_narrated_three_scene_video_is_an_h264_and_aac_mp4_as_long_as_its_narration() {
    let dir = tempfile::tempdir().unwrap();
    let speech = EspeakNg::default()
        .speak("The first scene is red. Then comes green. And blue ends it.")
        .unwrap();
    assert_eq!(speech.sentences.len(), 3);
    // Each scene lasts from its sentence's start to the next one's (the last to the end).
    let mut scenes = Vec::new();
    for (n, (color, motion)) in [
        ([220, 30, 30], Motion::ZoomIn),
        ([30, 200, 40], Motion::ZoomOut),
        ([40, 60, 230], Motion::Still),
    ]
    .into_iter()
    .enumerate()
    {
        let image = dir.path().join(format!("scene{n}.ppm"));
        picture(&image, 480 + n * 40, 320, color);
        let start = speech.sentences[n].start;
        let end = speech
            .sentences
            .get(n + 1)
            .map_or(speech.duration(), |next| next.start);
        scenes.push(Scene {
            image,
            duration: end - start,
            motion,
        });
    }
    let output = dir.path().join("video.mp4");
    let mut reported = Vec::new();
    let assembly = Assembly {
        frame: Frame {
            width: 360,
            height: 640,
            fps: 24,
        },
        scenes,
        narration: Some(&speech),
        subtitles: speech.sentences.clone(),
        fade: Duration::from_millis(400),
        music: None,
        output: output.clone(),
    };
    let done = assemble(&assembly, |share| reported.push(share)).unwrap();
    assert_eq!(reported.last(), Some(&1.0));
    assert!(reported.windows(2).all(|w| w[0] <= w[1]), "{reported:?}");
    assert_eq!(done.audio_samples, speech.samples.len() as u64);
    assert!(!dir.path().join("video.part.mp4").exists());

    let probed = probe(&output);
    let streams = probed["streams"].as_array().unwrap();
    let video = streams.iter().find(|s| s["codec_type"] == "video").unwrap();
    let audio = streams.iter().find(|s| s["codec_type"] == "audio").unwrap();
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(360), Some(640))
    );
    assert_eq!(video["pix_fmt"], "yuv420p");
    assert_eq!(audio["codec_name"], "aac");
    let duration: f64 = probed["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let narration = speech.duration().as_secs_f64();
    assert!(
        (duration - narration).abs() / narration < 0.05,
        "{duration} s against {narration} s of narration"
    );
    assert!((done.duration.as_secs_f64() - narration).abs() < 0.05);

    // The SRT beside it, one cue a sentence.
    let srt = std::fs::read_to_string(dir.path().join("video.srt")).unwrap();
    assert!(srt.starts_with("1\n00:00:00,000 --> 00:00:0"), "{srt}");
    assert!(
        srt.contains("\n3\n") && srt.contains("blue ends it."),
        "{srt}"
    );
    // Burned in: the same video without subtitles differs at the bottom of a frame in the
    // first sentence, hardly at its top.
    let plain = dir.path().join("plain.mp4");
    assemble(
        &Assembly {
            subtitles: Vec::new(),
            output: plain.clone(),
            ..assembly.clone()
        },
        |_| {},
    )
    .unwrap();
    assert!(!dir.path().join("plain.srt").exists());
    let (with, without) = (gray_frame(&output, 12), gray_frame(&plain, 12));
    assert_eq!(with.len(), 360 * 640);
    let bottom = difference(&with, &without, 360, 480..640);
    let top = difference(&with, &without, 360, 0..320);
    assert!(bottom > 4.0 * top.max(0.5), "bottom {bottom}, top {top}");
}

#[test]
fn the_thumbnail_is_the_most_detailed_picture_with_the_title_drawn_on_it() {
    let dir = tempfile::tempdir().unwrap();
    let (flat, busy) = (dir.path().join("flat.ppm"), dir.path().join("busy.ppm"));
    picture(&flat, 320, 240, [90, 90, 200]);
    // A checkerboard: far more detail than a gradient.
    let mut bytes = b"P6\n320 240\n255\n".to_vec();
    for y in 0..240 {
        for x in 0..320 {
            let on = (x / 16 + y / 16) % 2 == 0;
            bytes.extend(if on { [240, 200, 40] } else { [20, 20, 60] });
        }
    }
    std::fs::write(&busy, bytes).unwrap();
    assert_eq!(best_picture(&[flat.clone(), busy.clone()]).unwrap(), 1);

    let frame = Frame {
        width: 640,
        height: 360,
        fps: 1,
    };
    let (titled, bare) = (dir.path().join("thumb.png"), dir.path().join("bare.png"));
    thumbnail(
        &busy,
        frame,
        "Three scenes, one voice",
        Path::new(DEFAULT_FONT),
        &titled,
    )
    .unwrap();
    thumbnail(&busy, frame, "", Path::new(DEFAULT_FONT), &bare).unwrap();
    let probed = probe(&titled);
    let stream = &probed["streams"][0];
    assert_eq!(stream["codec_name"], "png");
    assert_eq!(
        (stream["width"].as_u64(), stream["height"].as_u64()),
        (Some(640), Some(360))
    );
    let (with, without) = (gray_frame(&titled, 0), gray_frame(&bare, 0));
    assert_eq!(
        difference(&with, &without, 640, 0..120),
        0.0,
        "the picture above the title is untouched"
    );
    assert!(
        difference(&with, &without, 640, 240..330) > 10.0,
        "the title is drawn low"
    );

    let err = thumbnail(
        &busy,
        frame,
        "x",
        Path::new("/nonexistent/font.ttf"),
        &titled,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/font.ttf is not there"),
        "{err}"
    );
}

#[test]
fn a_missing_picture_fails_its_scene_and_leaves_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.ppm");
    picture(&good, 64, 64, [10, 10, 10]);
    let output = dir.path().join("out.mp4");
    let scene = |image: &Path| Scene {
        image: image.to_path_buf(),
        duration: Duration::from_secs(1),
        motion: Motion::Still,
    };
    let assembly = Assembly {
        frame: Frame {
            width: 64,
            height: 64,
            fps: 10,
        },
        scenes: vec![scene(&good), scene(&dir.path().join("gone.png"))],
        narration: None,
        subtitles: Vec::new(),
        fade: Duration::ZERO,
        music: None,
        output: output.clone(),
    };
    let err = assemble(&assembly, |_| {}).unwrap_err();
    assert!(
        matches!(err, AssemblyError::Scene { scene: 2, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("gone.png"), "{err}");
    assert!(!output.exists() && !dir.path().join("out.part.mp4").exists());
    let none = Assembly {
        scenes: Vec::new(),
        ..assembly
    };
    assert!(matches!(
        assemble(&none, |_| {}),
        Err(AssemblyError::NoScenes)
    ));
}

/// The video's sound as mono 16-bit samples at `rate`.
fn samples(path: &Path, rate: u32) -> Vec<i16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "s16le", "-ac", "1", "-ar", &rate.to_string(), "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn rms(samples: &[i16]) -> f64 {
    (samples.iter().map(|s| f64::from(*s).powi(2)).sum::<f64>() / samples.len().max(1) as f64)
        .sqrt()
}

#[test]
fn scenes_cross_fade_and_music_loops_under_the_video_and_fades_out() {
    let dir = tempfile::tempdir().unwrap();
    let (red, blue) = (dir.path().join("red.ppm"), dir.path().join("blue.ppm"));
    for (path, color) in [(&red, [255u8, 0, 0]), (&blue, [0u8, 0, 255])] {
        let mut bytes = b"P6\n64 64\n255\n".to_vec();
        bytes.extend(std::iter::repeat_n(color, 64 * 64).flatten());
        std::fs::write(path, bytes).unwrap();
    }
    // Half a second of a 440 Hz tone, stereo at 44.1 kHz: looped under 2 s of video.
    let music = dir.path().join("tone.wav");
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(&music, spec).unwrap();
    for i in 0..22_050 {
        let v = ((i as f64 * 440.0 * std::f64::consts::TAU / 44_100.0).sin() * 20_000.0) as i16;
        writer.write_sample(v).unwrap();
        writer.write_sample(v).unwrap();
    }
    writer.finalize().unwrap();
    let scene = |image: &Path| Scene {
        image: image.to_path_buf(),
        duration: Duration::from_secs(1),
        motion: Motion::Still,
    };
    let output = dir.path().join("faded.mp4");
    let assembly = Assembly {
        frame: Frame {
            width: 64,
            height: 64,
            fps: 10,
        },
        scenes: vec![scene(&red), scene(&blue)],
        narration: None,
        subtitles: Vec::new(),
        fade: Duration::from_millis(600),
        music: Some(Music {
            volume: 0.5,
            ..Music::new(&music)
        }),
        output: output.clone(),
    };
    let done = assemble(&assembly, |_| {}).unwrap();
    assert_eq!(done.frames, 20);
    assert_eq!(done.audio_samples, 88_200);

    // Red, then blended across the cut (frames 7‥12), then blue.
    let level = |n: u32| {
        let frame = gray_frame(&output, n);
        frame.iter().map(|v| f64::from(*v)).sum::<f64>() / frame.len() as f64
    };
    let (reds, blues, mid) = (level(2), level(17), level(10));
    assert!((reds - blues).abs() > 20.0, "red {reds}, blue {blues}");
    assert!(
        mid > reds.min(blues) + 5.0 && mid < reds.max(blues) - 5.0,
        "the cut is blended: {mid} between {reds} and {blues}"
    );
    assert!((level(0) - reds).abs() < 2.0 && (level(19) - blues).abs() < 2.0);

    // The tone throughout (looped past its half second), fading out at the end.
    let sound = samples(&output, 44_100);
    assert!(
        (sound.len() as f64 - 88_200.0).abs() < 4_410.0,
        "{} samples",
        sound.len()
    );
    let (looped, last) = (
        rms(&sound[30_000..40_000]),
        rms(&sound[sound.len() - 2_000..]),
    );
    assert!(looped > 3_000.0, "the music loops: rms {looped}");
    assert!(last < looped / 4.0, "it fades out: {last} against {looped}");

    let broken = Assembly {
        music: Some(Music::new(dir.path().join("none.mp3"))),
        ..assembly
    };
    let err = assemble(&broken, |_| {}).unwrap_err();
    assert!(
        matches!(err, AssemblyError::Music(_)) && err.to_string().contains("none.mp3"),
        "{err}"
    );
}

#[test]
fn a_clip_scene_plays_its_frames_at_their_own_rate_and_loops() {
    let dir = tempfile::tempdir().unwrap();
    // Eight frames at 4 a second, frame k a flat gray of 20 + 25k.
    let (w, h) = (64u32, 64u32);
    let frames: Vec<Vec<u8>> = (0..8u32)
        .map(|k| vec![(20 + 25 * k) as u8; (w * h * 3) as usize])
        .collect();
    let clip = dir.path().join("clip.mp4");
    std::fs::write(
        &clip,
        media::clip::encode_rgb(w, h, 4, &frames, &[]).unwrap(),
    )
    .unwrap();
    let still = dir.path().join("still.ppm");
    picture(&still, 64, 64, [200, 200, 200]);
    let output = dir.path().join("out.mp4");
    let assembly = Assembly {
        frame: Frame {
            width: 32,
            height: 32,
            fps: 8,
        },
        scenes: vec![
            Scene {
                image: clip,
                duration: Duration::from_secs(3),
                motion: Motion::ZoomIn,
            },
            Scene {
                image: still,
                duration: Duration::from_secs(1),
                motion: Motion::Still,
            },
        ],
        narration: None,
        subtitles: Vec::new(),
        fade: Duration::ZERO,
        music: None,
        output: output.clone(),
    };
    let done = assemble(&assembly, |_| {}).unwrap();
    assert_eq!(done.frames, 32);
    let mean = |n: u32| {
        let gray = gray_frame(&output, n);
        gray.iter().map(|v| f64::from(*v)).sum::<f64>() / gray.len() as f64
    };
    // Output frame f (8 a second) shows clip frame ⌊f/2⌋ mod 8: two output frames each, then
    // the clip again from its start.
    for (f, k) in [(0, 0), (3, 1), (9, 4), (15, 7), (16, 0), (21, 2)] {
        let want = f64::from(20 + 25 * k);
        let got = mean(f);
        assert!(
            (got - want).abs() < 8.0,
            "output frame {f}: gray {got:.1}, clip frame {k} is {want}"
        );
    }
}
