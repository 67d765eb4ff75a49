#!/bin/sh
# run.sh - run every tests/cli/t-*.sh and count the results.
TOP=$(cd "$(dirname "$0")/../.." && pwd)
export TOP
pass=0
fail=0
for t in "$TOP"/tests/cli/t-*.sh; do
	name=$(basename "$t" .sh)
	out=$(sh "$t" 2>&1)
	p=$(printf '%s\n' "$out" | grep -c '^ok - ')
	f=$(printf '%s\n' "$out" | grep -c '^not ok - ')
	if [ "$f" -ne 0 ] || [ "$p" -eq 0 ]; then
		printf '%s\n' "$out" | grep -v '^ok - ' | sed "s|^|$name: |"
		[ "$p" -eq 0 ] && [ "$f" -eq 0 ] && f=1
	fi
	echo "$name: $p passed, $f failed"
	pass=$((pass + p))
	fail=$((fail + f))
done
echo "cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
