#!/usr/bin/env bash
# A one-node Slurm cluster for tests, from Debian's packages (slurmctld,
# slurmd, slurm-client, munge; scripts/setup.sh installs them):
#   tests/slurm/local_cluster.sh start DIR   start munged, slurmctld -D, slurmd -D
#   tests/slurm/local_cluster.sh env DIR     print "export SLURM_CONF=DIR/slurm.conf"
#   tests/slurm/local_cluster.sh stop DIR    cancel every job, stop the daemons
# Everything (slurm.conf, munge key and socket, state, spool, logs, PID files)
# lives in DIR; nothing under /etc is read or written: the clients find the
# cluster through SLURM_CONF. One node, this machine, with its CPUs (at least
# 2), one partition "debug"; the ports are free ones, so two clusters do not
# clash. The daemons run as root (SlurmUser=root) with proctrack/linuxproc and
# task/none, so no cgroups are needed. start exits 77 with one line naming the
# reason when the daemons cannot run here (not root, a package missing, munged
# or a daemon failing to start), 0 once the node is idle. stop kills only the
# processes whose PIDs it recorded, and any job step they left behind (found by
# this cluster's SLURM_CONF in its environment).
set -euo pipefail

usage() { sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2
skip() { echo "local_cluster: skip: $*" >&2; exit 77; }
die() { echo "local_cluster: $*" >&2; exit 1; }

sbin=/usr/sbin
pids_file() { echo "$dir/$1.pid"; }

# PID recorded for a daemon, if that process still runs.
live_pid() {
  local f pid
  f=$(pids_file "$1")
  [ -f "$f" ] || return 1
  read -r pid < "$f" || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# A TCP port nothing listens on (from a random start, so two clusters started
# at once rarely race for the same one; slurmctld fails loudly if they do).
free_port() {
  local p used
  used=$(ss -Htan 2>/dev/null | awk '{ n = split($4, a, ":"); print a[n] }' | sort -u)
  p=$((20000 + RANDOM % 30000))
  while grep -qx "$p" <<< "$used" || [ "$p" = "${2:-}" ]; do p=$((p + 1)); done
  echo "$p"
}

stop_pid() {  # PID NAME: SIGTERM, up to 10 s, then SIGKILL
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "local_cluster: $2 (PID $pid) ignored SIGTERM: SIGKILL" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

case "$action" in
  env)
    [ -f "$dir/slurm.conf" ] || die "$dir/slurm.conf: no cluster there (run start first)"
    echo "export SLURM_CONF=$dir/slurm.conf"
    ;;

  start)
    [ "$(id -u)" -eq 0 ] || skip "not root: slurmd must run as root (SlurmUser=root) to start jobs"
    for prog in "$sbin/munged" "$sbin/slurmctld" "$sbin/slurmd" /usr/bin/sbatch /usr/bin/srun; do
      [ -x "$prog" ] ||
        skip "$prog missing: install munge slurmctld slurmd slurm-client (scripts/setup.sh)"
    done
    command -v ss > /dev/null || skip "ss (iproute2) missing: cannot pick free ports"
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if live_pid slurmctld > /dev/null || live_pid slurmd > /dev/null; then
      die "$dir: a cluster already runs there (stop it first)"
    fi
    mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
    # munged refuses a key or socket directory that others may write.
    chmod 0700 "$dir/munge"
    chmod 0755 "$dir"
    dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    chmod 0400 "$dir/munge/munge.key"

    host=$(hostname -s)
    cpus=$(nproc)
    # Two ranks per run need two CPUs: a 1-CPU machine still gets a 2-CPU node
    # (config_overrides: slurmd takes slurm.conf's figures, not the hardware's).
    [ "$cpus" -ge 2 ] || cpus=2
    ctld_port=$(free_port)
    slurmd_port=$(free_port "" "$ctld_port")
    # PMIx when Slurm has the plugin (Debian's has; OpenMPI 4 speaks it).
    mpi=none
    if [ -n "$(find /usr/lib -path '*slurm*' -name mpi_pmix.so -print -quit 2>/dev/null)" ]; then
      mpi=pmix
    fi
    cat > "$dir/slurm.conf" <<CONF
# Written by tests/slurm/local_cluster.sh: a one-node test cluster.
ClusterName=moetest
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/munge
CredType=cred/munge
# cred_expire: how long a requeued job waits before it may start again
# (default 120 s; slurmd refuses the job's revoked credential until then).
AuthInfo=socket=$dir/munge/munge.socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups: works in containers and on CI machines.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
MpiDefault=$mpi
SchedulerType=sched/builtin
# Look at pending jobs every 2 s (default 60): a requeued job starts soon after
# its hold.
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/log/jobcomp.log
JobRequeue=1
ReturnToService=2
# Short timeouts: tests take seconds. KillWait: SIGTERM to SIGKILL at a
# cancel, requeue or time limit (a checkpoint of a tiny run takes well under).
KillWait=10
MessageTimeout=10
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
MinJobAge=600
OverTimeLimit=0
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
    export SLURM_CONF="$dir/slurm.conf"

    "$sbin/munged" --foreground --force --socket="$dir/munge/munge.socket" \
      --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.daemon.pid" \
      --seed-file="$dir/munge/munged.seed" --log-file="$dir/log/munged.log" \
      > "$dir/log/munged.out" 2>&1 &
    echo $! > "$(pids_file munged)"
    for ((i = 0; i < 50; i++)); do
      [ -S "$dir/munge/munge.socket" ] && break
      live_pid munged > /dev/null || skip "munged did not start: $(tail -n 1 "$dir/log/munged.out" "$dir/log/munged.log" 2>/dev/null | grep . | tail -n 1)"
      sleep 0.1
    done
    [ -S "$dir/munge/munge.socket" ] || skip "munged did not create its socket in 5 s"

    "$sbin/slurmctld" -D -i -f "$SLURM_CONF" > "$dir/log/slurmctld.out" 2>&1 &
    echo $! > "$(pids_file slurmctld)"
    "$sbin/slurmd" -D -f "$SLURM_CONF" > "$dir/log/slurmd.out" 2>&1 &
    echo $! > "$(pids_file slurmd)"

    # Ready when the node is idle (slurmd registered with slurmctld).
    state=""
    for ((i = 0; i < 300; i++)); do
      for d in slurmctld slurmd; do
        if ! live_pid "$d" > /dev/null; then
          why=$(grep -h -i 'error\|fatal' "$dir/log/$d.log" "$dir/log/$d.out" 2>/dev/null | tail -n 1)
          "$0" stop "$dir" > /dev/null 2>&1 || true
          skip "$d did not start: ${why:-no message (see $dir/log/$d.log)}"
        fi
      done
      state=$(sinfo -h -N -o '%t' 2>/dev/null | head -n 1 || true)
      [ "$state" = idle ] && break
      sleep 0.1
    done
    if [ "$state" != idle ]; then
      "$0" stop "$dir" > /dev/null 2>&1 || true
      skip "the node did not become idle in 30 s (state '${state:-unknown}'; logs in $dir/log)"
    fi
    echo "local_cluster: up in $dir (node $host, $cpus CPUs, MpiDefault=$mpi, ports $ctld_port/$slurmd_port)" >&2
    echo "export SLURM_CONF=$SLURM_CONF"
    ;;

  stop)
    [ -d "$dir" ] || exit 0
    dir=$(cd "$dir" && pwd)
    export SLURM_CONF="$dir/slurm.conf"
    # Jobs first, while slurmctld and slurmd can still end them.
    if live_pid slurmctld > /dev/null && live_pid slurmd > /dev/null; then
      scancel --full --quiet --partition=debug 2>/dev/null || true
      for ((i = 0; i < 150; i++)); do
        [ -z "$(squeue -h -t running,completing -o %i 2>/dev/null)" ] && break
        sleep 0.1
      done
    fi
    for d in slurmd slurmctld munged; do
      if pid=$(live_pid "$d"); then stop_pid "$pid" "$d"; fi
      rm -f "$(pids_file "$d")"
    done
    # Job steps outlive slurmd (slurmstepd daemonizes): kill this cluster's
    # slurmstepd processes (slurmd gave them its SLURM_CONF) and what they run.
    steps=()
    for p in /proc/[0-9]*; do
      [ "$(cat "$p/comm" 2>/dev/null)" = slurmstepd ] || continue
      tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qxF "SLURM_CONF=$SLURM_CONF" &&
        steps+=("${p#/proc/}")
    done
    if [ ${#steps[@]} -gt 0 ]; then
      # The steps and their descendants, parents first.
      mapfile -t doomed < <(ps -e -o pid=,ppid= | awk -v roots="${steps[*]}" '
        BEGIN { n = split(roots, r, " "); for (i = 1; i <= n; i++) keep[r[i]] = 1 }
        { parent[$1] = $2; order[++m] = $1 }
        END { do { added = 0
                   for (i = 1; i <= m; i++) if (!(order[i] in keep) && (parent[order[i]] in keep)) { keep[order[i]] = 1; added = 1 }
                 } while (added)
              for (p in keep) print p }')
      echo "local_cluster: killing left-over job steps: ${doomed[*]}" >&2
      kill -KILL "${doomed[@]}" 2>/dev/null || true
    fi
    ;;

  *) usage ;;
esac
