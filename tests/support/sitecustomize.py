"""Start-up hooks for processes of the test suite, put on their path by ``tests/conftest.py``.

Python imports ``sitecustomize`` at start-up from its path. Here it:

- installs the network guard (:mod:`gossip_netguard`) when ``GOSSIP_TESTS_NETGUARD_LOG`` names
  the file that refusals are reported to;
- starts coverage measurement when ``COVERAGE_PROCESS_START`` names coverage's configuration
  (the measured run of the suite sets it, for the suite's own process and every child).
"""

import os

if os.environ.get("GOSSIP_TESTS_NETGUARD_LOG"):
    import gossip_netguard

    gossip_netguard.install(os.environ["GOSSIP_TESTS_NETGUARD_LOG"])

if os.environ.get("COVERAGE_PROCESS_START"):
    try:
        import coverage
    except ImportError:  # the measured run installs it; a plain run need not
        pass
    else:
        coverage.process_startup()
