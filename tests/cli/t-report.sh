#!/bin/sh
# What the tools tell as they go and when they are done: a progress line
# on a terminal only (script(1) gives the tools one), the summary line
# unless -q, --json on standard output, dq-inspect -s and the order of
# its report.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
B=$L/llama-f32
ESC=$(printf '\033')
CR=$(printf '\r')

# ontty CMD: run the shell command CMD with a terminal as its standard
# output and error; what the terminal got is in tty.out, with each \r
# made a line break.
ontty() {
	script -qec "$1" /dev/null < /dev/null > tty.raw 2>&1
	tr '\r' '\n' < tty.raw > tty.out
}

# progress DESC PROG PATTERN: tty.out holds a progress line of PROG (drawn
# after an erase to the end of the line) that matches PATTERN, and every
# progress line ("PROG: N% ..." or "PROG: SIZE ...") is erased: the next
# line begins with an erase.
progress() {
	if grep -q "^$ESC\[K$2: .*$3" tty.out && awk -v p="^$ESC\\[K$2: " '
	    prev { if (substr($0, 1, 3) != e) bad = 1 }
	    { prev = $0 ~ (p " *[0-9]+% ") || $0 ~ (p "[0-9.]+ [kMGTP]?B") }
	    END { exit bad || prev }' e="$ESC[K" tty.out; then ok "$1"; else
		notok "$1"; sed -n l tty.raw | head -5 | sed 's/^/#   /'
	fi
}

# usage DESC CMD...: CMD exits 2 with a message naming --json first.
usage() {
	desc=$1; shift
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ "$st" -eq 2 ] && head -1 "$T/err" | grep -q -- '--json' &&
	    [ ! -s "$T/out" ]; then ok "$desc"; else
		notok "$desc (exit $st)"; head -2 "$T/err" | sed 's/^/#   /'
	fi
}

# noprogress DESC FILE: FILE holds no progress line (no \r, no erase).
noprogress() {
	if grep -q "$CR\|$ESC" "$2"; then
		notok "$1"; sed -n l "$2" | head -3 | sed 's/^/#   /'
	else ok "$1"; fi
}

# pyck DESC FILE EXPR: EXPR, a Python expression over d (FILE parsed as
# JSON), is true.
pyck() {
	if python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$2" "$3" 2>"$T/py"; then ok "$1"
	else notok "$1"; sed 's/^/#   /' "$T/py" | tail -2; fi
}

# tensor_bytes FILE: bytes of the data section of a safetensors file.
tensor_bytes() {
	python3 -c 'import struct, sys, os
f = open(sys.argv[1], "rb")
n = struct.unpack("<Q", f.read(8))[0]
print(os.path.getsize(sys.argv[1]) - 8 - n)' "$1"
}

# --- progress on a terminal, and only there -----------------------------
ontty "'$NF4' -o q.safetensors '$EXAMPLE'"
progress "nf4-quant: percent, bytes and the tensor" nf4-quant \
    "[0-9]%.* of .*kB: model\."
progress "nf4-quant: tensors done of all" nf4-quant " [0-9]*/21, "
grep -q "^$ESC\[Knf4-quant: .* => .*tensors quantized" tty.out &&
    ok "the summary line follows the erased progress line" ||
    notok "the summary line follows the erased progress line"

ontty "'$NF4' -f -o q.safetensors '$EXAMPLE' 2>err.txt"
noprogress "stderr a file: no progress" err.txt
[ "$(wc -l < err.txt)" -eq 1 ] && grep -q '^nf4-quant: ' err.txt &&
    ok "stderr a file: the summary line alone" ||
    notok "stderr a file: the summary line alone"
noprogress "stderr a file: nothing on the terminal" tty.raw

ontty "'$NF4' -q -f -o q.safetensors '$EXAMPLE'"
[ ! -s tty.raw ] && ok "-q: nothing at all" || notok "-q: nothing at all"

ontty "cat '$EXAMPLE/model.safetensors' | '$NF4' -f -o p.safetensors -"
progress "a pipe converted as it arrives" nf4-quant \
    "[0-9]%.* of .*: model\\."
same "the same output from a pipe" q.safetensors p.safetensors
ontty "cat '$EXAMPLE/model.safetensors' | '$INSPECT' -s -"
progress "a pipe read into the spool" dq-inspect \
    "[0-9]%.* of .*: standard input"

mkdir parts
"$NF4" -q -o parts/model-00001-of-00005.safetensors \
    "$DATA/llama-sharded/model-00001-of-00005.safetensors"
for s in 2 3 4 5; do
	"$NF4" -q -o parts/model-0000$s-of-00005.safetensors \
	    "$DATA/llama-sharded/model-0000$s-of-00005.safetensors"
done
ontty "'$NF4' --index-only -o parts '$DATA/llama-sharded'"
progress "--index-only: tensors checked" nf4-quant \
    "[0-9]% [0-9]*/[0-9]* tensors: model\."
