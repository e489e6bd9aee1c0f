"""The application layer: command handlers, the unit of work, ingest, projecting and queries.

It depends on the domain, on the projections, and on the ports they declare; never on a
concrete store (the composition root, :mod:`idstitch.bootstrap`, wires those in).
"""
