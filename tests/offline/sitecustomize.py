"""Loaded by every Python process of the test run (pytest and the notebook kernels) through
PYTHONPATH: any attempt to open a network connection to a non-loopback address fails loudly.
The suite must run offline, so a test that reaches for the hub is a bug."""
import ipaddress
import socket

_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _check(address) -> None:
    if isinstance(address, tuple) and address and isinstance(address[0], str):
        host = address[0]
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:  # a host name: resolve nothing, refuse everything but localhost
            if host != "localhost":
                raise ConnectionRefusedError(f"sdlearn tests are offline: refused connection to {host!r}")
            return
        if not ip.is_loopback and not ip.is_unspecified:
            raise ConnectionRefusedError(f"sdlearn tests are offline: refused connection to {host!r}")


def _guarded_connect(self, address):
    _check(address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(address)
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
