//! The soundtrack: background music decoded with FFmpeg's libraries (any format they read),
//! resampled to the narration's rate, looped to the video's length, ducked under speech and
//! faded out at the end, and mixed with the narration.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ffmpeg::software::resampling;
use ffmpeg::{ChannelLayout, codec, format, frame, media};
use ffmpeg_next as ffmpeg;

use crate::tts::Timed;

/// How long the music takes to duck before a sentence, and to come back after it.
const ATTACK: Duration = Duration::from_millis(150);
const RELEASE: Duration = Duration::from_millis(300);
/// The music's fade-out at the end.
const FADE_OUT: Duration = Duration::from_secs(1);

/// Background music under a video.
#[derive(Debug, Clone)]
pub struct Music {
    pub path: PathBuf,
    /// Its level where nobody speaks (0‥1).
    pub volume: f32,
    /// Its level under speech (0‥`volume`).
    pub ducked: f32,
}

impl Music {
    pub fn new(path: impl Into<PathBuf>) -> Music {
        Music {
            path: path.into(),
            volume: 0.3,
            ducked: 0.06,
        }
    }
}

/// `path`'s audio as mono f32 samples at `rate`.
pub fn decode(path: &Path, rate: u32) -> Result<Vec<f32>, String> {
    let shown = path.display();
    let mut input = format::input(&path).map_err(|err| format!("{shown}: {err}"))?;
    let stream = input
        .streams()
        .best(media::Type::Audio)
        .ok_or_else(|| format!("{shown} holds no audio"))?;
    let index = stream.index();
    let mut decoder = codec::context::Context::from_parameters(stream.parameters())
        .and_then(|context| context.decoder().audio())
        .map_err(|err| format!("{shown}: {err}"))?;
    let mut resampler: Option<resampling::Context> = None;
    let mut out = Vec::new();
    let mut take = |decoded: &mut frame::Audio, out: &mut Vec<f32>| -> Result<(), String> {
        if decoded.channel_layout().is_empty() {
            decoded.set_channel_layout(ChannelLayout::default(i32::from(decoded.channels())));
        }
        if resampler.is_none() {
            resampler = Some(
                resampling::Context::get(
                    decoded.format(),
                    decoded.channel_layout(),
                    decoded.rate(),
                    format::Sample::F32(format::sample::Type::Packed),
                    ChannelLayout::MONO,
                    rate,
                )
                .map_err(|err| format!("{shown}: {err}"))?,
            );
        }
        let mut converted = frame::Audio::empty();
        if let Some(resampler) = resampler.as_mut() {
            resampler
                .run(decoded, &mut converted)
                .map_err(|err| format!("{shown}: {err}"))?;
        }
        let samples = converted.samples();
        if samples > 0 {
            out.extend_from_slice(&converted.plane::<f32>(0)[..samples]);
        }
        Ok(())
    };
    let mut decoded = frame::Audio::empty();
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        decoder
            .send_packet(&packet)
            .map_err(|err| format!("{shown}: {err}"))?;
        while decoder.receive_frame(&mut decoded).is_ok() {
            take(&mut decoded, &mut out)?;
        }
    }
    let _ = decoder.send_eof();
    while decoder.receive_frame(&mut decoded).is_ok() {
        take(&mut decoded, &mut out)?;
    }
    if out.is_empty() {
        return Err(format!("{shown} has no samples"));
    }
    Ok(out)
}

/// The music's level at each of `len` samples at `rate`: `volume`, down to `ducked` while a
/// sentence of `speech` is said (ramped), faded out over the last second.
pub fn duck_gains(len: usize, rate: u32, speech: &[Timed], volume: f32, ducked: f32) -> Vec<f32> {
    let rate = f64::from(rate.max(1));
    let at = |d: Duration| (d.as_secs_f64() * rate) as isize;
    let (attack, release) = (at(ATTACK).max(1), at(RELEASE).max(1));
    // How much speech there is at each sample (0‥1), the loudest of the sentences' ramps.
    let mut presence = vec![0f32; len];
    for sentence in speech {
        let (start, end) = (at(sentence.start), at(sentence.end));
        for i in (start - attack).max(0)..(end + release).min(len as isize) {
            let weight = if i < start {
                1.0 - (start - i) as f32 / attack as f32
            } else if i > end {
                1.0 - (i - end) as f32 / release as f32
            } else {
                1.0
            };
            let slot = &mut presence[i as usize];
            *slot = slot.max(weight);
        }
    }
    let fade = at(FADE_OUT).max(1) as usize;
    presence
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let level = volume - (volume - ducked) * s;
            let left = len - i;
            if left < fade {
                level * left as f32 / fade as f32
            } else {
                level
            }
        })
        .collect()
}

/// The narration (16-bit) with `music` (looped, at `gains`) under it, `len` samples long.
pub fn mix(narration: &[i16], music: Option<(&[f32], &[f32])>, len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let voice = narration.get(i).map_or(0.0, |s| f32::from(*s) / 32768.0);
            let under = match music {
                Some((samples, gains)) if !samples.is_empty() => {
                    samples[i % samples.len()] * gains.get(i).copied().unwrap_or(0.0)
                }
                _ => 0.0,
            };
            (voice + under).clamp(-1.0, 1.0)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn said(start_ms: u64, end_ms: u64) -> Timed {
        Timed {
            text: "x".to_owned(),
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
        }
    }

    #[test]
    fn music_ducks_under_each_sentence_and_fades_out() {
        // 1 kHz for readable indices: 10 s, sentences at 1‥3 s and 6‥7 s.
        let gains = duck_gains(
            10_000,
            1000,
            &[said(1000, 3000), said(6000, 7000)],
            0.3,
            0.05,
        );
        let near = |a: f32, b: f32| (a - b).abs() < 1e-4;
        assert!(near(gains[500], 0.3), "before anyone speaks");
        assert!(near(gains[2000], 0.05), "under speech");
        assert!(
            (gains[925] - 0.175).abs() < 0.01,
            "half-way down the attack: {}",
            gains[925]
        );
        assert!(
            (gains[3150] - 0.175).abs() < 0.01,
            "half-way up the release: {}",
            gains[3150]
        );
        assert!(near(gains[4500], 0.3), "between sentences");
        assert!(near(gains[6500], 0.05));
        assert!(
            (gains[9500] - 0.15).abs() < 0.01,
            "half-way through the fade-out: {}",
            gains[9500]
        );
        assert!(gains[9999] < 0.001);
    }

    #[test]
    fn the_mix_loops_the_music_under_the_voice() {
        let voice = [16384i16, -16384, 0, 0];
        let music = [0.5f32, -0.5];
        let mixed = mix(&voice, Some((&music, &[1.0, 1.0, 0.5, 0.5])), 5);
        assert_eq!(mixed, [1.0, -1.0, 0.25, -0.25, 0.0]);
        assert_eq!(mix(&voice, None, 2), [0.5, -0.5]);
    }
}
