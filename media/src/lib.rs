//! Media made on this machine: narration spoken by a local engine (`tts`: espeak-ng by default,
//! Piper when pointed at), and videos assembled in process with FFmpeg's libraries
//! (`assemble`). Both are blocking: callers run them off the async runtime.

pub mod assemble;
pub mod tts;
