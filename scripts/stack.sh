#!/usr/bin/env bash
# The local vcluster stack on one Debian 12 machine (run as root).
#
#   scripts/stack.sh up      install everything, start salt-master, the host's
#                            minion (Slurm controller + bare-metal compute node,
#                            highstated by this repo's states), build the node
#                            image, expand by 2 LXD nodes, run a job on them,
#                            show vcluster.status and sinfo. Safe to run again.
#   scripts/stack.sh down    retire the virtual nodes, stop the daemons, remove
#                            the bridge (packages, image and venv stay).
#   scripts/stack.sh status  vcluster.status and sinfo.
#
# Slurm accounting: scripts/accounting-up.sh starts MariaDB (Unix socket
# only) with the database and user; the states run slurmdbd (before
# slurmctld) with the password it generated, which the site pillar's
# accounting.sls (0600) gives to the controller only.
#
# Settings (environment): VCLUSTER_NETWORK (vcbr0), VCLUSTER_CIDR
# (10.77.0.1/24), VCLUSTER_PROFILE (htc), VCLUSTER_COUNT (2).
set -euo pipefail
source "$(dirname "$0")/lib.sh"

NETWORK=${VCLUSTER_NETWORK:-vcbr0}
CIDR=${VCLUSTER_CIDR:-10.77.0.1/24}
PROFILE=${VCLUSTER_PROFILE:-htc}
COUNT=${VCLUSTER_COUNT:-2}
ADDRESS=${CIDR%/*}
SITE=/etc/vcluster/pillar
STATE=/var/lib/vcluster
REGISTRY=$STATE/registry.sqlite
HOST=$(hostname)
MASTER_ID="${HOST}_master"
BIN=$VCLUSTER_VENV/bin
export PATH="$BIN:$PATH"

master_running() { [ -f /var/run/salt-master.pid ] && kill -0 "$(cat /var/run/salt-master.pid)" 2>/dev/null; }
minion_running() { [ -f /var/run/salt-minion.pid ] && kill -0 "$(cat /var/run/salt-minion.pid)" 2>/dev/null; }

write_site_pillar() {
    mkdir -p "$SITE" "$STATE"
    chmod 0700 "$SITE"
    local prefix=${ADDRESS%.*} cpus mem
    cpus=$(nproc)
    mem=$(slurmd -C | tr ' ' '\n' | sed -n 's/^RealMemory=//p')
    mem=$((mem > 1536 ? mem - 512 : mem))
    # Regenerated each time from the facts of this machine: nothing to edit.
    cat >"$SITE/site.sls" <<EOF
# Written by scripts/stack.sh: facts of this site. See pillar/top.sls.
slurm:
  accounting:
    enabled: true
  controller:
    host: $HOST
    address: $ADDRESS
  nodes:
    $HOST:
      address: $ADDRESS
      cpus: $cpus
      memory: $mem
      features: [baremetal]
chrony:
  allow: [${prefix}.0/24]
vcluster:
  controller: $HOST
  master: $ADDRESS
  registry: $REGISTRY
EOF
    # The munge key is made once and kept: nodes hold it.
    if [ ! -s "$SITE/secrets.sls" ]; then
        umask 077
        printf 'munge:\n  key: %s\n' "$(head -c 1024 /dev/urandom | base64 -w0)" >"$SITE/secrets.sls"
    fi
    # The accounting database password, for the controller only (pillar/top.sls).
    local pass_file
    pass_file=$(bash "$REPO/scripts/accounting-up.sh" --print-pass-file)
    (umask 077; printf 'slurm:\n  accounting:\n    storage_pass: %s\n' "$(cat "$pass_file")" >"$SITE/accounting.sls")
}

write_salt_config() {
    mkdir -p /etc/salt/master.d /etc/salt/minion.d
    # What vcluster adds to this master (here: a master of its own); refused,
    # with the key named, where it would replace a setting of /etc/salt/master.
    "$BIN/python" -m vcluster.masterconf --check /etc/salt/master --write /etc/salt/master.d/vcluster.conf \
        --repo "$REPO" --site "$SITE" --registry "$REGISTRY" --interface "$ADDRESS" \
        --master-id "$MASTER_ID" --controller "$HOST" --pool-glob 'vnode*' >/dev/null ||
        die "the master configuration (see above)"
    cat >/etc/salt/minion.d/vcluster.conf <<EOF
# Written by scripts/stack.sh: this host is the Slurm controller and a
# bare-metal compute node, configured by the same states as virtual nodes.
id: $HOST
master: $ADDRESS
grains:
  roles: [slurm-controller, slurm-compute]
# systemctl is installed but this host is not booted with systemd: the
# offline systemd_service module would turn service states into no-ops.
disable_modules: [systemd_service]
# Slurm job events for preemption, sent the moment Slurm writes them.
engines:
  - vcluster_slurm_events:
      spool: /var/spool/vcluster-slurm/events
EOF
    for tool in salt salt-run salt-key salt-call salt-master salt-minion; do
        ln -sfn "$BIN/$tool" "/usr/local/bin/$tool"
    done
}

start_salt() {
    master_running || { say "starting salt-master on $ADDRESS"; salt-master -d; }
    wait_until 60 "salt-master" salt-run --timeout 5 manage.status
    minion_running || { say "starting salt-minion $HOST"; salt-minion -d; }
    if ! salt-key -l accepted | grep -qx "$HOST"; then
        # The admin's one manual acceptance: this host's own minion.
        wait_until 60 "the host minion's key" sh -c "salt-key -l unaccepted | grep -qx '$HOST'"
        salt-key -y -a "$HOST" >/dev/null
    fi
    wait_until 90 "the host minion to answer" salt --timeout 5 "$HOST" test.ping
}

ready_nodes() {
    salt-run --out=json vcluster.status 2>/dev/null |
        "$BIN/python" -c 'import json,sys; d=json.load(sys.stdin); print(sum(1 for n in d.get("nodes",{}).values() if n["state"]=="ready" and n["profile"]==sys.argv[1]))' "$PROFILE" 2>/dev/null || echo 0
}

up() {
    need_root
    say "installing packages and the vcluster virtualenv"
    bash "$REPO/scripts/install-deps.sh"
    say "LXD with bridge $NETWORK ($CIDR)"
    bash "$REPO/scripts/lxd-up.sh" --network "$NETWORK" --cidr "$CIDR" --pool vcluster
    say "node image (cached after the first build)"
    bash "$REPO/image/build.sh" --alias vcluster-node
    say "Slurm accounting database (MariaDB, Unix socket only)"
    bash "$REPO/scripts/accounting-up.sh"
    write_site_pillar
    write_salt_config
    start_salt
    say "highstate of $HOST (munge, slurmdbd, slurmctld, slurmd, chrony) from the repo's states"
    salt --timeout 900 --state-output=terse "$HOST" state.highstate ||
        die "the highstate of $HOST failed (see above)"
    local have
    have=$(ready_nodes)
    if [ "$have" -lt "$COUNT" ]; then
        say "salt-run vcluster.expand count=$((COUNT - have)) profile=$PROFILE"
        salt-run vcluster.expand count=$((COUNT - have)) profile="$PROFILE" ||
            die "expand failed (see the comment above)"
    else
        say "$have $PROFILE node(s) already ready: nothing to expand"
    fi
    say "a job on the virtual nodes: srun -p $PROFILE -N $COUNT hostname"
    timeout 120 srun --chdir=/tmp -p "$PROFILE" -N "$COUNT" hostname
    status
}

status() {
    say "salt-run vcluster.status"
    salt-run vcluster.status
    say "sinfo"
    sinfo -N -l
    say "sacct (jobs of the last hour, from slurmdbd)"
    sacct -X -S now-1hours -o JobID,Partition,State,NodeList
}

down() {
    need_root
    if master_running; then
        local nodes
        nodes=$(salt-run --out=json vcluster.status 2>/dev/null |
            "$BIN/python" -c 'import json,sys; print(",".join(json.load(sys.stdin).get("nodes",{})))' 2>/dev/null || true)
        if [ -n "$nodes" ]; then
            say "salt-run vcluster.retire nodes=$nodes force=True"
            salt-run vcluster.retire nodes="$nodes" force=True wait=120 || true
        fi
    fi
    say "stopping Slurm, munge, MariaDB and Salt daemons"
    for svc in slurmd slurmctld slurmdbd munge mariadb; do service "$svc" stop >/dev/null 2>&1 || true; done
    for d in minion master; do
        [ -f "/var/run/salt-$d.pid" ] && kill "$(cat "/var/run/salt-$d.pid")" 2>/dev/null || true
    done
    wait_until 30 "salt daemons to exit" sh -c "! { $(declare -f master_running minion_running); master_running || minion_running; }"
    bash "$REPO/scripts/lxd-down.sh" --network "$NETWORK" --force || true
    say "down (packages, the node image and $SITE stay)"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
