#!/bin/sh
# lora-merge end to end: PEFT's own bf16 merge bit for bit, 4-bit bases,
# -j, recipes, and refusals that write nothing.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora

# usage_err DESC CMD...: CMD must exit 2 (a usage error, usage printed).
usage_err() {
	desc=$1; shift
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ "$st" -eq 2 ] && grep -q '^usage: ' "$T/err"; then ok "$desc"
	else notok "$desc (exit $st, want 2)"; fi
}
BASE16=$DATA/llama-sharded	# the bf16 llama the bf16 adapter was trained on

# --- PEFT's merge_and_unload, bf16: every tensor bit for bit -----------
check "merge lora-bf16 into the bf16 base" "$MERGE" -o m16 "$BASE16" \
    "$L/lora-bf16"
"$STDUMP" m16 > m16.lst
same "bf16 merge equals PEFT's merged model" "$L/peft-merged-lora-bf16.lst" \
    m16.lst
same "config.json copied" "$BASE16/config.json" m16/config.json
if [ -f m16/model-00001-of-00005.safetensors ] &&
    [ -f m16/model.safetensors.index.json ]; then
	ok "sharded layout mirrored"
else
	notok "sharded layout mirrored"
fi

# --- output independent of -j; single file; stdout ---------------------
for m in "" "-m cat -w 0.7,0.3" "-m svd -w 0.7,0.3"; do
	for j in 1 2 8; do
		# shellcheck disable=SC2086
		check "f32 pair $m -j $j" "$MERGE" $m -j $j \
		    -o j$j.safetensors "$L/llama-f32" "$L/pair/a" "$L/pair/b"
	done
	same "same bytes with -j 1 and -j 2 ($m)" j1.safetensors j2.safetensors
	same "same bytes with -j 1 and -j 8 ($m)" j1.safetensors j8.safetensors
	rm -f j1.safetensors j2.safetensors j8.safetensors
done
"$MERGE" -o - "$L/llama-f32" "$L/dora-f32" > pipe.safetensors 2>/dev/null
check "merge to a file" "$MERGE" -o file.safetensors "$L/llama-f32" \
    "$L/dora-f32"
same "stdout output equals file output" file.safetensors pipe.safetensors

# --- recipe = command line ---------------------------------------------
check "ties from the command line" "$MERGE" -m ties -w 0.7,0.3 \
    --density 0.5 -o cl.safetensors "$L/llama-f32" "$L/pair-same-r/a" \
    "$L/pair-same-r/b"
cat > r.yaml <<EOT
base: $L/llama-f32
adapters:
  - path: $L/pair-same-r/a
    weight: 0.7
  - path: $L/pair-same-r/b
    weight: 0.3
method: ties
density: 0.5
output: rc.safetensors
EOT
check "ties from a recipe" "$MERGE" --recipe r.yaml
same "recipe and command line give the same bytes" cl.safetensors \
    rc.safetensors
check "dare_ties with a seed" "$MERGE" -m dare_ties -w 1,1 --density 0.5 \
    --seed 3 -o d1.safetensors "$L/llama-f32" "$L/pair-same-r/a" \
    "$L/pair-same-r/b"
check "dare_ties again" "$MERGE" -m dare_ties -w 1,1 --density 0.5 \
    --seed 3 -o d2.safetensors "$L/llama-f32" "$L/pair-same-r/a" \
    "$L/pair-same-r/b"
same "dare_ties is reproducible for a seed" d1.safetensors d2.safetensors

# --- 4-bit base: equals dequantize-then-merge ---------------------------
check "quantize the bf16 base" "$NF4" -o q "$BASE16"
check "dequantize it" "$NF4" -d -o dq q
check "merge into the dequantized base" "$MERGE" -o mdq dq "$L/lora-bf16"
check "merge into the NF4 base" "$MERGE" -o mq q "$L/lora-bf16"
"$STDUMP" mdq > mdq.lst
"$STDUMP" mq > mq.lst
same "NF4 merge equals dequantize then merge" mdq.lst mq.lst
same "NF4 merge writes the dequantized config" dq/config.json mq/config.json
check "merge and re-quantize" "$MERGE" --requant -o rq q "$L/lora-bf16"
if grep -q '"quantization_config"' rq/config.json &&
    "$STDUMP" rq | grep -q 'q_proj.weight.quant_state.bitsandbytes__nf4 U8'
