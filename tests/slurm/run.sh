#!/bin/sh
# run.sh - the Slurm recipe of README.md ("Many models, many machines"),
# run for real on a Slurm of one node started on this machine, and its
# output compared byte for byte with a local make -f examples/Makefile.
#
#   sh tests/slurm/run.sh        (make check-slurm installs what it needs)
#
# Needs root and Debian's slurm-wlm and munge.  munged is started unless
# it runs already; slurmctld and slurmd run with a slurm.conf generated in
# a temporary directory (no cgroups: proctrack/linuxproc, task/none),
# which also holds their state, spool, PID and log files.  Whatever way
# this script ends, the jobs are cancelled, the daemons it started are
# stopped by PID and the directory is removed.
#
# The commands are copied from README.md: the indented block after "With
# Slurm", run as they are but for /shared, which becomes a directory of
# the test.  Models there: a sharded one, another with ten shards, and
# examples/tiny-llama in one file; adapters for two of them.
set -eu
TOP=$(cd "$(dirname "$0")/../.." && pwd)
t0=$(date +%s)

# The make that runs this script must not hand its options down.
unset MAKEFLAGS MFLAGS MAKELEVEL

say() { echo "slurm: $*"; }
die() { echo "slurm: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "needs root (slurmd runs as root)"
for c in /usr/sbin/munged /usr/sbin/slurmctld /usr/sbin/slurmd; do
	[ -x $c ] || die "$c missing: scripts/install-deps --slurm installs it"
done
for t in nf4-quant lora-merge dq-inspect; do
	[ -x "$TOP/tools/$t/$t" ] || die "tools/$t/$t is not built"
done

W=$(mktemp -d "${TMPDIR:-/tmp}/peftio-slurm.XXXXXX")
S=$W/slurm
started_munged=

# stop PIDFILE...: TERM those processes, wait up to 10 s for them to
# end, then KILL the ones left.
stop() {
	pids=
	for f in "$@"; do
		pid=$(cat "$f" 2>/dev/null) && kill "$pid" 2>/dev/null &&
		    pids="$pids $pid"
	done
	i=0
	for pid in $pids; do
		while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do
			sleep 0.1; i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null
	done
}

cleanup() {
	st=$?
	set +e
	if [ -f "$S/slurm.conf" ] && [ -s "$S/slurmctld.pid" ]; then
		jobs=$(squeue -h -o %i 2>/dev/null)
		# shellcheck disable=SC2086
		[ -z "$jobs" ] || scancel $jobs 2>/dev/null
	fi
	if [ $st -ne 0 ] && [ -d "$S" ]; then
		for f in "$S"/slurmctld.log "$S"/slurmd.log "$W"/work/slurm-*.out; do
			[ -s "$f" ] || continue
			echo "--- $f"; tail -n 15 "$f"
		done
	fi
	stop "$S/slurmd.pid" "$S/slurmctld.pid"
	[ -z "$started_munged" ] || stop /run/munge/munged.pid
	rm -rf "$W"
	exit $st
}
trap cleanup EXIT
trap 'exit 1' HUP INT TERM

# --- the recipe, from README.md ----------------------------------------
awk '/With Slurm/ { on = 1; next }
    on && /^    / { sub(/^    /, ""); print; got = 1; next }
    on && got { exit }' "$TOP/README.md" > "$W/readme.sh"
[ -s "$W/readme.sh" ] || die "README.md has no commands after \"With Slurm\""
grep -q sbatch "$W/readme.sh" || die "README.md's Slurm commands run no sbatch"
sed "s|/shared/|$W/work/shared/|g" "$W/readme.sh" > "$W/recipe.sh"
say "README.md's commands, with /shared/ in $W/work/shared/:"
sed 's/^/    /' "$W/readme.sh"

# --- the shared file system: models and adapters -------------------------
mkdir "$W/work"
ln -s "$TOP/examples" "$W/work/examples"
ln -s "$TOP/tools" "$W/work/tools"
populate() {
	rm -rf "$1"
	mkdir -p "$1/models" "$1/adapters/llama-f32" "$1/adapters/tiny-llama"
	cp -r "$TOP/tests/data/llama-sharded" "$1/models/llama"
	cp -r "$TOP/tests/data/lora/llama-f32" "$1/models/llama-f32"
	cp -r "$TOP/examples/tiny-llama" "$1/models/tiny-llama"
	cp -r "$TOP/tests/data/lora/lora-bf16" "$1/adapters/llama-f32/lora-bf16"
	cp -r "$TOP/examples/tiny-lora" "$1/adapters/tiny-llama/tiny-lora"
}

# --- the local run: make -f examples/Makefile with the README's $mk ----
mkline=$(grep '^mk=' "$W/recipe.sh") ||
    die "README.md's Slurm commands set no mk= (the make command line)"
populate "$W/work/shared"
(
	cd "$W/work"
	eval "$mkline"
	# shellcheck disable=SC2154
	$mk -s -j2 > "$W/local.log" 2>&1
) || { cat "$W/local.log"; die "the local make failed"; }
mv "$W/work/shared" "$W/local"
populate "$W/work/shared"
reports=$(find "$W/local" -name '*.txt' | wc -l)
merges=$(find "$W/local" -type d -name '*+*' | wc -l)
if [ "$reports" -ne 3 ] || [ "$merges" -ne 2 ]; then
	die "the local make made $reports reports and $merges merges, not 3 and 2"
fi

# --- a Slurm of one node ---------------------------------------------------
mkdir -p "$S/state" "$S/spool"
host=$(hostname -s)
cat > "$S/slurm.conf" <<CONF
ClusterName=peftio-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0,kill_invalid_depend
MailProg=/bin/true
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool
SlurmctldPidFile=$S/slurmctld.pid
SlurmdPidFile=$S/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=all Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
SLURM_CONF=$S/slurm.conf
export SLURM_CONF

if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
	say "munged runs already"
else
	[ -f /etc/munge/munge.key ] ||
	    die "/etc/munge/munge.key missing (made when munge is installed)"
	install -d -o munge -g munge -m 0755 /run/munge
	runuser -u munge -- /usr/sbin/munged
	started_munged=1
	i=0
	until munge -n 2>/dev/null | unmunge >/dev/null 2>&1; do
		[ $i -lt 100 ] || die "munged does not answer"
		sleep 0.1; i=$((i + 1))
	done
fi
/usr/sbin/slurmctld -f "$SLURM_CONF"
/usr/sbin/slurmd -f "$SLURM_CONF"
i=0
until [ "$(sinfo -h -o %T 2>/dev/null)" = idle ]; do
	[ $i -lt 300 ] || die "the node is not idle after 30 s: $(sinfo -h 2>&1)"
	sleep 0.1; i=$((i + 1))
done
t1=$(date +%s)
say "slurmctld and slurmd up, node $host idle ($(nproc) CPUs)"

# --- the README's commands, then wait for the jobs -------------------------
(cd "$W/work" && sh -e "$W/recipe.sh") > "$W/submit.log" 2>&1 ||
    { cat "$W/submit.log"; die "README.md's commands failed"; }
cat "$W/submit.log"
i=0
while [ -n "$(squeue -h -o %i)" ]; do
	[ $i -lt 2400 ] || { squeue; die "the jobs have not ended after 240 s"; }
	sleep 0.1; i=$((i + 1))
done
t2=$(date +%s)

# Every job ended COMPLETED: each shard of the array, and the last one.
n=$(wc -l < "$W/work/shards.txt")
scontrol -o show job > "$W/jobs"
done_=$(grep -c 'JobState=COMPLETED' "$W/jobs" || :)
if [ "$done_" -ne $((n + 1)) ]; then
	sed -n 's/^JobId=\([0-9]*\).*JobState=\([A-Z_]*\).*/job \1: \2/p' "$W/jobs"
	die "$done_ jobs completed, not $((n + 1)) ($n shards and the last one)"
fi
say "$n array jobs (one per shard) and the dependent job completed in $((t2 - t1)) s"

# Each array job made its own shard and nothing else, and the last job
# none of them: what make ran is in the jobs' output files (slurm-A_T.out
# and slurm-J.out), one command per line; outputs follow -o.
outputs() { sed -n 's/.* -o \([^ ]*\) .*/\1/p' "$@"; }
t=0
while IFS= read -r shard; do
	t=$((t + 1))
	set -- "$W"/work/slurm-*_$t.out
	[ -f "$1" ] || die "no output file of array job $t"
	[ "$(outputs "$1")" = "$shard" ] ||
	    die "array job $t made $(outputs "$1" | tr '\n' ' '), not $shard"
done < "$W/work/shards.txt"
last=
for f in "$W"/work/slurm-*.out; do
	case $f in *_[0-9]*.out) ;; *) last=$f ;; esac
done
[ -n "$last" ] || die "no output file of the dependent job"
[ -n "$(outputs "$last")" ] || die "the dependent job ran no command"
if outputs "$last" | grep -qxF -f "$W/work/shards.txt"; then
	die "the dependent job made shards again"
fi
say "each array job made its shard, the dependent job the rest"

# --- the same files as the local run ----------------------------------------
if ! diff -r "$W/local" "$W/work/shared" > "$W/diff" 2>&1; then
	head -20 "$W/diff"
	die "the output under Slurm differs from the local make's"
fi
files=$(find "$W/local" -type f | wc -l)
say "the output tree is byte for byte the local make's ($files files)"
say "passed in $(( $(date +%s) - t0 )) s"
