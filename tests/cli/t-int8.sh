#!/bin/sh
# 8-bit (LLM.int8) and the other on-disk forms transformers writes:
# nf4-quant -t int8, -d, --storage, GPT-2's Conv1D weights; lora-merge
# and dq-inspect on an 8-bit base; malformed 8-bit input.
. "$(dirname "$0")/lib.sh"

R=$DATA/bnb-ref
I=$DATA/int8

# listed DESC FILE PATTERN: stdump of FILE has a line matching PATTERN.
listed() {
	if "$STDUMP" "$2" | grep -q -- "$3"; then ok "$1"; else
		notok "$1 (no '$3')"; fi
}

# --- transformers' own checkpoints of examples/tiny-llama and GPT-2 ------
# tests/data/bnb-ref/*.lst (make-ref.sh) list what transformers 5.17 +
# bitsandbytes 0.50 wrote; nf4-quant must write the same.
for v in int8:-t,int8:"$EXAMPLE" nf4-dq1-bf16:--storage,bf16:"$EXAMPLE" \
    gpt2-int8:-t,int8:"$I/gpt2" gpt2-nf4-dq1::"$I/gpt2"; do
	name=${v%%:*}
	rest=${v#*:}
	args=$(echo "${rest%%:*}" | tr , ' ')
	src=${rest#*:}
	# shellcheck disable=SC2086
	check "quantize $name" "$NF4" $args -o "$name" "$src"
	"$STDUMP" "$name" > "$name.lst"
	same "$name: every tensor as transformers wrote it" "$R/$name.lst" \
	    "$name.lst"
	same "$name: config.json as transformers wrote it" \
	    "$R/$name.config.json" "$name/config.json"
done

# --- dequantize ----------------------------------------------------------
check "dequantize 8-bit" "$NF4" -d -o deq int8
"$STDUMP" deq | awk '{ print $1, $2, $3 }' > deq.shapes
"$STDUMP" "$EXAMPLE" | awk '{ print $1, $2, $3 }' > in.shapes
same "8-bit dequantized: names, dtypes and shapes of the original" \
    in.shapes deq.shapes
if grep -q '"quantization_config"' deq/config.json; then
	notok "-d removes the 8-bit quantization_config"
else
	ok "-d removes the 8-bit quantization_config"
fi
check "dequantize 8-bit to f32" "$NF4" -d --dtype f32 -o deq32.safetensors \
    int8
listed "f32 output" deq32.safetensors '^model.layers.0.mlp.up_proj.weight F32 \[344,128\]'
for b in gpt2-int8 gpt2-nf4-dq1; do
	check "dequantize $b" "$NF4" -d -o "$b.d" "$b"
	"$STDUMP" "$b.d" | awk '{ print $1, $3 }' > "$b.shapes"
	"$STDUMP" "$I/gpt2" | awk '{ print $1, $3 }' > gpt2.shapes
	same "$b: Conv1D weights back to [in, out]" gpt2.shapes "$b.shapes"
done
check "bf16 storage dequantizes" "$NF4" -d -o deqs nf4-dq1-bf16
check "quantize with u8 storage" "$NF4" -o u8 "$EXAMPLE"
check "dequantize it" "$NF4" -d -o dequ u8
"$STDUMP" deqs > deqs.lst
"$STDUMP" dequ > dequ.lst
same "bf16 storage dequantizes as u8 storage" dequ.lst deqs.lst
for st in f16 f32 u8; do
	check "--storage $st" "$NF4" --storage "$st" -o "s$st" "$EXAMPLE"
	check "--storage $st dequantizes" "$NF4" -d -o "s$st.d" "s$st"
	"$STDUMP" "s$st.d" > "s$st.lst"
	same "--storage $st: the same values" dequ.lst "s$st.lst"
done
listed "--storage f32: F32 elements" sf32 'q_proj.weight F32 \[2048,1\]'
grep -q '"bnb_4bit_quant_storage": "float16"' sf16/config.json &&
    ok "--storage f16: config says so" || notok "--storage f16: config says so"

# --- already quantized: refused, nothing written --------------------------
fails "8-bit input without -d" 1 "$NF4" -o out1 int8
grep_err "says it is 8-bit" "already 8-bit quantized"
absent "nothing written for 8-bit input" out1
mkdir gptq
cp "$EXAMPLE/model.safetensors" gptq/
echo '{"quantization_config": {"quant_method": "gptq", "bits": 4}}' \
    > gptq/config.json
fails "a GPTQ config.json" 1 "$NF4" -o out2 gptq
grep_err "names the method" "gptq"
absent "nothing written for GPTQ" out2
mkst odd.safetensors '{"a.weight":{"dtype":"F32","shape":[3,6],"data_offsets":[0,72]}}' 72
fails "--storage that would drop codes" 1 "$NF4" --storage f32 \
    -o out3.safetensors odd.safetensors
grep_err "says why" "whole number"
absent "nothing written for --storage f32" out3.safetensors
usage_fails "-t int8 with --storage" "$NF4" -t int8 --storage bf16 \
    -o out4 "$EXAMPLE"

# --- malformed 8-bit weights: every tool exits 1, one line, no output -----
W=model.layers.0.mlp.up_proj
H="\"$W.weight\":{\"dtype\":\"I8\",\"shape\":[2,4],\"data_offsets\":[0,8]}"
# Scales of 1.0, and Inf and NaN; eight codes.
printf '\000\000\200\077' > one.bin
cat one.bin one.bin > two.bin
printf '\000\000\200\177\000\000\300\177' > inf.bin
printf '\001\002\003\004\005\006\007\010' > codes.bin
printf '\002' > two.fmt
: > empty.bin
# mkst8 FILE JSON DATAFILE...: the data files one after the other.
mkst8() {
	f=$1; j=$2; shift 2
	cat "$@" > "$f.data"
	mkst "$f" "$j" 0 "$f.data"
}
S2="\"$W.SCB\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}"
mkst8 noscb.safetensors "{$H}" codes.bin
mkst8 short.safetensors "{$H,\"$W.SCB\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}" codes.bin one.bin
mkst8 notI8.safetensors "{\"$W.weight\":{\"dtype\":\"U8\",\"shape\":[2,4],\"data_offsets\":[0,8]},$S2}" codes.bin two.bin
mkst8 zero.safetensors "{\"$W.weight\":{\"dtype\":\"I8\",\"shape\":[0,4],\"data_offsets\":[0,0]},\"$W.SCB\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}" empty.bin
mkst8 inf.safetensors "{$H,$S2}" codes.bin inf.bin
mkst8 fmt.safetensors "{$H,$S2,\"$W.weight_format\":{\"dtype\":\"U8\",\"shape\":[],\"data_offsets\":[16,17]}}" codes.bin two.bin two.fmt
mkst8 good.safetensors "{$H,$S2}" codes.bin two.bin
check "a good 8-bit file dequantizes" "$NF4" -d --dtype f32 \
    -o good.out.safetensors good.safetensors
for b in noscb:"without its SCB" short:"one per row" notI8:"must be 2-D I8" \
    zero:"no values" inf:"not finite" fmt:"not row-major"; do
	f=${b%%:*}
	why=${b#*:}
	fails "nf4-quant -d: $f" 1 "$NF4" -d -o "$f.out.safetensors" \
	    "$f.safetensors"
	grep_err "nf4-quant -d: $f says why" "$why"
	absent "nf4-quant -d: nothing written for $f" "$f.out.safetensors"
	fails "dq-inspect: $f" 1 "$INSPECT" "$f.safetensors"
done
mkdir ad
cp "$DATA/lora/lora-bf16/adapter_config.json" ad/
mkst ad/adapter_model.safetensors \
    "{\"base_model.model.$W.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,4],\"data_offsets\":[0,128]},\"base_model.model.$W.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,8],\"data_offsets\":[128,192]}}" 192
check "lora-merge onto a good 8-bit file" "$MERGE" -o good.m.safetensors \
    good.safetensors ad
for f in noscb short inf; do
	fails "lora-merge: $f" 1 "$MERGE" -o "$f.m.safetensors" \
	    "$f.safetensors" ad
	absent "lora-merge: nothing written for $f" "$f.m.safetensors"
done

# --- lora-merge onto an 8-bit base ----------------------------------------
L=$DATA/lora
BASE16=$DATA/llama-sharded
check "quantize the bf16 base to 8 bit" "$NF4" -t int8 -o q8 "$BASE16"
check "dequantize it" "$NF4" -d -o dq8 q8
"$STDUMP" q8 > q8.lst
check "merge into the dequantized base" "$MERGE" -o mdq8 dq8 "$L/lora-bf16"
check "merge into the 8-bit base" "$MERGE" -o mq8 q8 "$L/lora-bf16"
"$STDUMP" mdq8 > mdq8.lst
"$STDUMP" mq8 > mq8.lst
same "8-bit merge equals dequantize then merge" mdq8.lst mq8.lst
check "merge and re-quantize to 8 bit" "$MERGE" --requant -o rq8 q8 \
    "$L/lora-bf16"
listed "--requant writes int8 codes" rq8 'q_proj.weight I8 '
listed "--requant writes the SCB" rq8 'q_proj.SCB F32 '
if grep -q '"load_in_8bit": true' rq8/config.json; then
	ok "--requant keeps the 8-bit quantization_config"
else
	notok "--requant keeps the 8-bit quantization_config"
fi
check "quantize the plain merge" "$NF4" -t int8 -o mdq8q mdq8
"$STDUMP" rq8 > rq8.lst
"$STDUMP" mdq8q > mdq8q.lst
same "--requant equals merge then quantize" mdq8q.lst rq8.lst

# --- shard by shard ---------------------------------------------------------
mkdir sh8
for f in "$BASE16"/model-*.safetensors; do
	"$NF4" -q -t int8 -o "sh8/${f##*/}" "$f"
done
check "--index-only over 8-bit shards" "$NF4" -t int8 --index-only -o sh8 \
    "$BASE16"
"$STDUMP" sh8 > sh8.lst
same "shard by shard equals the whole directory" q8.lst sh8.lst
same "shard by shard: the same config.json" q8/config.json sh8/config.json
fails "--index-only: 8-bit shards are not NF4" 1 "$NF4" -f --index-only \
    -o sh8 "$BASE16"

mkdir shb
for f in "$BASE16"/model-*.safetensors; do
	"$NF4" -q --storage bf16 -o "shb/${f##*/}" "$f"
done
check "--index-only over bf16-storage shards" "$NF4" --storage bf16 \
    --index-only -o shb "$BASE16"
fails "--index-only: the storage must match" 1 "$NF4" -f --index-only \
    -o shb "$BASE16"
grep_err "says why" "storage BF16, not U8"

# --- dq-inspect: 8 + 32 / columns bits per parameter ----------------------
"$INSPECT" --json int8 > i.json
check "dq-inspect an 8-bit checkpoint" "$INSPECT" int8
if grep -q '"bits_per_param": 8.25,' i.json &&
    grep -q '"bits_per_param": 8.0930232558139537' i.json; then
	ok "bits per parameter: 8 + 32/128 and 8 + 32/344"
else
	notok "bits per parameter: 8 + 32/128 and 8 + 32/344"
fi
check "dq-inspect --compare" "$INSPECT" --compare "$EXAMPLE" int8
check "dq-inspect --plan qlora on an 8-bit base" "$INSPECT" --plan qlora int8
