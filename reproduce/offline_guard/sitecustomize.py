"""Put on PYTHONPATH of every child that ``sapo rehearse`` starts (Python imports ``sitecustomize`` at start-up):
refuses every network connection except to this machine, so the rehearsal proves that a filled cache is enough.
Loopback stays open for the local judge on 127.0.0.1 and the ranks of a 2-process launch."""

import ipaddress
import socket

_connect, _connect_ex = socket.socket.connect, socket.socket.connect_ex


def _check(sock: socket.socket, address) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # unix sockets
    host = str(address[0])
    try:
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: resolving it would already leave the machine
        local = False
    if not local:
        raise OSError(f"sapo rehearse: network blocked (a connection to {host} was attempted)")


def _guarded_connect(self, address):
    _check(self, address)
    return _connect(self, address)


def _guarded_connect_ex(self, address):
    _check(self, address)
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect
socket.socket.connect_ex = _guarded_connect_ex
