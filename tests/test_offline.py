import socket

import pytest


def test_non_loopback_connections_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError, match="offline"):
        s.connect(("8.8.8.8", 53))
    s.close()


def test_hub_is_offline(monkeypatch):
    import os

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
