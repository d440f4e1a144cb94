#!/usr/bin/env bash
# Bring up a small real OpenStack on 127.0.0.1 for vcluster's OpenStack tests
# and benchmarks: Keystone, Placement, Glance, Nova (API, conductor,
# scheduler, two computes "cpu1" and "cpu2" with the fake virt driver),
# RabbitMQ, MariaDB (Nova's databases) and a stateless Neutron stand-in.
#
#   scripts/openstack-testbed/up.sh            # install if needed, start, wait READY
#   VCLUSTER_TESTBED_DIR=/tmp/tb up.sh        # another state directory
#
# Idempotent: installs only what is missing (apt packages, the service
# virtualenv VCLUSTER_OPENSTACK_VENV, default /opt/vcluster/openstack-venv);
# when a complete testbed already runs it only prints where it is and leaves
# $TB/READY untouched. Otherwise it stops leftovers (down.sh) and starts from
# empty databases.
# Ends by writing $TB/clouds.yaml (clouds "vcluster-testbed" and
# "vcluster-testbed-admin") and $TB/READY. Every wait has a deadline;
# nothing sleeps for a fixed time. Stop it with down.sh.
set -euo pipefail
source "$(dirname "$0")/common.sh"

[ "$(id -u)" = 0 ] || die "run as root (it installs packages and runs daemons)"
START=$SECONDS

# --------------------------------------------------------------- installs
install_apt() {
    local missing="" pkg
    for pkg in $APT_PACKAGES; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing="$missing $pkg"
    done
    [ -z "$missing" ] && return 0
    log "apt-get install$missing"
    # Packages must not start their system-wide daemons: the testbed runs
    # its own. Without systemd invoke-rc.d asks policy-rc.d.
    local policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        policy=1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    [ -n "$policy" ] && rm -f /usr/sbin/policy-rc.d
    return 0
}

install_venv() {
    local marker="$OSVENV/.vcluster-testbed-requirements"
    if [ -x "$OSVENV/bin/python" ] && [ "$(cat "$marker" 2>/dev/null)" = "$OS_REQUIREMENTS" ]; then
        return 0
    fi
    log "installing OpenStack services into $OSVENV (about a minute)"
    [ -x "$OSVENV/bin/python" ] || "${VCLUSTER_PYTHON:-python3}" -m venv "$OSVENV"
    "$OSVENV/bin/pip" install -q --disable-pip-version-check $OS_REQUIREMENTS
    echo "$OS_REQUIREMENTS" >"$marker"
}

install_apt
install_venv

# --------------------------------------------------------- already running?
if [ -f "$TB/READY" ]; then
    alive=1
    for s in $SERVICES; do
        [ "$s" = epmd ] && continue   # may belong to someone else's broker
        pid_of "$s" >/dev/null || { alive=0; break; }
    done
    if [ "$alive" = 1 ] && http_ok http://127.0.0.1:8774/; then
        log "already up: $TB/clouds.yaml (cloud vcluster-testbed)"
        exit 0
    fi
fi
"$HERE/down.sh" >/dev/null 2>&1 || true
for port in 5000 8778 9292 8774 9696 5672 25672; do
    port_open "$port" && die "port $port on 127.0.0.1 is taken by another program; the testbed needs it"
done
trap 'log "start-up failed: logs in $TB/log; down.sh stops what was started"' ERR

mkdir -p "$TB"/{etc/keystone,etc/placement,etc/glance,etc/nova,etc/rabbitmq,run,log/rabbitmq,data/glance/images,data/glance/staging,data/glance/tasks,data/nova/locks,data/nova-cpu1,data/nova-cpu2,data/rabbitmq,data/mysql}
chmod 700 "$TB"
find "$TB/log" -type f -delete   # logs of the previous run; down.sh keeps them for post-mortems

# ---------------------------------------------------------------- secrets
if [ ! -s "$TB/secrets.env" ]; then
    ( umask 077
      for k in ADMIN_PASSWORD SERVICE_PASSWORD USER_PASSWORD DB_PASSWORD; do
          echo "$k=$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
      done >"$TB/secrets.env" )
