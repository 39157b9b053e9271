//! P13: assembling a fixed 30-second video (6 stills of 1280×720, each 5 s with a Ken Burns
//! zoom, cropped to 720×1280 at 30 fps, subtitles burned in, the narration as AAC, H.264
//! `veryfast` CRF 21) in process with the media crate, against the `ffmpeg` command line doing
//! the same work in the same run (`crop` + `zoompan` per still, `concat`, `subtitles`, the same
//! encoder settings), alternated.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use media::assemble::{Assembly, Frame, Motion, Scene, assemble};
use media::tts::{Speech, Timed};

pub(crate) struct Assembled {
    pub(crate) ours: Vec<Duration>,
    pub(crate) ffmpeg: Vec<Duration>,
}

const SCENES: usize = 6;
const SCENE_SECS: u64 = 5;
const FPS: u32 = 30;
const W: u32 = 720;
const H: u32 = 1280;

/// A 1280×720 still: a gradient with a pattern, so the encoder has something to do.
fn still(path: &Path, n: usize) -> Result<()> {
    let (w, h) = (1280usize, 720usize);
    let mut bytes = format!("P6\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            let stripe = if (x / (16 + n * 4) + y / 24) % 2 == 0 {
                40
            } else {
                0
            };
            bytes.push(((x * 255 / w) as u8).wrapping_add(stripe));
            bytes.push(((y * 255 / h) as u8).wrapping_add((n * 40) as u8));
            bytes.push((((x + y) * 255 / (w + h)) as u8).wrapping_add(stripe));
        }
    }
    std::fs::write(path, bytes)?;
    Ok(())
}

/// 30 s of narration: a low hum as samples (the assembly's cost does not depend on what is
/// said), one subtitle per scene.
fn narration() -> Speech {
    let rate = 22_050u32;
    let total = rate as usize * SCENES * SCENE_SECS as usize;
    let samples = (0..total)
        .map(|i| {
            ((i as f64 * 180.0 * std::f64::consts::TAU / f64::from(rate)).sin() * 6000.0) as i16
        })
        .collect();
    let sentences = (0..SCENES)
        .map(|n| Timed {
            text: format!("This is scene number {} of the benchmark video.", n + 1),
            start: Duration::from_secs(n as u64 * SCENE_SECS),
            end: Duration::from_secs((n as u64 + 1) * SCENE_SECS) - Duration::from_millis(300),
        })
        .collect();
    Speech {
        sample_rate: rate,
        samples,
        sentences,
    }
}

fn ffmpeg(dir: &Path, speech_wav: &Path, srt: &Path, out: &Path) -> Result<Duration> {
    let frames = FPS as u64 * SCENE_SECS;
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error", "-y"]);
    let mut graph = String::new();
    for n in 0..SCENES {
        command.arg("-i").arg(dir.join(format!("scene{n}.ppm")));
        graph.push_str(&format!(
            "[{n}:v]crop=ih*{W}/{H}:ih,zoompan=z='1+0.15*on/{last}':x='iw/2-(iw/zoom/2)':y='ih/2-(ih/zoom/2)':d={frames}:s={W}x{H}:fps={FPS},format=yuv420p[v{n}];",
            last = frames - 1
        ));
    }
    command.arg("-i").arg(speech_wav);
    for n in 0..SCENES {
        graph.push_str(&format!("[v{n}]"));
    }
    graph.push_str(&format!(
        "concat=n={SCENES}:v=1:a=0[cat];[cat]subtitles=filename={}:force_style='FontName=DejaVu Sans,FontSize=13,Bold=1,Outline=2,Shadow=0,MarginV=24,Alignment=2'[out]",
        srt.display()
    ));
    command.args([
        "-filter_complex",
        &graph,
        "-map",
        "[out]",
        "-map",
        &format!("{SCENES}:a"),
    ]);
    command.args([
        "-c:v", "libx264", "-preset", "veryfast", "-crf", "21", "-pix_fmt", "yuv420p",
    ]);
    command
        .args(["-c:a", "aac", "-b:a", "96k", "-ac", "1"])
        .arg(out);
    let started = Instant::now();
    let output = command
        .output()
        .context("ffmpeg (Debian's) is installed by cargo xtask")?;
    let took = started.elapsed();
    if !output.status.success() {
        bail!("ffmpeg failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    Ok(took)
}

pub(crate) fn assembly(rounds: usize) -> Result<Assembled> {
    let dir = tempfile::tempdir()?;
    for n in 0..SCENES {
        still(&dir.path().join(format!("scene{n}.ppm")), n)?;
    }
    let speech = narration();
    let speech_wav = dir.path().join("narration.wav");
    std::fs::write(&speech_wav, speech.to_wav())?;
    let srt = dir.path().join("subtitles.srt");
    std::fs::write(
        &srt,
        media::subtitles::srt(&speech.sentences, (W as usize / 18).clamp(16, 60)),
    )?;
    let scenes: Vec<Scene> = (0..SCENES)
        .map(|n| Scene {
            image: dir.path().join(format!("scene{n}.ppm")),
            duration: Duration::from_secs(SCENE_SECS),
            motion: Motion::ZoomIn,
        })
        .collect();
    let assembly = Assembly {
        frame: Frame {
            width: W,
            height: H,
            fps: FPS,
        },
        scenes,
        narration: Some(&speech),
        subtitles: speech.sentences.clone(),
        fade: Duration::ZERO,
        music: None,
        output: dir.path().join("ours.mp4"),
    };
    let mut measured = Assembled {
        ours: Vec::new(),
        ffmpeg: Vec::new(),
    };
    for _ in 0..rounds {
        let started = Instant::now();
        let done = assemble(&assembly, |_| {})?;
        measured.ours.push(started.elapsed());
        if done.frames != FPS as u64 * SCENE_SECS * SCENES as u64 {
            bail!("the assembly made {} frames", done.frames);
        }
        measured.ffmpeg.push(ffmpeg(
            dir.path(),
            &speech_wav,
            &srt,
            &dir.path().join("theirs.mp4"),
        )?);
    }
    Ok(measured)
}
