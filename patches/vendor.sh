#!/usr/bin/env bash
# Carried patches: each vendored tree patches/<crate> is exactly
#
#   the crates.io release pinned in patches/VERSIONS (checksum verified)
#   - files a path dependency does not need (see `shape` below)
#   + patches/<crate>.diff
#   + patches/<crate>/PATCH.md (ours: what the change is and why)
#
# Usage:
#   patches/vendor.sh check [CRATE|all]    verify the trees (CI runs this)
#   patches/vendor.sh rebuild CRATE|all    recreate the trees from the pinned
#                                          release plus the diff
#   patches/vendor.sh diff CRATE|all       rewrite <crate>.diff from the
#                                          vendored tree (after editing it)
#   CRATE: one of those listed in patches/VERSIONS (h2, hyper).
#
# Moving to a new upstream release: edit the version in patches/VERSIONS and
# clear its checksum (`-`), run `patches/vendor.sh rebuild <crate>` (it fills
# in the checksum of the downloaded .crate), resolve any rejected hunks by
# hand in patches/<crate> (`*.rej` files), run `patches/vendor.sh diff
# <crate>`, update PATCH.md, `cargo update -p <crate>`, build, test, commit.
#
# Needs only cargo (with its default CARGO_HOME and registry configuration),
# git, tar, sha256sum and diff: the pristine source is the .crate that cargo
# downloads for a throwaway manifest depending on `<crate> = "=<version>"`.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cargo="${CARGO:-cargo}"

die() {
    echo "vendor.sh: $*" >&2
    exit 1
}

usage() {
    sed -n '/^# Usage:/,/^#$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

work="$(mktemp -d "${TMPDIR:-/tmp}/switchyard-vendor.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# pin CRATE: sets version and sha (or "-") from patches/VERSIONS.
pin() {
    [ -f "$here/VERSIONS" ] || die "patches/VERSIONS is missing"
    version="$(awk -v c="$1" '$1 == c { print $2 }' "$here/VERSIONS")"
    sha="$(awk -v c="$1" '$1 == c { print $3 }' "$here/VERSIONS")"
    [ -n "$version" ] || die "$1 is not listed in patches/VERSIONS"
    [ -n "$sha" ] || sha="-"
}

# fetch CRATE VERSION SHA256 DEST: unpacks the pristine crates.io release into
# DEST (which must not exist). The .crate file is the one cargo downloaded
# and verified against the registry index; its SHA-256 must also match the
# pin, so a changed registry or a tampered cache is caught. With SHA256 "-"
# (a new version being pinned) any checksum is taken; FETCHED_SHA has it.
fetch() {
    local crate="$1" version="$2" sha="$3" dest="$4"
    local m="$work/fetch-$crate"
    mkdir -p "$m"
    : >"$m/lib.rs"
    cat >"$m/Cargo.toml" <<EOF
[package]
name = "switchyard-vendor-fetch"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "lib.rs"

[dependencies]
$crate = { version = "=$version", default-features = false }

[workspace]
EOF
    local meta manifest
    # cargo metadata resolves the manifest and downloads (and unpacks) every
    # package in the resolve, this one included, into CARGO_HOME.
    meta="$("$cargo" metadata --quiet --format-version 1 --manifest-path "$m/Cargo.toml")" ||
        die "cargo could not fetch $crate $version from the registry"
    manifest="$(printf '%s' "$meta" | grep -o "\"manifest_path\":\"[^\"]*/$crate-$version/Cargo.toml\"" | head -n 1 |
        sed 's/^"manifest_path":"//; s/"$//')"
    [ -n "$manifest" ] || die "cargo metadata did not report a registry source for $crate $version"
    # .../registry/src/<index>/<crate>-<version>/Cargo.toml
    #  -> .../registry/cache/<index>/<crate>-<version>.crate
    local unpacked index registry file
    unpacked="$(dirname "$manifest")"
    index="$(basename "$(dirname "$unpacked")")"
    registry="$(dirname "$(dirname "$(dirname "$unpacked")")")"
    file="$registry/cache/$index/$crate-$version.crate"
    [ -f "$file" ] || die "$file is missing (cargo unpacked $unpacked but kept no .crate)"
    local actual
    actual="$(sha256sum "$file" | cut -d ' ' -f 1)"
    if [ "$sha" != "-" ] && [ "$actual" != "$sha" ]; then
        die "$file has sha256 $actual, but patches/VERSIONS pins $sha"
    fi
    mkdir -p "$work/unpack-$crate"
    tar -xzf "$file" -C "$work/unpack-$crate"
    [ -d "$work/unpack-$crate/$crate-$version" ] || die "$file does not hold $crate-$version/"
    mv "$work/unpack-$crate/$crate-$version" "$dest"
    FETCHED_SHA="$actual"
}

