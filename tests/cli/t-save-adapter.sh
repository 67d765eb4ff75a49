#!/bin/sh
# lora-merge --save-adapter: the combination written as a PEFT adapter,
# which merged alone gives the combination's merge byte for byte; the
# output rules every output follows.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
BASE=$L/llama-f32

# --- every method: merging the saved adapter = merging with -m -------------
for m in cat svd linear ties dare_linear dare_ties magnitude_prune; do
	case $m in
	cat|svd) a=$L/pair/a b=$L/pair/b d= ;;
	linear) a=$L/pair-same-r/a b=$L/pair-same-r/b d= ;;
	*) a=$L/pair-same-r/a b=$L/pair-same-r/b d="--density 0.5" ;;
	esac
	# shellcheck disable=SC2086
	check "-m $m with --save-adapter and -o" "$MERGE" -m $m -w 0.7,0.3 \
	    $d --seed 5 --save-adapter ad-$m -o direct-$m.safetensors \
	    "$BASE" "$a" "$b"
	check "merge the saved $m adapter" "$MERGE" -o saved-$m.safetensors \
	    "$BASE" ad-$m
	same "$m: the saved adapter merges to the same bytes" \
	    direct-$m.safetensors saved-$m.safetensors
	# shellcheck disable=SC2086
	check "-m $m with --save-adapter alone" "$MERGE" -m $m -w 0.7,0.3 \
	    $d --seed 5 --save-adapter only-$m "$BASE" "$a" "$b"
	"$STDUMP" ad-$m > ad.lst
	"$STDUMP" only-$m > only.lst
	same "$m: the same adapter with and without -o" ad.lst only.lst
	same "$m: the same config with and without -o" \
	    ad-$m/adapter_config.json only-$m/adapter_config.json
done

# --- the adapter's form ------------------------------------------------------
Q=base_model.model.model.layers.0.self_attn.q_proj
if "$STDUMP" ad-cat | grep -q "^$Q.lora_A.weight F32 \[12,64\]" &&
    "$STDUMP" ad-cat | grep -q "^$Q.lora_B.weight F32 \[64,12\]"; then
	ok "cat: rank 8 + 4, float32, PEFT's keys and layout"
else notok "cat: rank 8 + 4, float32, PEFT's keys and layout"; fi
if "$STDUMP" ad-svd | grep -q "^$Q.lora_A.weight F32 \[8,64\]" &&
    "$STDUMP" ad-linear | grep -q "^$Q.lora_B.weight F32 \[64,8\]"; then
	ok "svd: the largest rank; linear: the common rank"
else notok "svd: the largest rank; linear: the common rank"; fi
n=$("$STDUMP" ad-cat | wc -l)
if [ "$n" -eq 28 ]; then ok "cat: two factors for each of the 14 modules"
else notok "cat: two factors for each of the 14 modules ($n tensors)"; fi
if grep -q '"r": 12,' ad-cat/adapter_config.json &&
    grep -q '"lora_alpha": 12,' ad-cat/adapter_config.json &&
    grep -q '"rank_pattern": {},' ad-cat/adapter_config.json &&
    grep -q '"peft_type": "LORA",' ad-cat/adapter_config.json; then
	ok "config: r = lora_alpha = the new rank, no patterns"
else notok "config: r = lora_alpha = the new rank, no patterns"; fi
ls only-cat > files
printf 'adapter_config.json\nadapter_model.safetensors\n' > files.want
same "the adapter directory holds the config and the weights" files.want \
    files
ls > all
if grep -q '^only-cat$' all && ! grep -q '^only-cat\.' all; then
	ok "no merged model without -o"
else notok "no merged model without -o"; fi

# Embeddings (lora_embedding_A/B, transposed) next to Linear layers.
check "svd of embeddings and linear layers" "$MERGE" -m svd -w 0.7,0.3 \
    --save-adapter ad-emb "$BASE" "$L/embed-f32" "$L/pair/a"
