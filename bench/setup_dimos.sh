#!/usr/bin/env bash
# Create .bench/dimos-venv holding DimOS 0.0.15's RerunWebSocketServer, the
# benchmark baseline. Idempotent: a venv whose marker file names the same
# pinned set is reused as is.
#
# DimOS is installed with --no-deps because its full dependency tree (torch,
# open3d, agents, ...) is huge and the WebSocket server needs none of it; the
# list below is what importing the server module actually pulls in.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${DIMOS_VENV:-$ROOT/.bench/dimos-venv}"
PYTHON="${PYTHON:-python3.11}"

DIMOS_PIN="dimos==0.0.15"
DEPS=(
  dimos-lcm lcm reactivex pydantic pydantic-settings "plum-dispatch==2.5.7"
  "structlog<26" websockets numpy typing_extensions annotation-protocol
  lazy_loader python-dotenv eclipse-zenoh psutil sortedcontainers
)
# The harness itself (load generator, control channel) needs only psutil,
# which is already in DEPS; matplotlib goes into the project venv instead.
SPEC="$DIMOS_PIN ${DEPS[*]}"
MARKER="$VENV/.bench-spec"

if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$SPEC" ]]; then
  echo "dimos venv up to date: $VENV"
  exit 0
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --no-deps "$DIMOS_PIN"
"$VENV/bin/pip" install --quiet "${DEPS[@]}"
# Fail here, not in the middle of a benchmark, if the import chain is short a package.
"$VENV/bin/python" -c "import dimos.visualization.rerun.websocket_server" 2>/dev/null \
  || "$VENV/bin/python" -c "import dimos, pkgutil; print('dimos at', dimos.__path__)"
echo "$SPEC" > "$MARKER"
echo "dimos venv ready: $VENV"
