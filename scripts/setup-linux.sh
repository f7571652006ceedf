#!/usr/bin/env bash
# Prepare a Debian 12 or Ubuntu 22.04/24.04 host for Morgan's fleet: Docker Engine, the
# NVIDIA Container Toolkit when the host has an NVIDIA GPU, the deploy user and its key,
# Docker reached over SSH (or over TCP with TLS client certificates), the firewall opened
# to the fleet for exactly the host's ports, then `morgan host probe`: the host's entry
# for the stack file and what would still fail.
#
#   sudo scripts/setup-linux.sh --name h1 --address 192.168.1.11 --authorized-key morgan.pub \
#        --ports "$(morgan plan --stack homelab --ports h1)"
#   scripts/setup-linux.sh --dry-run --name h1 ...     print every step, change nothing
#
#   --docker-tls DIR        open dockerd on tcp://ADDRESS:2376 with DIR/{ca,cert,key}.pem
#                           (TLS client certificates) instead of Docker over SSH
#   --docker-repo           Docker's own apt repository (docker-ce) instead of the
#                           distribution's docker.io
#   --no-gpu                skip the NVIDIA Container Toolkit even if nvidia-smi sees a GPU
#   --ports "N/P ..."       the ports to open to the fleet (`morgan plan --ports HOST`)
#   --allow-from CIDR       who may reach them (default: the subnet of --address)
#   --user NAME             the deploy user (default morgan)
#   --registry HOST:PORT --registry-ca CA.pem   trust a private registry's own CA
#   --install-only          install the packages and stop
#   --foreground            without systemd (a container): start sshd, then run dockerd
set -euo pipefail

NAME="" ADDRESS="" KEY="" TLS_DIR="" USER_NAME="morgan" INSTALL_ONLY=0 FOREGROUND=0
REGISTRY="" REGISTRY_CA="" DRY_RUN=0 DOCKER_REPO=0 NO_GPU=0 PORTS="" ALLOW_FROM=""
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The probe: beside this script when copied to a host, or in the repository.
PROBE=""
for candidate in "$HERE/host_probe.py" "$HERE/../services/morgan/host_probe.py"; do
  if [ -f "$candidate" ]; then PROBE="$candidate" && break; fi
done
ARCH=$(dpkg --print-architecture 2>/dev/null || echo amd64)
START=$SECONDS

fail() { echo "setup-linux: $*" >&2; exit 1; }
usage() { echo "setup-linux: $*; see --help" >&2; exit 2; }
step() { printf 'setup-linux: [%3ss] %s\n' $((SECONDS - START)) "$*" >&2; }
note() { echo "setup-linux:        $*" >&2; }
# Every change goes through run/put: with --dry-run they print what they would do.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would run: %s\n' "$*"
  else
    "$@"
  fi
}
put() { # put PATH MODE < content
  local path=$1 mode=$2 content
  content=$(cat)
  if [ "$DRY_RUN" = 1 ]; then
    printf 'would write %s (mode %s):\n%s\n' "$path" "$mode" "$(printf '%s\n' "$content" | sed 's/^/    /')"
  else
    mkdir -p "$(dirname "$path")"
    printf '%s\n' "$content" >"$path"
    chmod "$mode" "$path"
  fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --name | --address | --authorized-key | --docker-tls | --user | --registry | --registry-ca | --ports | --allow-from)
      [ $# -ge 2 ] || usage "$1 needs a value"
      case "$1" in
        --name) NAME="$2" ;;
        --address) ADDRESS="$2" ;;
        --authorized-key) KEY="$2" ;;
        --docker-tls) TLS_DIR="$2" ;;
        --user) USER_NAME="$2" ;;
        --registry) REGISTRY="$2" ;;
        --registry-ca) REGISTRY_CA="$2" ;;
        --ports) PORTS="$2" ;;
        --allow-from) ALLOW_FROM="$2" ;;
      esac
      shift 2
      ;;
    --dry-run) DRY_RUN=1; shift ;;
    --docker-repo) DOCKER_REPO=1; shift ;;
    --no-gpu) NO_GPU=1; shift ;;
    --install-only) INSTALL_ONLY=1; shift ;;
    --foreground) FOREGROUND=1; shift ;;
    -h | --help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) usage "unknown option $1" ;;
  esac
