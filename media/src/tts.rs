//! Narration: text to speech by a local engine behind one trait. espeak-ng (Debian's) is the
//! default; Piper when the user points at its binary and a voice file. Each sentence is spoken
//! on its own, so the narration knows when every sentence starts and ends (the subtitles'
//! timings) from the samples themselves.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Silence between two sentences.
const PAUSE: Duration = Duration::from_millis(250);

/// The most text one narration may be (a scene's, not a book's).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TtsError {
    #[error("nothing to say")]
    Empty,
    #[error("the text is {0} bytes; at most {MAX_TEXT_BYTES} are spoken at once")]
    TooLong(usize),
    #[error("{engine} could not be started ({binary}): {source}")]
    Start {
        engine: &'static str,
        binary: String,
        source: std::io::Error,
    },
    #[error("{engine} failed ({status}): {stderr}")]
    Failed {
        engine: &'static str,
        status: String,
        stderr: String,
    },
    #[error("{engine} gave no usable WAV: {reason}")]
    BadWav {
        engine: &'static str,
        reason: String,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A stretch of the narration and the text spoken in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Timed {
    pub text: String,
    pub start: Duration,
    pub end: Duration,
}

/// Spoken text: mono 16-bit samples and when each sentence is said.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
    pub sentences: Vec<Timed>,
}

impl Speech {
    pub fn duration(&self) -> Duration {
        samples_to_duration(self.samples.len(), self.sample_rate)
    }

    /// As a WAV file (16-bit mono PCM).
    pub fn to_wav(&self) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: self.sample_rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut out = std::io::Cursor::new(Vec::new());
        {
            let mut writer = hound::WavWriter::new(&mut out, spec).expect("a WAV header in memory");
            for sample in &self.samples {
                writer.write_sample(*sample).expect("a sample in memory");
            }
            writer.finalize().expect("a WAV in memory");
        }
        out.into_inner()
    }
}

fn samples_to_duration(samples: usize, rate: u32) -> Duration {
    Duration::from_secs_f64(samples as f64 / f64::from(rate.max(1)))
}

/// A local text-to-speech engine. Blocking: run it off the async runtime.
pub trait Tts: Send + Sync {
    /// Its name, as a project's provenance records it (`espeak-ng:en-us`).
    fn voice(&self) -> String;

    /// One sentence as a WAV file written to `out`.
    fn speak_sentence(&self, text: &str, out: &Path) -> Result<(), TtsError>;

    /// `text`, sentence by sentence, a short pause between them.
    fn speak(&self, text: &str) -> Result<Speech, TtsError> {
        if text.len() > MAX_TEXT_BYTES {
            return Err(TtsError::TooLong(text.len()));
        }
        let sentences = sentences(text);
        if sentences.is_empty() {
            return Err(TtsError::Empty);
        }
        let dir = tempfile::tempdir()?;
        let mut speech = Speech {
            sample_rate: 0,
            samples: Vec::new(),
            sentences: Vec::new(),
        };
        for (n, sentence) in sentences.into_iter().enumerate() {
            let path = dir.path().join(format!("{n}.wav"));
            self.speak_sentence(&sentence, &path)?;
            let (rate, samples) = read_wav(&path).map_err(|reason| TtsError::BadWav {
                engine: self.engine(),
                reason,
            })?;
            if speech.sample_rate == 0 {
                speech.sample_rate = rate;
            } else if rate != speech.sample_rate {
                return Err(TtsError::BadWav {
                    engine: self.engine(),
                    reason: format!("sample rate changed from {} to {rate}", speech.sample_rate),
                });
            }
            if n > 0 {
                let pause = (PAUSE.as_secs_f64() * f64::from(rate)) as usize;
                speech.samples.extend(std::iter::repeat_n(0, pause));
            }
            let start = samples_to_duration(speech.samples.len(), rate);
            speech.samples.extend(samples);
            let end = samples_to_duration(speech.samples.len(), rate);
            speech.sentences.push(Timed {
                text: sentence,
                start,
                end,
            });
        }
        Ok(speech)
    }

    fn engine(&self) -> &'static str;
}

/// Reads a 16-bit mono (or the first channel of a multi-channel) PCM WAV.
fn read_wav(path: &Path) -> Result<(u32, Vec<i16>), String> {
    let file = std::fs::File::open(path).map_err(|err| err.to_string())?;
    wav_samples(std::io::BufReader::new(file))
}

/// A 16-bit PCM WAV's rate and samples (its first channel).
pub fn wav_samples(reader: impl std::io::Read) -> Result<(u32, Vec<i16>), String> {
    let mut reader = hound::WavReader::new(reader).map_err(|err| err.to_string())?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(format!(
            "{:?} {}-bit samples (16-bit PCM expected)",
            spec.sample_format, spec.bits_per_sample
        ));
    }
    let channels = usize::from(spec.channels.max(1));
    let samples: Result<Vec<i16>, _> = reader.samples::<i16>().step_by(channels).collect();
    let samples = samples.map_err(|err| err.to_string())?;
    if samples.is_empty() {
        return Err("no samples".to_owned());
    }
    Ok((spec.sample_rate, samples))
}

/// The sentences of `text`: split after `.`, `!` or `?` followed by white space, and at line
/// breaks; trimmed, empty ones dropped.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\n' || c == '\r' {
            push_sentence(&mut out, &mut current);
            continue;
        }
        current.push(c);
        if matches!(c, '.' | '!' | '?') && chars.peek().is_none_or(|next| next.is_whitespace()) {
            push_sentence(&mut out, &mut current);
        }
    }
    push_sentence(&mut out, &mut current);
    out
}

