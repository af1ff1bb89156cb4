#!/usr/bin/env bash
# hack/python-venv.sh REQUIREMENTS: prints the path of a Python venv holding the packages of that
# requirements file (pip, from PyPI), creating it first when missing. Venvs live in the cache,
# never in the repository, keyed by the file's name and digest: a changed file gets a new venv,
# an unchanged one costs nothing. Used by tests/emulator.rs for Microsoft's own clients.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

requirements="${1:?usage: python-venv.sh REQUIREMENTS_FILE}"
[ -f "$requirements" ] || die "no requirements file $requirements"
digest="$(sha256sum "$requirements" | cut -c1-16)"
venv="$CACHE_ROOT/pyenv-$(basename "$requirements" .txt)-$digest"
mkdir -p "$CACHE_ROOT"
# Tests run in parallel: one of them builds, the others wait for it.
exec 9>"$venv.lock"
flock 9
if [ ! -e "$venv/.complete" ]; then
  python="${PYTHON:-python3}"
  command -v "$python" >/dev/null || die "python3 is needed for the client compatibility tests"
  rm -rf "$venv"
  log "creating the Python venv $venv from $requirements"
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" >&2
  touch "$venv/.complete"
fi
printf '%s\n' "$venv"
