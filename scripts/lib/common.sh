# Shared by scripts/test, scripts/demo and scripts/bench*: find Swift, install what is missing.
# shellcheck shell=bash

if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH=/opt/swift/usr/bin:$PATH
fi

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# ensure_apt PACKAGE...: installs the Debian packages that are not installed yet.
ensure_apt() {
    local missing=()
    for package in "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing ${missing[*]}"
        if [ "$(id -u)" -ne 0 ]; then
            echo "error: run as root, or install these Debian packages first: ${missing[*]}" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# ensure_pip MODULE SPEC: installs a Python package when its module does not import.
ensure_pip() {
    local module=$1 spec=$2
    if ! python3 -c "import $module" >/dev/null 2>&1; then
        log "installing $spec from PyPI"
        python3 -m pip install -q "$spec"
    fi
}

# The packages every build needs.
ensure_build_dependencies() {
    ensure_apt pkg-config libzstd-dev libssl-dev libsqlite3-dev zstd
    if ! command -v swift >/dev/null 2>&1; then
        echo "error: Swift 6 is not installed (expected at /opt/swift or on PATH)" >&2
        exit 1
    fi
}

# PostgreSQL's server binaries (initdb, pg_ctl) live outside PATH on Debian.
postgres_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/initdb" ] && { echo "$dir"; return; }
    done
    dirname "$(command -v initdb)"
}
