"""`f2b-ext fleet init`: a NATS cluster configuration for a fleet, with TLS and one
credential per server.

How it works: `plan()` (pure) turns the servers' names and addresses into file texts:
each server's `nats-server` configuration (JetStream, client and cluster listeners
with TLS, routes to every other server, one user per fleet server plus `admin`) and
each agent's `fleet.conf`. A server's user may publish only under its own subject
`f2bx.bans.<server>` and its own key of the protected bucket, and use only its own
durable consumer; the JetStream API subjects it needs are listed one by one, so it
cannot delete or purge the stream. `write()` adds the TLS files (a CA and one
certificate per server, made with python3-cryptography) and writes everything with
mode 0600 under one directory, one subdirectory per server, ready to copy.
"""
from __future__ import annotations

import datetime
import ipaddress
import secrets
from pathlib import Path

from f2b_ext.core.fleet import DECISIONS_BUCKET, PROTECTED_BUCKET, STREAM, subject_for

CLIENT_PORT, CLUSTER_PORT = 4222, 6222


def permissions(server: str) -> dict:
    """What a fleet server's user may publish and subscribe to."""
    own = f"{STREAM}.{server}"
    kv = [f"KV_{PROTECTED_BUCKET}", f"KV_{DECISIONS_BUCKET}"]
    publish = [subject_for(server), f"$KV.{PROTECTED_BUCKET}.{server}", f"$KV.{DECISIONS_BUCKET}.>",
               "$JS.API.INFO", f"$JS.API.STREAM.INFO.{STREAM}",
               f"$JS.API.CONSUMER.INFO.{own}", f"$JS.API.CONSUMER.CREATE.{own}",
               f"$JS.API.CONSUMER.CREATE.{own}.>", f"$JS.API.CONSUMER.DURABLE.CREATE.{own}",
               f"$JS.API.CONSUMER.MSG.NEXT.{own}", f"$JS.ACK.{own}.>", "$JS.FC.>"]
    for s in kv:
        publish += [f"$JS.API.STREAM.INFO.{s}", f"$JS.API.DIRECT.GET.{s}", f"$JS.API.DIRECT.GET.{s}.>",
                    f"$JS.API.STREAM.MSG.GET.{s}", f"$JS.API.CONSUMER.CREATE.{s}",
                    f"$JS.API.CONSUMER.CREATE.{s}.>", f"$JS.API.CONSUMER.DELETE.{s}.*",
                    f"$JS.API.CONSUMER.INFO.{s}.*"]
    return {"publish": publish, "subscribe": ["_INBOX.>"]}


