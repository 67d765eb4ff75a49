#!/bin/sh
# Inputs of other kinds are named for what they are: GGUF files, text
# (JSON, YAML) given as a model, a mergekit configuration given as a
# recipe; and outputs named like formats the tools do not write are
# refused before any work.
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
BASE=$L/llama-f32
READS="these tools read safetensors and PyTorch .bin checkpoints"

# A GGUF header: magic, version 3, no tensors, no metadata.
printf 'GGUF\003\000\000\000' > m.gguf
head -c 16 /dev/zero >> m.gguf

# --- GGUF ----------------------------------------------------------------
fails "nf4-quant: a GGUF file" 1 "$NF4" -o q.safetensors m.gguf
grep_err "the message names GGUF" "^nf4-quant: m.gguf: a GGUF file: $READS"
absent "nothing written for a GGUF file" q.safetensors
fails "dq-inspect: a GGUF file" 1 "$INSPECT" m.gguf
grep_err "dq-inspect names GGUF" "^dq-inspect: m.gguf: a GGUF file: "
fails "a GGUF file on a pipe" 1 sh -c '"$1" - < m.gguf' sh "$INSPECT"
grep_err "a GGUF file on a pipe is named" "<stdin>: a GGUF file: "
fails "lora-merge: a GGUF base" 1 "$MERGE" -o m.safetensors m.gguf \
    "$L/rslora-f32"
grep_err "lora-merge names GGUF" "m.gguf: a GGUF file: "
fails "adapter-extract: a GGUF tuned model" 1 "$EXTRACT" -r 2 -o ad \
    "$BASE" m.gguf
grep_err "adapter-extract names GGUF" "m.gguf: a GGUF file: "
absent "no adapter written" ad

# --- text given as a model -------------------------------------------------
cp "$BASE/config.json" config.json
fails "a JSON file as the model" 1 "$NF4" -o q.safetensors config.json
grep_err "named JSON" "config.json: a JSON file, not a checkpoint: $READS"
fails "a JSON file on a pipe" 1 sh -c '"$1" - < config.json' sh "$INSPECT"
grep_err "named JSON on a pipe" "<stdin>: a JSON file, not a checkpoint"
printf '# a recipe\nbase: m\nadapters: [a]\n' > r.yaml
fails "a YAML file as the model" 1 "$INSPECT" r.yaml
grep_err "named YAML" "r.yaml: a YAML file, not a checkpoint: $READS"
printf -- '---\n- 1\n- 2\n' > list.yaml
fails "a YAML document" 1 "$INSPECT" list.yaml
grep_err "--- starts YAML" "list.yaml: a YAML file, not a checkpoint"
printf 'Model card\n\nThis model was \342\200\234fine-tuned\342\200\235.\n' \
    > README.md
fails "a text file as the model" 1 "$INSPECT" README.md
grep_err "named text" "README.md: a text file, not a checkpoint"
fails "a text file as the base" 1 "$MERGE" -o m.safetensors README.md \
    "$L/rslora-f32"
grep_err "lora-merge names text" "README.md: a text file, not a checkpoint"
# Too short to be anything: still "too small".
printf 'abc' > abc.safetensors
fails "three bytes" 1 "$INSPECT" abc.safetensors
grep_err "three bytes are too small" "too small for a safetensors file"
# Binary that is not text is still read as safetensors.
printf '\001\002\003\004\005\006\007\010\011' > bin.safetensors
fails "binary garbage" 1 "$INSPECT" bin.safetensors
if grep -q "text file\|JSON\|YAML\|GGUF" "$T/err"; then
	notok "binary garbage is not called text"
else
	ok "binary garbage is not called text"
fi

# --- a mergekit configuration as a recipe ------------------------------------
cat > mergekit.yaml <<'EOF'
models:
  - model: psmathur/orca_mini_v3_13b
    parameters:
      weight: 1.0
  - model: garage-bAInd/Platypus2-13B
    parameters:
      weight: 0.3
