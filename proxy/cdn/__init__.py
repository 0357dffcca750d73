"""`tierproxy cdn`: the HTTP caching edge (issue 19, first part). Pure decisions in rfc9111.py,
rfc5861.py, cachestatus.py, ranges.py, surrogate.py, versioned.py and store.py; the request path in engine.py; bytes in server.py and
origin.py; wiring in daemon.py. docs/cdn.md says what is built and what is not.
"""
