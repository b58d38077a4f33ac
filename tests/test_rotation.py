"""The pure parts of the logrotate hooks (f2b_ext/system/rotation.py): which jails read a log,
fail2ban's first-line hash, and when every jail has read the old file to its end."""
from __future__ import annotations

import hashlib

from f2b_ext.system import rotation


def test_jails_reading_a_log():
    paths = {"a": ["/var/log/netfilter.log"], "b": ["/var/log/auth.log"], "c": ["/x", "/var/log/netfilter.log"]}
    assert rotation.jails_reading("/var/log/netfilter.log", paths) == ["a", "c"]
    assert rotation.jails_reading("/var/log/none", paths) == []


def test_first_line_hash_is_fail2bans():
    data = b"first line\nsecond\n"
    # fail2ban's FileContainer hashes the first line, newline included (sha1 where its md5 probe fails)
    assert rotation.first_line_hashes(data) == {hashlib.md5(b"first line\n").hexdigest(),
                                                hashlib.sha1(b"first line\n").hexdigest()}
    assert rotation.first_line_hashes(b"no newline yet") == {""}
    assert rotation.first_line_hashes(b"") == {""}


def test_waiting_for_every_jail_at_the_end_of_the_old_file():
    hashes = rotation.first_line_hashes(b"x\n" * 10)
    h = sorted(hashes)[0]
    assert rotation.waiting_for({"a": (h, 20), "b": (h, 20)}, ["a", "b"], hashes, 20) == []
    assert rotation.waiting_for({"a": (h, 18), "b": (h, 20)}, ["a", "b"], hashes, 20) == ["a"]
    assert rotation.waiting_for({"a": ("other", 20)}, ["a"], hashes, 20) == ["a"]      # another file's position
    assert rotation.waiting_for({}, ["a"], hashes, 20) == ["a"]                        # nothing recorded yet
