# Front door. `make run` and `make test` work on a fresh Debian machine.
SHELL := /bin/bash
BUILD   ?= build
PREFIX  ?= /usr/local
JOBS    ?= $(shell nproc)
# What building tpc needs; then what its tests need (a real etcd, groff, clang's fuzzer).
DEB_BUILD    := g++ cmake make pkg-config libcli11-dev libboost-dev libsqlite3-dev libfmt-dev doctest-dev libedit-dev libssl-dev nlohmann-json3-dev libtcmalloc-minimal4
DEB_PACKAGES := $(DEB_BUILD) etcd-server groff-base clang libclang-rt-14-dev systemd

.PHONY: all deps deps-build install-packages build check test run clean install uninstall format bench bench-member bench-cost bench-keys crash-test sim fuzz fuzz-build sanitize

all: build

deps:
	@$(MAKE) -s install-packages PACKAGES="$(DEB_PACKAGES)"
deps-build:
	@$(MAKE) -s install-packages PACKAGES="$(DEB_BUILD)"
install-packages:
	@missing=$$(for p in $(PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	else \
	  echo "missing packages; run as root:"; \
	  echo "  apt-get install -y $$missing"; exit 1; \
	fi

$(BUILD)/Makefile: CMakeLists.txt
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

build: $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS)

# ctest hides the output of passing tests: the crash and bank tests' summaries are printed
# after it, then ctest's closing line again, so that it stays the last line.
test: deps build fuzz-build
	@cd $(BUILD) && set -o pipefail && ctest --output-on-failure -j 2 --timeout 600 | tee ctest.out; \
	rc=$$?; grep -h -E '^(crash test|power-loss test|etcd crash test|etcd quorum test|leader kill test|restart test|bank test|replace test[^:]*|backup test):' Testing/Temporary/LastTest.log || true; \
	cd .. && $(MAKE) -s fuzz-run FUZZ_SECONDS=6 || rc=1; \
	grep -E 'tests passed, [0-9]+ tests failed' $(BUILD)/ctest.out | tail -1; exit $$rc

# The quick tier: unit tests, the simulator (5,000 seeds) and every integration test not
# labelled slow (tests/slow.txt). About a minute after the build on 2 cores (README).
check: deps build
	@cd $(BUILD) && set -o pipefail && ctest --output-on-failure -j 2 --timeout 300 -LE slow | tail -n 25

run: deps build
	$(BUILD)/tpc cluster --participants 2 --port 5000 --data-dir ./tpc-data

# Benchmarks are not tests: they print figures (see README). ~4 minutes.
bench: deps build
	bash tests/bench/run.sh

# The member add rows of make bench alone (a few minutes).
bench-member: deps build
	bash tests/bench/member.sh

# The server CPU per transaction rows of make bench alone (about a minute).
bench-cost: deps build
	bash tests/bench/cost.sh

# The keys stored rows of make bench alone (1M and 10M keys: about three minutes).
bench-keys: deps build
	bash tests/bench/keys.sh

# A longer randomized crash test than the one in `make test`.
crash-test: deps build
	TPC_CRASH_RUNS=$${TPC_CRASH_RUNS:-40} TPC_POWER_RUNS=$${TPC_POWER_RUNS:-20} \
	  TPC_ETCD_RUNS=$${TPC_ETCD_RUNS:-20} TPC_RESTART_ROUNDS=$${TPC_RESTART_ROUNDS:-25} \
	  $(BUILD)/integration_tests -ts=crash

# The cluster simulator over many seeds (docs/simulation.md); the last line is the summary.
SIM_SEEDS ?= 20000
sim: deps build
	$(BUILD)/tpc_sim --seeds $(SIM_SEEDS)

# Fuzzing (tests/fuzz/): each libFuzzer target for FUZZ_SECONDS, from the seed corpus in the
# tree; new inputs go to $(FUZZ_BUILD)/corpus, findings to $(FUZZ_BUILD)/findings.
FUZZ_SECONDS ?= 300
FUZZ_BUILD ?= build-fuzz
FUZZ_TARGETS := codec verbs txlog identity certs
fuzz-build:
	@test -f $(FUZZ_BUILD)/Makefile || CC=clang CXX=clang++ cmake -S . -B $(FUZZ_BUILD) -DTPC_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) $(addprefix --target fuzz_,$(FUZZ_TARGETS)) >/dev/null
