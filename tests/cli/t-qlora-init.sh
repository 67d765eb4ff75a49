#!/bin/sh
# adapter-extract --init, --convert and --resize: the EXAMPLES of
# adapter-extract(1) run as written, then checked by merging; the 4-bit
# bases against nf4-quant; refusals that write nothing.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
PATH=$TOP/tools/adapter-extract:$TOP/tools/lora-merge:$TOP/tools/nf4-quant:$PATH
export PATH

# maxdiff A B: the largest Frobenius norm of a Linear weight's A - B
# (0 when none differs).
maxdiff() {
	"$EXTRACT" -v -r 1 -o "$T/md" "$1" "$2" >/dev/null 2>"$T/md.err"
	rm -rf "$T/md"
	awk '$1 ~ /^model\./ && NF == 5 { if ($5 > m) m = $5 }
	    END { printf "%.6g\n", m + 0 }' "$T/md.err"
}

# below DESC X TOL: the number X is at most TOL.
below() {
	[ -n "${VERBOSE:-}" ] && echo "# $1: $2 <= $3"
	if awk -v x="$2" -v t="$3" 'BEGIN { exit !(x <= t) }'; then
		ok "$1"
	else
		notok "$1 ($2 > $3)"
	fi
}

# has DESC FILE STRING
has() {
	if grep -qF -- "$3" "$2"; then ok "$1"; else notok "$1 ($2 lacks $3)"; fi
}

# --- the EXAMPLES, as the manual writes them ----------------------------
ln -s "$L/llama-f32" base
ln -s "$L/pair/a" pissa-trained		# rank 8 on all seven projections
ln -s "$L/pair/a" adapter
awk '/^\.Sh EXAMPLES/ { on = 1 } /^\.Sh SEE ALSO/ { on = 0 }
    on && /^\$ / { line = substr($0, 3) }
    on && /^    / && line != "" { sub(/^ +/, ""); line = line " " $0 }
    on && line != "" && !/\\e$/ { print line; line = "" }
    on && /\\e$/ { sub(/ *\\e$/, "", line) }' \
    "$TOP/man/adapter-extract.1" |
    grep -e '--init' -e '--convert' -e '--resize' -e 'pissa-lora' > ex.sh
n=$(wc -l < ex.sh)
[ "$n" -eq 8 ] && ok "8 examples found" || notok "8 examples found ($n)"
while IFS= read -r cmd; do
	check "example: $cmd" sh -c "$cmd"
done < ex.sh

# --- PiSSA: the adapter merged into the residual gives the base back ----
for k in '"init_lora_weights": true' '"r": 8' '"lora_alpha": 8' \
    '"q_proj"' '"down_proj"' '"peft_type": "LORA"'; do
	has "pissa config has $k" pissa/adapter_config.json "$k"
done
"$STDUMP" pissa > pissa.lst
[ "$(grep -c 'lora_A.weight F32 \[8,' pissa.lst)" -eq 14 ] &&
    ok "14 modules, lora_A [8, in] in f32" ||
    notok "14 modules, lora_A [8, in] in f32"
check "merge pissa into its residual" "$MERGE" -o pm pissa-base pissa
below "pissa: residual + B A = base (1e-5)" "$(maxdiff base pm)" 1e-5
d=$(maxdiff base pissa-base)
below "pissa: the residual differs from the base" 1e-3 "$d"
cmp -s base/config.json pissa-base/config.json &&
    ok "residual keeps config.json" || notok "residual keeps config.json"
cmp -s base/generation_config.json pissa-base/generation_config.json &&
    ok "residual keeps the other files" || notok "residual keeps the other files"

