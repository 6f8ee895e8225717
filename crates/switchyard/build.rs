//! Records the git commit the binary is built from (`switchyard --version`);
//! `unknown` outside a git checkout.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}

fn main() {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=SWITCHYARD_COMMIT={commit}");
    // Build again when HEAD moves: HEAD itself, the branch it names, packed refs.
    for path in ["HEAD", "packed-refs"] {
        watch(git(&["rev-parse", "--git-path", path]));
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch(git(&["rev-parse", "--git-path", &branch]));
    }
}

/// Reruns when `file` changes; a file that does not exist is not watched
/// (cargo would then rerun on every build).
fn watch(file: Option<String>) {
    match file {
        Some(file) if std::path::Path::new(&file).exists() => {
            println!("cargo:rerun-if-changed={file}");
        }
        _ => println!("cargo:rerun-if-changed=build.rs"),
    }
}
