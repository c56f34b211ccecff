#!/usr/bin/env bash
# `make deb`: build callgate_<version>_<arch>.deb into DIST (default dist/), with dpkg-buildpackage and
# dh-virtualenv (packaging/debian/rules says what goes where).
#
#   VERSION=0.0.1 packaging/build-deb.sh    an older (or newer) build: the version is also written into
#                                           the staged pyproject.toml, so `callgate --version` says it
#
# The version is pyproject.toml's (PEP 440), spelt so that dpkg orders versions as pip does
# (1.2.0rc1 -> 1.2.0~rc1, before 1.2.0; --debian-version shows the spelling). The build runs in a
# staged copy under build/deb/, so the work tree gets no debian/ folder and no build litter. pip keeps
# the downloaded wheels in its cache (~/.cache/pip); with PyPI near, a build without it took 22 s
# against 20 s.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DIST=$(realpath -m "${DIST:-dist}")

# A PEP 440 version spelt for dpkg: a pre-release or development release sorts before its release.
debian_version() {
    local v
    # 1.2.0.dev3 -> 1.2.0~~dev3 (before every pre-release), 1.2.0rc1 -> 1.2.0~rc1, 1.2.0rc1.dev2 ->
    # 1.2.0~rc1~dev2, 1.2.0.post1 as it is (after 1.2.0).
    v=$(printf '%s' "$1" | sed -E 's/^([0-9]+(\.[0-9]+)*)\.?dev([0-9]*)$/\1~~dev\3/;
        s/^([0-9]+(\.[0-9]+)*)\.?(a|b|rc)([0-9]*)/\1~\3\4/; s/([^~])\.?dev([0-9]*)$/\1~dev\2/')
    [[ $v =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || { echo "build-deb: cannot spell version $1 for Debian" >&2; return 2; }
    printf '%s\n' "$v"
}
if [[ ${1:-} == --debian-version ]]; then  # packaging/build-deb.sh --debian-version 1.2.0rc1: 1.2.0~rc1
    debian_version "$2"
    exit
fi

PYPROJECT_VERSION=$(/usr/bin/python3 -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
VERSION=${VERSION:-$PYPROJECT_VERSION}
DEB_VERSION=$(debian_version "$VERSION")

STAGE=$ROOT/build/deb/$DEB_VERSION
SRC=$STAGE/callgate-$DEB_VERSION
rm -rf "$STAGE"
mkdir -p "$SRC" "$DIST"
# What the package is made of, and nothing else (no .venv, caches or build output).
tar -C "$ROOT" --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
    -cf - pyproject.toml setup.py README.md callgate dialplan docs examples packaging | tar -C "$SRC" -xf -
cp -r packaging/debian "$SRC/debian"
cp packaging/callgate.service "$SRC/debian/callgate.service"
cp packaging/logrotate/callgate "$SRC/debian/callgate.logrotate"
if [[ $VERSION != "$PYPROJECT_VERSION" ]]; then
    sed -i -E "s/^version = \".*\"$/version = \"$VERSION\"/" "$SRC/pyproject.toml"
fi
cat >"$SRC/debian/changelog" <<CHANGES
callgate ($DEB_VERSION) bookworm; urgency=medium

  * callgate $VERSION, built by make deb from $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo "a source tree").

 -- callgate maintainers <maintainers@users.noreply.h-seed-aa17340e.example>  $(date -R)
CHANGES

# The venv must be made by Debian's python3, never by one earlier on PATH (pyenv, /usr/local).
(cd "$SRC" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b -us -uc)
mv "$STAGE"/callgate_"$DEB_VERSION"_*.deb "$DIST"/
ls "$DIST"/callgate_"$DEB_VERSION"_*.deb
