//! The git side of a job (git2, nothing shelled out): its branch made from the base's head and
//! checked out in a worktree of its own; the files the model wrote committed there (only those:
//! nothing a build left behind); the diff against the base; the merge into the base —
//! fast-forward when the base has not moved, else a merge commit naming the job — and the
//! revert of a merged change. The base moves only with a compare-and-swap of its ref, and a
//! checked-out base is updated in its working tree too, never over uncommitted changes.

use std::collections::BTreeSet;
use std::path::Path;

use git2::{
    BranchType, Commit, DiffFormat, DiffOptions, Oid, Repository, Signature, WorktreeAddOptions,
    WorktreePruneOptions, build::CheckoutBuilder,
};

fn err(context: &str) -> impl Fn(git2::Error) -> String + '_ {
    move |error| format!("{context}: {}", error.message())
}

fn signature() -> Result<Signature<'static>, String> {
    Signature::now("Nebula AI developer", "ai-dev@nebula.invalid").map_err(err("signature"))
}

/// The head of branch `base` in `repo`.
pub(crate) fn base_head(repo: &Repository, base: &str) -> Result<Oid, String> {
    let branch = repo
        .find_branch(base, BranchType::Local)
        .map_err(|_| format!("the repository has no branch {base}"))?;
    branch
        .get()
        .target()
        .ok_or_else(|| format!("branch {base} points at nothing"))
}

/// The job's branch at `base`'s head, checked out in a worktree at `path` (named `name`); one
/// made before (a resumed job) is used as it is. The base commit the branch started from.
pub(crate) fn prepare(
    repo_path: &Path,
    base: &str,
    branch: &str,
    path: &Path,
    name: &str,
) -> Result<String, String> {
    let repo = Repository::open(repo_path).map_err(|e| {
        format!(
            "the repository {} cannot be opened: {}",
            repo_path.display(),
            e.message()
        )
    })?;
    let start = match repo.find_branch(branch, BranchType::Local) {
        Ok(existing) => {
            let tip = existing.get().peel_to_commit().map_err(err("branch"))?;
            // Resumed: the branch started at its first parent chain's meeting with the base.
            let base_tip = base_head(&repo, base)?;
            repo.merge_base(tip.id(), base_tip)
                .map_err(err("merge base"))?
        }
        Err(_) => {
            let head = base_head(&repo, base)?;
            let commit = repo.find_commit(head).map_err(err("base commit"))?;
            repo.branch(branch, &commit, false)
                .map_err(err("making the branch"))?;
            head
        }
    };
    if !path.exists() {
        let reference = repo
            .find_reference(&format!("refs/heads/{branch}"))
            .map_err(err("branch ref"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot make {}: {e}", parent.display()))?;
        }
        let mut options = WorktreeAddOptions::new();
        options.reference(Some(&reference));
        repo.worktree(name, path, Some(&options))
            .map_err(err("making the worktree"))?;
    }
    Ok(start.to_string())
}

/// A commit on the job's branch, and what it changed against its parent.
#[derive(Debug, Clone)]
pub(crate) struct Committed {
    pub commit: String,
    pub files: Vec<String>,
    pub added: u32,
    pub removed: u32,
}

/// Commits `paths` (relative; a path no longer there is a deletion) in the worktree on its
/// branch; `None` when they change nothing.
pub(crate) fn commit_paths(
    worktree: &Path,
    paths: &BTreeSet<String>,
    message: &str,
) -> Result<Option<Committed>, String> {
    let repo = Repository::open(worktree).map_err(err("the worktree"))?;
    let mut index = repo.index().map_err(err("index"))?;
    for path in paths {
        if worktree.join(path).is_file() {
            index.add_path(Path::new(path)).map_err(err(path))?;
        } else {
            let _ = index.remove_path(Path::new(path));
        }
    }
    index.write().map_err(err("index"))?;
    let tree_id = index.write_tree().map_err(err("tree"))?;
    let head = repo
        .head()
        .and_then(|h| h.peel_to_commit())
        .map_err(err("HEAD"))?;
    if head.tree_id() == tree_id {
        return Ok(None);
    }
    let tree = repo.find_tree(tree_id).map_err(err("tree"))?;
    let who = signature()?;
    let commit = repo
        .commit(Some("HEAD"), &who, &who, message, &tree, &[&head])
        .map_err(err("commit"))?;
    let (files, added, removed) = changes(&repo, head.id(), commit)?;
    Ok(Some(Committed {
        commit: commit.to_string(),
        files,
        added,
        removed,
    }))
}

/// Files changed from `old` to `new`, with lines added and removed.
fn changes(repo: &Repository, old: Oid, new: Oid) -> Result<(Vec<String>, u32, u32), String> {
    let diff = tree_diff(repo, old, new)?;
    let stats = diff.stats().map_err(err("diff"))?;
    let files = diff
        .deltas()
        .filter_map(|d| d.new_file().path().or(d.old_file().path()))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    Ok((
        files,
        u32::try_from(stats.insertions()).unwrap_or(u32::MAX),
        u32::try_from(stats.deletions()).unwrap_or(u32::MAX),
    ))
}

fn tree_diff(repo: &Repository, old: Oid, new: Oid) -> Result<git2::Diff<'_>, String> {
    let old = repo
        .find_commit(old)
        .and_then(|c| c.tree())
        .map_err(err("old tree"))?;
    let new = repo
        .find_commit(new)
        .and_then(|c| c.tree())
        .map_err(err("new tree"))?;
    let mut options = DiffOptions::new();
    options.context_lines(3);
    repo.diff_tree_to_tree(Some(&old), Some(&new), Some(&mut options))
        .map_err(err("diff"))
}

