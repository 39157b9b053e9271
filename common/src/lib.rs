//! Small things every crate above `events` shares and none of which is NATS, Postgres or HTTP:
//! [`Secret`] (a configuration value that never prints), the Prometheus [`metrics::Registry`],
//! one [`Backoff`] for every retry loop, the hex, SHA-256 and random-token helpers, and private (0600) files.

mod backoff;
mod bucket;
pub mod metrics;
pub mod process;
mod secret;

pub use backoff::Backoff;
pub use bucket::Bucket;
pub use secret::{Dsn, Secret};

/// Writes `bytes` to a new file at `path` that only its owner may read or write (mode 0600),
/// creating its folder first; never overwrites an existing file (`AlreadyExists`).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `bytes` in lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The bytes `text` spells in hex (either case), or `None` when it is not hex.
pub fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(bytes))
}

/// Whether `s` is a lower-case hex SHA-256 (so it is safe as a path component).
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `bytes` random bytes from the operating system, in lower-case hex (tokens, tickets).
pub fn random_hex(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(hex(&buf))
}

/// `scheme://user:password@host/…` with the password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            let user = credentials.split(':').next().unwrap_or_default();
            format!("{}{user}:****{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_and_hashes() {
        assert_eq!(super::hex(&[0, 15, 255]), "000fff");
        assert_eq!(super::unhex("000fFF"), Some(vec![0, 15, 255]));
        assert_eq!(super::unhex("abc"), None);
        assert_eq!(super::unhex("zz"), None);
        assert_eq!(super::unhex("é1"), None);
        let empty = super::sha256_hex(b"");
        assert_eq!(
            empty,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(super::is_sha256(&empty));
        assert!(!super::is_sha256(&empty.to_uppercase()));
        let a = super::random_hex(32).unwrap();
        assert!(a.len() == 64 && a != super::random_hex(32).unwrap());
    }

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(
            super::redact_url("postgres://nebula:secret@db:5432/nebula"),
            "postgres://nebula:****@db:5432/nebula"
        );
        assert_eq!(
            super::redact_url("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
