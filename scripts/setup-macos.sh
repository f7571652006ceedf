#!/usr/bin/env bash
# Prepare a Mac with Apple silicon for Morgan's fleet: Homebrew, a Docker engine (Colima
# in a vz virtual machine sized from the Mac's memory, or Docker Desktop), Remote Login
# for the deploy machine with its key, then `morgan host probe`: the host's entry for the
# stack file and what would still fail. Run it as the user the deploy machine logs in as.
#
#   scripts/setup-macos.sh --name h4 --address 192.168.1.14 --authorized-key morgan.pub
#   scripts/setup-macos.sh --dry-run --name h4 ...    print every step, change nothing
#
#   --runtime colima|docker-desktop   the Docker engine (default colima; see
#                                     docs/operations/deployment.md for the choice)
#   --disk GIB                        Colima's disk (default 100)
#
# Running it again changes only what is missing.
set -euo pipefail

NAME="" ADDRESS="" KEY="" RUNTIME=colima DISK_GIB=100 DRY_RUN=0
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROBE=""
for candidate in "$HERE/host_probe.py" "$HERE/../services/morgan/host_probe.py"; do
  if [ -f "$candidate" ]; then PROBE="$candidate" && break; fi
done
START=$SECONDS

fail() { echo "setup-macos: $*" >&2; exit 1; }
usage() { echo "setup-macos: $*; see --help" >&2; exit 2; }
step() { printf 'setup-macos: [%3ss] %s\n' $((SECONDS - START)) "$*" >&2; }
note() { echo "setup-macos:        $*" >&2; }
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run: %s\n' "$*"
  else
    "$@"
  fi
}
append_once() { # append_once FILE LINE: add LINE unless FILE has it already
  local file=$1 line=$2
  if [ -f "$file" ] && grep -qxF -- "$line" "$file"; then
    return 0
  fi
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would append to %s: %s\n' "$file" "$line"
  else
    mkdir -p "$(dirname "$file")"
    printf '%s\n' "$line" >>"$file"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --name | --address | --authorized-key | --runtime | --disk)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case "$1" in
        --name) NAME="$2" ;;
        --address) ADDRESS="$2" ;;
        --authorized-key) KEY="$2" ;;
        --runtime) RUNTIME="$2" ;;
        --disk) DISK_GIB="$2" ;;
      esac
      shift 2
      ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown option $1" ;;
  esac
done
case "$RUNTIME" in colima | docker-desktop) ;; *) usage "--runtime is colima or docker-desktop, not '$RUNTIME'" ;; esac
if ! [[ "$DISK_GIB" =~ ^[0-9]+$ ]] || [ "$DISK_GIB" -lt 20 ]; then
  usage "--disk is a size in GiB, at least 20"
fi
[ -n "$NAME" ] || usage "--name is required (the host's name in the stack file, e.g. h4)"
[ -n "$ADDRESS" ] || usage "--address is required (the name or IP the other hosts reach this Mac at)"
if [ -z "$KEY" ] || [ ! -r "$KEY" ]; then
  usage "--authorized-key FILE is required (the deploy user's public key, readable)"
fi
[ "$(uname -s)" = Darwin ] || fail "this is $(uname -s), not macOS: use scripts/setup-linux.sh on Linux"
[ "$(uname -m)" = arm64 ] || fail "this Mac is $(uname -m): the script is for Apple silicon (arm64)"
[ "$(id -u)" != 0 ] || fail "run as the deploy user, not root: Homebrew and Colima belong to that user"
[ "$DRY_RUN" = 1 ] && step "dry run: nothing below is changed"

# ------------------------------------------------------------------ Homebrew
BREW=""
for candidate in "$(command -v brew || true)" /opt/homebrew/bin/brew; do
  if [ -n "$candidate" ] && [ -x "$candidate" ]; then BREW=$candidate && break; fi
done
if [ -z "$BREW" ]; then
  step "Homebrew: installing (it asks for your password once)"
  run /bin/bash -c "$(curl -fsSL https://raw.githubusercontent.com/Homebrew/install/HEAD/install.sh)"
  BREW=/opt/homebrew/bin/brew
