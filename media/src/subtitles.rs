//! Subtitles from the narration's timings: SRT text (the sidecar, and what the burn-in filter
//! reads), lines wrapped to fit the frame.

use std::fmt::Write;
use std::time::Duration;

use crate::tts::Timed;

/// `00:01:02,345`.
fn stamp(at: Duration) -> String {
    let ms = at.as_millis();
    format!(
        "{:02}:{:02}:{:02},{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// `text` in lines of at most `width` characters, broken between words (a longer word stands
/// alone).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_owned()),
        }
    }
    lines
}

/// SRT cues, one per timed sentence, wrapped at `width` characters.
pub fn srt(cues: &[Timed], width: usize) -> String {
    let mut out = String::new();
    for (n, cue) in cues.iter().filter(|c| c.end > c.start).enumerate() {
        // SRT has no escapes: a line of its own that is only a number or an arrow cannot
        // appear in a wrapped sentence's middle, and blank lines are what end a cue.
        let _ = writeln!(
            out,
            "{}\n{} --> {}",
            n + 1,
            stamp(cue.start),
            stamp(cue.end)
        );
        for line in wrap(&cue.text, width.max(8)) {
            let _ = writeln!(out, "{line}");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(text: &str, start_ms: u64, end_ms: u64) -> Timed {
        Timed {
            text: text.to_owned(),
            start: Duration::from_millis(start_ms),
            end: Duration::from_millis(end_ms),
        }
    }

    #[test]
    fn cues_are_numbered_timed_and_wrapped() {
        let text = srt(
            &[
                cue("The first scene is red.", 0, 1_234),
                cue(
                    "Then comes a much longer sentence that wraps.",
                    1_484,
                    3_723_005,
                ),
                cue("never shown", 5_000, 5_000),
            ],
            20,
        );
        assert_eq!(
            text,
            "1\n00:00:00,000 --> 00:00:01,234\nThe first scene is\nred.\n\n\
             2\n00:00:01,484 --> 01:02:03,005\nThen comes a much\nlonger sentence that\nwraps.\n\n"
        );
    }

    #[test]
    fn a_long_word_stands_alone() {
        assert_eq!(
            wrap("a supercalifragilistic b", 8),
            ["a", "supercalifragilistic", "b"]
        );
        assert!(wrap("   ", 8).is_empty());
    }
}