merge_method: linear
dtype: float16
EOF
fails "a mergekit configuration as the recipe" 1 "$MERGE" \
    --recipe mergekit.yaml -o m.safetensors
grep_err "the message names mergekit" \
    "^lora-merge: mergekit.yaml: a mergekit configuration (models): lora-merge recipes use base, adapters and method, see peftio-recipe(5)$"
absent "nothing written for a mergekit configuration" m.safetensors
cat > slices.yaml <<'EOF'
slices:
  - sources:
      - model: a
        layer_range: [0, 32]
merge_method: passthrough
EOF
fails "mergekit slices" 1 "$MERGE" --recipe slices.yaml -o m.safetensors
grep_err "slices: mergekit" "a mergekit configuration (slices)"
printf 'base_model: x\nmerge_method: ties\n' > mk2.yaml
fails "mergekit base_model" 1 "$MERGE" --recipe mk2.yaml -o m.safetensors
grep_err "base_model: mergekit" "a mergekit configuration (base_model)"
fails "a checkpoint as the recipe" 1 "$MERGE" \
    --recipe "$L/rslora-f32/adapter_model.safetensors" -o m.safetensors
grep_err "a checkpoint is not a recipe" \
    "adapter_model.safetensors: a binary file (a checkpoint?), not a YAML recipe"
fails "a GGUF file as the recipe" 1 "$MERGE" --recipe m.gguf -o m.st
grep_err "a GGUF file is not a recipe" "m.gguf: a binary file"
# A recipe of ours with a key it does not know is still that.
printf 'base: %s\nadapters: [%s]\nbogus: 1\n' "$BASE" "$L/rslora-f32" > own.yaml
fails "an unknown key of a recipe" 1 "$MERGE" --recipe own.yaml -o m.st
grep_err "still an unknown key" "unknown key 'bogus'"

# --- outputs named like other formats -------------------------------------------
usage_fails "nf4-quant -o NAME.gguf" "$NF4" -o q.gguf "$EXAMPLE"
grep_err "-o .gguf: what it is named like" \
    "^nf4-quant: -o q.gguf: named like a GGUF file; these tools write safetensors only"
absent "no q.gguf" q.gguf
usage_fails "nf4-quant -o NAME.BIN" "$NF4" -o model.BIN "$EXAMPLE"
grep_err "-o .BIN: named like .bin" "named like a PyTorch .bin checkpoint"
absent "no model.BIN" model.BIN
usage_fails "nf4-quant --index-only -o NAME.gguf" "$NF4" --index-only \
    -o q.gguf "$EXAMPLE"
grep_err "--index-only -o .gguf" "-o q.gguf: named like a GGUF file"
usage_fails "lora-merge -o NAME.bin" "$MERGE" -o merged.bin "$BASE" \
    "$L/rslora-f32"
grep_err "lora-merge -o .bin" "^lora-merge: -o merged.bin: named like"
absent "no merged.bin" merged.bin
printf 'base: %s\nadapters: [%s]\noutput: merged.gguf\n' "$BASE" \
    "$L/rslora-f32" > out.yaml
usage_fails "a recipe's output NAME.gguf" "$MERGE" --recipe out.yaml
grep_err "a recipe's output .gguf" "merged.gguf: named like a GGUF file"
usage_fails "adapter-extract -o NAME.bin" "$EXTRACT" -r 2 -o ad.bin \
    "$BASE" "$BASE"
grep_err "adapter-extract -o .bin" "^adapter-extract: -o ad.bin: named like"
usage_fails "adapter-extract --residual NAME.gguf" "$EXTRACT" --init pissa \
    -r 2 -o ad --residual res.gguf "$BASE"
grep_err "--residual .gguf" "^adapter-extract: --residual res.gguf: named like"
absent "no adapter, no residual" ad.bin ad res.gguf
# Other names are still outputs.
check "nf4-quant -o NAME.safetensors" "$NF4" -o q.safetensors "$EXAMPLE"
