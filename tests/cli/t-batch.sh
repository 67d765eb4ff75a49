#!/bin/sh
# Batch conversion: nf4-quant on one shard at a time, then --index-only,
# gives the whole-directory output byte for byte.
. "$(dirname "$0")/lib.sh"

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