/// The unified diff from `old` to `new`.
pub(crate) fn diff_text(repo_path: &Path, old: &str, new: &str) -> Result<String, String> {
    let repo = Repository::open(repo_path).map_err(err("repository"))?;
    let old = Oid::from_str(old).map_err(err("commit"))?;
    let new = Oid::from_str(new).map_err(err("commit"))?;
    let diff = tree_diff(&repo, old, new)?;
    let mut text = String::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            text.push(line.origin());
        }
        text.push_str(&String::from_utf8_lossy(line.content()));
        true
    })
    .map_err(err("diff"))?;
    Ok(text)
}

/// Moves branch `base` from `from` to `to` (refused when it moved meanwhile), updating the
/// working tree when `base` is what the repository has checked out (refused over uncommitted
/// changes there).
fn move_base(
    repo: &Repository,
    base: &str,
    from: Oid,
    to: Oid,
    message: &str,
) -> Result<(), String> {
    let name = format!("refs/heads/{base}");
    let checked_out = !repo.is_bare()
        && repo
            .head()
            .ok()
            .and_then(|h| h.name().ok().map(str::to_owned))
            .is_some_and(|head| head == name);
    if checked_out {
        let mut options = git2::StatusOptions::new();
        options.include_untracked(false).include_ignored(false);
        let dirty = repo
            .statuses(Some(&mut options))
            .map_err(err("status"))?
            .iter()
            .any(|s| s.status() != git2::Status::CURRENT);
        if dirty {
            return Err(format!(
                "{base} is checked out with uncommitted changes in {}: commit or stash them first",
                repo.workdir()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
        }
        let target = repo.find_commit(to).map_err(err("commit"))?;
        repo.checkout_tree(target.as_object(), Some(CheckoutBuilder::new().safe()))
            .map_err(err("updating the checked-out base"))?;
    }
    repo.reference_matching(&name, to, true, from, message)
        .map_err(|e| {
            format!(
                "{base} moved meanwhile (or cannot be updated): {}",
                e.message()
            )
        })?;
    Ok(())
}

/// Merges `commit` into `base`: fast-forward when `base` is an ancestor of it, else a merge
/// commit naming the job (conflicts refuse it). The new head of `base`, and whether it was a
/// fast-forward.
pub(crate) fn merge(
    repo_path: &Path,
    base: &str,
    commit: &str,
    job: &str,
) -> Result<(String, bool), String> {
    let repo = Repository::open(repo_path).map_err(err("repository"))?;
    let head = base_head(&repo, base)?;
    let theirs = Oid::from_str(commit).map_err(err("commit"))?;
    if head == theirs
        || repo
            .graph_descendant_of(theirs, head)
            .map_err(err("graph"))?
    {
        move_base(
            &repo,
            base,
            head,
            theirs,
            &format!("ai-dev {job}: fast-forward"),
        )?;
        return Ok((theirs.to_string(), true));
    }
    let ours_commit = repo.find_commit(head).map_err(err("base"))?;
    let theirs_commit = repo.find_commit(theirs).map_err(err("change"))?;
    let mut index = repo
        .merge_commits(&ours_commit, &theirs_commit, None)
        .map_err(err("merge"))?;
    if index.has_conflicts() {
        return Err(format!(
            "the change conflicts with {base} in: {}",
            conflicted(&index)
        ));
    }
    let tree_id = index.write_tree_to(&repo).map_err(err("merge tree"))?;
    let tree = repo.find_tree(tree_id).map_err(err("merge tree"))?;
    let who = signature()?;
    let message = format!("Merge ai-dev job {job} into {base}\n\nNebula-Ai-Dev-Job: {job}\n");
    let merged = repo
        .commit(
            None,
            &who,
            &who,
            &message,
            &tree,
            &[&ours_commit, &theirs_commit],
        )
        .map_err(err("merge commit"))?;
    move_base(&repo, base, head, merged, &format!("ai-dev {job}: merge"))?;
    Ok((merged.to_string(), false))
}

fn conflicted(index: &git2::Index) -> String {
    index
        .conflicts()
        .map(|conflicts| {
            conflicts
                .flatten()
                .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                .map(|entry| String::from_utf8_lossy(&entry.path).into_owned())
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}

/// Reverts `merged` (a fast-forwarded commit or a merge commit) on `base` with a commit of its
/// own; its id.
pub(crate) fn revert(
    repo_path: &Path,
    base: &str,
    merged: &str,
    job: &str,
) -> Result<String, String> {
    let repo = Repository::open(repo_path).map_err(err("repository"))?;
    let head = base_head(&repo, base)?;
    let head_commit = repo.find_commit(head).map_err(err("base"))?;
    let merged_commit: Commit<'_> = repo
        .find_commit(Oid::from_str(merged).map_err(err("commit"))?)
        .map_err(err("merged commit"))?;
    let mainline = if merged_commit.parent_count() > 1 {
        1
    } else {
        0
    };
    let mut index = repo
        .revert_commit(&merged_commit, &head_commit, mainline, None)
        .map_err(err("revert"))?;
    if index.has_conflicts() {
        return Err(format!(
            "the revert conflicts with later commits on {base} in: {}",
            conflicted(&index)
        ));
    }
    let tree_id = index.write_tree_to(&repo).map_err(err("revert tree"))?;
    let tree = repo.find_tree(tree_id).map_err(err("revert tree"))?;
    let who = signature()?;
    let message = format!(
        "Revert ai-dev job {job}\n\nThis reverts commit {merged}.\n\nNebula-Ai-Dev-Job: {job}\n"
    );
    let reverted = repo
        .commit(None, &who, &who, &message, &tree, &[&head_commit])
        .map_err(err("revert commit"))?;
    move_base(
        &repo,
        base,
        head,
        reverted,
        &format!("ai-dev {job}: revert"),
    )?;
    Ok(reverted.to_string())
}

/// Removes the job's worktree (its folder and git's record of it), and its branch when asked.
pub(crate) fn clean_up(repo_path: &Path, name: &str, branch: Option<&str>) -> Result<(), String> {
    let repo = Repository::open(repo_path).map_err(err("repository"))?;
    if let Ok(worktree) = repo.find_worktree(name) {
        worktree
            .prune(Some(
                WorktreePruneOptions::new()
                    .valid(true)
                    .locked(false)
                    .working_tree(true),
            ))
            .map_err(err("removing the worktree"))?;
    }
    if let Some(branch) = branch
        && let Ok(mut found) = repo.find_branch(branch, BranchType::Local)
    {
        found.delete().map_err(err("deleting the branch"))?;
    }
    Ok(())
}
