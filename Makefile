# f2b-ext: fresh Debian 12, as root. `make demo` and `make test` install what they need.
#
# fail2ban, nftables' Python binding and scapy come from Debian's packages (systemd only
# for its journald binary: the forgery test runs a private one; net-tools for the netstat
# that bench/synwatch_cost.py compares with; setuptools and wheel so tests/test_wheel.py
# builds the wheel offline; seccomp so tests/unit_sandbox.py applies the synwatch unit's
# system call filter where no systemd runs; nats-server for the fleet's lab,
# python3-cryptography and openssl for `f2b-ext fleet init`'s TLS files; logrotate for the
# .deb's logrotate file); the venv is
# built from Debian's /usr/bin/python3 with --system-site-packages so it imports them.

PYTHON_SYS := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
# `make deb` (debhelper, pybuild, lintian) and the Debian 13 root (debootstrap); defined
# before APT_PKGS, which `:=` expands at once
DEB_BUILD_PKGS := debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools \
              lintian debootstrap
APT_PKGS   := fail2ban nftables python3-nftables iptables ipset rsyslog iproute2 \
              python3-scapy python3-systemd python3-pyinotify python3-venv procps util-linux systemd \
              net-tools python3-setuptools python3-wheel python3-seccomp nats-server \
              python3-cryptography openssl logrotate \
              $(DEB_BUILD_PKGS)
STAMP      := $(VENV)/.installed

VERSION    := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' f2b_ext/__init__.py)
DEB_DIR    := build/deb
DEB        := $(DEB_DIR)/f2b-ext_$(VERSION)_all.deb

# Debian 13 (trixie): a debootstrapped root, cached outside the clone (rebuilt when this
# list or tests/debian/root changes), where the suite runs against trixie's fail2ban 1.1.0
# and Python 3.13. Everything is Debian's: the venv's pytest/hypothesis/PyYAML too.
TRIXIE_ROOT := /var/cache/f2b-ext/trixie
TRIXIE_PKGS := fail2ban nftables python3-nftables iptables ipset rsyslog iproute2 \
              python3-scapy python3-systemd python3-pyinotify procps util-linux systemd \
              net-tools kmod logrotate python3-pytest python3-hypothesis python3-yaml \
              python3-pip python3-venv python3-setuptools python3-wheel python3-seccomp \
              nats-server python3-cryptography openssl
IN_TRIXIE   := tests/debian/root run $(TRIXIE_ROOT) . -- env PYTHONDONTWRITEBYTECODE=1 sh -c

.PHONY: deps venv test test-fast test-pure test-fail2ban test-kernel test-trixie trixie-root deb demo bench samples clean

deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get -o Acquire::Retries=3 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 \
	    -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends $$missing; \
	fi

$(STAMP): setup.cfg pyproject.toml | deps
	$(PYTHON_SYS) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,fleet]'
	@# setuptools' editable finder runs after sys.path, so a copy that `f2b-ext install` put
	@# into /usr/local/lib/python3*/dist-packages would win; a .pth puts the checkout first.
	echo "$(CURDIR)" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/00-f2b-ext-checkout.pth"
	touch $(STAMP)

venv: deps $(STAMP)

# The whole suite: pure core, real fail2ban, real kernel in network namespaces (the
# .deb's install/purge on this machine and in the trixie root among them), then again
# on Debian 13.
test: venv deb trixie-root
	$(PY) -m pytest
	$(MAKE) --no-print-directory test-trixie

