#!/usr/bin/env bash
# A private single-node SLURM cluster (munged, mariadb, slurmdbd, slurmctld, slurmd) under one folder.
#
#   scripts/slurm-local.sh up DIR       install the Debian packages when missing, write the configs, start
#                                       everything, wait for the node to be idle, print the env to export
#   scripts/slurm-local.sh status DIR   which daemons run, and sinfo
#   scripts/slurm-local.sh down DIR     stop every daemon by PID, in reverse order
#
# `up` prints only `export ...` lines on stdout (logs go to stderr), so `eval "$(scripts/slurm-local.sh up DIR)"`
# works; the same lines are in DIR/env.sh. Everything runs as root, listens on 127.0.0.1 only, and keeps its
# configs, keys, sockets, pid files, state, logs and database under DIR. Ports: SLURM_LOCAL_PORT_BASE (16817)
# for slurmctld, +1 slurmd, +2 slurmdbd, +3 mariadb. Debian/Ubuntu with apt; needs root.
set -euo pipefail

CLUSTER=${SLURM_LOCAL_CLUSTER:-galiplocal}
PORT_BASE=${SLURM_LOCAL_PORT_BASE:-16817}
IDLE_TIMEOUT=${SLURM_LOCAL_IDLE_TIMEOUT:-90}
PACKAGES=(slurm-wlm slurm-client slurmdbd munge mariadb-server)

log() { echo "slurm-local: $*" >&2; }
die() { echo "slurm-local: error: $*" >&2; exit 1; }

usage() { die "usage: $0 up|down|status DIR"; }

[[ $# -eq 2 ]] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd)

ETC=$DIR/etc
RUN=$DIR/run
LOGD=$DIR/log
STATE=$DIR/state
MUNGE_SOCKET=$RUN/munge/munge.socket.2
MUNGE_KEY=$ETC/munge/munge.key
MYSQL_SOCKET=$RUN/mysqld.sock
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
MYSQL_PORT=$((PORT_BASE + 3))
export SLURM_CONF=$ETC/slurm.conf

# name -> pid file; the start order (down walks it backwards)
DAEMONS=(munged mariadb slurmdbd slurmctld slurmd)
pidfile() {
    case $1 in
        munged) echo "$RUN/munge/munged.pid" ;;
        mariadb) echo "$RUN/mariadb.pid" ;;
        *) echo "$RUN/$1.pid" ;;
    esac
}

pid_of() {  # prints the pid when the daemon's pid file names a live process
    local f pid
    f=$(pidfile "$1")
    [[ -s $f ]] || return 1
    pid=$(tr -dc '0-9' <"$f")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 1
    echo "$pid"
}

wait_for() {  # wait_for SECONDS WHAT COMMAND...
    local limit=$1 what=$2 t0=$SECONDS
    shift 2
    until "$@" </dev/null >/dev/null 2>&1; do
        ((SECONDS - t0 < limit)) || return 1
        sleep 0.5
    done
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    [[ $EUID -eq 0 ]] || die "packages missing (${missing[*]}) and not root"
    command -v apt-get >/dev/null || die "packages missing (${missing[*]}) and no apt-get"
    log "installing ${missing[*]} with apt"
    # keep the packages from starting their system-wide services (they would take the default ports and
    # /run/munge); only when no policy is in place already, and removed again afterwards
    local policy=/usr/sbin/policy-rc.d made_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    local rc=0
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}"; } >"${TMPDIR:-/tmp}/slurm-local-apt.log" 2>&1 || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install failed (rc $rc), see ${TMPDIR:-/tmp}/slurm-local-apt.log"
}