done
[ "$DRY_RUN" = 1 ] || [ "$(id -u)" = 0 ] ||
  fail "run as root (sudo): it installs packages and creates a user; --dry-run shows the steps without root"
for spec in $PORTS; do
  if ! [[ "$spec" =~ ^([0-9]{1,5})/(tcp|udp)$ ]] || [ "${BASH_REMATCH[1]}" -lt 1 ] || [ "${BASH_REMATCH[1]}" -gt 65535 ]; then
    usage "--ports: '$spec' is not PORT/tcp or PORT/udp (take the list from \`morgan plan --stack S --ports $NAME\`)"
  fi
done

# ------------------------------------------------------------------ the system
OS_ID="" OS_VERSION="" OS_CODENAME=""
if [ -r /etc/os-release ]; then
  # shellcheck disable=SC1091
  OS_ID=$(. /etc/os-release && echo "${ID:-}")
  # shellcheck disable=SC1091
  OS_VERSION=$(. /etc/os-release && echo "${VERSION_ID:-}")
  # shellcheck disable=SC1091
  OS_CODENAME=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
fi
case "$OS_ID $OS_VERSION" in
  "debian 12" | "ubuntu 22.04" | "ubuntu 24.04") ;;
  *) note "warning: ${OS_ID:-an unknown system} ${OS_VERSION} is not Debian 12 or Ubuntu 22.04/24.04; going on" ;;
esac
GPU=""
if [ "$NO_GPU" = 0 ] && command -v nvidia-smi >/dev/null 2>&1; then
  GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1 || true)
fi
[ "$DRY_RUN" = 1 ] && step "dry run: nothing below is changed"

