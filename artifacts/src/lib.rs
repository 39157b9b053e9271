//! The artifact store on disk (render inputs and outputs): every file once, by the SHA-256 of its bytes
//! (`sha256/ab/abcdef….png`), and each job's outputs by job id (`jobs/<job>/<n>.png`, hard
//! links to the content files). Writes go to a temporary file first and are renamed into
//! place, so a reader never sees half a file and a crash leaves no torn artifact. Image bytes
//! are written and read by [`png`], the one PNG codec of the house.

pub mod png;

use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
}

pub use common::{is_sha256, sha256_hex};

/// Width and height of a PNG, from its IHDR chunk ([`png::size`]).
pub fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    png::size(bytes)
}

/// Stored content, open for reading from its start.
#[derive(Debug)]
pub struct Content {
    pub file: tokio::fs::File,
    pub len: u64,
    pub content_type: &'static str,
}

/// The media type of content that starts with `head`: PNG and JPEG (the studio's pictures),
/// MP4 and WAV (the videos and their narrations), anything else as opaque bytes.
pub fn content_type(head: &[u8]) -> &'static str {
    if head.starts_with(b"\x89PNG\r\n\x1a\n") {
        "image/png"
    } else if head.starts_with(&[0xff, 0xd8, 0xff]) {
        "image/jpeg"
    } else if head.get(4..8) == Some(b"ftyp") {
        "video/mp4"
    } else if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        "audio/wav"
    } else {
        "application/octet-stream"
    }
}

/// Whether a job id is safe as a path component (ours are UUIDs; anything else is refused).
fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A temporary file older than this was left by a write that never finished (a crash): no
/// write in progress takes this long.
pub const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// A content file as a sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub sha256: String,
    pub bytes: u64,
    /// When it was last written or stored again ([`ArtifactStore::put`] of the same bytes).
    pub modified: std::time::SystemTime,
}

/// What [`ArtifactStore::collect`] did with a content file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collected {
    /// Deleted, with this many job links to it.
    Removed { bytes: u64, links: u32 },
    /// Written (or stored again) at or after the time given: left.
    Fresh,
    /// Not in the store.
    Gone,
}

/// What the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Usage {
    /// Content files and their bytes (each artifact once, however many jobs link it).
    pub files: u64,
    pub bytes: u64,
}

impl ArtifactStore {
    /// Opens (or makes) the store, removing temporary files a crashed write left behind.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        std::fs::create_dir_all(root.join("sha256"))?;
        std::fs::create_dir_all(root.join("jobs"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        let store = Self { root };
        match store.remove_orphans(ORPHAN_AGE) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed temporary files a crashed write left"),
            Err(err) => tracing::warn!(error = %err, "could not look for orphaned temporary files"),
        }
        Ok(store)
    }

