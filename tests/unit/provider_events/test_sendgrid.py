"""SendGrid's webhook format: the signature (ECDSA P-256 over the timestamp and the raw body) checked with a key
made here, and the events read strictly, a malformed one read as nothing rather than guessed at."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion.provider_events.sendgrid import MAX_EVENTS, BadKey, events, load_public_key, signature_ok

KEY = ec.generate_private_key(ec.SECP256R1())
DER = base64.b64encode(
    KEY.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
).decode()
PEM = KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(timestamp: str, body: bytes) -> str:
    return base64.b64encode(KEY.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()


def test_the_signature_covers_the_timestamp_and_the_body() -> None:
    key = load_public_key(DER)
    body = b'[{"event":"delivered"}]'
    signature = sign("1700000000", body)
    assert signature_ok(key, signature, "1700000000", body)
    assert not signature_ok(key, signature, "1700000001", body)
    assert not signature_ok(key, signature, "1700000000", body + b" ")
    assert not signature_ok(key, "not base64!", "1700000000", body)
    assert not signature_ok(key, signature * 10, "1700000000", body)  # too long to be one: refused unread
    other = ec.generate_private_key(ec.SECP256R1())
    forged = base64.b64encode(other.sign(b"1700000000" + body, ec.ECDSA(hashes.SHA256()))).decode()
    assert not signature_ok(key, forged, "1700000000", body)


def test_the_key_is_read_as_sendgrid_shows_it_or_as_pem_and_nothing_else() -> None:
    assert load_public_key(DER).public_numbers() == load_public_key(PEM.decode()).public_numbers()
    rsa_like = base64.b64encode(b"not a key").decode()
    for bad in ("", "%%%", rsa_like):
        with pytest.raises(BadKey):
            load_public_key(bad)
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()
    der384 = p384.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(BadKey, match="P-256"):
        load_public_key(base64.b64encode(der384).decode())


def test_events_are_read_strictly() -> None:
    good = {
        "sg_event_id": "abc",
        "event": "bounce",
        "timestamp": 1700000000,
        "email": " Ada@Example.com ",
        "delivery_id": "7b9e8f2a-3c1d-4e5f-8a9b-0c1d2e3f4a5b",
        "type": "bounce",
        "reason": "550 5.1.1 " + "x" * 1000,
    }
    malformed = [
        "not an object",
        {**good, "sg_event_id": ""},
        {**good, "sg_event_id": "x" * 129},
        {**good, "timestamp": "1700000000"},
        {**good, "timestamp": True},
        {**good, "event": 7},
    ]
    parsed = list(events(json.dumps([good, *malformed, {**good, "delivery_id": "not-a-uuid"}]).encode()))
    first, *rest, foreign = parsed
    assert first is not None
    assert (first.email, first.bounce_type, len(first.reason)) == ("ada@example.com", "bounce", 300)
    assert str(first.delivery_id) == good["delivery_id"]
    assert rest == [None] * len(malformed)
    assert foreign is not None
    assert foreign.delivery_id is None
    with pytest.raises(ValueError, match="array"):
        list(events(b'{"event": "delivered"}'))
    with pytest.raises(ValueError, match="more than"):
        list(events(json.dumps([{}] * (MAX_EVENTS + 1)).encode()))
    with pytest.raises(json.JSONDecodeError):
        list(events(b"[not json"))
