#!/bin/sh
# --help, the man pages and getopt agree on every tool's options; bad
# options are reported under the program's name; the bash completion
# made from the same table completes them.
. "$(dirname "$0")/lib.sh"

# The long (--name) or short (-x) options a --help lists: the labels,
# not the option names the help texts mention.
help_long() {
	sed -n -e 's/^  -[a-zA-Z0-9], \(--[a-z0-9-]*\).*/\1/p' \
	    -e 's/^      \(--[a-z0-9-]*\).*/\1/p' "$1" | sort -u
}
help_short() {
	sed -n 's/^  \(-[a-zA-Z0-9]\)[, =].*/\1/p' "$1" | sort -u
}
# The same from the .It lines of a man page's OPTIONS section (mdoc:
# "Fl -name" is --name, "Fl x" is -x).
man_opts() {
	sed -n '/^\.Sh OPTIONS/,/^\.Sh /p' "$1" | grep '^\.It ' |
	    awk '{ for (i = 1; i < NF; i++) if ($i == "Fl") print "-" $(i + 1) }' |
	    sed 's/[^a-zA-Z0-9-].*//' | sort -u
}

for t in nf4-quant lora-merge adapter-extract dq-inspect; do
	bin=$TOP/tools/$t/$t
	man=$TOP/man/$t.1

	# --help and -h: the same text on standard output, exit 0.
	check "$t --help exits 0" "$bin" --help
	cp "$T/out" help.txt
	"$bin" -h > h.txt 2>&1
	if [ $? -eq 0 ] && cmp -s h.txt help.txt; then
		ok "$t -h is --help"
	else
		notok "$t -h is --help"
	fi
	head -1 help.txt | grep -q "^usage: $t " &&
	    ok "$t --help starts with the usage" ||
	    notok "$t --help starts with the usage"
	# Groups of options with their meanings, not only the synopsis.
	if grep -q '^Common options:$' help.txt &&
	    [ "$(grep -c '^[A-Z][A-Za-z -]*:$' help.txt)" -ge 2 ] &&
	    grep -q '^  -h, --help  *[a-z]' help.txt; then
		ok "$t --help: groups of options, each with its meaning"
	else
		notok "$t --help: groups of options, each with its meaning"
	fi
	long=$(awk 'length > 80' help.txt)
	[ -z "$long" ] && ok "$t --help fits 80 columns" ||
	    notok "$t --help fits 80 columns: $long"
	# Every listed option has a one-line meaning on its line (or on
	# the next, for a long label).
	if awk '/^  -/ && NF < 2 { bad = 1 } END { exit bad }' help.txt &&
	    ! grep -q '^  -.*  $' help.txt; then
		ok "$t --help: a meaning for every option"
	else
		notok "$t --help: a meaning for every option"
	fi

	# The man page documents what --help lists, and no more.
	help_long help.txt > hl.txt
	help_short help.txt > hs.txt
	man_opts "$man" > mo.txt
	grep -- '^--' mo.txt > ml.txt
	grep -v -- '^--' mo.txt > ms.txt
	if [ -s hl.txt ] && cmp -s hl.txt ml.txt; then
		ok "$t: the long options of --help are those of $t(1)"
	else
		notok "$t: the long options of --help are those of $t(1)"
		diff hl.txt ml.txt | grep '^[<>]' | sed 's/^/#   /'
	fi
	if [ -s hs.txt ] && cmp -s hs.txt ms.txt; then
		ok "$t: the short options of --help are those of $t(1)"
	else
		notok "$t: the short options of --help are those of $t(1)"
		diff hs.txt ms.txt | grep '^[<>]' | sed 's/^/#   /'
	fi

	# getopt takes every option --help lists: alone at the end of the
	# line it runs, or it is missing its argument, never unknown.
	bad=
	for o in $(cat hl.txt hs.txt); do
		"$bin" "$o" < /dev/null > /dev/null 2> err.txt
		if grep -q 'unknown option\|ambiguous\|unrecognized' err.txt
		then
			bad="$bad $o"
		fi
		# An option that takes an argument says so by name.
		if grep -q "^  .*$o[ =][A-Za-z]" help.txt &&
		    ! grep -q "^$t: option.*requires an argument" err.txt
		then
			bad="$bad $o(argument)"
		fi
	done
	[ -z "$bad" ] && ok "$t: getopt takes every option of --help" ||
	    notok "$t: getopt takes every option of --help:$bad"

	# Bad options: NAME, not the path it was run by, and the short usage.
	for a in -Z --no-such-option; do
		"$bin" "$a" x > /dev/null 2> err.txt
		st=$?
		first=$(head -1 err.txt)
		case $a in
		--*)	want="$t: unknown option '$a'" ;;
		*)	want="$t: unknown option -- ${a#-}" ;;
		esac
		if [ $st -eq 2 ] && [ "$first" = "$want" ] &&
		    grep -q "^usage: $t " err.txt &&
		    grep -q "^Try '$t --help'" err.txt &&
		    ! grep -q '^Common options:' err.txt; then
			ok "$t $a: '$want', the short usage, exit 2"
		else
			notok "$t $a: '$want' (exit $st, got '$first')"
		fi
	done
	"$bin" --jobs < /dev/null > /dev/null 2> err.txt
	[ "$(head -1 err.txt)" = "$t: option '--jobs' requires an argument" ] &&
	    ok "$t --jobs: its argument is missing" ||
	    notok "$t --jobs: its argument is missing ($(head -1 err.txt))"
	"$bin" -j < /dev/null > /dev/null 2> err.txt
	[ "$(head -1 err.txt)" = "$t: option requires an argument -- j" ] &&
	    ok "$t -j: its argument is missing" ||
	    notok "$t -j: its argument is missing ($(head -1 err.txt))"
	"$bin" --quiet=1 x < /dev/null > /dev/null 2> err.txt
	[ "$(head -1 err.txt)" = "$t: option '--quiet' takes no argument" ] &&
	    ok "$t --quiet=1: takes no argument" ||
	    notok "$t --quiet=1: takes no argument ($(head -1 err.txt))"
	if grep -q "$TOP" err.txt; then
		notok "$t: no path in the messages"
	else
		ok "$t: no path in the messages"
	fi

	# The bash completion, from the same table.
	"$bin" --bash-completion > comp.bash
	if [ $? -eq 0 ] && [ -s comp.bash ]; then
		ok "$t --bash-completion"
	else
		notok "$t --bash-completion"
	fi
	# Completing "--" offers exactly the long options of --help.
	bash -c '. ./comp.bash
	    f=$(complete -p "$1" | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
	    [ -n "$f" ] || exit 1
	    COMP_WORDS=("$1" --); COMP_CWORD=1; "$f"
	    printf "%s\n" "${COMPREPLY[@]}"' sh "$t" | sort -u > cl.txt
	if [ -s cl.txt ] && cmp -s cl.txt hl.txt; then
		ok "$t: completing -- offers the long options of --help"
	else
		notok "$t: completing -- offers the long options of --help"
		diff cl.txt hl.txt | grep '^[<>]' | sed 's/^/#   /'
	fi
done

# complete WORD...: what the completion of the last word offers.
complete_words() {
	bash -c '. ./comp.bash
	    f=$(complete -p "$1" | sed -n "s/.*-F \([^ ]*\) .*/\1/p")
	    COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); "$f"
	    echo "${COMPREPLY[*]}"' sh "$@"
}

