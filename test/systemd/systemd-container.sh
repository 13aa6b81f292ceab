#!/bin/bash
# systemd-container.sh - boot a real systemd (PID 1 of its own systemd-nspawn container)
# on a host that is not itself running systemd, so that tests can install units and drive
# them with systemctl / journalctl as an operator would. Needs root and Debian's packages.
#
#   systemd-container.sh up        build rootfs if missing, boot, wait for running/degraded
#   systemd-container.sh exec CMD  run CMD inside the container (all namespaces, clean env)
#   systemd-container.sh status    show whether it is up, and its PIDs
#   systemd-container.sh down      clean halt (SIGTERM -> systemd halts), bounded, then cleanup
#   systemd-container.sh build     only build the rootfs (~40 s the first time, ~160 MB)
#   systemd-container.sh destroy   down + delete rootfs
#
# Put host-built binaries inside with SYSD_NSPAWN_ARGS="--bind-ro=/abs/build/dir:/opt/app";
# write unit files to $SYSD_DIR/root/etc/systemd/system and run `exec systemctl daemon-reload`.
# The container has its own network namespace: test traffic runs inside it (exec curl ...).
#
# Environment knobs (all optional):
#   SYSD_DIR=/tmp/sysd            work dir (rootfs at $SYSD_DIR/root)
#   SYSD_MACHINE=sysdtest         container name/hostname
#   SYSD_CGROUP=unified|hybrid|legacy   cgroup layout inside the container (default unified = pure v2)
#   SYSD_NSPAWN_ARGS="..."        extra nspawn args, e.g. "--bind-ro=/path/to/build:/opt/app"
#   SYSD_BOOT_TIMEOUT=60          seconds to wait for is-system-running
#   SYSD_MIRROR=URL               Debian mirror (default: the first URIs:/deb line of the host's apt sources)
#
# This copy: from ../shared/tools/systemd-container.sh (the team's shared tools, outside this
# repository), unchanged below this paragraph, so that CI on a clean clone has it. test/systemd
# runs it with SYSD_DIR=/var/tmp/procswitch-sysd and SYSD_MACHINE=procswitch-sysd.
set -euo pipefail

SYSD_DIR=${SYSD_DIR:-/tmp/sysd}
ROOT=$SYSD_DIR/root
MACHINE=${SYSD_MACHINE:-sysdtest}
CGMODE=${SYSD_CGROUP:-unified}
BOOT_TIMEOUT=${SYSD_BOOT_TIMEOUT:-60}
host_mirror() { # the host's own Debian mirror, as apt is configured here
    { grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
      grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'; } | grep -v security | head -1 || true
}
MIRROR=${SYSD_MIRROR:-$(host_mirror)}
PIDFILE=$SYSD_DIR/nspawn.pid
LEADERFILE=$SYSD_DIR/leader.pid
LOG=$SYSD_DIR/nspawn.log
# dedicated cgroup so nspawn's payload/supervisor cgroups do not land in the host's root cgroup
CG=sysd-nspawn-$MACHINE
CG_HIER=(/sys/fs/cgroup/systemd /sys/fs/cgroup/unified)

log() { echo "[systemd-container] $*" >&2; }

ensure_tools() {
    local need=()
    command -v systemd-nspawn >/dev/null || need+=(systemd-container)
    command -v debootstrap   >/dev/null || need+=(debootstrap)
    command -v nsenter       >/dev/null || need+=(util-linux)
    if ((${#need[@]})); then
        log "installing ${need[*]}"
        timeout 300 apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q "${need[@]}" >/dev/null
    fi
}

build() {
    ensure_tools
    if [ -f "$ROOT/.rootfs-complete" ]; then log "rootfs present: $ROOT"; return 0; fi
    [ -e "$ROOT" ] && { log "removing incomplete rootfs"; rm -rf --one-file-system "$ROOT"; }
    mkdir -p "$SYSD_DIR"
    log "debootstrap bookworm -> $ROOT (~40s)"
    local t0=$SECONDS
    # procps provides /bin/kill (for ExecReload=/bin/kill -HUP $MAINPID); minbase lacks it
    timeout 900 debootstrap --variant=minbase --include=systemd,systemd-sysv,dbus,procps \
        bookworm "$ROOT" "$MIRROR" > "$SYSD_DIR/debootstrap.log" 2>&1 \
        || { log "debootstrap failed, see $SYSD_DIR/debootstrap.log"; exit 1; }
    # slim down: apt caches are not needed inside a test container
    rm -rf "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
    # no console login prompt needed; keep boot log quiet and quick
    ln -sf /dev/null "$ROOT/etc/systemd/system/console-getty.service"
    touch "$ROOT/.rootfs-complete"
    log "rootfs built in $((SECONDS - t0))s, size $(du -sh --one-file-system "$ROOT" | cut -f1)"
}

nspawn_pid() { # prints live nspawn pid or fails
    [ -f "$PIDFILE" ] || return 1
    local p; p=$(cat "$PIDFILE")
    [ -n "$p" ] && [ -d /proc/$p ] && grep -q systemd-nspawn /proc/$p/cmdline 2>/dev/null && echo "$p"
}

leader_pid() {
    local n; n=$(nspawn_pid) || return 1
    local l; l=$(pgrep -P "$n" | head -1) || return 1
    [ "$(cat /proc/$l/comm 2>/dev/null)" = systemd ] && echo "$l"
}

# run a command inside the container: all namespaces of the container's PID 1, clean environment
cexec() {
    local l; l=$(leader_pid) || { log "container not running"; return 1; }
    nsenter -t "$l" -a env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0 LANG=C.UTF-8 "$@"
}

up() {
    build
    if nspawn_pid >/dev/null; then log "already running (nspawn pid $(nspawn_pid))"; wait_ready; return; fi
    cleanup_cgroups
    local envv
    case $CGMODE in
        unified) envv=SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 ;;
        legacy)  envv=SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=0 ;;
        hybrid)  envv=SYSTEMD_NSPAWN_UNUSED=1 ;;  # nspawn auto-detect on this hybrid host
        *) log "bad SYSD_CGROUP=$CGMODE"; exit 2 ;;
    esac
    for h in "${CG_HIER[@]}"; do [ -d "$h" ] && mkdir -p "$h/$CG"; done
    T0=$(date +%s.%N)
    # --register=no / --keep-unit: there is no host systemd/machined to talk to.
    # --private-network: container gets only its own loopback.
    # --link-journal=no: never touch the host's /var/log/journal.
    # shellcheck disable=SC2086
    ( for h in "${CG_HIER[@]}"; do [ -d "$h/$CG" ] && echo $BASHPID > "$h/$CG/cgroup.procs"; done
      exec env "$envv" setsid systemd-nspawn -D "$ROOT" -M "$MACHINE" \
        --register=no --keep-unit --private-network --link-journal=no --console=read-only \
        ${SYSD_NSPAWN_ARGS:-} -b </dev/null >"$LOG" 2>&1 ) &
    echo $! > "$PIDFILE"
    disown || true
    log "nspawn pid $(cat "$PIDFILE"), log $LOG"
    wait_ready
}

