# pop3gw build. `make` builds build/pop3gw and build/pop3gw-maildir.
# `make test` runs unit and integration tests; `make demo` runs the demo.

CC      ?= cc
PKGS    := libevent libevent_openssl libevent_pthreads libcurl openssl jansson libmicrohttpd inih
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null)

VERSION := $(shell cat VERSION 2>/dev/null || echo 0.1.0)
SAN     ?=
OPT     ?= -O2 -g
CFLAGS  ?=
override CFLAGS += -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes \
	-D_GNU_SOURCE -DPOP3GW_VERSION='"$(VERSION)"' -I. $(OPT) $(SAN) $(PKG_CFLAGS)
LDFLAGS ?=
override LDFLAGS += $(SAN) -pthread

B := build
ifneq ($(SAN),)
B := build/san
endif

LIB_SRC := $(filter-out gateway/main.c,$(wildcard lib/*.c gateway/*.c webhook/*.c admin/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o)
GW_OBJ  := $(B)/obj/gateway/main.o $(LIB_OBJ)
BE_SRC  := $(wildcard backends/maildir/*.c)
BE_OBJ  := $(BE_SRC:%.c=$(B)/obj/%.o)
UT_SRC  := $(wildcard tests/unit/test_*.c)
UT_BIN  := $(UT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all deps test-deps demo test unit integration contract browser clean format format-check \
	san-test check-deps check-test-deps lint

all: $(B)/pop3gw $(B)/pop3gw-maildir

# V=1 shows the whole compiler command lines.
V ?=
Q := $(if $(V),,@)

$(B)/obj/%.o: %.c $(wildcard lib/*.h gateway/*.h webhook/*.h admin/*.h backends/maildir/*.h)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC      $<")
	$(Q)$(CC) $(CFLAGS) -c -o $@ $<

$(B)/pop3gw: $(GW_OBJ)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(B)/pop3gw-maildir: $(BE_OBJ)
	$(if $(Q),@echo "  LD      $@")
	$(Q)$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(B)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC+LD   $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(PKG_LIBS) $(CMOCKA_LIBS)

# test_conn brings its own webhook client and worker functions (fakes that
# record every call): it links without the real ones and the server.
CONN_TEST_OBJ := $(filter-out $(B)/obj/webhook/wh_client.o $(B)/obj/gateway/server.o \
	$(B)/obj/gateway/report.o,$(LIB_OBJ))
$(B)/tests/test_conn: tests/unit/test_conn.c $(CONN_TEST_OBJ)
	@mkdir -p $(dir $@)
	$(if $(Q),@echo "  CC+LD   $@")
	$(Q)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(CONN_TEST_OBJ) $(PKG_LIBS) $(CMOCKA_LIBS)

# Install the Debian packages needed to build and run the demo (deps), and
# also everything the tests use (test-deps).
deps:
	sh scripts/deps.sh

test-deps:
	sh scripts/deps.sh --test

check-deps:
	@sh scripts/deps.sh --check-or-install

check-test-deps:
	@sh scripts/deps.sh --check-or-install --test

unit: check-deps $(UT_BIN)
	@set -e; for t in $(UT_BIN); do echo "== $$t"; $$t; done

integration: check-test-deps all
	python3 tests/integration/run.py --build $(B)

contract: check-test-deps all
	python3 tests/contract/run.py --build $(B)

browser: check-test-deps all
	PGW_BUILD=$(B) sh tests/browser/run.sh

# Every test: unit (cmocka), fuzz-corpus replay, integration with real POP3
# clients, the fault suite, the backend contract suite, the dashboard in a
# real browser.
test: check-test-deps lint
	$(MAKE) all $(UT_BIN)
	$(MAKE) unit fuzz-replay integration faults contract browser

# Unit, corpus replay and integration tests under AddressSanitizer and
# UndefinedBehaviorSanitizer.
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
san-test: check-test-deps
	$(MAKE) SAN="$(SAN_FLAGS)" OPT="-O1 -g" all
	$(MAKE) SAN="$(SAN_FLAGS)" OPT="-O1 -g" unit fuzz-replay integration

demo: check-deps all
	sh scripts/demo.sh

format:
	clang-format -i $(wildcard lib/*.[ch] gateway/*.[ch] webhook/*.[ch] admin/*.[ch] backends/maildir/*.[ch] tests/unit/*.[ch])

# The layers point one way (scripts/check-layers.sh) and the sources are
# formatted as .clang-format says.
lint: format-check
	@sh scripts/check-layers.sh

format-check:
	@clang-format --dry-run -Werror $(wildcard lib/*.[ch] gateway/*.[ch] webhook/*.[ch] admin/*.[ch] backends/maildir/*.[ch] tests/unit/*.[ch])

clean:
	rm -rf build

# ---- fuzzing (tests/fuzz/README.md) -----------------------------------------
# `make fuzz-replay` replays every corpus file through each target, built with
# $(CC) and the flags above (so `make san-test` replays under the sanitizers).
# `make fuzz` builds the libFuzzer targets with clang into build/fuzz/, runs
# each for FUZZ_TIME seconds and merges inputs with new coverage into
# tests/fuzz/corpus/NAME/; `make fuzz-cmin` shrinks those corpora again.
FUZZ_TARGETS := session command conv sasl proxy wh_json wh_content cfg
FUZZ_TIME ?= 60
FUZZ_CC ?= clang
FUZZ_SAN ?= -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -Wall -Wextra -D_GNU_SOURCE -DPOP3GW_VERSION='"$(VERSION)"' -I. \
	-g -O1 $(FUZZ_SAN) $(PKG_CFLAGS)
FUZZ_DEPS_session := gateway/pop3 gateway/sasl gateway/conv lib/buf lib/log lib/util \
	lib/metrics webhook/wh webhook/wh_json webhook/wh_sign
FUZZ_DEPS_command := $(FUZZ_DEPS_session)
FUZZ_DEPS_conv := gateway/conv
FUZZ_DEPS_sasl := gateway/sasl webhook/wh webhook/wh_sign lib/util
FUZZ_DEPS_proxy := gateway/proxy
FUZZ_DEPS_wh_json := webhook/wh webhook/wh_json webhook/wh_sign lib/buf lib/util
FUZZ_DEPS_wh_content := webhook/wh_content $(FUZZ_DEPS_wh_json)
FUZZ_DEPS_cfg := gateway/cfg lib/log lib/util webhook/wh

build/fuzz/obj/%.o: %.c $(wildcard lib/*.h gateway/*.h webhook/*.h admin/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c -o $@ $<

define FUZZ_RULES
build/fuzz/fuzz_$(1): tests/fuzz/fuzz_$(1).c $(wildcard tests/fuzz/*.h) $(FUZZ_DEPS_$(1):%=build/fuzz/obj/%.o)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $$@ $$< $(FUZZ_DEPS_$(1):%=build/fuzz/obj/%.o) $(PKG_LIBS) -lm
$(B)/fuzz-replay/fuzz_$(1): tests/fuzz/fuzz_$(1).c tests/fuzz/replay.c $(wildcard tests/fuzz/*.h) $(FUZZ_DEPS_$(1):%=$(B)/obj/%.o)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(CFLAGS) $$(LDFLAGS) -o $$@ tests/fuzz/fuzz_$(1).c tests/fuzz/replay.c $(FUZZ_DEPS_$(1):%=$(B)/obj/%.o) $(PKG_LIBS) -lm
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_RULES,$(t))))

.PHONY: fuzz fuzz-build fuzz-replay fuzz-cmin
fuzz-replay: $(FUZZ_TARGETS:%=$(B)/fuzz-replay/fuzz_%)
	@fail=0; for t in $(FUZZ_TARGETS); do \
		$(B)/fuzz-replay/fuzz_$$t tests/fuzz/corpus/$$t || { echo "fuzz_$$t: FAILED"; fail=1; }; \
	done; exit $$fail

fuzz-build: $(FUZZ_TARGETS:%=build/fuzz/fuzz_%)

fuzz: fuzz-build
	sh tests/fuzz/run.sh fuzz $(FUZZ_TIME) $(FUZZ_TARGETS)

fuzz-cmin: fuzz-build
	sh tests/fuzz/run.sh cmin 0 $(FUZZ_TARGETS)

# The benchmark (tests/bench/run.sh; results and method in docs/performance.md).
.PHONY: bench
bench:
	bash tests/bench/run.sh

# Decoding speed of a JSON retrieve reply (tests/bench/content.c): 50 MB
# documents fed in 16 KB pieces. BENCH_CONTENT_ARGS="MB RUNS".
.PHONY: bench-content
bench-content: $(B)/bench/content
	$(B)/bench/content $(BENCH_CONTENT_ARGS)

$(B)/bench/content: tests/bench/content.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(PKG_LIBS)

# ---- Installation, packaging checks and the container test -------------------
# make install [PREFIX=/usr/local] [DESTDIR=/tmp/stage]: the two binaries, the
# man page, the systemd unit (its ExecStart follows PREFIX) and examples.
PREFIX  ?= /usr/local
DESTDIR ?=
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DOCDIR  ?= $(PREFIX)/share/doc/pop3gw
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOC_FILES := packaging/pop3gw.conf.example packaging/pop3gw.env.example \
	packaging/tls-credentials.conf.example docs/deployment.md

.PHONY: install uninstall check-install docker-test

install: all
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(DOCDIR) $(DESTDIR)$(UNITDIR)
	install -m 0755 $(B)/pop3gw $(B)/pop3gw-maildir $(DESTDIR)$(BINDIR)/
	sed -e 's|/usr/local/share/doc/pop3gw/|$(DOCDIR)/|g' packaging/pop3gw.8 > $(DESTDIR)$(MANDIR)/man8/pop3gw.8
	sed -e 's|/usr/local/bin/|$(BINDIR)/|g' packaging/pop3gw.service > $(DESTDIR)$(UNITDIR)/pop3gw.service
	chmod 0644 $(DESTDIR)$(MANDIR)/man8/pop3gw.8 $(DESTDIR)$(UNITDIR)/pop3gw.service
	install -m 0644 $(DOC_FILES) $(DESTDIR)$(DOCDIR)/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/pop3gw $(DESTDIR)$(BINDIR)/pop3gw-maildir \
		$(DESTDIR)$(MANDIR)/man8/pop3gw.8 $(DESTDIR)$(UNITDIR)/pop3gw.service \
		$(addprefix $(DESTDIR)$(DOCDIR)/,$(notdir $(DOC_FILES)))
	-rmdir $(DESTDIR)$(DOCDIR)

# Installs into $(B)/install-check and checks it: files, man page against
# --help, groff warnings, systemd-analyze verify of the unit.
check-install: all
	rm -rf $(B)/install-check
	$(MAKE) --no-print-directory install DESTDIR=$(CURDIR)/$(B)/install-check PREFIX=/usr/local
	sh packaging/check-install.sh $(CURDIR)/$(B)/install-check /usr/local

# Builds the container images and runs them (needs root; prints SKIP where a
# Docker engine cannot run). See tests/docker/run.sh.
docker-test:
	bash tests/docker/run.sh

# ---- fault suite, valgrind, soak (docs/security.md, tests/faults/README.md) --
# `make faults`: the fault suite (a backend under the tests' control, and
# misbehaving clients) against $(B). `make valgrind-test`: the integration
# tests with every gateway under valgrind (normal build: ASan and valgrind do
# not mix); zero errors and no definite/indirect leaks. `make soak`: not in
# CI; SOAK_SESSIONS sessions with a fault mix, RSS and descriptors printed.
.PHONY: faults valgrind-test soak
SOAK_SESSIONS ?= 200000
SOAK_TIME_LIMIT ?= 1200

faults: check-test-deps all
	python3 tests/faults/run.py --build $(B)

valgrind-test: check-test-deps
	$(MAKE) SAN= all
	python3 tests/faults/valgrind_run.py --build build

soak: check-deps all
	python3 tests/soak/soak.py --build $(B) --sessions $(SOAK_SESSIONS) --time-limit $(SOAK_TIME_LIMIT)
