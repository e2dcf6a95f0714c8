#!/usr/bin/env bash
# Create .bench/dimos-venv holding DimOS 0.0.15's RerunWebSocketServer, the
# benchmark baseline. Idempotent: a venv whose marker matches this script's
# package list and bench/dimos-constraints.txt is left as it is.
#
# DimOS is installed with --no-deps because its full dependency tree (torch,
# open3d, agents, ...) is huge and the WebSocket server needs none of it; the
# list below is what importing the server module actually pulls in. The
# constraints file pins the versions the baseline was measured with.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIMOS_VENV:-$ROOT/.bench/dimos-venv}"
# DimOS 0.0.15 wants Python >=3.10,<3.13.
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
CONSTRAINTS="$ROOT/bench/dimos-constraints.txt"

DIMOS_PIN="dimos==0.0.15"
DEPS=(
  dimos-lcm lcm reactivex pydantic pydantic-settings "plum-dispatch==2.5.7"
  "structlog<26" websockets numpy typing_extensions annotation-protocol
  lazy_loader python-dotenv eclipse-zenoh psutil sortedcontainers
)
MARKER="$VENV/.bench-spec"
SPEC="$DIMOS_PIN ${DEPS[*]} $(sha256sum "$CONSTRAINTS" | cut -d' ' -f1)"

if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$SPEC" ]]; then
  echo "dimos venv up to date: $VENV"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --no-deps "$DIMOS_PIN"
"$VENV/bin/pip" install --quiet -c "$CONSTRAINTS" "${DEPS[@]}"
echo "(pip's complaints about DimOS requirements not installed are expected: --no-deps)"
# Fail here, not in the middle of a benchmark, if the import chain lacks a package.
"$VENV/bin/python" -c "import dimos.visualization.rerun.websocket_server"
echo "$SPEC" > "$MARKER"
echo "dimos venv ready: $VENV"