"$NF4" --bash-completion > comp.bash
got=$(complete_words nf4-quant --no-d)
[ "$got" = "--no-double-quant" ] &&
    ok "completion: nf4-quant --no-d offers --no-double-quant" ||
    notok "completion: nf4-quant --no-d offers --no-double-quant ($got)"
got=$(complete_words nf4-quant -t '')
[ "$got" = "nf4 fp4 int8" ] && ok "completion: -t offers nf4 fp4 int8" ||
    notok "completion: -t offers nf4 fp4 int8 ($got)"
got=$(complete_words nf4-quant --type = f)
[ "$got" = "fp4" ] && ok "completion: --type=f offers fp4" ||
    notok "completion: --type=f offers fp4 ($got)"
got=$(complete_words nf4-quant -qdt '')
[ "$got" = "nf4 fp4 int8" ] && ok "completion: -qdt offers nf4 fp4 int8" ||
    notok "completion: -qdt offers nf4 fp4 int8 ($got)"
got=$(complete_words nf4-quant --storage b)
[ "$got" = "bf16" ] && ok "completion: --storage b offers bf16" ||
    notok "completion: --storage b offers bf16 ($got)"
mkdir -p sub/dir && : > sub/file.safetensors
got=$(complete_words nf4-quant -o sub/f)
[ "$got" = "sub/file.safetensors" ] && ok "completion: -o completes files" ||
    notok "completion: -o completes files ($got)"
