#!/bin/sh
# t-readme.sh - the commands of README.md's "Quick start" run, in order,
# as printed, and each prints the line shown under it.
. "$(dirname "$0")/lib.sh"

for t in nf4-quant lora-merge adapter-extract dq-inspect; do
	PATH=$TOP/tools/$t:$PATH
done
export PATH
ln -s "$TOP/examples" examples

# The section's "$ command" lines, each followed by its line of output.
sed -n '/^## Quick start/,/^## /p' "$TOP/README.md" |
    sed -n '/^    \$ /{s/^    \$ //;p;n;s/^    //;p;}' > pairs
n=$(($(wc -l < pairs) / 2))
[ "$n" -ge 4 ] && ok "the quick start shows $n commands" ||
    notok "the quick start shows a command per tool (found $n)"
for t in nf4-quant lora-merge adapter-extract dq-inspect; do
	grep -q "^$t " pairs && ok "the quick start runs $t" ||
	    notok "the quick start runs $t"
done

while IFS= read -r cmd && IFS= read -r line; do
	if sh -c "$cmd" > out 2>&1; then
		if grep -qxF -- "$line" out; then ok "$cmd"; else
			notok "$cmd: prints no line '$line'"
			tail -3 out | sed 's/^/#   /'
		fi
	else
		notok "$cmd (exit $?)"; tail -3 out | sed 's/^/#   /'
	fi
done < pairs
