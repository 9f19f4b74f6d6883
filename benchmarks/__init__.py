"""Benchmarks: the provider ("ours") against a peer, side by side on an emulated vendor on 127.0.0.1.

Run everything with ``python -m benchmarks.run`` (``make bench``); see ``benchmarks/README.md``.
"""