fi
# shellcheck disable=SC1091
source "$TB/secrets.env"

# ---------------------------------------------------------------- configs
KS=http://127.0.0.1:5000/v3
SOCK="$TB/run/mysqld.sock"
DB="mysql+pymysql://nova:$DB_PASSWORD@localhost"
DBQ="unix_socket=$SOCK&charset=utf8"

authtoken() {  # authtoken USER : [keystone_authtoken]-style password auth
    cat <<EOF
auth_type = password
auth_url = $KS
www_authenticate_uri = $KS
username = $1
password = $SERVICE_PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
EOF
}

umask 077
cat >"$TB/etc/keystone/keystone.conf" <<EOF
[database]
connection = sqlite:///$TB/data/keystone.sqlite
[token]
provider = fernet
[fernet_tokens]
key_repository = $TB/etc/keystone/fernet-keys
[fernet_receipts]
key_repository = $TB/etc/keystone/fernet-keys
[credential]
key_repository = $TB/etc/keystone/credential-keys
[identity]
password_hash_rounds = 4
[cache]
enabled = false
EOF

cat >"$TB/etc/placement/placement.conf" <<EOF
[api]
auth_strategy = keystone
[placement_database]
connection = sqlite:///$TB/data/placement.sqlite
sqlite_synchronous = false
[keystone_authtoken]
$(authtoken placement)
memcached_servers =
EOF

cat >"$TB/etc/glance/glance-api.conf" <<EOF
[DEFAULT]
enabled_backends = fs:file
[database]
connection = sqlite:///$TB/data/glance.sqlite
sqlite_synchronous = false
[glance_store]
default_backend = fs
[fs]
filesystem_store_datadir = $TB/data/glance/images
[os_glance_staging_store]
filesystem_store_datadir = $TB/data/glance/staging
[os_glance_tasks_store]
filesystem_store_datadir = $TB/data/glance/tasks
[paste_deploy]
flavor = keystone
config_file = $OSVENV/etc/glance/glance-api-paste.ini
[keystone_authtoken]
$(authtoken glance)
memcached_servers =
EOF

cat >"$TB/etc/nova/nova.conf" <<EOF
[DEFAULT]
transport_url = rabbit://guest:guest@127.0.0.1:5672/
my_ip = 127.0.0.1
state_path = $TB/data/nova
compute_driver = fake.FakeDriverWithoutFakeNodes
vif_plugging_is_fatal = false
vif_plugging_timeout = 0
heal_instance_info_cache_interval = -1
sync_power_state_interval = -1
[api]
auth_strategy = keystone
[wsgi]
api_paste_config = $OSVENV/etc/nova/api-paste.ini
[api_database]
connection = $DB/nova_api?$DBQ
[database]
connection = $DB/nova?$DBQ
[conductor]
workers = 1
[scheduler]
workers = 1
discover_hosts_in_cells_interval = 10
[compute]
live_migration_wait_for_vif_plug = false
[vnc]
enabled = false
[oslo_messaging_notifications]
driver = noop
[oslo_concurrency]
lock_path = $TB/data/nova/locks
[cache]
enabled = false
[keystone_authtoken]
$(authtoken nova)
memcached_servers =
[service_user]
send_service_user_token = true
$(authtoken nova)
[placement]
$(authtoken placement)
valid_interfaces = public
[glance]
endpoint_override = http://127.0.0.1:9292
[neutron]
$(authtoken nova)
endpoint_override = http://127.0.0.1:9696
EOF
for host in cpu1 cpu2; do
    printf '[DEFAULT]\nhost = %s\nstate_path = %s\n' "$host" "$TB/data/nova-$host" >"$TB/etc/nova/nova-$host.conf"
done

cat >"$TB/etc/rabbitmq/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:5672
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
EOF
echo "[]." >"$TB/etc/rabbitmq/enabled_plugins"
: >"$TB/etc/rabbitmq/rabbitmq-env.conf"

