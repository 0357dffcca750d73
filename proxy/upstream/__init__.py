"""The upstream side both HTTP daemons share (the load balancer's pools, the cdn's origins): server
config and state (`Backend`), keep-alive HTTP/1.1 connections (`UpstreamConn`) and active health
checks. Balancing, outlier detection and what a health flip means stay with each daemon.
"""
