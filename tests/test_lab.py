"""The lab itself: it removes every namespace it made, even when setup fails half way,
and nothing it did not make."""
from __future__ import annotations

import pytest

from conftest import is_root

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(not is_root(), reason="needs root for network namespaces")]


def namespaces() -> set[str]:
    from f2b_ext.lab.netns import sh
    return {line.split()[0] for line in sh("ip", "netns", "list").splitlines() if line.strip()}


def test_a_setup_failing_half_way_leaves_no_namespace_and_restores_sysctls():
    from f2b_ext.lab.netns import NF_LOG_ALL_NETNS, Lab, LabError, sh
    lab = Lab()
    before = NF_LOG_ALL_NETNS.read_text()
    sh("ip", "netns", "add", lab.remote)          # someone else's: the lab's second `netns add` fails
    try:
        with pytest.raises(LabError, match="netns add"):
            with lab:
                pass
        assert lab.server not in namespaces(), "the server namespace leaked"
        assert lab.remote in namespaces(), "a namespace the lab did not make must stay"
        assert NF_LOG_ALL_NETNS.read_text() == before
    finally:
        sh("ip", "netns", "del", lab.remote, check=False)