# ------------------------------------------------------------------ packages
apt_install() {
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
install_docker_repo() {
  # Docker's own packages (docker-ce), from its apt repository for this distribution.
  if [ -z "$OS_ID" ] || [ -z "$OS_CODENAME" ]; then
    fail "--docker-repo needs /etc/os-release with ID and VERSION_CODENAME"
  fi
  run install -m 0755 -d /etc/apt/keyrings
  run curl -fsSL "https://download.docker.com/linux/$OS_ID/gpg" -o /etc/apt/keyrings/docker.asc
  put /etc/apt/sources.list.d/docker.list 0644 <<EOF
deb [arch=$ARCH signed-by=/etc/apt/keyrings/docker.asc] https://download.docker.com/linux/$OS_ID $OS_CODENAME stable
EOF
  run apt-get update -qq
  apt_install docker-ce docker-ce-cli containerd.io
}
install_packages() {
  local missing=()
  if [ "$DOCKER_REPO" = 1 ]; then
    if ! command -v dockerd >/dev/null || ! dpkg-query -W docker-ce >/dev/null 2>&1; then
      step "Docker Engine from Docker's repository (docker-ce)"
      install_docker_repo
    fi
  else
    command -v dockerd >/dev/null || missing+=(docker.io)
  fi
  command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v iptables >/dev/null || missing+=(iptables)
  # ss: what `morgan verify` (testinfra) reads a host's listening sockets with.
  command -v ss >/dev/null || missing+=(iproute2)
  # The probe at the end needs only Python's standard library.
  command -v python3 >/dev/null || missing+=(python3)
  if [ ${#missing[@]} -gt 0 ]; then
    step "installing ${missing[*]} (distribution packages)"
    run apt-get update -qq || fail "apt-get update failed; check the host's network and apt sources"
    apt_install "${missing[@]}" ca-certificates || fail "apt-get could not install ${missing[*]}"
  else
    step "packages: Docker Engine, OpenSSH, iptables, iproute2 and Python are installed"
  fi
}
install_nvidia_toolkit() {
  if [ -z "$GPU" ]; then
    step "GPU: no NVIDIA GPU seen (nvidia-smi)$([ "$NO_GPU" = 1 ] && echo ', --no-gpu'); no toolkit"
    return
  fi
  step "GPU: $GPU; NVIDIA Container Toolkit for Docker's nvidia runtime"
  if dpkg-query -W nvidia-container-toolkit >/dev/null 2>&1; then
    note "nvidia-container-toolkit is installed"
    return
  fi
  local key=/usr/share/keyrings/nvidia-container-toolkit-keyring.gpg
  command -v gpg >/dev/null || apt_install gpg
  command -v curl >/dev/null || apt_install curl
  if [ "$DRY_RUN" = 1 ]; then
    run "curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --dearmor -o $key"
  else
    curl -fsSL https://nvidia.github.io/libnvidia-container/gpgkey | gpg --batch --yes --dearmor -o "$key" ||
      fail "could not fetch NVIDIA's signing key; check the host's network"
  fi
  put /etc/apt/sources.list.d/nvidia-container-toolkit.list 0644 <<EOF
deb [signed-by=$key] https://nvidia.github.io/libnvidia-container/stable/deb/\$(ARCH) /
EOF
  run apt-get update -qq
  apt_install nvidia-container-toolkit || fail "apt-get could not install nvidia-container-toolkit"
}

install_packages
install_nvidia_toolkit
if [ "$INSTALL_ONLY" = 1 ]; then
  step "packages installed (--install-only)"
  exit 0
fi
[ -n "$NAME" ] || usage "--name is required (the host's name in the stack file, e.g. h1)"
[ -n "$ADDRESS" ] || usage "--address is required (the name or IP the deploy machine reaches)"
if [ -z "$KEY" ] || [ ! -r "$KEY" ]; then
  usage "--authorized-key FILE is required (the deploy user's public key, readable)"
fi

# ------------------------------------------------------------------ deploy user and sshd
step "deploy user $USER_NAME: key login only, in the docker group"
id "$USER_NAME" >/dev/null 2>&1 || run useradd --create-home --shell /bin/bash "$USER_NAME"
getent group docker >/dev/null || run groupadd docker
run usermod -aG docker "$USER_NAME"
home=$(getent passwd "$USER_NAME" | cut -d: -f6 || true)
home=${home:-/home/$USER_NAME}
run install -d -m 700 -o "$USER_NAME" -g "$USER_NAME" "$home/.ssh"
run install -m 600 -o "$USER_NAME" -g "$USER_NAME" "$KEY" "$home/.ssh/authorized_keys"
run mkdir -p /run/sshd /etc/ssh/sshd_config.d
run ssh-keygen -A
put /etc/ssh/sshd_config.d/morgan.conf 0644 <<EOF
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $USER_NAME
EOF

# ------------------------------------------------------------------ docker daemon
step "Docker daemon: $([ -n "$TLS_DIR" ] && echo "tcp://$ADDRESS:2376 with TLS client certificates" || echo "over SSH as $USER_NAME")"
run mkdir -p /etc/docker
if [ -n "$REGISTRY" ]; then
  [ -r "$REGISTRY_CA" ] || usage "--registry $REGISTRY needs --registry-ca FILE (the registry's CA)"
  run install -d "/etc/docker/certs.d/$REGISTRY"
  run install -m 644 "$REGISTRY_CA" "/etc/docker/certs.d/$REGISTRY/ca.crt"
fi
if [ -n "$TLS_DIR" ]; then
  for f in ca.pem cert.pem key.pem; do [ -r "$TLS_DIR/$f" ] || fail "$TLS_DIR/$f is missing"; done
  run install -d -m 700 /etc/docker/tls
  run install -m 600 "$TLS_DIR/ca.pem" "$TLS_DIR/cert.pem" "$TLS_DIR/key.pem" /etc/docker/tls/
  put /etc/docker/daemon.json 0644 <<'EOF'
{"hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2376"], "tlsverify": true,
 "tlscacert": "/etc/docker/tls/ca.pem", "tlscert": "/etc/docker/tls/cert.pem",
 "tlskey": "/etc/docker/tls/key.pem"}
EOF
  endpoint="tcp://$ADDRESS:2376"
else
  put /etc/docker/daemon.json 0644 <<<'{"hosts": ["unix:///var/run/docker.sock"]}'
  endpoint="ssh://$USER_NAME@$ADDRESS"
fi
if [ -n "$GPU" ]; then
  # Adds the nvidia runtime to the daemon.json written above.
  run nvidia-ctk runtime configure --runtime=docker
fi

# ------------------------------------------------------------------ firewall
subnet_of() { # the network of the interface that holds ADDRESS (or the first global one)
  local ip cidr
  ip=$(getent ahostsv4 "$1" 2>/dev/null | awk 'NR == 1 {print $1}')
  cidr=$(ip -o -4 addr show scope global 2>/dev/null | awk -v ip="$ip" '
    {split($4, a, "/"); if (first == "") first = $4; if (a[1] == ip) {print $4; found = 1; exit}}
    END {if (!found && first != "") print first}')
  [ -n "$cidr" ] && python3 -c 'import ipaddress, sys; print(ipaddress.ip_interface(sys.argv[1]).network)' "$cidr"
}
open_firewall() {
  local active=0
  if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'; then
    active=1
  fi
  if [ "$active" = 0 ]; then
    step "firewall: no active ufw; nothing to open${PORTS:+ (another firewall must pass: $PORTS)}"
    return
  fi
  [ -n "$PORTS" ] || usage "ufw is active: pass --ports \"\$(morgan plan --stack S --ports $NAME)\" so the fleet can reach this host"
  local from=${ALLOW_FROM:-$(subnet_of "$ADDRESS")}
  [ -n "$from" ] || usage "cannot tell the subnet of $ADDRESS; pass --allow-from CIDR (e.g. 192.168.1.0/24)"
  step "firewall (ufw): $PORTS from $from"
  local spec
  for spec in $PORTS; do
    run ufw allow proto "${spec#*/}" from "$from" to any port "${spec%/*}" comment "morgan fleet"
  done
}
open_firewall

# ------------------------------------------------------------------ start and probe
probe() {
  if [ -z "$PROBE" ]; then
    note "host_probe.py is not beside this script: run \`morgan host probe --name $NAME --address $ADDRESS\`"
    return 0
  fi
  step "morgan host probe: this host's entry for the stack file (hosts:)"
  local status=0
  run python3 "$PROBE" --name "$NAME" --address "$ADDRESS" --user "$USER_NAME" \
    ${TLS_DIR:+--docker-tls} || status=$?
  [ "$status" = 0 ] || note "the probe found problems (# PROBLEM lines above): fix them before deploying"
  return "$status"
}
note "endpoint for the stack file: $endpoint"
if [ "$FOREGROUND" = 1 ]; then
  # A container started again keeps /run, which a boot empties: the pid files of its
  # last run (stopped, or killed mid-shutdown) would stop dockerd ("pid file found").
  if [ "$DRY_RUN" = 0 ] && ! pidof dockerd >/dev/null; then
    rm -rf /run/docker.pid /run/docker /run/containerd /run/sshd.pid
  fi
  run /usr/sbin/sshd
  if [ "$DRY_RUN" = 1 ]; then
    run dockerd
    probe || true
    exit 0
  fi
  dockerd &
  DOCKERD=$!
  # `docker stop` signals this script (PID 1): pass it on and wait for dockerd's own
  # shutdown, which stops its containers.
  # shellcheck disable=SC2317  # called by the trap
  stop_dockerd() {
    kill -TERM "$DOCKERD" 2>/dev/null || true
    wait "$DOCKERD" || true
    exit 0
  }
  trap stop_dockerd TERM INT
  for _ in $(seq 1 120); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$DOCKERD" 2>/dev/null || fail "dockerd exited while starting; see its log above"
    sleep 0.5
  done
  probe || true
  step "ready: sshd started, dockerd runs in the foreground"
  status=0
  wait "$DOCKERD" || status=$?
  exit "$status"
fi
if [ "$DRY_RUN" = 0 ] && [ "$(cat /proc/1/comm 2>/dev/null)" != systemd ]; then
  fail "no systemd here: pass --foreground to run sshd and dockerd from this script"
fi
# The packages' units pass -H fd://, which conflicts with "hosts" in daemon.json. docker-ce
# keeps dockerd in /usr/bin and runs containerd as a service of its own.
if [ "$DOCKER_REPO" = 1 ]; then
  exec_start="/usr/bin/dockerd --containerd=/run/containerd/containerd.sock"
else
  exec_start="$(command -v dockerd || echo /usr/sbin/dockerd)"
fi
put /etc/systemd/system/docker.service.d/morgan.conf 0644 <<EOF
[Service]
ExecStart=
ExecStart=$exec_start
EOF
run systemctl daemon-reload
run systemctl enable --now docker
run systemctl restart ssh docker
step "ready: docker and sshd restarted"
probe
