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

LIB_SRC := $(filter-out gateway/main.c,$(wildcard gateway/*.c webhook/*.c admin/*.c))
LIB_OBJ := $(LIB_SRC:%.c=$(B)/obj/%.o)
GW_OBJ  := $(B)/obj/gateway/main.o $(LIB_OBJ)
BE_SRC  := $(wildcard backends/maildir/*.c)
BE_OBJ  := $(BE_SRC:%.c=$(B)/obj/%.o)
UT_SRC  := $(wildcard tests/unit/test_*.c)
UT_BIN  := $(UT_SRC:tests/unit/%.c=$(B)/tests/%)

.PHONY: all deps demo test unit integration clean format format-check san-test check-deps

all: $(B)/pop3gw $(B)/pop3gw-maildir

$(B)/obj/%.o: %.c $(wildcard gateway/*.h webhook/*.h admin/*.h backends/maildir/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(B)/pop3gw: $(GW_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(B)/pop3gw-maildir: $(BE_OBJ)
	$(CC) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

$(B)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(PKG_LIBS) $(CMOCKA_LIBS)

# Install the Debian packages needed to build, test and run the demo.
deps:
	sh scripts/deps.sh

check-deps:
	@sh scripts/deps.sh --check-or-install

unit: check-deps $(UT_BIN)
	@set -e; for t in $(UT_BIN); do echo "== $$t"; $$t; done

integration: check-deps all
	python3 tests/integration/run.py --build $(B)

test: check-deps
	$(MAKE) all $(UT_BIN)
	$(MAKE) unit integration

# The same tests under AddressSanitizer and UndefinedBehaviorSanitizer.
san-test: check-deps
	$(MAKE) SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" OPT="-O1 -g" test

demo: check-deps all
	sh scripts/demo.sh

format:
	clang-format -i $(wildcard gateway/*.[ch] webhook/*.[ch] admin/*.[ch] backends/maildir/*.[ch] tests/unit/*.c)

format-check:
	clang-format --dry-run -Werror $(wildcard gateway/*.[ch] webhook/*.[ch] admin/*.[ch] backends/maildir/*.[ch] tests/unit/*.c)

clean:
	rm -rf build
