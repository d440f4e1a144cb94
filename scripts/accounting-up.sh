#!/usr/bin/env bash
# Slurm accounting's database on this host (run as root, on the slurmctld
# host): MariaDB from Debian, listening on its Unix socket only (no
# network), with the database and the user slurmdbd logs in as, created
# idempotently. The user's password is generated once and kept in a
# root-only file (mode 0600); a second run only checks (about a second).
#
#   scripts/accounting-up.sh                 MariaDB, database, user, password
#                                            file. vcluster's own slurmdbd is
#                                            then configured by the states
#                                            (salt/slurm/accounting.sls) from
#                                            the site pillar that scripts/stack.sh
#                                            and the test stack write from it.
#   scripts/accounting-up.sh --slurmdbd      also write /etc/slurm/slurmdbd.conf
#                                            (0600 slurm), start slurmdbd and
#                                            register --cluster (sacctmgr): a
#                                            site's own accounting, as a site in
#                                            slurm:manage include keeps it
#                                            (docs/slurm-site.md). The site's
#                                            slurm.conf then needs
#                                            AccountingStorageType=accounting_storage/slurmdbd
#                                            and AccountingStorageHost=<this host>.
#   scripts/accounting-up.sh --print-pass-file
#                                            print the password file's path.
#
# Options: --cluster NAME (vcluster; the slurm.conf ClusterName),
#          --pass-file FILE, --database NAME, --db-user NAME.
# env: VCLUSTER_ACCOUNTING_PASS_FILE (/etc/vcluster/accounting/storage-pass)
set -euo pipefail
source "$(dirname "$0")/lib.sh"

PASS_FILE=${VCLUSTER_ACCOUNTING_PASS_FILE:-/etc/vcluster/accounting/storage-pass}
DATABASE=slurm_acct_db
DB_USER=slurm
CLUSTER=vcluster
WITH_SLURMDBD=0
DBD_CONF=/etc/slurm/slurmdbd.conf
MARIADB_CNF=/etc/mysql/mariadb.conf.d/90-vcluster.cnf

while [ $# -gt 0 ]; do
    case $1 in
        --slurmdbd) WITH_SLURMDBD=1 ;;
        --cluster) CLUSTER=${2:?--cluster needs a name}; shift ;;
        --pass-file) PASS_FILE=${2:?--pass-file needs a path}; shift ;;
        --database) DATABASE=${2:?--database needs a name}; shift ;;
        --db-user) DB_USER=${2:?--db-user needs a name}; shift ;;
        --print-pass-file) echo "$PASS_FILE"; exit 0 ;;
        *) die "unknown argument $1 (see the head of $0)" ;;
    esac
    shift
done
for pair in "database:$DATABASE" "db-user:$DB_USER" "cluster:$CLUSTER"; do
    [[ ${pair#*:} =~ ^[A-Za-z0-9_]+$ ]] || die "--${pair%%:*} is ${pair#*:}, expected letters, digits and _"
done
need_root

packages=(mariadb-server mariadb-client)
[ "$WITH_SLURMDBD" = 1 ] && packages+=(slurmdbd slurm-client munge)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Unix socket only: slurmdbd on this host is the database's one client.
# innodb_lock_wait_timeout as Slurm's accounting guide asks (rollups hold
# long locks).
cnf='# Written by vcluster scripts/accounting-up.sh: the Slurm accounting database
# is reached on the Unix socket only.
[mysqld]
skip-networking
innodb_lock_wait_timeout=900
'
mariadb_up() { mariadb-admin --no-defaults --socket=/run/mysqld/mysqld.sock ping >/dev/null 2>&1; }
if [ "$(cat "$MARIADB_CNF" 2>/dev/null)" != "${cnf%$'\n'}" ]; then
    printf '%s' "$cnf" >"$MARIADB_CNF"
    if mariadb_up; then
        say "restarting MariaDB (its configuration changed)"
        start_service mariadb restart >/dev/null
    fi
fi
if ! mariadb_up; then
    say "starting MariaDB (Unix socket only)"
    start_service mariadb >/dev/null
fi
wait_until 60 "MariaDB to answer" mariadb_up

# The password: generated once, root-only; letters and digits (no quoting).
if [ ! -s "$PASS_FILE" ]; then
    mkdir -p "$(dirname "$PASS_FILE")"
    chmod 0700 "$(dirname "$PASS_FILE")"
    (umask 077; head -c 64 /dev/urandom | base64 -w0 | tr -dc 'A-Za-z0-9' | head -c 32 >"$PASS_FILE.tmp")
    mv "$PASS_FILE.tmp" "$PASS_FILE"
    say "generated the accounting database password in $PASS_FILE (0600)"
fi
chmod 0600 "$PASS_FILE"
chown root:root "$PASS_FILE"
pass=$(cat "$PASS_FILE")
[[ $pass =~ ^[A-Za-z0-9]{16,}$ ]] || die "$PASS_FILE does not hold a password of 16+ letters and digits"

# Idempotent: creates what is missing, resets the password to the file's.
# The SQL goes on stdin, so the password is never on a command line.
mariadb --no-defaults --socket=/run/mysqld/mysqld.sock --user=root <<SQL
CREATE DATABASE IF NOT EXISTS \`$DATABASE\`;
CREATE USER IF NOT EXISTS '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
ALTER USER '$DB_USER'@'localhost' IDENTIFIED BY '$pass';
GRANT ALL ON \`$DATABASE\`.* TO '$DB_USER'@'localhost';
SQL

if [ "$WITH_SLURMDBD" = 1 ]; then
    # A site's own slurmdbd (vcluster's states do not configure it).
    mkdir -p /etc/slurm /var/log/slurm
    chown slurm:slurm /var/log/slurm
    want="# Written by vcluster scripts/accounting-up.sh --slurmdbd (a site's own slurmdbd).
AuthType=auth/munge
DbdHost=$(hostname)
SlurmUser=slurm
DebugLevel=info
LogFile=/var/log/slurm/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=$DATABASE
StorageUser=$DB_USER
StoragePass=$pass"
    if [ ! -f "$DBD_CONF" ] || [ "$(cat "$DBD_CONF")" != "$want" ]; then
        install -m 0600 -o slurm -g slurm /dev/null "$DBD_CONF.tmp"
        printf '%s\n' "$want" >"$DBD_CONF.tmp"
        mv "$DBD_CONF.tmp" "$DBD_CONF"
        service slurmdbd stop >/dev/null 2>&1 || true
    fi
    service munge status >/dev/null 2>&1 || start_service munge >/dev/null
    service slurmdbd status >/dev/null 2>&1 || { say "starting slurmdbd"; start_service slurmdbd >/dev/null; }
    # sacctmgr finds slurmdbd through slurm.conf, which may not name it
    # yet: give it one that does.
    conf=$(mktemp)
    trap 'rm -f "$conf"' EXIT
    printf 'ClusterName=%s\nSlurmctldHost=%s\nAccountingStorageType=accounting_storage/slurmdbd\nAccountingStorageHost=%s\n' \
        "$CLUSTER" "$(hostname)" "$(hostname)" >"$conf"
    chmod 0644 "$conf"
    dbd() { SLURM_CONF=$conf sacctmgr --noheader --parsable2 "$@"; }
    wait_until 90 "slurmdbd to answer" dbd show cluster format=cluster
    if ! dbd show cluster format=cluster | grep -qx "$CLUSTER"; then
        say "sacctmgr add cluster $CLUSTER"
        dbd -i add cluster "$CLUSTER" >/dev/null
    fi
fi
say "accounting database ready: $DATABASE, user $DB_USER@localhost, password in $PASS_FILE"