write_configs() {
    mkdir -p "$ETC/munge" "$RUN/munge" "$LOGD" "$STATE/slurmctld" "$STATE/slurmd" "$STATE/munge" "$DIR/mysql"
    chmod 700 "$ETC/munge" "$STATE/munge"
    chmod 755 "$RUN" "$RUN/munge"  # munged refuses a socket dir writable by group/others
    if [[ ! -s $MUNGE_KEY ]]; then
        (umask 077 && dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none)
    fi
    chmod 600 "$MUNGE_KEY"

    local cpus mem
    cpus=$(nproc)
    mem=$(free -m | awk '/^Mem:/ {print $2}')
    mem=$((mem > 2048 ? mem - 1024 : mem / 2))  # headroom for the daemons and the OS

    cat >"$ETC/slurm.conf" <<EOF
# written by scripts/slurm-local.sh: a private single-node cluster, loopback only
ClusterName=$CLUSTER
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire: how long a requeued job waits before it may start again (default 120 s)
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=10
CredType=cred/munge
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$(pidfile slurmctld)
SlurmdPidFile=$(pidfile slurmd)
SlurmctldLogFile=$LOGD/slurmctld.log
SlurmdLogFile=$LOGD/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# the munge socket for slurmdbd connections (AuthInfo is not used for those)
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# look at pending jobs every few seconds (defaults: 60 s and 30 s), so requeued and new jobs start at once
SchedulerParameters=sched_interval=2,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=300
SlurmctldTimeout=30
SlurmdTimeout=60
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=7-00:00:00 State=UP
EOF

    local pass_file=$ETC/dbpass pass
    [[ -s $pass_file ]] || (umask 077 && head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' >"$pass_file")
    pass=$(<"$pass_file")
    (umask 077 && cat >"$ETC/slurmdbd.conf" <<EOF
# written by scripts/slurm-local.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
PidFile=$(pidfile slurmdbd)
LogFile=$LOGD/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$MYSQL_PORT
StorageUser=slurm
StoragePass=$pass
StorageLoc=slurm_acct_db
EOF
    )
    chmod 600 "$ETC/slurmdbd.conf"  # slurmdbd refuses a config that others can read (it holds the password)

    cat >"$DIR/env.sh" <<EOF
export SLURM_CONF=$SLURM_CONF
EOF
}

start_munged() {
    pid_of munged >/dev/null && return 0
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
    munged --force --socket="$MUNGE_SOCKET" --key-file="$MUNGE_KEY" --pid-file="$(pidfile munged)" \
        --log-file="$LOGD/munged.log" --seed-file="$STATE/munge/munged.seed" \
        || die "munged did not start, see $LOGD/munged.log"
    wait_for 15 munged bash -c "echo ok | munge --socket='$MUNGE_SOCKET' | unmunge --socket='$MUNGE_SOCKET'" \
        || die "munged does not answer on $MUNGE_SOCKET, see $LOGD/munged.log"
}

mysql_cmd() { mariadb --no-defaults --socket="$MYSQL_SOCKET" -uroot "$@"; }

start_mariadb() {
    pid_of mariadb >/dev/null && return 0
    if [[ ! -d $DIR/mysql/mysql ]]; then
        log "initialising the mariadb data dir"
        mariadb-install-db --no-defaults --datadir="$DIR/mysql" --user=root --skip-test-db \
            >"$LOGD/mariadb-install.log" 2>&1 || die "mariadb-install-db failed, see $LOGD/mariadb-install.log"
    fi
    port_busy "$MYSQL_PORT" && die "port $MYSQL_PORT (mariadb) is taken; set SLURM_LOCAL_PORT_BASE"
    setsid nohup mariadbd --no-defaults --user=root --datadir="$DIR/mysql" --socket="$MYSQL_SOCKET" \
        --port="$MYSQL_PORT" --bind-address=127.0.0.1 --skip-name-resolve --pid-file="$(pidfile mariadb)" \
        --log-error="$LOGD/mariadb.log" --innodb-buffer-pool-size=256M --innodb-log-file-size=64M \
        --innodb-lock-wait-timeout=900 --max-allowed-packet=64M </dev/null >/dev/null 2>&1 &
    wait_for 60 mariadb mysql_cmd -e 'SELECT 1' || die "mariadb did not come up, see $LOGD/mariadb.log"
    wait_for 10 mariadb pid_of mariadb || die "mariadb wrote no pid file"
    local pass
    pass=$(<"$ETC/dbpass")
    mysql_cmd <<EOF || die "could not create the accounting database/user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$pass';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
FLUSH PRIVILEGES;
EOF
}

start_slurmdbd() {
    pid_of slurmdbd >/dev/null && return 0
    port_busy "$DBD_PORT" && die "port $DBD_PORT (slurmdbd) is taken; set SLURM_LOCAL_PORT_BASE"
    slurmdbd || die "slurmdbd did not start, see $LOGD/slurmdbd.log"
    wait_for 60 slurmdbd sacctmgr -n list cluster || die "slurmdbd does not answer, see $LOGD/slurmdbd.log"
    if [[ -z $(sacctmgr -n -P list cluster "$CLUSTER" format=cluster </dev/null) ]]; then
        sacctmgr -i add cluster "$CLUSTER" </dev/null >&2 || die "sacctmgr add cluster failed"
    fi
    if [[ -z $(sacctmgr -n -P list account galip format=account </dev/null) ]]; then
        sacctmgr -i add account galip cluster="$CLUSTER" description=galip-bench organization=local </dev/null >&2 \
            || die "sacctmgr add account failed"
    fi
    if [[ -z $(sacctmgr -n -P list assoc user=root account=galip format=user </dev/null) ]]; then
        sacctmgr -i add user root account=galip cluster="$CLUSTER" </dev/null >&2 || die "sacctmgr add user failed"
    fi
}

start_slurmctld() {
    pid_of slurmctld >/dev/null && return 0
    port_busy "$CTLD_PORT" && die "port $CTLD_PORT (slurmctld) is taken; set SLURM_LOCAL_PORT_BASE"
    slurmctld || die "slurmctld did not start, see $LOGD/slurmctld.log"
    wait_for 60 slurmctld scontrol ping || die "slurmctld does not answer, see $LOGD/slurmctld.log"
}

start_slurmd() {
    pid_of slurmd >/dev/null && return 0
    port_busy "$SLURMD_PORT" && die "port $SLURMD_PORT (slurmd) is taken; set SLURM_LOCAL_PORT_BASE"
    slurmd -N localhost || die "slurmd did not start, see $LOGD/slurmd.log"
}

node_state() { sinfo -h -n localhost -o %T 2>/dev/null | head -n1; }

wait_idle() {
    local t0=$SECONDS state resumed=0
    while :; do
        state=$(node_state)
        case $state in
            idle | mixed | allocated | completing) return 0 ;;
            down* | drain*)
                if ((!resumed)); then
                    scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true
                    resumed=1
                fi
                ;;
        esac
        ((SECONDS - t0 < IDLE_TIMEOUT)) \
            || die "node not idle after ${IDLE_TIMEOUT}s (state '${state:-none}'), see $LOGD/slurmd.log and $LOGD/slurmctld.log"
        sleep 1
    done
}