got=$(complete_words nf4-quant -q sub/)
[ "$got" = "sub/dir sub/file.safetensors" ] &&
    ok "completion: an operand completes files" ||
    notok "completion: an operand completes files ($got)"
got=$(complete_words nf4-quant -b64 sub/)
[ "$got" = "sub/dir sub/file.safetensors" ] &&
    ok "completion: after -b64, an operand" ||
    notok "completion: after -b64, an operand ($got)"
got=$(complete_words nf4-quant -- --no)
[ -z "$got" ] && ok "completion: no options after --" ||
    notok "completion: no options after -- ($got)"
got=$(complete_words nf4-quant -b '')
[ -z "$got" ] && ok "completion: -b N offers nothing" ||
    notok "completion: -b N offers nothing ($got)"
"$MERGE" --bash-completion > comp.bash
got=$(complete_words lora-merge -m dare)
[ "$got" = "dare_linear dare_ties" ] &&
    ok "completion: lora-merge -m dare offers the dare methods" ||
    notok "completion: lora-merge -m dare offers the dare methods ($got)"
"$INSPECT" --bash-completion > comp.bash
got=$(complete_words dq-inspect --plan lo)
[ "$got" = "lora loha lokr" ] && ok "completion: dq-inspect --plan lo" ||
    notok "completion: dq-inspect --plan lo ($got)"
"$EXTRACT" --bash-completion > comp.bash
got=$(complete_words adapter-extract --residual sub/)
[ "$got" = "sub/dir" ] && ok "completion: --residual completes directories" ||
    notok "completion: --residual completes directories ($got)"

# The completion that make builds is this one.
for t in nf4-quant lora-merge adapter-extract dq-inspect; do
	f=$TOP/tools/$t/$t.bash
	"$TOP/tools/$t/$t" --bash-completion > comp.bash
	same "tools/$t/$t.bash is $t --bash-completion" "$f" comp.bash
done

# A name that is a prefix of several options.
"$NF4" --d x > /dev/null 2> err.txt
grep -q "^nf4-quant: option '--d' is ambiguous (--dequantize, --dtype)$" \
    err.txt && ok "an ambiguous abbreviation names its options" ||
    notok "an ambiguous abbreviation names its options ($(head -1 err.txt))"
# An abbreviation of one option, and the hidden spelling of -d.
"$NF4" --no-double -t int8 x > /dev/null 2> err.txt
grep -q "^nf4-quant: -t int8: --storage, -b and --no-double-quant" err.txt &&
    ok "an abbreviation is the option" ||
    notok "an abbreviation is the option ($(head -1 err.txt))"
"$NF4" --decompress < /dev/null > /dev/null 2> err.txt
grep -q "unknown option" err.txt && notok "--decompress is still -d" ||
    ok "--decompress is still -d"
