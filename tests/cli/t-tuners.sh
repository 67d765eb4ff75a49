#!/bin/sh
# lora-merge with PEFT's other tuners (AdaLoRA, LoHa, LoKr, VeRA, OFT,
# BOFT, HRA, MiSS, VB-LoRA, RandLoRA, SHiRA, C3A, DeLoRA): each merges
# and unmerges, onto f32, 16-bit and 4-bit bases; what cannot be merged
# and bad adapters of each kind are refused in one line, writing nothing.
# (check_tuners compares the values with PEFT's.)
. "$(dirname "$0")/lib.sh"

TD=$DATA/tuners
BASE=$TD/base.safetensors
TYPES="adalora loha lokr lokr-both vera oft boft hra miss vblora randlora
    shira c3a delora"
V=model.layers.0.self_attn.v_proj

for k in $TYPES; do
	check "merge $k" "$MERGE" -q -o "m-$k.safetensors" "$BASE" "$TD/$k"
	"$STDUMP" "m-$k.safetensors" > "m-$k.lst"
	"$STDUMP" "$BASE" > base.lst
	if cmp -s "m-$k.lst" base.lst; then notok "$k changes the base"
	else ok "$k changes the base"; fi
	check "unmerge $k" "$MERGE" -q --unmerge -o "u-$k.safetensors" \
	    "m-$k.safetensors" "$TD/$k"
	check "merge $k into bf16" "$MERGE" -q --dtype bf16 \
	    -o "b-$k.safetensors" "$BASE" "$TD/$k"
done
"$STDUMP" b-loha.safetensors > b.lst
if grep -q ' F32 ' b.lst; then notok "--dtype bf16 output is bf16"
else ok "--dtype bf16 output is bf16"; fi

# --- 16-bit bases: merged in single precision and rounded once, the
# same bytes as the merge of their f32 copy written in their dtype ------
for dt in bf16 f16; do
	"$NF4" -q --exclude '*' --dtype $dt -o base-$dt.safetensors "$BASE"
	"$NF4" -q --exclude '*' --dtype f32 -o up-$dt.safetensors \
	    base-$dt.safetensors
	for k in $TYPES; do
		check "merge $k into a $dt base" "$MERGE" -q \
		    -o "h-$dt-$k.safetensors" base-$dt.safetensors "$TD/$k"
		check "merge $k into its f32 copy, written $dt" "$MERGE" -q \
		    --dtype $dt -o "x-$dt-$k.safetensors" up-$dt.safetensors \
		    "$TD/$k"
		same "$k: the $dt base merges as its f32 copy rounded once" \
		    "h-$dt-$k.safetensors" "x-$dt-$k.safetensors"
	done
done
"$STDUMP" h-f16-oft.safetensors > h.lst
if grep -q ' F16 \[' h.lst && ! grep -q ' F32 ' h.lst; then
	ok "an f16 base stays f16"
else notok "an f16 base stays f16"; fi

# --- 4-bit bases: the merge of the NF4 base is the merge of its
# dequantization, with or without --requant ------------------------------
check "quantize the base" "$NF4" -q -o q.safetensors "$BASE"
check "dequantize it" "$NF4" -q -d -o dq.safetensors q.safetensors
for k in $TYPES; do
	check "merge $k into NF4" "$MERGE" -q -o "n-$k.safetensors" \
	    q.safetensors "$TD/$k"
	check "merge $k into its dequantization" "$MERGE" -q \
	    -o "d-$k.safetensors" dq.safetensors "$TD/$k"
	same "NF4 merge of $k equals the dequantized one" \
	    "n-$k.safetensors" "d-$k.safetensors"
	check "merge $k into NF4 --requant" "$MERGE" -q --requant \
	    -o "r-$k.safetensors" q.safetensors "$TD/$k"
done

# --- refused: combinations, and what the files cannot reproduce -------
fails "-m linear with a LoHa adapter" 1 "$MERGE" -m linear \
    -o x.safetensors "$BASE" "$TD/loha"
grep_err "-m: LoRA only" "combines LoRA adapters only"
fails "-m cat of LoHa and LoRA" 1 "$MERGE" -m cat -w 1,1 \
    -o x.safetensors "$BASE" "$TD/loha" "$DATA/lora/rslora-f32"
fails "FourierFT refused" 1 "$MERGE" -o x.safetensors "$BASE" \
    "$TD/fourierft"
grep_err "FourierFT: why" "random_loc_seed"
absent "nothing written" x.safetensors

