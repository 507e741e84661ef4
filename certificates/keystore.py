"""Private keys at rest: SM4-GCM under a key derived by PBKDF2-HMAC-SM3.

A key file is JSON::

    {"format": "certledger-key/v1", "label": ..., "public_key": hex, "key_id": hex,
     "signer_id": ..., "kdf": {"name": "pbkdf2-hmac-sm3", "iterations": N, "salt": hex},
     "cipher": {"name": "sm4-gcm", "nonce": hex}, "ciphertext": hex}

Everything but the ciphertext is bound into the GCM associated data, so
swapping the public key or lowering the iteration count makes decryption fail
instead of silently yielding a key that does not match its label. Files are
created with mode 0600 and never overwritten unless asked. The passphrase
comes from an environment variable or an interactive prompt, never argv.
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from certificates import canonical, jsonio
from certificates.errors import CertificatesError, KeystoreError
from certificates.sm2 import PrivateKey, PublicKey

FORMAT = "certledger-key/v1"
DEFAULT_ITERATIONS = 300_000
MIN_ITERATIONS = 1_000
PASSPHRASE_ENV = "CERTLEDGER_PASSPHRASE"
_TAG_LEN = 16


@dataclass(frozen=True)
class KeyFile:
    """The public part of a key file, readable without the passphrase."""

    path: Path
    label: str
    public_key: PublicKey

    @property
    def key_id_hex(self) -> str:
        return self.public_key.key_id.hex()


def _derive(passphrase: str, salt: bytes, iterations: int) -> bytes:
    kdf = PBKDF2HMAC(hashes.SM3(), 16, salt, iterations)
    return kdf.derive(passphrase.encode("utf-8"))


def _aad(header: dict[str, Any]) -> bytes:
    return canonical.encode(header)


def encrypt_key(
    key: PrivateKey, passphrase: str, *, label: str = "", iterations: int = DEFAULT_ITERATIONS
) -> dict[str, Any]:
    if not passphrase:
        raise KeystoreError("passphrase must not be empty")
    if iterations < MIN_ITERATIONS:
        raise KeystoreError(f"iterations must be at least {MIN_ITERATIONS}")
    salt = secrets.token_bytes(16)
    nonce = secrets.token_bytes(12)
    header: dict[str, Any] = {
        "format": FORMAT,
        "label": label,
        "public_key": key.public.hex(),
        "key_id": key.public.key_id.hex(),
        "signer_id": key.public.signer_id.decode("ascii"),
        "kdf": {"name": "pbkdf2-hmac-sm3", "iterations": iterations, "salt": salt.hex()},
        "cipher": {"name": "sm4-gcm", "nonce": nonce.hex()},
    }
    key_bytes = _derive(passphrase, salt, iterations)
    enc = Cipher(algorithms.SM4(key_bytes), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(_aad(header))
    ct = enc.update(key.data) + enc.finalize() + enc.tag
    return {**header, "ciphertext": ct.hex()}


def _field(obj: dict[str, Any], name: str, kind: type) -> Any:
    if name not in obj:
        raise KeystoreError(f"key file is missing {name!r}")
    value = obj[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise KeystoreError(f"key file field {name!r} must be {kind.__name__}")
    return value


def _hex(obj: dict[str, Any], name: str) -> bytes:
    try:
        return bytes.fromhex(_field(obj, name, str))
    except ValueError as exc:
        raise KeystoreError(f"key file field {name!r} is not hex") from exc


def _parse_header(data: dict[str, Any]) -> tuple[dict[str, Any], PublicKey]:
    if not isinstance(data, dict):
        raise KeystoreError("key file must hold a JSON object")
    if data.get("format") != FORMAT:
        raise KeystoreError(f"not a certledger key file (format must be {FORMAT!r})")
    header = {k: v for k, v in data.items() if k != "ciphertext"}
    kdf = _field(data, "kdf", dict)
    cipher = _field(data, "cipher", dict)
    if kdf.get("name") != "pbkdf2-hmac-sm3":
        raise KeystoreError(f"unsupported kdf {kdf.get('name')!r}")
    if cipher.get("name") != "sm4-gcm":
        raise KeystoreError(f"unsupported cipher {cipher.get('name')!r}")
    try:
        signer_id = _field(data, "signer_id", str).encode("ascii")
        public = PublicKey(_hex(data, "public_key"), signer_id)
    except CertificatesError as exc:
        raise KeystoreError(f"key file has a bad public key: {exc}") from exc
    except UnicodeEncodeError as exc:
        raise KeystoreError("key file signer_id must be ASCII") from exc
    if public.key_id.hex() != _field(data, "key_id", str):
        raise KeystoreError("key file key_id does not match its public key")
    _field(data, "label", str)
    return header, public


def decrypt_key(data: dict[str, Any], passphrase: str) -> PrivateKey:
    header, public = _parse_header(data)
    kdf, cipher = header["kdf"], header["cipher"]
    iterations = _field(kdf, "iterations", int)
    if iterations < MIN_ITERATIONS:
        raise KeystoreError(f"key file iterations {iterations} is below {MIN_ITERATIONS}")
    salt, nonce, ct = _hex(kdf, "salt"), _hex(cipher, "nonce"), _hex(data, "ciphertext")
    if len(ct) != 32 + _TAG_LEN or len(nonce) != 12:
        raise KeystoreError("key file ciphertext or nonce has the wrong length")
    dec = Cipher(
        algorithms.SM4(_derive(passphrase, salt, iterations)),
        modes.GCM(nonce, ct[-_TAG_LEN:]),
    ).decryptor()
    dec.authenticate_additional_data(_aad(header))
    try:
        raw = dec.update(ct[:-_TAG_LEN]) + dec.finalize()
    except InvalidTag as exc:
        raise KeystoreError("wrong passphrase, or the key file was altered") from exc
    key = PrivateKey.from_bytes(raw, public.signer_id)
    if key.public != public:
        raise KeystoreError("decrypted private key does not match the file's public key")
    return key


def write_key_file(
    path: str | os.PathLike[str],
    key: PrivateKey,
    passphrase: str,
    *,
    label: str = "",
    iterations: int = DEFAULT_ITERATIONS,
    overwrite: bool = False,
) -> KeyFile:
    p = Path(path)
    body = json.dumps(encrypt_key(key, passphrase, label=label, iterations=iterations), indent=1)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(p, flags, 0o600)
    except FileExistsError as exc:
        raise KeystoreError(f"{p} already exists; refusing to overwrite a key") from exc
    except OSError as exc:
        raise KeystoreError(f"cannot create {p}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # O_CREAT's mode does not apply to an existing file
        fh.write(body + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    return KeyFile(p, label, key.public)


def _read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    p = Path(path)
    try:
        data = jsonio.read(p)
    except FileNotFoundError as exc:
        raise KeystoreError(f"key file {p} does not exist") from exc
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"cannot read key file {p}: {exc}") from exc
    if not isinstance(data, dict):
        raise KeystoreError(f"{p} is not a certledger key file")
    return data


def read_key_info(path: str | os.PathLike[str]) -> KeyFile:
    data = _read_json(path)
    header, public = _parse_header(data)
    return KeyFile(Path(path), header["label"], public)


def load_key_file(path: str | os.PathLike[str], passphrase: str) -> PrivateKey:
    return decrypt_key(_read_json(path), passphrase)


def _has_terminal() -> bool:
    """Whether getpass can prompt on a terminal (it opens /dev/tty on POSIX)."""
    if os.name != "posix":
        return True  # getpass's own console prompt
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        return False
    os.close(fd)
    return True


def passphrase_from_env_or_prompt(
    env_var: str = PASSPHRASE_ENV, *, confirm: bool = False, prompt: str = "Key passphrase: "
) -> str:
    """The passphrase from ``env_var``, else an interactive prompt, else the first line
    piped to stdin when there is no terminal to prompt on (never argv)."""
    value = os.environ.get(env_var)
    if value:
        return value
    missing = f"no passphrase: set {env_var} or run interactively to be prompted"
    if not _has_terminal():
        # getpass would read stdin too, after a warning that it cannot hide the echo (there
        # is nothing to echo to): read the piped line without that noise.
        line = sys.stdin.readline() if sys.stdin is not None else ""
        if not line:
            raise KeystoreError(missing)
        first = line.rstrip("\r\n")
    else:
        try:
            first = getpass.getpass(prompt)
            if confirm and getpass.getpass("Repeat passphrase: ") != first:
                raise KeystoreError("passphrases do not match")
        except EOFError as exc:
            raise KeystoreError(missing) from exc
    if not first:
        raise KeystoreError("passphrase must not be empty")
    return first
