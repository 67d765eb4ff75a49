#!/bin/sh
# Malformed input, one table for the four tools.  For every case the
# tool must exit with status 1, print exactly one line on standard
# error, that line naming the file (and the tensor, where there is
# one), with no sanitizer report, and leave nothing in the output
# directory: no output and no temporary file.  The malformed files are
# made here, from printf and the committed fixtures.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
BASE=$L/llama-f32
O=$T/o			# the output directory, emptied for every case
ncase=0

# bad DESC WORDS CMD...: run CMD and check the above; WORDS are the
# strings the message must hold, separated by '|'.
bad() {
	desc=$1
	words=$2
	shift 2
	ncase=$((ncase + 1))
	rm -rf "$O"
	mkdir "$O"
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	why=
	[ "$st" -eq 1 ] || why="$why; exit $st"
	lines=$(wc -l <"$T/err")
	[ "$lines" -eq 1 ] || why="$why; $lines lines on stderr"
	if grep -q -e Sanitizer -e 'runtime error' "$T/err"; then
		why="$why; sanitizer report"
	fi
	set -f
	old_ifs=$IFS
	IFS='|'
	for w in $words; do
		grep -qF -- "$w" "$T/err" || why="$why; no '$w'"
	done
	IFS=$old_ifs
	set +f
	left=$(ls -A "$O")
	[ -z "$left" ] || why="$why; left behind: $left"
	if [ -z "$why" ]; then
		ok "$desc"
	else
		notok "$desc (${why#; })"
		sed 's/^/#   /' "$T/err" | head -5
	fi
}

# le64 N: N as 8 bytes, little-endian (N < 2^63).
le64() {
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o\\%03o' \
	    $(($1 & 255)) $(($1 >> 8 & 255)) $(($1 >> 16 & 255)) \
	    $(($1 >> 24 & 255)) $(($1 >> 32 & 255)) $(($1 >> 40 & 255)) \
	    $(($1 >> 48 & 255)) $(($1 >> 56 & 255)))"
}

# st1 FILE TENSOR_JSON NBYTES: one tensor W (as mkst).
W=model.layers.0.mlp.up_proj.weight
st1() {
	mkst "$1" "{\"$W\":{$2}}" "$3"
}

# --- the safetensors header ----------------------------------------------
: > empty.safetensors
bad "empty file" "empty.safetensors" \
    "$NF4" -o "$O/x.safetensors" empty.safetensors
printf 'abcdefg' > seven.safetensors
bad "7 bytes" "seven.safetensors" "$INSPECT" seven.safetensors
{ le64 1000; printf '{}'; } > past.safetensors
bad "header length beyond the file" "past.safetensors|1000" \
    "$NF4" -o "$O/x.safetensors" past.safetensors
{ le64 100000001; printf '{}'; } > huge.safetensors
bad "header length above 100 MB" "huge.safetensors|100000001" \
    "$MERGE" -o "$O/m" huge.safetensors "$L/rslora-f32"
{ printf '\377\377\377\377\377\377\377\377'; printf '{}'; } > max.safetensors
bad "header length 2^64-1" "max.safetensors" \
    "$EXTRACT" -r 2 -o "$O/ad" max.safetensors "$BASE"
mkst utf8.safetensors "$(printf '{"\377":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}')" 1
bad "header not UTF-8" "utf8.safetensors|UTF-8" \
    "$NF4" -o "$O/x.safetensors" utf8.safetensors
mkst json.safetensors '{"a":{"dtype":"U8","shape":[1],' 0
bad "header not JSON" "json.safetensors|JSON" "$INSPECT" json.safetensors
mkst array.safetensors '[{"a":1}]' 0
bad "header not an object" "array.safetensors" \
    "$NF4" -o "$O/x.safetensors" array.safetensors
mkst dup.safetensors "{\"$W\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"$W\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}" 1
bad "duplicate tensor names" "dup.safetensors|$W" \
    "$NF4" -o "$O/x.safetensors" dup.safetensors
