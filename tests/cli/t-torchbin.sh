#!/bin/sh
# torch.save checkpoints (.bin) as inputs of every tool: the same output
# as from their safetensors twins, byte for byte; refusals that write
# nothing.
. "$(dirname "$0")/lib.sh"

TB=$DATA/torchbin
L=$DATA/lora

# --- nf4-quant: .bin in, the same safetensors out ----------------------
check "quantize module.safetensors" "$NF4" -o mod-st.safetensors \
    "$TB/module.safetensors"
check "quantize module.bin" "$NF4" -o mod-bin.safetensors "$TB/module.bin"
same "module.bin quantizes as its twin" mod-st.safetensors mod-bin.safetensors
if "$STDUMP" mod-bin.safetensors | grep -q '^0.weight U8 '; then
	ok "the module's weight is quantized"
else
	notok "the module's weight is quantized"
fi
"$NF4" - < "$TB/module.bin" > mod-pipe.safetensors 2>/dev/null
same "module.bin from a pipe" mod-st.safetensors mod-pipe.safetensors

# Views, shared storages, every dtype: copied as the twin's tensors.
check "tensors.safetensors" "$NF4" -o t-st.safetensors \
    "$TB/tensors.safetensors"
for f in tensors tensors-deflated; do
	check "$f.bin" "$NF4" -o "t-$f.safetensors" "$TB/$f.bin"
	same "$f.bin gives the twin's output" t-st.safetensors \
	    "t-$f.safetensors"
done

# A model directory holding pytorch_model.bin and a config.
mkdir pt
cp "$TB/module.bin" pt/pytorch_model.bin
printf '{"model_type": "toy"}\n' > pt/config.json
check "directory with pytorch_model.bin" "$NF4" -o pt-q pt
same "its model.safetensors equals the twin's output" mod-st.safetensors \
    pt-q/model.safetensors
[ -f pt-q/config.json ] && ok "config.json written" ||
    notok "config.json written"
if ls pt-q | grep -q '\.bin$'; then
	notok "no .bin in the output"
else
	ok "no .bin in the output"
fi

# --- sharded pytorch_model.bin.index.json -------------------------------
check "sharded .bin directory" "$NF4" -o sh-q "$TB/sharded"
if [ -f sh-q/model-00001-of-00002.safetensors ] &&
    [ -f sh-q/model-00002-of-00002.safetensors ] &&
    [ -f sh-q/model.safetensors.index.json ] &&
    [ ! -f sh-q/pytorch_model.bin.index.json ]; then
	ok "safetensors shards and index written"
else
	notok "safetensors shards and index written"
	ls sh-q | sed 's/^/#   /'
fi
if grep -q '"c": "model-00002-of-00002.safetensors"' \
    sh-q/model.safetensors.index.json; then
	ok "the index names the safetensors shards"
else
	notok "the index names the safetensors shards"
fi
check "sharded .bin directory to one file" "$NF4" -o sh-one.safetensors \
    "$TB/sharded"
check "its twin" "$NF4" -o sh-st.safetensors "$TB/sharded.safetensors"
same "sharded .bin quantizes as its twin" sh-st.safetensors sh-one.safetensors
"$STDUMP" sh-q > sh-q.lst
"$STDUMP" sh-st.safetensors > sh-st.lst
same "shards hold the twin's tensors" sh-st.lst sh-q.lst

# --- lora-merge: a PEFT adapter saved as adapter_model.bin ---------------
check "merge pair/a" "$MERGE" -o m-st.safetensors "$L/llama-f32" "$L/pair/a"
check "merge torchbin/adapter" "$MERGE" -o m-bin.safetensors "$L/llama-f32" \
    "$TB/adapter"
same "adapter_model.bin merges as adapter_model.safetensors" \
    m-st.safetensors m-bin.safetensors
check "adapter named by its .bin file" "$MERGE" -o m-file.safetensors \
    "$L/llama-f32" "$TB/adapter/adapter_model.bin"
