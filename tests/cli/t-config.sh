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
	sed "s|\"$2\": [^,]*,|\"$2\": $3,|" "$1/adapter_config.json" > "$1/c.tmp"
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