# shape DIR: keeps only what building the crate as a path dependency needs
# (the library source, its manifest, license, readme and changelog) and drops
# the manifest's example, bench and test targets, whose files are not kept.
# Registry metadata (.cargo_vcs_info.json, Cargo.toml.orig, Cargo.lock) and
# upstream's CI and contributor files go too.
shape() {
    local dir="$1" entry
    for entry in "$dir"/* "$dir"/.[!.]*; do
        [ -e "$entry" ] || continue
        case "$(basename "$entry")" in
        Cargo.toml | LICENSE* | README.md | CHANGELOG.md | src | build.rs) ;;
        *) rm -rf "$entry" ;;
        esac
    done
    awk '
        /^\[\[(example|bench|test)\]\][[:space:]]*$/ { skip = 1; next }
        /^\[/ { skip = 0 }
        !skip { print }
    ' "$dir/Cargo.toml" >"$dir/Cargo.toml.shaped"
    mv "$dir/Cargo.toml.shaped" "$dir/Cargo.toml"
}

# apply DIR DIFF [git-apply options]: applies DIFF (paths a/..., b/...) in DIR.
apply() {
    local dir="$1" diff="$2"
    shift 2
    # GIT_CEILING_DIRECTORIES: DIR is never taken for part of a repository.
    (cd "$dir" && GIT_CEILING_DIRECTORIES="$(dirname "$dir")" git apply -p1 --whitespace=nowarn "$@" "$diff")
}

# expected CRATE DEST: DEST = pinned release, shaped, plus the diff.
expected() {
    local crate="$1" dest="$2" version sha
    pin "$crate"
    [ -f "$here/$crate.diff" ] || die "patches/$crate.diff is missing"
    fetch "$crate" "$version" "$sha" "$dest"
    shape "$dest"
    apply "$dest" "$here/$crate.diff" ||
        die "patches/$crate.diff does not apply to $crate $version"
}

check_one() {
    local crate="$1" version sha
    pin "$crate"
    [ "$sha" != "-" ] ||
        die "patches/VERSIONS pins no sha256 for $crate; run patches/vendor.sh rebuild $crate"
    local tree="$here/$crate"
    [ -d "$tree" ] || die "patches/$crate is missing; run patches/vendor.sh rebuild $crate"
    expected "$crate" "$work/expected-$crate"
    local out
    if ! out="$(diff -r -x PATCH.md "$work/expected-$crate" "$tree" 2>&1)"; then
        printf '%s\n' "$out" | sed "s#$work/expected-$crate#<$crate $version + $crate.diff>#g" | head -n 60 >&2
        die "patches/$crate is not $crate $version plus patches/$crate.diff (see above).
  To discard the vendored edits:      patches/vendor.sh rebuild $crate
  To keep them (update the diff):     patches/vendor.sh diff $crate"
    fi
    [ -f "$tree/PATCH.md" ] || die "patches/$crate/PATCH.md is missing"
    head -n 1 "$tree/PATCH.md" | grep -q "^# $crate $version," ||
        die "patches/$crate/PATCH.md does not start with '# $crate $version, ...' (keep it current)"
    echo "ok: patches/$crate is $crate $version + patches/$crate.diff"
}

rebuild_one() {
    local crate="$1" version sha
    pin "$crate"
    [ -f "$here/$crate.diff" ] || die "patches/$crate.diff is missing"
    local new="$work/new-$crate" status=0
    fetch "$crate" "$version" "$sha" "$new"
    shape "$new"
    if ! apply "$new" "$here/$crate.diff" 2>"$work/apply.log"; then
        status=1
        rm -rf "$new"
        fetch "$crate" "$version" "$sha" "$new"
        shape "$new"
        apply "$new" "$here/$crate.diff" --reject 2>>"$work/apply.log" || true
    fi
    if [ -f "$here/$crate/PATCH.md" ]; then
        cp "$here/$crate/PATCH.md" "$new/PATCH.md"
    fi
    rm -rf "$here/$crate"
    cp -R "$new" "$here/$crate"
    if [ "$sha" = "-" ]; then
        awk -v c="$crate" -v s="$FETCHED_SHA" '$1 == c && $3 == "-" { sub(/-[[:space:]]*$/, s) } { print }' \
            "$here/VERSIONS" >"$work/VERSIONS"
        cp "$work/VERSIONS" "$here/VERSIONS"
        echo "pinned: $crate $version, sha256 $FETCHED_SHA (patches/VERSIONS)"
    fi
    if [ "$status" -ne 0 ]; then
        cat "$work/apply.log" >&2
        die "patches/$crate.diff does not apply cleanly to $crate $version.
  The hunks that applied are in patches/$crate; the rest are in patches/$crate/**/*.rej.
  Resolve them by hand, delete the .rej files, then run: patches/vendor.sh diff $crate"
    fi
    echo "rebuilt: patches/$crate = $crate $version + patches/$crate.diff"
}