same "the same merge" m-st.safetensors m-file.safetensors
check "merge into a directory" "$MERGE" -o m-dir "$L/llama-f32" "$TB/adapter"
check "merge pair/a into a directory" "$MERGE" -o m-dir-st "$L/llama-f32" \
    "$L/pair/a"
ls m-dir-st > m-dir-st.ls
ls m-dir > m-dir.ls
same "the same output files" m-dir-st.ls m-dir.ls
differ=
for f in $(cat m-dir-st.ls); do
	cmp -s "m-dir-st/$f" "m-dir/$f" || differ="$differ $f"
done
[ -z "$differ" ] && ok "every output file the same" ||
    notok "every output file the same (differ:$differ)"

# --- adapter-extract and lora-merge with a .bin base --------------------
check "dequantize the quantized module" "$NF4" -d -o tuned.safetensors \
    mod-st.safetensors
check "extract from a .bin base" "$EXTRACT" --target 0 -r 2 -o ad-bin \
    "$TB/module.bin" tuned.safetensors
check "extract from the twin" "$EXTRACT" --target 0 -r 2 -o ad-st \
    "$TB/module.safetensors" tuned.safetensors
same "the same adapter" ad-st/adapter_model.safetensors \
    ad-bin/adapter_model.safetensors
check "extract with a .bin tuned model" "$EXTRACT" --target 0 -r 2 \
    -o ad-rev tuned.safetensors "$TB/module.bin"
check "merge into a .bin base" "$MERGE" -o mb-bin.safetensors \
    "$TB/module.bin" ad-bin
check "merge into the twin" "$MERGE" -o mb-st.safetensors \
    "$TB/module.safetensors" ad-bin
same "a .bin base merges as its twin" mb-st.safetensors mb-bin.safetensors

# --- dq-inspect ----------------------------------------------------------
for f in tensors.bin tensors-deflated.bin module.bin sharded; do
	check "dq-inspect $f" "$INSPECT" "$TB/$f"
done
"$INSPECT" "$TB/tensors.bin" | grep -E '^(tensors|parameters|bytes) ' > a.sum
"$INSPECT" "$TB/tensors.safetensors" | grep -E '^(tensors|parameters|bytes) ' \
    > b.sum
same "dq-inspect counts as for the twin" b.sum a.sum
check "dq-inspect --json of a .bin adapter" "$INSPECT" --json "$TB/adapter"

# --- refusals ------------------------------------------------------------
fails "nf4-quant refuses evil.bin" 1 "$NF4" -o evil.safetensors \
    "$TB/evil.bin"
grep_err "it names the global" \
    "evil.bin: unsupported pickle content: global posix.system"
absent "no output for evil.bin" evil.safetensors
if grep -q pwned "$T/err" "$T/out"; then
	notok "nothing was run"
else
	ok "nothing was run"
fi
fails "dq-inspect refuses evil.bin" 1 "$INSPECT" "$TB/evil.bin"
mkdir evil-ad
cp "$TB/adapter/adapter_config.json" evil-ad/
cp "$TB/evil.bin" evil-ad/adapter_model.bin
fails "lora-merge refuses an evil adapter" 1 "$MERGE" -o evil-m.safetensors \
    "$L/llama-f32" evil-ad
grep_err "it names the global" "unsupported pickle content: global"
absent "no output for an evil adapter" evil-m.safetensors
fails "adapter-extract refuses evil.bin" 1 "$EXTRACT" -o evil-x \
    "$TB/evil.bin" "$TB/module.bin"
absent "no output for adapter-extract" evil-x
fails "legacy.bin refused" 1 "$NF4" -o legacy.safetensors "$TB/legacy.bin"
grep_err "it says why" "legacy PyTorch format"
absent "no output for legacy.bin" legacy.safetensors
head -c 3000 "$TB/tensors.bin" > trunc.bin
fails "truncated .bin refused" 1 "$NF4" -o trunc.safetensors trunc.bin
grep_err "it says what is wrong" "truncated"
absent "no output for a truncated .bin" trunc.safetensors
mkdir noweights
cp "$TB/module.bin" noweights/training_args.bin
fails "training_args.bin is not a checkpoint" 1 "$NF4" -o nw noweights
absent "no output for a directory without weights" nw
