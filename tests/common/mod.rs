//! Shared test helpers: a copy of a fixture network in a temporary directory,
//! and the real `branchguard` binary run against it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

pub struct Fixture {
    pub dir: TempDir,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Fixture {
    /// A copy of `tests/fixtures/base`: a valid two-branch network.
    pub fn base() -> Fixture {
        Fixture::from(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/base"))
    }

    /// A copy of the repository's bundled example network.
    pub fn bundled() -> Fixture {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            root.join("branchguard.yaml"),
            dir.path().join("branchguard.yaml"),
        )
        .unwrap();
        copy_dir(&root.join("playbooks"), &dir.path().join("playbooks"));
        copy_dir(&root.join("drills"), &dir.path().join("drills"));
        Fixture { dir }
    }

    pub fn from(src: &Path) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(src, dir.path());
        Fixture { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> &Self {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
        self
    }

    pub fn remove(&self, rel: &str) -> &Self {
        std::fs::remove_file(self.path(rel)).unwrap();
        self
    }

    /// `branchguard ARGS` run inside the fixture directory.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = Command::cargo_bin("branchguard")
            .unwrap()
            .current_dir(self.dir.path())
            .args(args)
            .output()
            .unwrap();
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// The `file:line:col: message` lines printed.
    pub fn error_lines(&self) -> Vec<&str> {
        self.stderr
            .lines()
            .filter(|l| !l.ends_with("error(s)"))
            .collect()
    }
}
