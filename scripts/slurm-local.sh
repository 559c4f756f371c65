#!/usr/bin/env bash
# A real single-node Slurm on this machine, for tests and for trying sweeps:
#   scripts/slurm-local.sh up     install (Debian: slurm-wlm, slurmdbd, munge, mariadb) and start
#                                 munged, MariaDB, slurmdbd (so that sacct works, which submitit
#                                 polls), slurmctld and slurmd, with one partition "debug"
#   scripts/slurm-local.sh down   cancel all jobs and stop the daemons
# Runs as root (a CI machine or a throwaway container). Job credentials live 10 s instead of 120 s,
# so a requeued job starts again within seconds.
set -euo pipefail

HOST=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
CONF=/etc/slurm
SPOOL=/var/spool/slurm
LOGS=/var/log/slurm

wait_for() {  # wait_for SECONDS COMMAND...
  local limit=$1; shift
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  echo "timed out waiting for: $*" >&2; return 1
}

up() {
  if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v mariadbd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm slurmdbd munge mariadb-server >/dev/null
  fi
  mkdir -p "$CONF" "$SPOOL/ctld" "$SPOOL/d" "$LOGS" /run/munge /run/mysqld
  chown munge:munge /run/munge
  chown mysql:mysql /run/mysqld

  # munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
  fi
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
  wait_for 20 munge -n

  # MariaDB for slurmdbd
  if ! pgrep -x mariadbd >/dev/null; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql >/dev/null
    (mariadbd --user=mysql >"$LOGS/mariadb.log" 2>&1 &)
  fi
  wait_for 60 mariadb -e "select 1"
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; \
              CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm'; \
              GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

  cat >"$CONF/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$CONF/slurmdbd.conf"

  cat >"$CONF/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$SPOOL/ctld
SlurmdSpoolDir=$SPOOL/d
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
JobRequeue=1
KillWait=10
MinJobAge=600
ReturnToService=2
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
NodeName=$HOST CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF

  pgrep -x slurmdbd >/dev/null || slurmdbd
  wait_for 60 sacctmgr -n list cluster
  sacctmgr -i add cluster local >/dev/null 2>&1 || true
  pgrep -x slurmctld >/dev/null || slurmctld
  pgrep -x slurmd >/dev/null || slurmd
  wait_for 60 bash -c "sinfo -h -o %T | grep -qE 'idle|mixed|allocated'"
  sinfo
}

down() {
  scancel --user=root >/dev/null 2>&1 || true
  for daemon in slurmd slurmctld slurmdbd mariadbd munged; do
    pkill -x "$daemon" 2>/dev/null || true
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
