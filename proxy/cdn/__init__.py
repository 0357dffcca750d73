"""`tierproxy cdn`: the caching edge. So far its sans-IO parts only: RFC 9111 decisions
(rfc9111.py), the RFC 9211 Cache-Status value (cachestatus.py) and the byte-bounded store
(store.py). docs/cdn.md says what is built and what is not.
"""
