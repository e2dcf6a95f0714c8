#!/usr/bin/env bash
# Build a venv holding DimOS 0.0.15. Idempotent: a venv whose marker matches
# this script's package lists and the files below is left as it is.
#
#   bench/setup_dimos.sh                      .bench/dimos-venv: DimOS's
#       RerunWebSocketServer alone, the benchmark baseline.
#   bench/setup_dimos.sh --with-viewer-bridge .bench/dimos-vb-venv: that, plus
#       what DimOS's blueprint coordinator and its worker processes import,
#       plus this checkout installed as viewer-bridge[dimos] (editable), for
#       tests/test_dimos.py.
#
# DimOS is installed with --no-deps because its full dependency tree (torch,
# open3d, agents, ...) is huge and these uses need none of it; the lists below
# are what the imports actually pull in. bench/dimos-constraints.txt pins their
# versions (the ones the baseline was measured with).
#
# viewer-bridge goes in as a guest: its own requirements are installed under a
# constraints file holding every version already in the venv, so pip either
# fits it around DimOS's packages or fails; it never changes one. `pip check`
# and `pip freeze` are recorded before and after (.pip-check-*, .freeze-*) for
# the test that compares them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WITH_VB=0
if [[ "${1:-}" == "--with-viewer-bridge" ]]; then
  WITH_VB=1
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--with-viewer-bridge]" >&2
  exit 2
fi
if (( WITH_VB )); then
  VENV="${DIMOS_VB_VENV:-$ROOT/.bench/dimos-vb-venv}"
else
  VENV="${DIMOS_VENV:-$ROOT/.bench/dimos-venv}"
fi
# DimOS 0.0.15 wants Python >=3.10,<3.13.
PYTHON="${PYTHON:-$(command -v python3.11 || command -v python3)}"
CONSTRAINTS="$ROOT/bench/dimos-constraints.txt"

DIMOS_PIN="dimos==0.0.15"
DEPS=(
  dimos-lcm lcm reactivex pydantic pydantic-settings "plum-dispatch==2.5.7"
  "structlog<26" websockets numpy typing_extensions annotation-protocol
  lazy_loader python-dotenv eclipse-zenoh psutil sortedcontainers
)
# The coordinator imports the Rerun bridge module (toolz) and through it the
# Image message (PyTurboJPEG, at DimOS's own pin) even when no such module is deployed.
COORDINATOR_DEPS=(toolz "PyTurboJPEG==1.8.2")
if (( WITH_VB )); then
  DEPS+=("${COORDINATOR_DEPS[@]}")
fi
MARKER="$VENV/.bench-spec"
SPEC="$DIMOS_PIN ${DEPS[*]} $(sha256sum "$CONSTRAINTS" | cut -d' ' -f1)"
if (( WITH_VB )); then
  SPEC="$SPEC viewer-bridge[dimos] $(cat "$ROOT/pyproject.toml" "$0" | sha256sum | cut -d' ' -f1)"
fi

if [[ -x "$VENV/bin/python" && -f "$MARKER" && "$(cat "$MARKER")" == "$SPEC" ]]; then
  echo "dimos venv up to date: $VENV"
  exit 0
fi

if (( WITH_VB )); then
  # From scratch: "before viewer-bridge" must not hold what an earlier build installed.
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PYTHON" -m venv "$VENV"
fi
rm -f "$MARKER"
PIP=("$VENV/bin/pip" --disable-pip-version-check)
"${PIP[@]}" install --quiet --no-deps "$DIMOS_PIN"
"${PIP[@]}" install --quiet -c "$CONSTRAINTS" "${DEPS[@]}" 2> >(grep -v "^dimos 0.0.15 requires\|^ERROR: pip's dependency resolver" >&2)
echo "(DimOS's own requirements left out by --no-deps are expected to be missing)"
# Fail here, not in the middle of a benchmark, if the import chain lacks a package.
"$VENV/bin/python" -c "import dimos.visualization.rerun.websocket_server"

if (( WITH_VB )); then
  "$VENV/bin/python" -c "import dimos.core.coordination.module_coordinator, dimos.visualization.rerun.bridge"
  # What DimOS's venv looks like before viewer-bridge arrives (pip check exits 1 on --no-deps gaps).
  "${PIP[@]}" check > "$VENV/.pip-check-before" 2>&1 || true
  "${PIP[@]}" freeze --exclude-editable | grep -iv "^viewer.bridge" > "$VENV/.freeze-before" || true
  "${PIP[@]}" install --quiet --no-deps -e "$ROOT"
  # Prints viewer-bridge's requirements with the dimos extra (less DimOS itself,
  # already here), and writes .guest-constraints: every version installed now,
  # plus every requirement DimOS itself declares, as a full DimOS install would hold it.
  mapfile -t VB_DEPS < <("$VENV/bin/python" - "$VENV" <<'EOF'
import sys
from importlib.metadata import requires
from pathlib import Path

from packaging.requirements import Requirement

venv = Path(sys.argv[1])
lines = (venv / ".freeze-before").read_text().splitlines()
for line in requires("dimos") or []:
    req = Requirement(line)
    if req.marker is None or req.marker.evaluate({"extra": ""}):
        req.marker, req.extras = None, set()
        lines.append(str(req))
(venv / ".guest-constraints").write_text("\n".join(lines) + "\n")
for line in requires("viewer-bridge") or []:
    req = Requirement(line)
    if req.name.lower() != "dimos" and (req.marker is None or req.marker.evaluate({"extra": "dimos"})):
        req.marker = None
        print(req)
EOF
)
  rm -f "$VENV/.guest-install-error"
  if (( ${#VB_DEPS[@]} )); then
    if ! "${PIP[@]}" install --quiet -c "$VENV/.guest-constraints" "${VB_DEPS[@]}" \
        > "$VENV/.guest-install-error" 2>&1; then
      # Recorded for tests/test_dimos.py, which fails on it; the module tests still get a venv.
      echo "viewer-bridge[dimos] does not fit DimOS 0.0.15's requirements; see $VENV/.guest-install-error" >&2
      "${PIP[@]}" install --quiet -c "$VENV/.freeze-before" "${VB_DEPS[@]}" \
        2> >(grep -v "^dimos 0.0.15 requires\|^ERROR: pip's dependency resolver" >&2)
    else
      rm -f "$VENV/.guest-install-error"
    fi
  fi
  "${PIP[@]}" check > "$VENV/.pip-check-after" 2>&1 || true
  "${PIP[@]}" freeze --exclude-editable | grep -iv "^viewer.bridge" > "$VENV/.freeze-after" || true
  "$VENV/bin/python" -c "import viewer_bridge.dimos"
fi

echo "$SPEC" > "$MARKER"
echo "dimos venv ready: $VENV"
