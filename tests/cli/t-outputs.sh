#!/bin/sh
# Where outputs may go: never onto, around or inside an input (compared
# by device and inode), and -f replaces only what a checkpoint holds.
. "$(dirname "$0")/lib.sh"

M=$EXAMPLE/model.safetensors
L=$DATA/lora

# listing DIR: its entries, one line, sorted.
listing() {
	ls -A "$1" | sort | tr '\n' ' '
}

# --- an output that is, holds or lies inside an input -----------------------
mkdir P
cp "$EXAMPLE"/* P/
before=$(listing P)
fails "nf4-quant -f -o P P/model.safetensors" 1 \
    "$NF4" -f -o P P/model.safetensors
grep_err "says the output holds the input" "holds the input"
fails "nf4-quant -f -o P P" 1 "$NF4" -f -o P P
grep_err "says the output is the input" "overwrite the input"
fails "nf4-quant -f -o P/sub P" 1 "$NF4" -f -o P/sub P
grep_err "says the output lies inside the input" "inside the input"
fails "nf4-quant -f -o P/./ P (another spelling)" 1 "$NF4" -f -o P/./ P
ln -s P Plink
fails "nf4-quant -f -o Plink-to-P P" 1 "$NF4" -f -o Plink P
[ "$(listing P)" = "$before" ] && same "the inputs are all there" \
    "$M" P/model.safetensors || notok "the inputs are all there ($(listing P))"

cp -r "$L/llama-f32" base
cp -r "$L/rslora-f32" ad
fails "lora-merge -f -o ad base ad" 1 "$MERGE" -f -o ad base ad
fails "lora-merge -f -o . base ad" 1 "$MERGE" -f -o . base ad
fails "lora-merge -f -o base/out base ad" 1 "$MERGE" -f -o base/out base ad
check "the adapter is intact" test -f ad/adapter_config.json
fails "adapter-extract -f -o base base P" 1 "$EXTRACT" -f -o base base base
check "the base is intact" test -f base/model.safetensors.index.json

# "-" on both sides is a pipe, not a clash.
check "a one-file base" "$MERGE" -o one.safetensors base ad
"$MERGE" -o - one.safetensors ad > want.st 2>"$T/err"
check "lora-merge -o - - ADAPTER reads standard input" \
    sh -c '"$1" -o - - "$2" < one.safetensors > got.st' sh "$MERGE" ad
same "and writes what a named base gives" want.st got.st

# --- -f onto what is not a directory -----------------------------------------
printf 'keep me\n' > keep
cp keep reg
fails "-f -o FILE with a directory output" 1 "$NF4" -f -o reg P
grep_err "says why" "not a directory"
same "the file is untouched" keep reg
ln -s keep sl
fails "-f -o SYMLINK with a directory output" 1 "$NF4" -f -o sl P
check "the symlink is still there" test -L sl
mkfifo ff
fails "-f -o FIFO with a directory output" 1 "$NF4" -f -o ff P
check "the FIFO is still there" test -p ff
if mknod nul c 1 3 2>/dev/null; then
	fails "-f -o DEVICE with a directory output" 1 "$NF4" -f -o nul P
	check "the device node is still there" test -c nul
	check "one file into a device is written" \
	    "$NF4" -f -o nul P/model.safetensors
	check "and the node is kept" test -c nul
else
	echo "ok - -f -o DEVICE # SKIP cannot mknod"
fi
check "one file into /dev/null" "$NF4" -f -o /dev/null "$M"
check "/dev/null is still a device" test -c /dev/null

# --- -f onto a directory ----------------------------------------------------------
mkdir home
cp P/* home/
printf 'x\n' > home/.profile
fails "-f onto a directory with a hidden file" 1 "$NF4" -f -o home P
grep_err "names the file" "home/.profile"
check "the hidden file is kept" test -f home/.profile
rm home/.profile
mkdir home/photos
fails "-f onto a directory with a subdirectory" 1 "$NF4" -f -o home P
check "the subdirectory is kept" test -d home/photos
rmdir home/photos
printf 'x\n' > home/thesis.tex
fails "-f onto a directory with an unknown file" 1 "$NF4" -f -o home P
check "the file is kept" test -f home/thesis.tex
rm home/thesis.tex
ln -s ../keep home/tokenizer.json
fails "-f onto a directory with a symlink" 1 "$NF4" -f -o home P
rm home/tokenizer.json
printf 'x\n' > home/tokenizer.model
printf 'x\n' > home/README.md
check "-f onto a checkpoint directory" "$NF4" -f -o home P
check "replaces it" test ! -e home/tokenizer.model

# --- two shards of one name in two subdirectories ---------------------------------
mkdir -p sub/a sub/b
mkst sub/a/model.safetensors \
    '{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
mkst sub/b/model.safetensors \
    '{"y":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}' 8
printf '{"weight_map":{"x":"a/model.safetensors","y":"b/model.safetensors"}}' \
    > sub/model.safetensors.index.json
fails "nf4-quant: two shards that would be written to one file" 1 \
    "$NF4" -o subq sub
grep_err "says which file" "both be written as model.safetensors"
absent "nothing is written" subq
printf '{"weight_map":{}}' > sub/model.safetensors.index.json
fails "an empty weight_map" 1 "$NF4" -o subq sub
grep_err "says the map is empty" '"weight_map" is empty'