E=base_model.model.model.embed_tokens
if "$STDUMP" ad-emb | grep -q "^$E.lora_embedding_A F32 \[8,320\]" &&
    "$STDUMP" ad-emb | grep -q "^$E.lora_embedding_B F32 \[64,8\]" &&
    "$STDUMP" ad-emb | grep -q "^$E.base_layer.weight F32 \[320,64\]"; then
	ok "embeddings: PEFT's lora_embedding keys and shapes, full tensor kept"
else notok "embeddings: PEFT's lora_embedding keys and shapes"; fi
check "the embedding adapter merges" "$MERGE" -o emb.safetensors "$BASE" \
    ad-emb

# A 4-bit base gives its weights' shapes: the same adapter.
"$NF4" -q -o q.safetensors "$BASE"
check "--save-adapter from an NF4 base" "$MERGE" -m cat -w 0.7,0.3 \
    --save-adapter ad-q q.safetensors "$L/pair/a" "$L/pair/b"
"$STDUMP" ad-q > q.lst
"$STDUMP" only-cat > only.lst
same "the NF4 base gives the same adapter" only.lst q.lst

# A base on standard input, no -o: the adapter only, nothing on stdout.
"$NF4" -q --exclude '*' -o one.safetensors "$BASE"
if "$MERGE" -m cat -w 1,1 --save-adapter ad-pipe - "$L/pair/a" \
    "$L/pair/b" < one.safetensors > pipe.out 2>"$T/err" &&
    [ ! -s pipe.out ] && [ -f ad-pipe/adapter_model.safetensors ]; then
	ok "base on stdin with --save-adapter: the adapter, no stdout"
else notok "base on stdin with --save-adapter: the adapter, no stdout"; fi

# An input whose rank_pattern raises r counts at that rank (PEFT's
# allocation): r = 4 with every module at 8 combines as r = 8.
mkdir pat
sed -e 's/"r": 8,/"r": 4,/' -e 's/"rank_pattern": {},/"rank_pattern": {".*proj": 8},/' \
    "$L/pair/a/adapter_config.json" > pat/adapter_config.json
cp "$L/pair/a/adapter_model.safetensors" pat/
for m in svd cat; do
	check "-m $m of an input with a rank_pattern" "$MERGE" -m $m \
	    -w 0.7,0.3 --save-adapter pat-$m -o pat-$m.safetensors "$BASE" \
	    pat "$L/pair/b"
	same "$m: the pattern's rank, not r, as PEFT counts it" \
	    direct-$m.safetensors pat-$m.safetensors
done
if grep -q '"r": 12,' pat-cat/adapter_config.json; then
	ok "cat: r = 8 + 4 with the pattern"
else notok "cat: r = 8 + 4 with the pattern"; fi

# --- output rules --------------------------------------------------------------
cp ad-cat/adapter_config.json keep.json
fails "an existing adapter directory without -f" 1 "$MERGE" -m svd \
    -w 1,1 --save-adapter ad-cat -o m1.safetensors "$BASE" "$L/pair/a" \
    "$L/pair/b"
grep_err "says it exists" "already exists"
absent "and the merged model is not written either" m1.safetensors
same "the existing adapter is untouched" keep.json ad-cat/adapter_config.json
check "an existing adapter directory with -f" "$MERGE" -f -m svd -w 1,1 \
    --save-adapter ad-cat "$BASE" "$L/pair/a" "$L/pair/b"
if grep -q '"r": 8,' ad-cat/adapter_config.json; then
	ok "-f replaces the adapter"
else notok "-f replaces the adapter"; fi
: > exists.safetensors
fails "the merged output exists without -f" 1 "$MERGE" -m cat -w 1,1 \
    --save-adapter ad-new -o exists.safetensors "$BASE" "$L/pair/a" \
    "$L/pair/b"
absent "no adapter when the merged model fails" ad-new
cp -r "$L/pair" pair
fails "the adapter would overwrite an input" 1 "$MERGE" -f -m cat -w 1,1 \
    --save-adapter pair/a "$BASE" pair/a pair/b
