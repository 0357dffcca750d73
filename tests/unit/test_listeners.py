"""/proc/net/tcp parsing for proxy/devstack/listeners.py (the lines are the kernel's format)."""

from __future__ import annotations

from proxy.devstack.listeners import Listener, parse_proc_net_tcp

TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1920 00000000:0000 0A 00000000:00000000 00:00000000 00000000   105        0 41234 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1920 0100007F:D5A2 06 00000000:00000000 03:00000F9B 00000000     0        0 0 3 0000000000000000
   2: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1 0000000000000000 100 0 0 10 0
"""
TCP6 = """  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1920 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 100 0 0 10 0
"""


def test_listening_sockets_on_a_port_only():
    assert parse_proc_net_tcp(TCP, 6432) == [Listener("127.0.0.1:6432", 105, 41234)]  # TIME_WAIT skipped
    assert parse_proc_net_tcp(TCP, 8080) == [Listener("0.0.0.0:8080", 0, 555)]
    assert parse_proc_net_tcp(TCP, 9) == []
    assert parse_proc_net_tcp(TCP6, 6432) == [Listener("[::1]:6432", 1000, 777)]
