//! Building an image on the node from a commit of a git repository: the repository fetched
//! into a cache under the agent's state directory (git2; fetched again only when the commit is
//! not there yet), the commit's tree sent to the engine as the build context, the build's own
//! output kept (its tail) for the deploy run.

use std::path::{Path, PathBuf};

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// Most of a build's output kept.
const OUTPUT_TAIL: usize = 8 * 1024;

/// Builds `image` from `commit` of `repo`; the build's output tail, or why it failed.
pub(crate) async fn build(
    docker: &bollard::Docker,
    cache: PathBuf,
    image: &str,
    repo: &str,
    commit: &str,
    dockerfile: &str,
) -> Result<String, String> {
    let (repo_owned, commit_owned) = (repo.to_owned(), commit.to_owned());
    let context = tokio::task::spawn_blocking(move || context(&cache, &repo_owned, &commit_owned))
        .await
        .map_err(|err| format!("the build context could not be made: {err}"))??;
    let options = BuildImageOptionsBuilder::default()
        .dockerfile(dockerfile)
        .t(image)
        .rm(true)
        .forcerm(true)
        .build();
    let mut stream = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    let mut output = String::new();
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(text) = info.stream {
                    output.push_str(&text);
                }
                let failed = info.error_detail.and_then(|detail| detail.message);
                if let Some(error) = failed {
                    return Err(format!("the build failed: {error}\n{}", tail(&output)));
                }
            }
            Err(err) => {
                return Err(format!(
                    "the build failed: {}\n{}",
                    supervise::target::docker_message(&err),
                    tail(&output)
                ));
            }
        }
    }
    Ok(format!(
        "built {image} from {}\n{}",
        &commit[..12.min(commit.len())],
        tail(&output)
    ))
}

fn tail(output: &str) -> &str {
    let mut start = output.len().saturating_sub(OUTPUT_TAIL);
    while !output.is_char_boundary(start) {
        start += 1;
    }
    output[start..].trim()
}

/// The commit's tree as a tar archive (the build context).
fn context(cache: &Path, repo: &str, commit: &str) -> Result<Vec<u8>, String> {
    let dir = cache.join(format!("{:016x}", fnv(repo)));
    let repository = if dir.exists() {
        Repository::open_bare(&dir)
    } else {
        std::fs::create_dir_all(&dir)
            .map_err(|err| format!("cannot make the build cache {}: {err}", dir.display()))?;
        Repository::init_bare(&dir)
    }
    .map_err(|err| format!("the build cache {} is unusable: {err}", dir.display()))?;
    let oid = Oid::from_str(commit).map_err(|err| format!("commit {commit}: {err}"))?;
    if repository.find_commit(oid).is_err() {
        let mut remote = repository
            .remote_anonymous(repo)
            .map_err(|err| format!("repository {repo}: {err}"))?;
        remote
            .fetch(
                &[
                    "+refs/heads/*:refs/remotes/origin/*",
                    "+refs/tags/*:refs/tags/*",
                ],
                None,
                None,
            )
            .map_err(|err| format!("fetching {repo} failed: {}", err.message()))?;
    }
    let found = repository
        .find_commit(oid)
        .map_err(|_| format!("commit {commit} is not in {repo}"))?;
    let tree = found.tree().map_err(|err| err.message().to_owned())?;
    // (path, blob, mode) of every file, then the archive.
    let mut files = Vec::new();
    tree.walk(TreeWalkMode::PreOrder, |root, entry| {
        if entry.kind() == Some(ObjectType::Blob) {
            files.push((
                format!("{root}{}", entry.name().unwrap_or_default()),
                entry.id(),
                entry.filemode(),
            ));
        }
        TreeWalkResult::Ok
    })
    .map_err(|err| err.message().to_owned())?;
    let mut archive = tar::Builder::new(Vec::new());
    for (path, id, mode) in files {
        let blob = repository
            .find_blob(id)
            .map_err(|err| format!("{path}: {}", err.message()))?;
        let mut header = tar::Header::new_gnu();
        if mode == 0o120_000 {
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            header.set_mode(0o777);
            let target = String::from_utf8_lossy(blob.content()).into_owned();
            archive
                .append_link(&mut header, &path, target)
                .map_err(|err| format!("{path}: {err}"))?;
        } else {
            header.set_size(blob.content().len() as u64);
            header.set_mode(if mode == 0o100_755 { 0o755 } else { 0o644 });
            archive
                .append_data(&mut header, &path, blob.content())
                .map_err(|err| format!("{path}: {err}"))?;
        }
    }
    archive
        .into_inner()
        .map_err(|err| format!("the build context could not be written: {err}"))
}

/// FNV-1a: a stable short name for a repository's cache directory.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}
