"""Per-broker TLS material for ``--harness-broker-tls``: a throw-away CA and a server certificate
for 127.0.0.1/localhost, made with the ``openssl`` CLI in the broker's private temp dir (so they
go away with it). Services under test trust ``MQTT_CA_FILE`` from ``service_env``.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.errors import BrokerUnavailable

OPENSSL_TIMEOUT = 20.0  # seconds for one openssl command


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path
    cert_file: Path
    key_file: Path

    def client_context(self) -> ssl.SSLContext:
        """A verifying client context that trusts only this CA."""
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.check_hostname = True
        return ctx


def make_tls_files(directory: Path) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise BrokerUnavailable(
            "harness: --harness-broker-tls needs the openssl CLI to make a CA and a server"
            " certificate; apt-get install openssl, or drop --harness-broker-tls"
        )
    ca_key, ca, key, csr, cert = (
        directory / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")
    )
    ext = directory / "server.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
         "-subj", "/CN=harness test CA"],
        [openssl, "req", *ec, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
         "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext)],
    ]  # fmt: skip
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, timeout=OPENSSL_TIMEOUT, check=False)
        if done.returncode != 0:
            raise BrokerUnavailable(
                f"harness: making the broker's TLS certificate failed: {' '.join(cmd[:3])}"
                f" exited {done.returncode}: {done.stderr.decode(errors='replace')[-400:]};"
                " check the openssl install, or drop --harness-broker-tls"
            )
    key.chmod(0o600)
    return TlsFiles(ca, cert, key)
