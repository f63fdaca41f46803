# shellcheck shell=bash
# scripts/lib/podman.sh: podman on a Debian bookworm machine without Docker,
# set up the same way for every script that runs containers here
# (scripts/compose-test.sh, scripts/fresh-test.sh). Sourced, not run.
#
# The caller defines log MESSAGE and die MESSAGE (die exits), runs as root,
# and may set beforehand:
#   cache    the cache directory (the debootstrap tarball lives there)
#   mirror   the Debian mirror for debootstrap and the images
# Every function is idempotent: a second run finds everything in place.

cache="${cache:-${H2PG_COMPOSE_CACHE:-/var/cache/h2pg-compose}}"
mirror="${mirror:-${H2PG_DEBIAN_MIRROR:-http://deb.debian.org/debian}}"

# The local base image, under the name a Dockerfile's FROM uses.
debian_tag=docker.io/library/debian:bookworm-slim

# podman_install_packages [PACKAGE...]: installs podman, its runtime and
# network stack and debootstrap, plus the given packages, those missing only.
podman_install_packages() {
    local packages=(podman runc netavark aardvark-dns iptables debootstrap "$@") missing=() p
    for p in "${packages[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]]; then
            missing+=("$p")
        fi
    done
    if [[ ${#missing[@]} -gt 0 ]]; then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get update -q
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

# podman_containers_conf: writes /etc/containers/containers.conf (runc,
# cgroupfs, file events, ulimits that fit, netavark). The defaults and crun
# fail on some machines. netavark is named because podman otherwise picks
# its network backend once, at its first use: CNI if netavark was not
# installed yet, and CNI here has no DNS between the containers of a
# compose project. A file that is not ours is kept as *.before-h2pg.
podman_containers_conf() {
    local conf=/etc/containers/containers.conf want
    want='# Written by h2pg scripts/lib/podman.sh (podman as a Docker engine here).
# The default limits and crun fail on such machines; there is no systemd,
# so cgroups are managed directly and events go to a file.
[containers]
default_ulimits = ["nofile=16384:16384", "nproc=16384:16384"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[network]
network_backend = "netavark"'
    if [[ ! -f "$conf" || "$(cat "$conf")" != "$want" ]]; then
        mkdir -p /etc/containers
        # older versions of this file named scripts/compose-test.sh
        if [[ -s "$conf" ]] && ! grep -q "h2pg scripts/" "$conf"; then
            log "keeping the previous $conf as $conf.before-h2pg"
            cp -n "$conf" "$conf.before-h2pg"
        fi
        printf '%s\n' "$want" >"$conf"
        log "wrote $conf"
    fi
}

# podman_debian_image: makes $debian_tag unless it exists (ours from an
# earlier run, or a real one: either is used as it is). debootstrap
# --variant=minbase, made to look like the official image where it matters
# to a Dockerfile: apt sources with updates and security, no daemons started
# by package installs, no package cache. The tarball stays in $cache, so
# only the import is repeated when podman's storage was emptied.
podman_debian_image() {
    mkdir -p "$cache"
    if podman image exists "$debian_tag"; then
        log "$debian_tag: cached"
        return 0
    fi
    local tarball="$cache/debian-bookworm-minbase.tar" out
    out="$(mktemp "${TMPDIR:-/tmp}/h2pg-podman-lib.XXXXXX")"
    if [[ ! -s "$tarball" ]]; then
        local dir="$cache/rootfs.tmp"
        rm -rf "$dir"
        log "debootstrap --variant=minbase bookworm (once; kept in $tarball)"
        nice -n 10 debootstrap --variant=minbase bookworm "$dir" "$mirror" >"$out" 2>&1 || {
            tail -n 30 "$out" >&2
            rm -f "$out"
            die "debootstrap failed"
        }
        rm -f "$dir/etc/apt/sources.list"
        cat >"$dir/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
        printf '#!/bin/sh\n# no daemons start while an image is built\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
        chmod 755 "$dir/usr/sbin/policy-rc.d"
        rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/lib/apt/lists/* "$dir"/var/log/* "$dir"/tmp/*
        tar --numeric-owner -C "$dir" -cf "$tarball.tmp" .
        mv "$tarball.tmp" "$tarball"
        rm -rf "$dir"
    fi
    log "importing $tarball as $debian_tag"
    podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' \
        "$tarball" "$debian_tag" >"$out" 2>&1 || {
        cat "$out" >&2
        rm -f "$out"
        die "podman import failed"
    }
    rm -f "$out"
}
