#!/bin/sh
# t-stream.sh - a checkpoint on standard input or a FIFO is used while it
# arrives: the same bytes as from the file, and a stream cut short or
# running on after its last tensor is refused with one line and no output.
. "$(dirname "$0")/lib.sh"

# 3 MiB of finite f16 values (both bytes below 0x40) in one Linear
# weight, so that the stream arrives in several pieces.
head -c 3145728 /dev/urandom |
    tr '\100-\377' '\000-\077\000-\077\000-\077' > data
mkst big.safetensors '{"model.layers.0.mlp.down_proj.weight":{"dtype":"F16","shape":[1024,1536],"data_offsets":[0,3145728]},"model.norm.weight":{"dtype":"F16","shape":[1024],"data_offsets":[3145728,3147776]}}' 0 data
head -c 2048 /dev/urandom | tr '\100-\377' '\000-\077\000-\077\000-\077' \
    >> big.safetensors
size=$(wc -c < big.safetensors)

check "from the file" "$NF4" -o a.safetensors big.safetensors
check "from a pipe" sh -c 'cat "$1" | "$2" -o "$3" -' sh big.safetensors \
    "$NF4" b.safetensors
same "a pipe gives the bytes of the file" a.safetensors b.safetensors
check "from a slow pipe" sh -c '{ head -c 1000000 "$1"; sleep 1;
    tail -c +1000001 "$1"; } | "$2" -o "$3" -' sh big.safetensors "$NF4" \
    s.safetensors
same "a slow pipe gives the bytes of the file" a.safetensors s.safetensors
check "without double quantization, from a pipe" sh -c 'cat "$1" |
    "$2" --no-double-quant -o "$3" -' sh big.safetensors "$NF4" n.safetensors
check "without double quantization, from the file" "$NF4" --no-double-quant \
    -o n2.safetensors big.safetensors
same "the same bytes without double quantization" n.safetensors n2.safetensors

mkfifo ff
cat big.safetensors > ff &
check "from a FIFO" "$NF4" -o c.safetensors ff
wait
same "a FIFO gives the bytes of the file" a.safetensors c.safetensors

check "dequantized from the file" "$NF4" -d -o d.safetensors a.safetensors
check "dequantized from a pipe" sh -c 'cat "$1" | "$2" -d -o "$3" -' sh \
    a.safetensors "$NF4" d2.safetensors
same "dequantized, a pipe gives the bytes of the file" d.safetensors \
    d2.safetensors
check "from a pipe to a pipe" sh -c 'cat "$1" | "$2" -o - - | cat > "$3"' \
    sh big.safetensors "$NF4" p.safetensors
same "a pipe to a pipe gives the bytes of the file" a.safetensors p.safetensors

for cut in 5000 1048576 3000000 $((size - 1)); do
	fails "cut after $cut bytes: refused" 1 sh -c \
	    'head -c "$1" "$2" | "$3" -o "$4" -' sh "$cut" big.safetensors \
	    "$NF4" t.safetensors
	absent "cut after $cut bytes: no output" t.safetensors
done
grep_err "it says the input is truncated" "truncated"
fails "a byte after the last tensor: refused" 1 sh -c \
    '{ cat "$1"; printf x; } | "$2" -o "$3" -' sh big.safetensors "$NF4" \
    t.safetensors
grep_err "it says what follows" "after the last tensor"
absent "a byte after the last tensor: no output" t.safetensors
fails "cut short, to standard output: refused" 1 sh -c \
    'head -c 2000000 "$1" | "$2" -o - - > "$3"' sh big.safetensors "$NF4" \
    t.out
if [ -s t.out ]; then notok "cut short, to standard output: nothing written"
else ok "cut short, to standard output: nothing written"; fi

# A tool that waits for its input runs one thread: no idle thread pool
# of the BLAS library is left spinning on the cores the work needs.  It
# may run on every CPU its parent may (the pool is kept away by giving
# the process one CPU while the libraries start).
waits_alone() {
	"$@" < wait.fifo > /dev/null 2>&1 &
	pid=$!
	sleep 1
	name=$(basename "$1")
	n=$(ls "/proc/$pid/task" 2>/dev/null | wc -l)
	if [ "$n" -eq 0 ]; then
		echo "ok - $name waits with one thread # SKIP no /proc"
		echo "ok - $name may run on every CPU # SKIP no /proc"
	else
		if [ "$n" -eq 1 ]; then ok "$name waits with one thread"
		else notok "$name waits with $n threads"; fi
		mine=$(grep Cpus_allowed_list /proc/$$/status)
		its=$(grep Cpus_allowed_list "/proc/$pid/status")
		if [ "$mine" = "$its" ]; then ok "$name may run on every CPU"
		else notok "$name may run on '$its', not '$mine'"; fi
	fi
	kill "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
}
mkfifo wait.fifo
exec 3<>wait.fifo
waits_alone "$NF4" -o w.out -
waits_alone "$INSPECT" -
exec 3>&-
