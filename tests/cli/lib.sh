# lib.sh - helpers for the CLI tests, sourced by each tests/cli/t-*.sh.
#
# Each assertion prints "ok - what" or "not ok - what"; run.sh counts them.

TOP=${TOP:-$(cd "$(dirname "$0")/../.." && pwd)}
NF4=$TOP/tools/nf4-quant/nf4-quant
MERGE=$TOP/tools/lora-merge/lora-merge
EXTRACT=$TOP/tools/adapter-extract/adapter-extract
INSPECT=$TOP/tools/dq-inspect/dq-inspect
STDUMP=$TOP/tests/cli/stdump
DATA=$TOP/tests/data
EXAMPLE=$TOP/examples/tiny-llama

T=$(mktemp -d "${TMPDIR:-/tmp}/peftio-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
cd "$T" || exit 1

ok() { echo "ok - $*"; }
notok() { echo "not ok - $*"; }

# check DESC CMD...: CMD must succeed.
check() {
	desc=$1; shift
	if "$@" >"$T/out" 2>"$T/err"; then ok "$desc"; else
		notok "$desc (exit $?)"; sed 's/^/#   /' "$T/err" | head -5
	fi
}

# fails DESC STATUS CMD...: CMD must exit with STATUS, print exactly one
# line on stderr, and not crash.
fails() {
	desc=$1; want=$2; shift 2
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	lines=$(wc -l <"$T/err")
	if [ "$st" -eq "$want" ] && [ "$lines" -eq 1 ]; then ok "$desc"; else
		notok "$desc (exit $st, want $want; $lines stderr lines)"
		sed 's/^/#   /' "$T/err" | head -5
	fi
}

# same DESC A B: files A and B are identical.
same() {
	if cmp -s "$2" "$3"; then ok "$1"; else
		notok "$1 ($2 and $3 differ)"
		diff "$2" "$3" 2>/dev/null | head -6 | sed 's/^/#   /'
	fi
}

# grep_err DESC PATTERN: the last command's stderr matches PATTERN.
grep_err() {
	if grep -q -- "$2" "$T/err"; then ok "$1"; else
		notok "$1 (stderr lacks '$2')"; sed 's/^/#   /' "$T/err" | head -3
	fi
}

# absent DESC PATH...: none of the paths exist, nor temporaries beside them.
absent() {
	desc=$1; shift
	for p in "$@"; do
		if left "$p"; then
			notok "$desc ($p or a temporary is left)"; return
		fi
	done
	ok "$desc"
}

# left PATH: PATH exists, or a temporary of it (.NAME.tmp.*) beside it.
left() {
	[ -e "$1" ] || ls -a "$(dirname "$1")" 2>/dev/null |
	    grep -q "^\.$(basename "$1")\.tmp"
}

# mkst FILE JSON NBYTES [DATAFILE]: a safetensors file with header JSON
# (unpadded) and NBYTES zero bytes of data (or the bytes of DATAFILE).
mkst() {
	len=${#2}
	printf "$(printf '\\%03o\\%03o\\%03o\\%03o\\000\\000\\000\\000' \
	    $((len & 255)) $((len >> 8 & 255)) $((len >> 16 & 255)) \
	    $((len >> 24 & 255)))" > "$1"
	printf '%s' "$2" >> "$1"
	if [ -n "${4:-}" ]; then cat "$4" >> "$1"; else
		head -c "$3" /dev/zero >> "$1"; fi
}

# usage_fails DESC CMD...: CMD must exit 2 and print its usage on stderr.
usage_fails() {
	desc=$1; shift
	"$@" >"$T/out" 2>"$T/err"
	st=$?
	if [ "$st" -eq 2 ] && grep -q '^usage:' "$T/err"; then ok "$desc"; else
		notok "$desc (exit $st, want 2 and a usage message)"
		sed 's/^/#   /' "$T/err" | head -5
	fi
}
