# mailstack: `make demo` runs the main job on the bundled example; `make test` runs the suite.
# Both install what they need on a fresh Debian 12 machine (as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
SITE ?= inventories/branch-office/site.yml
MAILSTACK := $(VENV)/bin/mailstack

.PHONY: demo test lint unit live faults test-multisite bigmailbox upgrade tlsscan host image venv schema bench molecule clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	@python3 -c 'import ensurepip' 2>/dev/null || (apt-get update -qq && apt-get install -y -qq python3-venv)
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

host:
	bash mailstack/lab/scripts/install-host-deps.sh

image: host
	bash mailstack/lab/scripts/build-image.sh
	bash mailstack/lab/scripts/build-image.sh bare

demo: venv image
	$(MAILSTACK) lab secrets $(SITE)
	$(MAILSTACK) secrets $(SITE)
	$(MAILSTACK) check $(SITE)
	$(MAILSTACK) render $(SITE) -o build
	$(MAILSTACK) check $(SITE) --with-daemons
	$(MAILSTACK) lab up $(SITE)
	$(MAILSTACK) apply $(SITE) --lab
	$(MAILSTACK) verify $(SITE) --lab

lint: venv host
	$(VENV)/bin/ruff check mailstack tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/yamllint -s .
	ANSIBLE_CONFIG=$(CURDIR)/mailstack/ansible/ansible.cfg $(VENV)/bin/ansible-lint -q mailstack/ansible
	shellcheck -x mailstack/lab/scripts/*.sh mailstack/ansible/ansible_collections/mailstack/mail/roles/*/files/*.sh

unit: venv host
	$(PY) -m pytest -q -m 'not live and not slow'

live: venv image
	$(PY) -m pytest -q -n 2 --dist loadfile -m 'live and not slow'

# Opt-in: a restart of slapd, Postfix and Dovecot each during a run of 1,000 messages (with the
# rest of tests/live/test_faults.py, whose lab it shares).
faults: venv image
	$(PY) -m pytest -q -s --durations=0 tests/live/test_faults.py

# Opt-in: no mailbox size wall: 2.2 GB of generated mail in one Maildir, then a message by SMTP
# read over IMAP (tests/live/test_dovecot_access.py's lab).
# Opt-in: a lab applied with the code of the last commit before the password policy, then
# upgraded online by this one (tests/live/test_directory_policy.py with the upgrade).
upgrade: venv image
	MAILSTACK_TRY_UPGRADE=1 $(PY) -m pytest -q -s tests/live/test_directory_policy.py

# Opt-in: a full testssl.sh scan of every TLS port of the example in the lab (verify's `tls`
# part is the suite's quick check of the same).
tlsscan: venv image
	$(PY) -m pytest -q -s -m slow --durations=0 tests/live/test_tlsscan.py

# Opt-in: the whole head-office example (a head office and two branches, five containers) and
# its faults: the head office paused, a hung provider, a hung replica and its watchdog, and the
# broken variants each check must catch (tests/live/test_multisite_faults.py). `make test` runs
# the compact version (one branch: tests/live/test_multisite.py).
test-multisite: venv image
	$(PY) -m pytest -q -s --durations=0 -m slow tests/live/test_multisite_faults.py

bigmailbox: venv image
	$(PY) -m pytest -q -s -m slow tests/live/test_dovecot_access.py -k bigmailbox

test: venv image
	@start=$$(date +%s); $(MAKE) --no-print-directory lint || exit 1; \
	  echo "lint: $$(( $$(date +%s) - start )) s"
	$(PY) -m pytest -q -n 2 --dist loadfile -m 'not slow' --durations=15

schema: venv
	$(PY) -m mailstack.site.schema > mailstack/site/schema.json

# Keeps build/<site>/lab-ca: the lab's CAs that the example's secrets/lab/*-ca were made from.
clean:
	rm -rf .pytest_cache
	find build -mindepth 2 -maxdepth 2 ! -name lab-ca -exec rm -rf {} + 2>/dev/null || true

# Opt-in: figures, not tests. check/render at 10 to 10,000 accounts; a hostile site; then the
# stack in one lab: apply (first, no change, one relay), delivery and IMAP logins with LDAP
# against flat tables (bench/stack.py); apply of one host against a fleet of three
# (bench/fleet.py). About 17 minutes in all on 2 cores.
bench: venv image
	$(PY) bench/render_scale.py
	$(PY) bench/hostile_site.py
	$(PY) bench/stack.py
	$(PY) bench/fleet.py

# Role development only (not in CI): molecule drives lab up -> apply -> idempotence -> verify.
molecule: venv image
	$(PY) -m pip install -q 'molecule>=24'
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH MAILSTACK_SITE=$(SITE) molecule test
