"""The bedside console (PySide6): renders what the treatment core publishes and sends it commands.

Thin by rule: no safety logic, no device access (never imports drivers/; only the developer panel
touches simulators/), no modal dialog in front of data handling.
"""