grep -q "^${ESC}\[Knf4-quant: parts: 5 shards checked" tty.out &&
    ok "--index-only: its own summary" || notok "--index-only: its own summary"

ontty "'$MERGE' -o merged '$B' '$L/pair/a'"
progress "lora-merge" lora-merge "[0-9]%.* of .*: model\."

ontty "'$EXTRACT' -r 8 -o ad '$B' merged"
progress "adapter-extract: extraction" adapter-extract \
    "[0-9]%.* of .*: model\.layers\.[0-9]*\.[a-z_]*\.[a-z_]*\$"
grep -q "adapter-extract: ad : .* => .*, 14 modules, r 8, " tty.out &&
    ok "adapter-extract: modules and rank in the summary" ||
    notok "adapter-extract: modules and rank in the summary"

ontty "'$EXTRACT' -r 8 --init pissa -o init --residual resid '$B'"
progress "adapter-extract --init" adapter-extract "[0-9]%.* of .*: model\."

ontty "'$EXTRACT' --resize --energy 0.9 -o small ad"
progress "adapter-extract --resize" adapter-extract \
    "[0-9]% [0-9]*/28 modules: model\."

ontty "'$INSPECT' --verify q.safetensors"
progress "dq-inspect --verify" dq-inspect "[0-9]%.* of .*: model\."
ontty "'$INSPECT' --compare '$EXAMPLE' q.safetensors"
progress "dq-inspect --compare" dq-inspect "[0-9]% [0-9]*/14 tensors: model\."
ontty "'$INSPECT' --compare '$EXAMPLE' q.safetensors 2>err.txt"
noprogress "dq-inspect: stderr a file, no progress" err.txt
[ ! -s err.txt ] && ok "dq-inspect: no summary line" ||
    notok "dq-inspect: no summary line"

# --- the summary line ----------------------------------------------------
check "nf4-quant" "$NF4" -f -o q.safetensors "$EXAMPLE"
grep -q '^nf4-quant: .*tiny-llama : [0-9.]* kB => [0-9.]* kB ([0-9.]*%), 14 of 21 tensors quantized, [0-9.]* s' "$T/err" &&
    [ "$(wc -l < "$T/err")" -eq 1 ] && ok "nf4-quant: one summary line" ||
    notok "nf4-quant: one summary line"
check "lora-merge" "$MERGE" -f -o merged "$B" "$L/pair/a"
grep -q '^lora-merge: .* => .*, 1 adapter, 14 tensors merged, ' "$T/err" &&
    ok "lora-merge: one summary line" || notok "lora-merge: one summary line"
check "-q" "$MERGE" -q -f -o merged "$B" "$L/pair/a"
[ ! -s "$T/err" ] && ok "-q: no summary line" || notok "-q: no summary line"

# --- --json ----------------------------------------------------------------
check "nf4-quant --json" "$NF4" --json -f -o q.safetensors "$EXAMPLE"
cp "$T/out" q.json
n=$("$STDUMP" "$EXAMPLE" | wc -l)
m=$("$STDUMP" q.safetensors | wc -l)
out=$(tensor_bytes q.safetensors)
in=$(tensor_bytes "$EXAMPLE/model.safetensors")
pyck "nf4-quant --json: one entry per input tensor" q.json \
    "len(d['tensors']) == $n == d['totals']['tensors_in']"
pyck "nf4-quant --json: every output tensor, with its checksum" q.json \
    "sum(len(t['outputs']) for t in d['tensors']) == $m ==
     d['totals']['tensors_out'] and all(len(o['xxh3']) == 16
     for t in d['tensors'] for o in t['outputs'])"
pyck "nf4-quant --json: bytes as in the files" q.json \
    "d['totals']['bytes_in'] == $in and d['totals']['bytes_out'] == $out
     == sum(t['bytes_out'] for t in d['tensors'])"
pyck "nf4-quant --json: 14 weights quantized, the rest copied" q.json \
    "[t['action'] for t in d['tensors']].count('quantized nf4') == 14 and
     all(t['action'] == 'copied' for t in d['tensors']
     if t['action'] != 'quantized nf4')"
pyck "nf4-quant --json: dtypes and shapes in and out" q.json \
    "all(t['dtype_in'] == 'BF16' and t['dtype_out'] == 'U8' and
     t['shape_out'][1] == 1 for t in d['tensors']
     if t['action'] == 'quantized nf4')"

check "lora-merge --json" "$MERGE" --json -f -o merged "$B" "$L/pair/a"
cp "$T/out" m.json
n=$("$STDUMP" "$B" | wc -l)
pyck "lora-merge --json: one entry per base tensor, 14 merged" m.json \
    "len(d['tensors']) == $n and [t['action'] for t in
     d['tensors']].count('merged') == 14"

