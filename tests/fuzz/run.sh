#!/bin/sh
# run.sh SECONDS TARGET... - run each libFuzzer target (.../fuzz_NAME)
# for SECONDS on a copy of tests/fuzz/corpus/NAME.  A crash fails the
# run; the input that caused it is kept as tests/fuzz/build/crash-NAME-*.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
build=$top/tests/fuzz/build
secs=$1
shift
# Targets that need files make them under $TMPDIR: a tmpfs where there
# is one (ext4 flushes a file that is truncated and rewritten, which
# makes such a target several times slower).
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then
	TMPDIR=/dev/shm
	export TMPDIR
fi
status=0
for bin in "$@"; do
	name=${bin##*/fuzz_}
	work=$build/corpus-$name
	log=$build/$name.log
	rm -rf "$work"
	mkdir -p "$work"
	if [ -d "$top/tests/fuzz/corpus/$name" ]; then
		cp "$top/tests/fuzz/corpus/$name"/* "$work"/ 2>/dev/null
	fi
	if "$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix="$build/crash-$name-" \
	    "$work" >"$log" 2>&1; then
		runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
		echo "fuzz_$name: ${runs:-?} runs in $secs s, no crash"
	else
		echo "fuzz_$name: FAILED (log: $log)"
		grep -v '^#[0-9]' "$log" | tail -30 | sed 's/^/    /'
		status=1
	fi
done
exit $status
