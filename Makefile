# helix: ngx_http_helix_module
#
#   make            build build/ngx_http_helix_module.so (Debian's nginx-dev)
#   make run        install what is missing, build, start the demo gateway
#   make stop       stop everything "make run" started
#   make test       install what is missing, check src/'s layers, build,
#                   run the whole suite (TEST_NGINX_LIB=/path/to/test-nginx/lib:
#                   under upstream Test::Nginx instead of t/lib's runner)
#   make test-upstream   the suite under upstream Test::Nginx from
#                   TEST_NGINX_UPSTREAM_LIB (default ../shared/test-nginx/lib);
#                   not yet green: t/lib/README lists what still differs
#   make test-cluster    three nodes in network namespaces behind a load
#                   balancer, Redis and PostgreSQL in their own
#                   (util/cluster.sh, t/cluster/; root)
#   make test-valgrind   the same suite with nginx under valgrind
#   make test-asan  the same suite against nginx 1.22.1 and the module
#                   built with AddressSanitizer from Debian's source package
#   make fuzz       each libFuzzer harness of util/fuzz/ for FUZZ_SECONDS
#                   (default 60) from its seed corpus
#   make bench      helix next to plain nginx, same run, as ratios, and
#                   the latency it adds (docs/bench-method.md); SOAK=1
#                   adds the soak; never part of "make test" or CI
#   make test-bench the same as "make bench"
#   make install    put the module where Debian's nginx loads it
#   make deb        the Debian package build/libnginx-mod-http-helix_*.deb
#                   (debian/, dh_nginx; util/deb.sh)
#   make test-deb   build it, install it into the system nginx, serve a
#                   request on 127.0.0.1:2150, purge it (util/deb-check.sh;
#                   root)
#   make migrate    apply sql/ to PostgreSQL (PGHOST, PGPORT, PGDATABASE,
#                   PGUSER; default 127.0.0.1:5432 helixagent postgres)
#
# NGINX_SRC=/path/to/nginx-1.22.1 builds against another nginx tree;
# NGINX_CONF_ARGS adds configure arguments (e.g. for an ASan build).

SHELL           := /bin/bash
NGINX_SRC       ?= /usr/share/nginx/src
NGINX_CONF_ARGS ?=
BUILD           ?= $(CURDIR)/build
NGINX           ?= /usr/sbin/nginx
PROVE_ARGS      ?= -r t/
TEST_NGINX_UPSTREAM_LIB ?= $(CURDIR)/../shared/test-nginx/lib

NGX_BUILD       := $(BUILD)/nginx
MODULE          := $(BUILD)/ngx_http_helix_module.so
LOADGEN         := $(BUILD)/loadgen
SOURCES         := ngx_http_helix_module.c $(wildcard src/*/*.c src/*/*.h)
LAYERS          := core clients formats policy api
CC_OPT          := -g -O2 -Wall -Wextra -Wno-unused-parameter \
                   -fstack-protector-strong -Wformat \
                   -Werror=format-security -fPIC -D_FORTIFY_SOURCE=2

MODULES_DIR     ?= /usr/lib/nginx/modules
MODULES_AVAIL   ?= /usr/share/nginx/modules-available

.PHONY: FORCE all deps layers run stop test test-upstream test-cluster \
        test-valgrind test-asan fuzz check-json bench test-bench install \
        deb test-deb migrate clean

all: $(MODULE)

deps:
	@util/deps.sh

# a file added to or taken from src/ configures again ("config" lists them)
$(BUILD)/sources: FORCE
	@mkdir -p $(BUILD)
	@echo "$(sort $(SOURCES))" | cmp -s - $@ || echo "$(sort $(SOURCES))" > $@