then ok "--requant writes a 4-bit checkpoint"
else notok "--requant writes a 4-bit checkpoint"; fi
check "dequantize the re-quantized merge" "$NF4" -d -o rqd rq

# --- unmerge ------------------------------------------------------------
check "unmerge" "$MERGE" --unmerge -o um m16 "$L/lora-bf16"
"$STDUMP" um | awk '{ print $1, $2, $3 }' > um.shapes
"$STDUMP" "$BASE16" | awk '{ print $1, $2, $3 }' > base.shapes
same "unmerge keeps names, dtypes and shapes" base.shapes um.shapes

# --- refusals: exit 1, one line, nothing written -------------------------
mkdir pt
echo '{"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 20}' \
    > pt/adapter_config.json
fails "prefix tuning cannot be merged" 1 "$MERGE" -o out1 "$BASE16" pt
grep_err "says why" "cannot be merged into weights"
absent "nothing written for prefix tuning" out1
mkdir nomod
cp "$L/lora-bf16/adapter_config.json" nomod/
mkst nomod/adapter_model.safetensors \
    '{"base_model.model.foo.bar.lora_A.weight":{"dtype":"F32","shape":[8,4],"data_offsets":[0,128]},"base_model.model.foo.bar.lora_B.weight":{"dtype":"F32","shape":[4,8],"data_offsets":[128,256]}}' 256
fails "module not in the base" 1 "$MERGE" -o out2 "$BASE16" nomod
grep_err "names the module" "foo.bar"
absent "nothing written for a missing module" out2
mkdir badshape
cp "$L/lora-bf16/adapter_config.json" badshape/
mkst badshape/adapter_model.safetensors \
    '{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight":{"dtype":"F32","shape":[8,5],"data_offsets":[0,160]},"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight":{"dtype":"F32","shape":[64,8],"data_offsets":[160,2208]}}' 2208
fails "shapes that do not fit" 1 "$MERGE" -o out3 "$BASE16" badshape
grep_err "names the tensor" "q_proj"
absent "nothing written for a bad shape" out3
fails "DoRA cannot be unmerged" 1 "$MERGE" --unmerge -o out4 \
    "$L/llama-f32" "$L/dora-f32"
fails "linear needs equal ranks" 1 "$MERGE" -m linear -o out5 \
    "$L/llama-f32" "$L/pair/a" "$L/pair/b"
fails "existing output without -f" 1 "$MERGE" -o m16 "$BASE16" \
    "$L/lora-bf16"
check "existing output with -f" "$MERGE" -f -o m16 "$BASE16" "$L/lora-bf16"
usage_err "unknown method" "$MERGE" -m bogus -o out6 "$BASE16" "$L/lora-bf16"
usage_err "weights do not match the adapters" "$MERGE" -w 1,2 -o out7 \
    "$BASE16" "$L/lora-bf16"
usage_err "ties without --density" "$MERGE" -m ties -o out8 \
    "$L/llama-f32" "$L/pair-same-r/a" "$L/pair-same-r/b"
usage_err "no adapter" "$MERGE" -o out9 "$BASE16"

# --- a base on standard input writes to standard output ----------------
"$NF4" -q --exclude '*' -o one.safetensors "$L/llama-f32"
if "$MERGE" - "$L/lora-bf16" < one.safetensors > piped.safetensors 2>"$T/err" &&
    "$MERGE" -q -o named.safetensors one.safetensors "$L/lora-bf16"; then
	same "base on stdin without -o: stdout, as with a named base" \
	    piped.safetensors named.safetensors
else
	notok "base on stdin without -o: stdout"; sed 's/^/#   /' "$T/err"
fi