# The .deb (debhelper): built from a copy of the working tree (tracked and untracked,
# not ignored files), so the clone stays clean; lintian's errors fail the build.
deb: $(DEB)
$(DEB): $(shell git ls-files -co --exclude-standard 2>/dev/null) | deps
	@grep -q '^f2b-ext ($(VERSION))' debian/changelog || \
	  { echo "make deb: debian/changelog does not start with version $(VERSION) (f2b_ext/__init__.py)" >&2; exit 1; }
	rm -rf $(DEB_DIR) && mkdir -p $(DEB_DIR)/f2b-ext-$(VERSION)
	git ls-files -z -co --exclude-standard | tar --null -T - -cf - | tar -xf - -C $(DEB_DIR)/f2b-ext-$(VERSION)
	cd $(DEB_DIR)/f2b-ext-$(VERSION) && env PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -b -us -uc > ../build.log 2>&1 || \
	  { tail -n 40 ../build.log >&2; echo "make deb: dpkg-buildpackage failed (log: $(DEB_DIR)/build.log)" >&2; exit 1; }
	lintian --fail-on error --tag-display-limit 0 $(DEB) > $(DEB_DIR)/lintian.txt 2>&1; rc=$$?; cat $(DEB_DIR)/lintian.txt; \
	  [ $$rc = 0 ] || { echo "make deb: lintian found errors" >&2; rm -f $(DEB); exit 1; }
	@echo "built $(DEB)"

trixie-root: deps
	tests/debian/root build $(TRIXIE_ROOT) trixie "$(TRIXIE_PKGS)"

# The whole suite in the trixie root: pure, real fail2ban and real kernel tiers (the .deb's
# install/purge there runs from the host's suite: tests/test_deb.py skips inside a root).
# (one test is about the host's .venv, which /src shows but trixie's Python cannot run)
HOST_VENV_TEST := tests/test_wheel.py::test_the_checkouts_venv_imports_the_checkout_before_an_installed_copy
# (the fleet lab needs nats-py, which comes from PyPI into the venv, not from Debian: it runs
# on Debian 12 only; the fleet's pure tests run on both)
FLEET_LAB_TESTS := tests/test_fleet_lab.py tests/test_fleet_faults.py tests/test_fleet_demo.py
test-trixie: trixie-root
	$(IN_TRIXIE) 'cd /src && python3 -c "import sys, fail2ban.version as v; print(\"Debian\", open(\"/etc/debian_version\").read().strip(), \"fail2ban\", v.version, \"Python\", sys.version.split()[0])" \
	  && python3 -m pytest -p no:cacheprovider --deselect $(HOST_VENV_TEST) $(addprefix --ignore=,$(FLEET_LAB_TESTS))'

# Everything but the tests that need root and the kernel.
test-fast: venv
	$(PY) -m pytest -m 'not kernel'

# The suite in three tiers, each on its own (README "Tests"); together they are `make
# test`'s first run. pure: the core, the layout, the command line's own checks, with
# fail2ban made unimportable (tests/tiers/no_fail2ban), so it proves it needs none;
# fail2ban: Debian's fail2ban (its filters, actions, server, the packaging); kernel:
# root, network namespaces, the real netfilter (run it under the lock other sessions
# on this machine take: flock /tmp/f2b-ext-kernel.lock make test-kernel).
test-pure: venv
	PYTHONPATH=tests/tiers/no_fail2ban $(PY) -m pytest -m 'not kernel and not fail2ban'

test-fail2ban: venv
	$(PY) -m pytest -m 'fail2ban and not kernel'

test-kernel: venv
	$(PY) -m pytest -m kernel

# The main job (see README).
demo: venv
	$(VENV)/bin/f2b-ext demo

# Benchmarks (ban_throughput needs root, about 6 minutes); figures go to BENCHMARKS.md
# by hand, with the command.
bench: venv
	$(PY) bench/filter_throughput.py
	$(PY) bench/escalation_core.py
	$(PY) bench/ban_throughput.py
	$(PY) bench/report_throughput.py
	$(PY) bench/synwatch_cost.py
	$(PY) bench/fleet_propagation.py

# Regenerate tests/samples/netfilter-captured from the real kernel (root).
samples: venv
	$(PY) tests/capture_samples.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis build *.egg-info
	@echo "(the trixie root stays cached in $(TRIXIE_ROOT): rm -rf it to rebuild)"