grep_err "names the input" "pair/a"
fails "the adapter would hold an input" 1 "$MERGE" -f -m cat -w 1,1 \
    --save-adapter pair "$BASE" pair/a pair/b
fails "the adapter is the merged output" 1 "$MERGE" -m cat -w 1,1 \
    --save-adapter same -o ./same "$BASE" "$L/pair/a" "$L/pair/b"
absent "nothing written for the same path" same
fails "the adapter inside the merged output" 1 "$MERGE" -m cat -w 1,1 \
    --save-adapter mo/ad -o mo "$BASE" "$L/pair/a" "$L/pair/b"
absent "nothing written for nested outputs" mo
fails "the merged output inside the adapter" 1 "$MERGE" -m cat -w 1,1 \
    --save-adapter ./ad2 -o ad2/../ad2/m "$BASE" "$L/pair/a" "$L/pair/b"
absent "nothing written for nested outputs" ad2
usage_fails "--save-adapter without -m" "$MERGE" --save-adapter x \
    "$BASE" "$L/pair/a"
usage_fails "--save-adapter to standard output" "$MERGE" -m cat \
    --save-adapter - "$BASE" "$L/pair/a"
fails "IA3 cannot be combined, nor saved" 1 "$MERGE" -m linear \
    --save-adapter x "$BASE" "$L/ia3-f32"
absent "nothing written for IA3" x

# --- --json ------------------------------------------------------------------
# jsonck DESC FILE EXPR: EXPR, a Python expression over d (FILE parsed as
# JSON), is true.
jsonck() {
	if python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$2" "$3" 2>"$T/py"; then ok "$1"
	else notok "$1"; sed 's/^/#   /' "$T/py" | tail -2; fi
}
check "--json with --save-adapter alone" "$MERGE" --json -m cat -w 0.7,0.3 \
    --save-adapter js-only "$BASE" "$L/pair/a" "$L/pair/b"
cp "$T/out" only.json
jsonck "--json: the adapter's path, its 28 tensors, no merged model" \
    only.json 'd["adapter"]["path"] == "js-only" and
    len(d["adapter"]["tensors"]) == 28 and d["output"] is None and
    "totals" not in d'
jsonck "--json: the adapter's bytes are its tensors'" only.json \
    'd["adapter"]["bytes"] == sum(t["bytes"] for t in d["adapter"]["tensors"])
    and d["adapter"]["bytes"] > 0'
check "--json with --save-adapter and -o" "$MERGE" --json -m cat \
    -w 0.7,0.3 --save-adapter js-ad -o js.safetensors "$BASE" "$L/pair/a" \
    "$L/pair/b"
cp "$T/out" both.json
jsonck "--json: the merged model and the adapter" both.json \
    'd["output"] == "js.safetensors" and
    len([t for t in d["tensors"] if t["action"] == "merged"]) == 14 and
    len(d["adapter"]["tensors"]) == 28'
same "--json changes nothing written" direct-cat.safetensors js.safetensors
"$STDUMP" js-ad > jsad.lst
"$STDUMP" only-cat > only.lst
same "--json: the same adapter as without it" only.lst jsad.lst

# --- a recipe's save_adapter: paths against the recipe's directory -----------
mkdir -p rc
cat > rc/r.yaml <<EOR
base: $BASE
adapters:
  - path: $L/pair/a
    weight: 0.7
  - path: $L/pair/b
    weight: 0.3
method: cat
save_adapter: ad-recipe
EOR
check "a recipe with save_adapter" "$MERGE" --recipe rc/r.yaml
"$STDUMP" rc/ad-recipe > rc.lst 2>/dev/null
"$STDUMP" only-cat > only.lst
same "recipe: the adapter of --save-adapter, beside the recipe" rc.lst only.lst
[ ! -e rc/merged ] && [ ! -e merged ] && ok "recipe: only the adapter" ||
    notok "recipe: only the adapter"
check "--save-adapter wins over the recipe's" "$MERGE" --recipe rc/r.yaml \
    --save-adapter ad-cli
[ -f ad-cli/adapter_config.json ] && ok "the command line's directory" ||
    notok "the command line's directory"
