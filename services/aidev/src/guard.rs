//! What the model may touch: paths inside the job's worktree only — never an absolute path,
//! `..`, a link leading out, `.git`, `.env` files, private keys and credentials, or anything
//! the configured deny list matches. A refusal says why, and the job records it.

use std::path::{Component, Path, PathBuf};

use globset::{Glob, GlobSet, GlobSetBuilder};

/// File names that hold secrets by convention, refused whatever the deny list says.
const SECRET_NAMES: &[&str] = &[
    ".env",
    ".env.*",
    "*.pem",
    "*.key",
    "*.p12",
    "*.pfx",
    "id_rsa*",
    "id_ed25519*",
    "id_ecdsa*",
    "id_dsa*",
    ".netrc",
    ".npmrc",
    ".pypirc",
    "*.kdbx",
    "credentials",
    "credentials.*",
];

pub(crate) struct Guard {
    root: PathBuf,
    secrets: GlobSet,
    deny: GlobSet,
}

fn globs(patterns: &[String]) -> Result<GlobSet, String> {
    let mut set = GlobSetBuilder::new();
    for pattern in patterns {
        set.add(Glob::new(pattern).map_err(|err| format!("deny pattern {pattern:?}: {err}"))?);
    }
    set.build().map_err(|err| err.to_string())
}

/// Those of `files` (relative paths) that the deny list or the secret names match — what the
/// control plane checks of a change carried out elsewhere.
pub(crate) fn denied_among(deny: &[String], files: &[String]) -> Result<Vec<String>, String> {
    let secrets: Vec<String> = SECRET_NAMES.iter().map(|s| (*s).to_owned()).collect();
    let (secrets, deny) = (globs(&secrets)?, globs(deny)?);
    Ok(files
        .iter()
        .filter(|f| {
            deny.is_match(f.as_str()) || secrets.is_match(f.rsplit('/').next().unwrap_or(f))
        })
        .cloned()
        .collect())
}

impl Guard {
    /// A guard for the worktree at `root` (canonical) with the repository's deny list (globs
    /// relative to the worktree, e.g. `secrets/**`, `*.sqlite`).
    pub(crate) fn new(root: &Path, deny: &[String]) -> Result<Guard, String> {
        let root = root
            .canonicalize()
            .map_err(|err| format!("the worktree {} is not there: {err}", root.display()))?;
        let secrets: Vec<String> = SECRET_NAMES.iter().map(|s| (*s).to_owned()).collect();
        Ok(Guard {
            root,
            secrets: globs(&secrets)?,
            deny: globs(deny)?,
        })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the deny list (or the secret names) match a relative path.
    pub(crate) fn denied(&self, relative: &str) -> bool {
        let name = relative.rsplit('/').next().unwrap_or(relative);
        self.deny.is_match(relative) || self.secrets.is_match(name)
    }

    /// `asked` (relative to the worktree; `""` or `.` is its root) as a path inside it and its
    /// clean relative form, or why it may not be touched.
    pub(crate) fn check(&self, asked: &str) -> Result<(PathBuf, String), String> {
        let asked = asked.trim();
        if asked.starts_with('/') || asked.starts_with('~') || asked.contains('\0') {
            return Err(format!(
                "{asked:?} is outside the worktree: paths are relative to the repository's root"
            ));
        }
        let mut parts: Vec<String> = Vec::new();
        for component in Path::new(asked).components() {
            match component {
                Component::CurDir => {}
                Component::Normal(part) => {
                    let part = part.to_string_lossy().into_owned();
                    if part == ".git" {
                        return Err(format!(
                            "{asked:?} is inside .git, which is not for the model"
                        ));
                    }
                    parts.push(part);
                }
                Component::ParentDir => {
                    return Err(format!("{asked:?} leads outside the worktree (..)"));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(format!("{asked:?} is outside the worktree"));
                }
            }
        }
        let relative = parts.join("/");
        if !relative.is_empty() && self.denied(&relative) {
            return Err(format!(
                "{relative:?} is a secret or on the deny list: it is neither read nor written"
            ));
        }
        let full = self.root.join(&relative);
        // A link inside the worktree may point out of it: the nearest existing ancestor, resolved,
        // must still be inside.
        let mut existing = full.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(&self.root);
        }
        let resolved = existing
            .canonicalize()
            .map_err(|err| format!("{relative:?}: {err}"))?;
        if !resolved.starts_with(&self.root) {
            return Err(format!("{relative:?} leads outside the worktree (a link)"));
        }
        Ok((full, relative))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_worktree_is_reachable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("out")).unwrap();
        let guard = Guard::new(dir.path(), &["secrets/**".to_owned()]).unwrap();
        assert_eq!(guard.check("./src/lib.rs").unwrap().1, "src/lib.rs");
        assert_eq!(guard.check("").unwrap().1, "");
        for (asked, says) in [
            ("../x", "outside the worktree (..)"),
            ("src/../../x", "outside the worktree (..)"),
            ("/etc/passwd", "outside the worktree"),
            (".git/config", "inside .git"),
            (".env", "secret or on the deny list"),
            ("config/.env.production", "secret or on the deny list"),
            ("keys/id_ed25519", "secret or on the deny list"),
            ("tls/server.key", "secret or on the deny list"),
            ("secrets/db.txt", "secret or on the deny list"),
            ("out/passwd", "outside the worktree (a link)"),
        ] {
            let err = guard.check(asked).unwrap_err();
            assert!(err.contains(says), "{asked}: {err}");
        }
    }
}