fn push_sentence(out: &mut Vec<String>, current: &mut String) {
    let sentence = current.split_whitespace().collect::<Vec<_>>().join(" ");
    if sentence.chars().any(char::is_alphanumeric) {
        out.push(sentence);
    }
    current.clear();
}

/// Runs `command` with `text` on its standard input (never as an argument: a sentence that
/// starts with `-` is text, not an option).
fn run(engine: &'static str, mut command: Command, text: &str) -> Result<(), TtsError> {
    let binary = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| TtsError::Start {
            engine,
            binary,
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        // An engine that stops before reading it all is reported by its exit, below.
        let written = stdin
            .write_all(text.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"));
        if let Err(err) = written
            && err.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(err.into());
        }
    }
    let output = child.wait_with_output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(TtsError::Failed {
            engine,
            status: output.status.to_string(),
            stderr: stderr.trim().chars().take(500).collect(),
        });
    }
    Ok(())
}

/// espeak-ng: `espeak-ng -v <voice> -s <words per minute> -w <out> --stdin`.
#[derive(Debug, Clone)]
pub struct EspeakNg {
    pub binary: PathBuf,
    pub voice: String,
    pub words_per_minute: u32,
}

impl Default for EspeakNg {
    fn default() -> Self {
        Self {
            binary: PathBuf::from("espeak-ng"),
            voice: "en-us".to_owned(),
            words_per_minute: 165,
        }
    }
}

impl Tts for EspeakNg {
    fn voice(&self) -> String {
        format!("espeak-ng:{}", self.voice)
    }

    fn engine(&self) -> &'static str {
        "espeak-ng"
    }

    fn speak_sentence(&self, text: &str, out: &Path) -> Result<(), TtsError> {
        let mut command = Command::new(&self.binary);
        command
            .arg("-v")
            .arg(&self.voice)
            .arg("-s")
            .arg(self.words_per_minute.to_string())
            .arg("-w")
            .arg(out)
            .arg("--stdin");
        run(self.engine(), command, text)
    }
}

/// Piper: `piper --model <voice.onnx> --output_file <out>`, the text on its standard input.
#[derive(Debug, Clone)]
pub struct Piper {
    pub binary: PathBuf,
    pub model: PathBuf,
}

impl Tts for Piper {
    fn voice(&self) -> String {
        let name = self
            .model
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("piper:{name}")
    }

    fn engine(&self) -> &'static str {
        "piper"
    }

    fn speak_sentence(&self, text: &str, out: &Path) -> Result<(), TtsError> {
        let mut command = Command::new(&self.binary);
        command
            .arg("--model")
            .arg(&self.model)
            .arg("--output_file")
            .arg(out);
        run(self.engine(), command, text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_splits_into_sentences() {
        assert_eq!(
            sentences("Hello there. It is 3.5 degrees!  Why?\nA new line -- and no stop"),
            [
                "Hello there.",
                "It is 3.5 degrees!",
                "Why?",
                "A new line -- and no stop"
            ]
        );
        assert!(sentences(" ... \n\n").is_empty());
    }

    #[test]
    fn espeak_speaks_each_sentence_with_its_timing() {
        let speech = EspeakNg::default()
            .speak("Welcome to the channel. -v is not an option here!")
            .unwrap();
        assert_eq!(speech.sample_rate, 22_050);
        assert_eq!(speech.sentences.len(), 2);
        let (first, second) = (&speech.sentences[0], &speech.sentences[1]);
        assert_eq!(first.start, Duration::ZERO);
        assert!(first.end > Duration::from_millis(500), "{first:?}");
        assert!(
            second.start >= first.end + PAUSE - Duration::from_millis(1),
            "{second:?}"
        );
        assert_eq!(second.end, speech.duration());
        // Some of it is not silence.
        assert!(speech.samples.iter().any(|s| s.unsigned_abs() > 1000));
        let wav = speech.to_wav();
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(wav.len(), 44 + speech.samples.len() * 2);
    }

    #[test]
    fn an_engine_that_fails_or_is_missing_says_so() {
        let missing = EspeakNg {
            binary: PathBuf::from("/nonexistent/espeak-ng"),
            ..EspeakNg::default()
        };
        let err = missing.speak("Hello.").unwrap_err().to_string();
        assert!(
            err.contains("could not be started (/nonexistent/espeak-ng)"),
            "{err}"
        );
        let failing = EspeakNg {
            binary: PathBuf::from("false"),
            ..EspeakNg::default()
        };
        let err = failing.speak("Hello.").unwrap_err().to_string();
        assert!(
            err.starts_with("espeak-ng failed (exit status: 1)"),
            "{err}"
        );
        assert!(matches!(
            EspeakNg::default().speak(" . "),
            Err(TtsError::Empty)
        ));
        let long = "a ".repeat(MAX_TEXT_BYTES);
        assert!(matches!(
            EspeakNg::default().speak(&long),
            Err(TtsError::TooLong(_))
        ));
    }

    #[test]
    fn piper_gets_its_model_and_the_text_on_stdin() {
        // A stand-in that keeps piper's command-line contract (a file written here and run at
        // once could be "text file busy" while another test forks).
        let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/piper"));
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("en_US-amy-low.onnx");
        std::fs::write(&model, b"onnx").unwrap();
        let piper = Piper {
            binary: script,
            model,
        };
        assert_eq!(piper.voice(), "piper:en_US-amy-low");
        let speech = piper.speak("One. Two.").unwrap();
        assert_eq!(speech.sentences.len(), 2);
        let wrong = Piper {
            model: dir.path().join("missing.onnx"),
            ..piper
        };
        assert!(
            wrong
                .speak("One.")
                .unwrap_err()
                .to_string()
                .starts_with("piper failed")
        );
    }
}