mkst overlap.safetensors "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},\"$W\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[8,24]}}" 24
bad "overlapping offsets" "overlap.safetensors|$W" \
    "$MERGE" -o "$O/m.safetensors" overlap.safetensors "$L/rslora-f32"
mkst reversed.safetensors "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0]},\"$W\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[16,8]}}" 16
bad "offsets out of order (end before begin)" "reversed.safetensors|$W" \
    "$NF4" -o "$O/x.safetensors" reversed.safetensors
st1 gap.safetensors '"dtype":"F32","shape":[2],"data_offsets":[8,16]' 16
bad "gap before the first tensor" "gap.safetensors|$W" \
    "$EXTRACT" -r 2 -o "$O/ad" gap.safetensors "$BASE"
mkst gap2.safetensors "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"$W\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[8,12]}}" 12
bad "gap between tensors" "gap2.safetensors|$W" "$INSPECT" gap2.safetensors
st1 beyond.safetensors '"dtype":"F32","shape":[4],"data_offsets":[0,16]' 8
bad "offsets beyond the data" "beyond.safetensors|truncated" \
    "$NF4" -o "$O/x.safetensors" beyond.safetensors
st1 trailer.safetensors '"dtype":"F32","shape":[2],"data_offsets":[0,8]' 8
printf 'PK\003\004 a polyglot' >> trailer.safetensors
bad "bytes after the last tensor" "trailer.safetensors|after the last" \
    "$INSPECT" trailer.safetensors
st1 size.safetensors '"dtype":"I32","shape":[2,2],"data_offsets":[0,4]' 4
bad "shape x dtype is not the byte range" "size.safetensors|$W|[2, 2]" \
    "$NF4" -o "$O/x.safetensors" size.safetensors
st1 ovf.safetensors '"dtype":"F32","shape":[9223372036854775807,2],"data_offsets":[0,0]' 0
bad "element count overflows" "ovf.safetensors|$W|overflows" \
    "$MERGE" -o "$O/m.safetensors" ovf.safetensors "$L/rslora-f32"
st1 ovf2.safetensors '"dtype":"F64","shape":[2305843009213693952],"data_offsets":[0,0]' 0
bad "size in bits overflows" "ovf2.safetensors|$W|overflows" \
    "$NF4" -o "$O/x.safetensors" ovf2.safetensors
st1 big.safetensors '"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,0]' 0
bad "dimension of 2^63" "big.safetensors|2^63" "$INSPECT" big.safetensors
st1 neg.safetensors '"dtype":"F32","shape":[-1],"data_offsets":[0,4]' 4
bad "negative dimension" "neg.safetensors|$W|shape[0]" \
    "$NF4" -o "$O/x.safetensors" neg.safetensors
st1 frac.safetensors '"dtype":"F32","shape":[2.5],"data_offsets":[0,8]' 8
bad "fractional dimension" "frac.safetensors|$W" \
    "$MERGE" -o "$O/m.safetensors" frac.safetensors "$L/rslora-f32"
st1 negoff.safetensors '"dtype":"F32","shape":[1],"data_offsets":[-4,0]' 4
bad "negative offset" "negoff.safetensors|$W|data_offsets[0]" \
    "$EXTRACT" -r 2 -o "$O/ad" negoff.safetensors "$BASE"
st1 dtype.safetensors '"dtype":"f32","shape":[1],"data_offsets":[0,4]' 4
bad "unknown dtype" "dtype.safetensors|$W|'f32'" "$INSPECT" dtype.safetensors
st1 f4.safetensors '"dtype":"F4","shape":[3],"data_offsets":[0,2]' 2
bad "F4 with an odd element count" "f4.safetensors|$W|bytes" \
    "$NF4" -o "$O/x.safetensors" f4.safetensors
st1 rank.safetensors '"dtype":"U8","shape":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"data_offsets":[0,1]' 1
bad "rank above 16" "rank.safetensors|$W|rank 17" \
    "$NF4" -o "$O/x.safetensors" rank.safetensors
