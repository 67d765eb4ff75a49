#!/bin/sh
# t-golden.sh - every tool, over the committed fixtures, with the option
# sets users run, must write the same bytes as recorded in golden.txt.
# A change that restructures code changes none of these; a change that
# means to alter an output updates the record on purpose:
#
#	make && GOLDEN_UPDATE=1 sh tests/cli/t-golden.sh
#
# Each line of golden.txt is "CASE FILE SHA256" (FILE is "-" for standard
# output); a directory output lists each of its files.
. "$(dirname "$0")/lib.sh"

GOLD=$TOP/tests/cli/golden.txt
L=$DATA/lora
TB=$DATA/torchbin
# Names the tools print are relative, so the reports do not depend on
# where the tree lives.
ln -s "$L/llama-f32" base32
ln -s "$DATA/llama-sharded" sharded
ln -s "$EXAMPLE" tiny
for a in lora-bf16 dora-f32 embed-f32 ia3-f32 rslora-f32 pair pair-same-r; do
	ln -s "$L/$a" "$a"
done
ln -s "$TB" tb

: > got.txt
# run CASE OUT CMD...: run CMD, which writes OUT (a file, a directory, or
# "-" for its standard output), and record the checksum of each file.
run() {
	name=$1; out=$2; shift 2
	rm -rf o
	if [ "$out" = - ]; then
		"$@" > o 2>/dev/null
	else
		"$@" >/dev/null 2>&1
	fi
	st=$?
	if [ "$st" -ne 0 ]; then
		echo "$name - exit$st" >> got.txt
		return
	fi
	if [ "$out" = - ]; then
		echo "$name - $(sha256sum < o | cut -d" " -f1)" >> got.txt
	elif [ -d "$out" ]; then
		(cd "$out" && find . -type f | LC_ALL=C sort | while read -r f; do
			echo "$name ${f#./} $(sha256sum < "$f" | cut -d" " -f1)"
		done) >> got.txt
	else
		echo "$name $(basename "$out") $(sha256sum < "$out" | \
		    cut -d' ' -f1)" >> got.txt
	fi
	rm -rf "$out"
}

# --- nf4-quant ----------------------------------------------------------
run q-dir o "$NF4" -o o sharded
run q-nodq o "$NF4" --no-double-quant -o o sharded
run q-fp4 o "$NF4" -t fp4 -o o sharded
run q-b128 o "$NF4" -b 128 -o o sharded
run q-b32-fp4-nodq o "$NF4" -b 32 -t fp4 --no-double-quant -o o sharded
run q-include o "$NF4" --include '*q_proj*' -o o sharded
run q-exclude o "$NF4" --exclude '*mlp*' -o o sharded
run q-file o.safetensors "$NF4" -o o.safetensors tiny/model.safetensors
run q-pipe - sh -c "\"$NF4\" - < tiny/model.safetensors"
run q-j1 o "$NF4" -j 1 -o o tiny
run q-bin o "$NF4" -o o tb/sharded
run q-binfile o.safetensors "$NF4" -o o.safetensors tb/tensors.bin
"$NF4" -o q4 sharded 2>/dev/null
"$NF4" -t fp4 --no-double-quant -o q4fp sharded 2>/dev/null
"$NF4" -o q4tiny tiny 2>/dev/null
run d-dir o "$NF4" -d -o o q4
run d-bf16 o "$NF4" -d --dtype bf16 -o o q4
run d-f32 o "$NF4" -d --dtype f32 -o o q4fp
run d-pipe - sh -c "\"$NF4\" -d - < q4tiny/model.safetensors"
# --index-only completes a directory of shards quantized one at a time.
index_only() {
	mkdir o
	for s in sharded/model-0000*.safetensors; do
		"$NF4" -o "o/${s#sharded/}" "$s" || return 1
	done
	"$NF4" --index-only -o o sharded
}
run q-index o index_only