wait_ready() {
    local deadline=$((SECONDS + BOOT_TIMEOUT)) st="" l=""
    while ((SECONDS < deadline)); do
        # the background subshell needs a moment before it has exec()ed nspawn: test liveness by pid
        if [ ! -d "/proc/$(cat "$PIDFILE" 2>/dev/null)" ]; then log "nspawn exited; tail of $LOG:"; tail -20 "$LOG" >&2 || true; return 1; fi
        if l=$(leader_pid); then
            st=$(timeout 5 nsenter -t "$l" -a systemctl is-system-running 2>/dev/null) || true
            case $st in running|degraded) break ;; esac
        fi
        sleep 0.1
    done
    case $st in
        running|degraded) ;;
        *) log "timeout after ${BOOT_TIMEOUT}s, state='$st'"; return 1 ;;
    esac
    echo "$l" > "$LEADERFILE"
    if [ -n "${T0:-}" ]; then log "boot-to-$st: $(awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2fs", b-a}')"; fi
    log "state: $st; leader (container PID 1) = $l"
    cat >&2 <<EOF
Run commands inside:
  $0 exec systemctl status
  nsenter -t \$(cat $LEADERFILE) -a systemctl ...        # equivalent, raw
Files: rootfs is $ROOT (write units to $ROOT/etc/systemd/system, then exec systemctl daemon-reload)
Teardown:
  $0 down
EOF
}

cleanup_cgroups() {
    for h in "${CG_HIER[@]}"; do
        [ -d "$h/$CG" ] && find "$h/$CG" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done
}

down() {
    local n l
    if n=$(nspawn_pid); then
        l=$(leader_pid || true)
        log "halting container (SIGTERM to nspawn $n -> clean shutdown)"
        kill -TERM "$n" 2>/dev/null || true
        timeout 30 tail --pid="$n" -f /dev/null || {
            log "still alive, second SIGTERM (immediate termination)"; kill -TERM "$n" 2>/dev/null || true
            timeout 10 tail --pid="$n" -f /dev/null || {
                log "SIGKILL nspawn $n and leader ${l:-?}"
                kill -KILL "$n" 2>/dev/null || true
                [ -n "$l" ] && kill -KILL "$l" 2>/dev/null || true
                timeout 10 tail --pid="$n" -f /dev/null || true; }; }
    else
        log "not running"
    fi
    rm -f "$PIDFILE" "$LEADERFILE"
    cleanup_cgroups
    rmdir "/run/systemd/nspawn/propagate/$MACHINE" 2>/dev/null || true
}

case ${1:-up} in
    build)   build ;;
    up)      up ;;
    exec)    shift; cexec "$@" ;;
    status)  if n=$(nspawn_pid); then echo "up: nspawn=$n leader=$(leader_pid || echo '?') state=$(cexec systemctl is-system-running || true)"; else echo down; exit 3; fi ;;
    down)    down ;;
    destroy) down; rm -rf --one-file-system "$ROOT" ;;
    *) echo "usage: $0 {up|exec CMD...|status|down|build|destroy}" >&2; exit 2 ;;
esac