mkst meta.safetensors '{"__metadata__":{"format":1}}' 0
bad "__metadata__ value not a string" "meta.safetensors|format" \
    "$NF4" -o "$O/x.safetensors" meta.safetensors
mkst meta2.safetensors '{"__metadata__":["format","pt"]}' 0
bad "__metadata__ not an object" "meta2.safetensors|__metadata__" \
    "$MERGE" -o "$O/m.safetensors" meta2.safetensors "$L/rslora-f32"
mkst nul.safetensors '{"a\u0000b":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}' 1
bad "NUL in a tensor name" "nul.safetensors" \
    "$NF4" -o "$O/x.safetensors" nul.safetensors
mkst nl.safetensors '{"a\nb":{"dtype":"U8","shape":[2],"data_offsets":[0,1]}}' 1
bad "newline in a tensor name: still one line" 'nl.safetensors|a\x0ab' \
    "$NF4" -o "$O/x.safetensors" nl.safetensors
deep=$(awk 'BEGIN { for (i = 0; i < 200; i++) printf "["; for (i = 0; i < 200; i++) printf "]" }')
mkst deep.safetensors "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[0,0],\"x\":$deep}}" 0
bad "JSON nested 200 deep" "deep.safetensors|nested" \
    "$EXTRACT" -r 2 -o "$O/ad" "$BASE" deep.safetensors

# --- a real file cut short at many offsets --------------------------------
M=$EXAMPLE/model.safetensors
hl=$(od -An -t u4 -N 4 "$M" | tr -d ' ')
size=$(wc -c < "$M")
i=0
for cut in 1 8 9 $((8 + hl / 2)) $((8 + hl)) $((8 + hl + 1)) \
    $((size / 2)) $((size - 1)); do
	head -c "$cut" "$M" > "cut$cut.safetensors"
	case $((i % 4)) in
	0) bad "truncated at $cut (nf4-quant)" "cut$cut.safetensors" \
	    "$NF4" -o "$O/x.safetensors" "cut$cut.safetensors" ;;
	1) bad "truncated at $cut (dq-inspect)" "cut$cut.safetensors" \
	    "$INSPECT" "cut$cut.safetensors" ;;
	2) bad "truncated at $cut (lora-merge)" "cut$cut.safetensors" \
	    "$MERGE" -o "$O/m.safetensors" "cut$cut.safetensors" \
	    "$L/rslora-f32" ;;
	3) bad "truncated at $cut (adapter-extract)" "cut$cut.safetensors" \
	    "$EXTRACT" -r 2 -o "$O/ad" "$M" "cut$cut.safetensors" ;;
	esac
	i=$((i + 1))
done
bad "truncated, through a pipe" "<stdin>|truncated" \
    sh -c 'cat "$1" | "$2" -o "$3" -' sh "cut$((size / 2)).safetensors" \
    "$NF4" "$O/x.safetensors"

