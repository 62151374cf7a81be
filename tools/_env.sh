# Shared by tools/main and tools/test: make sure a Python >= 3.11 with venv exists, then a project
# venv in .venv with the package installed. Idempotent; installs only what is missing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
    if [ ! -f /tmp/.virtio-ref-apt-updated ]; then as_root apt-get update -qq && touch /tmp/.virtio-ref-apt-updated; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
PY="${PYTHON:-python3}"
if ! command -v "$PY" >/dev/null || ! "$PY" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    apt_install python3 python3-venv python3-pip
    PY=python3
fi
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
VPY="$ROOT/.venv/bin/python"
stamp=".venv/.installed-$(sha1sum < pyproject.toml | cut -c1-12)-${EXTRAS:-base}"
if [ ! -f "$stamp" ]; then
    target="."; [ -n "${EXTRAS:-}" ] && target=".[${EXTRAS}]"
    if ! { "$VPY" -m pip install -q --upgrade pip && "$VPY" -m pip install -q -e "$target"; } >.venv/install.log 2>&1; then
        cat .venv/install.log >&2; echo "tools: installing the package failed (log above)" >&2; exit 1
    fi
    touch "$stamp"
fi