fuzz-run:
	@mkdir -p $(FUZZ_BUILD)/findings; for t in $(FUZZ_TARGETS); do \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  $(FUZZ_BUILD)/fuzz_$$t $(FUZZ_BUILD)/corpus/$$t tests/fuzz/corpus/$$t -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ_BUILD)/findings/$$t- -print_final_stats=1 >$(FUZZ_BUILD)/fuzz_$$t.log 2>&1 \
	    || { echo "fuzz $$t: FINDING, see $(FUZZ_BUILD)/fuzz_$$t.log"; tail -30 $(FUZZ_BUILD)/fuzz_$$t.log; exit 1; }; \
	  echo "fuzz $$t: $$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' $(FUZZ_BUILD)/fuzz_$$t.log | grep -o '[0-9]*$$') runs in $(FUZZ_SECONDS) s, $$(grep -o 'cov: [0-9]*' $(FUZZ_BUILD)/fuzz_$$t.log | tail -1), no finding"; \
	done
fuzz: deps fuzz-build fuzz-run

# The whole suite built with AddressSanitizer and UndefinedBehaviorSanitizer; then the unit
# tests of the log (its writer thread) and the store (its checkpointer) with ThreadSanitizer.
SANITIZE_BUILD ?= build-sanitize
TSAN_BUILD ?= build-tsan
sanitize: deps
	@test -f $(SANITIZE_BUILD)/Makefile || cmake -S . -B $(SANITIZE_BUILD) -DTPC_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(SANITIZE_BUILD) -j $(JOBS)
	cd $(SANITIZE_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure -j 2 --timeout 1200
	@test -f $(TSAN_BUILD)/Makefile || cmake -S . -B $(TSAN_BUILD) -DTPC_TSAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(TSAN_BUILD) -j $(JOBS) --target unit_tests
	TSAN_OPTIONS=halt_on_error=1 $(TSAN_BUILD)/unit_tests -ts=txlog,store

# Only the tpc binary is built (not the test suites), and installed stripped.
INSTALLED_DOCS := README.md LICENSE $(wildcard docs/*.md)
install: deps-build $(BUILD)/Makefile
	cmake --build $(BUILD) -j $(JOBS) --target tpc
	install -D -s -m 755 $(BUILD)/tpc $(DESTDIR)$(PREFIX)/bin/tpc
	install -D -m 644 man/tpc.1 $(DESTDIR)$(PREFIX)/share/man/man1/tpc.1
	install -d $(DESTDIR)$(PREFIX)/share/doc/tpc
	install -m 644 $(INSTALLED_DOCS) $(DESTDIR)$(PREFIX)/share/doc/tpc/
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system
	for u in tpc-participant@ tpc-leader@; do \
	  sed 's|@BINDIR@|$(PREFIX)/bin|g' packaging/systemd/$$u.service > $(DESTDIR)$(PREFIX)/lib/systemd/system/$$u.service; \
	  chmod 644 $(DESTDIR)$(PREFIX)/lib/systemd/system/$$u.service; done
	install -d $(DESTDIR)$(PREFIX)/share/bash-completion/completions
	$(BUILD)/tpc completion bash > $(DESTDIR)$(PREFIX)/share/bash-completion/completions/tpc

# Removes what install put there, nothing else (data directories stay).
uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/tpc $(DESTDIR)$(PREFIX)/share/man/man1/tpc.1
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/share/doc/tpc/,$(notdir $(INSTALLED_DOCS)))
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/tpc
	rm -f $(DESTDIR)$(PREFIX)/lib/systemd/system/tpc-participant@.service $(DESTDIR)$(PREFIX)/lib/systemd/system/tpc-leader@.service
	-rmdir $(DESTDIR)$(PREFIX)/share/doc/tpc 2>/dev/null

format:
	clang-format -i $$(find src tests -name '*.cpp' -o -name '*.h')

clean:
	rm -rf $(BUILD) $(FUZZ_BUILD) $(SANITIZE_BUILD) $(TSAN_BUILD)