else
  step "Homebrew: $BREW"
fi
brew_has() { [ -x "$BREW" ] && "$BREW" list "$@" >/dev/null 2>&1; }
# `ssh mac docker …` runs in a non-login shell: Homebrew's bin must be on its PATH too.
append_once "$HOME/.zshenv" "eval \"\$($BREW shellenv)\""
PATH="$(dirname "$BREW"):$PATH"
export PATH

# ------------------------------------------------------------------ Docker engine
memory_gib=$(($(sysctl -n hw.memsize) / 1024 / 1024 / 1024))
cpus=$(sysctl -n hw.ncpu)
if [ "$RUNTIME" = colima ]; then
  # The VM gets three quarters of the memory (macOS keeps the rest) and all but one core.
  vm_memory=$((memory_gib * 3 / 4))
  [ "$vm_memory" -ge 4 ] || vm_memory=4
  vm_cpus=$((cpus - 1))
  [ "$vm_cpus" -ge 2 ] || vm_cpus=2
  step "Docker engine: Colima (vz, aarch64, $vm_cpus CPUs, $vm_memory GiB of $memory_gib, ${DISK_GIB} GiB disk)"
  missing=()
  brew_has --formula colima || missing+=(colima)
  brew_has --formula docker || missing+=(docker)
  if [ ${#missing[@]} -gt 0 ]; then
    run "$BREW" install "${missing[@]}"
  fi
  if colima status >/dev/null 2>&1; then
    note "Colima is running (its size changes with \`colima stop; colima start --cpu N --memory G\`)"
  else
    # --network-host-addresses: ports the VM's containers listen on are forwarded to the
    # Mac's own addresses, so the other hosts reach them at --address.
    run colima start --vm-type vz --arch aarch64 --cpu "$vm_cpus" --memory "$vm_memory" \
      --disk "$DISK_GIB" --network-address --network-host-addresses
  fi
  # Colima starts again at login, like Docker Desktop.
  run "$BREW" services start colima
else
  step "Docker engine: Docker Desktop (host networking on)"
  brew_has --cask docker || run "$BREW" install --cask docker
  note "in Docker Desktop: Settings > Resources > Network > Enable host networking (4.34+),"
  note "and Settings > General > Start Docker Desktop when you sign in"
fi
if [ "$DRY_RUN" = 0 ] && ! docker info >/dev/null 2>&1; then
  fail "Docker does not answer yet: start $RUNTIME (and finish its first-run dialogs), then run this again"
fi

# ------------------------------------------------------------------ remote access
step "Remote Login (SSH) for the deploy machine: key only, as $(id -un)"
if sudo -n systemsetup -getremotelogin 2>/dev/null | grep -q ': On'; then
  note "Remote Login is on"
else
  run sudo systemsetup -setremotelogin on ||
    fail "could not turn Remote Login on (recent macOS wants Full Disk Access for the terminal): turn it on in System Settings > General > Sharing > Remote Login, then run this again"
fi
run mkdir -p "$HOME/.ssh"
run chmod 700 "$HOME/.ssh"
append_once "$HOME/.ssh/authorized_keys" "$(cat "$KEY")"
run chmod 600 "$HOME/.ssh/authorized_keys"
note "endpoint for the stack file: ssh://$(id -un)@$ADDRESS"

# ------------------------------------------------------------------ probe
if ! command -v python3 >/dev/null 2>&1; then
  run "$BREW" install python
fi
if [ -z "$PROBE" ]; then
  note "host_probe.py is not beside this script: run \`morgan host probe --name $NAME --address $ADDRESS\`"
  exit 0
fi
step "morgan host probe: this host's entry for the stack file (hosts:)"
status=0
run python3 "$PROBE" --name "$NAME" --address "$ADDRESS" --user "$(id -un)" || status=$?
[ "$status" = 0 ] || note "the probe found problems (# PROBLEM lines above): fix them before deploying"
exit "$status"
