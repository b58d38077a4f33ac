# f2b-ext: fresh Debian 12, as root. `make demo` and `make test` install what they need.
#
# fail2ban, nftables' Python binding and scapy come from Debian's packages (systemd only
# for its journald binary: the forgery test runs a private one; net-tools for the netstat
# that bench/synwatch_cost.py compares with; setuptools and wheel so tests/test_wheel.py
# builds the wheel offline; seccomp so tests/unit_sandbox.py applies the synwatch unit's
# system call filter where no systemd runs; nats-server for the fleet's lab,
# python3-cryptography and openssl for `f2b-ext fleet init`'s TLS files); the venv is
# built from Debian's /usr/bin/python3 with --system-site-packages so it imports them.

PYTHON_SYS := /usr/bin/python3
VENV       := .venv
PY         := $(VENV)/bin/python
APT_PKGS   := fail2ban nftables python3-nftables iptables ipset rsyslog iproute2 \
              python3-scapy python3-systemd python3-pyinotify python3-venv procps util-linux systemd \
              net-tools python3-setuptools python3-wheel python3-seccomp nats-server \
              python3-cryptography openssl
STAMP      := $(VENV)/.installed

.PHONY: deps venv test test-fast demo bench samples clean

deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
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

# The whole suite: pure core, real fail2ban, real kernel in network namespaces.
test: venv
	$(PY) -m pytest

# Everything but the tests that need root and the kernel.
test-fast: venv
	$(PY) -m pytest -m 'not kernel'

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
