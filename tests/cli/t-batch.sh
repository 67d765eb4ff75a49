#!/bin/sh
# Batch conversion: nf4-quant on one shard at a time, then --index-only,
# gives the whole-directory output byte for byte; examples/Makefile does
# that for every model of a directory under make -j, with merges and
# reports, and rebuilds only what changed.
. "$(dirname "$0")/lib.sh"

# The make that runs this test must not hand its options down.
unset MAKEFLAGS MFLAGS MAKELEVEL

SH=$DATA/llama-sharded
SHARDS=$(cd "$SH" && ls model-*-of-00005.safetensors)

# same_tree DESC A B: directories A and B hold the same files, byte for byte.
same_tree() {
	if diff -r "$2" "$3" >"$T/diff" 2>&1; then ok "$1"; else
		notok "$1"; sed 's/^/#   /' "$T/diff" | head -5
	fi
}

# --- by hand: each shard on its own, then the rest ---------------------
for v in nf4: nodq:--no-double-quant fp4:-t,fp4,-b,128 f32:--dtype,f32; do
	name=${v%%:*}
	args=$(echo "${v#*:}" | tr , ' ')
	# shellcheck disable=SC2086
	"$NF4" $args -o whole-$name "$SH"
	mkdir parts-$name
	for s in $SHARDS; do
		# shellcheck disable=SC2086
		"$NF4" $args -o parts-$name/$s "$SH/$s"
	done
	# shellcheck disable=SC2086
	check "$name: --index-only" "$NF4" $args --index-only \
	    -o parts-$name "$SH"
	same_tree "$name: shards and --index-only give the whole run's files" \
	    whole-$name parts-$name
done

"$NF4" -d -o deq-whole whole-nf4
mkdir deq-parts
for s in $SHARDS; do "$NF4" -d -o deq-parts/$s whole-nf4/$s; done
check "-d --index-only" "$NF4" -d --index-only -o deq-parts whole-nf4
same_tree "-d: shards and --index-only give the whole run's files" \
    deq-whole deq-parts

"$NF4" -o tiny-whole "$EXAMPLE"
mkdir tiny-parts
"$NF4" -o tiny-parts/model.safetensors "$EXAMPLE/model.safetensors"
check "--index-only for a model in one file" "$NF4" --index-only \
    -o tiny-parts "$EXAMPLE"
same_tree "one file: no index, the same files as the whole run" \
    tiny-whole tiny-parts

# --- --index-only writes nothing unless the shards are right -----------
fresh() {
	rm -rf bad
	mkdir bad
	for s in $SHARDS; do cp parts-nf4/$s bad/; done
}
nothing_written() {
	if [ ! -e bad/model.safetensors.index.json ] &&
	    [ ! -e bad/config.json ] && ! ls -a bad | grep -q '\.tmp\.'; then
		ok "$1: nothing written"
	else
		notok "$1: nothing written"
	fi
}
S3=model-00003-of-00005.safetensors

fresh
rm bad/$S3
fails "a missing shard" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names the missing shard" "bad: shard $S3 is missing"
nothing_written "a missing shard"

fresh
cp "$SH/$S3" bad/
fails "an unquantized shard" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names the shard and the tensor" \
    "bad/$S3: tensor 'model.layers.0.mlp.down_proj.weight' is not nf4-quantized"
nothing_written "an unquantized shard"

fresh
"$NF4" -f --no-double-quant -o bad/$S3 "$SH/$S3"
fails "a shard quantized with other options" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message says which option" "other options (without double quantization)"
nothing_written "a shard quantized with other options"

fresh
"$NF4" -f --include '*layernorm*' -o bad/$S3 "$SH/$S3"
fails "a shard with other tensors quantized" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names the tensor" \
    "tensor 'model.layers.0.input_layernorm.weight' is U8 \[32, 1\], not BF16 \[64\]"

fresh
cp parts-nf4/model-00002-of-00005.safetensors bad/$S3
fails "another shard under its name" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names a tensor stored twice" "is stored in two shards"

fresh
"$NF4" -f -o bad/$S3 "$DATA/lora/llama-f32/model-00003-of-00010.safetensors"
fails "a shard of another model" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names the directory" "bad"
nothing_written "a shard of another model"

fresh
printf 'not a checkpoint' > bad/$S3
fails "a file that is not safetensors" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names the file" "bad/$S3"

fresh
head -c 10000 parts-nf4/$S3 > bad/$S3
fails "a truncated shard" 1 "$NF4" --index-only -o bad "$SH"
grep_err "message names the file" "bad/$S3"

# A shard holding one tensor more than its input.
mkdir toy toy-out
mkst toy/model.safetensors '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}' 16
mkst toy-out/model.safetensors '{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[1],"data_offsets":[16,20]}}' 20
fails "a tensor that is not from the input" 1 "$NF4" --index-only \
    -o toy-out toy
