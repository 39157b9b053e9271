//! What goes wrong making media, and FFmpeg's libraries started once: shared by the assembly,
//! the clips and the thumbnails.

use std::path::PathBuf;

use ffmpeg_next as ffmpeg;

#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    #[error("FFmpeg's libraries could not start: {0}")]
    Init(String),
    #[error("nothing to assemble: no scenes")]
    NoScenes,
    #[error("scene {scene}: {reason}")]
    Scene { scene: usize, reason: String },
    #[error("this FFmpeg has no {0} encoder")]
    NoEncoder(&'static str),
    #[error("this FFmpeg has no {0} filter")]
    NoFilter(&'static str),
    #[error("the font {} is not there (Debian's fonts-dejavu-core has the default)", .0.display())]
    Font(PathBuf),
    #[error("the music: {0}")]
    Music(String),
    #[error("{0} cannot be named in a filter graph (letters, digits, '/', '.', '_' and '-' only)")]
    Path(String),
    #[error("{what}: {source}")]
    Ffmpeg {
        what: &'static str,
        source: ffmpeg::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) fn ff(what: &'static str) -> impl FnOnce(ffmpeg::Error) -> AssemblyError {
    move |source| AssemblyError::Ffmpeg { what, source }
}

/// Starts FFmpeg's libraries once (quiet but for errors).
pub fn init() -> Result<(), AssemblyError> {
    static INIT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    INIT.get_or_init(|| {
        ffmpeg::init().map_err(|err| err.to_string())?;
        ffmpeg::log::set_level(ffmpeg::log::Level::Error);
        Ok(())
    })
    .clone()
    .map_err(AssemblyError::Init)
}
