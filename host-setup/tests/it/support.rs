//! Test support: fixture paths, copying a bundle and applying a small table of edits to it.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::Value;

/// The fixture directory of a healthy bundle (`snp-xe7745`, `tdx-host`).
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/facts")
        .join(name)
}

/// One change to a bundle, as a host with that problem would differ from the healthy one.
#[derive(Debug, Clone, Copy)]
pub enum Edit {
    /// Replace the whole file.
    Write(&'static str, &'static str),
    /// Replace every occurrence of a text (which must occur).
    Replace(&'static str, &'static str, &'static str),
    /// Replace the first occurrence of a text (which must occur).
    ReplaceFirst(&'static str, &'static str, &'static str),
    /// Remove every line containing a text (which must occur).
    RemoveLines(&'static str, &'static str),
    /// Cut the file before a text (which must occur).
    TruncateAt(&'static str, &'static str),
    /// Replace a symlink's target.
    Link(&'static str, &'static str),
    /// Remove a path and list it in facts.json `absent`.
    Absent(&'static str),
    /// Remove `<dir>/<entry>/<name>` for every entry of `dir` and list each as absent.
    AbsentEach(&'static str, &'static str),
    /// Remove a path and record it in facts.json `failed` with the reason.
    Failed(&'static str, &'static str),
    /// Remove a path and record it in facts.json `unreadable` with the reason.
    Unreadable(&'static str, &'static str),
}

/// Copies `from` into `to` (symlinks stay symlinks).
pub fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.expect("walking the fixture");
        let rel = entry.path().strip_prefix(from).expect("below the fixture");
        let target = to.join(rel);
        if entry.path_is_symlink() {
            let link = fs::read_link(entry.path()).expect("reading a fixture link");
            std::os::unix::fs::symlink(link, &target).expect("copying a link");
        } else if entry.file_type().is_dir() {
            fs::create_dir_all(&target).expect("creating a directory");
        } else {
            fs::copy(entry.path(), &target).expect("copying a file");
        }
    }
}

fn remove(path: &Path) {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.is_dir() => fs::remove_dir_all(path).expect("removing a dir"),
        Ok(_) => fs::remove_file(path).expect("removing a file"),
        Err(_) => panic!("the edit names {}, which the fixture lacks", path.display()),
    }
}

fn edit_text(dir: &Path, rel: &str, change: impl FnOnce(&str) -> String) {
    let path = dir.join(rel);
    let text = fs::read_to_string(&path).unwrap_or_else(|err| panic!("{rel}: {err}"));
    fs::write(&path, change(&text)).expect("writing an edited file");
}

#[track_caller]
fn must_contain(rel: &str, text: &str, needle: &str) {
    assert!(
        text.contains(needle),
        "the edit expects {needle:?} in {rel}: the fixture changed"
    );
}

/// Applies `edits` to the bundle in `dir`.
pub fn apply(dir: &Path, edits: &[Edit]) {
    let meta_path = dir.join("facts.json");
    let mut meta: Value =
        serde_json::from_str(&fs::read_to_string(&meta_path).expect("reading facts.json"))
            .expect("parsing facts.json");
    let mut mark = |list: &str, rel: &str, reason: Option<&str>| match reason {
        None => meta[list]
            .as_array_mut()
            .expect("absent is a list")
            .push(Value::from(rel)),
        Some(reason) => {
            meta[list]
                .as_object_mut()
                .expect("a map")
                .insert(rel.to_owned(), Value::from(reason));
        }
    };
    for edit in edits {
        match *edit {
            Edit::Write(rel, text) => {
                let path = dir.join(rel);
                fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
                fs::write(path, text).expect("writing");
            }
            Edit::Replace(rel, from, to) => edit_text(dir, rel, |text| {
                must_contain(rel, text, from);
                text.replace(from, to)
            }),
            Edit::ReplaceFirst(rel, from, to) => edit_text(dir, rel, |text| {
                must_contain(rel, text, from);
                text.replacen(from, to, 1)
            }),
            Edit::RemoveLines(rel, needle) => edit_text(dir, rel, |text| {
                must_contain(rel, text, needle);
                text.lines()
                    .filter(|line| !line.contains(needle))
                    .map(|line| format!("{line}\n"))
                    .collect()
            }),
            Edit::TruncateAt(rel, needle) => edit_text(dir, rel, |text| {
                must_contain(rel, text, needle);
                text[..text.find(needle).expect("checked")].to_owned()
            }),
            Edit::Link(rel, target) => {
                let path = dir.join(rel);
                fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
                let _ = fs::remove_file(&path);
                std::os::unix::fs::symlink(target, path).expect("linking");
            }
            Edit::Absent(rel) => {
                remove(&dir.join(rel));
                mark("absent", rel, None);
            }
            Edit::AbsentEach(parent, name) => {
                let mut entries: Vec<_> = fs::read_dir(dir.join(parent))
                    .expect("listing")
                    .map(|entry| entry.expect("entry").file_name())
                    .collect();
                entries.sort();
                for entry in entries {
                    let rel = format!("{parent}/{}/{name}", entry.to_string_lossy());
                    if fs::symlink_metadata(dir.join(&rel)).is_ok() {
                        remove(&dir.join(&rel));
                        mark("absent", &rel, None);
                    }
                }
            }
            Edit::Failed(rel, reason) => {
                remove(&dir.join(rel));
                mark("failed", rel, Some(reason));
            }
            Edit::Unreadable(rel, reason) => {
                remove(&dir.join(rel));
                mark("unreadable", rel, Some(reason));
            }
        }
    }
    fs::write(
        &meta_path,
        serde_json::to_string_pretty(&meta).expect("serializing"),
    )
    .expect("writing facts.json");
}

/// A copy of the healthy bundle `base` with `edits` applied, in a temporary directory.
pub fn variant(base: &str, edits: &[Edit]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    copy_tree(&fixture(base), dir.path());
    apply(dir.path(), edits);
    dir
}