cmd_up() {
    [[ $EUID -eq 0 ]] || die "needs root (the daemons run as root)"
    install_packages
    write_configs
    start_munged
    start_mariadb
    start_slurmdbd
    start_slurmctld
    start_slurmd
    wait_idle
    log "up: cluster $CLUSTER, node localhost idle, partition debug; logs in $LOGD"
    cat "$DIR/env.sh"
}

stop_pid() {  # stop_pid NAME: TERM, wait, then KILL
    local name=$1 pid i
    pid=$(pid_of "$name") || { rm -f "$(pidfile "$name")"; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ($pid) ignored TERM for 30s, killing"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$(pidfile "$name")"
    log "stopped $name ($pid)"
}

cmd_down() {
    if pid_of slurmctld >/dev/null && [[ -f $SLURM_CONF ]]; then
        # cancel what still runs so no slurmstepd outlives slurmd
        local jobs
        jobs=$(squeue -h -o %i 2>/dev/null || true)
        if [[ -n $jobs ]]; then
            # shellcheck disable=SC2086
            scancel $jobs 2>/dev/null || true
            wait_for 15 jobs bash -c '[[ -z $(squeue -h -o %i 2>/dev/null) ]]' || true
        fi
    fi
    local i
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        stop_pid "${DAEMONS[i]}"
    done
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" "$MYSQL_SOCKET"
}

cmd_status() {
    local d pid rc=0
    for d in "${DAEMONS[@]}"; do
        if pid=$(pid_of "$d"); then
            echo "$d: running (pid $pid)"
        else
            echo "$d: stopped"
            rc=1
        fi
    done
    if ((rc == 0)); then
        echo "SLURM_CONF=$SLURM_CONF"
        sinfo || rc=1
    fi
    return $rc
}

case $CMD in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
esac
