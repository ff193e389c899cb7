"""Signed delivery records, users' keys, the hash-chained audit trail, the store and the exports.

Layer below the core: imports nothing from orconsole/, drivers/ or ui/, and never imports Qt except
lazily inside logs.export_pdf. Nothing here decides whether a beam may run; it records what happened.
"""
