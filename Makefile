# peftio - checkpoint tools for fine-tuned language models.
#
#   make            build lib/libpeftio.{a,so} and tools/NAME/NAME
#   make check      install missing build dependencies, build, run all tests
#   make demo       install missing build dependencies, build, run the four
#                   tools on the small example model in examples/tiny-llama
#   make check-slurm  the README's Slurm recipe on a Slurm of one node started
#                   here (root; installs slurm-wlm and munge)
#   make bench      throughput and memory benchmarks (bench/RESULTS.md)
#   make install    PREFIX=/usr/local DESTDIR= (BASHCOMPDIR= for the
#                   bash completions, else bash-completion's directory
#                   under PREFIX)
#   make uninstall  the same PREFIX and DESTDIR: removes what install put
#   make SANITIZE=1 build with AddressSanitizer and UBSan
#   make valgrind   the unit tests under valgrind
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS (clang)

PREFIX	?= /usr/local
BINDIR	?= $(PREFIX)/bin
LIBDIR	?= $(PREFIX)/lib
INCDIR	?= $(PREFIX)/include
MANDIR	?= $(PREFIX)/share/man
PKGDIR	?= $(LIBDIR)/pkgconfig
# bash-completion's directory, moved under PREFIX.
BASHCOMPDIR ?= $(shell $(PKG_CONFIG) --define-variable=prefix=$(PREFIX) \
	   --variable=completionsdir bash-completion 2>/dev/null || \
	   echo $(PREFIX)/share/bash-completion/completions)
DESTDIR	?=
INSTALL	?= install

CC	?= cc
PKG_CONFIG ?= pkg-config
DEPS	 = zlib jansson libxxhash yaml-0.1 openblas lapacke
TESTDEPS = check

OPT	?= -O2
CFLAGS	?= $(OPT) -g
WARN	 = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	   -Wmissing-prototypes -Wpointer-arith -Wformat=2 -Wvla \
	   -Wno-unused-parameter
XCFLAGS	 = -std=c11 -D_GNU_SOURCE -fPIC -pthread $(WARN) -Ilib -Itools/common \
	   $(shell $(PKG_CONFIG) --cflags $(DEPS) 2>/dev/null)
XLIBS	 = $(shell $(PKG_CONFIG) --libs $(DEPS) 2>/dev/null) -lpthread -lm
ifeq ($(SANITIZE),1)
XCFLAGS	+= -fsanitize=address,undefined -fno-omit-frame-pointer \
	   -fno-sanitize-recover=undefined
LDSAN	 = -fsanitize=address,undefined
endif

VERSION	:= $(shell sed -n 's/^\#define PEFTIO_VERSION_STRING[^"]*"\(.*\)"/\1/p' lib/peftio.h)
SOMAJOR	 = 0
SONAME	 = libpeftio.so.$(SOMAJOR)
SOFILE	 = libpeftio.so.$(VERSION)