    /// Removes the temporary files last written more than `older_than` ago; how many.
    pub fn remove_orphans(&self, older_than: std::time::Duration) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if age > older_than && entry.file_type()?.is_file() {
                std::fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Counts the content files and their bytes (a walk of the store: blocking).
    pub fn usage(&self) -> io::Result<Usage> {
        let mut usage = Usage::default();
        for shard in std::fs::read_dir(self.root.join("sha256"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(shard.path())? {
                let metadata = file?.metadata()?;
                if metadata.is_file() {
                    usage.files += 1;
                    usage.bytes += metadata.len();
                }
            }
        }
        Ok(usage)
    }

    /// Every content file, with its size and when it was last written (a walk: blocking).
    pub fn contents(&self) -> io::Result<Vec<Stored>> {
        let mut out = Vec::new();
        for shard in std::fs::read_dir(self.root.join("sha256"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(shard.path())? {
                let file = file?;
                let Some(name) = file.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                let metadata = file.metadata()?;
                if metadata.is_file() && is_sha256(&name) {
                    out.push(Stored {
                        sha256: name,
                        bytes: metadata.len(),
                        modified: metadata.modified()?,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Job output links by the inode they link (`jobs/<job>/<n>.<ext>`; a walk: blocking), so
    /// collecting a content file takes its links too and frees its bytes.
    pub fn job_links(&self) -> io::Result<std::collections::HashMap<u64, Vec<PathBuf>>> {
        use std::os::unix::fs::MetadataExt;
        let mut links: std::collections::HashMap<u64, Vec<PathBuf>> = Default::default();
        for job in std::fs::read_dir(self.root.join("jobs"))? {
            let job = job?;
            if !job.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(job.path())? {
                let file = file?;
                let metadata = file.metadata()?;
                if metadata.is_file() {
                    links.entry(metadata.ino()).or_default().push(file.path());
                }
            }
        }
        Ok(links)
    }

    /// Deletes the content with this hash and its job links (from [`Self::job_links`]) unless
    /// it was written at or after `written_before` (stored again since a sweep planned it);
    /// a job directory left empty goes too. Blocking.
    pub fn collect(
        &self,
        sha256: &str,
        written_before: std::time::SystemTime,
        job_links: &std::collections::HashMap<u64, Vec<PathBuf>>,
    ) -> io::Result<Collected> {
        use std::os::unix::fs::MetadataExt;
        let path = self
            .content_path(sha256)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a sha256"))?;
        // Moved aside first (atomic), so a `put` of the same bytes meanwhile either touched it
        // before (seen below: it stays) or finds it gone and writes it anew.
        let aside = self
            .root
            .join("tmp")
            .join(format!("{sha256}.collecting.{}", uuid::Uuid::new_v4()));
        match std::fs::rename(&path, &aside) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Collected::Gone),
            Err(err) => return Err(err),
        }
        let metadata = std::fs::metadata(&aside)?;
        if metadata.modified()? >= written_before {
            // Put back, unless it was stored anew meanwhile (then the new file stands).
            if std::fs::hard_link(&aside, &path).is_err() && !path.exists() {
                std::fs::rename(&aside, &path)?;
            } else {
                std::fs::remove_file(&aside)?;
            }
            return Ok(Collected::Fresh);
        }
        let mut links = 0;
        for link in job_links.get(&metadata.ino()).into_iter().flatten() {
            match std::fs::remove_file(link) {
                Ok(()) => links += 1,
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
            if let Some(dir) = link.parent() {
                // Only succeeds once the job's directory is empty.
                let _ = std::fs::remove_dir(dir);
            }
        }
        std::fs::remove_file(&aside)?;
        Ok(Collected::Removed {
            bytes: metadata.len(),
            links,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the content with this hash lives (whether or not it exists).
    pub fn content_path(&self, sha256: &str) -> Option<PathBuf> {
        is_sha256(sha256).then(|| self.root.join("sha256").join(&sha256[..2]).join(sha256))
    }

    /// Stores `bytes` once; returns its hash and whether it was new.
    pub async fn put(&self, bytes: &[u8]) -> io::Result<(String, bool)> {
        let sha = sha256_hex(bytes);
        let path = self
            .content_path(&sha)
            .ok_or_else(|| io::Error::other("bad hash"))?;
        if tokio::fs::try_exists(&path).await? {
            // Stored again: a sweep planned before now must not take it.
            let touch = path.clone();
            let touched = tokio::task::spawn_blocking(move || {
                std::fs::File::options()
                    .write(true)
                    .open(&touch)?
                    .set_modified(std::time::SystemTime::now())
            })
            .await
            .map_err(io::Error::other)?;
            match touched {
                Ok(()) => return Ok((sha, false)),
                // A sweep took it just now: written anew below.
                Err(err) if err.kind() == io::ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let tmp = self
            .root
            .join("tmp")
            .join(format!("{sha}.{}", uuid::Uuid::new_v4()));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::File::open(&tmp).await?.sync_all().await?;
        tokio::fs::rename(&tmp, &path).await?;
        Ok((sha, true))
    }

    /// Records the `index`-th output of `job_id` (a hard link to its content). Idempotent.
    pub async fn link_job(
        &self,
        job_id: &str,
        index: usize,
        sha256: &str,
        extension: &str,
    ) -> io::Result<PathBuf> {
        if !safe_component(job_id) || !safe_component(extension) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "unsafe job id or extension",
            ));
        }
        let content = self
            .content_path(sha256)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a sha256"))?;
        let dir = self.root.join("jobs").join(job_id);
        tokio::fs::create_dir_all(&dir).await?;
        let link = dir.join(format!("{index}.{extension}"));
        match tokio::fs::hard_link(&content, &link).await {
            Ok(()) => Ok(link),
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(link),
            Err(err) => Err(err),
        }
    }

    /// The bytes with this hash, or `None` if the store does not hold them.
    pub async fn get(&self, sha256: &str) -> io::Result<Option<Bytes>> {
        let Some(path) = self.content_path(sha256) else {
            return Ok(None);
        };
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// The content with this hash, opened for streaming (its length and type read from the
    /// file), or `None` if the store does not hold it. Nothing is read into memory but its
    /// first bytes.
    pub async fn open_content(&self, sha256: &str) -> io::Result<Option<Content>> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let Some(path) = self.content_path(sha256) else {
            return Ok(None);
        };
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(err),
        };
        let len = file.metadata().await?.len();
        let mut head = [0u8; 16];
        let mut filled = 0;
        while filled < head.len() {
            match file.read(&mut head[filled..]).await? {
                0 => break,
                n => filled += n,
            }
        }
        file.seek(io::SeekFrom::Start(0)).await?;
        Ok(Some(Content {
            file,
            len,
            content_type: content_type(&head[..filled]),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn content_is_stored_once_and_linked_by_job() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let (sha, new) = store.put(b"picture").await.unwrap();
        assert!(new);
        assert_eq!(store.put(b"picture").await.unwrap(), (sha.clone(), false));
        assert_eq!(store.usage().unwrap(), Usage { files: 1, bytes: 7 });
        let link = store.link_job("job-1", 0, &sha, "png").await.unwrap();
        assert_eq!(std::fs::read(&link).unwrap(), b"picture");
        store.link_job("job-1", 0, &sha, "png").await.unwrap();
        assert_eq!(store.get(&sha).await.unwrap().unwrap(), &b"picture"[..]);
        assert!(store.get(&"0".repeat(64)).await.unwrap().is_none());
        assert!(store.get("../../etc/passwd").await.unwrap().is_none());
        assert!(store.link_job("../x", 0, &sha, "png").await.is_err());
    }

    #[tokio::test]
    async fn temporary_files_a_crash_left_go_at_open_and_fresh_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let old = dir.path().join("tmp/abc.crashed");
        let fresh = dir.path().join("tmp/def.writing");
        std::fs::write(&old, b"half").unwrap();
        std::fs::write(&fresh, b"half").unwrap();
        let long_ago = std::time::SystemTime::now() - 2 * ORPHAN_AGE;
        std::fs::File::options()
            .write(true)
            .open(&old)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
        ArtifactStore::open(dir.path()).unwrap();
        assert!(!old.exists() && fresh.exists());
        assert_eq!(store.remove_orphans(std::time::Duration::ZERO).unwrap(), 1);
        assert_eq!(store.usage().unwrap(), Usage::default());
    }

    #[tokio::test]
    async fn a_collected_file_goes_with_its_job_links_unless_stored_again_since() {
        use std::time::{Duration, SystemTime};
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let (old, _) = store.put(b"old output").await.unwrap();
        let (kept, _) = store.put(b"uploaded again").await.unwrap();
        store.link_job("job-1", 0, &old, "png").await.unwrap();
        let long_ago = SystemTime::now() - Duration::from_secs(30 * 86_400);
        for sha in [&old, &kept] {
            std::fs::File::options()
                .write(true)
                .open(store.content_path(sha).unwrap())
                .unwrap()
                .set_modified(long_ago)
                .unwrap();
        }
        let contents = store.contents().unwrap();
        assert_eq!(contents.len(), 2);
        assert!(
            contents
                .iter()
                .all(|c| c.modified < SystemTime::now() - Duration::from_secs(86_400))
        );
        // A plan is made now; then `kept` is stored again.
        let planned = SystemTime::now() - Duration::from_secs(1);
        store.put(b"uploaded again").await.unwrap();
        let links = store.job_links().unwrap();
        assert_eq!(
            store.collect(&old, planned, &links).unwrap(),
            Collected::Removed {
                bytes: 10,
                links: 1
            }
        );
        assert!(
            !dir.path().join("jobs/job-1").exists(),
            "the emptied job directory goes"
        );
        assert_eq!(
            store.collect(&kept, planned, &links).unwrap(),
            Collected::Fresh
        );
        assert_eq!(
            store.get(&kept).await.unwrap().unwrap(),
            &b"uploaded again"[..]
        );
        assert_eq!(
            store.collect(&old, planned, &links).unwrap(),
            Collected::Gone
        );
        assert_eq!(
            store.usage().unwrap(),
            Usage {
                files: 1,
                bytes: 14
            }
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert!(store.collect("../x", planned, &links).is_err());
    }

    #[tokio::test]
    async fn content_opens_for_streaming_with_its_length_and_type() {
        use tokio::io::AsyncReadExt;
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let png = png::encode_rgb(2, 1, &[255, 0, 0, 0, 255, 0], &[]);
        let (sha, _) = store.put(&png).await.unwrap();
        let mut content = store.open_content(&sha).await.unwrap().unwrap();
        assert_eq!(content.len, png.len() as u64);
        assert_eq!(content.content_type, "image/png");
        let mut read = Vec::new();
        content.file.read_to_end(&mut read).await.unwrap();
        assert_eq!(read, png, "read from the start, not after the sniffed head");
        let (short, _) = store.put(b"hi").await.unwrap();
        let content = store.open_content(&short).await.unwrap().unwrap();
        assert_eq!(content.content_type, "application/octet-stream");
        assert!(store.open_content(&"0".repeat(64)).await.unwrap().is_none());
        assert!(
            store
                .open_content("../../etc/passwd")
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(content_type(&[0xff, 0xd8, 0xff, 0xe0]), "image/jpeg");
        assert_eq!(content_type(b"\0\0\0\x20ftypisom\0\0\x02\0"), "video/mp4");
        assert_eq!(content_type(b"RIFF\x24\x08\0\0WAVEfmt "), "audio/wav");
        assert_eq!(
            content_type(b"1\n00:00:00,000 --> "),
            "application/octet-stream"
        );
    }
}