# --- lora-merge ----------------------------------------------------------
for a in lora-bf16 dora-f32 embed-f32 ia3-f32 rslora-f32; do
	run "m-$a" o "$MERGE" -o o base32 "$a"
done
run m-file o.safetensors "$MERGE" -o o.safetensors base32 lora-bf16
run m-pipe - "$MERGE" -o - base32 dora-f32
run m-dtype o "$MERGE" --dtype bf16 -o o base32 lora-bf16
for m in linear cat svd ties dare_linear dare_ties magnitude_prune; do
	run "m-$m" o "$MERGE" -m "$m" -w 0.7,0.3 --density 0.5 --seed 3 \
	    -o o base32 pair-same-r/a pair-same-r/b
done
run m-cat-pair o "$MERGE" -m cat -w 0.7,0.3 -o o base32 pair/a pair/b
run m-svd-pair o "$MERGE" -m svd -w 0.7,0.3 -o o base32 pair/a pair/b
run m-two o "$MERGE" -o o base32 lora-bf16 rslora-f32
"$MERGE" -o merged base32 lora-bf16 2>/dev/null
run m-unmerge o "$MERGE" --unmerge -o o merged lora-bf16
"$NF4" -o q4base base32 2>/dev/null
run m-nf4 o "$MERGE" -o o q4base lora-bf16
run m-requant o "$MERGE" --requant -o o q4base lora-bf16
run m-bin o "$MERGE" -o o base32 tb/adapter
cat > r.yaml <<EOT
base: base32
adapters:
  - path: pair-same-r/a
    weight: 0.7
  - path: pair-same-r/b
    weight: 0.3
method: ties
density: 0.5
output: o
EOT
run m-recipe o "$MERGE" --recipe r.yaml

# --- adapter-extract -----------------------------------------------------
run x-r4 o "$EXTRACT" -r 4 -o o base32 merged
run x-exact o "$EXTRACT" -r 4 --exact -o o base32 merged
run x-alpha o "$EXTRACT" -r 8 --alpha 16 --target '*q_proj*' -o o \
    base32 merged
run x-energy o "$EXTRACT" --energy 0.9 --max-rank 8 -o o base32 merged
run x-seed o "$EXTRACT" -r 4 --seed 7 --oversample 4 --power-iters 1 \
    -o o base32 merged

# --- dq-inspect ------------------------------------------------------------
run i-text - "$INSPECT" q4
run i-json - "$INSPECT" --json q4
run i-yaml - "$INSPECT" --yaml q4fp
run i-plain - "$INSPECT" base32
run i-two - "$INSPECT" --json q4 q4fp
run i-compare - "$INSPECT" --compare sharded q4
run i-verify - "$INSPECT" --verify q4
for p in full lora qlora ia3 prompt prefix bitfit; do
	run "i-plan-$p" - "$INSPECT" --plan "$p" -r 8 --target q_proj,v_proj \
	    base32
done
run i-plan-opt - "$INSPECT" --plan qlora --optimizer adamw8bit \
    --virtual-tokens 10 --alpha 32 q4
run i-adapter - "$INSPECT" lora-bf16

if [ -n "${GOLDEN_UPDATE:-}" ]; then
	cp got.txt "$GOLD"
	echo "ok - golden.txt updated ($(wc -l < got.txt) lines)"
	exit 0
fi
n=$(wc -l < "$GOLD")
if cmp -s got.txt "$GOLD"; then
	ok "every output byte as recorded ($n files)"
else
	notok "outputs differ from golden.txt"
	diff "$GOLD" got.txt | head -20 | sed 's/^/#   /'
fi
# Each case must appear: a case that stopped writing output fails above,
# and one that now fails shows as "exitN".
if grep -q ' - exit' got.txt; then
	notok "a recorded command failed: $(grep ' - exit' got.txt | head -3 | \
	    tr '\n' ' ')"
else
	ok "every recorded command succeeded"
fi
