//! Media made on this machine: narration spoken by a local engine (`tts`: espeak-ng by default,
//! Piper when pointed at), videos assembled in process with FFmpeg's libraries (`assemble`,
//! with `subtitles` from the narration's timings; scenes stills or `clip`s) and their thumbnails
//! (`thumbnail`). All of it is
//! blocking: callers run it off the async runtime.

pub mod assemble;
pub mod audio;
pub mod clip;
mod error;
pub mod subtitles;
pub mod thumbnail;
pub mod tts;