cat >"$TB/etc/my.cnf" <<EOF
[mysqld]
datadir = $TB/data/mysql
socket = $SOCK
pid-file = $TB/run/mariadbd.pid
log-error = $TB/log/mariadb.log
skip-networking
skip-log-bin
user = root
max_connections = 500
innodb_flush_log_at_trx_commit = 0
innodb_doublewrite = 0
innodb_buffer_pool_size = 128M
[client]
socket = $SOCK
EOF
umask 022

# ---------------------------------------------------------------- daemons
spawn() {  # spawn NAME CMD... : background daemon, pid in run/NAME.pid, output in log/NAME.log
    local name=$1; shift
    "$@" </dev/null >>"$TB/log/$name.log" 2>&1 &
    echo $! >"$TB/run/$name.pid"
}

wsgi() {  # wsgi NAME PORT MODULE THREADS [VAR=value...]
    local name=$1 port=$2 module=$3 threads=$4; shift 4
    spawn "$name" env VCLUSTER_TESTBED_APP="$module" "$@" \
        "$OSVENV/bin/gunicorn" --chdir "$HERE" -b "127.0.0.1:$port" -k gthread --workers 1 \
        --threads "$threads" --timeout 300 --graceful-timeout 3 --keep-alive 75 --no-control-socket \
        --name "vctb-$name" testbed_wsgi:application
}

start_broker() {
    spawn epmd env ERL_EPMD_ADDRESS=127.0.0.1 epmd -port 4369
    wait_until 20 "epmd" port_open 4369
    spawn rabbitmq env HOME="$TB/data/rabbitmq" RUNNING_UNDER_SYSTEMD=1 \
        RABBITMQ_CONF_ENV_FILE="$TB/etc/rabbitmq/rabbitmq-env.conf" \
        RABBITMQ_NODENAME=vctestbed@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=5672 \
        RABBITMQ_DIST_PORT=25672 ERL_EPMD_ADDRESS=127.0.0.1 \
        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        RABBITMQ_CONFIG_FILE="$TB/etc/rabbitmq/rabbitmq.conf" \
        RABBITMQ_ENABLED_PLUGINS_FILE="$TB/etc/rabbitmq/enabled_plugins" \
        RABBITMQ_MNESIA_BASE="$TB/data/rabbitmq/mnesia" RABBITMQ_LOG_BASE="$TB/log/rabbitmq" \
        RABBITMQ_PID_FILE="$TB/run/rabbitmq-beam.pid" \
        /usr/lib/rabbitmq/bin/rabbitmq-server
}

sql() { mariadb --no-defaults --socket="$SOCK" -uroot "$@"; }

nova_db() {  # MariaDB up, Nova's three databases migrated
    mariadb-install-db --defaults-file="$TB/etc/my.cnf" --auth-root-authentication-method=socket \
        --skip-test-db >"$TB/log/mariadb-install.log" 2>&1
    spawn mariadb mariadbd --defaults-file="$TB/etc/my.cnf"
    wait_until 60 "MariaDB" sql -e 'select 1'
    sql <<EOF
CREATE DATABASE nova_api; CREATE DATABASE nova; CREATE DATABASE nova_cell0;
CREATE USER 'nova'@'localhost' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON nova_api.* TO 'nova'@'localhost';
GRANT ALL PRIVILEGES ON nova.* TO 'nova'@'localhost';
GRANT ALL PRIVILEGES ON nova_cell0.* TO 'nova'@'localhost';
EOF
    "$OSVENV/bin/python" "$HERE/nova_setup.py" "$TB/etc/nova/nova.conf" "$DB/nova_cell0?$DBQ"
}

keystone_db() {
    "$OSVENV/bin/python" "$HERE/keystone_setup.py" "$TB"
    wal "$TB/data/keystone.sqlite"
}

wal() { "$OSVENV/bin/python" -c 'import sqlite3,sys; sqlite3.connect(sys.argv[1]).execute("pragma journal_mode=wal")' "$1"; }

other_dbs() {
    "$OSVENV/bin/placement-manage" --config-file "$TB/etc/placement/placement.conf" db sync
    wal "$TB/data/placement.sqlite"
    "$OSVENV/bin/glance-manage" --config-file "$TB/etc/glance/glance-api.conf" db_sync >/dev/null
    wal "$TB/data/glance.sqlite"
}