def _list(items) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def plan(servers: dict, store: str = "/var/lib/nats/f2b-ext", certs: str = "/etc/f2b-ext/fleet",
         passwords: dict | None = None) -> dict:
    """{server: {filename: text}} for `servers` = {name: address}. Raises ValueError."""
    if len(servers) < 1:
        raise ValueError("give at least one server as NAME=ADDRESS")
    for name, addr in servers.items():
        subject_for(name)
        ipaddress.ip_address(addr)
    if "admin" in servers:
        raise ValueError("'admin' is reserved for the administrator's credential")
    pw = dict(passwords or {})
    for name in [*servers, "admin"]:
        pw.setdefault(name, secrets.token_hex(24))
    replicas = 3 if len(servers) >= 3 else 1
    users = [f'    {{user: "{n}", password: "{pw[n]}", permissions: {{\n'
             f'      publish: {{allow: {_list(permissions(n)["publish"])}}},\n'
             f'      subscribe: {{allow: {_list(permissions(n)["subscribe"])}}}}}}}'
             for n in servers]
    users.append(f'    {{user: "admin", password: "{pw["admin"]}"}}')
    urls = " ".join(f"tls://{_host(a)}:{CLIENT_PORT}" for a in servers.values())
    out = {}
    for name, addr in servers.items():
        routes = [f"nats-route://{_host(a)}:{CLUSTER_PORT}" for n, a in servers.items() if n != name]
        tls = (f'tls {{ cert_file: "{certs}/{name}.crt", key_file: "{certs}/{name}.key", '
               f'ca_file: "{certs}/ca.crt", timeout: 5 }}')
        cluster = (f'cluster {{\n  name: "f2bx"\n  listen: "{_host(addr)}:{CLUSTER_PORT}"\n'
                   f'  routes: {_list(routes)}\n  {tls}\n}}\n') if len(servers) > 1 else ""
        nats_conf = (f"# nats-server configuration of fleet server {name} (f2b-ext fleet init)\n"
                     f'server_name: "{name}"\nlisten: "{_host(addr)}:{CLIENT_PORT}"\n'
                     f'jetstream {{ store_dir: "{store}/{name}", max_memory_store: 64MB, max_file_store: 4GB }}\n'
                     f"{tls}\n{cluster}"
                     f"authorization {{\n  users: [\n" + ",\n".join(users) + "\n  ]\n}\n")
        agent_conf = (f"# f2b-ext fleet agent of {name} (f2b-ext fleet init); see README, Fleet\n[fleet]\n"
                      f"server = {name}\nnats = {urls}\npeers = {' '.join(servers)}\nuser = {name}\npassword = {pw[name]}\n"
                      f"ca = {certs}/ca.crt\nreplicas = {replicas}\n")
        out[name] = {"nats-server.conf": nats_conf, "fleet.conf": agent_conf}
    out["admin"] = {"fleet.conf": f"# the administrator's credential: creates the stream and buckets\n[fleet]\n"
                                  f"server = admin\nnats = {urls}\nuser = admin\npassword = {pw['admin']}\n"
                                  f"ca = {certs}/ca.crt\nreplicas = {replicas}\n"}
    return out


def _host(addr: str) -> str:
    return f"[{addr}]" if ipaddress.ip_address(addr).version == 6 else addr


def make_tls(servers: dict, days: int = 825) -> dict:
    """{filename: PEM bytes}: ca.crt/ca.key and <name>.crt/<name>.key per server (its
    address as subject alternative name; server and client use, for routes)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def pem_key(key):
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "f2b-ext fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    files = {"ca.crt": ca.public_bytes(serialization.Encoding.PEM), "ca.key": pem_key(ca_key)}
    for name, addr in servers.items():
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=days))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(addr)),
                                                            x509.DNSName(name)]), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))
        files[f"{name}.crt"] = cert.public_bytes(serialization.Encoding.PEM)
        files[f"{name}.key"] = pem_key(key)
    return files


def write(out_dir: Path, servers: dict, store: str, certs: str | None = None) -> list[Path]:
    """Write every server's files under out_dir/<server>/ (certificates included, the
    CA key only in out_dir). `certs`: where the certificates will live on the servers
    (default: out_dir/<server>, usable as they are)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty")
    tls = make_tls(servers)
    written = []

    def put(path: Path, data):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        path.chmod(0o600)
        written.append(path)

    texts = None
    for name in [*servers, "admin"]:
        where = certs or str((out_dir / name).resolve())
        texts = plan(servers, store, where, passwords=_passwords(texts))
        for fname, text in texts[name].items():
            put(out_dir / name / fname, text)
        put(out_dir / name / "ca.crt", tls["ca.crt"])
        if name != "admin":
            put(out_dir / name / f"{name}.crt", tls[f"{name}.crt"])
            put(out_dir / name / f"{name}.key", tls[f"{name}.key"])
    put(out_dir / "ca.key", tls["ca.key"])
    return written


def _passwords(texts) -> dict | None:
    """The passwords a previous plan() chose, so every file agrees."""
    if texts is None:
        return None
    import re
    return {m.group(1): m.group(2) for m in re.finditer(r'user: "([^"]+)", password: "([^"]+)"',
                                                         next(iter(texts.values()))["nats-server.conf"])}
