//! Building an image on the node from a commit of a git repository: the repository fetched
//! into a cache under the agent's state directory (git2; fetched again only when the commit is
//! not there yet), the commit's tree sent to the engine as the build context — or, for an app
//! with a build command, written to a scratch folder where the command runs (`sh -c`, with
//! `NEBULA_IMAGE`, `NEBULA_COMMIT` and the node's `DOCKER_HOST`) and must leave the image; the
//! build's own output kept (its tail) for the deploy run.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

/// Most of a build's output kept.
const OUTPUT_TAIL: usize = 8 * 1024;

/// How long a build command may run before it is killed (with everything it started).
const COMMAND_LIMIT: Duration = Duration::from_secs(3600);

/// What to build, and from where.
pub(crate) struct BuildOrder<'a> {
    pub image: &'a str,
    pub repo: &'a str,
    pub commit: &'a str,
    pub dockerfile: &'a str,
    pub command: Option<&'a str>,
}

/// Builds `order.image` from its commit; the build's output tail, or why it failed.
pub(crate) async fn build(
    docker: &bollard::Docker,
    docker_host: &str,
    cache: PathBuf,
    order: BuildOrder<'_>,
) -> Result<String, String> {
    let BuildOrder {
        image,
        repo,
        commit,
        dockerfile,
        command,
    } = order;
    let (repo_owned, commit_owned) = (repo.to_owned(), commit.to_owned());
    let context = tokio::task::spawn_blocking(move || context(&cache, &repo_owned, &commit_owned))
        .await
        .map_err(|err| format!("the build context could not be made: {err}"))??;
    if let Some(command) = command {
        let output = run_command(command, context, image, commit, docker_host).await?;
        docker.inspect_image(image).await.map_err(|err| {
            format!(
                "the build command left no image {image} ({})\n{}",
                supervise::target::docker_message(&err),
                tail(&output)
            )
        })?;
        return Ok(format!(
            "built {image} from {} by its command\n{}",
            &commit[..12.min(commit.len())],
            tail(&output)
        ));
    }
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

/// Runs a build command in the commit's files (unpacked from `context`): its output (both
/// streams, the tail kept), or why it failed.
async fn run_command(
    command: &str,
    context: Vec<u8>,
    image: &str,
    commit: &str,
    docker_host: &str,
) -> Result<String, String> {
    use tokio::io::AsyncReadExt;
    let scratch = tempfile::Builder::new()
        .prefix("nebula-build-")
        .tempdir()
        .map_err(|err| format!("no scratch folder for the build: {err}"))?;
    let dir = scratch.path().to_owned();
    tokio::task::spawn_blocking(move || tar::Archive::new(&context[..]).unpack(&dir))
        .await
        .map_err(|err| format!("the checkout could not be written: {err}"))?
        .map_err(|err| format!("the checkout could not be written: {err}"))?;
    let mut child = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("exec 2>&1\n{command}"))
        .current_dir(scratch.path())
        .env("NEBULA_IMAGE", image)
        .env("NEBULA_COMMIT", commit)
        .env("DOCKER_HOST", docker_host)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| format!("the build command could not start: {err}"))?;
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut output = Vec::new();
    let read = async {
        let mut buffer = [0u8; 8192];
        loop {
            match stdout.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    output.extend_from_slice(&buffer[..n]);
                    if output.len() > 4 * OUTPUT_TAIL {
                        output.drain(..output.len() - 2 * OUTPUT_TAIL);
                    }
                }
            }
        }
        child.wait().await
    };
    let status = match tokio::time::timeout(COMMAND_LIMIT, read).await {
        Ok(status) => status.map_err(|err| format!("the build command was lost: {err}"))?,
        Err(_) => {
            // The whole group: whatever the command started goes with it.
            let pid = child.id();
            if let Err(err) = common::process::stop_group(&mut child, pid, Duration::ZERO).await {
                tracing::warn!(error = %err, "a build command past its time was not stopped");
            }
            return Err(format!(
                "the build command ran past {} s and was killed",
                COMMAND_LIMIT.as_secs()
            ));
        }
    };
    let output = String::from_utf8_lossy(&output).into_owned();
    if !status.success() {
        return Err(format!(
            "the build command failed ({status})\n{}",
            tail(&output)
        ));
    }
    Ok(output)
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