check "adapter-extract --json" "$EXTRACT" --json -f -r 8 -o ad "$B" merged
cp "$T/out" x.json
out=$(tensor_bytes ad/adapter_model.safetensors)
pyck "adapter-extract --json: rank and error per module" x.json \
    "len(d['modules']) == 14 and all(m['rank'] == 8 and
     0 <= m['rel_error'] < 1e-3 for m in d['modules'])"
pyck "adapter-extract --json: the adapter's tensors and bytes" x.json \
    "len(d['tensors']) == 28 and d['totals']['bytes_out'] == $out and
     d['totals']['modules'] == 14 and d['totals']['rank'] == 8"

ontty "'$EXTRACT' --convert -o conv0 init init"
progress "adapter-extract --convert" adapter-extract \
    "[0-9]% [0-9]*/14 modules: model\."
check "adapter-extract --convert --json" "$EXTRACT" --convert --json \
    -o conv init init
cp "$T/out" c.json
pyck "--convert --json: modules and rank from what it wrote" c.json \
    "d['mode'] == 'convert' and d['modules'] == [] and
     d['totals']['modules'] == 14 and d['totals']['rank'] == 16 and
     len(d['tensors']) == 28"
grep_err "--convert: the summary line" \
    "adapter-extract: conv : .* => .*, 14 modules, r 16, "

usage "nf4-quant --json -o -" "$NF4" --json -o - "$EXAMPLE"
usage "lora-merge --json -o -" "$MERGE" --json -o - "$B" "$L/pair/a"
usage "adapter-extract --json -o -" "$EXTRACT" --json -r 8 -o - "$B" \
    merged

check "dq-inspect --json, one input" "$INSPECT" --json q.safetensors
cp "$T/out" i1.json
pyck "dq-inspect --json: one object, one input" i1.json \
    "list(d) == ['inputs', 'totals'] and len(d['inputs']) == 1 and
     d['inputs'][0]['totals']['quantized_tensors'] == 14 and
     d['totals'] == d['inputs'][0]['totals']"
check "dq-inspect --json, two inputs" "$INSPECT" --json q.safetensors "$B"
cp "$T/out" i2.json
pyck "dq-inspect --json: one object, two inputs" i2.json \
    "list(d) == ['inputs', 'totals'] and [i['checkpoint'] for i in d['inputs']] ==
     ['q.safetensors', '$B'] and all(d['totals'][k] ==
     sum(i['totals'][k] for i in d['inputs']) for k in
     ('tensors', 'params', 'bytes', 'quantized_params', 'saved_bytes')) and
     abs(d['totals']['bits_per_param'] - 8 * d['totals']['bytes'] /
     d['totals']['params']) < 1e-9 and abs(d['totals']['dq_saved_bits_per_param']
     * d['totals']['quantized_params'] - sum(i['totals']['dq_saved_bits_per_param']
     * i['totals']['quantized_params'] for i in d['inputs'])) < 1e-6"
check "dq-inspect -s --json" "$INSPECT" -s --json q.safetensors
cp "$T/out" is.json
pyck "dq-inspect -s --json: totals, no tensors" is.json \
    "'tensors' not in d['inputs'][0] and 'totals' in d['inputs'][0]"

# --- dq-inspect's human report -------------------------------------------
check "dq-inspect -s" "$INSPECT" -s q.safetensors
! grep -q '^NAME' "$T/out" && grep -q '^tensors  *21 (14 quantized' "$T/out" &&
    ok "-s: totals, no table" || notok "-s: totals, no table"
check "dq-inspect --verify --plan" "$INSPECT" --verify --plan lora q.safetensors
v=$(grep -n '^verify ' "$T/out" | head -1 | cut -d: -f1)
p=$(grep -n '^plan ' "$T/out" | cut -d: -f1)
t=$(grep -n '^NAME ' "$T/out" | cut -d: -f1)
[ -n "$v" ] && [ -n "$p" ] && [ -n "$t" ] && [ "$v" -lt "$p" ] &&
    [ "$p" -lt "$t" ] && ok "verify, then the plan, then the table" ||
    notok "verify, then the plan, then the table"
grep -q '^DQ saving ' "$T/out" && grep -q '^saved ' "$T/out" &&
    ok "4-bit: DQ saving and what was saved" ||
    notok "4-bit: DQ saving and what was saved"
check "dq-inspect, unquantized" "$INSPECT" "$B"
! grep -q '^DQ saving\|^saved \|^original size\|quantized' "$T/out" &&
    grep -q '^bits/param ' "$T/out" &&
    ok "unquantized: no quantization lines" ||
    notok "unquantized: no quantization lines"
check "dq-inspect -v: a timing" "$INSPECT" -v -s "$B"
grep_err "dq-inspect -v: a timing" "1 checkpoint inspected in [0-9.]* s"
