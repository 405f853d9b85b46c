# Sourced by .ci/install-cores and .ci/install-clients: `apt_install PKG...` installs Debian
# packages, running `apt-get update` once, only when some package has no install candidate.
# The sourcing script defines `log`.
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_UPDATED=0
apt_install() {
    local pkg
    for pkg in "$@"; do
        if ! apt-cache show "$pkg" >/dev/null 2>&1 \
            || apt-cache policy "$pkg" | grep -q 'Candidate: (none)'; then
            if [ "$APT_UPDATED" -eq 0 ]; then
                log "apt-get update"
                $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq
                APT_UPDATED=1
            fi
        fi
    done
    log "apt-get install $*"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$@" >/dev/null
}
