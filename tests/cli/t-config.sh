#!/bin/sh
# What an adapter or a recipe may ask for: non-finite merge results,
# hostile patterns, DoRA without magnitudes, fan_in_fan_out on Linear
# layers, and malformed values are refused with one line.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
BASE=$L/llama-f32

# patch FILE OFFSET BYTES: overwrite bytes (printf escapes) at OFFSET.
patch() {
	printf "$3" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null
}

# hdr FILE: the size of a safetensors file's header with its length.
hdr() {
	echo $(( $(od -An -tu8 -N8 "$1") + 8 ))
}

# cfgset DIR KEY VALUE: an adapter's config with "KEY": VALUE.
cfgset() {
	sed "s#\"$2\": [^,]*,#\"$2\": $3,#" "$1/adapter_config.json" > "$1/c.tmp"
	mv "$1/c.tmp" "$1/adapter_config.json"
}

# --- non-finite merge results ---------------------------------------------------
cp -r "$L/rslora-f32" big
cfgset big lora_alpha 1e300
fails "an alpha whose merge overflows" 1 "$MERGE" -o big.st "$BASE" big
grep_err "names the tensor and element" "tensor '.*': element [0-9]* of the merged result is not finite"
absent "nothing is written" big.st
check "--allow-nonfinite writes it" "$MERGE" --allow-nonfinite -o big2.st \
    "$BASE" big

cp -r "$L/rslora-f32" nan
# The first lora_B value (after the [8,64] f32 lora_A) becomes NaN.
patch nan/adapter_model.safetensors $(( $(hdr nan/adapter_model.safetensors) + 2048 )) \
    '\000\000\300\177'
fails "NaN in lora_B" 1 "$MERGE" -o nan.st "$BASE" nan
grep_err "names the element" "element [0-9]* of the merged"
check "quantize the base" "$NF4" -o q "$BASE"
fails "NaN in lora_B with --requant" 1 "$MERGE" --requant -o rq q nan
absent "nothing is written" rq

# --- patterns --------------------------------------------------------------------
# Each pattern is compiled once; what would take unbounded work or has no
# POSIX equivalent is refused before any work, with a reason.
for pat in '(.?){8000}x' '(a)\\\\1' '(?=q)q_proj' '(((a{100}){100}){100})'; do
	rm -rf pat
	cp -r "$L/rslora-f32" pat
	cfgset pat alpha_pattern "{\"$pat\": 4}"
	if command -v timeout >/dev/null 2>&1; then
		fails "alpha_pattern $pat" 1 timeout 20 "$MERGE" -o pat.safetensors "$BASE" pat
	else
		fails "alpha_pattern $pat" 1 "$MERGE" -o pat.safetensors "$BASE" pat
	fi
	grep_err "says why" "alpha_pattern '.*': not supported"
done
rm -rf pat
cp -r "$L/rslora-f32" pat
cfgset pat rank_pattern '["q_proj"]'
fails "a rank_pattern that is a list" 1 "$MERGE" -o pat.safetensors "$BASE" pat
grep_err "says what it should be" "rank_pattern is not a mapping"
# A pattern in Python's syntax gives what PEFT gives: \d and (?:...).
rm -rf pat pat2
cp -r "$L/rslora-f32" pat
cp -r "$L/rslora-f32" pat2
cfgset pat alpha_pattern '{"layers\\\\.\\\\d+\\\\.self_attn\\\\.(?:q|v)_proj": 32}'
cfgset pat2 lora_alpha 32
check "a Python pattern" "$MERGE" -o pat.safetensors "$BASE" pat
check "the same alpha for every module" "$MERGE" -o pat2.safetensors "$BASE" pat2
same "the pattern applies to every module" pat.safetensors pat2.safetensors

# --- IA3 feedforward_modules -----------------------------------------------------
cp -r "$L/ia3-f32" ia3
sed 's|"feedforward_modules": \[|"feedforward_modules": "(", "x": [|' \
    ia3/adapter_config.json > ia3/c.tmp && mv ia3/c.tmp ia3/adapter_config.json
fails "an invalid feedforward_modules regex" 1 "$MERGE" -o ia3.st "$BASE" ia3
grep_err "names the key" "feedforward_modules '(': not a valid"

# --- DoRA ----------------------------------------------------------------------------
cp -r "$L/rslora-f32" dora
cfgset dora use_dora true
fails "use_dora without magnitude vectors" 1 "$MERGE" -o dora.st "$BASE" dora
grep_err "names the module" "use_dora is set, but module '.*' has no lora_magnitude_vector"

# --- fan_in_fan_out on Linear layers: ignored, as PEFT does ------------------
cp -r "$L/rslora-f32" fifo
cfgset fifo fan_in_fan_out true
check "fan_in_fan_out on Linear layers" "$MERGE" -v -o fifo.safetensors "$BASE" fifo
grep_err "-v says it is ignored" "fan_in_fan_out is set, but the target modules are Linear layers: ignored"
check "the merge without it" "$MERGE" -o nofifo.safetensors "$BASE" "$L/rslora-f32"
same "gives the same result" fifo.safetensors nofifo.safetensors
