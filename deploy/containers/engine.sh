#!/usr/bin/env bash
# A private Docker engine for building and running the images (CI and developers without one).
#
#   eval "$(bash deploy/containers/engine.sh start)"   # prints: export DOCKER_HOST=unix://...
#   bash deploy/containers/engine.sh stop
#   bash deploy/containers/engine.sh install           # docker.io + debootstrap (root, apt-get)
#
# It runs its own dockerd (data root, exec root, pidfile and socket of its own; no iptables, no
# bridge: containers use --network host) and never touches a system engine. The data root
# survives between runs ($CONTAINERS_CACHE, default /var/cache/tabular-serving/docker), so base
# images and dependency layers built once are reused; a new machine builds them from nothing.
# Storage driver: overlay2 where the kernel allows it, else vfs (works anywhere, copies layers).
set -euo pipefail

CACHE=${CONTAINERS_CACHE:-/var/cache/tabular-serving/docker}
RUN_DIR=${CONTAINERS_RUN_DIR:-/tmp/tabular-engine}  # short: socket paths are limited to 108 bytes
SOCKET=$RUN_DIR/docker.sock
PIDFILE=$RUN_DIR/dockerd.pid  # dockerd's own
ENGINE_PID=$RUN_DIR/engine.pid  # the pid we started, known before dockerd writes its pidfile
LOG=$RUN_DIR/dockerd.log

say() { echo "engine: $*" >&2; }

install() {
  if command -v dockerd >/dev/null 2>&1 && command -v debootstrap >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    say "dockerd/debootstrap missing and cannot install them (needs root and apt-get)"
    return 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io debootstrap >/dev/null
}

clear_leftovers() {
  # What a dockerd can leave behind under its own directories when it is gone: mounts (its network
  # namespace file; the data root's bind mount after an unclean exit) and its pidfile.
  awk -v run="$RUN_DIR" -v cache="$CACHE" \
    'index($2, run "/") == 1 || $2 == cache || index($2, cache "/") == 1 { print $2 }' \
    /proc/mounts | sort -r | while read -r mountpoint; do
    umount -l "$mountpoint" 2>/dev/null || true
  done
  rm -f "$PIDFILE" "$ENGINE_PID"
}

running() {
  [ -f "$ENGINE_PID" ] && kill -0 "$(cat "$ENGINE_PID")" 2>/dev/null
}

docker_cli() {
  # The engine's own client (Debian's docker.io), which speaks its API version.
  local cli=/usr/bin/docker
  [ -x "$cli" ] || cli=docker
  DOCKER_HOST=unix://$SOCKET "$cli" "$@"
}

wait_ready() {
  local i
  for i in $(seq 1 120); do
    if docker_cli version >/dev/null 2>&1; then
      [ -s "$PIDFILE" ] && cp "$PIDFILE" "$ENGINE_PID"  # dockerd's own word, once it has said it
      return 0
    fi
    running || return 1
    sleep 0.5
  done
  return 1
}

start_with() {
  local driver=$1
  mkdir -p "$CACHE" "$RUN_DIR"
  # dockerd and its containerd, in a session of their own (setsid): `stop` ends exactly these.
  setsid dockerd \
    --data-root "$CACHE" \
    --exec-root "$RUN_DIR/exec" \
    --pidfile "$PIDFILE" \
    --host "unix://$SOCKET" \
    --storage-driver "$driver" \
    --iptables=false --ip6tables=false --bridge=none --ip-masq=false \
    --log-level warn \
    >"$LOG" 2>&1 </dev/null &
  echo $! >"$ENGINE_PID"
  if wait_ready; then
    # A container must really start on this driver (overlay mounts can be refused at run time).
    if [ "$driver" = vfs ] || probe; then
      return 0
    fi
  fi
  say "dockerd with $driver did not work: $(tail -n 3 "$LOG" | tr '\n' ' ')"
  stop
  return 1
}

probe() {
  # A one-file image (imported from a tar) run once: proves mounts and runc work on this driver.
  local dir
  dir=$(mktemp -d)
  cp /bin/true "$dir/true" 2>/dev/null || return 1
  if ! ldd /bin/true 2>/dev/null | grep -q "not a dynamic"; then
    # /bin/true is dynamic: bring its libraries along.
    local lib
    for lib in $(ldd /bin/true | grep -o '/[^ ]*'); do
      mkdir -p "$dir$(dirname "$lib")"
      cp -L "$lib" "$dir$lib"
    done
  fi
  tar -C "$dir" -c . | docker_cli import - tabular-engine-probe:latest >/dev/null 2>&1 &&
    docker_cli run --rm --network none tabular-engine-probe:latest /true >/dev/null 2>&1
  local rc=$?
  rm -rf "$dir"
  return $rc
}

start() {
  if running && docker_cli version >/dev/null 2>&1; then
    say "already running (pid $(cat "$ENGINE_PID"))"
  else
    clear_leftovers  # of an engine that was killed (e.g. with the session that started it)
    install
    local drivers=${CONTAINERS_STORAGE_DRIVER:-overlay2 vfs} driver started=""
    for driver in $drivers; do
      if start_with "$driver"; then
        started=$driver
        break
      fi
    done
    if [ -z "$started" ]; then
      say "no Docker engine could be started (log: $LOG)"
      return 1
    fi
    say "dockerd running (pid $(cat "$ENGINE_PID"), $started, data root $CACHE)"
  fi
  echo "export DOCKER_HOST=unix://$SOCKET"
}

stop() {
  if [ -f "$ENGINE_PID" ]; then
    local pid
    pid=$(cat "$ENGINE_PID")
    if kill -0 "$pid" 2>/dev/null; then
      # Containers of this engine first (they are its children through containerd-shim).
      local id
      for id in $(docker_cli ps -q 2>/dev/null); do
        docker_cli kill "$id" >/dev/null 2>&1 || true
      done
      kill "$pid"
      local i
      for i in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    fi
    rm -f "$ENGINE_PID" "$PIDFILE"
  fi
  clear_leftovers
  say "stopped"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) running && docker_cli info --format '{{.Driver}} {{.Images}} images' ;;
  *)
    echo "usage: $0 install|start|stop|status" >&2
    exit 2
    ;;
esac
