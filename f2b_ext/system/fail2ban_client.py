"""Adapter: the running fail2ban-server, over fail2ban's own client protocol."""

from __future__ import annotations

import os
from pathlib import Path

from f2b_ext.errors import F2bExtError
from f2b_ext.system.filter_runner import Fail2banMissing


DEFAULT_SOCKET = "/var/run/fail2ban/fail2ban.sock"


def socket_path(conf: str, socket: str | None = None) -> str:
    """`socket` (--socket), else what fail2ban-client would use: `socket` in
    CONFDIR/fail2ban.conf(.local)."""
    if socket:
        return socket
    try:
        from fail2ban.client.fail2banreader import Fail2banReader
    except ImportError:
        raise Fail2banMissing("fail2ban is not installed (apt-get install fail2ban)") from None
    if not Path(conf, "fail2ban.conf").is_file():
        raise Fail2banError(f"{conf}/fail2ban.conf not found: is fail2ban installed? (or give --socket)")
    reader = Fail2banReader(basedir=conf)
    reader.read()
    return reader.getEarlyOptions().get("socket") or DEFAULT_SOCKET


class Fail2banError(F2bExtError):
    """The running fail2ban (or its configuration): unreachable, refusing, or not root's."""


class Fail2ban:
    """A connection to the running fail2ban-server, over fail2ban's own client protocol
    (what fail2ban-client speaks); every failure is a one-line Fail2banError.

    fail2ban's answers are pickles, and unpickling runs code: before anything is sent or
    read, the socket file and the process that listens on it (SO_PEERCRED, which the
    peer cannot forge) must both be root's, or this user's own."""

    def __init__(self, sock: str, timeout: float = 10):
        import socket as _socket
        from f2b_ext.core import install as plan
        try:
            from fail2ban.client.csocket import CSocket
            from fail2ban.protocol import CSPROTO
        except ImportError:
            raise Fail2banMissing("fail2ban is not installed (apt-get install fail2ban)") from None
        self.sock, self._csocket, self._proto = sock, CSocket, CSPROTO
        self.client = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        self.client.settimeout(timeout)
        try:
            self._trust(os.stat(sock).st_uid, "owned")
            self.client.connect(sock)
            self._trust(self._peer_uid(), "served")
        except FileNotFoundError:
            raise Fail2banError(f"fail2ban is not running: no socket at {sock} (systemctl start fail2ban)") from None
        except ConnectionRefusedError:
            raise Fail2banError(f"fail2ban is not running: nobody listens on {sock} (systemctl start fail2ban)") from None
        except PermissionError:
            raise Fail2banError(f"permission denied on {sock}: run as root (fail2ban's socket is root's)") from None
        except _socket.timeout:
            raise Fail2banError(f"fail2ban did not answer on {sock}") from None
        except OSError as exc:
            raise Fail2banError(f"cannot reach fail2ban at {sock}: {exc.strerror or exc}") from None
        problem = plan.version_problem(str(self.ask("version")))
        if problem:
            raise Fail2banError(problem)

    def _peer_uid(self) -> int:
        import socket as _socket
        import struct
        creds = self.client.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, struct.calcsize("3i"))
        return struct.unpack("3i", creds)[1]            # pid, uid, gid

    def _trust(self, uid: int, how: str):
        if uid not in (0, os.geteuid()):
            import pwd
            try:
                name = pwd.getpwuid(uid).pw_name
            except KeyError:
                name = str(uid)
            self.client.close()
            raise Fail2banError(f"{self.sock} is {how} by {name}, not root: refusing to talk to it "
                           "(fail2ban's answers are pickles, which run code when read)")

    def ask(self, *command):
        import pickle
        import socket as _socket
        try:
            self.client.sendall(pickle.dumps(list(map(self._csocket.convert, command)), pickle.HIGHEST_PROTOCOL)
                                + self._proto.END)
            code, value = self._csocket.receive(self.client)
        except (_socket.timeout, OSError, EOFError) as exc:
            raise Fail2banError(f"fail2ban stopped answering on {self.sock}: {exc}") from None
        if code != 0:
            raise Fail2banError(f"fail2ban refused `{' '.join(command)}`: {value}")
        return value

    def jails(self) -> list[str]:
        status = dict(self.ask("status"))
        return [j.strip() for j in status.get("Jail list", "").split(",") if j.strip()]

    def close(self):
        try:
            self.client.sendall(self._proto.CLOSE + self._proto.END)     # as fail2ban-client says goodbye
        except OSError:
            pass
        self.client.close()