# --- QPiSSA: nf4-quant's bytes of the same residual ----------------------
check "nf4-quant of the pissa residual" "$NF4" -o nq pissa-base
same=1
for f in nq/*; do
	cmp -s "$f" "qpissa-base/$(basename "$f")" || same=0
done
[ "$same" -eq 1 ] && [ "$(ls nq | wc -l)" -eq "$(ls qpissa-base | wc -l)" ] &&
    ok "qpissa base = nf4-quant of the residual, byte for byte" ||
    notok "qpissa base = nf4-quant of the residual, byte for byte"
same "qpissa adapter = pissa adapter" pissa/adapter_model.safetensors \
    qpissa/adapter_model.safetensors
check "pissa --no-double-quant --quantize" "$EXTRACT" --init pissa -r 8 \
    --quantize nf4 --no-double-quant -o qp0 --residual qp0-base base
check "nf4-quant --no-double-quant of the residual" "$NF4" \
    --no-double-quant -o nq0 pissa-base
same "without double quantization too" nq0/model-00002-of-00010.safetensors \
    qp0-base/model-00002-of-00010.safetensors

# --- -j: the same bytes -----------------------------------------------------
check "pissa -j 3" "$EXTRACT" -j 3 --init pissa -r 8 --quantize nf4 -o qj \
    --residual qj-base base
same "-j 3: same adapter" qpissa/adapter_model.safetensors \
    qj/adapter_model.safetensors
same "-j 3: same base" qpissa-base/model-00005-of-00010.safetensors \
    qj-base/model-00005-of-00010.safetensors
[ -z "$(ls -a | grep spool)" ] && ok "no spool file left" ||
    notok "no spool file left"

# --- OLoRA on two projections --------------------------------------------
"$STDUMP" olora > olora.lst
[ "$(grep -c 'lora_[AB].weight' olora.lst)" -eq 8 ] &&
    ! grep -q k_proj olora.lst && ok "olora: q_proj and v_proj only" ||
    notok "olora: q_proj and v_proj only"
check "merge olora into its residual" "$MERGE" -o om olora-base olora
below "olora: residual + B A = base (1e-5)" "$(maxdiff base om)" 1e-5
"$STDUMP" base | grep k_proj > k.base
"$STDUMP" olora-base | grep k_proj > k.olora
[ "$(wc -l < k.base)" -eq 2 ] && ok "k_proj listed" || notok "k_proj listed"
same "olora leaves k_proj alone" k.base k.olora

# --- LoftQ: the 4-bit base plus the adapter is closer than the base ------
"$STDUMP" loftq-base | grep -q 'q_proj.weight.quant_state.bitsandbytes__nf4' &&
    ok "loftq base is 4-bit" || notok "loftq base is 4-bit"
has "loftq config.json has quantization_config" loftq-base/config.json \
    '"quantization_config"'
check "dequantize the loftq base" "$NF4" -d --dtype f32 -o ld loftq-base
check "merge loftq into it" "$MERGE" -o lm ld loftq
e0=$(maxdiff base ld)
e1=$(maxdiff base lm)
below "loftq: deq(Q) + B A is closer to W than deq(Q)" "$e1" "$e0"
check "loftq, 1 iteration, no double quantization" "$EXTRACT" --init loftq \
    -r 8 --no-double-quant -o l1 --residual l1-base base
check "nf4-quant --no-double-quant of the base" "$NF4" --no-double-quant \
    -o nb base
same "loftq 1 iteration: the base is nf4-quant of W" \
    nb/model-00003-of-00010.safetensors l1-base/model-00003-of-00010.safetensors

# --- convert: the plain LoRA on the original base = trained on residual --
has "converted r is 16" pissa-lora/adapter_config.json '"r": 16'
"$STDUMP" pissa-lora > conv.lst
[ "$(grep -c 'lora_A.weight F32 \[16,' conv.lst)" -eq 14 ] &&
    ok "converted lora_A [16, in]" || notok "converted lora_A [16, in]"
check "merge the trained adapter into the residual" "$MERGE" -o tm \
    pissa-base pissa-trained
below "base + converted = residual + trained (1e-5)" "$(maxdiff merged tm)" 1e-5

# --- resize ---------------------------------------------------------------
has "small: r 4" small/adapter_config.json '"r": 4'
"$STDUMP" small > small.lst
[ "$(grep -c 'lora_A.weight F32 \[4,' small.lst)" -eq 14 ] &&
    ok "small: lora_A [4, in]" || notok "small: lora_A [4, in]"
check "resize to the same rank" "$EXTRACT" --resize -r 8 -o same8 adapter
check "merge the adapter" "$MERGE" -o ma base adapter
check "merge the same-rank resize" "$MERGE" -o m8 base same8
below "resize to its own rank keeps the delta (1e-5)" "$(maxdiff ma m8)" 1e-5
check "merge the rank-4 resize" "$MERGE" -o m4 base small
below "rank 4 is closer to the adapter than nothing" "$(maxdiff ma m4)" \
    "$(maxdiff ma base)"
check "--exact gives the same adapter" "$EXTRACT" --resize -r 4 --exact \
    -o small-x adapter
same "--exact: same bytes" small/adapter_model.safetensors \
    small-x/adapter_model.safetensors
check "resize -v" "$EXTRACT" -v --resize -r 4 -o small-v adapter
[ "$(grep -c '^model\.layers' "$T/err")" -eq 14 ] &&
    ok "resize -v: a line per module" || notok "resize -v: a line per module"
check "resize --alpha 16" "$EXTRACT" --resize -r 4 --alpha 16 -o small-a \
    adapter
check "merge it" "$MERGE" -o m4a base small-a
below "--alpha keeps the delta (1e-5)" "$(maxdiff m4 m4a)" 1e-5

# --- refusals: exit 1, one line, nothing written --------------------------
fails "init: rank above a weight's dimension" 1 "$EXTRACT" --init pissa \
    -r 40 -o bad --residual bad-base base
grep_err "names the tensor" 'k_proj.weight'
absent "nothing written" bad bad-base
fails "init: an already 4-bit base" 1 "$EXTRACT" --init olora -r 4 \
    -o bad --residual bad-base qpissa-base
absent "nothing written" bad bad-base
fails "init: output exists" 1 "$EXTRACT" --init pissa -r 4 -o pissa \
    --residual bad-base base
absent "nothing written" bad-base
"$STDUMP" pissa > pissa.again
[ -s pissa.lst ] && same "existing output untouched" pissa.lst pissa.again ||
    notok "existing output untouched (no listing)"
fails "resize: an IA3 adapter" 1 "$EXTRACT" --resize -r 2 -o bad \
    "$L/ia3-f32"
grep_err "says not LoRA" 'not a LoRA adapter'
fails "resize: a DoRA adapter" 1 "$EXTRACT" --resize -r 2 -o bad \
    "$L/dora-f32"
fails "resize: embedding LoRA" 1 "$EXTRACT" --resize -r 2 -o bad \
    "$L/embed-f32"
fails "resize: rank above the adapter's" 1 "$EXTRACT" --resize -r 16 \
    -o bad adapter
fails "resize: not an adapter" 1 "$EXTRACT" --resize -r 2 -o bad base
absent "nothing written" bad
fails "convert: IA3" 1 "$EXTRACT" --convert -o bad pissa "$L/ia3-f32"
fails "convert: different ranks" 1 "$EXTRACT" --convert -o bad pissa small
grep_err "names the module" "module 'model.layers"
fails "convert: different modules" 1 "$EXTRACT" --convert -o bad olora \
    pissa-trained
absent "nothing written" bad
usage_fails "--init without --residual" "$EXTRACT" --init pissa -r 4 \
    -o bad base
usage_fails "--init without -r" "$EXTRACT" --init pissa -o bad \
    --residual bad-base base
usage_fails "unknown method" "$EXTRACT" --init corda -r 4 -o bad \
    --residual bad-base base
usage_fails "--convert with one adapter" "$EXTRACT" --convert -o bad pissa
usage_fails "--resize without a rank" "$EXTRACT" --resize -o bad adapter
usage_fails "--residual without --init" "$EXTRACT" -r 4 --residual x \
    -o bad base base
absent "nothing written" bad bad-base