$(NGX_BUILD)/Makefile: config Makefile $(BUILD)/sources
	@test -d "$(NGINX_SRC)/auto" || { echo "no nginx source tree at" \
	    "$(NGINX_SRC): run 'make deps' (nginx-dev) or set NGINX_SRC"; \
	    exit 1; }
	rm -rf $(NGX_BUILD)
	mkdir -p $(BUILD)
	cp -a $(NGINX_SRC) $(NGX_BUILD)
	cd $(NGX_BUILD) && \
	if [ -f conf_flags ]; then . ./conf_flags; \
	else NGX_CONF_FLAGS=(--with-compat); fi && \
	./configure "$${NGX_CONF_FLAGS[@]}" $(NGINX_CONF_ARGS) \
	    --with-cc-opt="$(CC_OPT)" \
	    --add-dynamic-module=$(CURDIR) > $(BUILD)/configure.log 2>&1 || \
	    { tail -20 $(BUILD)/configure.log; exit 1; }

$(MODULE): $(NGX_BUILD)/Makefile $(SOURCES)
	$(MAKE) -C $(NGX_BUILD) -f objs/Makefile modules
	@# a new file, not a rewrite: a running nginx has the old one mapped
	cp $(NGX_BUILD)/objs/ngx_http_helix_module.so $(MODULE).tmp
	mv -f $(MODULE).tmp $(MODULE)

run: deps $(MODULE)
	@util/run.sh start

stop:
	@util/run.sh stop

test: deps layers $(MODULE)
	@util/test.sh $(PROVE_ARGS)

# src/'s layers: no file uses one above its own, no cycle (config's order)
layers:
	@python3 util/layers.py

test-upstream: deps $(MODULE)
	@if [ -f "$(TEST_NGINX_UPSTREAM_LIB)/Test/Nginx/Socket.pm" ]; then \
	    TEST_NGINX_LIB="$(TEST_NGINX_UPSTREAM_LIB)" util/test.sh $(PROVE_ARGS); \
	else \
	    echo "test-upstream: SKIPPED: no upstream Test::Nginx at" \
	        "$(TEST_NGINX_UPSTREAM_LIB) (set TEST_NGINX_UPSTREAM_LIB)"; \
	fi

test-cluster: deps $(MODULE)
	@util/cluster.sh test

test-valgrind: deps $(MODULE)
	@TEST_NGINX_USE_VALGRIND=1 util/test.sh $(PROVE_ARGS)

# ASan reports fail the test block they appear in (util/asan.sh)
test-asan: deps
	@util/asan.sh $(PROVE_ARGS)

# one minute a target by default; a crash fails the run (util/fuzz.sh)
fuzz: deps
	@util/fuzz.sh

# the JSON scanner against jansson's parser on 200k mutated documents
check-json: $(MODULE)
	cd $(NGX_BUILD) && $(CC) -O1 -g -I src/core -I src/event \
	    -I src/event/modules -I src/os/unix -I objs -I $(CURDIR)/src/core \
	    -o $(BUILD)/jscan-fuzz $(CURDIR)/util/jscan-fuzz.c \
	    $(CURDIR)/src/core/ngx_http_helix_jscan.c -ljansson
	$(BUILD)/jscan-fuzz 200000

bench: deps $(MODULE) $(LOADGEN)
	@SOAK=$(SOAK) util/bench.sh

test-bench: bench

# the constant-rate load generator of "make bench" (util/loadgen.c)
$(LOADGEN): util/loadgen.c
	mkdir -p $(BUILD)
	$(CC) -O2 -Wall -Wextra -Werror -o $@ util/loadgen.c

install: $(MODULE)
	install -d $(DESTDIR)$(MODULES_DIR) $(DESTDIR)$(MODULES_AVAIL)
	install -m 0644 $(MODULE) $(DESTDIR)$(MODULES_DIR)/
	echo 'load_module modules/ngx_http_helix_module.so;' \
	    > $(DESTDIR)$(MODULES_AVAIL)/mod-http-helix.conf
	@echo "enable with: ln -s $(MODULES_AVAIL)/mod-http-helix.conf" \
	    "/etc/nginx/modules-enabled/50-mod-http-helix.conf"

# the package build compiles on its own (nginx_mod) and runs no tests
deb: deps
	@util/deb.sh

test-deb: deps
	@util/deb-check.sh

migrate:
	@util/migrate.sh

clean:
	rm -rf $(BUILD) t/servroot
