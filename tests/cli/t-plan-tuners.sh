#!/bin/sh
# dq-inspect --plan ADAPTER: the trainable parameters of every tuner as
# PEFT counts them, from the base's header and the adapter's config
# alone, equal to what the PEFT-made adapters of tests/data/tuners hold
# (buffers left out: VeRA's and RandLoRA's shared projections, SHiRA's
# indices, DeLoRA's weight norms).
. "$(dirname "$0")/lib.sh"

TU=$DATA/tuners
BASE=$TU/base.safetensors

# size FILTER: the elements of the adapter tensors stdump lists on stdin.
size() {
	awk '{ s = $3; gsub(/[][]/, "", s); n = split(s, a, ","); p = 1
	    for (i = 1; i <= n; i++) p *= a[i]; t += p } END { print t + 0 }'
}

n=0
for d in "$TU"/*/; do
	k=$(basename "$d")
	[ -f "$d/adapter_config.json" ] || continue
	"$STDUMP" "$d" > ad.lst
	# the one module kept, a Linear of layer 0
	leaf=$(grep '^base_model\.model\.' ad.lst | head -1 |
	    sed -E 's/.*\.(self_attn|mlp)\.([a-z_]+)\..*/\2/')
	want=$(grep -v -E '(vera_A|vera_B|randlora_A|randlora_B|shira_indices|delora_w_norm) ' \
	    ad.lst | size)
	check "$k: --plan $k --target $leaf" "$INSPECT" --plan "$d" \
	    --target "$leaf" "$BASE"
	got=$(grep -o 'trainable params: [0-9,]*' "$T/out" | tr -d , |
	    sed 's/.*: //')
	if [ -n "$got" ] && [ "$got" = "$want" ]; then
		ok "$k: $got trainable, as PEFT's adapter holds"
	else
		notok "$k: $got trainable, PEFT's adapter holds $want"
	fi
	n=$((n + 1))
done
[ "$n" -ge 15 ] && ok "every tuner planned ($n)" ||
    notok "every tuner planned ($n)"

# AdaLoRA's ranknum: in all params, not trained.
"$INSPECT" --json --plan "$TU/adalora" --target v_proj "$BASE" > a.json
tr -d ' \n' < a.json > a1.json
if grep -q '"trainable_params":776' a1.json &&
    grep -q '"all_params":13833' a1.json; then
	ok "adalora: 776 trained, 13,056 + 776 + 1 (ranknum) in all"
else notok "adalora: 776 trained, 13,056 + 776 + 1 (ranknum) in all"; fi

# -r and --target given win over the config.
check "lokr -r 2 over the config's" "$INSPECT" --plan "$TU/lokr" -r 2 \
    --target down_proj "$BASE"
grep -q 'trainable params: 134 ||' "$T/out" &&
    ok "lokr -r 2: w1 [8, 4] and w2 a pair of rank 2 (32 + 2 (8 + 43))" ||
    notok "lokr -r 2: w1 [8, 4] and w2 a pair of rank 2"
check "the config file itself" "$INSPECT" --plan \
    "$TU/shira/adapter_config.json" --target v_proj "$BASE"
grep -q 'trainable params: 768 ||' "$T/out" && ok "shira: 8 (32 + 64)" ||
    notok "shira: 8 (32 + 64)"

# Methods by name, PEFT's default sizes.
fails "c3a's default block of 256 does not tile [32, 64]" 1 "$INSPECT" \
    --plan c3a --target v_proj "$BASE"
grep_err "names the tensor" "v_proj"
check "road by name" "$INSPECT" --plan road --target down_proj "$BASE"
grep -q 'trainable params: 64 ||' "$T/out" &&
    ok "road_1: theta and alpha of 64 / 2" || notok "road_1: 64"

# Refusals.
mkdir rx
echo '{"peft_type": "LOHA", "r": 4, "target_modules": ".*proj"}' \
    > rx/adapter_config.json
fails "a regular expression as target_modules" 1 "$INSPECT" --plan rx \
    "$BASE"
grep_err "says to use --target" "--target"
mkdir pt
echo '{"peft_type": "POLY", "r": 4}' > pt/adapter_config.json
fails "a type no plan counts" 1 "$INSPECT" --plan pt "$BASE"
usage_fails "neither a method nor a path" "$INSPECT" --plan nosuch "$BASE"
