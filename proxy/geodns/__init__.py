"""`tierproxy geodns`: an authoritative geo-DNS server answering with the nearest healthy data
center's addresses (docs/geodns.md). Sans-IO parts: config, zones, regions, policy, answer, cache,
handler; I/O: server (UDP/TCP), health (checks), admin, daemon."""