grep_err "message names the tensor" "toy-out/model.safetensors: tensor 'b' is not from toy"

fails "an index that exists is not replaced without -f" 1 "$NF4" \
    --index-only -o parts-nf4 "$SH"
grep_err "message names the file" "already exists"
check "-f replaces it" "$NF4" -f --index-only -o parts-nf4 "$SH"
same_tree "and gives the same files" whole-nf4 parts-nf4
fails "--index-only on a file" 1 "$NF4" --index-only -o parts-nf4 \
    "$SH/$S3"
fails "--index-only into a directory that is not there" 1 "$NF4" \
    --index-only -o none "$SH"
usage_fails "--index-only to a .safetensors file" "$NF4" --index-only \
    -o x.safetensors "$SH"
usage_fails "--index-only to standard output" "$NF4" --index-only -o - "$SH"

# --- examples/Makefile ----------------------------------------------------
mkdir in adapters adapters/llama-sharded
ln -s "$SH" in/llama-sharded
cp -R "$DATA/lora/llama-f32" in/llama-f32	# a copy: touched below
cp -R "$EXAMPLE" in/tiny-llama			# a model in one file
ln -s "$DATA/lora/lora-bf16" adapters/llama-sharded/lora-bf16
MODELS="llama-sharded llama-f32 tiny-llama"
for m in $MODELS; do "$NF4" -o ref-$m in/$m; done
"$MERGE" -o ref-merged in/llama-sharded adapters/llama-sharded/lora-bf16

check "make -j 2 -C examples" make -j 2 -C "$TOP/examples" IN="$T/in" \
    OUT="$T/conv" ADAPTERS="$T/adapters"
for m in $MODELS; do
	same_tree "make: $m as nf4-quant writes the whole directory" \
	    ref-$m conv/$m
done
same_tree "make: the adapter merged as lora-merge merges it" ref-merged \
    conv/llama-sharded+lora-bf16
if grep -q "^compared with $T/in/llama-sharded" conv/llama-sharded.txt &&
    grep -q "^checkpoint $T/conv/tiny-llama" conv/tiny-llama.txt; then
	ok "make: a dq-inspect report per model"
else
	notok "make: a dq-inspect report per model"
fi

MK="make -f $TOP/examples/Makefile IN=$T/in OUT=$T/conv ADAPTERS=$T/adapters"
check "make -q: everything is up to date" $MK -q
$MK > make.out 2>&1
if grep -q "Nothing to be done for 'all'" make.out; then
	ok "make again does nothing"
else
	notok "make again does nothing"; sed 's/^/#   /' make.out | head -5
fi

touch stamp
touch in/llama-f32/model-00003-of-00010.safetensors
check "make after one input shard changed" $MK -j 2
made=$(cd conv && find . -newer ../stamp -name '*.safetensors' | sort |
    tr '\n' ' ')
if [ "$made" = "./llama-f32/model-00003-of-00010.safetensors " ]; then
	ok "only that shard is made again"
else
	notok "only that shard is made again (made: $made)"
fi
same_tree "and the directory is still the whole run's" ref-llama-f32 \
    conv/llama-f32

# One target per job, as a job runner on several machines runs them.
JOBS="make -f $TOP/examples/Makefile IN=$T/in OUT=$T/jobs ADAPTERS=$T/none"
$JOBS -s list-shards > shards.lst
n=$(wc -l < shards.lst)
[ "$n" -eq 15 ] && ok "list-shards: 15 shard targets" ||
    notok "list-shards: 15 shard targets ($n)"
fail=0
while read -r t; do $JOBS "$t" > /dev/null 2>&1 || fail=1; done < shards.lst
[ "$fail" -eq 0 ] && ok "each shard target made on its own" ||
    notok "each shard target made on its own"
check "then the rest with make quantize" $JOBS quantize
for m in $MODELS; do
	same_tree "jobs: $m as nf4-quant writes the whole directory" \
	    ref-$m jobs/$m
done

# A shard that fails leaves its model without an index.
mkdir -p in2/broken
cp "$SH"/* in2/broken/
printf 'not a checkpoint' > in2/broken/model-00002-of-00005.safetensors
BROKEN="make -k -f $TOP/examples/Makefile IN=$T/in2 OUT=$T/conv2"
fails_make=0
$BROKEN quantize > make.out 2>&1 || fails_make=1
if [ "$fails_make" -eq 1 ] &&
    grep -q 'in2/broken/model-00002-of-00005.safetensors' make.out &&
    [ -f conv2/broken/model-00001-of-00005.safetensors ] &&
    [ ! -e conv2/broken/model.safetensors.index.json ]; then
	ok "make: a bad shard fails, and its model gets no index"
else
	notok "make: a bad shard fails, and its model gets no index"
	sed 's/^/#   /' make.out | head -5
fi
