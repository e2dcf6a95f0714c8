#!/usr/bin/env bash
# Install the Debian packages that viewer-bridge's tests need.
#
#   sudo bash scripts/system-deps.sh
#
# Idempotent: when every package is already installed (checked with
# dpkg-query) it touches apt not at all and exits 0 in well under a second.
# Otherwise it runs `apt-get update` only when the package lists are missing
# or stale (or when a first install attempt fails), then installs what is
# missing. Run as root; as any other user it prints the command to run and
# exits 1.
set -euo pipefail

PACKAGES=(
    # Headless X server and driving it.
    xvfb xdotool x11-utils x11-xserver-utils
    # Screenshots (`import -window root`).
    imagemagick
    # dimos-viewer renders with Vulkan/GL on llvmpipe (software).
    libgl1-mesa-dri mesa-vulkan-drivers libvulkan1 libegl1 libgl1
    libxkbcommon-x11-0 libxcursor1 libxi6 libxrandr2
    # Other tests: headless browser, terminal-program driving.
    # Playwright's bundled node (its driver) links libatomic.so.1.
    chromium tmux libatomic1
    # Network namespaces and the loopback multicast route for LCM.
    iproute2
)

# Lists older than this many minutes are refreshed before installing.
STALE_MINUTES=$((24 * 60))

missing_packages() {
    local pkg status
    for pkg in "${PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null || true)
        # "ii " = desired install, currently installed, no error flag.
        if [[ "$status" != "ii "* ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

mapfile -t MISSING < <(missing_packages)

if ((${#MISSING[@]} == 0)); then
    echo "system-deps: all ${#PACKAGES[@]} packages already installed"
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "system-deps: missing packages: ${MISSING[*]}" >&2
    echo "system-deps: run as root:  sudo bash $0" >&2
    echo "system-deps: or directly:  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${MISSING[*]}" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive

lists_are_fresh() {
    # True when at least one Packages index exists and is newer than the limit.
    local fresh
    fresh=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' \
        -mmin "-$STALE_MINUTES" -print -quit 2>/dev/null || true)
    [[ -n "$fresh" ]]
}

apt_install() {
    apt-get install -y -q --no-install-recommends "${MISSING[@]}"
}

echo "system-deps: installing: ${MISSING[*]}"
updated=0
if ! lists_are_fresh; then
    echo "system-deps: apt lists missing or stale: apt-get update"
    apt-get update -q
    updated=1
fi

if ! apt_install; then
    if ((updated)); then
        echo "system-deps: apt-get install failed" >&2
        exit 1
    fi
    echo "system-deps: install failed; refreshing lists and retrying"
    apt-get update -q
    apt_install
fi

mapfile -t STILL_MISSING < <(missing_packages)
if ((${#STILL_MISSING[@]} != 0)); then
    echo "system-deps: still missing after install: ${STILL_MISSING[*]}" >&2
    exit 1
fi
echo "system-deps: done"
