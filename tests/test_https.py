"""`serve` over HTTPS: the softphone needs a secure page for its microphone."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from callbridge.config import load_settings
from callbridge.errors import ConfigError
from callbridge.server import Server


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_speaks_https_with_the_configured_certificate(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    settings = load_settings(None, {
        "CALLBRIDGE_HTTP_PORT": "0", "CALLBRIDGE_SIP_PORT": "0",
        "CALLBRIDGE_HTTP_TLS_CERT": str(cert), "CALLBRIDGE_HTTP_TLS_KEY": str(key),
        "CALLBRIDGE_STORAGE_DATABASE_URL": f"sqlite:///{tmp_path}/cb.db",
        "CALLBRIDGE_STORAGE_RECORDINGS_DIR": str(tmp_path / "recordings"),
    })

    async def body() -> None:
        server = Server(settings)
        await server.start()
        try:
            base = server.settings.http.public_url
            assert base.startswith("https://127.0.0.1:")
            trust = ssl.create_default_context(cafile=str(cert))
            async with httpx.AsyncClient(verify=trust) as client:
                response = await client.get(f"{base}/health")
            assert response.status_code == 200
        finally:
            await server.stop()

    asyncio.run(asyncio.wait_for(body(), 30))


def test_certificate_without_key_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {"CALLBRIDGE_HTTP_TLS_CERT": "/etc/cert.pem"})
    assert caught.value.key == "http.tls_key"
