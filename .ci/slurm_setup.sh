#!/usr/bin/env bash
# A single-node Slurm on this machine (munge + slurmctld + slurmd on localhost) for
# tests/test_launch.py's real sbatch submission. Debian 12, run as root; idempotent.
#
# No cgroups (containers rarely allow them): proctrack/linuxproc, task/none. It always
# exits 0: when Slurm cannot start it says why, and the Slurm test skips itself.
set -uo pipefail

CONF_DIR=/etc/slurm
LOG_DIR=/var/log/slurm
PARTITION=debug
WAIT_S=${SLURM_SETUP_WAIT_S:-60}

say() { echo "slurm_setup: $*"; }
give_up() { say "Slurm is not available: $*"; say "the Slurm test will skip"; exit 0; }

# A node that can take a job (idle, or busy but up).
node_idle() {
  local states
  states=$(sinfo -h -N -o '%T' 2>/dev/null) && grep -qx 'idle\|mixed\|allocated' <<<"$states"
}

controller_up() {
  local ping
  ping=$(scontrol ping 2>/dev/null) && grep -q UP <<<"$ping"
}

install_packages() {
  if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
      && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || give_up "installing packages needs root"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || give_up "apt-get update failed"
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge \
    >/dev/null || give_up "apt-get install slurmctld slurmd slurm-client munge failed"
}

# The node as this machine is: all CPUs, 90% of the memory (slurmd drains a node
# that reports less memory than slurm.conf claims).
write_conf() {
  local cpus mem_mb
  cpus=$(nproc)
  mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
  mkdir -p "$CONF_DIR" "$LOG_DIR" /var/spool/slurmctld /var/spool/slurmd
  cat > "$CONF_DIR/slurm.conf" <<EOF
# Written by .ci/slurm_setup.sh: one node on localhost, no cgroups, no accounting.
ClusterName=spos-ci
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
SlurmdTimeout=60
KillWait=30
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=$PARTITION Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return 0
  fi
  [ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key \
    || give_up "cannot create /etc/munge/munge.key"
  chown munge:munge /etc/munge/munge.key
  chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  runuser -u munge -- /usr/sbin/munged || give_up "munged did not start (see /var/log/munge/munged.log)"
  munge -n | unmunge >/dev/null || give_up "munge does not round-trip a credential"
}

start_daemons() {
  if ! controller_up; then
    slurmctld || give_up "slurmctld did not start: $(tail -n 5 $LOG_DIR/slurmctld.log 2>/dev/null)"
  fi
  if ! pgrep -x slurmd >/dev/null; then
    slurmd -N localhost || give_up "slurmd did not start: $(tail -n 5 $LOG_DIR/slurmd.log 2>/dev/null)"
  fi
}

wait_for_idle_node() {
  local waited=0
  while ! node_idle; do
    if [ "$waited" -ge "$WAIT_S" ]; then
      give_up "node localhost not idle after ${WAIT_S}s: $(sinfo -N 2>&1 | tail -n 2);" \
        "slurmctld log: $(tail -n 3 $LOG_DIR/slurmctld.log 2>/dev/null);" \
        "slurmd log: $(tail -n 3 $LOG_DIR/slurmd.log 2>/dev/null)"
    fi
    # A node that came back (ReturnToService) may still say down: resume it once.
    if [ "$waited" = 10 ]; then
      scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1
    fi
    sleep 1
    waited=$((waited + 1))
  done
}

main() {
  if command -v sinfo >/dev/null && node_idle; then
    say "already running: $(sinfo -h -o '%P %D %T')"
    exit 0
  fi
  install_packages
  if [ -f "$CONF_DIR/slurm.conf" ] && ! grep -q 'slurm_setup.sh' "$CONF_DIR/slurm.conf"; then
    give_up "$CONF_DIR/slurm.conf exists and was not written by this script; leaving it alone"
  fi
  write_conf
  start_munge
  start_daemons
  wait_for_idle_node
  say "ready: $(sinfo -h -o 'partition %P, %D node(s) %T')"
}

main "$@"