TOOLS	 = nf4-quant lora-merge adapter-extract dq-inspect
LIBSRC	 = $(sort $(filter-out lib/rcp_table.c,$(wildcard lib/*.c)))
LIBOBJ	 = $(LIBSRC:.c=.o) lib/rcp_table.o
COMMON	 = tools/common/cli.o tools/common/options.o tools/common/progress.o \
	   tools/common/report.o
TOOLBIN	 = $(foreach t,$(TOOLS),$(if $(wildcard tools/$(t)/$(t).c),tools/$(t)/$(t)))
COMPLETE = $(TOOLBIN:%=%.bash)
UNITSRC	 = $(sort $(wildcard tests/unit/check_*.c))
UNITOBJ	 = $(UNITSRC:.c=.o) tests/unit/main.o tests/unit/testutil.o
FUZZSRC	 = $(sort $(wildcard tests/fuzz/fuzz_*.c))
REPLAY	 = $(FUZZSRC:tests/fuzz/fuzz_%.c=tests/fuzz/replay-%)

# Rebuild everything when the compiler flags change.
FLAGSTAMP = .build-flags
FLAGS_NOW = $(CC) $(CFLAGS) $(XCFLAGS) $(LDSAN)
$(shell test "`cat $(FLAGSTAMP) 2>/dev/null`" = "$(FLAGS_NOW)" || \
	echo "$(FLAGS_NOW)" > $(FLAGSTAMP))

# The stamp is written above while the Makefile is read; this empty rule
# keeps make from treating it as missing on a fresh tree.
$(FLAGSTAMP): ;

.PHONY: all deps check test unit cli demo bench install uninstall clean \
	fuzz replay refcheck valgrind installcheck check-slurm FORCE

all: lib/libpeftio.a lib/libpeftio.so $(TOOLBIN) $(COMPLETE)

%.o: %.c $(FLAGSTAMP) lib/peftio.h
	$(CC) $(CFLAGS) $(XCFLAGS) -c -o $@ $<

$(LIBOBJ) $(COMMON): lib/peftio_private.h
lib/report.o lib/report_text.o: lib/report_private.h
lib/st_write.o lib/verify.o: lib/hash.h
# libpeftio.so exports what peftio.h declares and nothing else.
$(LIBOBJ): XCFLAGS += -fvisibility=hidden
tools/%.o: tools/common/cli.h tools/common/options.h tools/common/report.h

# The GPU reciprocal table ships inside the library, packed to 2 bits an
# entry and gzip-compressed.
scripts/rcp_pack: scripts/rcp_pack.c
	$(CC) $(CFLAGS) -std=c11 -D_GNU_SOURCE $(WARN) -o $@ \
	    scripts/rcp_pack.c $$($(PKG_CONFIG) --libs zlib)
lib/rcp_packed.gz: lib/data/rcp_delta.bin.gz scripts/rcp_pack
	scripts/rcp_pack < lib/data/rcp_delta.bin.gz > $@.tmp
	mv $@.tmp $@
lib/rcp_table.c: lib/rcp_packed.gz scripts/bin2c.sh
	sh scripts/bin2c.sh peftio_rcp_packed_gz < lib/rcp_packed.gz > $@.tmp
	mv $@.tmp $@

lib/libpeftio.a: $(LIBOBJ)
	rm -f $@
	$(AR) rcs $@ $(LIBOBJ)

lib/libpeftio.so: $(LIBOBJ)
	$(CC) -shared -Wl,-soname,$(SONAME) $(LDSAN) -o $@ $(LIBOBJ) $(XLIBS)

# tools/NAME/NAME from tools/NAME/NAME.c, and its bash completion
# from its option table.
define tool_rule
tools/$(1)/$(1): tools/$(1)/$(1).o $(COMMON) lib/libpeftio.a
	$$(CC) $$(LDFLAGS) $$(LDSAN) -o $$@ $$< $(COMMON) lib/libpeftio.a $$(XLIBS)
tools/$(1)/$(1).bash: tools/$(1)/$(1)
	tools/$(1)/$(1) --bash-completion > $$@.tmp
	mv $$@.tmp $$@
endef
$(foreach t,$(TOOLS),$(eval $(call tool_rule,$(t))))

# ---------------------------------------------------------------------
# Tests

tests/unit/suites.h: $(UNITSRC)
	grep -h '^Suite \*[a-z0-9_]*_suite(void)$$' $(UNITSRC) | \
	    sed 's/$$/;/' > $@.tmp
	printf '#define PEFTIO_SUITES' >> $@.tmp
	grep -h '^Suite \*[a-z0-9_]*_suite(void)$$' $(UNITSRC) | \
	    sed 's/^Suite \*\(.*\)(void)$$/ X(\1)/' | tr -d '\n' >> $@.tmp
	echo >> $@.tmp
	mv $@.tmp $@

tests/unit/main.o: tests/unit/suites.h
$(UNITOBJ): tests/unit/testutil.h
$(UNITOBJ): XCFLAGS += $(shell $(PKG_CONFIG) --cflags $(TESTDEPS) 2>/dev/null)

tests/unit/run-unit: $(UNITOBJ) lib/libpeftio.a
	$(CC) $(LDFLAGS) $(LDSAN) -o $@ $(UNITOBJ) lib/libpeftio.a $(XLIBS) \
	    $(shell $(PKG_CONFIG) --libs $(TESTDEPS))

tests/cli/stdump: tests/cli/stdump.o lib/libpeftio.a
	$(CC) $(LDFLAGS) $(LDSAN) -o $@ $< lib/libpeftio.a $(XLIBS)

# Each fuzz target without libFuzzer, run once over its corpus.  Like
# main(), a target's LLVMFuzzer* functions need no prototype of its own.
FUZZWARN = -Wno-missing-prototypes
tests/fuzz/replay-%: tests/fuzz/fuzz_%.c tests/fuzz/replay.c \
    tests/fuzz/fuzz.h lib/peftio.h lib/libpeftio.a $(FLAGSTAMP)
	$(CC) $(CFLAGS) $(XCFLAGS) $(FUZZWARN) $(LDFLAGS) $(LDSAN) \
	    -Itests/fuzz -o $@ $< tests/fuzz/replay.c lib/libpeftio.a $(XLIBS)

deps:
	@$(PKG_CONFIG) --exists $(DEPS) $(TESTDEPS) 2>/dev/null || \
	    sh scripts/install-deps

unit: all tests/unit/run-unit
	cd tests/unit && ./run-unit

cli: all tests/cli/stdump
	sh tests/cli/run.sh

replay: $(REPLAY)
	for t in $(REPLAY); do \
	    $$t tests/fuzz/corpus/$${t#tests/fuzz/replay-} || exit 1; done

# Unit tests, the fuzz corpora, then the CLI tests (sequentially, so
# their reports do not interleave under make -j).
test: all tests/unit/run-unit tests/cli/stdump $(REPLAY)
	cd tests/unit && ./run-unit
	$(MAKE) replay
	sh tests/cli/run.sh
	$(MAKE) installcheck

check: deps
	$(MAKE) test

# README.md's Slurm commands, run on a Slurm of one node started on this
# machine (munged, slurmctld, slurmd; stopped at the end), against a
# local run of examples/Makefile.  Needs root.
check-slurm: deps
	sh scripts/install-deps --slurm
	$(MAKE) all
	sh tests/slurm/run.sh

# The unit tests in one process under valgrind: any error, or a leak
# that is certain, fails.
VALGRIND	= valgrind --error-exitcode=1 --leak-check=full \
		  --show-leak-kinds=definite \
		  --errors-for-leak-kinds=definite --quiet
valgrind: all tests/unit/run-unit
	cd tests/unit && CK_FORK=no $(VALGRIND) ./run-unit

demo: deps
	$(MAKE) all
	sh examples/demo.sh

bench: deps
	$(MAKE) all
	sh bench/run.sh

# Fuzzing: every tests/fuzz/fuzz_NAME.c is a libFuzzer target, built by
# clang with ASan and UBSan from the library's sources (objects under
# $(FUZZDIR), apart from the normal build) and run for FUZZ_SECONDS on
# a copy of tests/fuzz/corpus/NAME.  Any crash fails.
FUZZCC	?= clang
FUZZ_SECONDS ?= 10
FUZZDIR	 = tests/fuzz/build
FUZZSAN	 = -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	   -fno-omit-frame-pointer
FUZZBIN	 = $(FUZZSRC:tests/fuzz/%.c=$(FUZZDIR)/%)
FUZZLIB	 = $(LIBOBJ:lib/%.o=$(FUZZDIR)/lib/%.o)

# Kept between runs (make would delete them as intermediate files).
.SECONDARY: $(FUZZLIB)

$(FUZZDIR)/lib/%.o: lib/%.c lib/peftio.h lib/peftio_private.h Makefile
	@mkdir -p $(@D)
	$(FUZZCC) -O1 -g $(FUZZSAN) -fsanitize=fuzzer-no-link $(XCFLAGS) \
	    -c -o $@ $<

$(FUZZDIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZLIB)
	$(FUZZCC) -O1 -g $(FUZZSAN) -fsanitize=fuzzer $(XCFLAGS) $(FUZZWARN) \
	    -Itests/fuzz -o $@ $< $(FUZZLIB) $(XLIBS)

fuzz: deps
	@command -v $(FUZZCC) >/dev/null || sh scripts/install-deps
	$(MAKE) $(FUZZBIN)
	sh tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZBIN)

# The reference checks against the real libraries' outputs (needs the
# fixtures in ../shared).
refcheck: all
	for c in ../shared/tools/check-*; do $$c || exit 1; done

# ---------------------------------------------------------------------

# Paths under PREFIX are written relative to ${prefix}, so that
# pkg-config --define-variable=prefix=... can relocate them.
PCLIBDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))
PCINCDIR = $(patsubst $(PREFIX)/%,$${prefix}/%,$(INCDIR))
MAN1	 = $(sort $(wildcard man/*.1))
MAN3	 = $(sort $(wildcard man/*.3))
MAN5	 = $(sort $(wildcard man/*.5))

peftio.pc: peftio.pc.in Makefile lib/peftio.h FORCE
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PCLIBDIR)|' \
	    -e 's|@INCDIR@|$(PCINCDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    -e 's|@DEPS@|$(DEPS)|' peftio.pc.in > $@.tmp
	mv $@.tmp $@

FORCE:

install: all peftio.pc
	$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) \
	    $(DESTDIR)$(INCDIR) $(DESTDIR)$(MANDIR)/man1 \
	    $(DESTDIR)$(MANDIR)/man5 $(DESTDIR)$(PKGDIR) \
	    $(DESTDIR)$(BASHCOMPDIR)
	for t in $(TOOLBIN); do $(INSTALL) -m 755 $$t $(DESTDIR)$(BINDIR)/; done
	for t in $(TOOLBIN); do $(INSTALL) -m 644 $$t.bash \
	    $(DESTDIR)$(BASHCOMPDIR)/$${t##*/}; done
	$(INSTALL) -m 644 lib/libpeftio.a $(DESTDIR)$(LIBDIR)/
	$(INSTALL) -m 755 lib/libpeftio.so $(DESTDIR)$(LIBDIR)/$(SOFILE)
	ln -sf $(SOFILE) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libpeftio.so
	$(INSTALL) -m 644 lib/peftio.h $(DESTDIR)$(INCDIR)/
	$(INSTALL) -m 644 peftio.pc $(DESTDIR)$(PKGDIR)/
	for m in $(MAN1); do $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man1/; done
	$(if $(MAN3),$(INSTALL) -d $(DESTDIR)$(MANDIR)/man3 && \
	    $(INSTALL) -m 644 $(MAN3) $(DESTDIR)$(MANDIR)/man3/)
	for m in $(MAN5); do $(INSTALL) -m 644 $$m $(DESTDIR)$(MANDIR)/man5/; done

uninstall:
	for t in $(TOOLS); do rm -f $(DESTDIR)$(BINDIR)/$$t \
	    $(DESTDIR)$(BASHCOMPDIR)/$$t; done
	rm -f $(DESTDIR)$(LIBDIR)/libpeftio.a $(DESTDIR)$(LIBDIR)/libpeftio.so \
	    $(DESTDIR)$(LIBDIR)/$(SONAME) $(DESTDIR)$(LIBDIR)/$(SOFILE)
	rm -f $(DESTDIR)$(INCDIR)/peftio.h $(DESTDIR)$(PKGDIR)/peftio.pc
	for m in $(notdir $(MAN1)); do rm -f $(DESTDIR)$(MANDIR)/man1/$$m; done
	for m in $(notdir $(MAN3)); do rm -f $(DESTDIR)$(MANDIR)/man3/$$m; done
	for m in $(notdir $(MAN5)); do rm -f $(DESTDIR)$(MANDIR)/man5/$$m; done

# Install into a temporary tree, build and run a program against it
# through pkg-config, uninstall, and require that nothing is left.
installcheck: all
	MAKE="$(MAKE)" CC="$(CC)" LDSAN="$(LDSAN)" PKG_CONFIG="$(PKG_CONFIG)" \
	    sh tests/install/run.sh

clean:
	rm -f lib/*.o lib/rcp_table.c lib/rcp_packed.gz scripts/rcp_pack \
	    lib/libpeftio.a lib/libpeftio.so \
	    tools/*/*.o $(foreach t,$(TOOLS),tools/$(t)/$(t) tools/$(t)/$(t).bash) \
	    tests/unit/*.o tests/unit/run-unit tests/unit/suites.h \
	    tests/cli/*.o tests/cli/stdump tests/fuzz/replay-* \
	    peftio.pc $(FLAGSTAMP)
	rm -rf tests/cli/tmp bench/tmp $(FUZZDIR)
