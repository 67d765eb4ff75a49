#!/bin/sh
# run.sh - benchmarks: build a synthetic Llama-shaped checkpoint and time
# each tool on it against cat(1) of the same files (the I/O floor).
#
#   BENCH=1g (default, ~1.1 GB bf16) or BENCH=7b (13.5 GB)
#   JOBS=2   threads for the tools
# Results are printed and written to bench/RESULTS.md.
set -eu
cd "$(dirname "$0")/.."
BENCH=${BENCH:-1g}
JOBS=${JOBS:-2}
DIR=${BENCHDIR:-bench/tmp}
mkdir -p "$DIR"
CC=${CC:-cc}
CF="-std=c11 -D_GNU_SOURCE -O2 -Ilib"
$CC $CF -o bench/runstat bench/runstat.c
$CC $CF -o bench/gen bench/gen.c lib/libpeftio.a \
    $(pkg-config --libs zlib jansson libxxhash yaml-0.1 openblas lapacke) -lpthread -lm

base=$DIR/base-$BENCH
[ -d "$base" ] || bench/gen -s "$BENCH" -o "$base"
bytes=$(cat "$base"/*.safetensors | wc -c)

results=$DIR/results.txt
: > "$results"
measure() {
	name=$1; shift
	# Warm the page cache first so that every run reads from memory.
	cat "$base"/*.safetensors > /dev/null
	bench/runstat "$@" 2> "$DIR/stat" > /dev/null || {
		cat "$DIR/stat"; echo "bench: $name failed"; exit 1; }
	set -- $(grep '^runstat:' "$DIR/stat")
	echo "$name $2 $3 $4 $5" >> "$results"
	printf '%-28s %8.2f s  cpu %7.2f s  rss %8d KiB  %6.2f GB/s\n' \
	    "$name" "$2" "$(echo "$3 + $4" | bc)" "$5" \
	    "$(echo "$bytes / $2 / 1000000000" | bc -l)"
}
echo "input: $base, $bytes bytes"
measure "cat" sh -c "cat $base/*.safetensors > /dev/null"
measure "cat > file" sh -c "cat $base/*.safetensors > $DIR/cat.out"
rm -rf "$DIR/q" "$DIR/d"
measure "nf4-quant -j $JOBS" tools/nf4-quant/nf4-quant -q -j "$JOBS" -o "$DIR/q" "$base"
measure "nf4-quant -d -j $JOBS" tools/nf4-quant/nf4-quant -q -d -j "$JOBS" -o "$DIR/d" "$DIR/q"
rm -rf "$DIR/q" "$DIR/d" "$DIR/cat.out"
