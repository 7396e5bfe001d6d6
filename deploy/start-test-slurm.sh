#!/usr/bin/env bash
# Start a single-node test SLURM on this machine, or reuse one that already runs.
#
#   deploy/start-test-slurm.sh            # idempotent; exit 0 when partition "debug" is up
#
# What it sets up: munged running as the munge user, a slurm.conf
# with one node (this host, NodeAddr=127.0.0.1, CPUs=2) in partition "debug" (Default=YES),
# slurmctld and slurmd started directly (no systemd). It needs root and the Debian packages
#   apt-get install -y slurmctld slurmd slurm-client munge
# Exit status: 0 SLURM is up; 3 it cannot be started here (the reason on stderr, one line
# starting "cannot start SLURM:"), so a test fixture can skip with that reason; 1 it was
# started but did not come up (the daemons' logs are under /var/log/slurm).
#
# An existing /etc/slurm/slurm.conf that this script did not write is never overwritten.
set -uo pipefail

MARKER="# written by wkdist deploy/start-test-slurm.sh"
CONF=/etc/slurm/slurm.conf
LOGS=/var/log/slurm
TIMEOUT=${WKDIST_SLURM_START_TIMEOUT:-60}

cannot() { echo "cannot start SLURM: $*" >&2; exit 3; }

debug_up() {
    # the state of partition debug's nodes, e.g. "idle", "mix", "alloc"; empty when not up
    local states
    states=$(timeout 10 sinfo -h -p debug -o %t 2>/dev/null) || return 1
    grep -Eq '^(idle|mix|mixed|alloc|allocated|comp|completing)[*~#!%$@^-]?$' <<<"$states"
}

if command -v sinfo >/dev/null 2>&1 && debug_up; then
    echo "SLURM: reusing the running cluster (partition debug is up)"
    exit 0
fi

for tool in sinfo sbatch scancel squeue scontrol slurmctld slurmd munged; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] ||
        cannot "$tool is not installed (apt-get install -y slurmctld slurmd slurm-client munge)"
done
[ "$(id -u)" -eq 0 ] || cannot "the daemons must be started as root (running as $(id -un))"
id munge >/dev/null 2>&1 || cannot "there is no munge user (is the munge package installed?)"
PATH=$PATH:/usr/sbin

exec 9>/run/wkdist-start-test-slurm.lock
flock -w 120 9 || cannot "another start-test-slurm.sh holds /run/wkdist-start-test-slurm.lock"
if debug_up; then  # started by whoever held the lock
    echo "SLURM: reusing the running cluster (partition debug is up)"
    exit 0
fi

# ---------------------------------------------------------------- munge
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none ||
        cannot "cannot write /etc/munge/munge.key"
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    runuser -u munge -- munged --force ||
        cannot "munged does not start (see /var/log/munge/munged.log)"
    for _ in $(seq 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.2
    done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || cannot "munged started but does not answer"
fi

# ---------------------------------------------------------------- slurm.conf
HOST=$(hostname -s)
MEMORY=$(awk '/^MemTotal:/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
if [ -e "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    cannot "$CONF exists and was not written by this script (it has no partition debug that is up); move it away or start that cluster"
fi
mkdir -p /etc/slurm "$LOGS" /var/spool/slurmctld /var/spool/slurmd
cat >"$CONF.new" <<EOF
$MARKER
ClusterName=wkdisttest
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
SchedulerType=sched/backfill
MpiDefault=none
KillWait=5
InactiveLimit=0
MinJobAge=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=2 RealMemory=$MEMORY State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.new" "$CONF"

# ---------------------------------------------------------------- daemons
if ! pgrep -x slurmctld >/dev/null; then
    slurmctld || cannot "slurmctld does not start (see $LOGS/slurmctld.log)"
else
    scontrol reconfigure >/dev/null 2>&1 || true
fi
if ! pgrep -x slurmd >/dev/null; then
    slurmd || cannot "slurmd does not start (see $LOGS/slurmd.log)"
fi

deadline=$((SECONDS + TIMEOUT))
while [ $SECONDS -lt $deadline ]; do
    if debug_up; then
        echo "SLURM: started (node $HOST in partition debug is up)"
        exit 0
    fi
    state=$(timeout 10 sinfo -h -p debug -o %t 2>/dev/null || true)
    case "$state" in
        down*|drain*|drng*|fail*)
            scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
echo "SLURM did not come up within ${TIMEOUT}s: sinfo says '$(sinfo -h -p debug -o '%t %E' 2>&1)'" \
    "(logs: $LOGS/slurmctld.log, $LOGS/slurmd.log)" >&2
exit 1
