"""Tests of logs/ (store, audit chain, signatures, records, exports) and orconsole/identity.py."""