# --- sharded checkpoints ---------------------------------------------------
S=$DATA/llama-sharded
mkdir noshard
cp "$S"/*.json "$S"/model-0000[1234]* noshard/
bad "index names a missing shard" "noshard|model-00005-of-00005" \
    "$MERGE" -o "$O/m" noshard "$L/lora-bf16"
mkdir absent
cp "$S"/* absent/
sed 's/"lm_head.weight": "model-00005-of-00005/"lm_head.weight": "model-00004-of-00005/' \
    "$S/model.safetensors.index.json" > absent/model.safetensors.index.json
bad "tensor absent from its shard" "absent|lm_head.weight|model-00004-of-00005" \
    "$NF4" -o "$O/q" absent
mkdir badindex
cp "$S"/*.safetensors badindex/
printf '{"weight_map": {' > badindex/model.safetensors.index.json
bad "index not JSON" "badindex/model.safetensors.index.json" \
    "$INSPECT" badindex
mkdir escape
cp "$S"/*.safetensors escape/
printf '{"weight_map": {"lm_head.weight": "../model-00001-of-00005.safetensors"}}' \
    > escape/model.safetensors.index.json
bad "index names a shard outside the directory" "escape|lm_head.weight|../" \
    "$EXTRACT" -r 2 -o "$O/ad" escape "$S"
mkdir twice
cp "$S"/* twice/
cp "$S/model-00001-of-00005.safetensors" twice/model-00006-of-00005.safetensors
sed 's/"lm_head.weight": "model-00005-of-00005.safetensors"/&, "zz": "model-00006-of-00005.safetensors"/' \
    "$S/model.safetensors.index.json" > twice/model.safetensors.index.json
bad "tensor stored in two shards" "twice|two shards" \
    "$NF4" -o "$O/q" twice

# --- adapters ----------------------------------------------------------------
# adapter DIR CONFIG [TENSORS_JSON NBYTES]: an adapter directory.
adapter() {
	mkdir "$1"
	printf '%s' "$2" > "$1/adapter_config.json"
	if [ -n "${3:-}" ]; then
		mkst "$1/adapter_model.safetensors" "$3" "$4"
	else
		cp "$L/rslora-f32/adapter_model.safetensors" "$1/"
	fi
}
Q=base_model.model.model.layers.0.self_attn.q_proj
adapter r0 '{"peft_type": "LORA", "r": 0, "lora_alpha": 8}'
bad "adapter with r = 0" "r0/adapter_config.json|r = 0" \
    "$MERGE" -o "$O/m" "$BASE" r0
adapter rstr '{"peft_type": "LORA", "r": "8", "lora_alpha": 8}'
bad "adapter with r a string" "rstr/adapter_config.json|r is not a number" \
    "$MERGE" -o "$O/m" "$BASE" rstr
adapter cfgjson '{"peft_type": "LORA", "r": 8,'
bad "adapter_config.json not JSON" "cfgjson/adapter_config.json" \
    "$MERGE" -o "$O/m" "$BASE" cfgjson
mkdir nocfg
cp "$L/rslora-f32/adapter_model.safetensors" nocfg/
bad "adapter without adapter_config.json" "nocfg/adapter_config.json" \
    "$MERGE" -o "$O/m" "$BASE" nocfg
adapter nob '{"peft_type": "LORA", "r": 8, "lora_alpha": 8}' \
    "{\"$Q.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,64],\"data_offsets\":[0,2048]}}" 2048
bad "adapter without lora_B" "nob|q_proj|lora_B" \
    "$MERGE" -o "$O/m" "$BASE" nob
adapter ranks '{"peft_type": "LORA", "r": 8, "lora_alpha": 8}' \
    "{\"$Q.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,64],\"data_offsets\":[0,2048]},\"$Q.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[64,4],\"data_offsets\":[2048,3072]}}" 3072
bad "lora_A and lora_B of different ranks" "ranks|q_proj|different ranks" \
    "$MERGE" -o "$O/m" "$BASE" ranks
adapter shape '{"peft_type": "LORA", "r": 8, "lora_alpha": 8}' \
    "{\"$Q.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,48],\"data_offsets\":[0,1536]},\"$Q.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[64,8],\"data_offsets\":[1536,3584]}}" 3584
bad "lora_A shape does not fit the base" "shape|q_proj|does not fit" \
    "$MERGE" -o "$O/m" "$BASE" shape
adapter mag '{"peft_type": "LORA", "r": 8, "lora_alpha": 8, "use_dora": true}' \
    "{\"$Q.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[8,64],\"data_offsets\":[0,2048]},\"$Q.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[64,8],\"data_offsets\":[2048,4096]},\"$Q.lora_magnitude_vector\":{\"dtype\":\"F32\",\"shape\":[63],\"data_offsets\":[4096,4348]}}" 4348
bad "DoRA magnitude of the wrong size" "mag|lora_magnitude_vector" \
    "$MERGE" -o "$O/m" "$BASE" mag

# --- non-finite weights ---------------------------------------------------
# repeat N BYTES: BYTES (a printf format) N times.
repeat() {
	k=0
	while [ "$k" -lt "$1" ]; do
		printf "$2"
		k=$((k + 1))
	done
}
# F32 [2, 64], all 0.5 but element 70, a NaN.
{ repeat 70 '\0\0\0\77'; printf '\0\0\300\177'; repeat 57 '\0\0\0\77'; } \
    > nan.bin
mkst nan.safetensors "{\"$W\":{\"dtype\":\"F32\",\"shape\":[2,64],\"data_offsets\":[0,512]}}" 0 nan.bin
bad "NaN weight" "nan.safetensors|$W|element 70" \
    "$NF4" -o "$O/x.safetensors" nan.safetensors
# BF16 [2, 64] with +Inf at element 127, quantized without double
# quantization (the other code path).
{ repeat 127 '\0\77'; printf '\200\177'; } > inf.bin
mkst inf.safetensors "{\"$W\":{\"dtype\":\"BF16\",\"shape\":[2,64],\"data_offsets\":[0,256]}}" 0 inf.bin
bad "Inf weight (no double quantization)" "inf.safetensors|$W|element 127" \
    "$NF4" --no-double-quant -o "$O/x.safetensors" inf.safetensors
mkst w.safetensors "{\"$W\":{\"dtype\":\"F32\",\"shape\":[2,64],\"data_offsets\":[0,512]}}" 512
bad "NaN in a tuned weight" "nan.safetensors: tensor $W: element 70" \
    "$EXTRACT" -r 1 -o "$O/ad" w.safetensors nan.safetensors
# Was reported against the tuned file.
bad "NaN in a base weight" "nan.safetensors: tensor $W: element 70" \
    "$EXTRACT" -r 1 -o "$O/ad" nan.safetensors w.safetensors

# --- 4-bit weights whose quant_state disagrees with the tensors --------------
# mkq4 FILE BLOB: w.q_proj.weight as bitsandbytes stores it without
# double quantization: 128 code bytes ([4, 64] elements), 4 f32 absmax,
# the 16-entry quant_map, and BLOB as its quant_state.
Q4=w.q_proj.weight
mkq4() {
	n=${#2}
	head -c 208 /dev/zero > q4.data
	printf '%s' "$2" >> q4.data
	mkst "$1" "{\"$Q4\":{\"dtype\":\"U8\",\"shape\":[128,1],\"data_offsets\":[0,128]},\"$Q4.absmax\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[128,144]},\"$Q4.quant_map\":{\"dtype\":\"F32\",\"shape\":[16],\"data_offsets\":[144,208]},\"$Q4.quant_state.bitsandbytes__nf4\":{\"dtype\":\"U8\",\"shape\":[$n],\"data_offsets\":[208,$((208 + n))]}}" 0 q4.data
}
qs() {
	printf '{"quant_type": "%s", "blocksize": %s, "dtype": "float32", "shape": %s}' "$@"
}
mkq4 q4ok.safetensors "$(qs nf4 64 '[4, 64]')"
check "the hand-made 4-bit file is valid" "$NF4" -d -o q4ok.out q4ok.safetensors
mkq4 q4shape.safetensors "$(qs nf4 64 '[8, 64]')"
bad "quant_state shape larger than the codes" "q4shape.safetensors|$Q4|256" \
    "$NF4" -d -o "$O/x.safetensors" q4shape.safetensors
mkq4 q4bs.safetensors "$(qs nf4 32 '[4, 64]')"
bad "quant_state blocksize disagrees with absmax" "q4bs.safetensors|$Q4.absmax" \
    "$MERGE" -o "$O/m.safetensors" q4bs.safetensors "$L/rslora-f32"
mkq4 q4type.safetensors "$(qs fp4 64 '[4, 64]')"
bad "quant_type differs from the key" "q4type.safetensors|$Q4|fp4" \
    "$INSPECT" q4type.safetensors
mkq4 q4json.safetensors '{"quant_type": "nf4", "blocksize": 64, "dtype": '
bad "quant_state not JSON" "q4json.safetensors|$Q4.quant_state" \
    "$NF4" -d -o "$O/x.safetensors" q4json.safetensors
mkq4 q4off.safetensors '{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [4, 64], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 1e60}'
bad "nested_offset beyond float32" "q4off.safetensors|nested_offset" \
    "$NF4" -d -o "$O/x.safetensors" q4off.safetensors

# --- config.json and recipes -------------------------------------------------
mkdir badcfg
cp "$EXAMPLE/model.safetensors" badcfg/
printf '{"model_type": "llama",' > badcfg/config.json
bad "config.json not JSON" "badcfg/config.json" "$NF4" -o "$O/q" badcfg
printf 'base: %s\nadapters: [%s\n' "$BASE" "$L/rslora-f32" > r1.yaml
bad "recipe not YAML" "r1.yaml" "$MERGE" -o "$O/m" --recipe r1.yaml
printf 'base: %s\nadapters: [%s]\nweights: 1\n' "$BASE" "$L/rslora-f32" \
    > r2.yaml
bad "recipe with an unknown key" "r2.yaml|weights" \
    "$MERGE" -o "$O/m" --recipe r2.yaml

# Each was silently ignored, or taken as weight 1.0.
printf 'base: %s\nadapters:\n  - path: %s\n    weight: [0.5]\n' "$BASE" \
    "$L/rslora-f32" > r3.yaml
bad "recipe weight that is a list" "r3.yaml|weight is not a number" \
    "$MERGE" -o "$O/m" --recipe r3.yaml
printf 'base: %s\nadapters:\n  - path: %s\n    weight: {a: 1}\n' "$BASE" \
    "$L/rslora-f32" > r4.yaml
bad "recipe weight that is a mapping" "r4.yaml|weight is not a number" \
    "$MERGE" -o "$O/m" --recipe r4.yaml
printf 'w: &w 0.5\nbase: %s\nadapters:\n  - path: %s\n    weight: *w\n' \
    "$BASE" "$L/rslora-f32" > r5.yaml
bad "recipe weight that is an alias" "r5.yaml|line 5: aliases" \
    "$MERGE" -o "$O/m" --recipe r5.yaml
printf 'base: %s\nadapters: [%s]\nmethod: ties\nmethod: linear\n' "$BASE" \
    "$L/rslora-f32" > r6.yaml
bad "recipe with a key given twice" "r6.yaml|key 'method' given twice" \
    "$MERGE" -o "$O/m" --recipe r6.yaml
printf 'base: %s\nadapters:\n  - {path: %s, weight: 2, weight: 1}\n' \
    "$BASE" "$L/rslora-f32" > r7.yaml
bad "recipe adapter with a key given twice" "r7.yaml|key 'weight' given twice" \
    "$MERGE" -o "$O/m" --recipe r7.yaml
printf 'base: %s\nadapters: [%s]\n---\nmethod: ties\n' "$BASE" \
    "$L/rslora-f32" > r8.yaml
bad "recipe with a second document" "r8.yaml|line 3: a second YAML document" \
    "$MERGE" -o "$O/m" --recipe r8.yaml
# 200,000 levels (400 KB): libyaml's loader would take minutes.
awk 'BEGIN { for (i = 0; i < 200000; i++) printf "["; for (i = 0; i < 200000; i++) printf "]"; print "" }' > r9.yaml
if command -v timeout >/dev/null 2>&1; then
	bad "recipe nested 200,000 deep" "r9.yaml|nested deeper than 16 levels" \
	    timeout 20 "$MERGE" -o "$O/m" --recipe r9.yaml
else
	bad "recipe nested 200,000 deep" "r9.yaml|nested deeper than 16 levels" \
	    "$MERGE" -o "$O/m" --recipe r9.yaml
fi

[ "$ncase" -ge 40 ] && ok "$ncase bad inputs" ||
    notok "only $ncase bad inputs"