STEP_PID=
step() {  # step NAME FUNCTION: run in the background, log to log/NAME.log, pid in STEP_PID
    local name=$1; shift
    ( "$@" ) >>"$TB/log/$name.log" 2>&1 &
    STEP_PID=$!
}

finish() {  # finish PID NAME: wait for a step, show its log on failure
    if ! wait "$1"; then
        log "step $2 failed; last lines of $TB/log/$2.log:"
        tail -n 25 "$TB/log/$2.log" >&2
        exit 1
    fi
}

log "starting in $TB"
start_broker
step setup-nova nova_db; p_nova=$STEP_PID
step setup-keystone keystone_db; p_ks=$STEP_PID
step setup-other other_dbs; p_other=$STEP_PID
wsgi neutron 9696 fake_neutron 2

finish "$p_ks" setup-keystone
# One thread: Keystone writes to SQLite while issuing tokens, and concurrent
# writers there end in "database is locked" 500s.
wsgi keystone 5000 keystone.wsgi.api 1 OS_KEYSTONE_CONFIG_DIR="$TB/etc/keystone"
finish "$p_other" setup-other
wsgi placement 8778 placement.wsgi.api 1 OS_PLACEMENT_CONFIG_DIR="$TB/etc/placement"
wsgi glance 9292 glance.wsgi.api 2 OS_GLANCE_CONFIG_DIR="$TB/etc/glance"
log "keystone, placement, glance starting ($((SECONDS - START)) s)"
token_ok() {  # Keystone issues a token to the nova service user
    local code
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H 'Content-Type: application/json' -d "{\"auth\": {\"identity\": {\"methods\": [\"password\"], \"password\": {\"user\": {\"name\": \"nova\", \"domain\": {\"name\": \"Default\"}, \"password\": \"$SERVICE_PASSWORD\"}}}}}" "$KS/auth/tokens") || return 1
    [ "$code" = 201 ]
}

finish "$p_nova" setup-nova
log "nova databases set up ($((SECONDS - START)) s)"
wait_until 60 "RabbitMQ on :5672" port_open 5672
wait_until 60 "a Keystone token" token_ok
wait_until 60 "Placement on :8778" http_ok http://127.0.0.1:8778/
NOVA=("--config-file" "$TB/etc/nova/nova.conf")
wsgi nova-api 8774 nova.wsgi.osapi_compute 4 OS_NOVA_CONFIG_DIR="$TB/etc/nova" \
    OS_NOVA_CONFIG_FILES="$OSVENV/etc/nova/api-paste.ini;nova.conf"
spawn nova-conductor "$OSVENV/bin/nova-conductor" "${NOVA[@]}"
spawn nova-scheduler "$OSVENV/bin/nova-scheduler" "${NOVA[@]}"
for host in cpu1 cpu2; do
    spawn "nova-compute-$host" "$OSVENV/bin/nova-compute" "${NOVA[@]}" --config-file "$TB/etc/nova/nova-$host.conf"
done

computes_registered() {
    [ "$(sql -N -e 'select count(*) from nova.compute_nodes where deleted=0')" = 2 ]
}
wait_until 120 "both computes in the cell database" computes_registered
"$OSVENV/bin/nova-manage" "${NOVA[@]}" cell_v2 discover_hosts >>"$TB/log/setup-nova.log" 2>&1
for svc in 9292 8778 8774; do wait_until 60 "API on :$svc" http_ok "http://127.0.0.1:$svc/"; done

"$OSVENV/bin/python" "$HERE/bootstrap.py" "$TB" >>"$TB/log/bootstrap.log" 2>&1 \
    || { tail -n 25 "$TB/log/bootstrap.log" >&2; die "compute bootstrap failed"; }
for s in $SERVICES; do
    pid_of "$s" >/dev/null || { tail -n 20 "$TB/log/$s.log" >&2; die "$s died during start-up (log: $TB/log/$s.log)"; }
done
date -u +%FT%TZ >"$TB/READY"
log "READY in $((SECONDS - START)) s: OS_CLIENT_CONFIG_FILE=$TB/clouds.yaml, cloud vcluster-testbed"