diff_one() {
    local crate="$1" version sha
    pin "$crate"
    local tree="$here/$crate"
    [ -d "$tree" ] || die "patches/$crate is missing"
    local leftovers
    leftovers="$(find "$tree" -name '*.rej' -o -name '*.orig')"
    [ -z "$leftovers" ] || die "remove these first: $leftovers"
    mkdir -p "$work/diff-$crate"
    fetch "$crate" "$version" "$sha" "$work/diff-$crate/a"
    shape "$work/diff-$crate/a"
    cp -R "$tree" "$work/diff-$crate/b"
    rm -f "$work/diff-$crate/b/PATCH.md"
    {
        echo "Switchyard's change to $crate; see patches/$crate/PATCH.md."
        echo "Applied by patches/vendor.sh to the crates.io release pinned in patches/VERSIONS;"
        echo "regenerate with: patches/vendor.sh diff $crate"
        echo
        (cd "$work/diff-$crate" &&
            git -c core.quotepath=false diff --no-index --no-prefix --no-color --no-ext-diff \
                --no-textconv --no-renames --diff-algorithm=myers a b) || [ $? -eq 1 ]
    } >"$work/$crate.diff"
    grep -q '^diff --git ' "$work/$crate.diff" ||
        die "patches/$crate is identical to $crate $version; nothing is patched (drop it instead?)"
    cp "$work/$crate.diff" "$here/$crate.diff"
    echo "wrote: patches/$crate.diff ($(grep -c '^diff --git ' "$here/$crate.diff") files)"
}

# crates_of all|CRATE: the crates listed in patches/VERSIONS, or CRATE if it
# is one of them.
crates_of() {
    local listed
    listed="$(awk '!/^#/ && NF { print $1 }' "$here/VERSIONS")"
    case "${1:-}" in
    all) echo "$listed" ;;
    "") usage ;;
    *) printf '%s\n' "$listed" | grep -qx -- "$1" || die "$1 is not listed in patches/VERSIONS"; echo "$1" ;;
    esac
}

[ $# -ge 1 ] || usage
mode="$1"
shift
case "$mode" in
check)
    [ $# -le 1 ] || usage
    for crate in $(crates_of "${1:-all}"); do check_one "$crate"; done
    ;;
rebuild)
    [ $# -eq 1 ] || usage
    for crate in $(crates_of "$1"); do rebuild_one "$crate"; done
    ;;
diff)
    [ $# -eq 1 ] || usage
    for crate in $(crates_of "$1"); do diff_one "$crate"; done
    ;;
*) usage ;;
esac
