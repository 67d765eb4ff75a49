#!/bin/sh
# t-examples.sh - every command of the EXAMPLES sections of nf4-quant(1),
# lora-merge(1), dq-inspect(1) and peftio-recipe(5) runs, as printed,
# on small stand-ins for the models they name.  (adapter-extract(1)'s
# are run by t-qlora-init.sh.)
. "$(dirname "$0")/lib.sh"

L=$DATA/lora
PATH=$TOP/tools/nf4-quant:$TOP/tools/lora-merge:$TOP/tools/dq-inspect:$PATH
export PATH

# The names the pages use, and what stands in for each.
stand_ins() {
	ln -s "$DATA/llama-sharded" llama-7b
	ln -s "$EXAMPLE/model.safetensors" model.safetensors
	ln -s "$L/llama-f32" Llama-3.1-8B
	ln -s "$L/llama-f32" base
	ln -s "$L/lora-bf16" my-adapter
	ln -s "$L/lora-bf16" adapter
	ln -s "$L/pair-same-r/a" a
	ln -s "$L/pair-same-r/b" b
}

# Outputs of one example that others read, made beforehand.
mkdir pre
(cd pre && stand_ins &&
    nf4-quant -q -o llama-7b-nf4 llama-7b &&
    lora-merge -q -o merged base adapter &&
    lora-merge -q -o reference-merged base adapter) ||
	notok "the stand-ins could not be made"

# The "$ command" lines of a page's EXAMPLES, continuation lines joined.
commands() {
	sed -n '/^\.Sh EXAMPLES/,/^\.Sh SEE ALSO/p' "$1" |
	    sed -n 's/^\(\.Dl \)\{0,1\}\$ //p' | sed 's/\\e$//'
}

n=0
for page in nf4-quant lora-merge dq-inspect; do
	commands "$TOP/man/$page.1" > cmds
	[ -s cmds ] || notok "$page(1) has EXAMPLES commands"
	while IFS= read -r cmd; do
		n=$((n + 1))
		mkdir ex$n
		(
			cd ex$n || exit 1
			stand_ins
			out=$(printf '%s\n' "$cmd" |
			    sed -n 's/.* -o \([^ ]*\).*/\1/p')
			for p in llama-7b-nf4 merged reference-merged; do
				[ "$p" = "$out" ] || ln -s "../pre/$p" "$p"
			done
			# curl $URL: the example model, as from a server.
			URL=model.safetensors
			curl() { cat "$URL"; }
			eval "$cmd" > stdout 2> stderr || exit 1
			[ -z "$out" ] || [ -e "$out" ]
		) && ok "$page(1): $cmd" || {
			notok "$page(1): $cmd"
			sed 's/^/#   /' ex$n/stderr 2>/dev/null | head -3
		}
	done < cmds
done

# The Makefile of nf4-quant(1), for a sharded model.
sed -n '/^\.Sh EXAMPLES/,/^\.Sh SEE ALSO/p' "$TOP/man/nf4-quant.1" |
    sed -n '/^\.Bd -literal/,/^\.Ed/p' | sed '/^\.Bd/d; /^\.Ed/d' > mk.mk
mkdir mk && ln -s "$DATA/llama-sharded" mk/in
if (cd mk && make -s -j2 -f ../mk.mk >/dev/null 2>&1) &&
    nf4-quant -q -o whole "$DATA/llama-sharded" &&
    diff -r mk/out whole >/dev/null; then
	ok "nf4-quant(1): the Makefile gives the whole-model output"
else
	notok "nf4-quant(1): the Makefile gives the whole-model output"
fi

# The QLoRA Makefile of lora-merge(1).
sed -n '/^\.Sh EXAMPLES/,/^\.Sh SEE ALSO/p' "$TOP/man/lora-merge.1" |
    sed -n '/^\.Bd -literal/,/^\.Ed/p' | sed '/^\.Bd/d; /^\.Ed/d; /^\$/d' \
    > qlora.mk
mkdir ql && (cd ql && stand_ins)
if (cd ql && make -s -f ../qlora.mk merged-nf4 >/dev/null 2>&1) &&
    [ -f ql/merged-nf4/model.safetensors.index.json ]; then
	ok "lora-merge(1): the QLoRA Makefile runs"
else
	notok "lora-merge(1): the QLoRA Makefile runs"
fi
if (cd ql && lora-merge -q --requant -o merged-nf4-1 base-nf4 adapter) &&
    [ -d ql/merged-nf4-1 ]; then
	ok "lora-merge(1): --requant in one step"
else
	notok "lora-merge(1): --requant in one step"
fi

# peftio-recipe(5): the example recipe, with the stand-ins' paths.
sed -n '/^\.Sh EXAMPLES/,/^\.Sh SEE ALSO/p' "$TOP/man/peftio-recipe.5" |
    sed -n '/^\.Bd -literal/,/^\.Ed/p' | sed '/^\.Bd/d; /^\.Ed/d' |
    sed 's|models/Llama-3.1-8B|base|; s|adapters/math|a|; s|adapters/code|b|' \
    > recipe.yaml
mkdir rc && (cd rc && stand_ins) && mv recipe.yaml rc/
if (cd rc && lora-merge -q --recipe recipe.yaml) && [ -d rc/merged ]; then
	ok "peftio-recipe(5): the example recipe merges"
else
	notok "peftio-recipe(5): the example recipe merges"
fi