# --- r = 0 in the config of every tuner that has an r ----------------------
for k in loha lokr vera hra miss vblora randlora delora; do
	mkdir "r0-$k"
	cp "$TD/$k/adapter_model.safetensors" "r0-$k/"
	sed -E 's/"r": [0-9]+,/"r": 0,/' "$TD/$k/adapter_config.json" \
	    > "r0-$k/adapter_config.json"
	fails "$k with r = 0" 1 "$MERGE" -o "o-r0-$k.safetensors" "$BASE" \
	    "r0-$k"
	grep_err "$k: r = 0: says why" "r = 0 is not a positive integer"
	grep_err "$k: r = 0: names the file" "r0-$k/adapter_config.json"
	absent "$k: r = 0: nothing written" "o-r0-$k.safetensors"
done

# --- bad adapters -----------------------------------------------------
# bad NAME CONFIG HEADER NBYTES [DATAFILE]: an adapter directory.
bad() {
	mkdir -p "$1"
	printf '%s' "$2" > "$1/adapter_config.json"
	mkst "$1/adapter_model.safetensors" "$3" "$4" "${5:-}"
}
P=base_model.model.$V
f32() {	# name shape offset-from offset-to
	printf '"%s.%s":{"dtype":"F32","shape":[%s],"data_offsets":[%s,%s]}' \
	    "$P" "$1" "$2" "$3" "$4"
}
LOHA='{"peft_type":"LOHA","r":2,"alpha":2}'
bad loha-missing "$LOHA" "{$(f32 hada_w1_a 32,2 0 256),$(f32 hada_w1_b \
    2,64 256 768),$(f32 hada_w2_a 32,2 768 1024)}" 1024
bad loha-shape "$LOHA" "{$(f32 hada_w1_a 32,2 0 256),$(f32 hada_w1_b \
    2,64 256 768),$(f32 hada_w2_a 32,2 768 1024),$(f32 hada_w2_b 3,64 \
    1024 1792)}" 1792
printf '\000\000\300\177' > nan.bin
head -c 1532 /dev/zero >> nan.bin
bad loha-nan "$LOHA" "{$(f32 hada_w1_a 32,2 0 256),$(f32 hada_w1_b \
    2,64 256 768),$(f32 hada_w2_a 32,2 768 1024),$(f32 hada_w2_b 2,64 \
    1024 1536)}" 1536 nan.bin
bad lokr-r0 '{"peft_type":"LOKR","r":0,"alpha":1}' "{$(f32 lokr_w1 4,8 \
    0 128),$(f32 lokr_w2 8,8 128 384)}" 384
bad lokr-shape '{"peft_type":"LOKR","r":2,"alpha":2}' "{$(f32 lokr_w1 \
    4,8 0 128),$(f32 lokr_w2 4,8 128 256)}" 256
bad oft-block '{"peft_type":"OFT","oft_block_size":8}' \
    "{$(f32 oft_R.weight 4,120 0 1920)}" 1920
bad boft-block '{"peft_type":"BOFT","boft_block_size":4}' \
    "{$(f32 boft_R 1,8,8,8 0 2048),$(f32 boft_s 32,1 2048 2176)}" 2176
bad c3a-block '{"peft_type":"C3A","block_size":8}' \
    "{$(f32 c3a_kernel 2,4,16 0 512)}" 512
bad vera-noproj '{"peft_type":"VERA","r":4}' "{$(f32 vera_lambda_b 32 \
    0 128),$(f32 vera_lambda_d 4 128 144)}" 144
for c in "loha-missing:no hada_w2_b" "loha-shape:$P.hada_w2_b" \
    "loha-nan:$P.hada_w1_a" "lokr-r0:r = 0" "lokr-shape:$P.lokr_w2" \
    "oft-block:oft_block_size" "boft-block:boft_block_size" \
    "c3a-block:block_size" "vera-noproj:save_projection"; do
	d=${c%%:*}
	fails "bad adapter $d" 1 "$MERGE" -o "o-$d.safetensors" "$BASE" "$d"
	grep_err "$d: says why" "${c#*:}"
	grep_err "$d: names the adapter" "$d"
	absent "$d: nothing written" "o-$d.safetensors"
done

# --- dq-inspect --plan: PEFT's trainable parameters per tuner, as many
# as the PEFT-made adapters of tests/data/tuners hold (their module) ----
for c in adalora:8:v_proj:776 loha:4:v_proj:768 lokr:4:down_proj:236 \
    vera:16:v_proj:48 hra:4:v_proj:256 miss:8:v_proj:256 \
    delora:4:v_proj:385; do
	IFS=: read -r m r tg n <<-X
	$c
	X
	check "plan $m" "$INSPECT" --plan "$m" -r "$r" --target "$tg" "$BASE"
	if grep -q "trainable params: $n ||" "$T/out"; then
		ok "plan $m: $n trainable, as PEFT's adapter holds"
	else
		notok "plan $m: want $n"; grep trainable "$T/out" |
		    sed 's/^/#   /'
	fi
done
